"""The dataset reader's JPEG decoder (simplejpeg where it gives cv2.imdecode's pixels): every JPEG under
../shared/data decoded both ways, pixel for pixel; what simplejpeg does not take goes to cv2; the hostile-image
limits still run before any decoder."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import hrpose.images as images
from conftest import DATA
from hrpose.images import READ_FLAGS, ImageReadError, read_image

JPEGS = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())


def _cv2(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, dtype=np.uint8), READ_FLAGS)


def test_simplejpeg_is_installed_and_used():
    assert images._SIMPLEJPEG is not None  # scripts/setup.sh installs the fast-data extra


def test_every_shared_jpeg_decodes_to_the_same_pixels_as_cv2():
    # ../shared/data holds coco-mini and samples/ (no MPII images here); every JPEG found is compared
    assert "coco-mini" in {p.relative_to(DATA).parts[0] for p in JPEGS} and len(JPEGS) >= 80
    turbo = 0
    for path in JPEGS:
        data = path.read_bytes()
        info = images.check_image_bytes(data, strict=True)
        fast = images._decode_turbo(data, info)
        ref = _cv2(data)
        if fast is not None:
            turbo += 1
            assert fast.shape == ref.shape and np.array_equal(fast, ref), path
        got = read_image(path)  # what the dataset reads, whichever decoder took it
        assert got.dtype == np.uint8 and np.array_equal(got, ref), path
    assert turbo == len(JPEGS)  # every real JPEG here goes through simplejpeg


@pytest.mark.parametrize("kind", ["grey", "progressive", "q100-444", "restart"])
def test_other_jpeg_layouts_give_cv2s_pixels(tmp_path, kind):
    src = cv2.imread(str(JPEGS[0]), READ_FLAGS)
    params = {"grey": [], "progressive": [cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
              "q100-444": [cv2.IMWRITE_JPEG_QUALITY, 100, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                           cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
              "restart": [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]}[kind]  # fmt: skip
    image = cv2.cvtColor(src, cv2.COLOR_BGR2GRAY) if kind == "grey" else src
    ok, buf = cv2.imencode(".jpg", image, params)
    assert ok
    path = tmp_path / f"{kind}.jpg"
    path.write_bytes(buf.tobytes())
    got = read_image(path)
    assert got.shape == src.shape and np.array_equal(got, _cv2(buf.tobytes()))


def test_cmyk_jpeg_goes_to_cv2(tmp_path):
    from PIL import Image

    src = cv2.imread(str(JPEGS[0]), READ_FLAGS)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(src[:, :, ::-1]).convert("CMYK").save(path, quality=90)
    data = path.read_bytes()
    info = images.check_image_bytes(data, strict=True)
    assert info is not None and info.channels == 4
    assert images._decode_turbo(data, info) is None  # simplejpeg cannot give BGR from CMYK: cv2 decodes it
    assert np.array_equal(read_image(path), _cv2(data))


def test_limits_run_before_simplejpeg(tmp_path, monkeypatch):
    calls = []

    class Spy:
        @staticmethod
        def decode_jpeg(*args, **kwargs):
            calls.append(1)
            raise AssertionError("decoded")

    monkeypatch.setattr(images, "_SIMPLEJPEG", Spy)
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageReadError, match="million pixels"):
        read_image(JPEGS[0])
    assert calls == []  # refused from the header, no decoder ran
    # a truncated JPEG is refused before decoding too
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(JPEGS[0].read_bytes()[:5000])
    monkeypatch.delenv("HRPOSE_MAX_IMAGE_PIXELS")
    with pytest.raises(ImageReadError, match="truncated"):
        read_image(cut)
    assert calls == []


def test_a_jpeg_simplejpeg_refuses_falls_back_to_cv2(monkeypatch):
    class Refuses:
        @staticmethod
        def decode_jpeg(*args, **kwargs):
            raise ValueError("unsupported")

    monkeypatch.setattr(images, "_SIMPLEJPEG", Refuses)
    assert np.array_equal(read_image(JPEGS[0]), _cv2(JPEGS[0].read_bytes()))


def _outcome(raw: bytes) -> tuple[str, np.ndarray | None]:
    try:
        return "ok", images._decode(raw, READ_FLAGS, None, "corrupt.jpg")
    except images._Refused as e:
        return e.kind, None


def test_corrupt_jpegs_give_what_cv2_gives(monkeypatch):
    # damaged entropy data: simplejpeg refuses most (cv2 then decodes, with libjpeg's warnings) and gives
    # cv2's pixels for the rest; either way the reader returns (or refuses) what it does with cv2 alone
    rng = np.random.default_rng(0)
    turbo = images._SIMPLEJPEG
    refused = decoded = 0
    for t in range(40):
        data = bytearray(JPEGS[t % len(JPEGS)].read_bytes())
        for _ in range(int(rng.integers(1, 20))):
            data[int(rng.integers(600, len(data) - 2))] = int(rng.integers(0, 256))
        raw = bytes(data)
        monkeypatch.setattr(images, "_SIMPLEJPEG", None)
        ref_kind, ref = _outcome(raw)
        monkeypatch.setattr(images, "_SIMPLEJPEG", turbo)
        kind, got = _outcome(raw)
        assert kind == ref_kind, t
        if ref is not None:
            decoded += 1
            assert got is not None and np.array_equal(got, ref), t
            refused += images._decode_turbo(raw, images.check_image_bytes(raw, strict=True)) is None
    assert decoded > 20 and refused > 0  # most still decode, and the fallback ran
