"""Box <-> (center, scale), the crop affine transform, warping, and the way back to image pixels.

Frames: `*_img` are image pixels, `*_crop` are model-input pixels (MODEL.IMAGE_SIZE), `*_hm` are heatmap
pixels (MODEL.HEATMAP_SIZE). Sizes are (width, height) like the official configs.
"scale" is the official box scale: box size in pixels / PIXEL_STD, where PIXEL_STD = 200 is a historical
constant of the MPII annotations that the official code kept for every dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

PIXEL_STD = 200.0
BOX_PADDING = 1.25  # the official crops are 25% larger than the person box


def box_to_center_scale(
    box_xywh, aspect_ratio: float, padding: float = BOX_PADDING, pixel_std: float = PIXEL_STD
) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) -> center (2,), scale (2,): the box grown to `aspect_ratio` (w/h), then padded."""
    x, y, w, h = (float(v) for v in box_xywh[:4])
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w * 1.0 / pixel_std, h * 1.0 / pixel_std], dtype=np.float32)
    if center[0] != -1:  # the official code's sentinel for "no box"; kept for parity
        scale = scale * padding
    return center, scale


def center_scale_to_box(
    center, scale, padding: float = BOX_PADDING, pixel_std: float = PIXEL_STD
) -> np.ndarray:
    """Inverse of `box_to_center_scale` for the aspect-corrected box: -> (x, y, w, h)."""
    w, h = (np.asarray(scale, dtype=np.float64) * pixel_std / padding).tolist()
    cx, cy = np.asarray(center, dtype=np.float64).tolist()
    return np.array([cx - w * 0.5, cy - h * 0.5, w, h], dtype=np.float64)


def _rotate(point: np.ndarray, rot_rad: float) -> np.ndarray:
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs], dtype=np.float64)


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def get_affine_transform(
    center, scale, rot: float, output_size, shift=(0.0, 0.0), inv: bool = False
) -> np.ndarray:
    """2x3 matrix mapping the (rotated) box of `center`/`scale` onto an `output_size` (w, h) image.

    Only scale[0] (the box width) fixes the zoom; the height follows from `output_size`, which is why
    the box is first grown to the model's aspect ratio. `inv=True` gives the crop -> image matrix.
    The three point pairs are float32, as in the official code, so crops agree to the grey level.
    """
    # scale and shift in float32, as the official records hold them: the matrices then agree to 1e-4.
    scale = np.asarray(scale, dtype=np.float32)
    if scale.ndim == 0:
        scale = np.array([scale, scale], dtype=np.float32)
    scale_px = scale * np.float32(PIXEL_STD)
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    rot_rad = np.pi * rot / 180.0
    src_dir = _rotate(np.array([0.0, scale_px[0] * -0.5]), rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5], dtype=np.float32)
    shift_px = scale_px * np.asarray(shift, dtype=np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = np.asarray(center) + shift_px
    src[1] = np.asarray(center) + src_dir + shift_px
    dst[0] = (dst_w * 0.5, dst_h * 0.5)
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_transform(points, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points (..., 2) -> (..., 2)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + np.asarray(matrix, dtype=np.float64)[:, 2]


def transform_preds(coords_hm, center, scale, output_size) -> np.ndarray:
    """Heatmap (or crop) coordinates (K, 2) -> image coordinates, for an `output_size` (w, h) grid."""
    trans = get_affine_transform(center, scale, 0, output_size, inv=True)
    return affine_transform(np.asarray(coords_hm)[..., :2], trans)


def transform_preds_batch(coords_hm, centers, scales, output_size) -> np.ndarray:
    """Vectorised `transform_preds` without rotation: coords (N, K, 2), centers/scales (N, 2).

    With rot = 0 the inverse matrix is a per-axis scale and offset, so no per-person cv2 call is needed:
    x_img = x_hm * s_w / W + (c_x - s_w / 2) with s_w = scale_w * 200, and the height uses s_w * H / W
    ... exactly as the 3-point construction, which only looks at the box width.
    """
    coords = np.asarray(coords_hm, dtype=np.float64)[..., :2]
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    scales = np.asarray(scales, dtype=np.float64).reshape(-1, 2)
    w, h = float(output_size[0]), float(output_size[1])
    s = scales[:, 0] * PIXEL_STD / w  # pixels of image per heatmap pixel (both axes)
    out = np.empty_like(coords)
    out[..., 0] = coords[..., 0] * s[:, None] + (centers[:, 0] - s * w * 0.5)[:, None]
    out[..., 1] = coords[..., 1] * s[:, None] + (centers[:, 1] - s * h * 0.5)[:, None]
    return out


def warp_crop(
    image: np.ndarray, center, scale, rot: float, output_size, flags: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Crop (and rotate) the box of `center`/`scale` out of `image` into an `output_size` (w, h) array."""
    trans = get_affine_transform(center, scale, rot, output_size)
    return cv2.warpAffine(image, trans, (int(output_size[0]), int(output_size[1])), flags=flags)


#: ImageNet channel statistics (RGB order) every hrpose model's input is normalised by
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_inputs(
    image_bgr: np.ndarray, centers: np.ndarray, scales: np.ndarray, input_size_wh: Sequence[int], color_rgb: bool
) -> np.ndarray:
    """Crops of (center, scale) boxes -> (N, 3, H, W) float32 model inputs, exactly as the test pipeline:
    warp (bilinear) in RGB when DATASET.COLOR_RGB else BGR, / 255, minus ImageNet mean, over its std.
    The one place crops are normalised for inference (the channel order is the caller's `color_rgb`)."""
    w, h = int(input_size_wh[0]), int(input_size_wh[1])
    source = np.ascontiguousarray(image_bgr[:, :, ::-1]) if color_rgb else image_bgr
    batch = np.empty((len(centers), h, w, 3), dtype=np.uint8)
    for i in range(len(centers)):
        batch[i] = warp_crop(source, centers[i], scales[i], 0, (w, h))
    mean, std = np.array(IMAGENET_MEAN, dtype=np.float32), np.array(IMAGENET_STD, dtype=np.float32)
    x = (batch.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
