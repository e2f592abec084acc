"""Top-down training augmentation with the official geometry, sampled apart from a deterministic core.

`sample_aug_params(rng, ...)` draws the random choices (scale, rotation, flip, half-body) into an
`AugParams`; `apply(image, record, params, ...)` is a pure function of its inputs: it mirrors, picks the
half-body box, builds the affine transform and crops. Test mode is `apply(..., IDENTITY)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hrpose.data.records import PersonRecord
from hrpose.geometry import IMAGENET_MEAN, IMAGENET_STD, PIXEL_STD, get_affine_transform

# ImageNet statistics in RGB order; the official code applies them whatever DATASET.COLOR_RGB says.
HALF_BODY_PADDING = 1.5  # the official half-body box is padded by 1.5 (full boxes by 1.25)
ROTATION_PROB = 0.6  # the official rotation is applied to 60% of samples


@dataclass(frozen=True)
class AugParams:
    """One sample's random choices. Identity: scale 1, no rotation, no flip, full body."""

    scale_multiplier: float = 1.0
    rotation: float = 0.0  # degrees, counter-clockwise as in get_affine_transform
    flip: bool = False
    half_body: bool = False
    prefer_upper: bool = True  # which half when both halves have more than two visible joints


IDENTITY = AugParams()


def sample_aug_params(
    rng: np.random.Generator,
    scale_factor: float,
    rotation_factor: float,
    flip: bool,
    *,
    prob_half_body: float = 0.0,
    num_joints_half_body: int = 8,
    num_visible: int = 0,
) -> AugParams:
    """Draw the official training augmentation (DATASET.SCALE_FACTOR, ROT_FACTOR, FLIP, PROB_HALF_BODY).

    scale: clip(N(0,1) * SF + 1, 1 - SF, 1 + SF); rotation with probability 0.6: clip(N(0,1) * RF, -2RF, 2RF)
    degrees; horizontal flip with probability 0.5 when `flip`; half-body with probability PROB_HALF_BODY
    when more than NUM_JOINTS_HALF_BODY joints are visible, the upper half preferred when N(0,1) < 0.5
    (about 69% of the time, as official).
    """
    half_body = bool(num_visible > num_joints_half_body and rng.random() < prob_half_body)
    prefer_upper = bool(rng.standard_normal() < 0.5)
    sf, rf = float(scale_factor), float(rotation_factor)
    scale_multiplier = float(np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf))
    rot = float(np.clip(rng.standard_normal() * rf, -2.0 * rf, 2.0 * rf))
    rotation = rot if rng.random() <= ROTATION_PROB else 0.0
    do_flip = bool(flip and rng.random() <= 0.5)
    return AugParams(scale_multiplier, rotation, do_flip, half_body, prefer_upper)


def half_body_center_scale(
    joints_img: np.ndarray,
    joints_vis: np.ndarray,
    upper_body_ids: Sequence[int],
    aspect_ratio: float,
    prefer_upper: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Official half-body box: the visible joints of one half -> center (2,), scale (2,) float32, or None.

    The upper half is used when `prefer_upper` and it has more than two visible joints; otherwise the lower
    half if it has more than two, else the upper. Fewer than two joints in the chosen half -> None.
    The box is the joints' extent grown to `aspect_ratio` (w/h) and padded by 1.5; center = joint mean.
    A box under one pixel (the joints on one point) -> None as well, so the full box is used.
    """
    vis = np.asarray(joints_vis)[:, 0] > 0
    is_upper = np.zeros(len(vis), dtype=bool)
    is_upper[list(upper_body_ids)] = True
    upper = np.asarray(joints_img, dtype=np.float32)[vis & is_upper]
    lower = np.asarray(joints_img, dtype=np.float32)[vis & ~is_upper]
    if prefer_upper and len(upper) > 2:
        selected = upper
    else:
        selected = lower if len(lower) > 2 else upper
    if len(selected) < 2:
        return None
    center = selected.mean(axis=0)[:2]
    w, h = selected.max(axis=0)[:2] - selected.min(axis=0)[:2]
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    if max(w, h) < 1.0:
        # All chosen joints (nearly) on one point: the official code would crop with a zero scale (a blank
        # input); keep the full-body box instead.
        return None
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], dtype=np.float32) * HALF_BODY_PADDING
    return center, scale


def flip_joints(
    joints: np.ndarray, joints_vis: np.ndarray, width: int, flip_pairs: Sequence[Sequence[int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror (K, 3) joints in an image `width` pixels wide: x -> width - 1 - x, left/right swapped.

    As official, the returned joints are multiplied by the (swapped) visibility, so invisible joints are 0.
    """
    idx = np.arange(len(joints))
    for a, b in flip_pairs:
        idx[a], idx[b] = b, a
    joints = np.array(joints, dtype=np.float64)
    joints[:, 0] = width - joints[:, 0] - 1
    joints, joints_vis = joints[idx], np.asarray(joints_vis, dtype=np.float64)[idx]
    return joints * joints_vis, joints_vis


@dataclass
class CropResult:
    """crop: (H, W, C) uint8; joints_crop (K, 3) (x, y in crop pixels for visible joints; invisible
    joints are left as they were, like official); joints_vis (K, 3); center/scale/rotation used; trans 2x3."""

    crop: np.ndarray
    joints_crop: np.ndarray
    joints_vis: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    rotation: float
    trans: np.ndarray


def apply(
    image: np.ndarray,
    record: PersonRecord,
    params: AugParams,
    *,
    input_size_wh: Sequence[int],
    flip_pairs: Sequence[Sequence[int]] = (),
    upper_body_ids: Sequence[int] = (),
) -> CropResult:
    """Deterministic core: image (H, W, C) + record + params -> the model-input crop and its joints.

    Official order: half-body box (in the unflipped image), scale multiplier, mirror image + joints + center
    (x -> W - 1 - x), then one bilinear cv2.warpAffine of the (rotated) box into `input_size_wh`
    (`fastcrop.warp_crop`: only the rows the warp reads are mirrored; the same pixels).
    """
    from hrpose.data.fastcrop import warp_crop

    res = plan(record, params, int(image.shape[1]), input_size_wh=input_size_wh, flip_pairs=flip_pairs,
               upper_body_ids=upper_body_ids)  # fmt: skip
    out_w, out_h = int(input_size_wh[0]), int(input_size_wh[1])
    res.crop = warp_crop(image, res.trans, (out_w, out_h), flip=params.flip)
    return res


def plan(
    record: PersonRecord,
    params: AugParams,
    image_width: int,
    *,
    input_size_wh: Sequence[int],
    flip_pairs: Sequence[Sequence[int]] = (),
    upper_body_ids: Sequence[int] = (),
) -> CropResult:
    """`apply`'s geometry without pixels: the joints in the crop, the box and the (mirrored-image -> crop)
    matrix for an image `image_width` pixels wide; `crop` is an empty array."""
    out_w, out_h = int(input_size_wh[0]), int(input_size_wh[1])
    joints = np.array(record.joints_img, dtype=np.float64)
    joints_vis = np.array(record.joints_vis, dtype=np.float64)
    center = np.array(record.center)
    scale = np.array(record.scale)
    if params.half_body:
        hb = half_body_center_scale(joints, joints_vis, upper_body_ids, out_w / out_h, params.prefer_upper)
        if hb is not None:
            center, scale = hb
    if params.scale_multiplier != 1.0:
        # in the scale's own dtype, as numpy 1 did for the official float32 scales
        scale = scale * np.asarray(params.scale_multiplier, dtype=scale.dtype)
    if params.flip:
        joints, joints_vis = flip_joints(joints, joints_vis, image_width, flip_pairs)
        center[0] = image_width - center[0] - 1
    trans = get_affine_transform(center, scale, params.rotation, (out_w, out_h))
    vis = joints_vis[:, 0] > 0
    joints[vis, :2] = joints[vis, :2] @ trans[:, :2].T + trans[:, 2]
    empty = np.zeros((0, 0, 3), dtype=np.uint8)
    return CropResult(empty, joints, joints_vis, center, scale, float(params.rotation), trans)


_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)


def to_input_tensor(crop: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W): / 255 then ImageNet mean/std (torchvision ToTensor + Normalize)."""
    t = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float().div_(255.0)
    return t.sub_(_MEAN).div_(_STD)
