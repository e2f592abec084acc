"""Zero-config predict from a hand-populated model cache (as offline users do), checkpoint metadata, refusals.

$HRPOSE_HOME gets, by hand: a tiny pose model in MMPose 1.x layout under the default model's file name (the
registry entry is pointed at a tiny config and the file's hash) and a test-built MMDeploy-end2end-like ONNX
detector; HRPOSE_OFFLINE=1. Then `hrpose predict photo.jpg` with no other argument must write the skeletons
the cached model gives (converted from MMPose's layout, fed in the entry's RGB order).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import OrderedDict

import numpy as np
import pytest
import torch

from conftest import DATA
from helpers import TINY_YAML, fill_module
from hrpose import zoo
from hrpose.cli import main
from hrpose.config import load_config
from hrpose.data.layout import layout_from_config
from hrpose.errors import UserError
from hrpose.inference import PoseEstimator, WholeImageDetector
from hrpose.inference.detectors import OnnxDetector
from hrpose.keypoints import COCO
from hrpose.models import build_model
from hrpose.models.weights import checkpoint_meta, read_checkpoint_meta, save_weights

PHOTO = DATA / "samples" / "coco" / "000000000785.jpg"


def test_predict_photo_with_no_other_argument(world, capsys):
    assert main(["predict", "photo.png"]) == 0
    captured = capsys.readouterr()
    assert "using the model zoo's hrnet-w32-coco-256x192" in captured.err
    assert "1 images, 0 frames, 3 people found" in captured.out
    people = json.loads((world["home"].parent / "predictions" / "photo.json").read_text())
    assert (world["home"].parent / "predictions" / "photo_pose.jpg").is_file()
    # the test detector's boxes, 640 x 425 letterboxed into 416 x 416 (r = 0.65): input px / 0.65
    np.testing.assert_allclose([p["bbox"] for p in people],
                               [[32, 64, 128, 192], [48, 64, 112, 192], [320, 0, 320, 320]], atol=0.05)  # fmt: skip
    np.testing.assert_allclose([p["box_score"] for p in people], [230 / 255, 0.5, 114 / 255], atol=0.02)
    assert all(p["joint_names"] == list(COCO.joint_names) and len(p["keypoints"]) == 51 for p in people)
    # the same skeletons as the model itself gives (our layout, RGB input) for those boxes
    ref = PoseEstimator.from_config(world["cfg"], world["own"], device="cpu", color_rgb=True,
                                    detector=WholeImageDetector())
    boxes = [[*p["bbox"], p["box_score"]] for p in people]
    want = ref(world["image"], boxes=boxes)
    got = np.asarray([p["keypoints"] for p in people]).reshape(3, 17, 3)
    np.testing.assert_allclose(got, np.stack([w.keypoints for w in want]), atol=2e-3)
    bgr = PoseEstimator.from_config(world["cfg"], world["own"], device="cpu", detector=WholeImageDetector())(
        world["image"], boxes=boxes)  # fmt: skip
    assert not np.allclose(got, np.stack([w.keypoints for w in bgr]), atol=2e-3)  # so the order mattered


def test_from_pretrained(world):
    est = PoseEstimator.from_pretrained(zoo.DEFAULT_POSE_MODEL, device="cpu", backend="torch")
    assert est.color_rgb and est.joint_names == COCO.joint_names
    assert isinstance(est.detector, OnnxDetector) and est.detector.input_size == (416, 416)
    assert len(est(world["image"])) == 3
    with pytest.raises(UserError, match="not a pose model"):
        PoseEstimator.from_pretrained(zoo.DEFAULT_DETECTOR)
    with pytest.raises(UserError, match="unknown model name 'hrnet-w33'.*did you mean"):
        PoseEstimator.from_pretrained("hrnet-w33")
    # not cached, offline: says which file to place where
    with pytest.raises(UserError, match=r"HRPOSE_OFFLINE.*place it at .*pose.td-hm_res50"):
        PoseEstimator.from_pretrained("resnet50-coco-256x192", device="cpu")


def test_run_without_weights_is_refused_in_one_line(world, capsys):
    rc = main(["predict", "--cfg", str(world["cfg"]), "photo.png", "--detector", "whole"])
    assert rc == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: no weights")
    assert "--weights" in err[0] and "--model" in err[0] and "--random-weights" in err[0]
    assert not (world["home"].parent / "predictions" / "photo.json").exists()


def test_random_weights_on_request(world, caplog):
    with caplog.at_level(logging.WARNING, logger="hrpose.inference.estimator"):
        rc = main(["predict", "--cfg", str(world["cfg"]), "photo.png", "--detector", "whole", "--random-weights",
                   "--out", "rnd"])  # fmt: skip
    assert rc == 0
    people = json.loads((world["home"].parent / "rnd" / "photo.json").read_text())
    assert len(people) == 1 and len(people[0]["keypoints"]) == 51
    assert "--random-weights: the pose_resnet model keeps its random initial weights" in caplog.text


def test_model_and_cfg_together_are_refused(world, capsys):
    assert main(["predict", "--model", zoo.DEFAULT_POSE_MODEL, "--cfg", str(world["cfg"]), "photo.png"]) == 2
    assert "--model hrnet-w32-coco-256x192 brings its own config" in capsys.readouterr().err


@pytest.mark.parametrize("thr", ["1.5", "-1"])
def test_det_thr_outside_0_1_is_refused(world, capsys, thr):
    assert main(["predict", "photo.png", "--det-thr", thr]) == 2
    assert "error: --det-thr must be between 0 and 1" in capsys.readouterr().err


def test_det_thr_filters_the_zoo_detector(world, capsys):
    assert main(["predict", "photo.png", "--det-thr", "0.6", "--out", "thr"]) == 0
    assert len(json.loads((world["home"].parent / "thr" / "photo.json").read_text())) == 1


# ---------------------------------------------------------------------------------------------------------
# checkpoints carry their metadata

CUSTOM_YAML = """
DATASET: {DATASET: custom, ROOT: %s, TEST_SET: val, COLOR_RGB: true}
MODEL:
  NAME: pose_resnet
  NUM_JOINTS: 5
  IMAGE_SIZE: [32, 32]
  HEATMAP_SIZE: [8, 8]
  EXTRA: {NUM_LAYERS: 18, NUM_DECONV_LAYERS: 3, NUM_DECONV_FILTERS: [16, 16, 16], NUM_DECONV_KERNELS: [4, 4, 4]}
HRPOSE: {FLIP_PAIRS: [[1, 2], [3, 4]], OKS_SIGMAS: [0.1, 0.2, 0.2, 0.3, 0.3]}
"""
JOINTS = ["beak", "left_wing", "right_wing", "left_foot", "right_foot"]


@pytest.fixture()
def custom_model(tmp_path):
    root = tmp_path / "birds"
    (root / "annotations").mkdir(parents=True)
    category = {"id": 1, "name": "bird", "keypoints": JOINTS, "skeleton": [[1, 2], [1, 3], [2, 4], [3, 5]]}
    (root / "annotations" / "person_keypoints_val.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [category]}))  # fmt: skip
    cfg_path = tmp_path / "birds.yaml"
    cfg_path.write_text(CUSTOM_YAML % root)
    cfg = load_config(cfg_path)
    model = build_model(cfg)
    fill_module().fill_(model, 7)
    return cfg, cfg_path, model, root


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_custom_model_predicts_away_from_its_data_root(custom_model, tmp_path, capsys, suffix):
    cfg, cfg_path, model, root = custom_model
    meta = checkpoint_meta(cfg, layout_from_config(cfg))  # the joint names come from the dataset's annotation file here
    assert meta["joint_names"] == JOINTS and meta["skeleton"] == [[0, 1], [0, 2], [1, 3], [2, 4]]
    weights = save_weights(model, tmp_path / "out" / f"birds{suffix}", meta=meta)
    # away from the data and the YAML: both gone
    (root / "annotations" / "person_keypoints_val.json").unlink()
    cfg_path.unlink()
    stored = read_checkpoint_meta(weights)
    assert stored is not None and stored["input_size"] == [32, 32] and stored["heatmap_size"] == [8, 8]
    assert stored["color_rgb"] is True and stored["sigmas"] == [0.1, 0.2, 0.2, 0.3, 0.3]
    assert stored["flip_pairs"] == [[1, 2], [3, 4]] and "NUM_JOINTS: 5" in stored["config"]

    rc = main(["predict", "--weights", str(weights), str(PHOTO), "--detector", "whole", "--device", "cpu",
               "--out", str(tmp_path / "pred")])  # fmt: skip
    assert rc == 0
    people = json.loads((tmp_path / "pred" / f"{PHOTO.stem}.json").read_text())
    assert len(people) == 1 and people[0]["joint_names"] == JOINTS and len(people[0]["keypoints"]) == 15
    # with a config whose DATASET.ROOT does not exist, the checkpoint's names still win over joint_<i>
    est = PoseEstimator.from_config(cfg, weights, device="cpu", detector=WholeImageDetector())
    assert list(est.joint_names) == JOINTS and est.skeleton == ((0, 1), (0, 2), (1, 3), (2, 4))
    assert est.flip_pairs == ((1, 2), (3, 4))
    random_est = PoseEstimator.from_config(cfg, random_weights=True, device="cpu")
    assert list(random_est.joint_names) == [f"joint_{i}" for i in range(5)]


def test_pth_with_metadata_is_still_a_bare_official_state_dict(custom_model, tmp_path):
    cfg, _, model, _ = custom_model
    path = save_weights(model, tmp_path / "final_state.pth", meta=checkpoint_meta(cfg, layout_from_config(cfg)))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert type(loaded) is OrderedDict and list(loaded) == list(model.state_dict())  # no extra keys
    assert all(isinstance(v, torch.Tensor) for v in loaded.values())
    fresh = build_model(cfg)
    fresh.load_state_dict(loaded, strict=True)  # what the official code does with it
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    assert json.loads(loaded.hrpose_meta)["joint_names"] == JOINTS
    assert read_checkpoint_meta(save_weights(model, tmp_path / "plain.pth")) is None


def test_malformed_metadata_is_a_clear_error(custom_model, tmp_path, capsys):
    _, _, model, _ = custom_model
    path = save_weights(model, tmp_path / "bad.safetensors", meta={"joint_names": "beak"})
    assert main(["predict", "--weights", str(path), str(PHOTO), "--detector", "whole"]) == 2
    assert "bad.safetensors: the hrpose_meta entry has no list of joint names" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# training: MODEL.PRETRAINED named as in the official YAMLs comes from the model zoo's cache


def test_missing_imagenet_file_comes_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_YAML)
    src = build_model(load_config(cfg_path))
    fill_module().fill_(src, 9)
    backbone = {k: v for k, v in src.state_dict().items() if not k.startswith(("deconv_layers.", "final_layer."))}
    backbone["fc.weight"], backbone["fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)  # torchvision layout
    entry = zoo.get_entry("imagenet-resnet50")
    cached = tmp_path / "home" / "imagenet" / entry.filename
    cfg = load_config(cfg_path, freeze=False)
    cfg.MODEL.PRETRAINED = f"models/pytorch/imagenet/{entry.filename}"  # as the official YAML writes it
    with pytest.raises(UserError, match=r"MODEL.PRETRAINED='models/pytorch/imagenet/resnet50-19c8e357.pth' not "
                       r"found.*HRPOSE_OFFLINE.*place it at .*imagenet.resnet50-19c8e357.pth"):  # fmt: skip
        build_model(cfg, is_train=True)
    cached.parent.mkdir(parents=True)
    torch.save(backbone, cached)
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    monkeypatch.setitem(zoo.REGISTRY, entry.name, dataclasses.replace(entry, sha256=digest))
    model = build_model(cfg, is_train=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in backbone.items() if not k.startswith("fc."))
    assert not torch.equal(model.final_layer.weight, src.final_layer.weight)


def test_weights_accepts_an_mmpose_checkpoint_and_feeds_it_rgb(world):
    cached = world["home"] / "pose" / zoo.get_entry(zoo.DEFAULT_POSE_MODEL).filename
    box = [[100, 40, 300, 360, 1.0]]
    est = PoseEstimator.from_config(world["cfg"], cached, device="cpu", detector=WholeImageDetector())  # YAML says BGR
    assert est.color_rgb  # the MMPose layout decides
    ref = PoseEstimator.from_config(world["cfg"], world["own"], device="cpu", color_rgb=True,
                                    detector=WholeImageDetector())
    np.testing.assert_allclose(est(world["image"], boxes=box)[0].keypoints, ref(world["image"], boxes=box)[0].keypoints,
                               atol=1e-4)  # fmt: skip


def test_offline_without_the_model_says_where_to_place_it(world, capsys, caplog):
    (world["home"] / "pose" / zoo.get_entry(zoo.DEFAULT_POSE_MODEL).filename).unlink()
    assert main(["predict", "photo.png"]) == 2
    err = capsys.readouterr().err
    assert "error: model 'hrnet-w32-coco-256x192' is not in the cache and HRPOSE_OFFLINE is set" in err
    assert str(world["home"] / "pose" / "td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth") in err
    assert "HOG" not in caplog.text  # the pose model's error comes first


def test_zoo_detector_offline_fallback_through_predict(world, capsys, caplog):
    (world["home"] / "detector" / zoo.DEFAULT_DETECTOR / "end2end.onnx").unlink()
    with caplog.at_level(logging.WARNING):
        assert main(["predict", "photo.png", "--out", "hog"]) == 0
    assert "falling back to OpenCV's HOG people detector" in caplog.text
    assert (world["home"].parent / "hog" / "photo.json").is_file()


def test_estimator_default_detector_is_the_zoo_one_fetched_on_first_need(world):
    est = PoseEstimator.from_config(world["cfg"], world["own"], device="cpu")
    assert est.detector is None  # nothing fetched while only given boxes
    assert len(est(world["image"], boxes=[[100, 40, 300, 360]])) == 1 and est.detector is None
    assert len(est(world["image"])) == 3
    assert isinstance(est.detector, OnnxDetector)
