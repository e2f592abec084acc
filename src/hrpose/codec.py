"""Heatmap targets and their decoding: official (argmax + quarter-pixel shift), DARK and UDP.

Frames: `joints_crop` are model-input pixels (MODEL.IMAGE_SIZE, (w, h)), `*_hm` are heatmap pixels
(MODEL.HEATMAP_SIZE), `preds_img` are image pixels. A codec owns both directions, so the round trip
`decode(encode(joints_crop))` is what the tests check.

Methods:
- ``official``: the official JointsDataset.generate_target (a Gaussian pasted on the *rounded* heatmap pixel,
  stride = input / heatmap) and get_final_preds (argmax, then a quarter-pixel step toward the higher neighbour).
- ``dark``: DARK (Zhang et al., CVPR 2020, "Distribution-Aware Coordinate Representation"): unbiased targets
  (the Gaussian centred on the exact position x / stride, not the rounded pixel); decoding refines the argmax:
  blur the heatmap, take its log, one Newton step of the 2nd-order Taylor expansion.
- ``udp``: Unbiased Data Processing (Huang et al., CVPR 2020): stride = (input - 1) / (heatmap - 1) so that a
  horizontal flip (x -> w - 1 - x) is the same map in both frames, Gaussian centred on the unrounded position,
  DARK-style refinement (MMPose's `udp` refine), and no one-pixel shift in the flip test.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from hrpose.geometry import transform_preds_batch

METHODS = ("official", "dark", "udp")
ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)


# --------------------------------------------------------------------------------------------------------------
# argmax, flip, accuracy
# --------------------------------------------------------------------------------------------------------------
def get_max_preds(heatmaps: ArrayLike) -> tuple[ArrayLike, ArrayLike]:
    """Argmax of each map: heatmaps (N, K, H, W) -> coords_hm (N, K, 2) float32 (x, y), maxvals (N, K, 1).

    A map whose maximum is <= 0 (nothing detected) gets coordinates (0, 0), as in the official code.
    Works on numpy arrays and torch tensors (returns the same kind; ties go to the first maximum in both).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"get_max_preds: heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    if isinstance(heatmaps, torch.Tensor):
        flat = heatmaps.reshape(n, k, h * w)
        maxvals_t, idx_t = flat.max(dim=2, keepdim=True)
        coords_t = torch.cat([idx_t % w, torch.div(idx_t, w, rounding_mode="floor")], dim=2).float()
        coords_t = coords_t * (maxvals_t > 0).float()
        return coords_t, maxvals_t
    flat_np = np.asarray(heatmaps).reshape(n, k, h * w)
    idx = np.argmax(flat_np, axis=2)[..., None]
    maxvals = np.take_along_axis(flat_np, idx, axis=2)
    coords = np.concatenate([idx % w, idx // w], axis=2).astype(np.float32)
    coords *= (maxvals > 0).astype(np.float32)
    return coords, maxvals


def _flip_permutation(num_joints: int, flip_pairs: Sequence[Sequence[int]]) -> np.ndarray:
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"flip pair ({a}, {b}) is out of range for {num_joints} joints")
        perm[a], perm[b] = b, a
    return perm


def flip_back(heatmaps: ArrayLike, flip_pairs: Sequence[Sequence[int]]) -> ArrayLike:
    """Maps predicted on a mirrored image -> maps of the original image: (N, K, H, W) -> (N, K, H, W).

    Mirrors the width axis and swaps left/right joints. Returns a new array/tensor (input untouched).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"flip_back: heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    perm = _flip_permutation(heatmaps.shape[1], flip_pairs)
    if isinstance(heatmaps, torch.Tensor):
        return torch.flip(heatmaps, dims=(3,))[:, torch.as_tensor(perm, device=heatmaps.device)]
    return np.ascontiguousarray(np.asarray(heatmaps)[:, perm, :, ::-1])


def merge_flip(
    heatmaps: ArrayLike, heatmaps_flipped_raw: ArrayLike, flip_pairs: Sequence[Sequence[int]], shift: bool = True
) -> ArrayLike:
    """The flip test: average the maps of the image and of its mirror image (both (N, K, H, W)).

    `heatmaps_flipped_raw` is the model output on the mirrored input, as it comes out of the model. With
    `shift` (TEST.SHIFT_HEATMAP) the flipped-back maps move one pixel right (column 0 is kept), which
    compensates the official stride convention where a mirrored pixel lands half a heatmap pixel off;
    UDP does not need it.
    """
    if tuple(heatmaps.shape) != tuple(heatmaps_flipped_raw.shape):
        raise ValueError(
            f"merge_flip: shapes differ: heatmaps {tuple(heatmaps.shape)} vs "
            f"heatmaps_flipped_raw {tuple(heatmaps_flipped_raw.shape)}"
        )
    back = flip_back(heatmaps_flipped_raw, flip_pairs)
    if shift:
        back[..., 1:] = back[..., :-1].clone() if isinstance(back, torch.Tensor) else back[..., :-1].copy()
    return (heatmaps + back) * 0.5


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def accuracy(output: Any, target: Any, thr: float = 0.5) -> tuple[np.ndarray, float, int, np.ndarray]:
    """PCK on heatmaps, the number the official training log prints as `Accuracy`.

    output, target: (N, K, H, W) maps (numpy or torch). Both are decoded by argmax; a joint counts where the
    target's argmax is > 1 in both x and y (heatmap pixels), and is correct when the distance, normalised by
    (H / 10, W / 10) for (x, y) - the official order, kept for parity - is below `thr`.
    Returns (acc (K + 1,) with acc[0] the mean over counted joints and -1 for joints never counted,
    avg_acc, cnt = number of joints counted, pred (N, K, 2) argmax coords of `output`).
    """
    out_np, tgt_np = _to_numpy(output), _to_numpy(target)
    if out_np.shape != tgt_np.shape or out_np.ndim != 4:
        raise ValueError(f"accuracy: output {out_np.shape} and target {tgt_np.shape} must both be (N, K, H, W)")
    pred, _ = get_max_preds(out_np)
    gt, _ = get_max_preds(tgt_np)
    h, w = out_np.shape[2], out_np.shape[3]
    norm = np.array([h, w], dtype=np.float64) / 10.0
    counted = (gt[..., 0] > 1) & (gt[..., 1] > 1)  # (N, K)
    dists = np.linalg.norm(pred.astype(np.float64) / norm - gt.astype(np.float64) / norm, axis=2)
    n_counted = counted.sum(axis=0)  # (K,)
    n_hit = (counted & (dists < thr)).sum(axis=0)
    per_joint = np.where(n_counted > 0, n_hit / np.maximum(n_counted, 1), -1.0)
    cnt = int((n_counted > 0).sum())
    avg_acc = float(per_joint[n_counted > 0].sum() / cnt) if cnt else 0.0
    acc = np.zeros(out_np.shape[1] + 1, dtype=np.float64)
    acc[1:] = per_joint
    if cnt:
        acc[0] = avg_acc
    return acc, avg_acc, cnt, pred


# --------------------------------------------------------------------------------------------------------------
# sub-pixel refinement
# --------------------------------------------------------------------------------------------------------------
def _gather(heatmaps: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """heatmaps (N, K, H, W), integer xs/ys (N, K, ...) already inside the map -> values (N, K, ...)."""
    n, k = heatmaps.shape[:2]
    ni = np.arange(n).reshape((n, 1) + (1,) * (xs.ndim - 2))
    ki = np.arange(k).reshape((1, k) + (1,) * (xs.ndim - 2))
    return heatmaps[ni, ki, ys, xs]


def quarter_offset(heatmaps: np.ndarray, coords_hm: np.ndarray) -> np.ndarray:
    """The official TEST.POST_PROCESS: a 0.25-pixel step toward the higher neighbour, per axis.

    heatmaps (N, K, H, W), integer argmax coords_hm (N, K, 2) -> refined coords (N, K, 2) float32.
    Only where 1 < x < W - 1 and 1 < y < H - 1 (the official bounds: x = 1 is not refined either).
    """
    _, _, h, w = heatmaps.shape
    px = np.floor(coords_hm[..., 0] + 0.5).astype(np.int64)
    py = np.floor(coords_hm[..., 1] + 0.5).astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    cx, cy = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    dx = _gather(heatmaps, cx + 1, cy) - _gather(heatmaps, cx - 1, cy)
    dy = _gather(heatmaps, cx, cy + 1) - _gather(heatmaps, cx, cy - 1)
    step = np.stack([np.sign(dx), np.sign(dy)], axis=-1) * 0.25 * inside[..., None]
    return (coords_hm + step).astype(np.float32)


def dark_kernel_size(sigma: float) -> int:
    """Blur kernel whose OpenCV default sigma, 0.3 * ((ks - 1) / 2 - 1) + 0.8, matches the target sigma.

    sigma 2 -> 11, the kernel of the DARK paper's code and MMPose; always odd and >= 3.
    """
    ks = int(round(2.0 * ((sigma - 0.8) / 0.3 + 1.0) + 1.0))
    ks += 1 - ks % 2
    return max(ks, 3)


def gaussian_blur(heatmaps: np.ndarray, kernel_size: int) -> np.ndarray:
    """Zero-padded separable Gaussian blur of every map, rescaled to keep each map's maximum.

    heatmaps (N, K, H, W) -> float32 (N, K, H, W). The kernel is cv2.getGaussianKernel(kernel_size, 0) and
    the border is zeros (as DARK pads the map before cv2.GaussianBlur). Maps whose blurred maximum is not
    positive are left unscaled, so an empty map never divides by zero.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"gaussian_blur: kernel_size must be a positive odd number, got {kernel_size}")
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    if hm.size == 0:
        return hm.copy()
    r = (kernel_size - 1) // 2
    kern = cv2.getGaussianKernel(kernel_size, 0).astype(np.float32)
    # One tall single-channel image: every map followed by r zero rows, so no map's blur reaches the next
    # one; the outer border is zeros too. One cv2 call instead of N*K (about 50x faster than numpy shifts).
    tall = np.zeros((n * k, h + r, w), dtype=np.float32)
    tall[:, :h] = hm.reshape(n * k, h, w)
    blurred = cv2.sepFilter2D(tall.reshape(-1, w), -1, kern, kern, borderType=cv2.BORDER_CONSTANT)
    blurred = blurred.reshape(n * k, h + r, w)[:, :h].reshape(n, k, h, w)
    origin_max = hm.max(axis=(2, 3), keepdims=True)
    new_max = blurred.max(axis=(2, 3), keepdims=True)
    ok = (new_max > 0) & (origin_max > 0)
    return blurred * np.where(ok, origin_max / np.where(ok, new_max, 1.0), 1.0).astype(np.float32)


def _newton_step(
    dx: np.ndarray, dy: np.ndarray, dxx: np.ndarray, dxy: np.ndarray, dyy: np.ndarray, eps: float = 0.0
) -> np.ndarray:
    """offset = -H^-1 g for the 2x2 Hessian [[dxx, dxy], [dxy, dyy]] + eps I, written out; 0 where singular."""
    dxx, dyy = dxx + eps, dyy + eps
    det = dxx * dyy - dxy * dxy
    ok = np.isfinite(det) & (np.abs(det) > 1e-12)
    safe = np.where(ok, det, 1.0)
    off_x = -(dyy * dx - dxy * dy) / safe
    off_y = -(-dxy * dx + dxx * dy) / safe
    off = np.stack([off_x, off_y], axis=-1)
    return np.where((ok & np.isfinite(off_x) & np.isfinite(off_y))[..., None], off, 0.0)


def dark_refine(heatmaps: np.ndarray, coords_hm: np.ndarray, kernel_size: int) -> np.ndarray:
    """DARK: heatmaps (N, K, H, W), argmax coords_hm (N, K, 2) -> refined coords (N, K, 2) float32.

    Blur, clip to 1e-10, log; then one Newton step x - H^-1 g of the 2nd-order Taylor expansion at the argmax,
    with central differences of step 1 (gradient) and 2 (Hessian). Only where 1 < x < W - 2 and 1 < y < H - 2,
    i.e. where the +-2 neighbours exist; a flat (all-zero or negative) map gives a singular Hessian: no step.
    """
    _, _, h, w = heatmaps.shape
    blurred = gaussian_blur(heatmaps, kernel_size)
    px = coords_hm[..., 0].astype(np.int64)
    py = coords_hm[..., 1].astype(np.int64)
    inside = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    cx, cy = np.clip(px, 2, w - 3), np.clip(py, 2, h - 3)

    def at(ox: int, oy: int) -> np.ndarray:  # log of the blurred map, only where it is needed
        return np.log(np.maximum(_gather(blurred, cx + ox, cy + oy).astype(np.float64), 1e-10))

    c = at(0, 0)
    dx = 0.5 * (at(1, 0) - at(-1, 0))
    dy = 0.5 * (at(0, 1) - at(0, -1))
    dxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    dyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    off = _newton_step(dx, dy, dxx, dxy, dyy) * inside[..., None]
    return (coords_hm + off).astype(np.float32)


def udp_refine(heatmaps: np.ndarray, coords_hm: np.ndarray, kernel_size: int) -> np.ndarray:
    """UDP's refinement (MMPose 'dark_udp'): heatmaps (N, K, H, W), argmax (N, K, 2) -> (N, K, 2) float32.

    Blur, clip to [1e-3, 50], log, extend by the edge values; gradient and Hessian from the 3x3 neighbourhood
    (step-1 differences), Hessian regularised by float32 eps. Applies everywhere, borders included.
    """
    _, _, h, w = heatmaps.shape
    blurred = gaussian_blur(heatmaps, kernel_size)
    cx = np.clip(coords_hm[..., 0].astype(np.int64), 0, w - 1)
    cy = np.clip(coords_hm[..., 1].astype(np.int64), 0, h - 1)

    def at(ox: int, oy: int) -> np.ndarray:  # clamping the index = padding by the edge value
        vals = _gather(blurred, np.clip(cx + ox, 0, w - 1), np.clip(cy + oy, 0, h - 1))
        return np.log(np.clip(vals.astype(np.float64), 1e-3, 50.0))

    c, xp, xm, yp, ym = at(0, 0), at(1, 0), at(-1, 0), at(0, 1), at(0, -1)
    dx, dy = 0.5 * (xp - xm), 0.5 * (yp - ym)
    dxx, dyy = xp - 2 * c + xm, yp - 2 * c + ym
    # mixed derivative from the two diagonal neighbours (+1,+1) and (-1,-1) and the axis neighbours
    dxy = 0.5 * (at(1, 1) - xp - yp + 2 * c - xm - ym + at(-1, -1))
    off = _newton_step(dx, dy, dxx, dxy, dyy, eps=float(np.finfo(np.float32).eps))
    return (coords_hm + off).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------
# the codec
# --------------------------------------------------------------------------------------------------------------
def _pair(value: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.shape != (2,) or np.any(arr <= 0):
        raise ValueError(f"HeatmapCodec: {name} must be two positive numbers (width, height), got {value!r}")
    return arr


class HeatmapCodec:
    """Gaussian heatmap targets (encode) and keypoints from heatmaps (decode).

    input_size_wh: model input (w, h); heatmap_size_wh: heatmap (w, h); sigma: Gaussian sigma in heatmap
    pixels; method: "official" | "dark" | "udp"; joints_weight: optional per-joint loss weights (K,)
    (LOSS.USE_DIFFERENT_JOINTS_WEIGHT) that multiply target_weight; blur_kernel_size: DARK/UDP blur kernel
    (default `dark_kernel_size(sigma)`, 11 for sigma 2).
    """

    def __init__(
        self,
        input_size_wh: Sequence[float] | np.ndarray,
        heatmap_size_wh: Sequence[float] | np.ndarray,
        sigma: float,
        *,
        method: str = "official",
        joints_weight: Sequence[float] | np.ndarray | None = None,
        blur_kernel_size: int | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"HeatmapCodec: unknown method {method!r}; expected one of {METHODS}")
        if not sigma > 0:
            raise ValueError(f"HeatmapCodec: sigma must be positive, got {sigma!r}")
        self.input_size = _pair(input_size_wh, "input_size_wh")
        self.heatmap_size = _pair(heatmap_size_wh, "heatmap_size_wh")
        self.heatmap_w, self.heatmap_h = (int(v) for v in self.heatmap_size)
        self.sigma = float(sigma)
        self.method = method
        self.joints_weight = (
            None if joints_weight is None else np.asarray(joints_weight, dtype=np.float32).reshape(-1, 1)
        )
        self._patches: dict[int, np.ndarray] = {}  # the official Gaussian patch by size (made on first use)
        self.blur_kernel_size = dark_kernel_size(self.sigma) if blur_kernel_size is None else int(blur_kernel_size)
        if method == "udp":
            if np.any(self.heatmap_size < 2):
                raise ValueError(f"HeatmapCodec: udp needs a heatmap of at least 2x2, got {self.heatmap_size}")
            # UDP: pixel centres 0 and size - 1 coincide in both frames, so flipping commutes with the stride
            self.feat_stride = (self.input_size - 1.0) / (self.heatmap_size - 1.0)
        else:
            self.feat_stride = self.input_size / self.heatmap_size

    @property
    def shift_heatmap(self) -> bool:
        """Whether the flip test should shift the flipped-back maps one pixel (TEST.SHIFT_HEATMAP); not for UDP."""
        return self.method != "udp"

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(input_size_wh={self.input_size.tolist()}, heatmap_size_wh={self.heatmap_size.tolist()}, "
            f"sigma={self.sigma}, method={self.method!r})"
        )

    # ---------------------------------------------------------------------------------------------------------
    def encode(self, joints_crop: np.ndarray, joints_vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """joints_crop (K, 2 or 3) input pixels, joints_vis (K,) or (K, 3) -> target (K, H, W), weight (K, 1).

        A joint whose Gaussian window (+-3 sigma) lies entirely off the heatmap gets weight 0; an invisible
        joint (vis <= 0.5) keeps its weight (0 from vis) and an empty map. Both float32.
        """
        joints = np.asarray(joints_crop, dtype=np.float64)
        vis = np.asarray(joints_vis, dtype=np.float64)
        if joints.ndim != 2 or joints.shape[1] < 2:
            raise ValueError(f"HeatmapCodec.encode: joints_crop must be (K, 2) or (K, 3), got {joints.shape}")
        vis = vis[:, 0] if vis.ndim == 2 else vis
        if vis.shape != (joints.shape[0],):
            raise ValueError(
                f"HeatmapCodec.encode: joints_vis must be (K,) or (K, 3) for K={joints.shape[0]}, got "
                f"{np.shape(joints_vis)}"
            )
        num_joints = joints.shape[0]
        w, h = self.heatmap_w, self.heatmap_h
        tmp_size = self.sigma * 3
        weight = vis.astype(np.float32).reshape(-1, 1)

        pos_hm = joints[:, :2] / self.feat_stride  # (K, 2) unrounded heatmap position
        # int() truncates toward zero (not floor) in the official code; np.trunc keeps that for negatives
        mu = np.trunc(pos_hm + 0.5)
        ul = np.trunc(mu - tmp_size)
        br = np.trunc(mu + tmp_size + 1)
        off_map = (ul[:, 0] >= w) | (ul[:, 1] >= h) | (br[:, 0] < 0) | (br[:, 1] < 0)
        weight[off_map] = 0.0
        draw = ~off_map & (weight[:, 0] > 0.5)

        if self.method == "official":
            target = self._paste_official(ul, br, draw, tmp_size)
            if self.joints_weight is not None:
                if self.joints_weight.shape[0] != num_joints:
                    raise ValueError(
                        f"HeatmapCodec.encode: joints_weight has {self.joints_weight.shape[0]} entries, "
                        f"but {num_joints} joints were given"
                    )
                weight = weight * self.joints_weight
            return target, weight.astype(np.float32)

        xs = np.arange(w, dtype=np.float64)
        ys = np.arange(h, dtype=np.float64)
        if self.method != "official":
            # DARK's unbiased encoding and UDP: the Gaussian is centred on the exact (unrounded) position and
            # evaluated on the whole grid; only the in-bounds test above uses the rounded centre
            cx, cy = pos_hm[:, 0], pos_hm[:, 1]
            in_x = np.ones((num_joints, w), dtype=bool)
            in_y = np.ones((num_joints, h), dtype=bool)
        else:
            # The official code pastes a (2 tmp + 1)^2 patch whose centre cell is size // 2; with a
            # fractional tmp_size (sigma 1.5) and a truncated negative `ul`, that centre is not `mu`.
            centre = np.floor(2 * tmp_size + 1) // 2
            cx, cy = ul[:, 0] + centre, ul[:, 1] + centre
            patch = np.ceil(2 * tmp_size + 1)  # number of cells of the patch
            x_end = np.minimum(br[:, 0], ul[:, 0] + patch)
            y_end = np.minimum(br[:, 1], ul[:, 1] + patch)
            in_x = (xs[None] >= ul[:, :1]) & (xs[None] < x_end[:, None])
            in_y = (ys[None] >= ul[:, 1:]) & (ys[None] < y_end[:, None])
        # float32 like the official patch, so targets agree to float rounding
        d2x = ((xs[None] - cx[:, None]) ** 2).astype(np.float32)  # (K, W)
        d2y = ((ys[None] - cy[:, None]) ** 2).astype(np.float32)  # (K, H)
        two_var = np.float32(2 * self.sigma**2)
        target = np.exp(-(d2y[:, :, None] + d2x[:, None, :]) / two_var)
        mask = in_y[:, :, None] & in_x[:, None, :] & draw[:, None, None]
        target = np.where(mask, target, np.float32(0)).astype(np.float32)

        if self.joints_weight is not None:
            if self.joints_weight.shape[0] != num_joints:
                raise ValueError(
                    f"HeatmapCodec.encode: joints_weight has {self.joints_weight.shape[0]} entries, "
                    f"but {num_joints} joints were given"
                )
            weight = weight * self.joints_weight
        return target, weight.astype(np.float32)

    def _paste_official(self, ul: np.ndarray, br: np.ndarray, draw: np.ndarray, tmp_size: float) -> np.ndarray:
        """The official targets: one (2 tmp + 1)^2 Gaussian patch pasted per drawn joint, clipped to the map.

        The patch's cells sit at whole-cell offsets from its centre cell whatever the joint (``ul`` is whole),
        so the patch is one table made once with the same float32 operations as the whole-grid formula of
        the other methods (squared offsets, their sum, / 2 sigma^2, exp): the same values, bit for bit,
        without evaluating exp over K x H x W cells for each sample."""
        w, h = self.heatmap_w, self.heatmap_h
        target = np.zeros((ul.shape[0], h, w), dtype=np.float32)
        centre = int(np.floor(2 * tmp_size + 1) // 2)
        size = int(np.ceil(2 * tmp_size + 1))  # number of cells of the patch
        table = self._patches.get(size)
        if table is None:
            d2 = ((np.arange(size, dtype=np.float64) - centre) ** 2).astype(np.float32)
            table = np.exp(-(d2[:, None] + d2[None, :]) / np.float32(2 * self.sigma**2))
            self._patches[size] = table
        finite = np.isfinite(ul).all(axis=1) & np.isfinite(br).all(axis=1)
        for k in np.flatnonzero(draw & finite):
            x0, y0 = int(ul[k, 0]), int(ul[k, 1])
            x1, y1 = min(int(br[k, 0]), x0 + size), min(int(br[k, 1]), y0 + size)
            xa, xb, ya, yb = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
            if xa < xb and ya < yb:
                target[k, ya:yb, xa:xb] = table[ya - y0 : yb - y0, xa - x0 : xb - x0]
        return target

    # ---------------------------------------------------------------------------------------------------------
    def decode_hm(self, heatmaps: np.ndarray, post_process: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps (N, K, H, W) -> coords_hm (N, K, 2) float32 in heatmap pixels, maxvals (N, K, 1).

        `post_process=False` is the bare argmax for every method.
        """
        hm = _to_numpy(heatmaps)
        if hm.ndim != 4 or hm.shape[2:] != (self.heatmap_h, self.heatmap_w):
            raise ValueError(
                f"HeatmapCodec.decode: heatmaps must be (N, K, {self.heatmap_h}, {self.heatmap_w}), got {hm.shape}"
            )
        coords, maxvals = get_max_preds(hm)
        if post_process and hm.shape[0] * hm.shape[1] > 0:
            if self.method == "official":
                coords = quarter_offset(hm, coords)
            elif self.method == "dark":
                coords = dark_refine(hm, coords, self.blur_kernel_size)
            else:
                coords = udp_refine(hm, coords, self.blur_kernel_size)
        return coords, maxvals

    def hm_to_crop(self, coords_hm: np.ndarray) -> np.ndarray:
        """Heatmap pixels (..., 2) -> model-input pixels: times the stride ((in - 1) / (hm - 1) for UDP)."""
        return np.asarray(coords_hm, dtype=np.float64)[..., :2] * self.feat_stride

    def decode(
        self, heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray, post_process: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """heatmaps (N, K, H, W), centers (N, 2), scales (N, 2) -> preds_img (N, K, 2), maxvals (N, K, 1).

        Vectorised over the batch; float32 outputs like the official code. Official and DARK map heatmap
        pixels to the image as get_final_preds does (the crop inverse at heatmap resolution). UDP first maps
        heatmap -> input pixels with (in - 1) / (hm - 1), then applies the crop inverse at input resolution,
        so that it inverts exactly the affine crop (geometry.get_affine_transform) the data pipeline uses.
        """
        coords_hm, maxvals = self.decode_hm(heatmaps, post_process)
        n = coords_hm.shape[0]
        centers = np.asarray(centers, dtype=np.float64).reshape(n, 2)
        scales = np.asarray(scales, dtype=np.float64).reshape(n, 2)
        if self.method == "udp":
            preds = transform_preds_batch(self.hm_to_crop(coords_hm), centers, scales, self.input_size)
        else:
            preds = transform_preds_batch(coords_hm, centers, scales, self.heatmap_size)
        return preds.astype(np.float32), maxvals.astype(np.float32)


def build_codec(cfg: Any, meta: Any = None) -> HeatmapCodec:
    """HeatmapCodec from a config: MODEL.IMAGE_SIZE/HEATMAP_SIZE/SIGMA/TARGET_TYPE, HRPOSE.DECODER and
    LOSS.USE_DIFFERENT_JOINTS_WEIGHT (weights from `meta.joints_weight`, a hrpose.keypoints.DatasetMeta)."""
    target_type = str(cfg.MODEL.TARGET_TYPE)
    if target_type != "gaussian":
        raise ValueError(f"MODEL.TARGET_TYPE {target_type!r} is not supported: only 'gaussian' heatmaps are")
    hrpose_node = cfg.get("HRPOSE", None)
    method = str(hrpose_node.get("DECODER", "official")) if hrpose_node is not None else "official"
    if method not in METHODS:
        raise ValueError(f"HRPOSE.DECODER {method!r} is not supported; expected one of {METHODS}")
    joints_weight = None
    loss_node = cfg.get("LOSS", None)
    if loss_node is not None and bool(loss_node.get("USE_DIFFERENT_JOINTS_WEIGHT", False)):
        if meta is None:
            # decoding needs no weights (the engine builds a decode-only codec); training passes the meta
            warnings.warn(
                "build_codec: LOSS.USE_DIFFERENT_JOINTS_WEIGHT is on but no DatasetMeta was given; "
                "this codec's targets carry no per-joint weights",
                stacklevel=2,
            )
        else:
            weights = tuple(getattr(meta, "joints_weight", ()) or ())
            if not weights:
                raise ValueError(
                    "LOSS.USE_DIFFERENT_JOINTS_WEIGHT is on but dataset "
                    f"{getattr(meta, 'name', '?')!r} defines no per-joint weights (DatasetMeta.joints_weight)"
                )
            joints_weight = weights
    return HeatmapCodec(
        tuple(cfg.MODEL.IMAGE_SIZE),
        tuple(cfg.MODEL.HEATMAP_SIZE),
        float(cfg.MODEL.SIGMA),
        method=method,
        joints_weight=joints_weight,
    )
