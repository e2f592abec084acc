"""COCO-format keypoint annotations and person-detection files -> `PersonRecord`s.

Layout (official): `ROOT/annotations/person_keypoints_<set>.json` (`image_info_<set>.json` for test sets),
images in `ROOT/images/<set>/<file_name>` (`images/test2017/` for test sets). File names come from the
image table's `file_name` and ids from its `id`; nothing is parsed out of file names.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrpose.data.records import AnnotationError, PersonRecord, empty_joints
from hrpose.geometry import box_to_center_scale

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageInfo:
    image_id: int
    file_name: str
    width: int
    height: int


@dataclass
class CocoKeypointFile:
    """The parts of a COCO keypoint file the loader uses, validated. `images` keeps the file's order."""

    path: Path
    images: dict[int, ImageInfo]
    annotations: list[dict[str, Any]]
    category: dict[str, Any]

    @property
    def category_id(self) -> int:
        return int(self.category["id"])

    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(str(n) for n in self.category.get("keypoints", ()))


@dataclass
class LoadStats:
    """Why annotations did not become records (logged once per file)."""

    annotations: int = 0
    records: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def coco_annotation_file(root: str | Path, image_set: str, *, allow_plain: bool = False) -> Path:
    """`ROOT/annotations/person_keypoints_<set>.json` (`image_info_` for test sets, as official).

    With `allow_plain` (custom datasets) `ROOT/annotations/<set>.json` is used when the first is absent.
    """
    ann_dir = Path(root) / "annotations"
    prefix = "image_info" if "test" in image_set else "person_keypoints"
    path = ann_dir / f"{prefix}_{image_set}.json"
    if allow_plain and not path.is_file() and (ann_dir / f"{image_set}.json").is_file():
        return ann_dir / f"{image_set}.json"
    return path


def coco_image_dir(root: str | Path, image_set: str) -> Path:
    """`ROOT/images/<set>`; every test set (test-dev2017, test2017) shares `images/test2017` as official."""
    return Path(root) / "images" / ("test2017" if "test" in image_set else image_set)


def _finite_numbers(value: Any, where: str, key: str, length: int | None) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise AnnotationError(f"{where}: field '{key}' must be a list of numbers, got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise AnnotationError(f"{where}: field '{key}' has {len(value)} values, expected {length}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: field '{key}' holds non-numeric values") from None
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{where}: field '{key}' holds NaN/inf or nested values")
    return arr


def _require(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key not in obj:
            raise AnnotationError(f"{where}: missing field '{key}'")


def read_coco_keypoint_file(path: str | Path, *, require_annotations: bool = True) -> CocoKeypointFile:
    """Load and validate a COCO keypoint json (the keypoint category is the first that lists `keypoints`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if key not in data:
            raise AnnotationError(f"{path}: missing top-level field '{key}'")

    cats = [c for c in data["categories"] if isinstance(c, dict)]
    kp_cats = [c for c in cats if c.get("keypoints")]
    if require_annotations and not kp_cats:
        raise AnnotationError(f"{path}: no category lists 'keypoints' (joint names); not a keypoint file")
    category = kp_cats[0] if kp_cats else (cats[0] if cats else {"id": 1, "name": "person"})
    if "id" not in category:
        raise AnnotationError(f"{path}: category {category.get('name', '?')!r}: missing field 'id'")
    if len(kp_cats) > 1:
        logger.warning("%s: %d keypoint categories; using %r (id %s)", path, len(kp_cats),
                       category.get("name"), category["id"])  # fmt: skip

    images: dict[int, ImageInfo] = {}
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}] (id {img.get('id', '?')})"
        _require(img, ("id", "file_name", "width", "height"), where)
        images[int(img["id"])] = ImageInfo(int(img["id"]), str(img["file_name"]), int(img["width"]),
                                           int(img["height"]))  # fmt: skip
    return CocoKeypointFile(path, images, list(data.get("annotations", [])), category)


def _clean_box(bbox: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """Official sanitising: clip the top-left to the image, the bottom-right to (W-1, H-1); -> x, y, w, h."""
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
    return x1, y1, x2 - x1, y2 - y1


def load_coco_records(
    kp_file: CocoKeypointFile, image_dir: str | Path, aspect_ratio: float, num_joints: int | None = None
) -> tuple[list[PersonRecord], LoadStats]:
    """Ground-truth records, as the official loader: per image in file order, per non-crowd annotation in
    file order; box sanitised; kept if `area > 0`, the clipped box is non-empty (x2 >= x1, y2 >= y1), the
    category is the keypoint category and at least one keypoint value is non-zero. Visibility 2 -> 1.

    Skips (counted in `LoadStats.skipped`, logged): crowd, zero_area, empty_box, other_category,
    no_keypoints, unknown_image (annotation of an image not in the image table), degenerate_box
    (a clipped box of zero width AND height: the official code would crop with a zero scale).
    Malformed annotations raise `AnnotationError` naming the file, the annotation id and the field.
    """
    path = kp_file.path
    k = num_joints if num_joints is not None else len(kp_file.joint_names)
    image_dir = Path(image_dir)
    stats = LoadStats()
    by_image: dict[int, list[dict[str, Any]]] = {}
    for i, ann in enumerate(kp_file.annotations):
        where = f"{path}: annotation id {ann.get('id', f'? (index {i})')}"
        _require(ann, ("image_id", "category_id"), where)
        stats.annotations += 1
        if int(ann["image_id"]) not in kp_file.images:
            stats.skipped["unknown_image"] += 1
            continue
        by_image.setdefault(int(ann["image_id"]), []).append(ann)

    records: list[PersonRecord] = []
    for image_id, info in kp_file.images.items():
        for ann in by_image.get(image_id, ()):
            where = f"{path}: annotation id {ann.get('id', '?')} (image id {image_id})"
            if ann.get("iscrowd", 0):
                stats.skipped["crowd"] += 1
                continue
            if int(ann["category_id"]) != kp_file.category_id:
                stats.skipped["other_category"] += 1
                continue
            _require(ann, ("bbox", "area", "keypoints"), where)
            bbox = _finite_numbers(ann["bbox"], where, "bbox", 4)
            area = ann["area"]
            if not isinstance(area, (int, float)) or not math.isfinite(area):
                raise AnnotationError(f"{where}: field 'area' must be a finite number, got {area!r}")
            keypoints = _finite_numbers(ann["keypoints"], where, "keypoints", 3 * k)
            box = _clean_box(bbox, info.width, info.height)
            if area <= 0:
                stats.skipped["zero_area"] += 1
                continue
            if box[2] < 0 or box[3] < 0:
                stats.skipped["empty_box"] += 1
                continue
            if keypoints.max() == 0:
                stats.skipped["no_keypoints"] += 1
                continue
            if box[2] <= 0 and box[3] <= 0:
                stats.skipped["degenerate_box"] += 1
                continue
            kp = keypoints.reshape(k, 3)
            joints = np.zeros((k, 3), dtype=np.float64)
            joints[:, :2] = kp[:, :2]
            vis = np.zeros((k, 3), dtype=np.float64)
            vis[:, :2] = np.minimum(kp[:, 2:3], 1.0)
            center, scale = box_to_center_scale(box, aspect_ratio)
            records.append(
                PersonRecord(
                    image=str(image_dir / info.file_name),
                    image_id=image_id,
                    center=center,
                    scale=scale,
                    joints_img=joints,
                    joints_vis=vis,
                    score=1.0,
                    area=float(area),
                    box=np.asarray(box, dtype=np.float64),
                    ann_id=int(ann.get("id", -1)),
                )
            )
    stats.records = len(records)
    if stats.skipped:
        logger.info("%s: %d records from %d annotations; skipped %s", path, stats.records, stats.annotations,
                    dict(stats.skipped))  # fmt: skip
    return records, stats


def load_detection_records(
    det_file: str | Path,
    images: dict[int, ImageInfo],
    image_dir: str | Path,
    aspect_ratio: float,
    num_joints: int,
    image_thre: float = 0.0,
    category_id: int = 1,
) -> list[PersonRecord]:
    """Records from a detection file (official format: a JSON list of {image_id, category_id, bbox, score}).

    As the official loader: only `category_id` (person, 1) boxes with `score >= image_thre` (TEST.IMAGE_THRE),
    unsanitised box -> center/scale, joints zero with visibility one. Image paths come from `images`
    (the annotation file's image table). An empty file is an error, not an empty dataset.
    """
    det_file = Path(det_file)
    if not det_file.is_file():
        raise FileNotFoundError(f"detection file not found: {det_file} (TEST.COCO_BBOX_FILE)")
    try:
        dets = json.loads(det_file.read_text())
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{det_file}: not valid JSON ({e})") from None
    if not dets:
        raise AnnotationError(f"{det_file}: detection file holds no boxes (TEST.COCO_BBOX_FILE)")
    if not isinstance(dets, list):
        raise AnnotationError(f"{det_file}: expected a JSON list of detections, got {type(dets).__name__}")
    image_dir = Path(image_dir)
    records = []
    for i, det in enumerate(dets):
        where = f"{det_file}: detection [{i}]"
        _require(det, ("image_id", "category_id", "bbox", "score"), where)
        if int(det["category_id"]) != category_id:
            continue
        score = float(det["score"])
        if score < image_thre:
            continue
        image_id = int(det["image_id"])
        info = images.get(image_id)
        if info is None:
            raise AnnotationError(f"{where}: image_id {image_id} is not in the annotation file's image table")
        box = _finite_numbers(det["bbox"], where, "bbox", 4)
        center, scale = box_to_center_scale(box, aspect_ratio)
        joints, vis = empty_joints(num_joints)
        records.append(
            PersonRecord(
                image=str(image_dir / info.file_name),
                image_id=image_id,
                center=center,
                scale=scale,
                joints_img=joints,
                joints_vis=vis,
                score=score,
                area=float(box[2] * box[3]),
                box=box,
            )
        )
    logger.info("%s: %d boxes, %d after category/score filter (IMAGE_THRE %s)", det_file, len(dets),
                len(records), image_thre)  # fmt: skip
    return records
