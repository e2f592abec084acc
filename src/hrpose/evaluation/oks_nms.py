"""Object Keypoint Similarity (OKS) and greedy / soft non-maximum suppression of person poses.

Pure numpy, no build step. Semantics follow the official HRNet code (`lib/nms/nms.py`) so that keep
lists match it exactly and in order; the pairwise OKS is computed for all pairs of a group at once with
broadcasting instead of one detection at a time.

A *kpts_db* is a list of person predictions, each a mapping with

* ``'keypoints'``: (K, 3) array of x, y, score in image pixels (or a flat (3K,) array),
* ``'area'``: box area in pixels^2 (the official uses ``(scale * 200) ** 2`` products),
* ``'score'``: the person score that orders the suppression.

Two official quirks are kept on purpose because the published numbers depend on them:

* the OKS normaliser is ``(area_g + area_d) / 2`` and the exponent is divided by 2 once more, as in
  ``e = d^2 / (2 s)^2 / ((a_g + a_d) / 2 + eps) / 2``;
* with ``in_vis_thre`` only the joints whose score in the *other* detection (not the reference) exceeds
  the threshold count (the official ``list(vg > t) and list(vd > t)`` evaluates to the second list).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hrpose.keypoints import COCO_SIGMAS

__all__ = [
    "resolve_sigmas", "oks_iou", "oks_matrix", "oks_matrices", "oks_nms", "soft_oks_nms", "nms_from_arrays",
    "soft_nms_from_arrays",
]  # fmt: skip

# Rows of a group beyond which the full (N, N, K) pairwise tensor is not built at once.
_MATRIX_MAX = 512
# The official soft-NMS keeps at most this many poses per image.
SOFT_NMS_MAX_DETS = 20


def resolve_sigmas(sigmas: Sequence[float] | np.ndarray | None, num_joints: int) -> np.ndarray:
    """Per-joint OKS sigmas as float64 (K,); COCO's when None and K == 17."""
    if sigmas is None:
        if num_joints != len(COCO_SIGMAS):
            raise ValueError(
                f"OKS needs one sigma per joint: got {num_joints} joints and no sigmas "
                f"(COCO's default has {len(COCO_SIGMAS)}); pass sigmas=..."
            )
        return np.asarray(COCO_SIGMAS, dtype=np.float64)
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if s.shape[0] != num_joints:
        raise ValueError(f"OKS sigmas have {s.shape[0]} entries, expected {num_joints} (one per joint)")
    return s


def _oks_rows(
    g: np.ndarray,
    d: np.ndarray,
    a_g: np.ndarray,
    a_d: np.ndarray,
    variances: np.ndarray,
    in_vis_thre: float | None,
) -> np.ndarray:
    """OKS of every reference pose against every other pose.

    g: (..., G, K, 3) reference poses; d: (..., D, K, 3); a_g: (..., G); a_d: (..., D); variances: (K,)
    -> (..., G, D). Leading dimensions are independent problems (groups of equal size computed at once);
    every element is computed by the same operations in the same order either way.
    """
    dx = d[..., None, :, :, 0] - g[..., :, None, :, 0]  # (..., G, D, K), in the keypoints' own dtype as the official
    dy = d[..., None, :, :, 1] - g[..., :, None, :, 1]
    norm = (a_g[..., :, None] + a_d[..., None, :]) / 2 + np.spacing(1)  # (..., G, D)
    # exp(-((dx**2 + dy**2) / variances / norm / 2)), the official expression, evaluated in place
    np.multiply(dx, dx, out=dx)
    np.multiply(dy, dy, out=dy)
    dx += dy
    e = dx / variances  # float64 from here, as the official
    e /= norm[..., None]
    e /= 2
    np.negative(e, out=e)
    np.exp(e, out=e)
    if in_vis_thre is None:
        return e.sum(axis=-1) / e.shape[-1]
    vis = d[..., :, 2] > in_vis_thre  # (..., D, K): only the compared pose's joint scores matter (official quirk)
    count = vis.sum(axis=-1)[..., None, :]  # (..., 1, D)
    total = np.where(vis[..., None, :, :], e, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_iou(
    g: np.ndarray,
    d: np.ndarray,
    a_g: float,
    a_d: np.ndarray,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """OKS between one pose and several others (official signature).

    g: (3K,) or (K, 3) reference pose; d: (D, 3K) or (D, K, 3); a_g: its area; a_d: (D,) areas -> (D,).
    """
    g3 = np.asarray(g).reshape(1, -1, 3)
    d3 = np.asarray(d).reshape(-1, g3.shape[1], 3)
    variances = (resolve_sigmas(sigmas, g3.shape[1]) * 2) ** 2
    a_g_arr = np.asarray([a_g], dtype=np.float64)
    a_d_arr = np.asarray(a_d, dtype=np.float64).reshape(-1)
    return _oks_rows(g3, d3, a_g_arr, a_d_arr, variances, in_vis_thre)[0]


def oks_matrix(
    kpts: np.ndarray,
    areas: np.ndarray,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> np.ndarray:
    """Pairwise OKS: kpts (N, K, 3), areas (N,) -> (N, N), entry [g, d] = oks_iou(kpts[g], kpts[d])."""
    kpts = np.asarray(kpts)
    variances = (resolve_sigmas(sigmas, kpts.shape[1]) * 2) ** 2
    areas = np.asarray(areas, dtype=np.float64)
    return _oks_rows(kpts, kpts, areas, areas, variances, in_vis_thre)


def oks_matrices(
    kpts: np.ndarray,
    areas: np.ndarray,
    groups: Sequence[np.ndarray],
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
    max_elements: int = 1 << 22,
) -> list[np.ndarray | None]:
    """The pairwise OKS matrix of every group: kpts (N, K, 3), areas (N,), groups: index arrays into them ->
    one (n, n) matrix per group, equal to ``oks_matrix(kpts[g], areas[g])`` bit for bit (None for groups of
    one pose or above the size built at once). Groups of equal size are stacked and computed together, at most
    ``max_elements`` pairwise joint terms at a time, instead of one small NumPy call chain per image.
    """
    kpts = np.asarray(kpts)
    areas = np.asarray(areas, dtype=np.float64)
    variances = (resolve_sigmas(sigmas, kpts.shape[1]) * 2) ** 2
    out: list[np.ndarray | None] = [None] * len(groups)
    by_size: dict[int, list[int]] = {}
    for gi, idx in enumerate(groups):
        if 1 < len(idx) <= _MATRIX_MAX:
            by_size.setdefault(len(idx), []).append(gi)
    for n, members in by_size.items():
        # Without in_vis_thre OKS is exactly symmetric (squared differences, a commutative area sum): compute
        # the pairs i <= j once and mirror them. With it, the compared pose's scores matter: the full matrix.
        iu, ju = np.triu_indices(n) if in_vis_thre is None else (None, None)
        terms = (len(iu) if iu is not None else n * n) * kpts.shape[1]
        per_call = max(1, max_elements // terms)
        for start in range(0, len(members), per_call):
            chunk = members[start : start + per_call]
            rows = np.stack([groups[g] for g in chunk])  # (B, n)
            if iu is None:
                mats = _oks_rows(kpts[rows], kpts[rows], areas[rows], areas[rows], variances, in_vis_thre)
            else:
                a, b = rows[:, iu], rows[:, ju]  # (B, P): row pose, column pose of each pair
                vals = _oks_pairs(kpts[a], kpts[b], areas[a], areas[b], variances)
                mats = np.empty((len(chunk), n, n), dtype=vals.dtype)
                mats[:, iu, ju] = vals
                mats[:, ju, iu] = vals
            for j, g in enumerate(chunk):
                out[g] = mats[j]
    return out


def _oks_pairs(g: np.ndarray, d: np.ndarray, a_g: np.ndarray, a_d: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """OKS of pose pairs, element for element what :func:`_oks_rows` computes for entry [g, d] (no in_vis_thre):
    g, d (..., P, K, 3); a_g, a_d (..., P) -> (..., P)."""
    dx = d[..., 0] - g[..., 0]
    dy = d[..., 1] - g[..., 1]
    norm = (a_g + a_d) / 2 + np.spacing(1)
    np.multiply(dx, dx, out=dx)
    np.multiply(dy, dy, out=dy)
    dx += dy
    e = dx / variances
    e /= norm[..., None]
    e /= 2
    np.negative(e, out=e)
    np.exp(e, out=e)
    return e.sum(axis=-1) / e.shape[-1]


def _unpack(kpts_db: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for i, p in enumerate(kpts_db):
        for key in ("keypoints", "area", "score"):
            if key not in p:
                raise KeyError(f"kpts_db[{i}] has no {key!r} (expected keys 'keypoints', 'area', 'score')")
    arrays = [np.asarray(p["keypoints"]) for p in kpts_db]
    for i, a in enumerate(arrays):
        if a.size % 3 or a.size != arrays[0].size:
            raise ValueError(
                f"kpts_db[{i}]['keypoints'] has {a.size} values, expected K * 3 = {arrays[0].size} (x, y, score)"
            )
    kpts = np.stack([a.reshape(-1, 3) for a in arrays])
    scores = np.asarray([p["score"] for p in kpts_db])
    areas = np.asarray([p["area"] for p in kpts_db], dtype=np.float64)
    return kpts, scores, areas


class _LazyOks:
    """Rows of the pairwise OKS matrix: all at once for small groups, on demand for big ones."""

    def __init__(
        self,
        kpts: np.ndarray,
        areas: np.ndarray,
        variances: np.ndarray,
        in_vis_thre: float | None,
        full: np.ndarray | None = None,
    ):
        self.kpts, self.areas, self.variances, self.in_vis_thre = kpts, areas, variances, in_vis_thre
        if full is None and len(kpts) <= _MATRIX_MAX:
            full = _oks_rows(kpts, kpts, areas, areas, variances, in_vis_thre)
        self.full = full

    def row(self, i: int, cols: np.ndarray) -> np.ndarray:
        if self.full is not None:
            return self.full[i, cols]
        k, a = self.kpts, self.areas
        return _oks_rows(k[i : i + 1], k[cols], a[i : i + 1], a[cols], self.variances, self.in_vis_thre)[0]


def nms_from_arrays(
    kpts: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    thr: float,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
    *,
    oks_full: np.ndarray | None = None,
) -> list[int]:
    """Greedy OKS NMS on arrays: kpts (N, K, 3), scores (N,), areas (N,) -> kept indices, best first.
    ``oks_full``: the (N, N) OKS matrix when already computed (:func:`oks_matrices`).

    A pose is dropped when its OKS with an already kept, higher-scored pose is above ``thr`` (the
    official keeps ``oks <= thr``, so a NaN OKS also drops).
    """
    n = len(scores)
    if n == 0:
        return []
    variances = (resolve_sigmas(sigmas, kpts.shape[1]) * 2) ** 2
    oks = _LazyOks(kpts, np.asarray(areas, dtype=np.float64), variances, in_vis_thre, oks_full)
    order = np.asarray(scores).argsort()[::-1]  # the official's order, ties included
    if oks.full is not None:
        dropped = np.zeros(n, dtype=bool)
        keep = []
        for i in order.tolist():
            if dropped[i]:
                continue
            keep.append(i)
            dropped |= ~(oks.full[i] <= thr)
        return keep
    keep = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        order = rest[oks.row(i, rest) <= thr]
    return keep


def soft_nms_from_arrays(
    kpts: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    thr: float,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
    max_dets: int = SOFT_NMS_MAX_DETS,
    *,
    oks_full: np.ndarray | None = None,
) -> list[int]:
    """Soft OKS NMS (Gaussian decay ``score * exp(-oks^2 / thr)``): indices in pick order, at most max_dets.

    kpts (N, K, 3), scores (N,), areas (N,); ``oks_full``: the (N, N) OKS matrix when already computed.
    """
    if len(scores) == 0:
        return []
    variances = (resolve_sigmas(sigmas, kpts.shape[1]) * 2) ** 2
    oks = _LazyOks(kpts, np.asarray(areas, dtype=np.float64), variances, in_vis_thre, oks_full)
    order = np.asarray(scores).argsort()[::-1]
    cur = np.asarray(scores)[order]
    keep: list[int] = []
    while order.size > 0 and len(keep) < max_dets:
        i = int(order[0])
        keep.append(i)
        order = order[1:]
        cur = cur[1:] * np.exp(-(oks.row(i, order) ** 2) / thr)
        resort = cur.argsort()[::-1]  # re-sorted exactly as the official does (ties included)
        order, cur = order[resort], cur[resort]
    return keep


def oks_nms(
    kpts_db: Sequence[Mapping[str, Any]],
    thr: float,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
) -> list[int]:
    """Greedy OKS NMS over a list of person dicts; returns the kept indices, highest score first."""
    if len(kpts_db) == 0:
        return []
    kpts, scores, areas = _unpack(kpts_db)
    return nms_from_arrays(kpts, scores, areas, thr, sigmas, in_vis_thre)


def soft_oks_nms(
    kpts_db: Sequence[Mapping[str, Any]],
    thr: float,
    sigmas: Sequence[float] | np.ndarray | None = None,
    in_vis_thre: float | None = None,
    max_dets: int = SOFT_NMS_MAX_DETS,
) -> list[int]:
    """Soft OKS NMS over a list of person dicts; returns at most ``max_dets`` indices in pick order."""
    if len(kpts_db) == 0:
        return []
    kpts, scores, areas = _unpack(kpts_db)
    return soft_nms_from_arrays(kpts, scores, areas, thr, sigmas, in_vis_thre, max_dets)
