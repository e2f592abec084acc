"""People across video frames: identities by OKS/IoU matching, keypoints smoothed by a One Euro filter.

`PoseTracker.update(poses)` gives every pose of a frame a `track_id`: the previous frame's people and
this frame's are matched by the Hungarian algorithm (scipy `linear_sum_assignment`) on OKS (keypoint
similarity, the COCO formula) or box IoU, a match needing similarity >= `match_thr`; unmatched people
get new ids, tracks unseen for more than `max_age` frames are forgotten. With `smooth=True` each
track's keypoints go through a `OneEuroFilter` (Casiez et al., CHI 2012): little lag when a joint
moves fast, strong smoothing when it is still.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

if TYPE_CHECKING:
    from hrpose.inference.estimator import PersonPose


class OneEuroFilter:
    """One Euro filter over arrays of any fixed shape (e.g. keypoints (K, 2)), sampled every `1 / freq` s.

    `min_cutoff` (Hz) sets the smoothing of a still signal (lower = smoother), `beta` how fast the cutoff
    rises with speed (higher = less lag), `d_cutoff` the cutoff of the speed estimate.
    """

    def __init__(self, freq: float, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        if freq <= 0:
            raise ValueError(f"OneEuroFilter: freq must be > 0, got {freq}")
        self.freq, self.min_cutoff, self.beta, self.d_cutoff = float(freq), min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def _alpha(self, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff))
        return 1.0 / (1.0 + tau * self.freq)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._dx is None or self._x.shape != x.shape:
            self._x, self._dx = x.copy(), np.zeros_like(x)
            return x.copy()
        dx = (x - self._x) * self.freq
        a_d = self._alpha(self.d_cutoff)
        self._dx = a_d * dx + (1.0 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        a = self._alpha(cutoff)
        self._x = a * x + (1.0 - a) * self._x
        return self._x.copy()


def box_iou_matrix(a_xywh: np.ndarray, b_xywh: np.ndarray) -> np.ndarray:
    """IoU of boxes (A, 4) x (B, 4) xywh -> (A, B)."""
    a = np.asarray(a_xywh, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_xywh, dtype=np.float64).reshape(-1, 4)
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def oks_matrix(
    kpts_a: np.ndarray, kpts_b: np.ndarray, areas_b: np.ndarray, sigmas: np.ndarray, kpt_thr: float = 0.3
) -> np.ndarray:
    """COCO OKS of poses (A, K, 3) against poses (B, K, 3) with B's box areas (B,) -> (A, B).

    Only joints scored >= `kpt_thr` in both poses count; a pair with none in common scores 0.
    """
    a = np.asarray(kpts_a, dtype=np.float64)
    b = np.asarray(kpts_b, dtype=np.float64)
    var = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2  # (K,)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)  # (A, B, K)
    e = d2 / var[None, None] / (np.asarray(areas_b, dtype=np.float64)[None, :, None] + np.spacing(1)) / 2.0
    valid = (a[:, None, :, 2] >= kpt_thr) & (b[None, :, :, 2] >= kpt_thr)
    n = valid.sum(-1)
    return np.where(n > 0, (np.exp(-e) * valid).sum(-1) / np.maximum(n, 1), 0.0)


@dataclass
class _Track:
    track_id: int
    keypoints: np.ndarray  # (K, 3) image px, after smoothing
    box: np.ndarray  # (4,) xywh
    missed: int = 0
    filter: OneEuroFilter | None = None


class PoseTracker:
    """Frame-to-frame identities (and optional One Euro smoothing) for lists of `PersonPose`."""

    def __init__(
        self,
        sigmas: Sequence[float] | np.ndarray,
        *,
        metric: str = "oks",
        match_thr: float = 0.3,
        max_age: int = 5,
        kpt_thr: float = 0.3,
        smooth: bool = False,
        fps: float = 30.0,
        min_cutoff: float = 1.0,
        beta: float = 0.05,
    ) -> None:
        if metric not in ("oks", "iou"):
            raise ValueError(f"PoseTracker: metric must be 'oks' or 'iou', got {metric!r}")
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.metric, self.match_thr, self.max_age, self.kpt_thr = metric, match_thr, max_age, kpt_thr
        self.smooth, self.fps, self.min_cutoff, self.beta = smooth, fps, min_cutoff, beta
        self.tracks: list[_Track] = []
        self._next_id = 0

    def similarity(self, poses: Sequence[PersonPose]) -> np.ndarray:
        """(len(poses), len(tracks)) similarity to the live tracks."""
        if not poses or not self.tracks:
            return np.zeros((len(poses), len(self.tracks)))
        boxes = np.stack([np.asarray(p.box, dtype=np.float64)[:4] for p in poses])
        tboxes = np.stack([t.box for t in self.tracks])
        iou = box_iou_matrix(boxes, tboxes)
        if self.metric == "iou":
            return iou
        kp = np.stack([np.asarray(p.keypoints, dtype=np.float64) for p in poses])
        tk = np.stack([t.keypoints for t in self.tracks])
        areas = tboxes[:, 2] * tboxes[:, 3]
        oks = oks_matrix(kp, tk, areas, self.sigmas, self.kpt_thr)
        # poses with no confident joint in common fall back on their boxes
        no_joints = ~((kp[:, None, :, 2] >= self.kpt_thr) & (tk[None, :, :, 2] >= self.kpt_thr)).any(-1)
        return np.where(no_joints, iou, oks)

    def update(self, poses: Sequence[PersonPose]) -> list[PersonPose]:
        """New `PersonPose`s (same order) with `track_id` set, keypoints smoothed when `smooth`."""
        sim = self.similarity(poses)
        assigned: dict[int, int] = {}  # pose index -> track index
        if sim.size:
            rows, cols = linear_sum_assignment(-sim)
            assigned = {int(r): int(c) for r, c in zip(rows, cols) if sim[r, c] >= self.match_thr}
        out: list[PersonPose] = []
        seen: set[int] = set()
        for i, pose in enumerate(poses):
            kpts = np.array(pose.keypoints, dtype=np.float64, copy=True)
            if i in assigned:
                track = self.tracks[assigned[i]]
                track.missed = 0
            else:
                track = _Track(self._next_id, kpts, np.asarray(pose.box, dtype=np.float64)[:4].copy())
                self._next_id += 1
                self.tracks.append(track)
            seen.add(track.track_id)
            if self.smooth:
                if track.filter is None:
                    track.filter = OneEuroFilter(self.fps, self.min_cutoff, self.beta)
                kpts[:, :2] = track.filter(kpts[:, :2])
            track.keypoints = kpts
            track.box = np.asarray(pose.box, dtype=np.float64)[:4].copy()
            out.append(replace(pose, keypoints=kpts.astype(np.float32), track_id=track.track_id))
        for t in self.tracks:
            if t.track_id not in seen:
                t.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_age]
        return out
