"""End to end on a custom COCO-format keypoint dataset with 9 joints (not COCO's 17), written here:
stick figures drawn with OpenCV, `ROOT/annotations/person_keypoints_{train,val}.json` and
`ROOT/images/{train,val}/`. `hrpose train` (2 tiny epochs of a small pose_resnet 18) then `hrpose test`,
both through the CLI; then the weights are loaded strictly (and refused by a different joint count) and
used by `PoseEstimator`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from conftest import install_oracle_model
from hrpose.cli import main as cli_main
from hrpose.config import load_config
from hrpose.models import build_model
from hrpose.models.weights import CheckpointError, load_weights, read_checkpoint_meta

JOINTS = ("head", "left_shoulder", "right_shoulder", "left_hand", "right_hand",
          "left_hip", "right_hip", "left_foot", "right_foot")  # fmt: skip
K = len(JOINTS)
# 1-based as in COCO files
SKELETON = [[1, 2], [1, 3], [2, 4], [3, 5], [2, 6], [3, 7], [6, 8], [7, 9], [6, 7]]
# Pairs by name, written out: shoulders, hands, hips, feet.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8))
SIGMAS = [0.026, 0.079, 0.079, 0.062, 0.062, 0.107, 0.107, 0.089, 0.089]
# A front-facing stick figure in a unit-height frame (x, y); the person's left is the image's right.
TEMPLATE = np.array([[0.0, 0.1], [0.15, 0.3], [-0.15, 0.3], [0.3, 0.55], [-0.3, 0.55],
                     [0.1, 0.6], [-0.1, 0.6], [0.15, 0.95], [-0.15, 0.95]])  # fmt: skip
CFG_STEM = "stick9_res18_64x64"
IMAGE_WH = (96, 112)


def _write_split(root: Path, split: str, n_images: int, rng: np.random.Generator, first_id: int) -> None:
    (root / "images" / split).mkdir(parents=True)
    images, annotations = [], []
    for i in range(n_images):
        image_id = first_id + i
        w, h = IMAGE_WH
        img = np.full((h, w, 3), int(rng.integers(40, 90)), np.uint8)
        height = float(rng.uniform(60, 90))
        origin = np.array([rng.uniform(0.35 * height, w - 0.35 * height), rng.uniform(2, h - height - 2)])
        joints = origin + TEMPLATE * height + rng.normal(0, 1.5, TEMPLATE.shape)
        vis = np.full(K, 2)
        if i % 4 == 1:
            vis[4] = 1  # labelled but occluded
        if i % 4 == 2:
            vis[7] = 0  # not labelled
        for a, b in SKELETON:
            pa, pb = joints[a - 1], joints[b - 1]
            cv2.line(img, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), (230, 230, 230), 2)
        for j, (x, y) in enumerate(joints):
            colour = (0, 200, 0) if j == 0 else (40, 40, 220) if JOINTS[j].startswith("left") else (220, 60, 40)
            cv2.circle(img, (int(x), int(y)), 4 if j == 0 else 3, colour, -1)
        name = f"{image_id:06d}.jpg"
        assert cv2.imwrite(str(root / "images" / split / name), img)
        kps = np.concatenate([joints, vis[:, None]], axis=1)
        kps[vis == 0] = 0
        x0, y0 = joints.min(0) - 4
        x1, y1 = joints.max(0) + 4
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        annotations.append({
            "id": 1000 + image_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "keypoints": [round(float(v), 2) for v in kps.reshape(-1)], "num_keypoints": int((vis > 0).sum()),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float((x1 - x0) * (y1 - y0)),
        })  # fmt: skip
    category = {"id": 1, "name": "stickman", "supercategory": "person", "keypoints": list(JOINTS),
                "skeleton": SKELETON}  # fmt: skip
    data = {"images": images, "annotations": annotations, "categories": [category]}
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"person_keypoints_{split}.json").write_text(json.dumps(data))


def _write_experiment(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "stick"
    rng = np.random.default_rng(0)
    _write_split(root, "train", 8, rng, 1)
    _write_split(root, "val", 4, rng, 101)
    cfg = {
        "GPUS": "(0,)", "OUTPUT_DIR": str(tmp_path / "output"), "LOG_DIR": str(tmp_path / "log"), "WORKERS": 0,
        "PRINT_FREQ": 1, "PIN_MEMORY": False, "AUTO_RESUME": False,
        "DATASET": {"DATASET": "custom", "ROOT": str(root), "TRAIN_SET": "train", "TEST_SET": "val",
                    "FLIP": True, "ROT_FACTOR": 30, "SCALE_FACTOR": 0.25, "PROB_HALF_BODY": 0.3,
                    "NUM_JOINTS_HALF_BODY": 3},
        "MODEL": {"NAME": "pose_resnet", "PRETRAINED": "", "INIT_WEIGHTS": False, "IMAGE_SIZE": [64, 64],
                  "HEATMAP_SIZE": [16, 16], "SIGMA": 2, "NUM_JOINTS": K,
                  "EXTRA": {"FINAL_CONV_KERNEL": 1, "DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3,
                            "NUM_DECONV_FILTERS": [16, 16, 16], "NUM_DECONV_KERNELS": [4, 4, 4], "NUM_LAYERS": 18}},
        "LOSS": {"USE_TARGET_WEIGHT": True},
        "TRAIN": {"BATCH_SIZE_PER_GPU": 4, "BEGIN_EPOCH": 0, "END_EPOCH": 2, "OPTIMIZER": "adam", "LR": 1e-3,
                  "LR_STEP": [1], "LR_FACTOR": 0.1, "SHUFFLE": True},
        "TEST": {"BATCH_SIZE_PER_GPU": 3, "FLIP_TEST": True, "POST_PROCESS": True, "SHIFT_HEATMAP": True,
                 "USE_GT_BBOX": True, "IN_VIS_THRE": 0.2, "OKS_THRE": 0.9, "MODEL_FILE": ""},
        "HRPOSE": {"TENSORBOARD": False, "MAX_ITERS_PER_EPOCH": 1, "SEED": 0, "OKS_SIGMAS": SIGMAS},
    }  # fmt: skip
    cfg_file = tmp_path / f"{CFG_STEM}.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    return cfg_file, root


def _ap_tables(text: str) -> list[dict[str, float]]:
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        if re.search(r"\| Arch \| AP \|", line):
            names = [c.strip() for c in line.split("|")[2:-1]]
            cells = [c.strip() for c in lines[i + 2].split("|")[2:-1]]
            out.append(dict(zip(names, (float(c) for c in cells))))
    return out


def test_custom_dataset_train_test_reload_predict(tmp_path, monkeypatch, capsys):
    torch.set_num_threads(2)
    cfg_file, root = _write_experiment(tmp_path)
    cfg = load_config(cfg_file)

    from hrpose.data import build_dataset

    for split, is_train in (("train", True), ("test", False)):
        ds = build_dataset(cfg, split, is_train)
        assert ds.meta.joint_names == JOINTS
        assert sorted(tuple(sorted(p)) for p in ds.meta.flip_pairs) == sorted(FLIP_PAIRS)
        assert ds.meta.sigmas == pytest.approx(SIGMAS)
        assert len(ds) == (8 if is_train else 4)

    # Spies: the flip test merges with the name-derived pairs; COCOeval runs with the configured sigmas.
    from pycocotools.cocoeval import COCOeval

    import hrpose.codec

    flip_pairs_used: list[tuple] = []
    real_merge = hrpose.codec.merge_flip

    def spy_merge(heatmaps, flipped, flip_pairs, shift=True):
        flip_pairs_used.append(tuple(sorted(tuple(sorted(p)) for p in flip_pairs)))
        return real_merge(heatmaps, flipped, flip_pairs, shift=shift)

    sigmas_used: list[np.ndarray] = []
    real_evaluate = COCOeval.evaluate

    def spy_evaluate(self):
        sigmas_used.append(np.array(self.params.kpt_oks_sigmas, dtype=np.float64))
        return real_evaluate(self)

    monkeypatch.setattr(hrpose.codec, "merge_flip", spy_merge)
    monkeypatch.setattr(COCOeval, "evaluate", spy_evaluate)
    monkeypatch.setattr("sys.argv", ["hrpose"])

    # ---- hrpose train
    assert cli_main(["train", "--cfg", str(cfg_file)]) == 0
    train_out = capsys.readouterr().out
    exp_dir = tmp_path / "output" / "custom" / "pose_resnet" / CFG_STEM
    for name in ("checkpoint.pth", "model_best.pth", "final_state.pth"):
        assert (exp_dir / name).is_file(), sorted(p.name for p in exp_dir.iterdir())
    train_logs = list(exp_dir.glob(f"{CFG_STEM}_*_train.log"))
    assert len(train_logs) == 1
    train_log = train_logs[0].read_text()
    assert "Epoch: [1][0/1]" in train_log and "Epoch: [0][1/" not in train_log  # MAX_ITERS_PER_EPOCH 1
    tables = _ap_tables(train_log)
    assert len(tables) == 2, train_log[-3000:]  # one validation per epoch
    assert all(0.0 <= t["AP"] <= 1.0 for t in tables), tables
    assert "final weights" in train_out
    assert len(sigmas_used) == 2 and len(flip_pairs_used) == 4  # 2 epochs x (2 val batches: 3 + 1)

    # ---- hrpose test (TEST.MODEL_FILE empty: the trained final_state.pth)
    assert cli_main(["test", "--cfg", str(cfg_file)]) == 0
    test_out = capsys.readouterr().out
    test_logs = list(exp_dir.glob(f"{CFG_STEM}_*_test.log"))
    assert len(test_logs) == 1
    test_log = test_logs[0].read_text()
    assert "final_state.pth" in test_log
    for text in (test_out, test_log):
        tables = _ap_tables(text)
        assert len(tables) == 1 and list(tables[0])[:2] == ["AP", "Ap .5"], text[-3000:]
        assert 0.0 <= tables[0]["AP"] <= 1.0
    assert len(sigmas_used) == 3
    for s in sigmas_used:
        np.testing.assert_allclose(s, SIGMAS)
    assert len(flip_pairs_used) == 6 and set(flip_pairs_used) == {tuple(sorted(FLIP_PAIRS))}

    results = json.loads((exp_dir / "results" / "keypoints_val_results_0.json").read_text())
    assert 1 <= len(results) <= 4  # one person per image at most after OKS NMS
    assert {r["image_id"] for r in results} <= {101, 102, 103, 104}
    for r in results:
        assert len(r["keypoints"]) == K * 3 and r["category_id"] == 1
        assert np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"])

    # ---- the weights: strict into the same config, refused (naming the head) by a different joint count
    final_state = exp_dir / "final_state.pth"
    report = load_weights(build_model(cfg), final_state, strict=True)
    assert report.complete
    other = load_config(cfg_file, ["MODEL.NUM_JOINTS", "5", "HRPOSE.OKS_SIGMAS", "[]"])  # 9 sigmas: for 9 joints
    with pytest.raises(CheckpointError, match="final_layer") as err:
        load_weights(build_model(other), final_state, strict=True)
    assert "final_layer.weight" in str(err.value) and "final_layer.bias" in str(err.value)

    # ---- predict: the joint names come from the dataset's category
    from hrpose.inference import PoseEstimator

    est = PoseEstimator.from_config(cfg, final_state, device="cpu")
    assert est.joint_names == JOINTS
    assert read_checkpoint_meta(final_state)["joint_names"] == list(JOINTS)  # saved beside the weights
    assert sorted(tuple(sorted(p)) for p in est.flip_pairs) == sorted(FLIP_PAIRS)
    val = json.loads((root / "annotations" / "person_keypoints_val.json").read_text())
    ann = val["annotations"][0]
    image = root / "images" / "val" / val["images"][0]["file_name"]
    poses = est(str(image), boxes=[ann["bbox"]])
    assert len(poses) == 1
    kp = poses[0].keypoints
    assert kp.shape == (K, 3) and np.isfinite(kp).all()
    x, y, w, h = ann["bbox"]
    # Decoded keypoints lie in the padded crop around the given box (1.25 x, aspect 1).
    side = 1.25 * max(w, h)
    cx, cy = x + w / 2, y + h / 2
    assert (np.abs(kp[:, 0] - cx) <= side / 2 + 1).all() and (np.abs(kp[:, 1] - cy) <= side / 2 + 1).all()


def test_custom_ground_truth_heatmaps_score_full_ap(tmp_path, monkeypatch):
    """An oracle model returning, for each crop (or its mirror), the codec-encoded joints of that crop: the
    chain box -> crop -> flip merge -> decode -> results json -> pycocotools OKS (custom sigmas) must find
    every person: AP .5 is 1 and AP close to 1 (only heatmap quantisation is left)."""
    torch.set_num_threads(2)
    from hrpose.data import build_dataset
    from hrpose.engine import test as engine_test
    from hrpose.models.weights import save_weights

    cfg_file, _ = _write_experiment(tmp_path)
    model_file = tmp_path / "init.pth"
    save_weights(build_model(load_config(cfg_file)), model_file)
    cfg = load_config(cfg_file, ["TEST.MODEL_FILE", str(model_file)])

    ds = build_dataset(cfg, "test", False)
    codec = ds.codec
    width = int(cfg.MODEL.IMAGE_SIZE[0])
    reference, targets, targets_mirrored = [], [], []
    for i in range(len(ds)):
        x, target, _, meta = ds[i]
        reference.append(x)
        targets.append(target)
        joints, vis = np.array(meta["joints"], dtype=np.float64), np.array(meta["joints_vis"])[:, 0]
        joints[:, 0] = width - 1 - joints[:, 0]  # official joint flip: x -> width - 1 - x, swap sides
        for a, b in FLIP_PAIRS:
            joints[[a, b]], vis[[a, b]] = joints[[b, a]], vis[[b, a]]
        targets_mirrored.append(torch.from_numpy(codec.encode(joints, vis)[0]))
    ref = torch.stack(reference)
    seen = install_oracle_model(monkeypatch, ref, targets, targets_mirrored)
    result = engine_test(cfg, cfg_file)
    assert sorted(seen) == sorted([(i, m) for i in range(4) for m in (False, True)])
    stats = result["name_values"]
    assert stats["Ap .5"] == pytest.approx(1.0)
    assert result["perf"] == stats["AP"] and stats["AP"] >= 0.9, stats
