"""End to end: `hrpose test` on the five real MPII samples in the official layout (annot/valid.json,
annot/gt_valid.mat from the golden fixtures, images/), with the official HRNet-W32 MPII experiment YAML.

1. A reduced HRNet with `fill_` weights through the CLI: the PCKh table is printed and logged, and
   pred.mat holds, 1-based, exactly the flip-merged, decoded model outputs.
2. An oracle model whose heatmaps encode the ground truth of each crop (rendered here from the annotation
   json with the official crop convention, independently of hrpose.data): the whole chain crop -> model
   -> flip merge -> decode -> back-transform -> pred.mat -> PCKh against the official gt_valid.mat must
   score 100 and land within the heatmap quantisation of the ground truth.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import loadmat

from conftest import DATA, GOLDEN, ROOT, install_oracle_model
from hrpose.cli import main as cli_main
from hrpose.codec import HeatmapCodec, merge_flip
from hrpose.config import load_config
from hrpose.geometry import affine_transform, get_affine_transform
from hrpose.models import build_model
from hrpose.models.weights import save_weights

MPII_SAMPLES = DATA / "samples" / "mpii"
EXPERIMENT = ROOT / "experiments" / "mpii" / "hrnet" / "w32_256x256_adam_lr1e-3.yaml"
EXP_NAME = "w32_256x256_adam_lr1e-3"
PCKH_NAMES = ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1"]
# The official MPII flip pairs (ankles, knees, hips, wrists, elbows, shoulders), written out here on purpose.
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))

# A reduced HRNet topology (all four stages, one module of one block each, narrow branches).
TINY_HRNET_OPTS = [
    "MODEL.EXTRA.STAGE2.NUM_BLOCKS", "[1, 1]", "MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[8, 16]",
    "MODEL.EXTRA.STAGE3.NUM_MODULES", "1", "MODEL.EXTRA.STAGE3.NUM_BLOCKS", "[1, 1, 1]",
    "MODEL.EXTRA.STAGE3.NUM_CHANNELS", "[8, 16, 32]",
    "MODEL.EXTRA.STAGE4.NUM_MODULES", "1", "MODEL.EXTRA.STAGE4.NUM_BLOCKS", "[1, 1, 1, 1]",
    "MODEL.EXTRA.STAGE4.NUM_CHANNELS", "[8, 16, 32, 64]",
]  # fmt: skip


def _fill():
    spec = importlib.util.spec_from_file_location("golden_fill", GOLDEN / "fill.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.fill_


def _mpii_root(tmp_path: Path) -> Path:
    """The official MPII layout, by symlinks to the shared samples and the golden gt_valid.mat."""
    root = tmp_path / "mpii"
    (root / "annot").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "annot" / "valid.json").symlink_to(MPII_SAMPLES / "test_mpii.json")
    (root / "annot" / "gt_valid.mat").symlink_to(GOLDEN / "mpii_gt_valid.mat")
    for image in MPII_SAMPLES.glob("*.jpg"):
        (root / "images" / image.name).symlink_to(image)
    return root


def _opts(tmp_path: Path, root: Path, model_file: Path, size: int, heatmap: int) -> list[str]:
    return [
        "DATASET.ROOT", str(root), "OUTPUT_DIR", str(tmp_path / "output"), "LOG_DIR", str(tmp_path / "log"),
        "TEST.MODEL_FILE", str(model_file), "WORKERS", "0", "PIN_MEMORY", "False", "PRINT_FREQ", "1",
        "TEST.BATCH_SIZE_PER_GPU", "3",  # two batches: the order across batches matters
        "MODEL.IMAGE_SIZE", f"[{size}, {size}]", "MODEL.HEATMAP_SIZE", f"[{heatmap}, {heatmap}]",
        "MODEL.INIT_WEIGHTS", "False", "HRPOSE.TENSORBOARD", "False", *TINY_HRNET_OPTS,
    ]  # fmt: skip


def _save_filled_weights(tmp_path: Path, opts: list[str]) -> Path:
    model_file = Path(opts[opts.index("TEST.MODEL_FILE") + 1])
    model = build_model(load_config(EXPERIMENT, opts))
    _fill()(model, 0)
    save_weights(model, model_file)
    return model_file


def _official_centers_scales() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From the annotation json, the official MPII crop convention: center + (0, 15 s), scale s * 1.25, then
    1-based -> 0-based. -> centers (N, 2), scales (N, 2), joints (N, 16, 2) 0-based, joints_vis (N, 16)."""
    anns = json.loads((MPII_SAMPLES / "test_mpii.json").read_text())
    centers, scales, joints, vis = [], [], [], []
    for a in anns:
        s = float(a["scale"])
        centers.append([a["center"][0] - 1.0, a["center"][1] + 15.0 * s - 1.0])
        scales.append([1.25 * s, 1.25 * s])
        joints.append(np.asarray(a["joints"], dtype=np.float64) - 1.0)
        vis.append(np.asarray(a["joints_vis"], dtype=np.float64))
    return np.array(centers), np.array(scales), np.array(joints), np.array(vis)


def _gt():
    mat = loadmat(str(GOLDEN / "mpii_gt_valid.mat"))
    pos = np.transpose(mat["pos_gt_src"], (2, 0, 1))  # (N, 16, 2), 1-based
    visible = (1 - mat["jnt_missing"]).T > 0  # (N, 16)
    head = np.linalg.norm(mat["headboxes_src"][1] - mat["headboxes_src"][0], axis=0) * 0.6  # (N,)
    return pos, visible, head


def _table_rows(text: str) -> list[dict[str, float]]:
    """Every markdown results table `| Arch | Head | ... |` in `text` -> its rows as name -> value."""
    tables = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"\| Arch \| Head \|", line):
            names = [c.strip() for c in line.split("|")[2:-1]]
            cells = [c.strip() for c in lines[i + 2].split("|")[2:-1]]
            tables.append(dict(zip(names, (float(c) for c in cells))))
    return tables


def test_cli_test_on_mpii_samples_prints_pckh_and_writes_pred_mat(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(2)
    root = _mpii_root(tmp_path)
    opts = _opts(tmp_path, root, tmp_path / "tiny_filled.pth", 64, 16)
    _save_filled_weights(tmp_path, opts)

    # Record what the model computes in the engine (both flip passes), to check pred.mat against.
    import hrpose.models

    calls: list[torch.Tensor] = []
    original_build = hrpose.models.build_model

    def recording_build(cfg, is_train=False):
        model = original_build(cfg, is_train=is_train)
        model.register_forward_hook(lambda _m, _inp, out: calls.append(out.detach().clone()))
        return model

    monkeypatch.setattr(hrpose.models, "build_model", recording_build)
    monkeypatch.setattr("sys.argv", ["hrpose"])
    # the eager model itself (the default, auto, may run an exported graph instead)
    assert cli_main(["test", "--cfg", str(EXPERIMENT), *opts, "HRPOSE.BACKEND", "torch"]) == 0
    printed = capsys.readouterr().out

    exp_dir = tmp_path / "output" / "mpii" / "pose_hrnet" / EXP_NAME
    logs = list(exp_dir.glob(f"{EXP_NAME}_*_test.log"))
    assert len(logs) == 1, sorted(p.name for p in exp_dir.iterdir())
    for text in (printed, logs[0].read_text()):
        tables = _table_rows(text)
        assert len(tables) == 1, text[-2000:]
        assert list(tables[0]) == PCKH_NAMES
        assert all(0.0 <= v <= 100.0 for v in tables[0].values()), tables[0]
    assert str(exp_dir) in printed

    # Flip test on: 2 batches (3 + 2 crops), each an original and a mirrored pass, 16 maps of 16x16.
    assert [tuple(c.shape) for c in calls] == [(3, 16, 16, 16)] * 2 + [(2, 16, 16, 16)] * 2
    heatmaps = torch.cat([merge_flip(calls[i], calls[i + 1], MPII_FLIP_PAIRS, shift=True) for i in (0, 2)])
    centers, scales, _, _ = _official_centers_scales()
    expected, _ = HeatmapCodec((64, 64), (16, 16), 2.0).decode(heatmaps.numpy(), centers, scales)

    pred_mat = loadmat(str(exp_dir / "pred.mat"))["preds"]
    assert pred_mat.shape == (5, 16, 2)
    np.testing.assert_allclose(pred_mat, expected + 1.0, atol=1e-3)  # MATLAB's 1-based pixels

    # The printed table is the PCKh of pred.mat against the official ground truth (computed here directly).
    pos, visible, head = _gt()
    ok = (np.linalg.norm(pred_mat - pos, axis=2) <= 0.5 * head[:, None]) & visible
    used = visible.copy()
    used[:, [6, 7]] = False  # pelvis, thorax are not in the mean
    assert tables[0]["Mean"] == pytest.approx(100.0 * ok[used].sum() / used.sum(), abs=1e-3)
    head_pckh = 100.0 * ok[:, 9].sum() / visible[:, 9].sum()
    assert tables[0]["Head"] == pytest.approx(head_pckh, abs=1e-3)


def test_ground_truth_heatmaps_score_pckh_100(tmp_path, monkeypatch):
    """An oracle model: for each crop (or its mirror) it returns the codec-encoded ground truth of that crop.

    Full-size 256x256 input and 64x64 heatmaps as in the experiment (the oracle costs nothing). The crop
    frame of each person is computed here from the json with the official convention, so a wrong center
    shift / padding / 0-1-based conversion in the loader or a wrong inverse in decoding shows up."""
    torch.set_num_threads(2)
    from hrpose.data import build_dataset
    from hrpose.engine import test as engine_test

    root = _mpii_root(tmp_path)
    opts = _opts(tmp_path, root, tmp_path / "tiny_filled.pth", 256, 64)
    _save_filled_weights(tmp_path, opts)
    cfg = load_config(EXPERIMENT, opts)

    size = 256
    codec = HeatmapCodec((size, size), (64, 64), 2.0)
    centers, scales, joints_img, joints_vis = _official_centers_scales()
    targets, targets_mirrored = [], []
    for c, s, j, v in zip(centers, scales, joints_img, joints_vis):
        joints_crop = affine_transform(j, get_affine_transform(c, s, 0, (size, size)))
        # A visible joint outside the crop could not be encoded; none is in these samples.
        inside = (joints_crop >= 0).all(1) & (joints_crop <= size - 1).all(1)
        assert inside[v > 0].all()
        targets.append(codec.encode(joints_crop, v)[0])
        mirrored = joints_crop.copy()
        mirrored[:, 0] = size - 1 - mirrored[:, 0]  # official joint flip: x -> width - 1 - x, swap sides
        mirrored_vis = v.copy()
        for a, b in MPII_FLIP_PAIRS:
            mirrored[[a, b]] = mirrored[[b, a]]
            mirrored_vis[[a, b]] = mirrored_vis[[b, a]]
        targets_mirrored.append(codec.encode(mirrored, mirrored_vis)[0])

    # Which crop is which: the test split's own inputs (deterministic, no augmentation) as reference.
    reference = torch.stack([build_dataset(cfg, "test", False)[i][0] for i in range(5)])
    seen = install_oracle_model(monkeypatch, reference, targets, targets_mirrored)
    result = engine_test(cfg, EXPERIMENT)
    assert sorted(seen) == sorted([(i, m) for i in range(5) for m in (False, True)])  # flip test ran

    pred_mat = loadmat(str(result["output_dir"] / "pred.mat"))["preds"]
    pos, visible, head = _gt()
    err = np.linalg.norm(pred_mat - pos, axis=2)  # (N, 16) image pixels
    # Quantisation: encoding rounds each axis to the nearest heatmap pixel (<= 0.5), a symmetric peak gets
    # no quarter-pixel move in y, and in x the flip merge averages two peaks one pixel apart and moves a
    # quarter pixel towards the second (<= 0.75): within one heatmap pixel, which is scale * 200 / 64 image
    # pixels. (Measured: at most 0.65.)
    stride = scales[:, :1] * 200.0 / 64.0  # (N, 1)
    assert (err[visible] <= (1.0 * stride).repeat(16, 1)[visible]).all(), (err / stride)[visible].max()
    # One heatmap pixel is inside even the 0.11 head-size threshold of Mean@0.1 for every person here, so
    # every entry of the table is 100.
    assert (stride[:, 0] < 0.11 * head).all()

    table = result["name_values"]
    assert list(table) == PCKH_NAMES
    for name in PCKH_NAMES:
        assert table[name] == pytest.approx(100.0), table
    assert result["perf"] == pytest.approx(100.0)
