"""Person detectors: box NMS, detection files (official format), HOG plumbing, the ONNX adapter."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import DATA, GOLDEN, golden_json
from helpers import const_onnx_model
from hrpose.geometry import box_to_center_scale
from hrpose.inference import detectors as det_mod
from hrpose.inference.detectors import (
    DetectionFileDetector,
    DetectorError,
    HOGDetector,
    OnnxDetector,
    WholeImageDetector,
    build_detector,
    nms_boxes,
)


def test_nms_keeps_best_of_overlapping():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.1])
    keep = nms_boxes(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]  # IoU(0,1) = 81/119 > 0.5, box 3 overlaps box 1 too
    assert nms_boxes(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]


def test_whole_image_detector():
    out = WholeImageDetector()(np.zeros((30, 50, 3), np.uint8))
    assert out.tolist() == [[0, 0, 50, 30, 1]]


def test_detection_file_matches_official_records():
    """Boxes from the official-format detection file give the golden records' center/scale."""
    det = DetectionFileDetector(GOLDEN / "coco_mini_detections.json", score_thr=0.0)
    expected = golden_json("dataset_samples.json")["coco_det_db"]
    by_image: dict[str, list] = {}
    for rec in expected:
        by_image.setdefault(rec["image"], []).append(rec)
    for image, recs in by_image.items():
        boxes = det.boxes_for(image)  # 'images/train2017/000000535506.jpg' -> id 535506
        assert len(boxes) == len(recs), image
        ours = sorted((*box_to_center_scale(b[:4], 192 / 256)[0], float(b[4])) for b in boxes)
        ref = sorted((*r["center"], r["score"]) for r in recs)
        np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-3)
        scores = boxes[:, 4]
        assert (np.diff(scores) <= 0).all()  # best first


def test_detection_file_threshold_and_keys(tmp_path):
    path = DATA / "samples" / "coco" / "test_coco_det_AP_H_56.json"
    raw = json.loads(path.read_text())
    det = DetectionFileDetector(path, score_thr=0.5)
    n = sum(1 for r in raw if r["image_id"] == 785 and r["category_id"] == 1 and r["score"] >= 0.5)
    image = np.zeros((425, 640, 3), np.uint8)
    assert len(det(image, key="/some/where/000000000785.jpg")) == n > 0
    assert len(det(image, key=785)) == n
    assert len(det(image, key="other.jpg")) == 0
    with pytest.raises(DetectorError, match="looked up by image name"):
        det(image)
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(DetectorError, match="bad.json"):
        DetectionFileDetector(bad)
    with pytest.raises(DetectorError, match="not found"):
        DetectionFileDetector(tmp_path / "missing.json")


class _StubHOG:
    """OpenCV 4's detectMultiScale contract: rects (N, 4) xywh in the given image, weights (N, 1)."""

    def __init__(self) -> None:
        self.seen_shape: tuple[int, ...] | None = None

    def detectMultiScale(self, gray, winStride, padding, scale, hitThreshold):  # noqa: N802
        self.seen_shape = gray.shape
        rects = np.array([[100, 50, 64, 128], [104, 52, 64, 128], [300, 200, 64, 128]])
        return rects, np.array([[2.0], [0.5], [-3.0]])


def test_hog_rescales_scores_and_suppresses():
    stub = _StubHOG()
    det = HOGDetector(score_thr=0.5, max_side=800, min_side=384, hog=stub)
    image = np.zeros((1000, 1600, 3), np.uint8)  # downscaled by 0.5 for HOG
    out = det(image)
    assert stub.seen_shape == (500, 800)
    # the second box overlaps the first (NMS), the third scores sigmoid(-3) < 0.5
    np.testing.assert_allclose(out[:, :4], [[200, 100, 128, 256]], atol=1e-4)
    np.testing.assert_allclose(out[:, 4], [1 / (1 + np.exp(-2.0))], rtol=1e-6)


def test_hog_missing_from_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.delattr(cv2, "HOGDescriptor", raising=False)
    assert not det_mod.hog_available()
    with pytest.raises(DetectorError, match="opencv-python-headless<5"):
        HOGDetector()
    assert isinstance(det_mod.default_detector(), WholeImageDetector)


def test_build_detector_specs(tmp_path):
    assert isinstance(build_detector("whole"), WholeImageDetector)
    assert isinstance(build_detector(f"file:{GOLDEN / 'coco_mini_detections.json'}"), DetectionFileDetector)
    with pytest.raises(DetectorError, match="unknown detector"):
        build_detector("yolo")
    with pytest.raises(DetectorError, match="not found"):
        build_detector(f"onnx:{tmp_path / 'nope.onnx'}")


# ---------------------------------------------------------------------------------------------------------
# ONNX adapter: graphs built here output known detections in input (letterboxed) pixels


def test_onnx_yolox_style_boxes_come_back_in_image_coords(tmp_path):
    # image 320 x 240 -> r = min(640/320, 640/240) = 2, top-left padding: input px = 2 * image px
    rows = np.array(
        [
            # cx, cy, w, h, obj, cls0 (person), cls1
            [200, 160, 100, 200, 0.9, 0.9, 0.1],  # person, image box x 75..125, y 30..130
            [206, 162, 100, 200, 0.8, 0.9, 0.1],  # duplicate of it: NMS
            [500, 300, 60, 120, 0.9, 0.1, 0.9],  # a non-person: score 0.09 < thr
            [500, 400, 80, 160, 0.6, 0.9, 0.0],  # second person (score 0.54)
        ],
        np.float32,
    )[None]
    path = tmp_path / "yolox.onnx"
    const_onnx_model(path, {"output": rows})
    det = OnnxDetector(path, score_thr=0.3)
    assert det.input_size == (640, 640)
    out = det(np.zeros((240, 320, 3), np.uint8))
    np.testing.assert_allclose(out[:, :4], [[75, 30, 50, 100], [230, 160, 40, 80]], atol=1e-4)
    np.testing.assert_allclose(out[:, 4], [0.81, 0.54], atol=1e-6)


def test_onnx_rtmdet_style_with_labels_and_centered_letterbox(tmp_path):
    # image 200 (w) x 400 (h) into 320 x 320: r = 0.8, centred: 160 x 320 placed at x offset 80
    dets = np.array([[[120, 40, 200, 280, 0.95], [100, 100, 150, 150, 0.9], [0, 0, 30, 30, 0.1]]], np.float32)
    labels = np.array([[0, 2, 0]], np.int64)
    path = tmp_path / "rtmdet.onnx"
    const_onnx_model(path, {"dets": dets, "labels": labels}, input_hw=(320, 320))
    det = OnnxDetector(path, score_thr=0.3, center=True)
    out = det(np.zeros((400, 200, 3), np.uint8))
    # (120 - 80) / 0.8 = 50, 40 / 0.8 = 50, (200 - 120) / 0.8 = 100, 240 / 0.8 = 300
    np.testing.assert_allclose(out, [[50, 50, 100, 300, 0.95]], atol=1e-4)


def test_onnx_yolox_raw_grid_decoding(tmp_path):
    # 64 x 64 input, strides 8/16/32 -> 64 + 16 + 4 = 84 rows; one confident cell at stride 16, grid (x=2, y=1)
    rows = np.zeros((84, 6), np.float32)
    i = 64 + 1 * 4 + 2
    rows[i] = [0.5, 0.25, np.log(2.0), np.log(3.0), 0.9, 1.0]
    path = tmp_path / "raw.onnx"
    const_onnx_model(path, {"output": rows[None]}, input_hw=(64, 64))
    det = OnnxDetector(path, score_thr=0.5, yolox_raw=True)
    out = det(np.zeros((64, 64, 3), np.uint8))  # r = 1
    # cx = (0.5 + 2) * 16 = 40, cy = (0.25 + 1) * 16 = 20, w = 2 * 16 = 32, h = 3 * 16 = 48
    np.testing.assert_allclose(out, [[24, 0, 32, 44, 0.9]], atol=1e-4)  # y1 = -4 clipped to 0


def test_onnx_letterbox_pixels(tmp_path):
    path = tmp_path / "c.onnx"
    const_onnx_model(path, {"output": np.zeros((1, 1, 6), np.float32)}, input_hw=(32, 32))
    det = OnnxDetector(path, rgb=True)
    image = np.zeros((8, 16, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    blob, r, pad = det.letterbox(image)
    assert blob.shape == (1, 3, 32, 32) and r == 2.0 and pad == (0.0, 0.0)
    assert blob[0, 0, 0, 0] == 200  # RGB: channel 0 is red
    assert blob[0, 0, 20, 0] == 114  # below the image: padding
    assert len(det(image)) == 0


def test_onnx_unknown_layout_is_reported(tmp_path):
    path = tmp_path / "bad.onnx"
    const_onnx_model(path, {"out": np.zeros((1, 10, 3), np.float32)}, input_hw=(32, 32))
    with pytest.raises(DetectorError, match=r"bad.onnx.*\(1, N, 5"):
        OnnxDetector(path)(np.zeros((32, 32, 3), np.uint8))
