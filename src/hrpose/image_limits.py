"""Image sizes and decode costs from file headers, so a hostile image is refused before a pixel is decoded.

A ~1 MB PNG may declare 30000 x 30000 pixels; decoding it allocates gigabytes (and warping crops out of
such an array crashed OpenCV). `header_info(data)` reads from a file's bytes what decoding it will cost,
for every format OpenCV decodes (PNG, JPEG, WebP, BMP/DIB, TIFF/BigTIFF, PNM/PAM/PFM, Sun raster,
Radiance HDR, JPEG 2000, OpenEXR, GIF, AVIF): the width and height, the channels and bytes per sample of
the decoded array, the decoder's own working memory (a progressive JPEG's coefficients, OpenJPEG's
32-bit planes) and a JPEG's number of scans. `check_image_bytes` refuses, with one message:

* more pixels than `max_image_pixels()` (env `HRPOSE_MAX_IMAGE_PIXELS`, default 100 million);
* more bytes than `max_image_bytes()` to decode and convert it to 8-bit BGR (env `HRPOSE_MAX_IMAGE_BYTES`,
  default 16 bytes per allowed pixel: 1.6 GB for 100 million pixels, + 32 MiB), every copy counted (`peak_bytes`);
* a JPEG with more than `MAX_JPEG_SCANS` scans, or whose scans x pixels pass `MAX_JPEG_SCAN_PIXELS`:
  libjpeg redoes the whole image for each scan, so a 1 MB file repeating one scan 30,000 times kept it busy
  for minutes; real progressive JPEGs have about 10;
* a file of a known format whose header cannot be read, and a file of no format hrpose knows: nothing
  bounds what decoding those would cost (when only a prefix of a file is given, `file_size` larger than
  it, such files pass unless larger than `UNKNOWN_FORMAT_MAX_BYTES`, and the full bytes are checked
  again before decoding).

The parsers read sizes the way the decoders behind OpenCV do (lenient number syntax, every occurrence of a
size field, the codestream of a JPEG 2000 file rather than its first box, compatible brands of an ISO-BMFF
file) and, where they cannot, report the largest candidate or refuse; tests/scenarios/test_hostile_images_fuzz.py
checks that by differential fuzzing against cv2.imdecode.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from hrpose.errors import UserError

#: default pixel limit (width x height) for images read from files; env HRPOSE_MAX_IMAGE_PIXELS overrides
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: default byte budget per allowed pixel (env HRPOSE_MAX_IMAGE_BYTES overrides the whole budget)
DEFAULT_BYTES_PER_PIXEL = 16
#: files of formats whose header hrpose cannot read are decoded only up to this size
UNKNOWN_FORMAT_MAX_BYTES = 32 * 1024 * 1024
#: bytes read from a file before its header is parsed (a JPEG's EXIF/ICC segments can push SOF further)
HEADER_BYTES = 256 * 1024
#: a JPEG with more scans than this is refused (libjpeg's default progressive script has 10, mozjpeg's ~12)
MAX_JPEG_SCANS = 100
#: ... and one whose scans x pixels pass this (each scan is a pass over the whole image)
MAX_JPEG_SCAN_PIXELS = 4_000_000_000
ENV_VAR = "HRPOSE_MAX_IMAGE_PIXELS"
BYTES_ENV_VAR = "HRPOSE_MAX_IMAGE_BYTES"


class ImageTooLargeError(UserError, ValueError):
    """A header that declares more pixels than the limit (the message names the size and the limit), or a
    bad HRPOSE_MAX_IMAGE_PIXELS value."""


class ImageHeaderError(UserError, ValueError):
    """A file whose header does not let hrpose bound the cost of decoding it: an unknown format, a header
    that cannot be read, too many JPEG scans. The message says which, without the file name."""


def max_image_pixels(override: int | None = None) -> int:
    """The pixel limit: `override` when given, else $HRPOSE_MAX_IMAGE_PIXELS, else the default (100 Mpx)."""
    if override is not None:
        if int(override) < 1:
            raise ImageTooLargeError(f"the image pixel limit must be >= 1, got {override}")
        return int(override)
    value = _positive_env(ENV_VAR, "pixels, e.g. 100000000")
    return DEFAULT_MAX_IMAGE_PIXELS if value is None else value


def _positive_env(name: str, expected: str) -> int | None:
    """$name as a positive whole number (None when unset); nan, inf, 1e400 and the like are an error naming it."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        number = float(raw)
        value = int(number) if number == number and abs(number) < 1e18 else 0
    except ValueError:
        value = 0
    if value < 1:
        raise ImageTooLargeError(f"{name}={raw!r}: expected a positive number of {expected}")
    return value


def max_image_bytes(max_pixels: int | None = None) -> int:
    """The byte budget for decoding one image: $HRPOSE_MAX_IMAGE_BYTES when set, else 16 bytes per allowed
    pixel (`max_pixels`, default `max_image_pixels()`) plus the conversion's strip (`CONVERT_STRIP_BYTES`)."""
    value = _positive_env(BYTES_ENV_VAR, "bytes, e.g. 1600000000")
    if value is None:
        return DEFAULT_BYTES_PER_PIXEL * max_image_pixels(max_pixels) + CONVERT_STRIP_BYTES
    return value


@dataclass(frozen=True)
class ImageHeader:
    """What a header says decoding will cost. `channels` and `sample_bytes` bound the array that
    cv2.imdecode(IMREAD_UNCHANGED) returns; `decoder_bytes` the decoder's own working memory."""

    format: str
    width: int
    height: int
    channels: int = 4
    sample_bytes: int = 1
    decoder_bytes: int = 0
    scans: int = 1

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def decoded_bytes(self) -> int:
        return self.pixels * self.channels * self.sample_bytes

    @property
    def peak_bytes(self) -> int:
        """Bytes held at the worst moment of decoding and converting to 8-bit BGR: the decoder's working
        memory and the decoded array, then the decoded array and the (H, W, 3) uint8 result (converted in
        strips of rows, so the conversion's temporaries are bounded by `CONVERT_STRIP_BYTES`), or two
        results while EXIF orientation is applied."""
        out = 3 * self.pixels
        plain = self.channels == 3 and self.sample_bytes == 1  # 8-bit BGR: nothing to convert
        strip = 0 if plain else min(CONVERT_STRIP_BYTES, 16 * self.pixels * self.channels)
        return max(self.decoder_bytes + self.decoded_bytes, self.decoded_bytes + out, 2 * out) + strip


#: the conversion to 8-bit BGR works on strips of rows using at most about this many bytes of temporaries
CONVERT_STRIP_BYTES = 32 * 2**20


class _Short(Exception):
    """The header needs more bytes than were given, or is not one the decoder would accept."""


def _u(fmt: str, data: bytes, offset: int) -> tuple[int, ...]:
    if offset < 0 or offset + struct.calcsize(fmt) > len(data):
        raise _Short
    return struct.unpack_from(fmt, data, offset)


def _png(data: bytes) -> ImageHeader:
    if data[12:16] != b"IHDR":  # libpng requires IHDR first
        raise _Short
    w, h, depth, color = _u(">IIBB", data, 16)
    # gray -> 1 channel, RGB -> 3, palette / gray+alpha / RGBA / any tRNS -> up to 4 (OpenCV expands them)
    channels = {0: 1, 2: 3}.get(color, 4)
    if b"tRNS" in data[: 1 << 20]:
        channels = 4
    sample = 2 if depth > 8 else 1
    # OpenCV 5's PNG decoder (APNG-capable) fills a frame buffer of the full image beside the result Mat:
    # measured 1.49 GiB of peak RSS for a 100 Mpx 16-bit RGBA PNG, twice the 0.8 GB array
    return ImageHeader("PNG", w, h, channels, sample, w * h * channels * sample)


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})


def _jpeg(data: bytes) -> ImageHeader:
    """Walks markers as libjpeg does: bytes before a 0xFF are skipped (libjpeg warns and goes on), fill
    0xFF bytes are skipped, the first SOFn gives the size."""
    n, pos = len(data), 2
    while True:
        while pos < n and data[pos] != 0xFF:
            pos += 1
        while pos < n and data[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise _Short
        marker = data[pos]
        pos += 1
        if marker == 0x00 or marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length field
            continue
        if marker in (0xD9, 0xDA):  # end of image / a scan before any frame header
            raise _Short
        (length,) = _u(">H", data, pos)
        if marker in _SOF:
            precision, h, w, ncomp = _u(">BHHB", data, pos + 2)
            sos = data.find(b"\xff\xda", pos)
            scans = 0 if sos < 0 else data.count(b"\xff\xda", sos)
            channels = 1 if ncomp == 1 else max(3, ncomp)
            sample = 2 if precision > 8 else 1
            # a progressive (or multi-scan) JPEG keeps every DCT coefficient: 2 bytes per sample and component
            coeffs = 2 * max(ncomp, 1) * w * h if (marker in _PROGRESSIVE_SOF or scans > 1) else 0
            return ImageHeader("JPEG", w, h, channels, sample, coeffs, max(scans, 1))
        pos += length


def _webp(data: bytes) -> ImageHeader:
    """The largest of the VP8X canvas and every VP8/VP8L/ANMF frame, walking the RIFF chunks."""
    sizes: list[tuple[int, int]] = []

    def walk(start: int, end: int, depth: int) -> None:
        pos = start
        while pos + 8 <= end and len(sizes) < 10_000:
            fourcc = data[pos : pos + 4]
            (size,) = _u("<I", data, pos + 4)
            body = pos + 8
            if fourcc == b"VP8X":
                b = data[body + 4 : body + 10]
                if len(b) == 6:
                    sizes.append((1 + int.from_bytes(b[0:3], "little"), 1 + int.from_bytes(b[3:6], "little")))
            elif fourcc == b"VP8L":
                if body + 5 <= len(data):
                    bits = int.from_bytes(data[body + 1 : body + 5], "little")
                    sizes.append((1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)))
            elif fourcc == b"VP8 ":
                if body + 10 <= len(data):
                    w, h = struct.unpack_from("<HH", data, body + 6)
                    sizes.append((w & 0x3FFF, h & 0x3FFF))
            elif fourcc == b"ANMF" and depth == 0:
                if body + 12 <= len(data):
                    x, y = (
                        int.from_bytes(data[body : body + 3], "little"),
                        int.from_bytes(data[body + 3 : body + 6], "little"),
                    )
                    fw, fh = (
                        1 + int.from_bytes(data[body + 6 : body + 9], "little"),
                        1 + int.from_bytes(data[body + 9 : body + 12], "little"),
                    )
                    sizes.append((2 * x + fw, 2 * y + fh))
                walk(body + 16, min(body + size, end), 1)
            pos = body + size + (size & 1)

    walk(12, len(data), 0)
    if not sizes:
        raise _Short
    return ImageHeader("WebP", max(w for w, _ in sizes), max(h for _, h in sizes), 4, 1)


def _bmp(data: bytes) -> ImageHeader:
    (size,) = _u("<I", data, 14)
    if size == 12:  # OS/2 BITMAPCOREHEADER
        w, h = _u("<HH", data, 18)
        return ImageHeader("BMP", w, h, 3, 1)
    w, h = _u("<ii", data, 18)
    (bpp,) = _u("<H", data, 28)
    return ImageHeader("BMP", abs(w), abs(h), 4 if bpp == 32 else 3, 1)


def _tiff(data: bytes) -> ImageHeader:
    """IFD0 as libtiff reads it: every occurrence of a tag is considered (the largest size wins), values
    of any integer type."""
    e = "<" if data[:2] == b"II" else ">"
    (version,) = _u(e + "H", data, 2)
    big = version == 43
    if big:
        (ifd,) = _u(e + "Q", data, 8)
        (count,) = _u(e + "Q", data, ifd)
        first, step, inline = ifd + 8, 20, 8
    else:
        (ifd,) = _u(e + "I", data, 4)
        (count,) = _u(e + "H", data, ifd)
        first, step, inline = ifd + 2, 12, 4
    width = height = 0
    bits, spp = 1, 1
    found = set()
    type_size = {1: 1, 2: 1, 3: 2, 4: 4, 6: 1, 7: 1, 8: 2, 9: 4, 13: 4, 16: 8, 17: 8, 18: 8}
    for i in range(min(count, 65535)):
        at = first + i * step
        if big:
            tag, typ, n = _u(e + "HHQ", data, at)
        else:
            tag, typ, n = _u(e + "HHI", data, at)
        if tag not in (256, 257, 258, 277):
            continue
        value_at = at + (12 if big else 8)
        tsize = type_size.get(typ, 4)
        if n * tsize > inline:  # stored elsewhere: an offset
            (value_at,) = _u(e + ("Q" if big else "I"), data, value_at)
        fmt = {1: "B", 6: "B", 7: "B", 2: "B", 3: "H", 8: "H", 16: "Q", 17: "Q", 18: "Q"}.get(typ, "I")
        values = [_u(e + fmt, data, value_at + k * struct.calcsize(fmt))[0] for k in range(max(1, min(n, 16)))]
        v = max(values)
        found.add(tag)
        if tag == 256:
            width = max(width, v)
        elif tag == 257:
            height = max(height, v)
        elif tag == 258:
            bits = max(bits, v)
        else:
            spp = max(spp, v)
    if 256 not in found or 257 not in found:
        raise _Short
    sample = 1 if bits <= 8 else 2 if bits <= 16 else 4 if bits <= 32 else 8
    # libtiff's strip/tile buffer holds all samples; OpenCV's result at most 4 channels
    channels = max(1, min(spp, 4))
    return ImageHeader("TIFF", width, height, channels, sample, width * height * max(spp, 1) * sample)


def _numbers(data: bytes, pos: int, count: int) -> tuple[list[int], int]:
    """`count` decimal numbers as OpenCV's PNM reader reads them: whitespace and '#' comments skipped,
    then digits (any number of them, leading zeros included)."""
    values: list[int] = []
    n = len(data)
    while len(values) < count:
        while pos < n and (data[pos] in b" \t\n\v\f\r" or data[pos] == 0x23):
            if data[pos] == 0x23:
                while pos < n and data[pos] not in b"\n\r":
                    pos += 1
            pos += 1
        start = pos
        while pos < n and 0x30 <= data[pos] <= 0x39 and pos - start < 64:
            pos += 1
        if pos == start or pos >= n:
            raise _Short
        values.append(int(data[start:pos]))
    return values, pos


def _pnm(data: bytes) -> ImageHeader:
    kind = data[1:2]
    if kind == b"7":  # PAM: KEY value lines up to ENDHDR; every WIDTH/HEIGHT line counts (the largest wins)
        end = data.find(b"ENDHDR", 0, 1 << 20)
        head = data[: end if end >= 0 else 1 << 20]

        def key(name: bytes) -> list[int]:
            return [int(m.group(1)) for m in re.finditer(rb"(?i)" + name + rb"[ \t\v\f]*[+]?(\d{1,64})", head)]

        ws, hs, ds, ms = key(b"WIDTH"), key(b"HEIGHT"), key(b"DEPTH"), key(b"MAXVAL")
        if not (ws and hs):
            raise _Short
        depth = max(ds) if ds else 4
        return ImageHeader(
            "PNM", max(ws), max(hs), max(1, min(depth, 4)), 2 if (max(ms) if ms else 65535) > 255 else 1, 0
        )
    (w, h), pos = _numbers(data, 2, 2)
    if kind in (b"1", b"4"):
        return ImageHeader("PNM", w, h, 1, 1)
    (maxval,), _ = _numbers(data, pos, 1)
    channels = 1 if kind in (b"2", b"5") else 3
    return ImageHeader("PNM", w, h, channels, 2 if maxval > 255 else 1)


def _pfm(data: bytes) -> ImageHeader:
    (w, h), _ = _numbers(data, 2, 2)
    return ImageHeader("PFM", w, h, 3 if data[1:2] == b"F" else 1, 4, 4 * 3 * w * h)


def _sunras(data: bytes) -> ImageHeader:
    w, h = _u(">II", data, 4)
    return ImageHeader("Sun raster", w, h, 4, 1)


_HDR_SIZE = re.compile(
    rb"\n\n[ \t]*([-+])[ \t]*([XY])[ \t]*([+-]?\d{1,64})[ \t]*([-+])[ \t]*([XY])[ \t]*([+-]?\d{1,64})"
)


def _hdr(data: bytes) -> ImageHeader:
    # the resolution line follows the header's empty line: "-Y 480 +X 640" (OpenCV reads it with sscanf,
    # so any spacing and zero padding); any axis order is accepted
    m = _HDR_SIZE.search(data, 0, 1 << 20)
    if m is None:
        raise _Short
    first, second = abs(int(m.group(3))), abs(int(m.group(6)))
    w, h = (second, first) if m.group(2) == b"Y" else (first, second)
    return ImageHeader("Radiance HDR", w, h, 3, 4, 4 * w * h)


def _j2k_siz(data: bytes, at: int) -> ImageHeader:
    """A JPEG 2000 codestream's SIZ segment (the size OpenJPEG decodes to): OpenJPEG holds every
    component as 32-bit integers."""
    if data[at : at + 4] != b"\xff\x4f\xff\x51":
        raise _Short
    xs, ys, xo, yo = _u(">IIII", data, at + 8)
    (ncomp,) = _u(">H", data, at + 40)
    w, h = max(xs - xo, 0), max(ys - yo, 0)
    depth = 1
    for c in range(min(ncomp, 16384)):
        (ssiz,) = _u(">B", data, at + 42 + 3 * c)
        depth = max(depth, (ssiz & 0x7F) + 1)
    return ImageHeader("JPEG 2000", w, h, max(1, min(ncomp, 4)), 2 if depth > 8 else 1, 4 * max(ncomp, 1) * w * h)


def _jp2(data: bytes) -> ImageHeader:
    if data[:4] == b"\xff\x4f\xff\x51":  # raw codestream
        return _j2k_siz(data, 0)
    # JP2 file: walk the top-level boxes to the contiguous codestream box (not the first "ihdr" bytes)
    pos, n = 0, len(data)
    while pos + 8 <= n:
        length, box = _u(">I4s", data, pos)
        header = 8
        if length == 1:
            (length,) = _u(">Q", data, pos + 8)
            header = 16
        elif length == 0:
            length = n - pos
        if box == b"jp2c":
            return _j2k_siz(data, pos + header)
        if length < header:
            raise _Short
        pos += length
    raise _Short


def _exr(data: bytes) -> ImageHeader:
    sizes = []
    key = b"dataWindow\x00box2i\x00"
    at = data.find(key, 0, 1 << 20)
    while at >= 0:
        x0, y0, x1, y1 = _u("<iiii", data, at + len(key) + 4)
        sizes.append((abs(x1 - x0) + 1, abs(y1 - y0) + 1))
        at = data.find(key, at + 1, 1 << 20)
    if not sizes:
        raise _Short
    w, h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    return ImageHeader("OpenEXR", w, h, 4, 4, 8 * w * h)


def _avif(data: bytes) -> ImageHeader:
    # ISO-BMFF: the largest 'ispe' (image spatial extents) property anywhere in the file
    sizes, at = [], data.find(b"ispe")
    while at >= 0:
        w, h = _u(">II", data, at + 8)
        sizes.append((w, h))
        at = data.find(b"ispe", at + 4)
    if not sizes:
        raise _Short
    if data.find(b"grid", 0, 1 << 20) >= 0:  # a derived grid image: its size is not in any 'ispe'
        raise _Short
    w, h = max(s[0] for s in sizes), max(s[1] for s in sizes)
    # libavif's YUV planes (up to 16-bit, 4 planes) beside OpenCV's result
    return ImageHeader("AVIF", w, h, 4, 2, 8 * w * h)


def _gif(data: bytes) -> ImageHeader:
    w, h = _u("<HH", data, 6)
    # OpenCV's GIF decoder keeps a canvas and the frame beside its result
    return ImageHeader("GIF", w, h, 4, 1, 8 * w * h)


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
    """An ISO-BMFF file with an image brand as its major brand or any compatible brand (libavif checks both)."""
    if data[4:8] != b"ftyp":
        return False
    (size,) = struct.unpack_from(">I", data, 0) if len(data) >= 4 else (0,)
    brands = [data[8:12]] + [data[i : i + 4] for i in range(16, min(max(size, 16), 4096, len(data)), 4)]
    return any(b in _AVIF_BRANDS for b in brands)


def _parser(data: bytes) -> tuple[str, object] | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP", _webp
    if _is_avif(data):
        return "AVIF", _avif
    for name, magics, parser in _FORMATS:
        if data.startswith(magics):
            return name, parser
    return None


def image_format(data: bytes) -> str | None:
    """The format a file's first bytes announce (None for one hrpose does not know)."""
    found = _parser(data)
    return None if found is None else found[0]


def header_info(data: bytes) -> ImageHeader | None:
    """What decoding `data` will cost (see `ImageHeader`); None when the format is unknown or the header
    cannot be read (then `data` may simply be too short a prefix: pass more bytes)."""
    found = _parser(data)
    if found is None:
        return None
    try:
        info = found[1](data)  # type: ignore[operator]
    except (_Short, struct.error, ValueError, OverflowError, IndexError):
        return None
    return info  # type: ignore[no-any-return]


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a file declares in its first bytes; None when the format is unknown or the header
    is cut short (then `data` may simply be too short a prefix: pass more bytes)."""
    info = header_info(data)
    return None if info is None else (int(info.width), int(info.height))


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**29 else f"{n / 2**20:.0f} MiB"


def check_image_bytes(
    data: bytes,
    *,
    limit: int | None = None,
    file_size: int | None = None,
    max_bytes: int | None = None,
    strict: bool = False,
) -> ImageHeader | None:
    """Refuse a file whose header declares more than the pixel limit or a decode over the byte budget
    (ImageTooLargeError), or a file whose decode cost cannot be bounded: unknown format, unreadable header,
    too many JPEG scans (ImageHeaderError). `data`: the file's bytes, or its first bytes with `file_size`
    the whole file's size (then an unreadable header is refused only when the file is larger than
    UNKNOWN_FORMAT_MAX_BYTES; check the whole file again before decoding). ImageHeaderError only with
    `strict=True` (what the readers use right before decoding). Returns the header read (None if unread)."""
    cap = max_image_pixels(limit)
    info = header_info(data)
    total = len(data) if file_size is None else file_size
    if info is None:
        kind = image_format(data)
        if total > UNKNOWN_FORMAT_MAX_BYTES:
            what = f"a {kind} file whose header hrpose cannot read" if kind else "a file of an unknown format"
            raise ImageTooLargeError(
                f"{what} of {total / 2**20:.0f} MiB: not decoded, since its size in pixels is unknown "
                f"(files of unreadable formats are decoded only up to {UNKNOWN_FORMAT_MAX_BYTES // 2**20} "
                "MiB); convert it to PNG or JPEG"
            )
        if total > len(data) or not strict:  # only a prefix (the header may be further on), or lenient
            return None
        if kind:
            raise ImageHeaderError(
                f"the {kind} header is damaged or not one hrpose can read, so the image's size is unknown; "
                "not decoded (re-save it as PNG or JPEG)"
            )
        raise ImageHeaderError(
            "not an image format hrpose reads (PNG, JPEG, WebP, BMP, TIFF, PNM/PAM/PFM, Sun raster, Radiance HDR, "
            "JPEG 2000, GIF, AVIF); not decoded"
        )
    w, h = info.width, info.height
    if w * h > cap:
        raise ImageTooLargeError(
            f"the image declares {w} x {h} = {w * h / 1e6:.0f} million pixels, over the limit of "
            f"{cap / 1e6:g} million (set {ENV_VAR} or --max-image-pixels to raise it, or downscale the image)"
        )
    budget = max_image_bytes(limit) if max_bytes is None else max_bytes
    if info.peak_bytes > budget:
        raise ImageTooLargeError(
            f"decoding this {w} x {h} {info.format} ({info.channels} channels of {8 * info.sample_bytes} bits) "
            f"needs about {_gib(info.peak_bytes)}, over the budget of {_gib(budget)} per image (set "
            f"{BYTES_ENV_VAR} to raise it, or save the image as 8-bit PNG or JPEG)"
        )
    if (
        strict
        and info.format == "JPEG"
        and (info.scans > MAX_JPEG_SCANS or info.scans * info.pixels > MAX_JPEG_SCAN_PIXELS)
    ):
        raise ImageHeaderError(
            f"the JPEG has {info.scans} scans (real progressive JPEGs have about 10; at most "
            f"{min(MAX_JPEG_SCANS, max(1, MAX_JPEG_SCAN_PIXELS // max(info.pixels, 1)))} are decoded for "
            f"{w} x {h}): not decoded, since each scan is another pass over the image (re-save it as a "
            "baseline JPEG)"
        )
    return info


def read_header_bytes(f: object, file_size: int) -> bytes:
    """The first HEADER_BYTES of an open binary file (all of it when smaller)."""
    return f.read(min(HEADER_BYTES, file_size))  # type: ignore[attr-defined,no-any-return]
