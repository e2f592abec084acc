"""Hostile images, class 2 of issue 22: the header check agrees with the decoder behind it.

For any bytes cv2.imdecode decodes to W x H, hrpose's header check reported at least W x H or refused the
bytes. Proved two ways: a differential fuzz (tests/_image_fuzz.py, in a child process with OpenCV's own
pixel limit lowered so mutants that declare huge sizes stay cheap), and hand-made files for the ways a
parser stricter or looser than the decoder went wrong: lenient size lines (whitespace, zero padding,
repeated keys), container formats whose first matching byte string is not the real header, brands beyond
the major brand, junk that libjpeg skips. Also the check after decoding, in both readers.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from hrpose.image_limits import check_image_bytes, header_size, image_format
from hrpose.images import ImageReadError, decode_image, load_image, read_image

FORMATS = [".png", ".png16", ".jpg", ".pjpg", ".webp", ".bmp", ".tiff", ".ppm", ".pgm", ".pam", ".pfm", ".hdr",
           ".jp2", ".gif", ".avif", ".sr"]  # fmt: skip


def run_fuzz(fmt: str, examples: int, seed: int, timeout: int) -> tuple[str, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "tests" / "_image_fuzz.py"), fmt, str(examples), str(seed)],
                       capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    m = re.search(r"ok \S+: \d+ mutants, (\d+) decodes checked", r.stdout)
    assert m, r.stdout[-2000:]
    return r.stdout, int(m.group(1))


@pytest.mark.parametrize("fmt", FORMATS)
def test_differential_fuzz_header_check_never_under_reports_what_opencv_decodes(fmt):
    """200 derandomized mutants of a real image of each format (stable in CI)."""
    _, decodes = run_fuzz(fmt, 200, 0, timeout=240)
    if fmt != ".png":  # 8-bit PNG mutants nearly all break the zlib stream; .png16 covers PNG decodes
        assert decodes > 0, "the fuzz never reached a successful decode: it would prove nothing"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_differential_fuzz_long_random_run(fmt):
    """3000 random (not derandomized) mutants of each format."""
    run_fuzz(fmt, 3000, 1, timeout=1800)


# ---------------------------------------------------------------------------------------------------------
# hand-made files: each one a way the old parser and OpenCV disagreed


def enc(ext: str, img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def cv_size(data: bytes) -> tuple[int, int] | None:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return None if img is None else (img.shape[1], img.shape[0])


IMG = np.dstack([np.arange(40 * 30, dtype=np.uint8).reshape(30, 40)] * 3)


def test_pnm_zero_padded_size_is_read_as_opencv_reads_it(tmp_path):
    """OpenCV reads any number of digits; the old parser gave up past 12 and then decoded blind."""
    data = b"P5\n00000000000000040000 0000000000000000030000\n255\n" + bytes(64)
    assert header_size(data) == (40000, 30000)
    path = tmp_path / "padded.pgm"
    path.write_bytes(data)
    with pytest.raises(ImageReadError, match=r"padded\.pgm: the image declares 40000 x 30000"):
        load_image(path)


@pytest.mark.parametrize("head", [b"P6 \t\n# a comment\n 40\r\n\n30 \n255\n", b"P6\n0040 0030\n255\n",
                                  b"P6\n40\n#c\n#d\n30\n00255\n"])  # fmt: skip
def test_pnm_lenient_size_lines_agree_with_opencv(head):
    data = head + IMG.tobytes()
    assert cv_size(data) == (40, 30)
    assert header_size(data) == (40, 30)
    assert decode_image(data).shape == (30, 40, 3)


def test_pam_with_repeated_width_lines_reports_the_largest(tmp_path):
    good = enc(".pam", IMG)
    forged = good.replace(b"WIDTH 40\n", b"WIDTH 40\nWIDTH 20000\n", 1).replace(b"HEIGHT 30\n", b"HEIGHT 20000\n")
    w, h = header_size(forged)
    assert w * h >= 20000 * 20000
    path = tmp_path / "two_widths.pam"
    path.write_bytes(forged)
    with pytest.raises(ImageReadError, match=r"two_widths\.pam: the image declares"):
        load_image(path)


@pytest.mark.parametrize("line", [b"-Y  0030 +X 40", b"-Y 30  +X   040", b"-Y\t30 +X\t40"])
def test_radiance_size_line_with_any_spacing_agrees_with_opencv(line):
    data = enc(".hdr", IMG.astype(np.float32) / 255)
    data = re.sub(rb"\n\n-Y 30 \+X 40\n", b"\n\n" + line + b"\n", data, count=1)
    assert cv_size(data) == (40, 30)
    assert header_size(data) == (40, 30)


def test_radiance_padded_size_over_the_limit_is_refused():
    data = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y  00030000 +X  00030000\n" + bytes(64)
    with pytest.raises(ImageReadError, match=r"declares 30000 x 30000"):
        decode_image(data, name="padded.hdr")


def _jp2_box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def test_jpeg2000_size_comes_from_the_codestream_not_the_first_ihdr_bytes():
    img = np.zeros((96, 128, 3), np.uint8)
    data = enc(".jp2", img)
    # a decoy box with the bytes "ihdr" + a tiny size, before the real header boxes
    decoy = _jp2_box(b"xml ", b"ihdr" + struct.pack(">II", 1, 1) + b"padding")
    assert data[16:20] == b"ftyp"
    forged = data[:32] + decoy + data[32:]  # after the signature and ftyp boxes, which OpenJPEG wants first
    assert cv_size(forged) == (128, 96)
    assert header_size(forged) == (128, 96)
    assert decode_image(forged).shape == (96, 128, 3)


def test_avif_announced_by_a_compatible_brand_is_recognised():
    data = bytearray(enc(".avif", np.zeros((30, 40, 3), np.uint8)))
    assert data[8:12] == b"avif"
    data[8:12] = b"isom"  # major brand; "avif"/"mif1" stay among the compatible brands
    data = bytes(data)
    assert cv_size(data) == (40, 30)
    assert image_format(data) == "AVIF" and header_size(data) == (40, 30)


def test_jpeg_with_junk_before_the_frame_header_is_read_as_libjpeg_reads_it():
    data = enc(".jpg", IMG)
    sof = data.find(b"\xff\xc0")
    forged = data[:sof] + b"junk bytes libjpeg skips" + data[sof:]
    assert cv_size(forged) == (40, 30)
    assert header_size(forged) == (40, 30)


def test_tiff_with_a_repeated_width_tag_reports_the_largest():
    data = bytearray(enc(".tiff", IMG))
    (ifd,) = struct.unpack_from("<I", data, 4)
    (n,) = struct.unpack_from("<H", data, ifd)
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", data, at)
        if tag == 284:  # PlanarConfiguration (1 is the default) -> a second ImageWidth, LONG 50000
            struct.pack_into("<HHII", data, at, 256, 4, 1, 50000)
    w, _ = header_size(bytes(data))
    assert w == 50000


def test_webp_frame_larger_than_its_canvas_counts():
    data = enc(".webp", IMG)
    assert header_size(data) == (40, 30)
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (9).to_bytes(3, "little") + (9).to_bytes(3, "little")
    forged = data[:12] + vp8x + data[12:]
    forged = forged[:4] + struct.pack("<I", len(forged) - 8) + forged[8:]
    w, h = header_size(forged)
    assert (w, h) == (40, 30)  # the VP8L frame, not the 10 x 10 canvas


@pytest.mark.parametrize("reader", ["decode_image", "read_image"])
def test_bytes_of_no_known_format_are_not_decoded(tmp_path, reader):
    path = tmp_path / "mystery.img"
    path.write_bytes(b"\x00\x01\x02 not any image signature " * 50)
    with pytest.raises(ImageReadError, match=r"not an image format hrpose reads"):
        decode_image(path.read_bytes(), name=str(path)) if reader == "decode_image" else read_image(path)


@pytest.mark.parametrize("data", [b"P6\n40", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rXXXX" + bytes(40),
                                  b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n+Q 3 +X 4\n" + bytes(40)])  # fmt: skip
def test_known_format_with_an_unreadable_header_is_not_decoded(data):
    with pytest.raises(ImageReadError, match=r"header is damaged or not one hrpose can read"):
        decode_image(data, name="x")


# ---------------------------------------------------------------------------------------------------------
# the check after decoding, in every reader


@pytest.fixture
def under_reporting_header(monkeypatch):
    """A header parser that under-reports (as a parser bug would): 1 x 1, whatever the file says."""
    import hrpose.image_limits as limits
    from hrpose.image_limits import ImageHeader

    monkeypatch.setattr(limits, "header_info", lambda data: ImageHeader("JPEG", 1, 1, 3, 1))
    return limits


@pytest.mark.parametrize("reader", ["decode_image", "load_image", "read_image"])
def test_decoded_size_larger_than_the_header_declared_is_refused(tmp_path, under_reporting_header, reader):
    path = tmp_path / "liar.png"
    path.write_bytes(enc(".png", IMG))
    assert check_image_bytes(path.read_bytes(), strict=True).pixels == 1
    with pytest.raises(ImageReadError, match=r"liar\.png.*declares 1 x 1 but the image decodes to 40 x 30"):
        if reader == "decode_image":
            decode_image(path.read_bytes(), name=str(path))
        else:
            {"load_image": load_image, "read_image": read_image}[reader](path)


@pytest.mark.parametrize("reader", ["load_image", "read_image"])
def test_decoded_size_over_the_pixel_limit_is_refused_after_decoding(tmp_path, monkeypatch, reader):
    """With the header check blinded (returns nothing), the limit still holds after decoding; the dataset
    reader had no check after decoding at all."""
    import hrpose.images as images

    monkeypatch.setattr(images, "check_image_bytes", lambda *a, **k: None)
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", str(40 * 30 - 1))
    path = tmp_path / "big.png"
    path.write_bytes(enc(".png", IMG))
    with pytest.raises(ImageReadError, match=r"big\.png.*40 x 30 = 0 million pixels, over the limit"):
        {"load_image": load_image, "read_image": read_image}[reader](path)
