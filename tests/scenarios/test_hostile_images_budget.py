"""Hostile images, classes 1 and 3 of issue 22: bytes and decode time are bounded, not only pixels.

Class 1 (bytes): a small 16-bit RGBA PNG inside the pixel limit used to take ~4 GB while converted to
8-bit BGR. Now the header gives a byte budget for the whole decode (depth, channels, the decoder's working
memory, the conversion), over-budget images are refused with one message, the conversion runs in strips
(one decoded array + one result, never several full-size float copies), and a folder run under an
address-space cap reports such an image and goes on.

Class 3 (time): libjpeg redoes the whole image for every scan, so a JPEG repeating one scan thousands of
times kept it busy for minutes. The scans are counted from the markers before decoding.

Expected numbers here are computed from the image sizes in the test (bytes per pixel of the format),
never taken from hrpose.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA, ROOT, python_with_sigint
from hrpose.images import ImageReadError, decode_image, load_image, read_image, to_bgr8

SAMPLES = DATA / "samples" / "coco"
GOOD = SAMPLES / "000000000785.jpg"
MIB = 2**20


# ---------------------------------------------------------------------------------------------------------
# helpers: real files of each layout


def _chunk(name: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + name + payload + struct.pack(">I", zlib.crc32(name + payload))


def png_zeros(width: int, height: int, depth: int = 16, color: int = 6) -> bytes:
    """A valid PNG of width x height (16-bit RGBA by default) whose pixels are all 0, streamed through
    zlib row by row: ~1 MB on disk for 100 million pixels, never the raw image in memory."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    row = b"\x00" * (1 + width * channels * depth // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok, ext
    return buf.tobytes()


def gradient(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], axis=2).astype(np.uint8)


# (file bytes, bytes per pixel of the array OpenCV decodes it to (IMREAD_UNCHANGED), suffix)
def _layouts() -> dict[str, tuple[bytes, int, str]]:
    h, w = 300, 400
    g = gradient(h, w)
    g16 = g.astype(np.uint16) * 257
    return {
        "png16_rgba": (encode(".png", np.dstack([g16, np.full((h, w), 50000, np.uint16)])), 8, ".png"),
        "png16_rgb": (encode(".png", g16), 6, ".png"),
        "png16_gray": (encode(".png", g16[:, :, 0]), 2, ".png"),
        "tiff16_rgb": (encode(".tiff", g16), 6, ".tiff"),
        "tiff_float_rgb": (encode(".tiff", g.astype(np.float32) / 255), 12, ".tiff"),
        "pfm": (encode(".pfm", g.astype(np.float32) / 255), 12, ".pfm"),
        "hdr": (encode(".hdr", g.astype(np.float32) / 255), 12, ".hdr"),
        "ppm16": (encode(".ppm", g16), 6, ".ppm"),
    }


LAYOUTS = _layouts()


# ---------------------------------------------------------------------------------------------------------
# class 1: a byte budget per image, from the header


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_image_over_the_byte_budget_is_refused_before_decoding(layout, monkeypatch, tmp_path):
    data, bpp, ext = LAYOUTS[layout]
    h, w = 300, 400
    # the decoded array alone (h * w * bpp) does not fit: refused, naming the file, the need and the knob
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_BYTES", str(h * w * bpp))
    path = tmp_path / f"deep{ext}"
    path.write_bytes(data)
    with pytest.raises(ImageReadError) as e:
        load_image(path)
    message = str(e.value)
    assert message.startswith(f"{path}: decoding this 400 x 300") and "HRPOSE_MAX_IMAGE_BYTES" in message
    assert "\n" not in message
    with pytest.raises(ImageReadError, match=rf"deep\{ext}.*over the budget"):
        read_image(path)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_image_within_the_byte_budget_decodes(layout, monkeypatch, tmp_path):
    data, bpp, ext = LAYOUTS[layout]
    h, w = 300, 400
    # decoded array + 8-bit BGR result, twice over, + the 32 MiB conversion strip: enough
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_BYTES", str(2 * h * w * (bpp + 3) + 40 * MIB))
    path = tmp_path / f"deep{ext}"
    path.write_bytes(data)
    image = load_image(path)
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    if layout != "tiff_float_rgb":  # OpenCV's IMREAD_COLOR cannot read 32-bit float TIFF samples at all
        assert read_image(path).shape == (h, w, 3)


def test_default_budget_lets_a_100_megapixel_16bit_rgba_png_through_and_refuses_float64(monkeypatch):
    """The default budget is per allowed pixel: the deepest common layout (16-bit RGBA) at the full pixel
    limit fits; a 64-bit float TIFF of the same size (4x the bytes) does not."""
    from hrpose.image_limits import check_image_bytes, max_image_bytes

    monkeypatch.delenv("HRPOSE_MAX_IMAGE_BYTES", raising=False)
    monkeypatch.delenv("HRPOSE_MAX_IMAGE_PIXELS", raising=False)
    header = png_zeros(10000, 10000)[:64]  # the header is enough
    assert check_image_bytes(header, file_size=10**6) is not None
    tiff = bytearray(encode(".tiff", np.zeros((4, 4, 4), np.float64)))
    # patch width and height in IFD0 to 10000 x 10000 (LONG/SHORT values, in place)
    (ifd,) = struct.unpack_from("<I", tiff, 4)
    (n,) = struct.unpack_from("<H", tiff, ifd)
    for i in range(n):
        at = ifd + 2 + 12 * i
        tag, typ = struct.unpack_from("<HH", tiff, at)
        if tag in (256, 257):
            struct.pack_into("<H" if typ == 3 else "<I", tiff, at + 8, 10000)
    with pytest.raises(ValueError, match=r"10000 x 10000 TIFF.*over the budget"):
        check_image_bytes(bytes(tiff))
    assert max_image_bytes() < 10000 * 10000 * 4 * 8  # the float64 array alone is 3.2 GB


MEASURE = """
import resource, sys
from hrpose.images import {reader}
path = sys.argv[1]
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
image = {reader}(path)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, image.shape[0] * image.shape[1])
"""


def peak_growth(path: Path, reader: str = "load_image") -> tuple[int, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    r = subprocess.run([sys.executable, "-c", MEASURE.format(reader=reader), str(path)], capture_output=True,
                       text=True, timeout=300, env=env, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    grown, pixels = map(int, r.stdout.split())
    return grown, pixels


@pytest.mark.parametrize(("depth", "color", "bpp"), [(16, 6, 8), (16, 4, 8), (8, 6, 4), (16, 2, 6)])
def test_decoding_a_deep_png_holds_one_decoded_copy_and_one_result(tmp_path, depth, color, bpp):
    """Peak memory while decoding a 16-megapixel PNG: OpenCV 5's frame buffer + the decoded array (bpp bytes a
    pixel each; OpenCV turns gray+alpha into BGRA), then the array + the 8-bit
    BGR result (3) + a bounded strip, measured as the growth of the child's peak RSS. Converting the whole
    image at once (uint16 copies, float32 RGB and alpha planes) took ~4x that."""
    path = tmp_path / "deep.png"
    path.write_bytes(png_zeros(4000, 4000, depth, color))
    grown, pixels = peak_growth(path)
    assert pixels == 16_000_000
    allowed = pixels * 2 * bpp + 48 * MIB  # OpenCV's frame buffer + the array, then the array + the result
    print(f"\npeak growth {grown / MIB:.0f} MiB for {pixels / 1e6:.0f} Mpx, allowed {allowed / MIB:.0f} MiB")
    assert grown <= allowed, (grown, allowed)


def test_dataset_reader_peak_memory_is_bounded_too(tmp_path):
    path = tmp_path / "deep.png"
    path.write_bytes(png_zeros(4000, 4000))
    grown, pixels = peak_growth(path, "read_image")
    assert grown <= pixels * 2 * 8 + 48 * MIB, grown


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.integers(0, 65536, (37, 53, 4), dtype=np.uint16),
        lambda rng: rng.integers(0, 65536, (37, 53), dtype=np.uint16),
        lambda rng: rng.integers(0, 256, (37, 53, 4), dtype=np.uint8),
        lambda rng: rng.random((37, 53, 3), dtype=np.float32),
        lambda rng: (rng.random((37, 53, 4)) * 300).astype(np.float64),
    ],
    ids=["u16_rgba", "u16_gray", "u8_rgba", "f32_unit", "f64_255"],
)
def test_strip_conversion_gives_the_documented_values(make, monkeypatch):
    """to_bgr8 in strips (forced to 3 rows) equals the documented conversion applied to the whole array:
    16-bit -> x // 257, float -> x * 255 when max <= 1, RGBA composited over black."""
    import hrpose.images as images

    arr = make(np.random.default_rng(7))
    monkeypatch.setattr(images, "CONVERT_STRIP_BYTES", 3 * 16 * 53 * (arr.shape[2] if arr.ndim == 3 else 1))
    got = to_bgr8(arr)
    if arr.dtype == np.uint16:
        want = (arr // 257).astype(np.uint8)
    elif arr.dtype == np.uint8:
        want = arr
    else:
        f = arr.astype(np.float32)
        want = np.clip(f * (255.0 if f.max() <= 1 else 1.0) + 0.5, 0, 255).astype(np.uint8)
    if want.ndim == 2:
        want = np.repeat(want[:, :, None], 3, axis=2)
    if want.shape[2] == 4:
        a = want[:, :, 3:4].astype(np.float32) / 255.0
        want = np.clip(want[:, :, :3].astype(np.float32) * a + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(got, want)


def test_out_of_memory_while_decoding_is_the_images_error(monkeypatch):
    """A MemoryError inside the decoder (an address-space cap, a full machine) is one error naming the
    image, so a folder run goes on."""
    import hrpose.images as images

    def no_memory(*_a, **_k):
        raise MemoryError

    monkeypatch.setattr(images.cv2, "imdecode", no_memory)
    if images._SIMPLEJPEG is not None:  # the dataset reader's JPEG decoder (tests/data/test_decoder.py)
        monkeypatch.setattr(images._SIMPLEJPEG, "decode_jpeg", no_memory)
    with pytest.raises(ImageReadError, match=r"^photo\.jpg: cannot decode the image \(not enough memory"):
        decode_image(GOOD.read_bytes(), name="photo.jpg")
    with pytest.raises(ImageReadError, match=r"not enough memory"):
        read_image(GOOD)


def capped_predict(tiny_files, folder: Path, out: Path, cap: int, env_extra: dict | None = None,
                   timeout: int = 300) -> subprocess.CompletedProcess:  # fmt: skip
    cfg, weights, _ = tiny_files
    code = textwrap.dedent(f"""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
        from hrpose.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", **(env_extra or {})}
    argv = ["predict", "--cfg", str(cfg), "--weights", str(weights), "--device", "cpu", "--detector", "whole",
            "--out", str(out), str(folder)]  # fmt: skip
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)  # fmt: skip


def test_folder_run_under_a_3gib_cap_goes_through_a_deep_png(tmp_path, tiny_files):
    """A 0.5 MB 16-bit RGBA PNG of 64 megapixels between two photos, `hrpose predict` under RLIMIT_AS 3 GiB
    (torch itself reserves ~1.2 GB): no traceback, every image answered, results.json written. Converting
    the whole image at once needed ~2 GB more than the cap leaves."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "a.jpg")
    (folder / "b_deep.png").write_bytes(png_zeros(8000, 8000))
    assert (folder / "b_deep.png").stat().st_size < 2 * MIB
    shutil.copy(GOOD, folder / "c.jpg")
    r = capped_predict(tiny_files, folder, tmp_path / "o", 3 * 2**30)
    assert "Traceback" not in r.stdout + r.stderr and "MemoryError" not in r.stdout + r.stderr, r.stderr[-3000:]
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    results = json.loads((tmp_path / "o" / "results.json").read_text())
    assert len(results["images"] if isinstance(results, dict) and "images" in results else results) == 3


def test_folder_run_reports_an_over_budget_image_and_goes_on(tmp_path, tiny_files):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "a.jpg")
    (folder / "b_deep.png").write_bytes(png_zeros(2000, 2000))  # 2000 * 2000 * 8 = 32 MB decoded
    shutil.copy(GOOD, folder / "c.jpg")
    r = capped_predict(tiny_files, folder, tmp_path / "o", 3 * 2**30, {"HRPOSE_MAX_IMAGE_BYTES": str(24 * MIB)})
    both = r.stdout + r.stderr
    assert "Traceback" not in both
    lines = [ln for ln in both.splitlines() if "b_deep.png" in ln and ln.startswith("error:")]
    assert len(lines) == 1 and "over the budget" in lines[0] and "HRPOSE_MAX_IMAGE_BYTES" in lines[0], both[-2000:]
    assert (tmp_path / "o" / "results.json").is_file()
    assert r.returncode in (0, 1)


def test_bad_byte_budget_variable_is_one_error(monkeypatch):
    from hrpose.image_limits import max_image_bytes

    for bad in ("lots", "-5", "0", "nan", "1e400"):
        monkeypatch.setenv("HRPOSE_MAX_IMAGE_BYTES", bad)
        with pytest.raises(ValueError, match=r"HRPOSE_MAX_IMAGE_BYTES=.*expected a positive number of bytes"):
            max_image_bytes()


# ---------------------------------------------------------------------------------------------------------
# class 3: decode time, bounded by counting JPEG scans before decoding


def progressive(h: int = 600, w: int = 800) -> bytes:
    return encode(".jpg", gradient(h, w), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])


def repeat_last_scan(data: bytes, total_scans: int) -> bytes:
    """A progressive JPEG whose last scan (an AC refinement pass) is repeated until the file has
    `total_scans` scans: a valid stream for libjpeg (it warns, then decodes every scan)."""
    last = data.rfind(b"\xff\xda")
    end = data.rfind(b"\xff\xd9")
    scans = data.count(b"\xff\xda", data.find(b"\xff\xda"))
    return data[:end] + data[last:end] * (total_scans - scans) + data[end:]


def test_normal_progressive_jpeg_decodes():
    data = progressive()
    assert 6 <= data.count(b"\xff\xda") <= 12
    assert decode_image(data).shape == (600, 800, 3)


@pytest.mark.parametrize("scans", [40, 100])
def test_progressive_jpeg_with_up_to_100_scans_decodes(scans):
    bomb = repeat_last_scan(progressive(120, 160), scans)
    assert bomb.count(b"\xff\xda") == scans
    assert decode_image(bomb).shape == (120, 160, 3)


@pytest.mark.parametrize("reader", ["decode_image", "load_image", "read_image"])
def test_jpeg_repeating_one_scan_thousands_of_times_is_refused_at_once(tmp_path, reader):
    bomb = repeat_last_scan(progressive(48, 64), 20000)
    assert bomb.count(b"\xff\xda") == 20000 and len(bomb) < 16 * MIB
    path = tmp_path / "scans.jpg"
    path.write_bytes(bomb)
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match=r"scans\.jpg.*the JPEG has 20000 scans"):
        if reader == "decode_image":
            decode_image(bomb, name=str(path))
        else:
            {"load_image": load_image, "read_image": read_image}[reader](path)
    assert time.perf_counter() - t0 < 2.0


def test_scan_limit_shrinks_with_the_image_size():
    """Each scan is a pass over every pixel: 60 scans of a 100-megapixel image is as much work as 6000 of a
    1-megapixel one; the header check refuses scans x pixels over its bound (4e9)."""
    from hrpose.image_limits import check_image_bytes

    data = repeat_last_scan(progressive(120, 160), 60)
    big = bytearray(data)
    sof = big.find(b"\xff\xc2")
    struct.pack_into(">HH", big, sof + 5, 10000, 10000)  # height, width
    with pytest.raises(ValueError, match=r"60 scans"):
        check_image_bytes(bytes(big), strict=True)


def test_predict_folder_refuses_the_scan_bomb_and_goes_on(tmp_path, tiny_files):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "a.jpg")
    (folder / "b_scans.jpg").write_bytes(repeat_last_scan(progressive(48, 64), 20000))
    shutil.copy(GOOD, folder / "c.jpg")
    t0 = time.perf_counter()
    r = capped_predict(tiny_files, folder, tmp_path / "o", 3 * 2**30, timeout=120)
    wall = time.perf_counter() - t0
    both = r.stdout + r.stderr
    assert "Traceback" not in both and r.returncode == 0, both[-2000:]
    assert any(ln.startswith("error:") and "b_scans.jpg" in ln and "20000 scans" in ln for ln in both.splitlines())
    assert (tmp_path / "o" / "results.json").is_file()
    assert wall < 90, wall


def test_ctrl_c_during_a_long_decode_ends_cleanly_not_with_sigabrt(tmp_path, tiny_files):
    """SIGINT while predict decodes big images: the run stops with a message (exit 130 or the run's own
    code), never SIGABRT or a fatal error from a native decoder."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        (folder / f"big{i}.png").write_bytes(png_zeros(4000, 4000, 16, 6))
    cfg, weights, _ = tiny_files
    out_dir = tmp_path / "o"
    argv = python_with_sigint("-c", "import sys; from hrpose.cli import main; sys.exit(main(sys.argv[1:]))",
                              "predict", "--cfg", str(cfg), "--weights", str(weights), "--device", "cpu",
                              "--detector", "whole", "--no-draw", "--out", str(out_dir), str(folder))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 240
    # the first image's JSON appears: the run is past its imports and into the next decodes
    while not (out_dir.is_dir() and any(out_dir.glob("*.json"))) and proc.poll() is None:
        assert time.monotonic() < deadline, "predict never finished its first image"
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "the run ended before the signal: nothing was tested"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != -signal.SIGABRT and proc.returncode >= 0, (proc.returncode, err[-2000:])
    assert "Fatal Python error" not in err and "terminate called" not in err
    assert "Traceback" not in out + err, err[-2000:]


# ---------------------------------------------------------------------------------------------------------
# class 12, the image parts: numeric environment values that overflow, control characters in file names


@pytest.mark.parametrize("bad", ["1e400", "inf", "-inf", "nan", "1e30", "many"])
def test_pixel_limit_variable_that_overflows_is_one_error(monkeypatch, bad):
    from hrpose.image_limits import max_image_pixels

    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", bad)
    with pytest.raises(ValueError, match=r"HRPOSE_MAX_IMAGE_PIXELS=.*expected a positive number of pixels"):
        max_image_pixels()


def test_predict_with_an_overflowing_byte_budget_is_one_error_before_any_image(tmp_path, tiny_files):
    r = capped_predict(tiny_files, GOOD, tmp_path / "o", 3 * 2**30, {"HRPOSE_MAX_IMAGE_BYTES": "1e400"})
    both = r.stdout + r.stderr
    assert "Traceback" not in both and r.returncode == 2, both[-2000:]
    assert [ln for ln in both.splitlines() if ln.startswith("error:")] == [
        "error: HRPOSE_MAX_IMAGE_BYTES='1e400': expected a positive number of bytes, e.g. 1600000000"
    ]


@pytest.mark.parametrize("reader", ["load_image", "read_image"])
def test_control_characters_in_an_image_name_cannot_forge_an_error_line(tmp_path, reader):
    path = tmp_path / "a\nerror: everything is fine\x1b[2J.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # a broken PNG: its error names the file
    with pytest.raises(ImageReadError) as e:
        {"load_image": load_image, "read_image": read_image}[reader](path)
    message = str(e.value)
    assert "\n" not in message and "\x1b" not in message
    assert "a\\nerror: everything is fine\\x1b[2J.png" in message


# ---------------------------------------------------------------------------------------------------------
# serve: the same decode path in its worker; a decode bomb is refused before it can stall the others


def test_serve_refuses_scan_and_byte_bombs_fast_and_keeps_answering(model_dir):
    import concurrent.futures
    import json as _json

    from helpers import Server, request

    server = Server(model_dir, "--max-body-mb", "16", env={"HRPOSE_MAX_IMAGE_BYTES": str(64 * MIB)})
    try:
        scans = repeat_last_scan(progressive(48, 64), 20000)
        deep = png_zeros(3000, 3000)  # 16-bit RGBA: 72 MB decoded, over the 64 MiB budget
        photo = GOOD.read_bytes()

        def post(data: bytes, name: str) -> tuple[int, dict, float]:
            t0 = time.perf_counter()
            status, _, body = request(server, "POST", f"/v1/pose?filename={name}", data,
                                      {"Content-Type": "application/octet-stream"})  # fmt: skip
            return status, _json.loads(body), time.perf_counter() - t0

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bombs = [pool.submit(post, scans, "scans.jpg"), pool.submit(post, deep, "deep.png")]
            time.sleep(0.05)
            t0 = time.perf_counter()
            health = request(server, "GET", "/healthz", timeout=10)[0]
            health_s = time.perf_counter() - t0
            good = pool.submit(post, photo, "good.jpg")
            (s1, a1, t1), (s2, a2, t2), (s3, _, t3) = bombs[0].result(60), bombs[1].result(60), good.result(60)
        assert health == 200 and health_s < 2.0, health_s
        assert s1 in (413, 422) and "20000 scans" in a1["detail"] and t1 < 5, (s1, a1, t1)
        assert s2 in (413, 422) and "over the budget" in a2["detail"] and t2 < 5, (s2, a2, t2)
        assert s3 == 200 and t3 < 10, (s3, t3)
    finally:
        server.stop()
