"""Hostile inputs on the inference/weights side: huge images, boxes with NaN/inf, broken detectors, NaN or
non-float weights, zip-bomb checkpoints, interrupts, and predict's own output folder.

Each case asserts the exit code (or the error class), that no traceback is printed, that the message names
the file / person / key, that nothing wrong is written (every JSON parses with a strict parser that refuses
NaN/Infinity) and that the good inputs beside the bad one are still processed. The memory cases run in a
child process under `RLIMIT_AS` (see `CAP`), after a control shows the cap really stops a big allocation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA, ROOT
from helpers import const_onnx_model, custom_dataset_cfg, write_custom_dataset
from hrpose.cli import main
from hrpose.config import load_config
from hrpose.data.dataset import build_dataset
from hrpose.errors import UserError
from hrpose.export import ExportError, export_onnx
from hrpose.image_limits import header_size
from hrpose.images import ImageReadError, load_image, read_image
from hrpose.inference import DetectionFileDetector, OnnxDetector, PoseEstimator, WholeImageDetector
from hrpose.inference.estimator import NonFiniteOutputError
from hrpose.models import build_model
from hrpose.models.weights import CheckpointError, load_state_dict_file, load_weights, save_weights

SAMPLES = DATA / "samples" / "coco"
GOOD = SAMPLES / "000000000785.jpg"
# address-space cap for the memory tests: importing torch + hrpose reserves ~1.3 GB, so 3 GiB leaves
# ~1.7 GB: far below what the hostile files would take (2.7 GB of pixels, 2.4 GB of crops, 3.5 GB inflated)
CAP = 3 * 2**30


# ---------------------------------------------------------------------------------------------------------
# helpers


def strict_loads(text: str):
    """json.loads that refuses the NaN / Infinity / -Infinity tokens Python's json accepts by default."""

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def run_cli(argv: list[str]) -> int:
    """`hrpose.cli.main` with the CLI's error path for UserError (exit 2) where cli.py does not have it yet."""
    try:
        return main(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _chunk(name: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + name + payload + struct.pack(">I", zlib.crc32(name + payload))


def deflate_zeros(total: int, piece: int = 16 * 2**20) -> bytes:
    """A raw deflate stream of `total` zero bytes, made of self-contained full-flush blocks (fast to build)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(piece)) + c.flush(zlib.Z_FULL_FLUSH)
    n, rest = divmod(total, piece)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15)
    return block * n + tail.compress(bytes(rest)) + tail.flush(zlib.Z_FINISH)


def huge_png(width: int, height: int, inflated: int = 2**30) -> bytes:
    """A valid-looking PNG (correct CRCs) declaring width x height RGB whose IDAT inflates to `inflated`
    zero bytes from about 1 MB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = b"\x78\xda" + deflate_zeros(inflated) + struct.pack(">I", 1)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encoded(ext: str, width: int = 53, height: int = 37) -> bytes:
    rng = np.random.default_rng(width * 1000 + height)
    img = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    if ext in (".hdr", ".pfm"):
        img = img.astype(np.float32) / 255
    if ext in (".pbm", ".pgm"):
        img = img[:, :, 0]
    ok, buf = cv2.imencode(ext, img)
    assert ok, ext
    return buf.tobytes()


def _patch_jpeg_sof(data: bytes, width: int, height: int) -> bytes:
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


def _patch_png_ihdr(data: bytes, width: int, height: int) -> bytes:
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:8] + _chunk(b"IHDR", ihdr) + data[33:]


def _patch_bmp(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _patch_gif(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _patch_webp(data: bytes, width: int, height: int) -> bytes:  # VP8L (lossless): 14-bit sizes minus one
    assert data[12:16] == b"VP8L"
    bits = int.from_bytes(data[21:25], "little")
    bits = (bits & ~0xFFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
    return data[:21] + bits.to_bytes(4, "little") + data[25:]


def _patch_ppm(data: bytes, width: int, height: int) -> bytes:
    magic, w, h, rest = data.split(maxsplit=3)
    return magic + f"\n{width} {height}\n".encode() + rest


# format -> (extension, header patch); each patched file declares 30000 x 16000 (or 16383 x 16383 for WebP)
HUGE = {
    "png": (".png", _patch_png_ihdr),
    "jpeg": (".jpg", _patch_jpeg_sof),
    "bmp": (".bmp", _patch_bmp),
    "gif": (".gif", _patch_gif),
    "webp": (".webp", _patch_webp),
    "ppm": (".ppm", _patch_ppm),
}


def predict(tiny_files, *args) -> int:
    cfg, weights, _ = tiny_files
    return run_cli(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", *map(str, args)])


def no_traceback(captured) -> None:
    assert "Traceback" not in captured.out + captured.err


# ---------------------------------------------------------------------------------------------------------
# image headers: sizes read from the first bytes agree with the encoder, for every format OpenCV writes


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ext=st.sampled_from([".png", ".jpg", ".webp", ".bmp", ".tiff", ".pgm", ".ppm", ".pam", ".sr", ".hdr",
                         ".jp2", ".pfm", ".gif", ".avif"]),  # fmt: skip
    width=st.integers(1, 300),
    height=st.integers(1, 300),
)
def test_header_size_agrees_with_the_encoder(ext, width, height):
    if ext == ".jp2":  # OpenJPEG needs a few resolution levels' worth of pixels
        width, height = width + 64, height + 64
    data = encoded(ext, width, height)
    assert header_size(data) == (width, height)
    if ext in (".png", ".bmp", ".gif", ".pgm", ".ppm", ".pam", ".sr", ".webp"):  # the size is in the first bytes
        assert header_size(data[:64]) == (width, height)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 2**31 - 1), height=st.integers(1, 2**31 - 1))
def test_any_declared_png_size_is_refused_or_read_never_a_crash(width, height):
    """A real PNG whose IHDR (valid CRC) declares random sizes: over the limit it is refused from the header
    naming the size; under it, decoding either works or fails with ImageReadError. Never a crash."""
    data = _patch_png_ihdr(encoded(".png", 20, 10), width, height)
    limit = 1_000_000
    try:
        from hrpose.images import decode_image

        image = decode_image(data, name="random.png", max_pixels=limit)
    except ImageReadError as e:
        assert str(e).startswith("random.png: ")
        if width * height > limit:
            assert f"declares {width} x {height}" in str(e)
        return
    assert width * height <= limit and image.shape[:2] == (height, width)


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_huge_declared_image_is_refused_from_its_header(tmp_path, kind):
    ext, patch = HUGE[kind]
    w, h = (16383, 16383) if kind == "webp" else (30000, 16000)
    path = tmp_path / f"huge{ext}"
    path.write_bytes(patch(encoded(ext), w, h))
    assert header_size(path.read_bytes()) == (w, h)
    with pytest.raises(ImageReadError, match=rf"huge\{ext}: the image declares {w} x {h}"):
        load_image(path)
    with pytest.raises(ImageReadError, match=rf"huge\{ext}.*declares {w} x {h}.*HRPOSE_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_one_megabyte_png_declaring_30000_squared_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(huge_png(30000, 30000))
    assert path.stat().st_size < 2 * 2**20
    with pytest.raises(ImageReadError, match=r"bomb\.png: the image declares 30000 x 30000 = 900 million"):
        load_image(path)


@pytest.mark.parametrize("reader", ["inference", "data"])
def test_over_opencvs_own_limit_is_an_image_error_not_a_crash(tmp_path, monkeypatch, reader):
    """With our limit raised above OpenCV's (2^30 pixels), OpenCV's refusal (a cv2.error) is reported
    as the image's error, so a folder run or a dataset goes on."""
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", str(4 * 10**9))
    path = tmp_path / "over_opencv.png"
    path.write_bytes(huge_png(40000, 40000, inflated=2**20))
    with pytest.raises(ImageReadError, match=r"over_opencv\.png.*OpenCV cannot decode.*CV_IO_MAX_IMAGE_PIXELS"):
        (load_image if reader == "inference" else read_image)(path)


def test_pixel_limit_env_and_option(tmp_path, monkeypatch, tiny_files, capsys):
    h, w = cv2.imread(str(GOOD)).shape[:2]
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", str(w * h - 1))
    with pytest.raises(ImageReadError, match=f"declares {w} x {h}"):
        load_image(GOOD)
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", str(w * h))
    assert load_image(GOOD).shape[:2] == (h, w)
    monkeypatch.delenv("HRPOSE_MAX_IMAGE_PIXELS")
    # the predict option: the image is skipped by name, nothing processed -> exit 1
    rc = predict(tiny_files, GOOD, "--detector", "whole", "--max-image-pixels", w * h - 1, "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 1 and "000000000785.jpg" in captured.err and "over the limit" in captured.err
    no_traceback(captured)
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize("value", ["lots", "-5", "0"])
def test_bad_pixel_limit_env_is_one_error_line(tmp_path, monkeypatch, tiny_files, capsys, value):
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", value)
    rc = predict(tiny_files, GOOD, "--detector", "whole", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 2 and f"HRPOSE_MAX_IMAGE_PIXELS={value!r}" in captured.err
    no_traceback(captured)


def test_huge_array_is_refused_before_the_crop_warp(tiny_files):
    cfg, _, model = tiny_files
    est = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=WholeImageDetector())
    est.max_image_pixels = 10_000
    with pytest.raises(ImageReadError, match=r"the image array: 101 x 100 .* over the limit"):
        est(np.zeros((100, 101, 3), np.uint8))
    assert len(est(np.zeros((100, 100, 3), np.uint8))) == 1


def test_unknown_format_too_big_to_trust_is_not_decoded(tmp_path):
    path = tmp_path / "mystery.tif"
    with path.open("wb") as f:
        f.write(b"XXXX not a known image signature")
        f.truncate(40 * 2**20)  # sparse: 40 MiB of unknown data
    with pytest.raises(ImageReadError, match=r"mystery\.tif: a file of an unknown format of 40 MiB: not decoded"):
        load_image(path)


def test_predict_folder_goes_on_past_huge_images(tmp_path, tiny_files, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "a_good.jpg")
    (folder / "b_bomb.png").write_bytes(huge_png(30000, 30000))
    (folder / "c_huge.jpg").write_bytes(_patch_jpeg_sof(encoded(".jpg"), 60000, 60000))
    shutil.copy(GOOD, folder / "d_good.jpg")
    rc = predict(tiny_files, folder, "--detector", "whole", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 0 and "2 images, 0 frames, 2 people found" in captured.out
    assert "2 input(s) could not be processed" in captured.err
    assert "b_bomb.png: the image declares 30000 x 30000" in captured.err
    assert "c_huge.jpg: the image declares 60000 x 60000" in captured.err
    no_traceback(captured)
    results = strict_loads((tmp_path / "o" / "results.json").read_text())
    assert sorted({Path(r["image_file"]).name for r in results}) == ["a_good.jpg", "d_good.jpg"]
    assert not (tmp_path / "o" / "b_bomb.json").exists()


def test_dataset_skips_a_huge_image_and_counts_it(tmp_path):
    img_dir = write_custom_dataset(tmp_path)
    (img_dir / "img_2.jpg").write_bytes(huge_png(30000, 30000, inflated=2**20))
    ds = build_dataset(custom_dataset_cfg(tmp_path), "test", is_train=False)
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image \(1 so far\).*img_2\.jpg.*declares 30000"):
        meta = ds[2][3]
    assert meta["requested_index"] == 2 and meta["index"] == 3
    assert list(ds.bad_images) == [str(img_dir / "img_2.jpg")]
    assert "over the limit" in ds.bad_images[str(img_dir / "img_2.jpg")]
    # SKIP_BAD_IMAGES False: fatal, naming the file
    strict = build_dataset(custom_dataset_cfg(tmp_path, skip=False), "test", is_train=False)
    with pytest.raises(ImageReadError, match=r"img_2\.jpg.*declares 30000 x 30000"):
        strict[2]


# ---------------------------------------------------------------------------------------------------------
# boxes with NaN / inf: dropped with a warning naming the image, never clipped into a fake box


@pytest.mark.parametrize(
    "bad",
    [[10, 10, np.inf, 50, 0.9], [10, 10, 50, -np.inf, 0.9], [np.nan, 10, 50, 50, 0.9], [10, 10, 50, 50, np.nan],
     [-np.inf, -np.inf, np.inf, np.inf, 1.0]],  # fmt: skip
    ids=["inf_width", "neg_inf_height", "nan_x", "nan_score", "all_inf"],
)
def test_non_finite_user_box_is_dropped_naming_the_image(tiny_files, caplog, bad):
    cfg, _, model = tiny_files
    est = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=WholeImageDetector())
    good = [30, 20, 40, 60, 0.8]
    with caplog.at_level(logging.WARNING):
        poses = est(GOOD, boxes=np.array([good, bad], dtype=np.float64))
    assert len(poses) == 1 and poses[0].box.tolist() == pytest.approx(good[:4])
    assert "000000000785.jpg: box 1" in caplog.text and "NaN or infinite" in caplog.text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    boxes=st.lists(
        st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=5, max_size=5),
        min_size=1, max_size=6,
    )  # fmt: skip
)
def test_prepared_boxes_are_always_finite_and_inside_the_image(tiny_files, boxes):
    cfg, _, model = tiny_files
    est = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=WholeImageDetector())
    out = est.prepare_boxes(np.array(boxes, dtype=np.float32), 640, 480, "random")
    assert np.isfinite(out).all()
    assert (out[:, 2] > 0).all() and (out[:, 3] > 0).all()
    assert (out[:, 0] >= 0).all() and (out[:, 0] + out[:, 2] <= 640 + 1e-3).all()
    assert (out[:, 1] >= 0).all() and (out[:, 1] + out[:, 3] <= 480 + 1e-3).all()
    finite_rows = [b for b in boxes if np.isfinite(np.float32(b)).all()]
    assert len(out) <= len(finite_rows)


def test_detection_file_with_nan_and_infinity_is_filtered(tmp_path, tiny_files, capsys, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "1.jpg")
    shutil.copy(GOOD, folder / "2.jpg")
    # Python's json writes the NaN/Infinity tokens a hostile file may contain
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, float("inf"), 100], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 100], "score": float("nan")},
            {"image_id": 2, "category_id": 1, "bbox": [300, 50, 200, 300], "score": 0.95}]  # fmt: skip
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    with caplog.at_level(logging.WARNING):
        detector = DetectionFileDetector(det_file)
        assert len(detector.boxes_for("1.jpg")) == 0 and len(detector.boxes_for("2.jpg")) == 1
        rc = predict(tiny_files, folder, "--detector", f"file:{det_file}", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 0 and "2 images, 0 frames, 1 people found" in captured.out
    assert "dets.json: entry 0 (image 1)" in caplog.text and "entry 1 (image 1)" in caplog.text
    no_traceback(captured)
    results = strict_loads((tmp_path / "o" / "results.json").read_text())
    assert [r["image_id"] for r in results] == [2]
    assert strict_loads((tmp_path / "o" / "1.json").read_text()) == []


def test_onnx_detector_nan_and_inf_rows_are_dropped(tmp_path, tiny_files, caplog):
    dets = np.array([[[10, 10, 200, 300, 0.9], [np.nan, 0, 100, 100, 0.99], [0, 0, np.inf, 100, 0.95],
                      [50, 50, 150, 250, np.nan]]], dtype=np.float32)  # fmt: skip
    model_path = tmp_path / "det.onnx"
    const_onnx_model(model_path, {"dets": dets})
    detector = OnnxDetector(model_path)
    boxes = detector(np.zeros((640, 640, 3), np.uint8))
    assert boxes.shape == (1, 5) and np.isfinite(boxes).all()
    np.testing.assert_allclose(boxes[0], [10, 10, 190, 290, 0.9], rtol=1e-5)
    cfg, _, model = tiny_files
    est = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=detector)
    with caplog.at_level(logging.WARNING):
        poses = est(GOOD)
    assert len(poses) == 1
    assert "000000000785.jpg: the detector gave 3 boxes with NaN/infinite values: dropped" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# non-finite model outputs: an error naming the image and the person


class NanBackend:
    """Wraps a backend; the chosen calls (1-based) or crop rows return NaN heatmaps."""

    def __init__(self, inner, bad_calls=(), bad_rows=()):
        self.inner, self.bad_calls, self.bad_rows, self.calls = inner, set(bad_calls), list(bad_rows), 0
        self.device = torch.device("cpu")

    def __call__(self, batch):
        self.calls += 1
        out = np.array(self.inner(batch), dtype=np.float32)
        if self.calls in self.bad_calls:
            out[:] = np.nan
        for r in self.bad_rows:
            if r < len(out):
                out[r, 3, 2, 2] = np.inf
        return out


def test_non_finite_keypoints_name_the_image_and_person(tiny_files):
    cfg, _, model = tiny_files
    base = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=WholeImageDetector())
    est = PoseEstimator.from_config(load_config(cfg), backend=NanBackend(base.backend, bad_rows=[1]), batch_size=2,
                        flip_test=False, detector=WholeImageDetector())  # fmt: skip
    boxes = [[30, 20, 40, 60], [100, 100, 50, 80], [200, 50, 60, 90]]
    with pytest.raises(NonFiniteOutputError, match=r"photo\.jpg: the model gave NaN/inf .* person 1 \(box"):
        est(cv2.imread(str(GOOD)), boxes=boxes, key="photo.jpg")


def test_predict_folder_skips_the_image_with_nan_output(tmp_path, tiny_files, monkeypatch, capsys):
    from hrpose.runtime import REGISTRY, Entry

    original = REGISTRY["torch"]
    monkeypatch.setitem(REGISTRY, "torch", Entry(lambda req: NanBackend(original.build(req), bad_calls=[2]),
                                                 original.precision, original.summary))  # fmt: skip
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(GOOD, folder / name)
    # --backend torch: the patched torch backend (auto would pick ONNX Runtime)
    rc = predict(tiny_files, folder, "--detector", "whole", "--no-flip", "--backend", "torch", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 0 and "2 images, 0 frames, 2 people found" in captured.out
    assert "b.jpg: the model gave NaN/inf keypoints or scores for person 0" in captured.err
    no_traceback(captured)
    results = strict_loads((tmp_path / "o" / "results.json").read_text())
    assert sorted(Path(r["image_file"]).name for r in results) == ["a.jpg", "c.jpg"]
    assert not (tmp_path / "o" / "b.json").exists() and not (tmp_path / "o" / "b_pose.jpg").exists()
    for name in ("a.json", "c.json"):
        assert all(np.isfinite(r["keypoints"]).all() for r in strict_loads((tmp_path / "o" / name).read_text()))


# ---------------------------------------------------------------------------------------------------------
# weights: dtype and finiteness at load, declared sizes before expansion, safe refusal advice


def _tiny_sd(tiny_files):
    return {k: v.clone() for k, v in tiny_files[2].state_dict().items()}


@pytest.mark.parametrize("fmt", [".safetensors", ".pth"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_weights_are_refused_naming_the_key(tmp_path, tiny_files, fmt, value, capsys):
    sd = _tiny_sd(tiny_files)
    sd["final_layer.weight"].view(-1)[3] = value
    path = save_weights(sd, tmp_path / f"broken{fmt}")
    with pytest.raises(CheckpointError, match=r"broken\.\w+: tensor 'final_layer\.weight' holds non-finite"):
        load_state_dict_file(path)
    rc = run_cli(["predict", "--cfg", tiny_files[0], "--weights", str(path), "--device", "cpu", str(GOOD),
                  "--detector", "whole", "--out", str(tmp_path / "o")])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2 and "'final_layer.weight' holds non-finite" in captured.err
    no_traceback(captured)
    assert not (tmp_path / "o" / "results.json").exists()


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64], ids=["int", "bool", "complex"])
def test_non_float_weights_are_refused_naming_the_key(tmp_path, tiny_files, dtype):
    sd = _tiny_sd(tiny_files)
    sd["final_layer.bias"] = sd["final_layer.bias"].to(dtype)
    path = tmp_path / "typed.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=rf"typed\.pth: tensor 'final_layer\.bias' has .*dtype {dtype}"):
        load_weights(build_model(load_config(tiny_files[0])), path)


def test_integer_batchnorm_counters_still_load(tmp_path, tiny_files):
    sd = _tiny_sd(tiny_files)
    counters = [k for k, v in sd.items() if k.endswith("num_batches_tracked")]
    assert counters and all(sd[k].dtype == torch.int64 for k in counters)
    for fmt in (".pth", ".safetensors"):
        model = build_model(load_config(tiny_files[0]))
        report = load_weights(model, save_weights(sd, tmp_path / f"ok{fmt}"))
        assert report.complete and torch.equal(model.state_dict()["final_layer.weight"], sd["final_layer.weight"])


def _write_zip(path: Path, members: list[tuple[str, bytes, int, int, int]]) -> None:
    """A zip written by hand: (name, stored bytes, method, declared size, crc) per member."""
    out, central = bytearray(), bytearray()
    for name, data, method, size, crc in members:
        offset = len(out)
        nm = name.encode()
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(nm), 0)
        out += nm + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(nm), 0, 0, 0, 0, 0, offset) + nm  # fmt: skip
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def zip_bomb_checkpoint(path: Path, tiny_sd: dict, inflated: int = 3_500_000_000) -> None:
    """A real torch checkpoint whose storage member `data/0` is replaced by deflate data inflating to
    `inflated` zero bytes (~3.5 MB on disk)."""
    torch.save(tiny_sd, path)
    with zipfile.ZipFile(path) as zf:
        members = [(i.filename, zf.read(i.filename), 0, i.file_size, i.CRC) for i in zf.infolist()]
    name = next(n for n, *_ in members if n.endswith("/data/0"))
    bomb = deflate_zeros(inflated)
    members = [(n, d, m, s, c) if n != name else (n, bomb, 8, inflated, 0) for n, d, m, s, c in members]
    _write_zip(path, members)


def test_zip_bomb_checkpoint_is_refused_before_inflating(tmp_path, tiny_files):
    path = tmp_path / "bomb.pth"
    zip_bomb_checkpoint(path, _tiny_sd(tiny_files))
    assert path.stat().st_size < 60 * 2**20  # the tiny model's ~44 MB of weights + ~3.4 MB of deflate data
    mib = path.stat().st_size / 2**20
    with pytest.raises(CheckpointError, match=rf"bomb\.pth is a {mib:.1f} MiB file whose members would expand"):
        load_state_dict_file(path)


def test_checkpoint_over_the_size_limit_is_refused(tmp_path, tiny_files, monkeypatch):
    path = tmp_path / "big.pth"
    torch.save(_tiny_sd(tiny_files), path)
    monkeypatch.setenv("HRPOSE_MAX_CHECKPOINT_BYTES", "1000")
    with pytest.raises(CheckpointError, match=r"big\.pth declares .* over the limit .*HRPOSE_MAX_CHECKPOINT_BYTES"):
        load_state_dict_file(path)
    monkeypatch.delenv("HRPOSE_MAX_CHECKPOINT_BYTES")
    assert load_state_dict_file(path).keys() == _tiny_sd(tiny_files).keys()


def _safetensors_with_header(path: Path, header: bytes, data: bytes = b"\0" * 16, declared: int | None = None):
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header + data)


@pytest.mark.parametrize(
    "case",
    ["length_beyond_file", "length_2_to_60", "offsets_beyond_file", "deep_json", "negative_offset"],
)
def test_bogus_safetensors_headers_are_refused_before_reading(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    entry = {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}
    if case == "length_beyond_file":
        _safetensors_with_header(path, json.dumps(entry).encode(), declared=10_000)
        expect = "header declares 10000 bytes"
    elif case == "length_2_to_60":
        _safetensors_with_header(path, json.dumps(entry).encode(), declared=2**60)
        expect = f"header declares {2**60} bytes"
    elif case == "offsets_beyond_file":
        entry["w"]["data_offsets"] = [0, 40_000_000_000]
        _safetensors_with_header(path, json.dumps(entry).encode())
        expect = "tensor 'w' declares data_offsets"
    elif case == "negative_offset":
        entry["w"]["data_offsets"] = [-8, 8]
        _safetensors_with_header(path, json.dumps(entry).encode())
        expect = "tensor 'w' declares data_offsets"
    else:
        _safetensors_with_header(path, b"[" * 100_000 + b"]" * 100_000)
        expect = "header is not valid JSON"
    with pytest.raises(CheckpointError, match=rf"{case}\.safetensors.*{expect}"):
        load_state_dict_file(path)


def test_code_refusal_never_advises_unsafe_loading(tmp_path, capsys, tiny_files):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _tiny_sd(tiny_files), "x": Payload()}, path)
    rc = run_cli(["predict", "--cfg", tiny_files[0], "--weights", str(path), "--device", "cpu", str(GOOD),
                  "--out", str(tmp_path / "o")])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2 and "evil.pth contains pickled Python objects or code" in captured.err
    assert "weights_only=False" not in captured.err and ".safetensors" in captured.err
    no_traceback(captured)


def test_mismatch_message_suggests_no_partial_flag(tmp_path, tiny_files):
    sd = _tiny_sd(tiny_files)
    del sd["final_layer.bias"]
    with pytest.raises(CheckpointError) as info:
        load_weights(build_model(load_config(tiny_files[0])), save_weights(sd, tmp_path / "short.pth"))
    assert "final_layer.bias" in str(info.value) and "--partial" not in str(info.value)


def test_export_refuses_nan_weights(tmp_path, tiny_files, capsys):
    model = build_model(load_config(tiny_files[0]))
    model.load_state_dict(tiny_files[2].state_dict())
    with torch.no_grad():
        model.final_layer.weight[0, 0, 0, 0] = float("nan")
    out = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match=r"m\.onnx: the model's final_layer\.weight holds NaN/inf"):
        export_onnx(model, out, (32, 64))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # the CLI: a NaN checkpoint is refused at load, one error line, nothing written
    path = save_weights(model, tmp_path / "nan.safetensors")
    rc = run_cli(["export", "--cfg", tiny_files[0], "--weights", str(path), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 2 and "nan.safetensors: tensor 'final_layer.weight' holds non-finite" in captured.err
    assert "exported" not in captured.out and not out.exists()


# ---------------------------------------------------------------------------------------------------------
# outputs: atomic, kept on Ctrl-C, own drawings not read back


def test_ctrl_c_in_a_folder_run_keeps_results_json(tmp_path, tiny_files, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        shutil.copy(GOOD, folder / name)
    original = PoseEstimator.__call__

    def interrupt_at_c(self, image, *a, key=None, **k):
        if str(key).endswith("c.jpg"):
            raise KeyboardInterrupt
        return original(self, image, *a, key=key, **k)

    monkeypatch.setattr(PoseEstimator, "__call__", interrupt_at_c)
    rc = predict(tiny_files, folder, "--detector", "whole", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 130
    assert "interrupted: kept" in captured.err and "results.json (2 of 4 images)" in captured.err
    no_traceback(captured)
    results = strict_loads((tmp_path / "o" / "results.json").read_text())
    assert sorted(Path(r["image_file"]).name for r in results) == ["a.jpg", "b.jpg"]
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]  # no temp files left


def test_ctrl_c_in_a_video_keeps_the_frames_done(tmp_path, tiny_files, monkeypatch, capsys):
    src = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (96, 64))
    frame = cv2.resize(cv2.imread(str(GOOD)), (96, 64))
    for _ in range(8):
        writer.write(frame)
    writer.release()
    original = PoseEstimator.predict_many  # what the pipelined video run calls, for one or several frames

    def interrupt_at_5(self, images, *a, keys=None, **k):
        if 5 in keys:
            raise KeyboardInterrupt
        return original(self, images, *a, keys=keys, **k)

    monkeypatch.setattr(PoseEstimator, "predict_many", interrupt_at_5)
    rc = predict(tiny_files, src, "--detector", "whole", "--no-flip", "--out", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 130 and "clip.jsonl (5 frames)" in captured.err
    no_traceback(captured)
    lines = (tmp_path / "o" / "clip.jsonl").read_text().splitlines()
    assert [strict_loads(ln)["frame"] for ln in lines] == [0, 1, 2, 3, 4]
    cap = cv2.VideoCapture(str(tmp_path / "o" / "clip_pose.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert not [p for p in (tmp_path / "o").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("out", ["inside", "same"])
def test_second_run_does_not_process_its_own_drawings(tmp_path, tiny_files, capsys, monkeypatch, out):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "a.jpg")
    shutil.copy(GOOD, folder / "b.jpg")
    out_dir = folder / "predictions" if out == "inside" else folder
    for _ in range(2):
        rc = predict(tiny_files, folder, "--detector", "whole", "--out", out_dir)
        captured = capsys.readouterr()
        assert rc == 0 and "2 images, 0 frames, 2 people found" in captured.out
        no_traceback(captured)
    names = sorted(p.name for p in out_dir.iterdir() if p.suffix == ".jpg")
    assert "a_pose_pose.jpg" not in names and {"a_pose.jpg", "b_pose.jpg"} <= set(names)
    assert sorted({Path(r["image_file"]).name for r in strict_loads((out_dir / "results.json").read_text())}) == [
        "a.jpg", "b.jpg"]  # fmt: skip
    # a drawing named explicitly is still taken
    assert predict(tiny_files, out_dir / "a_pose.jpg", "--detector", "whole", "--out", tmp_path / "x") == 0


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    from hrpose.commands import predict as predict_cmd

    target = tmp_path / "results.json"
    target.write_text('["previous"]')

    def full_disk(fd, mode):
        os.close(fd)
        raise OSError(28, "No space left on device")

    from hrpose import user_files

    monkeypatch.setattr(user_files.os, "fdopen", full_disk)  # the one temp-file writer predict uses
    with pytest.raises(OSError, match="No space left"):
        predict_cmd.write_atomic(target, '["new"]')
    assert target.read_text() == '["previous"]' and [p.name for p in tmp_path.iterdir()] == ["results.json"]
    with pytest.raises(ValueError):
        predict_cmd.strict_json([float("nan")])


# ---------------------------------------------------------------------------------------------------------
# memory bounds: child processes under RLIMIT_AS


def run_capped(code: str, *args: str, cap: int = CAP, timeout: int = 120) -> subprocess.CompletedProcess:
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "PYTHONPATH": str(ROOT / "tests")}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)  # fmt: skip


def test_capped_predict_refuses_the_png_bomb_and_processes_the_good_image(tmp_path, tiny_files):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(huge_png(30000, 30000))
    shutil.copy(GOOD, folder / "good.jpg")
    cfg, weights, _ = tiny_files
    # after the run, the child checks the cap is real: 2.5 GiB more cannot be allocated (a control)
    r = run_capped("""
        import sys
        import numpy as np
        from hrpose.cli import main
        rc = main(sys.argv[1:])
        try:
            np.empty(int(2.5 * 2**30), np.uint8)
        except MemoryError:
            print("control: 2.5 GiB refused under the cap")
        sys.exit(rc)
        """,
        "predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", str(folder), "--detector", "whole",
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "control: 2.5 GiB refused under the cap" in r.stdout
    assert "bomb.png: the image declares 30000 x 30000" in r.stderr and "Traceback" not in r.stderr
    assert "1 images, 0 frames, 1 people found" in r.stdout
    assert [Path(x["image_file"]).name for x in strict_loads((tmp_path / "o" / "results.json").read_text())] == [
        "good.jpg"]  # fmt: skip


@pytest.mark.slow  # ~40 s on a 2-core machine; test_crops_are_streamed_in_batches is its fast sibling
def test_capped_100k_boxes_for_one_image_run_in_bounded_memory(tiny_files):
    """100 000 boxes: all crops at once would be 100k x 3 x 64 x 32 float32 = 2.4 GB (+ the uint8 warp
    buffer and temporaries); streamed per batch it fits under the cap. The network is replaced by a
    constant-heatmap backend so the test measures the pipeline, not the CPU."""
    r = run_capped(f"""
        import numpy as np, cv2, resource
        from hrpose.config import load_config
        from hrpose.inference import PoseEstimator, WholeImageDetector
        from helpers import TINY_YAML
        import tempfile, pathlib
        cfg_path = pathlib.Path(tempfile.mkdtemp()) / "tiny.yaml"
        cfg_path.write_text(TINY_YAML.replace("POST_PROCESS: true", "POST_PROCESS: false"))
        hm = np.zeros((17, 16, 8), np.float32); hm[:, 8, 4] = 1.0
        est = PoseEstimator.from_config(load_config(cfg_path),
                                        backend=lambda x: np.broadcast_to(hm, (len(x), *hm.shape)),
                            batch_size=256, flip_test=False, detector=WholeImageDetector())
        image = cv2.imread({str(GOOD)!r})
        rng = np.random.default_rng(0)
        n = 100_000
        xy = rng.uniform(0, 400, (n, 2)); wh = rng.uniform(20, 200, (n, 2))
        poses = est(image, boxes=np.concatenate([xy, wh, np.ones((n, 1))], 1))
        assert len(poses) == n and all(np.isfinite(p.keypoints).all() for p in poses[:: 997])
        print("people", len(poses), "maxrss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "people 100000" in r.stdout
    print(r.stdout)  # the peak RSS, for docs/robustness.md


def test_crops_are_streamed_in_batches(tiny_files, monkeypatch):
    """Never all N boxes warped into one array: make_inputs and the backend see at most batch_size crops."""
    import hrpose.inference.estimator as est_mod

    seen: list[int] = []
    original = est_mod.make_inputs

    def spy(image, centers, *a, **k):
        seen.append(len(centers))
        return original(image, centers, *a, **k)

    monkeypatch.setattr(est_mod, "make_inputs", spy)
    cfg, _, model = tiny_files
    backend_sizes: list[int] = []
    base = PoseEstimator.from_model(model, load_config(cfg), device="cpu", detector=WholeImageDetector())

    def backend(x):
        backend_sizes.append(len(x))
        return base.backend(x)

    est = PoseEstimator.from_config(load_config(cfg), backend=backend, batch_size=7, detector=WholeImageDetector())
    rng = np.random.default_rng(1)
    boxes = np.concatenate([rng.uniform(0, 300, (50, 2)), rng.uniform(20, 200, (50, 2))], 1)
    poses = est(GOOD, boxes=boxes)
    assert len(poses) == 50 and max(seen) == 7 and sum(seen) == 50
    assert max(backend_sizes) == 14  # 7 crops + their mirrors (flip test)
    # the same people as one big batch: streaming changes nothing
    whole = PoseEstimator.from_config(load_config(cfg), backend=base.backend, batch_size=64,
                                      detector=WholeImageDetector())
    for a, b in zip(poses, whole(GOOD, boxes=boxes)):
        np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=1e-5, atol=1e-4)


def test_capped_zip_bomb_checkpoint_is_refused(tmp_path, tiny_files):
    path = tmp_path / "bomb.pth"
    zip_bomb_checkpoint(path, _tiny_sd(tiny_files))
    cfg, _, _ = tiny_files
    r = run_capped(
        "import sys; from hrpose.cli import main; sys.exit(main(sys.argv[1:]))",
        "predict", "--cfg", cfg, "--weights", str(path), "--device", "cpu", str(GOOD), "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr[-3000:]
    assert "bomb.pth is a" in r.stderr and "would expand to 33" in r.stderr and "zip bomb" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o" / "results.json").exists()
