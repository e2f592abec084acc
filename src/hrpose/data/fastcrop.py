"""The crop warp of the training sample without touching the whole image, with the same pixels.

The official sample mirrors the whole decoded image (a strided numpy copy, slow for 3-byte pixels) and
converts the whole image to RGB before one bilinear ``cv2.warpAffine`` that only reads the person's box.
:func:`warp_crop` mirrors only the rows the warp reads (the box's bounding rows plus a 2-pixel margin)
with ``cv2.flip`` into an otherwise untouched zero image of the same size, so the warp reads the same
source pixels at the same coordinates and the crop equals the official one (tests/data/test_fastcrop.py
checks every pixel over random boxes, rotations and flips on real COCO images). Colour order is swapped
on the small crop instead of the image (:func:`bgr_to_rgb`).

:func:`normalize_lut` makes the float input with a 256-entry table per channel holding exactly
``(v / 255 - mean) / std`` in float32 -- the same operations, so the same bits, as ToTensor + Normalize.

Reduced-size decoding (opt-in, changes pixels): :func:`reduced_factor` picks libjpeg's DCT scaling 1/2 or
1/4 when the box is at least that many times larger than the crop, and :func:`scale_for_reduced` adjusts
the affine matrix exactly for the smaller grid (pixel ``i`` of a 1/f image covers full pixels ``f*i ..
f*i + f - 1``, so full ``x`` -> ``(x + 0.5) / f - 0.5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from hrpose.geometry import IMAGENET_MEAN, IMAGENET_STD

MARGIN = 2  # pixels around the box the bilinear warp may read (floor and floor + 1) -- with slack


def warp_crop(image: np.ndarray, trans: np.ndarray, size_wh: Sequence[int], *, flip: bool = False) -> np.ndarray:
    """``cv2.warpAffine(image[:, ::-1] if flip else image, trans, size_wh, INTER_LINEAR)`` without mirroring
    the whole image. ``trans`` maps (mirrored) image pixels to crop pixels (2x3)."""
    out_w, out_h = int(size_wh[0]), int(size_wh[1])
    if not flip:
        return cv2.warpAffine(image, trans, (out_w, out_h), flags=cv2.INTER_LINEAR)
    h, w = image.shape[:2]
    inv = cv2.invertAffineTransform(np.asarray(trans, dtype=np.float64))
    corners = np.array([[0.0, 0.0, 1.0], [out_w - 1.0, 0.0, 1.0], [0.0, out_h - 1.0, 1.0],
                        [out_w - 1.0, out_h - 1.0, 1.0]])  # fmt: skip
    pts = corners @ inv.T
    y0 = max(int(np.floor(pts[:, 1].min())) - MARGIN, 0)
    y1 = min(int(np.ceil(pts[:, 1].max())) + MARGIN, h - 1)
    # The mirrored image at its full size and place (OpenCV's warp computes source coordinates in floating
    # point, so moving the origin would change their rounding), but only the rows the warp reads are
    # mirrored; the others stay zero pages that are never touched.
    mirrored = np.zeros_like(image)
    if y0 <= y1:
        cv2.flip(image[y0 : y1 + 1], 1, dst=mirrored[y0 : y1 + 1])
    return cv2.warpAffine(mirrored, trans, (out_w, out_h), flags=cv2.INTER_LINEAR)


def bgr_to_rgb(crop: np.ndarray) -> np.ndarray:
    """The crop's channels reversed (a copy): per-channel warps commute with the channel order."""
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)


def _lut() -> np.ndarray:
    v = torch.arange(256, dtype=torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1)
    return v.view(1, 256).sub(mean).div(std).numpy()  # (3, 256): the exact float32 of each grey level


_LUT = _lut()
_LUT_ROWS = [np.ascontiguousarray(row.reshape(1, 256)) for row in _LUT]  # cv2.LUT's (1, 256) table per channel


def normalize_lut(crop: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W), bit-identical to ``augment.to_input_tensor`` (ToTensor +
    Normalize), by table look-up."""
    chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
    out = np.empty(chw.shape, dtype=np.float32)
    for c in range(3):  # cv2.LUT: a plain table read (np.take first casts the uint8 indices to intp: 2x slower)
        cv2.LUT(chw[c], _LUT_ROWS[c], dst=out[c])
    return torch.from_numpy(out)


def normalize_on_device(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) on any device -> the normalised float32 input (same operations as ToTensor +
    Normalize, so on the CPU the same bits)."""
    device = batch_u8.device
    if device not in _MEAN_STD:  # made once per device: no host-to-device copy in the step (CUDA graphs)
        _MEAN_STD[device] = (
            torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1).to(device),
            torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1).to(device),
        )
    mean, std = _MEAN_STD[device]
    return batch_u8.float().div_(255.0).sub_(mean).div_(std)


_MEAN_STD: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


REDUCED_FLAGS = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}


def reduced_factor(trans: np.ndarray, max_factor: int = 4) -> int:
    """1, 2 or 4: the largest DCT scaling whose grid is still at least as fine as the crop's (the crop's
    pixel spacing in the image, from ``trans``'s linear part, is >= the factor)."""
    a = np.asarray(trans, dtype=np.float64)[:, :2]
    px = 1.0 / max(float(np.sqrt(abs(np.linalg.det(a)))), 1e-12)  # image pixels per crop pixel
    f = 1
    while f * 2 <= max_factor and px >= f * 2:
        f *= 2
    return f


def scale_for_reduced(trans: np.ndarray, factor: int) -> np.ndarray:
    """``trans`` (full-image pixels -> crop) for a 1/``factor`` decoded image: compose with the exact
    reduced -> full map ``x = factor * (x' + 0.5) - 0.5``."""
    f = float(factor)
    up = np.array([[f, 0.0, 0.5 * f - 0.5], [0.0, f, 0.5 * f - 0.5], [0.0, 0.0, 1.0]])
    return np.asarray(trans, dtype=np.float64) @ up
