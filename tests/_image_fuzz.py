"""Differential fuzz of hrpose's image header check against cv2.imdecode, run in its own process.

    python tests/_image_fuzz.py FORMAT EXAMPLES SEED

Mutates a real small image of FORMAT (bytes overwritten, inserted, deleted; digits and whitespace in text
headers) and asserts, for every mutant that cv2.imdecode decodes to W x H (IMREAD_UNCHANGED and the dataset
reader's IMREAD_COLOR), that hrpose's strict header check either refused the bytes or reported at least
W x H. Runs in a subprocess (tests/scenarios/test_hostile_images_fuzz.py) so OpenCV's own pixel limit can be set low
before cv2 is imported (a mutant declaring a huge size is then cheap) and an address-space cap holds.
Prints "ok N" or the failing example and exits 1.
"""

from __future__ import annotations

import os
import resource
import struct
import sys
import zlib

os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(1 << 22)
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from hrpose.image_limits import ImageHeaderError, ImageTooLargeError, check_image_bytes  # noqa: E402

cv2.setNumThreads(1)


def seed_image(fmt: str) -> bytes:
    """A real small image of `fmt`, written by OpenCV's own encoder (a picture with edges, not noise)."""
    h, w = (80, 96) if fmt == ".jp2" else (21, 34)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 7) % 256, (yy * 11) % 256, ((xx + yy) * 5) % 256], axis=2).astype(np.uint8)
    params: list[int] = []
    if fmt in (".pfm", ".hdr"):
        img = img.astype(np.float32) / 255.0
    if fmt == ".pgm":
        img = img[:, :, 0]
    if fmt == ".png16":
        img, fmt = np.dstack([img.astype(np.uint16) * 257, np.full((h, w), 40000, np.uint16)]), ".png"
    if fmt == ".pjpg":
        fmt, params = ".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    ok, buf = cv2.imencode(fmt, img, params)
    assert ok, fmt
    return buf.tobytes()


TEXT_BYTES = b" \t\n\r0123456789+-#XYPF"


@st.composite
def mutants(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "set", "insert", "delete", "text", "dup", "cut"]))
        near = draw(st.booleans())
        pos = draw(st.integers(0, max(0, (min(len(out), 160) if near else len(out)) - 1)))
        if kind == "set" and pos < len(out):
            out[pos] = draw(st.integers(0, 255))
        elif kind == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and out:
            del out[pos : pos + draw(st.integers(1, 8))]
        elif kind == "text":
            out[pos:pos] = bytes(draw(st.lists(st.sampled_from(TEXT_BYTES), min_size=1, max_size=6)))
        elif kind == "dup" and out:
            n = draw(st.integers(1, 64))
            out[pos:pos] = out[pos : pos + n]
        elif kind == "cut" and len(out) > 16:
            out = out[: max(16, pos)]
    if data.startswith(b"\x89PNG") and draw(st.integers(0, 9)) > 0:
        out = bytearray(png_fix_crcs(bytes(out)))  # else libpng refuses nearly every mutant for its CRC
    return bytes(out)


def png_fix_crcs(data: bytes) -> bytes:
    """Recompute every chunk's CRC (as far as the chunk lengths walk), so a mutant tests the parser, not
    libpng's checksum."""
    out, pos = bytearray(data), 8
    while pos + 12 <= len(out):
        (length,) = struct.unpack_from(">I", out, pos)
        end = pos + 8 + length
        if end + 4 > len(out):
            break
        out[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(out[pos + 4 : end])) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(out)


def decoded_size(data: bytes, flags: int) -> int | None:
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    if img is None or img.size == 0:
        return None
    return int(img.shape[0]) * int(img.shape[1])


def main() -> int:
    fmt, examples, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = seed_image(fmt)
    assert decoded_size(data, cv2.IMREAD_UNCHANGED), f"the seed {fmt} does not decode"
    seen = {"decoded": 0}

    @settings(max_examples=examples, deadline=None, derandomize=seed == 0, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(mutants(data))
    def prop(mutant: bytes) -> None:
        try:
            info = check_image_bytes(mutant, limit=2**62, max_bytes=2**62, strict=True)
        except (ImageTooLargeError, ImageHeaderError):
            return  # refused: never decoded by hrpose
        for flags in (cv2.IMREAD_UNCHANGED, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION):
            got = decoded_size(mutant, flags)
            if got is None:
                continue
            seen["decoded"] += 1
            assert info is not None, "accepted without a header, yet OpenCV decoded it"
            assert info.pixels >= got, f"header says {info.width} x {info.height}, OpenCV decoded {got} pixels"

    prop()
    print(f"ok {fmt}: {examples} mutants, {seen['decoded']} decodes checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
