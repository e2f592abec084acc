"""COCO-format keypoint annotations and person-detection files -> `PersonRecord`s.

Layout (official): `ROOT/annotations/person_keypoints_<set>.json` (`image_info_<set>.json` for test sets),
images in `ROOT/images/<set>/<file_name>` (`images/test2017/` for test sets). File names come from the
image table's `file_name` and ids from its `id`; nothing is parsed out of file names.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrpose.data.records import (
    MAX_COORD,
    AnnotationError,
    PersonRecord,
    as_int,
    as_number,
    empty_joints,
    finite_array,
    read_json,
    safe_file_name,
)
from hrpose.errors import MissingFileError
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


def _require(obj: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise AnnotationError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise AnnotationError(f"{where}: missing field '{key}'")


def _list_field(data: dict[str, Any], key: str, path: Path) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        raise AnnotationError(f"{path}: top-level field '{key}' must be a list, got {type(value).__name__}")
    return value


def _check_category(cat: dict[str, Any], where: str) -> None:
    as_int(cat["id"], where, "id")
    names = cat.get("keypoints")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise AnnotationError(f"{where}: field 'keypoints' must be a list of joint-name strings")


def read_coco_keypoint_file(path: str | Path, *, require_annotations: bool = True) -> CocoKeypointFile:
    """Load and validate a COCO keypoint json (the keypoint category is the first that lists `keypoints`).

    Checked here: the top-level structure, the category's `id`/`keypoints`, and every image entry
    (`id` a unique integer, `file_name` a relative path inside the image folder, `width`/`height` integers
    in 1..MAX_COORD). Annotations are checked by `load_coco_records`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"COCO annotation file not found: {path}")
    data = read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if key not in data:
            raise AnnotationError(f"{path}: missing top-level field '{key}'")

    cats = [c for c in _list_field(data, "categories", path) if isinstance(c, dict)]
    kp_cats = [c for c in cats if c.get("keypoints")]
    if require_annotations and not kp_cats:
        raise AnnotationError(f"{path}: no category lists 'keypoints' (joint names); not a keypoint file")
    category = kp_cats[0] if kp_cats else (cats[0] if cats else {"id": 1, "name": "person"})
    where = f"{path}: category {_short_name(category)}"
    if "id" not in category:
        raise AnnotationError(f"{where}: missing field 'id'")
    _check_category(category, where)
    if len(kp_cats) > 1:
        logger.warning("%s: %d keypoint categories; using %r (id %s)", path, len(kp_cats),
                       category.get("name"), category["id"])  # fmt: skip

    images: dict[int, ImageInfo] = {}
    first_index: dict[int, int] = {}
    for i, img in enumerate(_list_field(data, "images", path)):
        where = f"{path}: images[{i}] (id {img.get('id', '?') if isinstance(img, dict) else '?'})"
        _require(img, ("id", "file_name", "width", "height"), where)
        image_id = as_int(img["id"], where, "id")
        if image_id in images:
            raise AnnotationError(f"{where}: field 'id' repeats the id of images[{first_index[image_id]}]")
        first_index[image_id] = i
        images[image_id] = ImageInfo(image_id, safe_file_name(img["file_name"], where, "file_name"),
                                     as_int(img["width"], where, "width", low=1, high=MAX_COORD),
                                     as_int(img["height"], where, "height", low=1, high=MAX_COORD))  # fmt: skip
    annotations = _list_field(data, "annotations", path) if "annotations" in data else []
    return CocoKeypointFile(path, images, list(annotations), category)


def _short_name(category: dict[str, Any]) -> str:
    return repr(category.get("name", "?"))[:40]


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
    Malformed annotations raise `AnnotationError` naming the file, the annotation id (or its index) and
    the field: a missing field, a wrong type (strings, booleans, null where numbers belong), NaN/inf, a
    coordinate beyond +-MAX_COORD, a `bbox`/`keypoints` list of the wrong length, a negative visibility.
    Crowd and other-category annotations are skipped before their box and keypoints are checked.
    """
    path = kp_file.path
    k = num_joints if num_joints is not None else len(kp_file.joint_names)
    image_dir = Path(image_dir)
    stats = LoadStats()
    by_image: dict[int, list[tuple[dict[str, Any], int, str]]] = {}
    for i, ann in enumerate(kp_file.annotations):
        where = f"{path}: annotations[{i}]"
        _require(ann, ("image_id", "category_id"), where)
        ann_id = as_int(ann["id"], where, "id") if "id" in ann else -1
        if "id" in ann:
            where = f"{path}: annotation id {ann_id}"
        image_id = as_int(ann["image_id"], where, "image_id")
        stats.annotations += 1
        if image_id not in kp_file.images:
            stats.skipped["unknown_image"] += 1
            continue
        by_image.setdefault(image_id, []).append((ann, ann_id, f"{where} (image id {image_id})"))

    records: list[PersonRecord] = []
    for image_id, info in kp_file.images.items():
        for ann, ann_id, where in by_image.get(image_id, ()):
            if as_int(ann.get("iscrowd", 0), where, "iscrowd", low=0, high=1):
                stats.skipped["crowd"] += 1
                continue
            if as_int(ann["category_id"], where, "category_id") != kp_file.category_id:
                stats.skipped["other_category"] += 1
                continue
            _require(ann, ("bbox", "area", "keypoints"), where)
            bbox = finite_array(ann["bbox"], where, "bbox", (4,))
            area = as_number(ann["area"], where, "area")
            keypoints = finite_array(ann["keypoints"], where, "keypoints", (3 * k,))
            kp = keypoints.reshape(k, 3)
            if np.any(kp[:, 2] < 0):
                raise AnnotationError(f"{where}: field 'keypoints' has a negative visibility flag "
                                      f"({kp[:, 2].min():g}); expected 0, 1 or 2")  # fmt: skip
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
                    ann_id=ann_id,
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
    unsanitised box -> center/scale, joints zero with visibility one; boxes of zero or negative width or
    height, or under one pixel both ways, are skipped (counted in a warning). Image paths come from `images`
    (the annotation file's image table). An empty file is an error, not an empty dataset.
    """
    det_file = Path(det_file)
    if not det_file.is_file():
        raise MissingFileError(
            f"detection file not found: {det_file} (TEST.COCO_BBOX_FILE); give the person boxes file or set "
            "TEST.USE_GT_BBOX True"
        )
    dets = read_json(det_file)
    if not dets:
        raise AnnotationError(f"{det_file}: detection file holds no boxes (TEST.COCO_BBOX_FILE)")
    if not isinstance(dets, list):
        raise AnnotationError(f"{det_file}: expected a JSON list of detections, got {type(dets).__name__}")
    image_dir = Path(image_dir)
    records = []
    empty = 0
    for i, det in enumerate(dets):
        where = f"{det_file}: detection [{i}]"
        _require(det, ("image_id", "category_id", "bbox", "score"), where)
        if as_int(det["category_id"], where, "category_id") != category_id:
            continue
        score = as_number(det["score"], where, "score")
        if score < image_thre:
            continue
        image_id = as_int(det["image_id"], where, "image_id")
        info = images.get(image_id)
        if info is None:
            raise AnnotationError(f"{where}: image_id {image_id} is not in the annotation file's image table")
        box = finite_array(det["bbox"], where, "bbox", (4,))
        if box[2] <= 0 or box[3] <= 0 or max(box[2], box[3]) < 1.0:  # no crop can be taken from it
            empty += 1
            continue
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
    if empty:
        logger.warning("%s: skipped %d boxes of zero, negative or sub-pixel width/height", det_file, empty)
    logger.info("%s: %d boxes, %d after category/score filter (IMAGE_THRE %s)", det_file, len(dets),
                len(records), image_thre)  # fmt: skip
    return records
