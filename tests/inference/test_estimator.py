"""PoseEstimator plumbing on real images with a tiny deterministic model: crops, geometry, formats, scoring."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, golden_json, golden_npz
from hrpose.config import load_config
from hrpose.data.layout import layout_from_config as meta_from_config
from hrpose.geometry import IMAGENET_MEAN, IMAGENET_STD, box_to_center_scale, make_inputs
from hrpose.inference import PersonPose, PoseEstimator, WholeImageDetector
from hrpose.keypoints import COCO

IMAGE = DATA / "samples" / "coco" / "000000000785.jpg"
BOX = [277.1, 45.7, 225.1, 333.6, 0.99]  # the detector's box for the person in IMAGE


@pytest.fixture(scope="module")
def tiny(tiny_pose):
    return tiny_pose


@pytest.fixture(scope="module")
def est(tiny):
    _, cfg, model = tiny
    return PoseEstimator.from_model(model, cfg, device="cpu", detector=WholeImageDetector())


def crop_region(box, aspect=32 / 64):
    """The image region a box's crop covers: the aspect-corrected, 1.25-padded box, (x1, y1, x2, y2)."""
    center, scale = box_to_center_scale(box, aspect)
    half = scale * 200 / 2
    return center[0] - half[0], center[1] - half[1], center[0] + half[0], center[1] + half[1]


def test_layout_from_config(est):
    assert est.joint_names == COCO.joint_names
    assert est.flip_pairs == COCO.flip_pairs and est.skeleton == COCO.skeleton
    assert est.device == torch.device("cpu")


def test_crops_match_the_official_test_crops():
    """make_inputs reproduces the official loader's test-mode crops of coco-mini records (<= 1 grey level)."""
    samples = golden_json("dataset_samples.json")
    arrays = golden_npz("dataset_samples.npz")
    for idx in samples["coco_sample_indices"][:3]:
        rec = samples["coco_db"][idx]
        image = cv2.imread(str(DATA / "coco-mini" / rec["image"]), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        x = make_inputs(image, np.array([rec["center"]]), np.array([rec["scale"]]), (192, 256), color_rgb=True)
        crop = (x[0].transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255.0
        ref = arrays[f"coco{idx}_input_uint8"].astype(np.float64)
        assert crop.shape == ref.shape
        assert np.abs(crop - ref).max() <= 1.0 + 1e-3


def test_keypoints_inside_crop_region_and_formats(est):
    boxes = [BOX, [10, 10, 60, 120, 1.0]]
    poses = est(IMAGE, boxes=boxes)
    assert len(poses) == 2
    for pose, box in zip(poses, boxes):
        assert isinstance(pose, PersonPose) and pose.track_id is None
        assert pose.keypoints.shape == (17, 3) and pose.keypoints.dtype == np.float32
        np.testing.assert_allclose(pose.box, box[:4], atol=1e-3)
        x1, y1, x2, y2 = crop_region(box[:4])
        xy = pose.keypoints[:, :2]
        assert (xy[:, 0] >= x1 - 1e-3).all() and (xy[:, 0] <= x2).all()
        assert (xy[:, 1] >= y1 - 1e-3).all() and (xy[:, 1] <= y2).all()
    # official rescoring: mean joint score above IN_VIS_THRE (0.2), times the box score
    s = poses[0].keypoints[:, 2]
    kpt = s[s > 0.2].mean() if (s > 0.2).any() else 0.0
    assert poses[0].score == pytest.approx(kpt * 0.99, rel=1e-5)
    assert est(IMAGE, boxes=[BOX[:4]])[0].box_score == 1.0  # (N, 4) rows get box score 1


def test_rescore_formula(est):
    maxvals = np.array([[0.1, 0.5, 0.9], [0.0, 0.1, 0.2]])
    np.testing.assert_allclose(est.rescore(maxvals, np.array([0.5, 1.0])), [0.35, 0.0])


def test_coco_json_round_trip(est):
    poses = est(IMAGE, boxes=[BOX])
    text = json.dumps([p.to_coco(785) for p in poses])
    back = json.loads(text)[0]
    assert back["image_id"] == 785 and back["category_id"] == 1
    assert len(back["keypoints"]) == 17 * 3
    np.testing.assert_allclose(np.reshape(back["keypoints"], (17, 3)), poses[0].keypoints, atol=1e-3)
    np.testing.assert_allclose(back["bbox"], poses[0].box, atol=1e-3)
    assert back["score"] == pytest.approx(poses[0].score, abs=1e-6)


def test_bgr_rgb_gray_and_paths_agree(est):
    bgr = cv2.imread(str(IMAGE))
    ref = est(IMAGE, boxes=[BOX])[0].keypoints
    np.testing.assert_allclose(est(bgr, boxes=[BOX])[0].keypoints, ref, atol=1e-4)
    np.testing.assert_allclose(est(bgr[:, :, ::-1].copy(), boxes=[BOX], rgb=True)[0].keypoints, ref, atol=1e-4)
    # 16-bit input is the same picture at 257x
    np.testing.assert_allclose(est(bgr.astype(np.uint16) * 257, boxes=[BOX])[0].keypoints, ref, atol=1e-4)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    g = est(gray, boxes=[BOX])[0].keypoints
    g3 = est(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), boxes=[BOX])[0].keypoints
    np.testing.assert_allclose(g, g3, atol=1e-5)


def test_exif_rotated_photo_gives_upright_coordinates(est, tmp_path):
    from helpers import jpeg_with_orientation

    upright = cv2.imread(str(IMAGE))
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # camera stored it rotated 90 CCW: orientation 6
    path = tmp_path / "phone.jpg"
    path.write_bytes(jpeg_with_orientation(stored, 6))
    from_file = est(path, boxes=[BOX])[0]
    decoded_upright = cv2.imread(str(path), cv2.IMREAD_COLOR)  # OpenCV applies EXIF too
    assert decoded_upright.shape == upright.shape
    ref = est(decoded_upright, boxes=[BOX])[0]
    np.testing.assert_allclose(from_file.keypoints, ref.keypoints, atol=1e-4)


def test_boxes_clipped_and_degenerate_skipped(est, caplog):
    h, w = 425, 640
    poses = est(IMAGE, boxes=[[-50, -20, 200, 300], [700, 10, 50, 50], [100, 100, 0, 40], [np.nan, 0, 5, 5]])
    assert len(poses) == 1
    np.testing.assert_allclose(poses[0].box, [0, 0, 150, 280])
    assert "outside the 640x425 image or has zero area" in caplog.text
    assert "000000000785.jpg" in caplog.text
    assert est(IMAGE, boxes=np.zeros((0, 4))) == []
    assert "no person found" in caplog.text
    with pytest.raises(ValueError, match="boxes must be"):
        est(IMAGE, boxes=[[1, 2, 3]])
    assert (h, w) == cv2.imread(str(IMAGE)).shape[:2]


def test_whole_image_detector_default_path(est):
    poses = est(IMAGE)  # boxes=None -> the estimator's detector (whole image here)
    assert len(poses) == 1
    np.testing.assert_allclose(poses[0].box, [0, 0, 640, 425])


def test_batching_and_flip(tiny):
    _, cfg, model = tiny
    boxes = [BOX, [10, 10, 60, 120, 1], [300, 200, 100, 100, 1]]
    one = PoseEstimator.from_model(model, cfg, batch_size=1, detector=WholeImageDetector())(IMAGE, boxes=boxes)
    many = PoseEstimator.from_model(model, cfg, batch_size=16, detector=WholeImageDetector())(IMAGE, boxes=boxes)
    for a, b in zip(one, many):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-4)
    noflip = PoseEstimator.from_model(model, cfg, flip_test=False, detector=WholeImageDetector())
    inputs, _, _ = noflip.crops(cv2.imread(str(IMAGE)), np.asarray(boxes, np.float32))
    with torch.inference_mode():
        direct = model(torch.from_numpy(inputs)).numpy()
    np.testing.assert_allclose(noflip.heatmaps(inputs), direct, atol=1e-5)
    # flip test = mean of the maps and the flipped-back, shifted maps of the mirrored crops
    with torch.inference_mode():
        mirrored = model(torch.from_numpy(np.ascontiguousarray(inputs[..., ::-1]))).numpy()
    back = mirrored[:, COCO.flip_index(), :, ::-1].copy()
    back[..., 1:] = back[..., :-1].copy()
    flip_est = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())
    np.testing.assert_allclose(flip_est.heatmaps(inputs), (direct + back) / 2, atol=1e-5)


def test_checkpoint_strict_load(tiny, tmp_path):
    from hrpose.models.weights import CheckpointError, save_weights

    path_cfg, cfg, model = tiny
    ckpt = save_weights(model, tmp_path / "tiny.pth")
    est = PoseEstimator.from_config(path_cfg, ckpt, device="cpu", detector=WholeImageDetector())
    ref = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())
    np.testing.assert_allclose(est(IMAGE, boxes=[BOX])[0].keypoints, ref(IMAGE, boxes=[BOX])[0].keypoints, atol=1e-5)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("final_layer")}
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="final_layer"):
        PoseEstimator.from_config(path_cfg, tmp_path / "partial.pth", device="cpu", detector=WholeImageDetector())


def test_bad_arguments(tiny):
    path_cfg, cfg, model = tiny
    with pytest.raises(ValueError, match="unknown backend"):
        PoseEstimator.from_config(path_cfg, backend="tensorrt", detector=WholeImageDetector())
    with pytest.raises(ValueError, match=r"onnxruntime.*\.onnx"):
        PoseEstimator.from_config(path_cfg, "w.pth", backend="onnxruntime", detector=WholeImageDetector())
    with pytest.raises(ValueError, match="batch_size"):
        PoseEstimator.from_model(model, cfg, batch_size=0, detector=WholeImageDetector())
    est = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())
    with pytest.raises(Exception, match="no such file"):
        est(DATA / "missing.jpg")


def test_custom_backend_seam(tiny):
    """Any callable crops -> heatmaps works as a backend (the onnxruntime seam)."""
    _, cfg, model = tiny
    calls = []

    def backend(batch):
        calls.append(batch.shape)
        hm = np.zeros((batch.shape[0], 17, 16, 8), np.float32)
        hm[:, :, 8, 4] = 1.0  # every joint at the heatmap centre
        return hm

    est = PoseEstimator.from_config(cfg, backend=backend, detector=WholeImageDetector(), flip_test=False)
    pose = est(IMAGE, boxes=[BOX])[0]
    assert calls == [(1, 3, 64, 32)]
    center, _ = box_to_center_scale(BOX[:4], 32 / 64)
    np.testing.assert_allclose(pose.keypoints[:, :2], np.tile(center, (17, 1)), atol=1e-3)
    np.testing.assert_allclose(pose.keypoints[:, 2], 1.0)


def test_custom_meta_from_config(tmp_path):
    root = tmp_path / "data"
    (root / "annotations").mkdir(parents=True)
    category = {"id": 1, "name": "hand", "keypoints": ["wrist", "left_tip", "right_tip"], "skeleton": [[1, 2], [1, 3]]}
    (root / "annotations" / "valid.json").write_text(json.dumps({"categories": [category]}))
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        f"DATASET: {{DATASET: custom, ROOT: '{root}', TEST_SET: valid}}\nMODEL: {{NUM_JOINTS: 3}}\n"
    )
    meta = meta_from_config(load_config(yaml_path))
    assert meta.joint_names == ("wrist", "left_tip", "right_tip")
    assert meta.flip_pairs == ((1, 2),) and meta.skeleton == ((0, 1), (0, 2))


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_onnxruntime_backend_matches_torch(tiny, tmp_path, dynamic_batch):
    from hrpose.export import export_onnx

    path_cfg, cfg, model = tiny
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(model, onnx_path, (32, 64), dynamic_batch=dynamic_batch)
    boxes = [BOX, [10, 10, 60, 120, 0.5], [300, 200, 100, 100, 0.7]]
    ort_est = PoseEstimator.from_config(path_cfg, onnx_path, backend="onnxruntime", detector=WholeImageDetector(),
                                        batch_size=2)
    ref = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())(IMAGE, boxes=boxes)
    got = ort_est(IMAGE, boxes=boxes)
    assert len(got) == 3
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a.keypoints[:, 2], b.keypoints[:, 2], atol=1e-4)
        np.testing.assert_allclose(a.keypoints[:, :2], b.keypoints[:, :2], atol=0.5)
