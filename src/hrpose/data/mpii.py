"""MPII annotations (official json: image, center, scale, joints 1-based, joints_vis) -> `PersonRecord`s.

Layout: `ROOT/annot/<set>.json`, images in `ROOT/images/<image>`, the evaluation ground truth
`ROOT/annot/gt_<set>.mat` beside the json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from hrpose.data.records import AnnotationError, PersonRecord
from hrpose.geometry import BOX_PADDING, PIXEL_STD

# MPII's person scale is measured at the head; the official loader moves the center 15 scale units down
# (towards the hips) and pads the box by 1.25 so that the crop keeps the limbs.
CENTER_SHIFT_Y = 15.0


def mpii_annotation_file(root: str | Path, image_set: str) -> Path:
    return Path(root) / "annot" / f"{image_set}.json"


def mpii_gt_file(root: str | Path, image_set: str) -> Path:
    return Path(root) / "annot" / f"gt_{image_set}.mat"


def _numbers(value: Any, where: str, key: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: field '{key}' holds non-numeric or ragged values") from None
    if arr.shape != shape:
        raise AnnotationError(f"{where}: field '{key}' has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{where}: field '{key}' holds NaN/inf")
    return arr


def load_mpii_records(
    ann_file: str | Path, image_dir: str | Path, num_joints: int = 16, with_joints: bool = True
) -> list[PersonRecord]:
    """Official MPII records: center + (0, 15 * scale), scale * 1.25 (unless the center is the -1 sentinel),
    then center and joints from 1-based (Matlab) to 0-based pixels. `with_joints=False` for the test set,
    which has no joints (zeros, invisible)."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {ann_file}")
    try:
        anns = json.loads(ann_file.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{ann_file}: not valid JSON ({e})") from None
    if not isinstance(anns, list):
        raise AnnotationError(f"{ann_file}: expected a JSON list of person annotations")
    image_dir = Path(image_dir)
    records = []
    for i, a in enumerate(anns):
        where = f"{ann_file}: record {i} (image {a.get('image', '?') if isinstance(a, dict) else '?'})"
        required = ("image", "center", "scale") + (("joints", "joints_vis") if with_joints else ())
        for key in required:
            if not isinstance(a, dict) or key not in a:
                raise AnnotationError(f"{where}: missing field '{key}'")
        center = _numbers(a["center"], where, "center", (2,))
        s = a["scale"]
        if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise AnnotationError(f"{where}: field 'scale' must be a positive number, got {s!r}")
        scale = np.array([s, s], dtype=np.float64)
        if center[0] != -1:
            center[1] = center[1] + CENTER_SHIFT_Y * scale[1]
            scale = scale * BOX_PADDING
        center = center - 1
        joints = np.zeros((num_joints, 3), dtype=np.float64)
        vis = np.zeros((num_joints, 3), dtype=np.float64)
        if with_joints:
            joints[:, :2] = _numbers(a["joints"], where, "joints", (num_joints, 2)) - 1
            jv = _numbers(a["joints_vis"], where, "joints_vis", (num_joints,))
            vis[:, 0] = jv
            vis[:, 1] = jv
        records.append(
            PersonRecord(
                image=str(image_dir / str(a["image"])),
                image_id=i,
                center=center,
                scale=scale,
                joints_img=joints,
                joints_vis=vis,
                score=1.0,
                area=float(np.prod(scale * PIXEL_STD)),
            )
        )
    return records
