"""Augmentation: the sampler's distribution, the deterministic core's geometry, half-body goldens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, golden_json
from hrpose.data.augment import (
    IDENTITY,
    AugParams,
    apply,
    flip_joints,
    half_body_center_scale,
    sample_aug_params,
    to_input_tensor,
)
from hrpose.data.coco import coco_annotation_file, load_coco_records, read_coco_keypoint_file
from hrpose.data.records import PersonRecord
from hrpose.geometry import box_to_center_scale
from hrpose.keypoints import COCO


def test_half_body_matches_official():
    g = golden_json("dataset_samples.json")["coco_half_body"]
    kp = read_coco_keypoint_file(coco_annotation_file(DATA / "coco-mini", "train2017"))
    records, _ = load_coco_records(kp, "images", 192 / 256)
    assert len(g) == 20
    for case in g:
        rec = records[case["db_index"]]
        res = half_body_center_scale(rec.joints_img, rec.joints_vis, COCO.upper_body_ids, 192 / 256,
                                     case["prefer_upper"])  # fmt: skip
        assert res is not None
        np.testing.assert_allclose(res[0], case["center"], atol=1e-4)
        np.testing.assert_allclose(res[1], case["scale"], atol=1e-4)


def test_half_body_too_few_joints():
    joints = np.zeros((17, 3))
    vis = np.zeros((17, 3))
    vis[0] = 1  # one visible joint: nothing to frame
    assert half_body_center_scale(joints, vis, COCO.upper_body_ids, 0.75, True) is None


def test_sampler_distribution():
    rng = np.random.default_rng(0)
    ps = [sample_aug_params(rng, 0.35, 45, True, prob_half_body=0.3, num_joints_half_body=8, num_visible=9)
          for _ in range(4000)]  # fmt: skip
    s = np.array([p.scale_multiplier for p in ps])
    r = np.array([p.rotation for p in ps])
    assert s.min() >= 0.65 and s.max() <= 1.35 and abs(np.median(s) - 1) < 0.03
    assert np.abs(r).max() <= 90 and abs(np.mean(r == 0) - 0.4) < 0.03
    assert abs(np.mean([p.flip for p in ps]) - 0.5) < 0.03
    assert abs(np.mean([p.half_body for p in ps]) - 0.3) < 0.03
    assert abs(np.mean([p.prefer_upper for p in ps]) - 0.6915) < 0.03  # P(N(0,1) < 0.5), as official
    few = [sample_aug_params(rng, 0.35, 45, False, prob_half_body=1.0, num_visible=8) for _ in range(200)]
    assert not any(p.half_body or p.flip for p in few)
    a = sample_aug_params(np.random.default_rng(5), 0.25, 30, True)
    b = sample_aug_params(np.random.default_rng(5), 0.25, 30, True)
    assert a == b


def test_flip_joints_swaps_and_mirrors():
    joints = np.array([[10.0, 5.0, 0.0], [20.0, 6.0, 0.0], [30.0, 7.0, 0.0]])
    vis = np.array([[1, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=float)
    fj, fv = flip_joints(joints, vis, 100, [(0, 2)])
    np.testing.assert_array_equal(fj, [[69.0, 7.0, 0.0], [0.0, 0.0, 0.0], [89.0, 5.0, 0.0]])
    np.testing.assert_array_equal(fv, vis[[2, 1, 0]])
    assert joints[0, 0] == 10.0  # input untouched


def _dot_image(points, shape=(240, 320)):
    img = np.zeros((*shape, 3), dtype=np.uint8)
    for i, (x, y) in enumerate(points):
        img[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3] = (50 + 100 * i, 255, 0)
    return img


@pytest.mark.parametrize("params", [IDENTITY, AugParams(1.2, 0, True), AugParams(0.9, 30.0, True),
                                    AugParams(1.0, -20.0, False)])  # fmt: skip
def test_crop_joints_land_on_their_pixels(params):
    """Mirroring and rotation move image and joints together; flip pairs swap the joints' identity."""
    pts = [(120.0, 100.0), (180.0, 110.0), (150.0, 160.0)]
    img = _dot_image(pts)
    joints = np.array([[x, y, 0] for x, y in pts], dtype=np.float64)
    center, scale = box_to_center_scale((90, 70, 130, 120), 192 / 256)
    rec = PersonRecord("x.png", 0, center, scale, joints, np.ones((3, 3)))
    res = apply(img, rec, params, input_size_wh=(192, 256), flip_pairs=[(0, 1)])
    swap = [1, 0, 2] if params.flip else [0, 1, 2]
    for k in range(3):
        x, y = np.rint(res.joints_crop[k, :2]).astype(int)
        assert res.crop[y, x, 1] > 200, (k, x, y)
        assert abs(int(res.crop[y, x, 0]) - (50 + 100 * swap[k])) < 40  # the dot of the joint it became
    assert res.rotation == params.rotation


def test_to_input_tensor_normalises_like_torchvision():
    crop = np.zeros((2, 3, 3), dtype=np.uint8)
    crop[0, 0] = (255, 0, 128)
    t = to_input_tensor(crop)
    assert t.shape == (3, 2, 3) and t.dtype == torch.float32
    expected = (np.array([1.0, 0.0, 128 / 255]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(t[:, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(t[:, 1, 1].numpy(), -np.array([0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                               rtol=1e-6)  # fmt: skip
