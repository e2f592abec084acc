"""CPU int8 (hrpose.quantize): NNCF quantisation of a tiny model, the IR round trip with hrpose's metadata,
the openvino-int8 backend through predict / test / the Python API, accuracy control on a case built to need
it, and one error line for bad calibration input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from torch import nn

from helpers import tiny_hrnet_cfg_dict

pytest.importorskip("nncf", reason="the int8 extra (scripts/setup.sh installs it)")
pytest.importorskip("openvino", reason="the int8 extra (scripts/setup.sh installs it)")

from hrpose import quantize as Q  # noqa: E402
from hrpose.config import config_from_dict  # noqa: E402
from hrpose.data.layout import layout_from_config  # noqa: E402
from hrpose.models import build_model  # noqa: E402
from hrpose.models.weights import checkpoint_meta, save_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"


def _hrpose(*args: str, cwd: Path, env_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "HRPOSE_HOME": str(env_home), "HRPOSE_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "hrpose.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(("WARNING", "warning"))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny pose_hrnet (random, seeded) as YAML + safetensors, and its int8 IR made through the CLI."""
    d = tmp_path_factory.mktemp("int8")
    cfg_dict = tiny_hrnet_cfg_dict(COCO_MINI)
    (d / "tiny.yaml").write_text(yaml.safe_dump(cfg_dict))
    cfg = config_from_dict(cfg_dict)
    torch.manual_seed(0)
    model = build_model(cfg, is_train=False).eval()
    save_weights(model, d / "tiny.safetensors", meta=checkpoint_meta(cfg, layout_from_config(cfg)))
    r = _hrpose("export", "--cfg", "tiny.yaml", "--weights", "tiny.safetensors", "--format", "openvino",
                "--int8-calib", str(COCO_MINI), "--calib-crops", "12", "--max-ap-drop", "none", "--out", "tiny.xml",
                cwd=d, env_home=d / "home")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {"dir": d, "cfg": cfg, "model": model, "xml": d / "tiny.xml", "export_stdout": r.stdout}


def test_export_writes_an_int8_ir_with_hrpose_metadata(tiny: dict) -> None:
    import openvino as ov

    xml = tiny["xml"]
    assert xml.is_file() and xml.with_suffix(".bin").is_file()
    m = ov.Core().read_model(str(xml))
    types = {op.get_type_name() for op in m.get_ordered_ops()}
    assert "FakeQuantize" in types  # quantised: int8 activations in front of the convolutions
    _, meta, report = Q.read_ir(xml)
    assert meta["joint_names"][0] == "nose" and len(meta["joint_names"]) == 17
    assert yaml.safe_load(meta["config"])["MODEL"]["NAME"] == "pose_hrnet"
    assert report is not None and report["calibration_inputs"] == 24  # 12 crops + their mirrors (flip test)
    assert report["conv_layers"] > 10 and report["fp32_layers"] == []
    n = report["conv_layers"]
    assert f"{n} of {n} convolutions int8" in tiny["export_stdout"]


def test_ir_round_trip_runs_close_to_the_fp32_model(tiny: dict) -> None:
    backend = Q.OpenVinoIRBackend(tiny["xml"], cfg=tiny["cfg"])
    cfg = tiny["cfg"]
    ds = Q.test_side_dataset(cfg, COCO_MINI, "train2017")
    people = Q.person_crops(ds, 6)
    with torch.inference_mode():
        ref = tiny["model"](torch.from_numpy(people.crops)).numpy()
    got = backend(people.crops)
    assert got.shape == ref.shape == (6, 17, 16, 16)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    assert 0 < err < 0.25, err  # quantised (not bit-equal), but the same network


def test_an_ir_of_another_model_is_refused_in_one_line(tiny: dict, tmp_path: Path) -> None:
    other = tiny["cfg"].clone()
    other.defrost()
    other.MODEL.NUM_JOINTS = 5
    other.freeze()
    with pytest.raises(Q.Int8Error, match=r"tiny\.xml: an IR of another model .*17 joints.*5 joints"):
        Q.OpenVinoIRBackend(tiny["xml"], cfg=other)
    cfg_dict = yaml.safe_load((tiny["dir"] / "tiny.yaml").read_text())
    cfg_dict["MODEL"]["IMAGE_SIZE"] = [48, 64]
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(cfg_dict))
    img = next((COCO_MINI / "images" / "train2017").iterdir())
    r = _hrpose("predict", str(img), "--cfg", "other.yaml", "--weights", str(tiny["xml"]), "--precision", "int8",
                "--detector", "whole", "--out", "p", "--no-draw", cwd=tmp_path, env_home=tmp_path / "home")  # fmt: skip
    lines = _error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and "tiny.xml" in lines[0] and "another model" in lines[0]


def test_predict_precision_int8_runs_the_ir_and_quantises_a_checkpoint_on_first_use(tiny: dict, tmp_path: Path) -> None:
    img = next((COCO_MINI / "images" / "train2017").iterdir())
    r = _hrpose("predict", str(img), "--weights", str(tiny["xml"]), "--precision", "int8", "--detector", "whole",
                "--out", "a", "--no-draw", cwd=tmp_path, env_home=tmp_path / "home")  # fmt: skip
    assert r.returncode == 0, r.stderr
    people = json.loads((tmp_path / "a" / f"{img.stem}.json").read_text())
    assert len(people) == 1 and len(people[0]["keypoints"]) == 17 * 3
    # a checkpoint without calibration data: one line saying what to give
    r = _hrpose("predict", str(img), "--weights", str(tiny["dir"] / "tiny.safetensors"), "--precision", "int8",
                "--detector", "whole", "--out", "b", "--no-draw", cwd=tmp_path, env_home=tmp_path / "home")  # fmt: skip
    lines = _error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "--int8-calib" in lines[0], r.stderr
    # with calibration data: quantised once, cached under $HRPOSE_HOME/int8, then reused
    args = ("predict", str(img), "--weights", str(tiny["dir"] / "tiny.safetensors"), "--precision", "int8",
            "--int8-calib", str(COCO_MINI), "--max-ap-drop", "0.5", "--detector", "whole", "--no-draw")  # fmt: skip
    r = _hrpose(*args, "--out", "c", cwd=tmp_path, env_home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert "quantising the model" in r.stderr
    cached = list((tmp_path / "home" / "int8").glob("*.xml"))
    assert len(cached) == 1
    r = _hrpose(*args, "--out", "d", cwd=tmp_path, env_home=tmp_path / "home")
    assert r.returncode == 0 and "quantising the model" not in r.stderr, r.stderr
    c = json.loads((tmp_path / "c" / f"{img.stem}.json").read_text())
    d = json.loads((tmp_path / "d" / f"{img.stem}.json").read_text())
    assert c == d


def test_int8_on_a_gpu_device_is_refused_in_one_line(tiny: dict, tmp_path: Path) -> None:
    img = next((COCO_MINI / "images" / "train2017").iterdir())
    r = _hrpose("predict", str(img), "--weights", str(tiny["xml"]), "--precision", "int8", "--device", "cuda",
                "--detector", "whole", "--out", "a", cwd=tmp_path, env_home=tmp_path / "home")  # fmt: skip
    lines = _error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1 and "runs on the CPU" in lines[0], r.stderr


def test_hrpose_test_runs_the_ir(tiny: dict, tmp_path: Path) -> None:
    from hrpose.engine.evaluate import _test_model

    cfg = tiny["cfg"].clone()
    cfg.defrost()
    cfg.TEST.MODEL_FILE = str(tiny["xml"])
    cfg.HRPOSE.BACKEND = "openvino-int8"
    cfg.freeze()
    backend, path = _test_model(cfg, tmp_path, torch.device("cpu"))
    assert isinstance(backend, Q.OpenVinoIRBackend) and path == tiny["xml"]
    cfg.defrost()
    cfg.TEST.MODEL_FILE = str(tiny["dir"] / "tiny.safetensors")
    with pytest.raises(Q.Int8Error, match="TEST.MODEL_FILE"):
        _test_model(cfg, tmp_path, torch.device("cpu"))


def _coco_like(root: Path, n_images: int, *, joints: int = 17, people: bool = True) -> Path:
    """COCO layout copied from coco-mini's first images (same pixels), with `joints` per person or none."""
    src = json.loads((COCO_MINI / "annotations" / "person_keypoints_train2017.json").read_text())
    images = src["images"][:n_images]
    ids = {im["id"] for im in images}
    anns = [a for a in src["annotations"] if a["image_id"] in ids and a.get("num_keypoints", 0) > 0] if people else []
    for a in anns:
        a["keypoints"] = (a["keypoints"] * 2)[: 3 * joints]
    cat = dict(src["categories"][0])
    cat["keypoints"] = (cat["keypoints"] * 2)[:joints]
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train2017").mkdir(parents=True)
    for im in images:
        (root / "images" / "train2017" / im["file_name"]).write_bytes(
            (COCO_MINI / "images" / "train2017" / im["file_name"]).read_bytes())
    (root / "annotations" / "person_keypoints_train2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [cat]}))
    return root


@pytest.mark.parametrize("case", ["no people", "wrong joint count", "not a folder", "no set named"])
def test_bad_calibration_input_gets_one_error_line(tiny: dict, tmp_path: Path, case: str) -> None:
    if case == "no people":
        root = _coco_like(tmp_path / "calib", 4, people=False)
        expect = "person_keypoints_train2017.json"
    elif case == "wrong joint count":
        root = _coco_like(tmp_path / "calib", 4, joints=5)
        expect = "5 keypoints, expected 17"
    elif case == "not a folder":
        root = tmp_path / "nothing"
        expect = "not a folder"
    else:
        root = _coco_like(tmp_path / "calib", 4)
        (root / "annotations" / "person_keypoints_val2017.json").write_text("{}")
        expect = "--calib-set"
    r = _hrpose("export", "--cfg", str(tiny["dir"] / "tiny.yaml"), "--weights", str(tiny["dir"] / "tiny.safetensors"),
                "--format", "openvino", "--int8-calib", str(root), "--out", "q.xml", cwd=tmp_path,
                env_home=tmp_path / "home")  # fmt: skip
    lines = _error_lines(r.stderr)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and expect in lines[0] and str(root.name) in lines[0], lines[0]
    assert not (tmp_path / "q.xml").exists()


# ------------------------------------------------------------------------------------------------------------
# accuracy control on a case built to need it
class _Blobs(nn.Module):
    """Finds three coloured dots: heatmap k = the 4x4 mean of relu(channel k + 2). A second group of channels
    carries 1000x the input beside them into the 1x1 head, which ignores it: the head's input quantiser
    (per tensor, as OpenVINO's CPU activations are) then spends its 256 levels on a range ~1000x wider than
    the heatmap channels', which it rounds to 0. Only keeping the head in fp32 restores the keypoints."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 1)
        self.pool = nn.AvgPool2d(4)
        self.head = nn.Conv2d(6, 3, 1)
        with torch.no_grad():
            self.stem.weight.zero_()
            self.stem.bias.zero_()
            for k in range(3):
                self.stem.weight[k, k] = 1.0
                self.stem.bias[k] = 2.0
                self.stem.weight[3 + k, k] = 1000.0
                self.stem.bias[3 + k] = 3000.0
            self.head.weight.zero_()
            self.head.bias.zero_()
            for k in range(3):
                self.head.weight[k, k] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.relu(self.stem(x))))


def _dots_dataset(root: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    images, anns = [], []
    for i in range(n):
        img = np.zeros((96, 96, 3), np.uint8)
        kps = []
        for k in range(3):
            x, y = (float(v) for v in rng.uniform(20, 76, 2))
            colour = [0, 0, 0]
            colour[k] = 255
            cv2.circle(img, (round(x), round(y)), 3, colour, -1)
            kps += [x, y, 2]
        name = f"dots_{i}.png"
        cv2.imwrite(str(root / "images" / "train" / name), img)
        images.append({"id": i + 1, "file_name": name, "width": 96, "height": 96})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [8, 8, 80, 80], "area": 6400,
                     "iscrowd": 0, "num_keypoints": 3, "keypoints": kps})  # fmt: skip
    cat = {"id": 1, "name": "person", "keypoints": ["first", "second", "third"], "skeleton": []}
    (root / "annotations" / "person_keypoints_train.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [cat]}))


def test_accuracy_control_keeps_the_drop_under_max_ap_drop(tmp_path: Path) -> None:
    from hrpose.config import get_default_config, merge_dict
    from hrpose.pipeline import TestSettings

    _dots_dataset(tmp_path / "dots")
    cfg = get_default_config()
    merge_dict(cfg, {"DATASET": {"DATASET": "custom", "ROOT": str(tmp_path / "dots"), "TEST_SET": "train",
                                 "TRAIN_SET": "train", "COLOR_RGB": False},
                     "MODEL": {"NAME": "pose_resnet", "NUM_JOINTS": 3, "IMAGE_SIZE": [64, 64],
                               "HEATMAP_SIZE": [16, 16]},
                     "TEST": {"USE_GT_BBOX": True, "FLIP_TEST": False, "POST_PROCESS": True},
                     "HRPOSE": {"OKS_SIGMAS": [0.1, 0.1, 0.1]}})  # fmt: skip
    cfg.freeze()
    model = _Blobs().eval()
    calib, held = Q.calibration_set(cfg, tmp_path / "dots", "train", accuracy_control=True)
    assert len(calib) == 8 and len(held) == 4  # every third image held out, none in both
    assert not set(calib.image_ids) & set(held.image_ids)
    settings = TestSettings.from_config(cfg)

    def ap(backend) -> float:  # noqa: ANN001
        return 100.0 * Q.coco_ap(held, Q.predict_people(backend, held, settings))

    fp32_ap = ap(lambda x: model(torch.from_numpy(np.ascontiguousarray(x))).detach().numpy())
    assert fp32_ap > 60.0  # the network finds the dots
    plain, _ = Q.quantize_openvino(model, cfg, calib)
    plain_ap = ap(Q.CompiledRunner(plain))
    assert fp32_ap - plain_ap > 0.5 * 10  # every layer int8: far more than the allowed drop (the case needs it)
    controlled, report = Q.quantize_openvino(model, cfg, calib, held_out=held, max_ap_drop=0.5)
    out = Q.save_ir(controlled, tmp_path / "controlled.xml", checkpoint_meta(cfg, held.dataset.meta), report)
    got = ap(Q.OpenVinoIRBackend(out, cfg=cfg))  # measured again on the written IR, not taken from the report
    assert fp32_ap - got <= 0.5, (fp32_ap, plain_ap, got)
    assert report.fp32_layers and report.max_ap_drop == 0.5
    assert report.fp32_ap is not None and abs(report.fp32_ap - fp32_ap) < 1e-6
