"""`hrpose test` end to end on real data (plumbing, not accuracy: the weights are random/filled)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import yaml
from pycocotools.coco import COCO
from scipy.io import loadmat
from torch import nn

from conftest import DATA, requires_capability
from hrpose.cli import main as cli_main
from hrpose.config import load_config
from hrpose.engine.evaluate import predict_heatmaps
from hrpose.models import build_model
from hrpose.models.weights import save_weights

COCO_MINI = DATA / "coco-mini"
SAMPLES = DATA / "samples"


def _cfg(dataset: str, root: Path, test_set: str, **test) -> dict:
    return {
        "GPUS": "(0,)", "WORKERS": 0, "PRINT_FREQ": 100, "PIN_MEMORY": False,
        "DATASET": {"DATASET": dataset, "ROOT": str(root), "TEST_SET": test_set, "TRAIN_SET": test_set},
        "MODEL": {"NAME": "pose_resnet", "PRETRAINED": "", "IMAGE_SIZE": [64, 64], "HEATMAP_SIZE": [16, 16],
                  "SIGMA": 2, "NUM_JOINTS": 16 if dataset == "mpii" else 17,
                  "EXTRA": {"FINAL_CONV_KERNEL": 1, "DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3,
                            "NUM_DECONV_FILTERS": [16, 16, 16], "NUM_DECONV_KERNELS": [4, 4, 4],
                            "NUM_LAYERS": 18}},
        "TEST": {"BATCH_SIZE_PER_GPU": 32, "FLIP_TEST": True, "POST_PROCESS": True, "SHIFT_HEATMAP": True,
                 "IN_VIS_THRE": 0.2, "OKS_THRE": 0.9, **test},
        "HRPOSE": {"TENSORBOARD": False},
    }  # fmt: skip


def _random_weights(cfg_file: Path, path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model(load_config(cfg_file), is_train=True)  # official N(0, 0.001) init: not all zeros
    with torch.no_grad():
        model.final_layer.bias.fill_(0.01)
    save_weights(model, path)
    return path


def _run_test(cfg_file: Path, out: Path, *opts: str) -> int:
    return cli_main(["test", "--cfg", str(cfg_file), "OUTPUT_DIR", str(out), "LOG_DIR", str(out / "log"), *opts])


def _check_results(res_file: Path, ann_file: Path, image_ids: set[int]) -> list[dict]:
    results = json.loads(res_file.read_text())
    assert results, "empty results file"
    for r in results:
        assert r["category_id"] == 1 and r["image_id"] in image_ids
        assert len(r["keypoints"]) == 51 and np.isfinite(r["keypoints"]).all() and np.isfinite(r["score"])
    gt = COCO(str(ann_file))
    dt = gt.loadRes(str(res_file))  # pycocotools accepts the file
    assert len(dt.getAnnIds()) == len(results)
    return results


def test_hrpose_test_coco_mini_gt_boxes(tmp_path, capsys):
    cfg_file = tmp_path / "tiny_gt.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("coco", COCO_MINI, "train2017", USE_GT_BBOX=True)))
    weights = _random_weights(cfg_file, tmp_path / "w.pth")
    assert _run_test(cfg_file, tmp_path / "out", "TEST.MODEL_FILE", str(weights)) == 0
    exp_dir = tmp_path / "out" / "coco" / "pose_resnet" / "tiny_gt"
    ann = COCO_MINI / "annotations" / "person_keypoints_train2017.json"
    ids = {im["id"] for im in json.loads(ann.read_text())["images"]}
    results = _check_results(exp_dir / "results" / "keypoints_train2017_results_0.json", ann, ids)
    assert len(results) <= 86  # one per GT person with keypoints, before OKS NMS
    log = next(exp_dir.glob("tiny_gt_*_test.log")).read_text()
    assert "| Arch | AP | Ap .5 |" in log and "| pose_resnet |" in log
    assert "HRPOSE.BACKEND auto: openvino" in log and (exp_dir / "model.onnx").is_file()  # the default
    assert "| Arch | AP |" in capsys.readouterr().out

    # without TEST.MODEL_FILE the experiment's final_state.pth is used, as the official test.py does
    capsys.readouterr()
    assert _run_test(cfg_file, tmp_path / "out") == 2  # `error:` line, exit 2
    assert "final_state.pth" in capsys.readouterr().err
    (exp_dir / "final_state.pth").write_bytes(weights.read_bytes())
    (exp_dir / "results" / "keypoints_train2017_results_0.json").unlink()
    assert _run_test(cfg_file, tmp_path / "out") == 0
    assert (exp_dir / "results" / "keypoints_train2017_results_0.json").is_file()


def test_hrpose_test_real_detections(tmp_path):
    """samples/coco with its AP_H_56 person detections, arranged in the official layout with symlinks."""
    src = SAMPLES / "coco"
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "person_keypoints_val2017.json").symlink_to(src / "test_coco.json")
    (root / "images" / "val2017").mkdir(parents=True)
    for jpg in src.glob("*.jpg"):
        (root / "images" / "val2017" / jpg.name).symlink_to(jpg)
    det = src / "test_coco_det_AP_H_56.json"
    cfg_file = tmp_path / "tiny_det.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("coco", root, "val2017", USE_GT_BBOX=False, COCO_BBOX_FILE=str(det),
                                            IMAGE_THRE=0.0)))  # fmt: skip
    weights = _random_weights(cfg_file, tmp_path / "w.safetensors")
    assert _run_test(cfg_file, tmp_path / "out", "TEST.MODEL_FILE", str(weights)) == 0
    exp_dir = tmp_path / "out" / "coco" / "pose_resnet" / "tiny_det"
    ids = {d["image_id"] for d in json.loads(det.read_text())}
    results = _check_results(exp_dir / "results" / "keypoints_val2017_results_0.json",
                             src / "test_coco.json", ids)  # fmt: skip
    assert {r["image_id"] for r in results} == ids  # every image with a detection keeps at least one pose
    assert "| Arch | AP |" in next(exp_dir.glob("tiny_det_*_test.log")).read_text()


def test_hrpose_test_mpii_writes_pred_mat(tmp_path):
    src = SAMPLES / "mpii"
    root = tmp_path / "mpii"
    (root / "annot").mkdir(parents=True)
    (root / "annot" / "valid.json").symlink_to(src / "test_mpii.json")
    (root / "images").mkdir()
    for jpg in src.glob("*.jpg"):
        (root / "images" / jpg.name).symlink_to(jpg)
    cfg_file = tmp_path / "tiny_mpii.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("mpii", root, "valid")))
    weights = _random_weights(cfg_file, tmp_path / "w.pth")
    assert _run_test(cfg_file, tmp_path / "out", "TEST.MODEL_FILE", str(weights)) == 0
    exp_dir = tmp_path / "out" / "mpii" / "pose_resnet" / "tiny_mpii"
    n = len(json.loads((src / "test_mpii.json").read_text()))
    preds = loadmat(exp_dir / "pred.mat")["preds"]
    assert preds.shape == (n, 16, 2) and np.isfinite(preds).all()
    assert "| Arch |" in next(exp_dir.glob("tiny_mpii_*_test.log")).read_text()


class _MirrorSymmetric(nn.Module):
    """Every joint's heatmap is the channel mean pooled by 4: model(x.flip(3)) == model(x).flip(3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 4)
        return h.expand(-1, 4, -1, -1).contiguous()


def test_flip_test_averages_the_mirrored_pass():
    x = torch.randn(2, 3, 32, 32)
    model = _MirrorSymmetric()
    plain = predict_heatmaps(model, x)
    pairs = ((0, 1), (2, 3))
    unshifted = predict_heatmaps(model, x, flip_pairs=pairs, flip_test=True, shift_heatmap=False)
    torch.testing.assert_close(unshifted, plain)  # an equivariant model's flipped pass agrees exactly
    shifted = predict_heatmaps(model, x, flip_pairs=pairs, flip_test=True, shift_heatmap=True)
    expected = plain.clone()
    expected[..., 1:] = (plain[..., 1:] + plain[..., :-1]) / 2  # official one-pixel shift of the flipped maps
    torch.testing.assert_close(shifted, expected)


def test_hrpose_test_backends_give_the_same_results(tmp_path):
    """HRPOSE.BACKEND torch-fast (folded BN, TorchScript) and onnxruntime (exported + checked) reproduce torch."""
    cfg_file = tmp_path / "tiny_gt.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("coco", COCO_MINI, "train2017", USE_GT_BBOX=True)))
    weights = _random_weights(cfg_file, tmp_path / "w.pth")
    res = {}
    for backend in ("torch", "torch-fast", "onnxruntime"):
        out = tmp_path / backend
        assert _run_test(cfg_file, out, "TEST.MODEL_FILE", str(weights), "HRPOSE.BACKEND", backend) == 0
        exp_dir = out / "coco" / "pose_resnet" / "tiny_gt"
        res[backend] = json.loads((exp_dir / "results" / "keypoints_train2017_results_0.json").read_text())
    onnx_file = tmp_path / "onnxruntime" / "coco" / "pose_resnet" / "tiny_gt" / "model.onnx"
    assert onnx_file.is_file()
    ref = np.array([r["keypoints"] for r in res["torch"]])
    for backend in ("torch-fast", "onnxruntime"):
        got = np.array([r["keypoints"] for r in res[backend]])
        assert got.shape == ref.shape
        # same argmax cells; quarter-pixel shifts and scores agree to float tolerance
        np.testing.assert_allclose(got, ref, atol=1e-3, rtol=1e-4)
    # an exported .onnx file is accepted directly as TEST.MODEL_FILE
    out = tmp_path / "direct"
    assert _run_test(cfg_file, out, "TEST.MODEL_FILE", str(onnx_file), "HRPOSE.BACKEND", "onnxruntime") == 0
    direct = json.loads((out / "coco/pose_resnet/tiny_gt/results/keypoints_train2017_results_0.json").read_text())
    np.testing.assert_allclose(np.array([r["keypoints"] for r in direct]), ref, atol=1e-3, rtol=1e-4)


@requires_capability("bf16")
def test_hrpose_test_bf16_backend_runs_the_same_pipeline(tmp_path):
    cfg_file = tmp_path / "tiny_gt.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("coco", COCO_MINI, "train2017", USE_GT_BBOX=True)))
    weights = _random_weights(cfg_file, tmp_path / "w.pth")
    res = {}
    for backend in ("torch", "torch-bf16"):
        out = tmp_path / backend
        assert _run_test(cfg_file, out, "TEST.MODEL_FILE", str(weights), "HRPOSE.BACKEND", backend) == 0
        res[backend] = json.loads((out / "coco/pose_resnet/tiny_gt/results/keypoints_train2017_results_0.json")
                                  .read_text())  # fmt: skip
    assert len(res["torch-bf16"]) == len(res["torch"])


def test_hrpose_test_refuses_backends_it_cannot_run(tmp_path, monkeypatch, capsys):
    """A bad HRPOSE.BACKEND, and bf16 on a CPU without bf16 arithmetic (this machine's probe capped to AVX2):
    one clear error before any work, never an emulated run."""
    import dataclasses

    import hrpose.runtime.capabilities as capabilities
    cfg_file = tmp_path / "tiny_gt.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg("coco", COCO_MINI, "train2017", USE_GT_BBOX=True)))
    weights = _random_weights(cfg_file, tmp_path / "w.pth")
    capsys.readouterr()
    assert _run_test(cfg_file, tmp_path / "bad", "TEST.MODEL_FILE", str(weights), "HRPOSE.BACKEND", "tensorrt") == 2
    assert "error: HRPOSE.BACKEND 'tensorrt'" in capsys.readouterr().err
    real = capabilities.probe()
    avx2 = dataclasses.replace(real, features=frozenset(capabilities.capped_features(set(real.hw_features), "AVX2",
                                                                                     "avx2")))  # fmt: skip
    monkeypatch.setattr(capabilities, "probe", lambda: avx2)
    assert _run_test(cfg_file, tmp_path / "bf16", "TEST.MODEL_FILE", str(weights), "HRPOSE.BACKEND", "torch-bf16") == 2
    err = capsys.readouterr().err
    assert re.search("error: .*no bf16 arithmetic.*--backend auto", err) and "Traceback" not in err
    assert not list((tmp_path / "bf16").rglob("*results*.json"))
