"""Strict checks of person boxes given from outside: detection files (`--detector file:`) and serve's `boxes`.

A box is a JSON list [x, y, w, h] or [x, y, w, h, score] of numbers (not strings, booleans or null). Each
value must stay finite once stored as float32 (1e308 is finite in Python but infinite in float32), coordinates
stay within +-MAX_COORD pixels, and a score is a probability in [0, 1]. Violations raise `BoxError`, whose
message says which value is wrong and what is expected; the caller prefixes the file/entry or field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["MAX_COORD", "BoxError", "check_box", "check_score", "is_number"]

#: far beyond any image hrpose reads (the pixel limit allows sides up to ~1e8 px)
MAX_COORD = 1e9
_F32_MAX = float(np.finfo(np.float32).max)


class BoxError(ValueError):
    """A box or score that is not what the box format allows."""

    def __init__(self, message: str, non_finite: bool = False):
        super().__init__(message)
        self.non_finite = non_finite


def is_number(v: Any) -> bool:
    """A JSON number: int or float, not bool (json gives bools for true/false), not a string."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def check_score(v: Any, name: str = "score") -> float:
    """A detection score: a number in [0, 1]. NaN/inf raise BoxError(non_finite=True)."""
    if not is_number(v):
        raise BoxError(f"{name} must be a number from 0 to 1, got {type(v).__name__} {_short(v)}")
    f = float(v)
    if not math.isfinite(f):
        raise BoxError(f"{name} is {f} (NaN/infinite), expected a number from 0 to 1", non_finite=True)
    if not 0.0 <= f <= 1.0:
        raise BoxError(f"{name} is {_short(v)}, expected a number from 0 to 1 (a detection score)")
    return f


def check_box(box: Any, name: str = "bbox", allow_score: bool = False) -> list[float]:
    """[x, y, w, h] (or with `allow_score`, [x, y, w, h, score]) of numbers that stay finite in float32.

    Returns floats. NaN, infinity or a value that overflows float32 raise BoxError(non_finite=True); other
    violations BoxError(non_finite=False)."""
    shape = "[x, y, w, h] or [x, y, w, h, score]" if allow_score else "[x, y, w, h]"
    if not isinstance(box, (list, tuple)):
        raise BoxError(f"{name} must be a list {shape} of numbers, got {type(box).__name__} {_short(box)}")
    if len(box) not in ((4, 5) if allow_score else (4,)):
        raise BoxError(f"{name} must be {shape}, got {len(box)} values: {_short(box)}")
    out: list[float] = []
    for j, v in enumerate(box[:4]):
        if not is_number(v):
            raise BoxError(f"{name}[{j}] must be a number, got {type(v).__name__} {_short(v)}")
        f = float(v)
        if not math.isfinite(f) or abs(f) > _F32_MAX:
            raise BoxError(f"{name}[{j}] is {_short(v)}: NaN, infinite or beyond float32", non_finite=True)
        if abs(f) > MAX_COORD:
            raise BoxError(f"{name}[{j}] is {_short(v)}: expected pixel coordinates within +-{MAX_COORD:g}")
        out.append(f)
    if len(box) == 5:
        out.append(check_score(box[4], f"{name}[4] (score)"))
    return out
