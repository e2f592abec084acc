"""Image sizes from file headers, so a huge image is refused before a single pixel is decoded.

A ~1 MB PNG may declare 30000 x 30000 pixels; decoding it allocates gigabytes (and warping crops out of
such an array crashed OpenCV). `header_size(data)` reads the width and height a file declares from its
first bytes, for every format OpenCV decodes (PNG, JPEG, WebP, BMP/DIB, TIFF/BigTIFF, PNM/PAM/PFM, Sun
raster, Radiance HDR, JPEG 2000, OpenEXR, GIF, AVIF), and `check_image_bytes` refuses files over the pixel
limit. The limit is `max_image_pixels()`: the environment variable `HRPOSE_MAX_IMAGE_PIXELS` when set,
else `DEFAULT_MAX_IMAGE_PIXELS` (100 million pixels, e.g. 12000 x 8000; OpenCV's own limit is 2^30).

A file whose header cannot be parsed (an unknown format, a truncated header) is not decoded at all when
it is larger than `UNKNOWN_FORMAT_MAX_BYTES`: nothing bounds what such a decoder would allocate.
"""

from __future__ import annotations

import os
import re
import struct

from hrpose.errors import UserError

#: default pixel limit (width x height) for images read from files; env HRPOSE_MAX_IMAGE_PIXELS overrides
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: files of formats whose header hrpose cannot read are decoded only up to this size
UNKNOWN_FORMAT_MAX_BYTES = 32 * 1024 * 1024
#: bytes read from a file before its header is parsed (a JPEG's EXIF/ICC segments can push SOF further)
HEADER_BYTES = 256 * 1024
ENV_VAR = "HRPOSE_MAX_IMAGE_PIXELS"


class ImageTooLargeError(UserError, ValueError):
    """A header that declares more pixels than the limit (the message names the size and the limit), or a
    bad HRPOSE_MAX_IMAGE_PIXELS value."""


def max_image_pixels(override: int | None = None) -> int:
    """The pixel limit: `override` when given, else $HRPOSE_MAX_IMAGE_PIXELS, else the default (100 Mpx)."""
    if override is not None:
        if int(override) < 1:
            raise ImageTooLargeError(f"the image pixel limit must be >= 1, got {override}")
        return int(override)
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # nan, or inf / 1e400 (no integer has that size)
        value = 0
    if value < 1:
        raise ImageTooLargeError(f"{ENV_VAR}={raw!r}: expected a positive number of pixels, e.g. 100000000")
    return value


class _Short(Exception):
    """The header needs more bytes than were given."""


def _u(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _Short
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        raise _Short
    w, h = _u(">II", data, 16)
    return w, h


def _jpeg(data: bytes) -> tuple[int, int]:
    pos = 2
    while True:
        # markers may be padded with extra 0xFF bytes
        while pos < len(data) and data[pos] == 0xFF and pos + 1 < len(data) and data[pos + 1] == 0xFF:
            pos += 1
        if pos + 4 > len(data):
            raise _Short
        if data[pos] != 0xFF:
            raise _Short
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            raise _Short
        (length,) = _u(">H", data, pos + 2)
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = _u(">HH", data, pos + 5)
            return w, h
        pos += 2 + length


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        b = data[24:30]
        if len(b) < 6:
            raise _Short
        return 1 + int.from_bytes(b[0:3], "little"), 1 + int.from_bytes(b[3:6], "little")
    if chunk == b"VP8L":
        if len(data) < 25:
            raise _Short
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        w, h = _u("<HH", data, 26)
        return w & 0x3FFF, h & 0x3FFF
    raise _Short


def _bmp(data: bytes) -> tuple[int, int]:
    (size,) = _u("<I", data, 14)
    if size == 12:  # OS/2 BITMAPCOREHEADER
        w, h = _u("<HH", data, 18)
        return w, h
    w, h = _u("<ii", data, 18)
    return abs(w), abs(h)


def _tiff(data: bytes) -> tuple[int, int]:
    e = "<" if data[:2] == b"II" else ">"
    (version,) = _u(e + "H", data, 2)
    big = version == 43
    if big:
        (ifd,) = _u(e + "Q", data, 8)
        (count,) = _u(e + "Q", data, ifd)
        first, step = ifd + 8, 20
    else:
        (ifd,) = _u(e + "I", data, 4)
        (count,) = _u(e + "H", data, ifd)
        first, step = ifd + 2, 12
    dims: dict[int, int] = {}
    for i in range(min(count, 4096)):
        at = first + i * step
        tag, typ = _u(e + "HH", data, at)
        if tag in (256, 257):
            value_at = at + (12 if big else 8)
            if typ == 3:  # SHORT
                (v,) = _u(e + "H", data, value_at)
            elif typ == 16:  # LONG8
                (v,) = _u(e + "Q", data, value_at)
            else:  # LONG
                (v,) = _u(e + "I", data, value_at)
            dims[tag] = int(v)
            if len(dims) == 2:
                return dims[256], dims[257]
    raise _Short


_PNM_TOKEN = re.compile(rb"(?:\s|#[^\n\r]*)*([^\s#]+)")


def _pnm(data: bytes) -> tuple[int, int]:
    magic = data[:2]
    if magic == b"P7":  # PAM: WIDTH / HEIGHT lines
        head = data[:4096]
        mw = re.search(rb"\bWIDTH\s+(\d+)", head)
        mh = re.search(rb"\bHEIGHT\s+(\d+)", head)
        if not (mw and mh):
            raise _Short
        return int(mw.group(1)), int(mh.group(1))
    pos, values = 2, list[int]()
    while len(values) < 2:
        m = _PNM_TOKEN.match(data, pos)
        if m is None or m.end() >= len(data):
            raise _Short
        token = m.group(1)
        if not token.isdigit() or len(token) > 12:
            raise _Short
        values.append(int(token))
        pos = m.end()
    return values[0], values[1]


def _sunras(data: bytes) -> tuple[int, int]:
    w, h = _u(">II", data, 4)
    return w, h


def _hdr(data: bytes) -> tuple[int, int]:
    # the resolution line follows the header's empty line: "-Y 480 +X 640" (or any axis order/sign)
    m = re.search(rb"\n\n([-+][XY]) (\d+) ([-+][XY]) (\d+)", data[:65536])
    if m is None:
        raise _Short
    first, second = int(m.group(2)), int(m.group(4))
    return (second, first) if m.group(1)[1:] == b"Y" else (first, second)


def _jp2(data: bytes) -> tuple[int, int]:
    if data[:4] == b"\xff\x4f\xff\x51":  # raw codestream: SIZ marker segment
        xs, ys, xo, yo = _u(">IIII", data, 8)
        return max(xs - xo, 0), max(ys - yo, 0)
    idx = data.find(b"ihdr", 0, 65536)
    if idx < 0:
        raise _Short
    h, w = _u(">II", data, idx + 4)
    return w, h


def _exr(data: bytes) -> tuple[int, int]:
    idx = data.find(b"dataWindow\x00box2i\x00", 0, 65536)
    if idx < 0:
        raise _Short
    at = idx + len(b"dataWindow\x00box2i\x00") + 4  # + the attribute's size field
    x0, y0, x1, y1 = _u("<iiii", data, at)
    return x1 - x0 + 1, y1 - y0 + 1


def _avif(data: bytes) -> tuple[int, int]:
    # ISO-BMFF: the largest 'ispe' (image spatial extents) property of the meta box
    sizes, at = [], data.find(b"ispe", 0, 1 << 20)
    while at >= 0:
        w, h = _u(">II", data, at + 8)
        sizes.append((w, h))
        at = data.find(b"ispe", at + 4, 1 << 20)
    if not sizes:
        raise _Short
    return max(sizes, key=lambda wh: wh[0] * wh[1])


def _gif(data: bytes) -> tuple[int, int]:
    w, h = _u("<HH", data, 6)
    return w, h


def _pfm(data: bytes) -> tuple[int, int]:
    return _pnm(b"P6" + data[2:])


_FORMATS: tuple[tuple[str, tuple[bytes, ...], object], ...] = (
    ("PNG", (b"\x89PNG\r\n\x1a\n",), _png),
    ("JPEG", (b"\xff\xd8",), _jpeg),
    ("BMP", (b"BM",), _bmp),
    ("TIFF", (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), _tiff),
    ("PNM", (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"P7"), _pnm),
    ("PFM", (b"PF", b"Pf"), _pfm),
    ("Sun raster", (b"\x59\xa6\x6a\x95",), _sunras),
    ("Radiance HDR", (b"#?RADIANCE", b"#?RGBE"), _hdr),
    ("JPEG 2000", (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"), _jp2),
    ("OpenEXR", (b"\x76\x2f\x31\x01",), _exr),
    ("GIF", (b"GIF87a", b"GIF89a"), _gif),
)


_AVIF_BRANDS = (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1")


def _is_avif(data: bytes) -> bool:
    return data[4:8] == b"ftyp" and data[8:12] in _AVIF_BRANDS


def image_format(data: bytes) -> str | None:
    """The format a file's first bytes announce (None for one hrpose does not know)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if _is_avif(data):
        return "AVIF"
    for name, magics, _ in _FORMATS:
        if data.startswith(magics):
            return name
    return None


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a file declares in its first bytes; None when the format is unknown or the header
    is cut short (then `data` may simply be too short a prefix: pass more bytes)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        parser: object = _webp
    elif _is_avif(data):
        parser = _avif
    else:
        parser = next((p for _, magics, p in _FORMATS if data.startswith(magics)), None)
    if parser is None:
        return None
    try:
        w, h = parser(data)  # type: ignore[operator]
    except (_Short, struct.error, ValueError, OverflowError):
        return None
    return int(w), int(h)


def check_image_bytes(data: bytes, *, limit: int | None = None, file_size: int | None = None) -> None:
    """Refuse (ImageTooLargeError) a file whose header declares more than the pixel limit, or a file of an
    unreadable header larger than UNKNOWN_FORMAT_MAX_BYTES. `data`: the file's first bytes (or all of it);
    `file_size`: the whole file's size when `data` is a prefix."""
    cap = max_image_pixels(limit)
    size = header_size(data)
    total = len(data) if file_size is None else file_size
    if size is None:
        if total > UNKNOWN_FORMAT_MAX_BYTES:
            kind = image_format(data)
            what = f"a {kind} file whose header hrpose cannot read" if kind else "a file of an unknown format"
            raise ImageTooLargeError(
                f"{what} of {total / 2**20:.0f} MiB: not decoded, since its size in pixels is unknown "
                f"(files of unreadable formats are decoded only up to {UNKNOWN_FORMAT_MAX_BYTES // 2**20} MiB); "
                "convert it to PNG or JPEG"
            )
        return
    w, h = size
    if w * h > cap:
        raise ImageTooLargeError(
            f"the image declares {w} x {h} = {w * h / 1e6:.0f} million pixels, over the limit of "
            f"{cap / 1e6:g} million (set {ENV_VAR} or --max-image-pixels to raise it, or downscale the image)"
        )


def read_header_bytes(f: object, file_size: int) -> bytes:
    """The first HEADER_BYTES of an open binary file (all of it when smaller)."""
    return f.read(min(HEADER_BYTES, file_size))  # type: ignore[attr-defined,no-any-return]
