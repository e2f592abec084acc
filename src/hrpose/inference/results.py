"""The JSON of one image's people, shared by `hrpose predict` (files) and `hrpose serve` (HTTP answers).

Each person is a COCO keypoint result (`PersonPose.to_coco`: image_id, category_id 1, keypoints
[x1, y1, s1, ...] in image pixels, score, bbox xywh, box_score[, track_id]) plus `image_file` (the path,
or the uploaded file's name) and `joint_names` (the model's joints, in keypoint order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Any


def image_id(name: str) -> int | str:
    """COCO's image_id of a file name: its stem as an integer when it is all digits (000000000785.jpg ->
    785), else the stem."""
    stem = PurePath(name).stem
    return int(stem) if stem.isdigit() else stem


def people_json(poses: Sequence[Any], image_file: str, joint_names: Sequence[str]) -> list[dict[str, Any]]:
    """One image's people (`PersonPose` list) -> the per-person result dicts (see the module docstring)."""
    out = []
    names = list(joint_names)
    for pose in poses:
        r = pose.to_coco(image_id(image_file))
        r["image_file"] = image_file
        r["joint_names"] = names
        out.append(r)
    return out
