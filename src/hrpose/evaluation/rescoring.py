"""The official COCO person rescoring rule, in one place (pure numpy): `hrpose test`'s COCO evaluation and
`PoseEstimator` / `hrpose predict` (through `hrpose.pipeline`) score people with it."""

from __future__ import annotations

import numpy as np


def rescore(preds: np.ndarray, box_scores: np.ndarray, in_vis_thre: float) -> np.ndarray:
    """Person scores (the official COCO rule): mean joint score over the joints above `in_vis_thre` (0 if
    none) times the box score.

    preds: (N, K, 3) with joint scores in [..., 2]; box_scores: (N,) -> (N,) float64.
    The joint sum runs left to right in the predictions' dtype (a cumulative sum), as the official
    per-joint loop does, so float32 predictions give bit-identical scores.
    """
    s = np.asarray(preds)[:, :, 2]
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    above = s > in_vis_thre
    total = np.cumsum(np.where(above, s, s.dtype.type(0)), axis=1, dtype=s.dtype)[:, -1]
    count = above.sum(axis=1)
    kpt_score = np.where(count > 0, total / np.maximum(count, 1).astype(s.dtype), 0)
    return kpt_score.astype(np.float64) * np.asarray(box_scores, dtype=np.float64)
