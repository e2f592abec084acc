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
from hrpose.image_limits import (
    CONVERT_STRIP_BYTES,
    HEADER_BYTES,
    ImageHeaderError,
    ImageTooLargeError,
    check_image_bytes,
    header_size,
    max_image_pixels,
)

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
        # one line, always: a file name with a newline or escape sequence cannot forge an "error:" line
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.reason = message if reason is None else reason


def to_bgr8(image: np.ndarray, *, rgb: bool = False, name: str = "image") -> np.ndarray:
    """Any (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16/float array -> (H, W, 3) uint8 BGR.

    `rgb=True` says the 3/4-channel input is in RGB(A) order. Always returns a C-contiguous array
    (a copy unless the input already was contiguous 8-bit BGR). The conversion runs over strips of rows
    into one preallocated result, so besides the input and the result it holds only about
    `CONVERT_STRIP_BYTES` of temporaries (a 100 Mpx 16-bit RGBA image: 0.8 GB in, 0.3 GB out, not ~4 GB).
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
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and not rgb:
        return np.ascontiguousarray(arr)
    _check_dtype(arr, name)
    peak = _float_peak(arr) if np.issubdtype(arr.dtype, np.floating) else 0.0
    h, w = arr.shape[:2]
    out = np.empty((h, w, 3), dtype=np.uint8)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    # ~16 bytes of temporaries per input sample (float32 copies): rows per strip for CONVERT_STRIP_BYTES
    rows = max(1, CONVERT_STRIP_BYTES // max(1, 16 * w * channels))
    for top in range(0, h, rows):
        strip = _to_uint8(arr[top : top + rows], name, peak)
        if strip.ndim == 2:
            out[top : top + rows] = strip[:, :, None]
            continue
        if strip.shape[2] == 4:
            alpha = strip[:, :, 3:4].astype(np.float32) / 255.0
            strip = np.clip(strip[:, :, :3].astype(np.float32) * alpha + 0.5, 0, 255).astype(np.uint8)
        out[top : top + rows] = strip[:, :, ::-1] if rgb else strip[:, :, :3]
    return out


def _check_dtype(arr: np.ndarray, name: str) -> None:
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ImageReadError(f"{name}: unsupported pixel type {arr.dtype} (expected uint8, uint16 or float)")


def _float_peak(arr: np.ndarray) -> float:
    """The largest finite value of a float image (NaN and infinities count as 0), strip by strip."""
    peak = 0.0
    rows = max(1, CONVERT_STRIP_BYTES // max(1, 8 * arr[0].size))
    for top in range(0, arr.shape[0], rows):
        part = np.nan_to_num(arr[top : top + rows].astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if part.size:
            peak = max(peak, float(part.max()))
    return peak


def _to_uint8(arr: np.ndarray, name: str, peak: float = 0.0) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16:
        return (arr // 257).astype(np.uint8)  # 65535 -> 255, keeps the top byte's resolution
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
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


class _Refused(Exception):
    """Why `_decode` did not return an image: `kind` is "limit" (over the pixel limit or byte budget),
    "header" (the cost cannot be bounded), "opencv" (OpenCV raised), "memory" or "none" (not decodable)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _decode(data: bytes, flags: int, max_pixels: int | None, name: str) -> np.ndarray:
    """The one decode path of both readers: the header check (pixels, byte budget, JPEG scans, a known
    format with a readable header), cv2.imdecode, then the check after decoding (the decoded size within
    the limit and within what the header declared). Raises _Refused."""
    try:
        info = check_image_bytes(data, limit=max_pixels, strict=True)
    except ImageTooLargeError as e:
        raise _Refused("limit", str(e)) from None
    except ImageHeaderError as e:
        raise _Refused("header", str(e)) from None
    try:
        image = _decode_turbo(data, info) if flags == READ_FLAGS else None
        if image is None:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error as e:  # OpenCV's own limits and decoder failures (an allocation that failed included)
        lines = str(e).strip().splitlines()
        raise _Refused("opencv", lines[-1] if lines else type(e).__name__) from None
    except MemoryError:
        raise _Refused("memory", _memory_reason(info)) from None
    if image is None or image.size == 0:
        raise _Refused("none", "")
    h, w = image.shape[:2]
    cap = max_image_pixels(max_pixels)
    if w * h > cap:
        raise _Refused("limit", f"{w} x {h} = {w * h / 1e6:.0f} million pixels, over the limit of {cap / 1e6:g} "
                                "million (set HRPOSE_MAX_IMAGE_PIXELS or --max-image-pixels to raise it, or "
                                "downscale the image)")  # fmt: skip
    if info is not None and w * h > info.pixels:
        raise _Refused("header", f"the {info.format} header declares {info.width} x {info.height} but the image "
                                 f"decodes to {w} x {h}: a damaged or forged header; not used")  # fmt: skip
    return image


def _load_simplejpeg() -> object | None:
    try:
        import simplejpeg  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # optional: cv2.imdecode decodes everything
        return None
    return simplejpeg


_SIMPLEJPEG = _load_simplejpeg()


def _decode_turbo(data: bytes, info: object) -> np.ndarray | None:
    """The dataset reader's JPEG decode through simplejpeg (libjpeg-turbo's TurboJPEG API, ~15% less CPU
    than cv2.imdecode here), or None for cv2.imdecode to decode. Used only where its output is the same:
    8-bit JPEGs with 1 or 3 components (YCbCr/grey -> BGR; EXIF orientation ignored, as READ_FLAGS),
    decoded with the same accurate integer DCT and smooth upsampling as cv2 (`tests/data/test_decoder.py`
    compares every JPEG under ../shared/data pixel for pixel); CMYK, 12-bit and anything simplejpeg refuses
    go to cv2. Runs after the header checks of `_decode`, like cv2."""
    if _SIMPLEJPEG is None or getattr(info, "format", "") != "JPEG":
        return None
    if getattr(info, "channels", 0) not in (1, 3) or getattr(info, "sample_bytes", 0) != 1:
        return None
    try:
        image = _SIMPLEJPEG.decode_jpeg(data, colorspace="BGR", fastdct=False, fastupsample=False)  # type: ignore[attr-defined]
    except (ValueError, RuntimeError):  # a MemoryError is the image's error, as from cv2 (`_decode`)
        return None
    return image if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 else None


def _memory_reason(info: object) -> str:
    need = getattr(info, "peak_bytes", 0)
    extra = f" (about {need / 2**30:.1f} GiB)" if need else ""
    return (f"not enough memory to decode it{extra}; free memory, or lower HRPOSE_MAX_IMAGE_BYTES so such "
            "images are refused up front")  # fmt: skip


def decode_image(data: bytes, *, name: str = "image", exif: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Encoded bytes -> (H, W, 3) uint8 BGR, upright by EXIF unless `exif=False`. Raises ImageReadError,
    also (before decoding) for a header over the pixel limit or the byte budget, one whose cost cannot be
    bounded (unknown format, unreadable header, too many JPEG scans), and (after decoding) for a decoded
    size over the limit or larger than the header declared."""
    if len(data) == 0:
        raise ImageReadError(f"{name}: the file is empty (0 bytes)")
    if jpeg_truncated(data):
        # libjpeg decodes a truncated file with a grey bottom and only a warning on stderr: refuse it.
        raise ImageReadError(f"{name}: the JPEG file is truncated (no end-of-image marker after the image data)")
    # IMREAD_UNCHANGED keeps 16-bit and alpha (and never applies EXIF), so orientation is applied below.
    try:
        image = _decode(data, cv2.IMREAD_UNCHANGED, max_pixels, name)
    except _Refused as e:
        if e.kind == "limit":
            raise ImageReadError(f"{name}: {e.reason}") from None
        if e.kind == "opencv":
            raise ImageReadError(f"{name}: OpenCV cannot decode the image ({e.reason})") from None
        if e.kind == "none":
            raise ImageReadError(
                f"{name}: cannot decode the image (unsupported format, or the file is corrupt or truncated)"
            ) from None
        raise ImageReadError(f"{name}: cannot decode the image ({e.reason})") from None
    try:
        image = to_bgr8(image, name=name)  # the decoded array is freed here: one copy at a time
        if exif:
            image = apply_orientation(image, exif_orientation(data))
    except MemoryError:
        raise ImageReadError(f"{name}: cannot decode the image ({_memory_reason(None)})") from None
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
                p,
                f"the file is {size / 2**20:.0f} MiB, larger than any image within the pixel limit "
                f"({max_image_pixels() / 1e6:g} million pixels, HRPOSE_MAX_IMAGE_PIXELS) can be; not read",
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
        flags = READ_FLAGS if reduce_flag is None else reduce_flag | cv2.IMREAD_IGNORE_ORIENTATION
        image = _decode(data, flags, None, str(p))
    except _Refused as e:
        if e.kind == "opencv":
            raise _read_error(p, f"OpenCV cannot decode it ({e.reason})") from None
        if e.kind == "none":
            raise _read_error(p, "not a decodable image") from None
        if e.kind == "limit":
            raise _read_error(p, e.reason) from None
        raise _read_error(p, f"not a decodable image ({e.reason})") from None
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
            return data.rfind(b"\xff\xd9", pos) < 0  # from the end, where it is: no copy, no scan
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length field
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
    return True


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
