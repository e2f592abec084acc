"""MPII PCKh: the official table on the golden gt_valid.mat, pred.mat output, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from conftest import GOLDEN, golden_json
from hrpose.evaluation.mpii import PCKH_NAMES, evaluate_mpii, load_mpii_gt, pckh_per_joint

GT = GOLDEN / "mpii_gt_valid.mat"
CASES = golden_json("mpii_eval.json")


@pytest.mark.parametrize("case", sorted(CASES))
def test_pckh_table_matches_official(case: str, tmp_path: Path) -> None:
    c = CASES[case]
    preds = np.asarray(c["preds_0based"])
    table = evaluate_mpii(preds, GT, tmp_path)
    assert list(table) == list(PCKH_NAMES) == list(c["name_value"])
    for name, value in c["name_value"].items():
        assert table[name] == pytest.approx(value, abs=1e-6), name
    written = loadmat(str(tmp_path / "pred.mat"))["preds"]
    np.testing.assert_allclose(written, preds + 1.0)  # 1-based, as the official writes it


def test_ground_truth_scores_100_and_a_score_column_is_ignored() -> None:
    gt = load_mpii_gt(GT)
    preds = np.transpose(gt["pos_gt_src"], (2, 0, 1)) - 1.0  # back to 0-based (N, 16, 2)
    with_score = np.concatenate([preds, np.full(preds.shape[:2] + (1,), 0.3)], axis=2)
    table = evaluate_mpii(with_score, GT)
    assert all(v == pytest.approx(100.0) for v in table.values())


def test_pckh_threshold_by_hand() -> None:
    # one person whose head box corners are (0, 0) and (10, 0): head size 10 * 0.6 = 6 px
    gt = {
        "pos_gt_src": np.zeros((2, 2, 1)),
        "jnt_missing": np.array([[0.0], [1.0]]),
        "headboxes_src": np.array([[[0.0], [0.0]], [[10.0], [0.0]]]),
    }
    preds = np.array([[[2.9, 0.0], [100.0, 0.0]]])  # 2.9 / 6 < 0.5; the second joint is missing
    pck, count = pckh_per_joint(preds, gt, 0.5)
    assert pck[0] == 100.0 and count.tolist() == [1.0, 0.0]
    pck, _ = pckh_per_joint(preds + [[[0.2, 0.0]]], gt, 0.5)  # 3.1 / 6 > 0.5
    assert pck[0] == 0.0


def test_without_ground_truth_only_writes(tmp_path: Path) -> None:
    preds = np.zeros((3, 16, 2))
    assert evaluate_mpii(preds, None, tmp_path) == {"Null": 0.0}
    assert loadmat(str(tmp_path / "pred.mat"))["preds"].shape == (3, 16, 2)


def test_bad_input_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 5 people"):
        evaluate_mpii(np.zeros((4, 16, 2)), GT)
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        evaluate_mpii(np.zeros((5, 16)), GT)
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        evaluate_mpii(np.zeros((5, 16, 2)), tmp_path / "nope.mat")
    bad = tmp_path / "bad.mat"
    savemat(str(bad), {"jnt_missing": np.zeros((16, 5))})
    with pytest.raises(KeyError, match="dataset_joints"):
        evaluate_mpii(np.zeros((5, 16, 2)), bad)
