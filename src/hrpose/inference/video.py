"""Video in and out through OpenCV: files and webcams as frame iterators, an mp4v writer.

Frames are (H, W, 3) uint8 BGR, as `cv2.VideoCapture` gives them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from hrpose.errors import UserError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"})
DEFAULT_FPS = 30.0


class VideoError(UserError, ValueError):
    """A video or camera that cannot be opened or written."""


def is_video_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


#: camera indexes hrpose accepts: 0 .. 9999 (OpenCV's backends use small integers)
MAX_WEBCAM_DIGITS = 4


def is_webcam(spec: str) -> bool:
    """A webcam index: ASCII digits only (str.isdigit() also takes '²' or '٣', which int() refuses or maps to
    another camera), at most MAX_WEBCAM_DIGITS of them."""
    return spec.isascii() and spec.isdigit() and len(spec) <= MAX_WEBCAM_DIGITS


class VideoReader:
    """Frames of a video file or a webcam (`source` an int or a digit string).

    `fps` falls back on 30 when the container does not say (webcams often don't); `frame_count` is
    the container's estimate, 0 when unknown (webcams).
    """

    def __init__(self, source: str | int | os.PathLike[str]) -> None:
        if isinstance(source, int) or (isinstance(source, str) and is_webcam(source)):
            self.name = f"webcam {int(source)}"
            self.cap = cv2.VideoCapture(int(source))
            self.is_camera = True
        else:
            p = Path(source)
            self.name = str(p)
            if not p.is_file():
                raise VideoError(f"{p}: no such video file")
            if p.stat().st_size == 0:
                raise VideoError(f"{p}: the video file is empty (0 bytes)")
            self.cap = cv2.VideoCapture(str(p))
            self.is_camera = False
        if not self.cap.isOpened():
            raise VideoError(f"{self.name}: cannot open (unsupported format, corrupt file or no such camera)")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = max(count, 0) if not self.is_camera else 0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self.cap.read()
            if not ok or frame is None:
                return
            yield frame

    def close(self) -> None:
        self.cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class VideoWriter:
    """An mp4v (MPEG-4 Part 2) writer of `size` (w, h) frames at `fps`; other sizes are resized to fit."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int], fourcc: str = "mp4v") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (int(size[0]), int(size[1]))
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*fourcc), float(fps), self.size)
        if not self.writer.isOpened():
            raise VideoError(f"{self.path}: cannot open a {fourcc} video writer at {fps} fps, size {self.size}")
        self.frames = 0

    def write(self, frame_bgr: np.ndarray) -> None:
        if (frame_bgr.shape[1], frame_bgr.shape[0]) != self.size:
            frame_bgr = cv2.resize(frame_bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(np.ascontiguousarray(frame_bgr))
        self.frames += 1

    def close(self) -> None:
        self.writer.release()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
