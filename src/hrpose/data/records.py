"""Person records: one annotated (or detected) person as plain data, and the filters on them.

A record holds everything the augmentation needs and nothing about how it was loaded. Frames:
`joints_img` are image pixels (0-based), `center`/`scale` are the official box encoding
(scale = box size / 200, already grown to the model aspect ratio and padded by 1.25).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from hrpose.geometry import PIXEL_STD

logger = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation file is malformed: the message names the file, the record and the field."""


@dataclass(eq=False)  # arrays inside: records compare by identity
class PersonRecord:
    """One person instance.

    image: path of the image file; image_id: the dataset's image id (COCO `id`, MPII: index in the file).
    center (2,), scale (2,): crop box in the official encoding. joints_img (K, 3): x, y, 0 in image pixels.
    joints_vis (K, 3): visibility 0/1 repeated in the first two columns, 0 in the third (official layout).
    score: detector score (1 for ground truth). area: annotated area (COCO `area`; box area otherwise).
    box (4,): the sanitised x, y, w, h box in image pixels (zeros where the dataset has none, e.g. MPII).
    """

    image: str
    image_id: int
    center: np.ndarray
    scale: np.ndarray
    joints_img: np.ndarray
    joints_vis: np.ndarray
    score: float = 1.0
    area: float = 0.0
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.float64))
    ann_id: int = -1

    @property
    def num_joints(self) -> int:
        return int(self.joints_img.shape[0])

    @property
    def num_visible(self) -> int:
        return int(np.count_nonzero(self.joints_vis[:, 0] > 0))


def empty_joints(num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, 3) zeros for joints and (K, 3) ones for visibility: the official detection-record placeholder."""
    return np.zeros((num_joints, 3), dtype=np.float64), np.ones((num_joints, 3), dtype=np.float64)


def select_data(records: list[PersonRecord]) -> list[PersonRecord]:
    """Official `DATASET.SELECT_DATA`: keep records whose visible joints sit near the box center.

    A Gaussian of the joint-centroid-to-box-center distance (sigma 0.2 * sqrt(box area)) must exceed a
    threshold that grows with the number of visible joints (0.45 for one joint, +0.0125 per extra joint),
    so boxes with many labelled joints far from their center are dropped. Records without visible joints go.
    """
    kept = []
    for rec in records:
        vis = rec.joints_vis[:, 0] > 0
        num_vis = int(vis.sum())
        if num_vis == 0:
            continue
        joints_center = rec.joints_img[vis, :2].mean(axis=0)
        area = float(rec.scale[0]) * float(rec.scale[1]) * PIXEL_STD**2
        dist2 = float(np.sum((joints_center - np.asarray(rec.center, dtype=np.float64)) ** 2))
        ks = np.exp(-dist2 / (0.2**2 * 2.0 * area))
        metric = (0.2 / 16) * num_vis + 0.45 - 0.2 / 16
        if ks > metric:
            kept.append(rec)
    logger.info("select_data: kept %d of %d records", len(kept), len(records))
    return kept
