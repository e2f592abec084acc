"""Reading images: one error class, one truncated-file rule, one pixel limit, for training data and predict.

Two readers share everything below except how pixels are decoded:

* `read_image(path, color_rgb=False)` -- the dataset loader (training, `hrpose test`). It decodes like the
  official code (`cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION`, BGR): EXIF orientation is **ignored**,
  because the COCO/MPII annotations were made on the stored pixel grid.
* `load_image(path)` / `decode_image(data)` -- people's own images (`PoseEstimator`, `hrpose predict`,
  `hrpose serve`): any depth/channel layout -> 8-bit 3-channel BGR, EXIF orientation **honoured**.

Errors: every failure is an `ImageReadError` naming the file (missing, zero-byte, a directory/FIFO/device,
broken symlink, undecodable, truncated, over the pixel limit). It is a `UserError` (the CLI prints one
`error:` line) and both an `OSError` and a `ValueError`, so callers catching either keep working; `e.path`
is the file when known.

Truncated files (one rule for both readers, `jpeg_truncated`): libjpeg decodes a cut-off JPEG with a grey
bottom and only a warning on stderr, so a JPEG is refused unless its segment headers walk cleanly from the
start-of-image marker to the first start-of-scan marker and an end-of-image marker follows that
start-of-scan. So a file cut inside its headers or its image data, or cut and followed by garbage, is refused,
while an EXIF thumbnail's own end marker (inside APP1, before the scan) does not count and data appended after
a complete image (motion photos) does not hide a good one. Other formats (PNG, WebP, ...) are left to the
decoder, which refuses a truncated PNG itself.

Colour order: every array this module returns, and every array `PoseEstimator` accepts by default, is
**BGR** (OpenCV's order, what `cv2.imread` gives). Pass `rgb=True` where an array is RGB (PIL, imageio).

EXIF orientation in `load_image`: a phone photo stored sideways with an EXIF `Orientation` tag is turned
upright before anything else, so boxes and keypoints are in the coordinates of the upright image (the
image a photo viewer shows, and the image `hrpose predict` draws on). `load_image(path, exif=False)` gives
the stored pixels instead.

Normalisation (`to_bgr8`): grayscale -> 3 equal channels; 16-bit -> 8-bit by the top byte (x / 257);
float -> 8-bit assuming [0, 1] when the maximum is <= 1, else [0, 255]; RGBA/BGRA -> composited over
black by its alpha.

Size limit (`hrpose.image_limits`, both readers): a file whose header declares more than
`hrpose.image_limits.max_image_pixels()` pixels (100 million by default; env `HRPOSE_MAX_IMAGE_PIXELS`, or
`max_pixels=`) is refused with an `ImageReadError` before any pixel is decoded, a file larger than
`max_file_bytes()` is not read at all, and an array over the limit given to `to_bgr8` is refused.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np

from hrpose.errors import UserError
from hrpose.image_limits import HEADER_BYTES, ImageTooLargeError, check_image_bytes, header_size, max_image_pixels

#: Suffixes `hrpose predict` treats as images when it walks a folder (OpenCV can decode all of them).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pbm", ".pgm", ".ppm",
     ".pnm", ".sr", ".ras", ".jp2", ".exr", ".hdr", ".pic"}
)  # fmt: skip


#: How the dataset loader decodes (as the official code): BGR, EXIF orientation ignored -- annotations
#: refer to the stored pixel grid, not to the EXIF-rotated view, so rotating would misplace every keypoint.
READ_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class ImageReadError(UserError, OSError, ValueError):
    """An image that cannot be used: missing, empty, truncated, not a regular file, an unsupported format
    or layout, over the pixel limit. `str(e)` names the file; `path` is the file when known (else None)
    and `reason` the message without the file name (the whole message when not given apart)."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None, reason: str | None = None):
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = message if reason is None else reason


def to_bgr8(image: np.ndarray, *, rgb: bool = False, name: str = "image") -> np.ndarray:
    """Any (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16/float array -> (H, W, 3) uint8 BGR.

    `rgb=True` says the 3/4-channel input is in RGB(A) order. Always returns a C-contiguous array
    (a copy unless the input already was contiguous 8-bit BGR).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageReadError(
            f"{name}: expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageReadError(f"{name}: empty image of shape {arr.shape}")
    arr = _to_uint8(arr, name)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)
    if arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = np.clip(arr[:, :, :3].astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)
    if rgb:
        arr = arr[:, :, ::-1]
    return np.ascontiguousarray(arr)


def _to_uint8(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)  # 65535 -> 255, keeps the top byte's resolution
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(finite.max()) if finite.size else 0.0
        factor = 255.0 if peak <= 1.0 else 1.0
        return np.clip(finite * factor + 0.5, 0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min >= 0 and info.max > 255:  # uint32 etc.: scale the full range
            return (arr.astype(np.float64) * (255.0 / info.max) + 0.5).astype(np.uint8)
        return np.clip(arr, 0, 255).astype(np.uint8)
    raise ImageReadError(f"{name}: unsupported pixel type {arr.dtype} (expected uint8, uint16 or float)")


# ----------------------------------------------------------------------------------------------------
# EXIF orientation


def exif_orientation(data: bytes) -> int:
    """The EXIF Orientation tag (1..8) of a JPEG/TIFF/PNG/WebP byte string; 1 (upright) when absent."""
    tiff = _find_tiff_block(data)
    if tiff is None or len(tiff) < 8:
        return 1
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    try:
        (ifd0,) = struct.unpack_from(endian + "I", tiff, 4)
        (count,) = struct.unpack_from(endian + "H", tiff, ifd0)
        for i in range(count):
            tag, typ, _n = struct.unpack_from(endian + "HHI", tiff, ifd0 + 2 + 12 * i)
            if tag == 0x0112:  # Orientation, a SHORT stored in the value field
                (value,) = struct.unpack_from(endian + "H", tiff, ifd0 + 2 + 12 * i + 8)
                return int(value) if 1 <= value <= 8 else 1
    except struct.error:  # a truncated EXIF block: treat as upright
        return 1
    return 1


def _find_tiff_block(data: bytes) -> bytes | None:
    if data[:2] == b"\xff\xd8":  # JPEG: walk the markers up to the image data
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF:
            marker = data[pos + 1]
            if marker in (0xD9, 0xDA):  # end of image / start of scan
                return None
            (length,) = struct.unpack_from(">H", data, pos + 2)
            if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
                return data[pos + 10 : pos + 2 + length]
            pos += 2 + length
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*"):  # TIFF: the file is the block
        return data
    if data[:8] == b"\x89PNG\r\n\x1a\n":  # PNG eXIf chunk
        idx = data.find(b"eXIf")
        if idx >= 4:
            (length,) = struct.unpack_from(">I", data, idx - 4)
            return data[idx + 4 : idx + 4 + length]
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        idx = data.find(b"EXIF", 12)
        if idx >= 0:
            (length,) = struct.unpack_from("<I", data, idx + 4)
            block = data[idx + 8 : idx + 8 + length]
            return block[6:] if block.startswith(b"Exif\x00\x00") else block
    return None


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright for an EXIF orientation 1..8 (the inverse of how the camera stored them)."""
    ops = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # 180
        4: lambda a: a[::-1, :],  # mirrored vertically
        5: lambda a: np.swapaxes(a, 0, 1),  # transpose
        6: lambda a: np.rot90(a, k=-1),  # stored rotated 90 CCW -> rotate 90 CW
        7: lambda a: np.rot90(a, k=-1)[::-1, :],  # transverse
        8: lambda a: np.rot90(a, k=1),  # rotate 90 CCW
    }
    return np.ascontiguousarray(ops.get(orientation, ops[1])(image))


# ----------------------------------------------------------------------------------------------------
# files


def check_pixels(width: int, height: int, *, name: str = "image", max_pixels: int | None = None) -> None:
    """Raise ImageReadError when width x height is over the pixel limit (see the module docstring)."""
    cap = max_image_pixels(max_pixels)
    if int(width) * int(height) > cap:
        raise ImageReadError(
            f"{name}: {width} x {height} = {int(width) * int(height) / 1e6:.0f} million pixels, over the limit "
            f"of {cap / 1e6:g} million (set HRPOSE_MAX_IMAGE_PIXELS or --max-image-pixels to raise it, or "
            "downscale the image)"
        )


def decode_image(
    data: bytes, *, name: str = "image", exif: bool = True, max_pixels: int | None = None
) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 BGR, upright by EXIF unless `exif=False`. Raises ImageReadError,
    also (before decoding) for a header that declares more pixels than the limit."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: the file is empty (0 bytes)")
    if jpeg_truncated(data):
        # libjpeg decodes a truncated file with a grey bottom and only a warning on stderr: refuse it.
        raise ImageReadError(f"{name}: the JPEG file is truncated (no end-of-image marker after the image data)")
    try:
        check_image_bytes(data, limit=max_pixels)
    except ImageTooLargeError as e:
        raise ImageReadError(f"{name}: {e}") from None
    buf = np.frombuffer(data, dtype=np.uint8)
    # IMREAD_UNCHANGED keeps 16-bit and alpha (and never applies EXIF), so orientation is applied below.
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # OpenCV's own limits and decoder failures
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ImageReadError(f"{name}: OpenCV cannot decode the image ({msg})") from None
    if image is not None:
        check_pixels(image.shape[1], image.shape[0], name=name, max_pixels=max_pixels)
    if image is None:
        raise ImageReadError(
            f"{name}: cannot decode the image (unsupported format, or the file is corrupt or truncated)"
        )
    image = to_bgr8(image, name=name)
    if exif:
        image = apply_orientation(image, exif_orientation(data))
    return image


def max_file_bytes(max_pixels: int | None = None) -> int:
    """The largest image file read at all: 8 bytes per allowed pixel (16-bit RGBA, uncompressed) + 64 MiB."""
    return 8 * max_image_pixels(max_pixels) + 64 * 2**20


def load_image(path: str | os.PathLike[str], *, exif: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file -> (H, W, 3) uint8 BGR (see the module docstring). Raises ImageReadError naming it.

    The header is checked against the pixel limit (`max_pixels`, default `max_image_pixels()`) before
    the image is decoded; a file larger than `max_file_bytes()` is not even read."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(f"{p}: no such file", path=p)
    if p.is_dir():
        raise ImageReadError(f"{p}: is a folder, expected an image file", path=p)
    try:
        if not p.is_file():
            raise ImageReadError(f"{p}: not a regular file (a FIFO or device), expected an image file", path=p)
        size = p.stat().st_size
        if size > max_file_bytes(max_pixels):
            raise ImageReadError(
                f"{p}: the file is {size / 2**20:.0f} MiB, larger than any image within the pixel limit "
                f"({max_image_pixels(max_pixels) / 1e6:g} million pixels) can be; not read",
                path=p,
            )
        data = p.read_bytes()
    except ImageReadError:
        raise
    except OSError as e:
        raise ImageReadError(f"{p}: cannot read the file ({e})", path=p) from e
    try:
        return decode_image(data, name=str(p), exif=exif, max_pixels=max_pixels)
    except ImageReadError as e:
        e.path = str(p)
        raise


def _read_error(path: Path, reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image {path}: {reason}", path=path, reason=reason)


def read_image(
    path: str | os.PathLike[str], color_rgb: bool = False, *, reduce_flag: int | None = None
) -> np.ndarray:
    """Image file -> uint8 (H, W, 3) as the dataset loader reads it: BGR like cv2 unless `color_rgb`
    (DATASET.COLOR_RGB), EXIF orientation ignored (`READ_FLAGS`, as the official code).

    Raises `ImageReadError` ("cannot read image <path>: <reason>", `e.path`, `e.reason`) for missing,
    zero-byte, undecodable or truncated files (`jpeg_truncated`), broken symlinks, unreadable files and
    anything that is not a regular file (directories, FIFOs, devices). An image whose header declares more
    pixels than `hrpose.image_limits.max_image_pixels()` is refused before decoding, and a file larger than
    `max_file_bytes()` is not read at all. `reduce_flag` (cv2.IMREAD_REDUCED_COLOR_2/_4, the dataset's opt-in
    reduced decoding): JPEGs are decoded at that fraction of their size by libjpeg's DCT scaling.
    """
    p = Path(path)
    try:
        # A FIFO or device in place of an image would block or never end: only regular files are read.
        if p.exists() and not p.is_file():
            raise _read_error(p, "not a regular file (a directory, FIFO or device)")
        size = p.stat().st_size
        if size > max_file_bytes():
            raise _read_error(
                p, f"the file is {size / 2**20:.0f} MiB, larger than any image within the pixel limit "
                f"({max_image_pixels() / 1e6:g} million pixels, HRPOSE_MAX_IMAGE_PIXELS) can be; not read"
            )
        data = p.read_bytes()
    except ImageReadError:
        raise
    except FileNotFoundError:
        reason = "broken symbolic link" if p.is_symlink() else "file not found"
        raise _read_error(p, reason) from None
    except OSError as e:
        raise _read_error(p, f"{type(e).__name__}: {e}") from None
    if not data:
        raise _read_error(p, "zero-byte file")
    if jpeg_truncated(data):
        raise _read_error(p, "truncated JPEG (no end-of-image marker after the image data)")
    try:
        check_image_bytes(data)
    except ImageTooLargeError as e:
        raise _read_error(p, str(e)) from None
    try:
        flags = READ_FLAGS if reduce_flag is None else reduce_flag | cv2.IMREAD_IGNORE_ORIENTATION
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:  # OpenCV's own size limits and decoder failures
        lines = str(e).strip().splitlines()
        raise _read_error(p, f"OpenCV cannot decode it ({lines[-1] if lines else type(e).__name__})") from None
    if image is None or image.size == 0:
        raise _read_error(p, "not a decodable image")
    if color_rgb:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def image_size_from_header(path: str | os.PathLike[str]) -> tuple[int, int, bool]:
    """(width, height, is_jpeg) from the file's header, without decoding; OSError / ValueError when unreadable."""
    with open(path, "rb") as f:
        data = f.read(HEADER_BYTES)
    size = header_size(data)
    if size is None:
        raise ValueError(f"{path}: no image size in the file's header")
    return size[0], size[1], data[:2] == b"\xff\xd8"


def jpeg_truncated(data: bytes) -> bool:
    """True for a JPEG that is cut off: the rule both readers use (see the module docstring).

    The segment headers are walked from the start-of-image marker to the first start-of-scan marker; the
    JPEG is truncated when that walk runs off the data or meets something that is not a marker, or when no
    end-of-image marker follows the start of scan. Non-JPEG data (no SOI marker) is never "truncated".
    """
    if data[:2] != b"\xff\xd8":
        return False
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data must end with an EOI marker
            return b"\xff\xd9" not in data[pos:]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length field
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return True


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
