"""PoseDataset / build_dataset: official samples (goldens), determinism, bad images, custom data, evaluation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, GOLDEN, golden_json, golden_npz
from hrpose.config import get_default_config, merge_dict
from hrpose.data.augment import AugParams
from hrpose.data.dataset import build_dataset
from hrpose.images import ImageReadError, read_image

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
COCO_EXP = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
MPII_EXP = "experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml"


def make_cfg(experiment: str, **overrides):
    exp = golden_json("experiments.json")[experiment]
    cfg = get_default_config()
    merge_dict(cfg, {k: exp[k] for k in ("DATASET", "MODEL", "TEST", "LOSS")})
    for key, value in overrides.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def as_uint8(inp: torch.Tensor) -> np.ndarray:
    """Undo the normalisation: (3, H, W) float -> (H, W, 3) grey levels."""
    return np.rint((inp.numpy().transpose(1, 2, 0) * STD + MEAN) * 255.0)


@pytest.fixture(scope="module")
def npz():
    return golden_npz("dataset_samples.npz")


@pytest.fixture(scope="module")
def coco_test():
    cfg = make_cfg(COCO_EXP, **{"DATASET.ROOT": str(DATA / "coco-mini"), "DATASET.TEST_SET": "train2017"})
    return build_dataset(cfg, "test", is_train=False)


def test_coco_test_samples_match_official(coco_test, npz):
    assert len(coco_test) == 86 and coco_test.meta.name == "coco"
    for i in golden_json("dataset_samples.json")["coco_sample_indices"]:
        inp, target, weight, meta = coco_test[i]
        assert inp.shape == (3, 256, 192) and inp.dtype == torch.float32
        assert np.abs(as_uint8(inp) - npz[f"coco{i}_input_uint8"]).max() <= 1
        np.testing.assert_allclose(target.numpy(), npz[f"coco{i}_target"], atol=1e-4)
        np.testing.assert_allclose(weight.numpy(), npz[f"coco{i}_target_weight"], atol=1e-4)
        np.testing.assert_allclose(meta["joints"], npz[f"coco{i}_joints"], atol=1e-4)
        assert meta["index"] == i and meta["rotation"] == 0 and meta["score"] == 1.0


def test_coco_train_geometry_matches_official(npz):
    cfg = make_cfg(COCO_EXP, **{"DATASET.ROOT": str(DATA / "coco-mini")})
    ds = build_dataset(cfg, "train", is_train=True)
    cases = golden_json("dataset_samples.json")["coco_train_aug"]
    assert any(c["flip"] for c in cases) and any(c["rotation"] for c in cases)
    for n, c in enumerate(cases):
        i, image = ds.load_image(c["db_index"])
        inp, target, weight, meta = ds.make_item(i, image, AugParams(c["scale_multiplier"], c["rotation"], c["flip"]))
        assert np.abs(as_uint8(inp) - npz[f"aug{n}_input_uint8"]).max() <= 1
        np.testing.assert_allclose(target.numpy(), npz[f"aug{n}_target"], atol=1e-4)
        np.testing.assert_allclose(weight.numpy(), npz[f"aug{n}_target_weight"], atol=1e-4)


@pytest.fixture
def mpii_root(tmp_path):
    """The MPII samples in the official layout: annot/valid.json + images/."""
    src = DATA / "samples" / "mpii"
    (tmp_path / "annot").mkdir()
    (tmp_path / "images").mkdir()
    shutil.copy(src / "test_mpii.json", tmp_path / "annot" / "valid.json")
    for f in src.glob("*.jpg"):
        os.symlink(f, tmp_path / "images" / f.name)
    shutil.copy(GOLDEN / "mpii_gt_valid.mat", tmp_path / "annot" / "gt_valid.mat")
    return tmp_path


def test_mpii_samples_match_official(mpii_root, npz):
    ds = build_dataset(make_cfg(MPII_EXP, **{"DATASET.ROOT": str(mpii_root)}), "test", is_train=False)
    assert len(ds) == 5 and ds.meta.name == "mpii"
    for i in range(5):
        inp, target, weight, _ = ds[i]
        assert inp.shape == (3, 256, 256)
        assert np.abs(as_uint8(inp) - npz[f"mpii{i}_input_uint8"]).max() <= 1
        np.testing.assert_allclose(target.numpy(), npz[f"mpii{i}_target"], atol=1e-4)
        np.testing.assert_allclose(weight.numpy(), npz[f"mpii{i}_target_weight"], atol=1e-4)
    preds = np.stack([np.concatenate([r.joints_img[:, :2], np.ones((16, 1))], 1) for r in ds.records])
    table, mean = ds.evaluate(preds, mpii_root / "out")
    assert mean == pytest.approx(100.0) and (mpii_root / "out" / "pred.mat").is_file()


def test_detection_boxes_for_testing():
    cfg = make_cfg(COCO_EXP, **{"DATASET.ROOT": str(DATA / "coco-mini"), "DATASET.TEST_SET": "train2017",
                                "TEST.USE_GT_BBOX": False, "TEST.IMAGE_THRE": 0.0,
                                "TEST.COCO_BBOX_FILE": str(GOLDEN / "coco_mini_detections.json")})  # fmt: skip
    ds = build_dataset(cfg, "test", is_train=False)
    golden = golden_json("dataset_samples.json")["coco_det_db"]
    assert len(ds) == len(golden)
    _, target, weight, meta = ds[0]
    assert meta["score"] == pytest.approx(golden[0]["score"])
    np.testing.assert_allclose(meta["center"], golden[0]["center"], atol=1e-4)
    assert target.shape == (17, 64, 48) and weight.shape == (17, 1)


def test_select_data_and_train_augmentation_is_seeded():
    root = str(DATA / "coco-mini")
    cfg = make_cfg(COCO_EXP, **{"DATASET.ROOT": root, "DATASET.SELECT_DATA": True, "HRPOSE.SEED": 3})
    ds = build_dataset(cfg, "train", is_train=True)
    assert len(ds) == len(golden_json("dataset_samples.json")["coco_select_data_keep"])
    a, b = ds[4], ds[4]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    params = [ds.sample_params(i) for i in range(20)]
    ds.set_epoch(1)
    assert [ds.sample_params(i) for i in range(20)] != params
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    ds.set_epoch(0)
    batch = next(iter(loader))
    inp, target, weight, meta = batch
    assert inp.shape == (4, 3, 256, 192) and target.shape == (4, 17, 64, 48) and weight.shape == (4, 17, 1)
    assert meta["center"].shape == (4, 2) and len(meta["image"]) == 4
    for k in range(4):
        assert torch.equal(inp[k], ds[k][0])  # same sample in a worker as in the main process


def _write_custom(root: Path, n_images: int = 3, k: int = 5) -> None:
    rng = np.random.default_rng(0)
    images, anns = [], []
    (root / "images" / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    for i in range(n_images):
        name = f"pic_{i}.png"
        cv2.imwrite(str(root / "images" / "val" / name), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        images.append({"id": 100 + i, "file_name": name, "width": 160, "height": 120})
        kp = np.concatenate([rng.uniform(40, 100, (k, 2)), np.full((k, 1), 2)], 1).ravel().tolist()
        anns.append({"id": i, "image_id": 100 + i, "bbox": [30, 30, 80, 80], "area": 6400, "category_id": 5,
                     "iscrowd": 0, "keypoints": kp, "num_keypoints": k})  # fmt: skip
    cat = {"id": 5, "name": "thing", "keypoints": ["top", "left_a", "right_a", "left_b", "right_b"][:k],
           "skeleton": [[1, 2], [1, 3]]}  # fmt: skip
    (root / "annotations" / "val.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                               "categories": [cat]}))  # fmt: skip


def test_custom_dataset_any_joint_count(tmp_path):
    _write_custom(tmp_path)
    cfg = make_cfg(COCO_EXP, **{"DATASET.DATASET": "custom", "DATASET.ROOT": str(tmp_path),
                                "DATASET.TRAIN_SET": "val", "MODEL.NUM_JOINTS": 5})  # fmt: skip
    ds = build_dataset(cfg, "train", is_train=True)
    assert ds.meta.num_joints == 5 and ds.meta.flip_pairs == ((1, 2), (3, 4))
    assert [r.image_id for r in ds.records] == [100, 101, 102]
    inp, target, weight, meta = ds[1]
    assert target.shape == (5, 64, 48) and weight.shape == (5, 1) and meta["joints"].shape == (5, 3)
    cfg.MODEL.NUM_JOINTS = 17
    with pytest.raises(ValueError, match="NUM_JOINTS is 17 but the custom dataset has 5"):
        build_dataset(cfg, "train", is_train=True)


def test_bad_images(tmp_path):
    _write_custom(tmp_path)
    img_dir = tmp_path / "images" / "val"
    (img_dir / "pic_1.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="pic_1.png.*zero-byte"):
        read_image(img_dir / "pic_1.png")
    with pytest.raises(ImageReadError, match="nothere.jpg.*not found"):
        read_image(img_dir / "nothere.jpg")
    noise = np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", noise)
    (img_dir / "cut.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(ImageReadError, match="cut.jpg.*truncated"):
        read_image(img_dir / "cut.jpg")
    (img_dir / "full.jpg").write_bytes(buf.tobytes())
    assert read_image(img_dir / "full.jpg").shape == (200, 200, 3)

    cfg = make_cfg(COCO_EXP, **{"DATASET.DATASET": "custom", "DATASET.ROOT": str(tmp_path),
                                "DATASET.TEST_SET": "val", "MODEL.NUM_JOINTS": 5})  # fmt: skip
    ds = build_dataset(cfg, "test", is_train=False)
    with pytest.warns(RuntimeWarning, match="pic_1.png"):
        _, _, _, meta = ds[1]
    assert meta["index"] == 2 and len(ds.bad_images) == 1  # the next readable record stands in
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch[0].shape[0] == 3
    cfg.HRPOSE.SKIP_BAD_IMAGES = False
    with pytest.raises(ImageReadError, match="pic_1.png"):
        build_dataset(cfg, "test", is_train=False)[1]


def test_coco_evaluate_ground_truth_scores_high(coco_test, tmp_path):
    """Ground-truth joints as predictions: near-perfect AP (OKS NMS at 0.9 drops one 1-joint person, as
    official); the same joints 40 px off, or attributed to the wrong images, score far lower."""
    preds = np.stack([np.concatenate([r.joints_img[:, :2], np.ones((17, 1))], 1) for r in coco_test.records])
    _, ap = coco_test.evaluate(preds, tmp_path)
    assert ap > 0.97
    assert (tmp_path / "results" / "keypoints_train2017_results_0.json").is_file()
    shifted = preds.copy()
    shifted[:, :, :2] += 40.0
    assert coco_test.evaluate(shifted, tmp_path)[1] < 0.5
    ids = np.array([r.image_id for r in coco_test.records])
    assert coco_test.evaluate(preds, tmp_path, image_ids=np.roll(ids, 7))[1] < 0.5


def test_coco_test_dev_layout_uses_image_info_and_detections(tmp_path):
    """Test sets: `annotations/image_info_<set>.json` (no annotations, plain categories), images in
    `images/test2017/`, boxes from the detection file; evaluation writes results but has no ground truth."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / "images" / "test2017").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "test2017" / "a.jpg"), np.full((100, 120, 3), 90, np.uint8))
    info = {"images": [{"id": 42, "file_name": "a.jpg", "width": 120, "height": 100}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}]}  # fmt: skip
    (tmp_path / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(info))
    dets = [{"image_id": 42, "category_id": 1, "bbox": [10, 10, 50, 80], "score": 0.9},
            {"image_id": 42, "category_id": 2, "bbox": [10, 10, 50, 80], "score": 0.9},
            {"image_id": 42, "category_id": 1, "bbox": [60, 10, 40, 60], "score": 0.05}]  # fmt: skip
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    cfg = make_cfg(COCO_EXP, **{"DATASET.ROOT": str(tmp_path), "DATASET.TEST_SET": "test-dev2017",
                                "TEST.USE_GT_BBOX": False, "TEST.IMAGE_THRE": 0.1,
                                "TEST.COCO_BBOX_FILE": str(tmp_path / "dets.json")})  # fmt: skip
    ds = build_dataset(cfg, "test", is_train=False)
    assert len(ds) == 1 and ds.records[0].image == str(tmp_path / "images" / "test2017" / "a.jpg")
    inp, _, _, meta = ds[0]
    assert meta["image_id"] == 42 and meta["score"] == pytest.approx(0.9) and inp.shape == (3, 256, 192)
    stats, _ = ds.evaluate(np.ones((1, 17, 3)), tmp_path / "out")
    assert dict(stats) == {"Null": 0.0}
    assert (tmp_path / "out" / "results" / "keypoints_test-dev2017_results_0.json").is_file()
