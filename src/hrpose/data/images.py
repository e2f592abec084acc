"""Reading images from disk the way the official loader does (cv2, BGR, EXIF orientation ignored)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from hrpose.errors import UserError
from hrpose.image_limits import ImageTooLargeError, check_image_bytes, max_image_pixels

# The official loader reads with IMREAD_IGNORE_ORIENTATION: annotations refer to the stored pixel grid,
# not to the EXIF-rotated view, so rotating here would misplace every keypoint.
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class ImageReadError(UserError, OSError):
    """An image file is missing, empty, truncated or not an image."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


def read_image(path: str | os.PathLike[str], color_rgb: bool = False) -> np.ndarray:
    """Image file -> uint8 (H, W, 3), BGR like cv2 unless `color_rgb` (DATASET.COLOR_RGB).

    Raises `ImageReadError` naming the file for missing, zero-byte, undecodable or truncated files, broken
    symlinks, unreadable files and anything that is not a regular file (directories, FIFOs, devices).
    The file is read into memory first so that a truncated JPEG (which cv2 decodes partially, with only a
    warning on stderr) is caught: its last start-of-scan marker is never followed by an end-of-image marker.
    An image whose header declares more pixels than `hrpose.image_limits.max_image_pixels()` (env
    HRPOSE_MAX_IMAGE_PIXELS, default 100 million) is refused before decoding, and a file too large to hold
    an image within that limit is not read at all.
    """
    p = Path(path)
    try:
        # A FIFO or device in place of an image would block or never end: only regular files are read.
        if p.exists() and not p.is_file():
            raise ImageReadError(p, "not a regular file (a directory, FIFO or device)")
        size = p.stat().st_size
        cap = max_image_pixels()
        if size > 8 * cap + 64 * 2**20:
            raise ImageReadError(
                p, f"the file is {size / 2**20:.0f} MiB, larger than any image within the pixel limit "
                f"({cap / 1e6:g} million pixels, HRPOSE_MAX_IMAGE_PIXELS) can be; not read"
            )
        data = p.read_bytes()
    except ImageReadError:
        raise
    except FileNotFoundError:
        reason = "broken symbolic link" if p.is_symlink() else "file not found"
        raise ImageReadError(p, reason) from None
    except OSError as e:
        raise ImageReadError(p, f"{type(e).__name__}: {e}") from None
    if not data:
        raise ImageReadError(p, "zero-byte file")
    if data[:2] == b"\xff\xd8" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise ImageReadError(p, "truncated JPEG (no end-of-image marker)")
    try:
        check_image_bytes(data)
    except ImageTooLargeError as e:
        raise ImageReadError(p, str(e)) from None
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), READ_FLAGS)
    except cv2.error as e:  # OpenCV's own size limits and decoder failures
        lines = str(e).strip().splitlines()
        raise ImageReadError(p, f"OpenCV cannot decode it ({lines[-1] if lines else type(e).__name__})") from None
    if image is None or image.size == 0:
        raise ImageReadError(p, "not a decodable image")
    if color_rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image
