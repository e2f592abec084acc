"""MPII annotations (official json: image, center, scale, joints 1-based, joints_vis) -> `PersonRecord`s.

Layout: `ROOT/annot/<set>.json`, images in `ROOT/images/<image>`, the evaluation ground truth
`ROOT/annot/gt_<set>.mat` beside the json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrpose.data.records import (
    MAX_COORD,
    AnnotationError,
    PersonRecord,
    as_number,
    finite_array,
    read_json,
    safe_file_name,
    short_repr,
)
from hrpose.errors import MissingFileError
from hrpose.geometry import BOX_PADDING, PIXEL_STD

# MPII's person scale is measured at the head; the official loader moves the center 15 scale units down
# (towards the hips) and pads the box by 1.25 so that the crop keeps the limbs.
CENTER_SHIFT_Y = 15.0
# Smallest accepted MPII `scale` (person height / 200): 0.2 pixels. Smaller (or zero) scales would make the
# crop's affine transform blow up to inf.
MIN_SCALE = 1e-3


def mpii_annotation_file(root: str | Path, image_set: str) -> Path:
    return Path(root) / "annot" / f"{image_set}.json"


def mpii_gt_file(root: str | Path, image_set: str) -> Path:
    return Path(root) / "annot" / f"gt_{image_set}.mat"


def load_mpii_records(
    ann_file: str | Path, image_dir: str | Path, num_joints: int = 16, with_joints: bool = True
) -> list[PersonRecord]:
    """Official MPII records: center + (0, 15 * scale), scale * 1.25 (unless the center is the -1 sentinel),
    then center and joints from 1-based (Matlab) to 0-based pixels. `with_joints=False` for the test set,
    which has no joints (zeros, invisible).

    Malformed records raise `AnnotationError` naming the file, the record index (and image) and the field:
    missing fields, wrong types, NaN/inf, coordinates beyond +-MAX_COORD, `scale` outside
    [MIN_SCALE, MAX_COORD / 200], `joints`/`joints_vis` of the wrong shape, visibilities other than 0..1,
    and `image` names outside the image folder. Nothing is skipped silently."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise MissingFileError(f"MPII annotation file not found: {ann_file}")
    anns = read_json(ann_file)
    if not isinstance(anns, list):
        raise AnnotationError(f"{ann_file}: expected a JSON list of person annotations")
    image_dir = Path(image_dir)
    records = []
    required = ("image", "center", "scale") + (("joints", "joints_vis") if with_joints else ())
    for i, a in enumerate(anns):
        where = f"{ann_file}: record {i} (image {short_repr(a.get('image', '?')) if isinstance(a, dict) else '?'})"
        if not isinstance(a, dict):
            raise AnnotationError(f"{where}: expected a JSON object, got {type(a).__name__}")
        for key in required:
            if key not in a:
                raise AnnotationError(f"{where}: missing field '{key}'")
        image = safe_file_name(a["image"], where, "image")
        center = finite_array(a["center"], where, "center", (2,))
        s = as_number(a["scale"], where, "scale", low=MIN_SCALE, high=MAX_COORD / PIXEL_STD)
        scale = np.array([s, s], dtype=np.float64)
        if center[0] != -1:
            center[1] = center[1] + CENTER_SHIFT_Y * scale[1]
            scale = scale * BOX_PADDING
        center = center - 1
        joints = np.zeros((num_joints, 3), dtype=np.float64)
        vis = np.zeros((num_joints, 3), dtype=np.float64)
        if with_joints:
            joints[:, :2] = finite_array(a["joints"], where, "joints", (num_joints, 2)) - 1
            jv = finite_array(a["joints_vis"], where, "joints_vis", (num_joints,))
            if np.any((jv < 0) | (jv > 1)):
                raise AnnotationError(f"{where}: field 'joints_vis' holds {short_repr(a['joints_vis'])}; expected "
                                      "0 (not labelled) or 1 per joint")  # fmt: skip
            vis[:, 0] = jv
            vis[:, 1] = jv
        records.append(
            PersonRecord(
                image=str(image_dir / image),
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
