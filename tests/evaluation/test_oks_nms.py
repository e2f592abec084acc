"""OKS NMS and soft OKS NMS: golden keep lists of the official code, OKS properties, and bad input."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from conftest import golden_json
from hrpose.evaluation.oks_nms import oks_iou, oks_matrix, oks_nms, resolve_sigmas, soft_oks_nms
from hrpose.keypoints import COCO_SIGMAS


def _db(group: dict) -> list[dict]:
    return [
        {"keypoints": np.asarray(k), "score": s, "area": a}
        for k, s, a in zip(group["keypoints"], group["scores"], group["areas"])
    ]


GROUPS = golden_json("nms.json")


@pytest.mark.parametrize("gi", range(len(GROUPS)))
def test_oks_nms_matches_official_keep_list(gi: int) -> None:
    g = GROUPS[gi]
    assert oks_nms(_db(g), g["thresh"], g.get("sigmas"), g.get("in_vis_thre")) == g["oks_nms_keep"]


@pytest.mark.parametrize("gi", range(len(GROUPS)))
def test_soft_oks_nms_matches_official_keep_list(gi: int) -> None:
    g = GROUPS[gi]
    assert soft_oks_nms(_db(g), g["thresh"], g.get("sigmas"), g.get("in_vis_thre")) == g["soft_oks_nms_keep"]


def _reference_oks(g, d, a_g, a_d, sigmas, in_vis_thre=None):
    """Straight from the OKS definition, one pair at a time (independent of the vectorised code)."""
    var = (np.asarray(sigmas) * 2) ** 2
    out = []
    for j in range(len(d)):
        e = ((d[j, :, 0] - g[:, 0]) ** 2 + (d[j, :, 1] - g[:, 1]) ** 2) / var / ((a_g + a_d[j]) / 2 + np.spacing(1)) / 2
        if in_vis_thre is not None:
            e = e[d[j, :, 2] > in_vis_thre]
        out.append(np.exp(-e).mean() if e.size else 0.0)
    return np.array(out)


@pytest.mark.parametrize("in_vis_thre", [None, 0.5])
def test_oks_iou_and_matrix_agree_with_the_definition(in_vis_thre) -> None:
    rng = np.random.default_rng(0)
    kpts = np.concatenate([rng.uniform(0, 200, (9, 17, 2)), rng.uniform(0, 1, (9, 17, 1))], axis=2)
    kpts[3, :, 2] = 0.1  # no joint above 0.5: OKS 0 under in_vis_thre
    areas = rng.uniform(500, 20000, 9)
    m = oks_matrix(kpts, areas, in_vis_thre=in_vis_thre)
    for i in range(9):
        ref = _reference_oks(kpts[i], kpts, areas[i], areas, COCO_SIGMAS, in_vis_thre)
        np.testing.assert_allclose(m[i], ref, rtol=1e-12, atol=1e-15)
        flat = oks_iou(kpts[i].reshape(-1), kpts.reshape(9, -1), areas[i], areas, None, in_vis_thre)
        np.testing.assert_allclose(flat, ref, rtol=1e-12, atol=1e-15)
    if in_vis_thre is None:
        np.testing.assert_allclose(np.diag(m), 1.0)
        np.testing.assert_allclose(m, m.T)
    else:
        assert np.all(m[:, 3] == 0.0)


def test_identical_poses_suppressed_and_distant_kept() -> None:
    base = np.concatenate([np.random.default_rng(1).uniform(0, 100, (17, 2)), np.ones((17, 1))], axis=1)
    far = base.copy()
    far[:, :2] += 1000
    db = [
        {"keypoints": base, "score": 0.5, "area": 5000.0},
        {"keypoints": base + [0.01, 0.0, 0.0], "score": 0.9, "area": 5000.0},
        {"keypoints": far, "score": 0.2, "area": 5000.0},
    ]
    assert oks_nms(db, 0.9) == [1, 2]
    # soft NMS keeps everything but pushes the duplicate below the distant pose
    assert soft_oks_nms(db, 0.9) == [1, 2, 0]
    assert oks_nms([], 0.9) == [] and soft_oks_nms([], 0.9) == []


def test_soft_nms_keeps_at_most_max_dets() -> None:
    rng = np.random.default_rng(2)
    db = [
        {"keypoints": np.c_[rng.uniform(0, 2000, (17, 2)), np.ones(17)], "score": float(s), "area": 900.0}
        for s in rng.uniform(0, 1, 30)
    ]
    assert len(soft_oks_nms(db, 0.9)) == 20
    assert len(soft_oks_nms(db, 0.9, max_dets=30)) == 30
    assert len(oks_nms(db, 0.9)) == 30  # far-apart poses: nothing suppressed


def test_custom_joint_count_needs_sigmas() -> None:
    kp = np.c_[np.arange(10.0).reshape(5, 2), np.ones(5)]
    db = [{"keypoints": kp, "score": 0.9, "area": 100.0}, {"keypoints": kp, "score": 0.8, "area": 100.0}]
    with pytest.raises(ValueError, match="5 joints"):
        oks_nms(db, 0.9)
    assert oks_nms(db, 0.9, sigmas=[0.1] * 5) == [0]
    with pytest.raises(ValueError, match="expected 5"):
        resolve_sigmas([0.1] * 4, 5)


def test_bad_records_name_the_problem() -> None:
    with pytest.raises(KeyError, match=r"kpts_db\[1\].*'area'"):
        oks_nms(
            [
                {"keypoints": np.zeros((17, 3)), "score": 1.0, "area": 1.0},
                {"keypoints": np.zeros((17, 3)), "score": 1.0},
            ],
            0.9,
        )
    with pytest.raises(ValueError, match=r"kpts_db\[1\]"):
        oks_nms(
            [
                {"keypoints": np.zeros((17, 3)), "score": 1.0, "area": 1.0},
                {"keypoints": np.zeros(50), "score": 1.0, "area": 1.0},
            ],
            0.9,
        )


def test_big_group_uses_row_wise_path_with_same_result(monkeypatch) -> None:
    mod = importlib.import_module("hrpose.evaluation.oks_nms")

    rng = np.random.default_rng(3)
    centers = rng.uniform(0, 300, (60, 1, 2))
    kpts = np.concatenate([centers + rng.normal(0, 5, (60, 17, 2)), rng.uniform(0, 1, (60, 17, 1))], axis=2)
    db = [{"keypoints": k, "score": float(s), "area": 3000.0} for k, s in zip(kpts, rng.uniform(0, 1, 60))]
    full, soft_full = oks_nms(db, 0.5), soft_oks_nms(db, 0.5)
    monkeypatch.setattr(mod, "_MATRIX_MAX", 10)
    assert oks_nms(db, 0.5) == full
    assert soft_oks_nms(db, 0.5) == soft_full
    assert 1 < len(full) < 60


@pytest.mark.parametrize("in_vis_thre", [None, 0.2])
@pytest.mark.parametrize("max_elements", [1, 1 << 22])
def test_oks_matrices_equal_oks_matrix_per_group_bit_for_bit(in_vis_thre, max_elements) -> None:
    """The batched, symmetric-pair path of select_poses = the plain pairwise matrix of every image."""
    from hrpose.evaluation.oks_nms import oks_matrices, oks_matrix

    rng = np.random.default_rng(3)
    n = 400
    kpts = np.concatenate([rng.uniform(0, 300, (n, 17, 2)), rng.uniform(0, 1, (n, 17, 1))], axis=2).astype(np.float32)
    kpts[5:9] = kpts[4]  # exact duplicates: OKS 1
    areas = rng.uniform(100, 9e4, n)
    sizes = [1, 2, 2, 3, 7, 7, 7, 30, 1, 41]
    perm = rng.permutation(n)
    groups, start = [], 0
    for s in sizes:
        groups.append(np.sort(perm[start : start + s]))
        start += s
    mats = oks_matrices(kpts, areas, groups, in_vis_thre=in_vis_thre, max_elements=max_elements)
    for idx, m in zip(groups, mats):
        if len(idx) == 1:
            assert m is None
            continue
        ref = oks_matrix(kpts[idx], areas[idx], in_vis_thre=in_vis_thre)
        assert m is not None and m.shape == ref.shape and np.array_equal(m, ref), len(idx)
