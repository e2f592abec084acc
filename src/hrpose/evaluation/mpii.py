"""MPII PCKh evaluation against the official ``gt_<set>.mat`` ground truth.

A joint is correct when its distance to the ground truth, divided by 0.6 x the head-box diagonal
(``SC_BIAS``), is at most the threshold (0.5 for PCKh@0.5). The table averages left/right joints,
and the two means weight each joint by its number of visible ground-truth instances, leaving out the
pelvis and thorax (joints 6 and 7) as the official does.

Official quirk kept for comparability: ``Mean@0.1`` is read at row 11 of the threshold sweep
``arange(0, 0.51, 0.01)``, i.e. at a threshold of 0.11, not 0.10.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
from scipy.io import loadmat, savemat

from hrpose.errors import MissingFileError

__all__ = ["SC_BIAS", "PCKH_NAMES", "load_mpii_gt", "pckh_per_joint", "evaluate_mpii"]

SC_BIAS = 0.6
PCKH_NAMES = ("Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle", "Mean", "Mean@0.1")
# The official sweep is arange(0, 0.5 + 0.01, 0.01); its row 11 is what it reports as "Mean@0.1".
_MEAN_AT_01_THRESHOLD = 11 * 0.01
# Joints left out of the means (pelvis, thorax), by position in the official 16-joint order.
_EXCLUDED_FROM_MEAN = (6, 7)
_GROUPS = (
    ("Head", ("head",)), ("Shoulder", ("lsho", "rsho")), ("Elbow", ("lelb", "relb")),
    ("Wrist", ("lwri", "rwri")), ("Hip", ("lhip", "rhip")), ("Knee", ("lkne", "rkne")),
    ("Ankle", ("lank", "rank")),
)  # fmt: skip


def load_mpii_gt(gt_mat_path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an official ``gt_<set>.mat``.

    -> joint_names (16,) str, jnt_missing (16, N), pos_gt_src (16, 2, N) 1-based, headboxes_src (2, 2, N).
    """
    path = Path(gt_mat_path)
    if not path.is_file():
        raise MissingFileError(f"MPII ground-truth file not found: {path}")
    mat = loadmat(str(path))
    for key in ("dataset_joints", "jnt_missing", "pos_gt_src", "headboxes_src"):
        if key not in mat:
            raise KeyError(f"{path}: no {key!r} (expected dataset_joints, jnt_missing, pos_gt_src, headboxes_src)")
    names = np.array([str(np.asarray(n).reshape(-1)[0]) for n in np.asarray(mat["dataset_joints"]).reshape(-1)])
    gt = {
        "joint_names": names,
        "jnt_missing": np.asarray(mat["jnt_missing"], dtype=np.float64),
        "pos_gt_src": np.asarray(mat["pos_gt_src"], dtype=np.float64),
        "headboxes_src": np.asarray(mat["headboxes_src"], dtype=np.float64),
    }
    k, n = gt["jnt_missing"].shape
    if gt["pos_gt_src"].shape != (k, 2, n) or gt["headboxes_src"].shape != (2, 2, n) or len(names) != k:
        raise ValueError(
            f"{path}: inconsistent shapes: jnt_missing {gt['jnt_missing'].shape}, pos_gt_src "
            f"{gt['pos_gt_src'].shape}, headboxes_src {gt['headboxes_src'].shape}, {len(names)} joint names"
        )
    return gt


def _scaled_errors(preds_1based: np.ndarray, gt: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """preds (N, K, 2) 1-based -> (head-normalised error (K, N), visible (K, N))."""
    pred = np.transpose(preds_1based, (1, 2, 0))  # (K, 2, N) as the ground truth is stored
    err = np.linalg.norm(pred - gt["pos_gt_src"], axis=1)  # (K, N)
    head = np.linalg.norm(gt["headboxes_src"][1] - gt["headboxes_src"][0], axis=0) * SC_BIAS  # (N,)
    visible = 1 - gt["jnt_missing"]
    return err / head[None, :] * visible, visible


def pckh_per_joint(
    preds_1based: np.ndarray, gt: dict[str, np.ndarray], threshold: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint PCKh in percent (K,) and visible ground-truth counts (K,); preds (N, K, 2) 1-based."""
    scaled, visible = _scaled_errors(preds_1based, gt)
    count = visible.sum(axis=1)
    hits = ((scaled <= threshold) * visible).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * hits / count, count


def evaluate_mpii(
    preds: np.ndarray,
    gt_mat_path: str | os.PathLike[str] | None,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    threshold: float = 0.5,
) -> OrderedDict[str, float]:
    """PCKh table of 0-based image-space predictions.

    preds: (N, 16, 2) or (N, 16, 3) 0-based image coords (a score column is ignored). Writes
    ``output_dir/pred.mat`` (1-based, key ``preds``) when ``output_dir`` is given. Returns Head, Shoulder,
    Elbow, Wrist, Hip, Knee, Ankle, Mean (PCKh@threshold) and Mean@0.1 (see module docstring), in percent;
    without ground truth (``gt_mat_path`` None) returns ``{'Null': 0.0}`` like the official test split.
    """
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim != 3 or preds.shape[2] < 2:
        raise ValueError(f"MPII preds must be (N, K, 2) or (N, K, 3) image coords; got shape {preds.shape}")
    preds_1based = preds[:, :, :2] + 1.0  # the .mat ground truth is 1-based (MATLAB)
    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        savemat(str(Path(output_dir) / "pred.mat"), mdict={"preds": preds_1based})
    if gt_mat_path is None:
        return OrderedDict([("Null", 0.0)])
    gt = load_mpii_gt(gt_mat_path)
    k, n = gt["jnt_missing"].shape
    if preds.shape[:2] != (n, k):
        raise ValueError(f"MPII preds have shape {preds.shape[:2]} but {gt_mat_path} holds {n} people with {k} joints")
    index = {name: i for i, name in enumerate(gt["joint_names"].tolist())}
    for _, joints in _GROUPS:
        for j in joints:
            if j not in index:
                raise KeyError(f"{gt_mat_path}: dataset_joints has no {j!r} (found {sorted(index)})")

    pckh, count = pckh_per_joint(preds_1based, gt, threshold)
    pckh_01, _ = pckh_per_joint(preds_1based, gt, _MEAN_AT_01_THRESHOLD)
    weight = count.astype(np.float64)
    weight[list(_EXCLUDED_FROM_MEAN)] = 0.0
    weight /= weight.sum()
    used = weight > 0  # joints with no visible instance carry no weight (their PCKh is NaN)

    table: OrderedDict[str, float] = OrderedDict()
    for name, joints in _GROUPS:
        vals = [pckh[index[j]] for j in joints]
        table[name] = float(vals[0] if len(vals) == 1 else 0.5 * (vals[0] + vals[1]))
    table["Mean"] = float(np.sum(np.where(used, pckh * weight, 0.0)))
    table["Mean@0.1"] = float(np.sum(np.where(used, pckh_01 * weight, 0.0)))
    return table
