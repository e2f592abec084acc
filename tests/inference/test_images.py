"""Reading user images: layouts normalised to 8-bit BGR, EXIF orientation honoured, bad files named."""

from __future__ import annotations

import pickle
import struct

import cv2
import numpy as np
import pytest

from conftest import DATA
from helpers import jpeg_with_orientation
from hrpose.errors import UserError
from hrpose.images import (
    ImageReadError,
    apply_orientation,
    exif_orientation,
    jpeg_truncated,
    load_image,
    read_image,
    to_bgr8,
)

SAMPLE = DATA / "samples" / "coco" / "000000000785.jpg"


def asymmetric_image(h: int = 48, w: int = 80) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:10, :20] = (0, 0, 255)  # red block top-left: any rotation or mirror moves it
    img[-6:, -30:] = (255, 0, 0)
    return img


def test_to_bgr8_layouts():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = to_bgr8(gray)
    assert out.shape == (3, 4, 3) and out.dtype == np.uint8
    assert (out[..., 0] == gray).all() and (out[..., 2] == gray).all()
    assert to_bgr8(gray[..., None]).shape == (3, 4, 3)

    sixteen = np.full((2, 2, 3), 65535, np.uint16)
    sixteen[0, 0] = (257 * 10, 0, 257 * 200)
    out16 = to_bgr8(sixteen)
    assert out16.dtype == np.uint8 and out16[1, 1].tolist() == [255, 255, 255]
    assert out16[0, 0].tolist() == [10, 0, 200]

    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # red in RGB order
    assert to_bgr8(rgb, rgb=True)[0, 0].tolist() == [0, 0, 200]

    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (100, 150, 200, 255)  # opaque
    rgba[0, 1] = (100, 150, 200, 0)  # transparent -> black
    out4 = to_bgr8(rgba)
    assert out4[0, 0].tolist() == [100, 150, 200] and out4[0, 1].tolist() == [0, 0, 0]

    floats = np.full((2, 2, 3), 0.5, np.float32)
    assert to_bgr8(floats)[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 4, 2), (4, 4, 3, 1), (5,)])
def test_to_bgr8_rejects_bad_shapes(shape):
    with pytest.raises(ImageReadError, match="shape|empty"):
        to_bgr8(np.zeros(shape, np.uint8), name="frame.png")


def test_load_real_image_matches_cv2():
    ours = load_image(SAMPLE)
    ref = cv2.imread(str(SAMPLE), cv2.IMREAD_COLOR)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied_like_opencv(tmp_path, orientation):
    """OpenCV's own EXIF handling (IMREAD_COLOR) is the oracle for every orientation."""
    data = jpeg_with_orientation(asymmetric_image(), orientation)
    path = tmp_path / f"o{orientation}.jpg"
    path.write_bytes(data)
    assert exif_orientation(data) == orientation
    ours = load_image(path)
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR)  # applies EXIF orientation
    assert ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    stored = load_image(path, exif=False)
    assert stored.shape == (48, 80, 3)
    if orientation in (5, 6, 7, 8):
        assert ours.shape == (80, 48, 3)


def test_orientation_6_turns_a_sideways_photo_upright():
    stored = asymmetric_image()
    upright = apply_orientation(stored, 6)  # stored rotated 90 CCW -> turn 90 CW: top-left goes top-right
    assert upright.shape == (80, 48, 3)
    assert upright[0, -1].tolist() == [0, 0, 255]
    assert upright[0, 0].tolist() != [0, 0, 255]


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"empty.jpg.*empty \(0 bytes\)"):
        load_image(p)


def test_truncated_jpeg(tmp_path):
    data = SAMPLE.read_bytes()
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut.jpg.*truncated"):
        load_image(p)


def test_unsupported_format_and_missing(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image")
    with pytest.raises(ImageReadError, match=r"notes.png.*cannot decode"):
        load_image(p)
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)


def test_grayscale_16bit_rgba_files(tmp_path):
    gray = (np.arange(30 * 40).reshape(30, 40) % 256).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    g = load_image(tmp_path / "g.png")
    assert g.shape == (30, 40, 3) and np.array_equal(g[..., 1], gray)

    deep = (np.arange(30 * 40 * 3).reshape(30, 40, 3) * 50 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    d = load_image(tmp_path / "d.png")
    assert d.dtype == np.uint8 and np.array_equal(d, (deep // 257).astype(np.uint8))

    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = 255
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    a = load_image(tmp_path / "a.png")
    assert a.shape == (30, 40, 3) and a[0, 0].tolist() == [10, 20, 30]


# ----------------------------------------------------------------------------------------------------
# one error class and one truncated-JPEG rule for both readers (training data and predict)


def test_one_image_error_class_for_both_readers(tmp_path):
    import hrpose.data
    import hrpose.data.images
    import hrpose.inference
    import hrpose.inference.images

    for alias in (hrpose.data.ImageReadError, hrpose.data.images.ImageReadError, hrpose.inference.ImageReadError,
                  hrpose.inference.images.ImageReadError):  # fmt: skip
        assert alias is ImageReadError
    assert hrpose.data.images.read_image is read_image and hrpose.inference.images.load_image is load_image
    missing = tmp_path / "gone.jpg"
    for reader in (read_image, load_image):
        with pytest.raises(ImageReadError) as info:
            reader(missing)
        err = info.value
        assert isinstance(err, UserError) and isinstance(err, OSError) and isinstance(err, ValueError)
        assert err.path == str(missing) and "gone.jpg" in str(err)
        back = pickle.loads(pickle.dumps(err))  # DataLoader workers and serve workers pass errors between processes
        assert type(back) is ImageReadError and str(back) == str(err) and back.path == err.path


def _cases() -> dict[str, tuple[bytes, bool]]:
    """name -> (JPEG bytes, truncated?)."""
    good = SAMPLE.read_bytes()
    sos = good.index(b"\xff\xda")
    ok, enc = cv2.imencode(".jpg", asymmetric_image())
    thumb = enc.tobytes()  # a complete JPEG put in APP1 like an EXIF thumbnail: its own SOS and EOI
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumb) + 8) + b"Exif\x00\x00" + thumb
    return {
        "complete": (good, False),
        "cut_in_the_image_data": (good[: (sos + len(good)) // 2], True),
        "cut_in_the_headers": (good[: sos - 10], True),
        "cut_then_garbage": (good[: (sos + len(good)) // 2] + bytes(range(256)) * 4, True),
        # a motion photo: data appended after a complete image, here containing a stray SOS marker
        "appended_after_the_image": (good + b"\x00ftypmp42\xff\xda\x00\x08" + b"\x11" * 64, False),
        "exif_thumbnail_then_cut": (good[:2] + app1 + good[2 : (sos + len(good)) // 2], True),
        "exif_thumbnail_complete": (good[:2] + app1 + good[2:], False),
        "fill_bytes_before_a_marker": (good[:2] + b"\xff\xff" + good[2:], False),
    }


@pytest.mark.parametrize("case", sorted(_cases()))
def test_truncated_jpeg_rule_is_the_same_for_training_and_predict(tmp_path, case):
    data, truncated = _cases()[case]
    assert jpeg_truncated(data) is truncated
    path = tmp_path / f"{case}.jpg"
    path.write_bytes(data)
    if truncated:
        with pytest.raises(ImageReadError, match=rf"{case}\.jpg: truncated JPEG") as info:
            read_image(path)
        assert info.value.reason.startswith("truncated JPEG")
        with pytest.raises(ImageReadError, match=rf"{case}\.jpg: the JPEG file is truncated"):
            load_image(path)
    else:
        stored = read_image(path)
        assert stored.shape == (*cv2.imread(str(SAMPLE)).shape[:2], 3)
        assert np.array_equal(load_image(path, exif=False), stored)


def test_non_jpeg_is_never_called_truncated():
    assert not jpeg_truncated(b"") and not jpeg_truncated(b"\x89PNG\r\n\x1a\n") and not jpeg_truncated(b"\xff")
