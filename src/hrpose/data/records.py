"""Person records: one annotated (or detected) person as plain data, and the filters on them.

A record holds everything the augmentation needs and nothing about how it was loaded. Frames:
`joints_img` are image pixels (0-based), `center`/`scale` are the official box encoding
(scale = box size / 200, already grown to the model aspect ratio and padded by 1.25).
"""

from __future__ import annotations

import json
import logging
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hrpose.errors import UserError
from hrpose.geometry import PIXEL_STD

logger = logging.getLogger(__name__)

# Largest |pixel coordinate| (and image side) an annotation may hold. Real images are far smaller; the bound
# keeps every later step (float32 centers, the affine crop, int() in the target encoder) finite.
MAX_COORD = 1e6


class AnnotationError(UserError, ValueError):
    """An annotation file is malformed: the message names the file, the record and the field."""


# ---------------------------------------------------------------------------------------------------
# Field checks shared by the COCO, MPII and detection-file loaders. JSON gives int/float for numbers;
# strings, booleans, None and nested objects are wrong types, never silently converted.


def short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_json(path: Path) -> Any:
    """Parse a JSON file; malformed bytes or text become `AnnotationError` naming the file."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise AnnotationError(f"{path}: JSON nested too deeply") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot be read ({e.strerror or e})") from None


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def as_number(value: Any, where: str, key: str, *, low: float = -math.inf, high: float = math.inf) -> float:
    """A JSON number (not a bool or string), finite and in [low, high], as float; else `AnnotationError`."""
    if not _is_number(value):
        got = f"{type(value).__name__} {short_repr(value)}"
        raise AnnotationError(f"{where}: field '{key}' must be a number, got {got}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise AnnotationError(f"{where}: field '{key}' must be a finite number, got {short_repr(value)}")
    if not low <= number <= high:
        raise AnnotationError(f"{where}: field '{key}' is {number:g}, expected a value in [{low:g}, {high:g}]")
    return number


def as_int(value: Any, where: str, key: str, *, low: float = -math.inf, high: float = math.inf) -> int:
    """A JSON integer (an integral float such as 3.0 is accepted) in [low, high]; else `AnnotationError`."""
    if type(value) is float and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise AnnotationError(f"{where}: field '{key}' must be an integer, got {type(value).__name__} "
                              f"{short_repr(value)}")  # fmt: skip
    if not low <= value <= high:
        raise AnnotationError(f"{where}: field '{key}' is {value}, expected an integer in [{low:g}, {high:g}]")
    return value


def _leaves(value: Any, depth: int) -> Iterator[Any]:
    if depth == 0:
        yield value
        return
    for v in value:
        yield from _leaves(v, depth - 1)


def finite_array(value: Any, where: str, key: str, shape: tuple[int, ...], limit: float = MAX_COORD) -> np.ndarray:
    """A (nested) JSON list of numbers of exactly `shape`, finite, |v| <= limit -> float64 array.

    Errors name the field and what was expected: a non-list, the wrong length/shape, non-numbers, NaN/inf
    or a magnitude beyond `limit` (default `MAX_COORD` pixels).
    """
    if not isinstance(value, (list, tuple)):
        raise AnnotationError(f"{where}: field '{key}' must be a list of numbers, got {type(value).__name__}")
    try:
        arr = np.array(value)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        arr = None
    if len(shape) == 1 and len(value) != shape[0]:
        raise AnnotationError(f"{where}: field '{key}' has {len(value)} values, expected {shape[0]}")
    if arr is None or arr.shape != shape:
        got = "ragged nested lists" if arr is None else f"shape {arr.shape}"
        raise AnnotationError(f"{where}: field '{key}' has {got}, expected {shape}")
    if arr.dtype.kind not in "iuf" or not all(_is_number(v) for v in _leaves(value, len(shape))):
        bad = next((v for v in _leaves(value, len(shape)) if not _is_number(v)), None)
        if bad is None:  # numbers numpy could not hold (ints beyond float range)
            raise AnnotationError(f"{where}: field '{key}' holds NaN/inf or out-of-range values")
        raise AnnotationError(f"{where}: field '{key}' holds non-numeric values ({type(bad).__name__} "
                              f"{short_repr(bad)}); expected numbers")  # fmt: skip
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{where}: field '{key}' holds NaN/inf")
    if arr.size and float(np.abs(arr).max()) > limit:
        raise AnnotationError(f"{where}: field '{key}' holds {float(np.abs(arr).max()):g}, beyond the "
                              f"plausible range +-{limit:g}")  # fmt: skip
    return arr


_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_file_name(value: Any, where: str, key: str) -> str:
    """An image file name relative to the image folder that stays inside it; else `AnnotationError`.

    Refused: non-strings, empty names, NUL bytes, absolute paths (`/x.jpg`, `C:\\x.jpg`, `\\\\server\\x`)
    and names whose `..` parts climb out of the folder (`../x.jpg`, `a/../../x.jpg`). Backslashes count as
    separators for this check. The test is lexical: symlinks inside the image folder are the user's own.
    """
    if not isinstance(value, str):
        raise AnnotationError(f"{where}: field '{key}' must be a file name string, got {type(value).__name__} "
                              f"{short_repr(value)}")  # fmt: skip
    if not value or "\x00" in value:
        raise AnnotationError(f"{where}: field '{key}' is not a usable file name: {short_repr(value)}")
    unified = value.replace("\\", "/")
    norm = posixpath.normpath(unified)
    if unified.startswith("/") or _DRIVE.match(unified) or norm == "." or norm == ".." or norm.startswith("../"):
        raise AnnotationError(f"{where}: field '{key}' {short_repr(value)} points outside the image folder; "
                              "expected a path relative to it")  # fmt: skip
    return value


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
