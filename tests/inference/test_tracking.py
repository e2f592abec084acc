"""One Euro smoothing, OKS/IoU identity matching, and skeleton drawing."""

from __future__ import annotations

import numpy as np
import pytest

from hrpose.inference import PersonPose, PoseTracker
from hrpose.inference.drawing import CENTER, LEFT, RIGHT, draw_poses, joint_side, limb_color
from hrpose.inference.tracking import OneEuroFilter, box_iou_matrix, oks_matrix
from hrpose.keypoints import COCO


def test_one_euro_constant_and_jitter():
    f = OneEuroFilter(freq=30, min_cutoff=1.0, beta=0.0)
    x = np.array([[10.0, 20.0]])
    for _ in range(5):
        np.testing.assert_allclose(f(x), x)
    rng = np.random.default_rng(0)
    f = OneEuroFilter(freq=30, min_cutoff=0.5, beta=0.0)
    noisy = 100 + rng.normal(0, 2.0, size=(200, 1))
    smoothed = np.array([f(v) for v in noisy])[50:]
    assert smoothed.std() < 0.4 * noisy[50:].std()
    # the first sample passes through; the second moves by alpha of the step (alpha from the cutoff)
    f = OneEuroFilter(freq=10, min_cutoff=1.0, beta=0.0, d_cutoff=1.0)
    f(np.zeros(1))
    alpha = 1 / (1 + 10 / (2 * np.pi))
    np.testing.assert_allclose(f(np.ones(1)), [alpha])


def test_one_euro_follows_fast_motion_with_beta():
    slow, fast = OneEuroFilter(30, 1.0, beta=0.0), OneEuroFilter(30, 1.0, beta=1.0)
    for t in range(30):
        x = np.array([t * 10.0])
        a, b = slow(x), fast(x)
    assert abs(b[0] - 290) < abs(a[0] - 290)


def test_iou_and_oks_matrices():
    iou = box_iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0]])
    k = np.zeros((1, 17, 3))
    k[..., 2] = 1
    k[0, :, 0] = np.arange(17) * 5
    oks = oks_matrix(k, k, np.array([100.0]), np.array(COCO.sigmas))
    np.testing.assert_allclose(oks, [[1.0]])
    moved = k.copy()
    moved[..., 0] += 3
    assert 0 < oks_matrix(k, moved, np.array([100.0]), np.array(COCO.sigmas))[0, 0] < 1


def _pose(x: float, y: float, score: float = 0.9) -> PersonPose:
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, 0] = x + np.linspace(0, 40, 17)
    kpts[:, 1] = y + np.linspace(0, 100, 17)
    kpts[:, 2] = score
    return PersonPose(kpts, np.array([x, y, 40, 100], np.float32), score)


def test_tracker_keeps_identities_when_order_changes():
    tracker = PoseTracker(COCO.sigmas, metric="oks", match_thr=0.3, max_age=1)
    first = tracker.update([_pose(0, 0), _pose(200, 0)])
    assert [p.track_id for p in first] == [0, 1]
    second = tracker.update([_pose(203, 2), _pose(2, 1)])  # listed in the other order, moved a little
    assert [p.track_id for p in second] == [1, 0]
    third = tracker.update([_pose(400, 300)])  # someone new
    assert [p.track_id for p in third] == [2]
    tracker.update([])
    # tracks 0 and 1 unseen for 2 frames > max_age 1: forgotten, so a pose there is new
    assert tracker.update([_pose(0, 0)])[0].track_id == 3


def test_tracker_iou_metric_and_smoothing():
    tracker = PoseTracker(COCO.sigmas, metric="iou", smooth=True, fps=30, min_cutoff=0.1, beta=0.0)
    a = tracker.update([_pose(0, 0)])[0]
    b = tracker.update([_pose(4, 0)])[0]
    assert a.track_id == b.track_id == 0
    assert 0 < b.keypoints[0, 0] < 4  # smoothed: between the old and the new position
    np.testing.assert_allclose(b.keypoints[:, 2], 0.9)  # scores are not filtered
    with pytest.raises(ValueError, match="metric"):
        PoseTracker(COCO.sigmas, metric="euclid")


def test_joint_sides_and_limb_colours():
    assert [joint_side(n) for n in ("left_knee", "R_wrist", "hip_l", "nose", "Right Eye")] == [
        "left", "right", "left", "center", "right"]  # fmt: skip
    names = COCO.joint_names
    assert limb_color(15, 13, names) == LEFT and limb_color(16, 14, names) == RIGHT
    assert limb_color(11, 12, names) == CENTER and limb_color(0, 1, names) == LEFT


def test_draw_poses_colours_joints_above_threshold():
    image = np.zeros((120, 160, 3), np.uint8)
    kpts = np.zeros((17, 3), np.float32)
    kpts[:, :2] = (80, 60)
    kpts[5] = (30, 30, 0.9)  # left shoulder: drawn orange
    kpts[6] = (130, 30, 0.9)  # right shoulder: drawn blue
    kpts[0] = (80, 100, 0.1)  # nose below threshold: not drawn
    pose = PersonPose(kpts, np.array([10, 10, 140, 100], np.float32), 0.5)
    out = draw_poses(image, [pose], COCO.joint_names, COCO.skeleton, kpt_thr=0.3, draw_boxes=False)
    assert out is not image and image.max() == 0
    assert out[30, 30].tolist() == list(LEFT)
    assert out[30, 130].tolist() == list(RIGHT)
    assert out[100, 80].tolist() == [0, 0, 0]
    assert out[30, 80].tolist() == list(CENTER)  # the shoulder-shoulder limb (left + right) is centre-coloured
