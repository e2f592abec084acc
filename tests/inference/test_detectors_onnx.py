"""The ONNX person detectors in ONNX Runtime: MMDeploy end2end (dets + labels, NMS in the graph) and Megvii's
raw YOLOX grid output (decoded and NMS-ed here), letterboxing, scaling back, clipping, thresholds, and the
model-zoo detector behind `--detector auto` (offline, from a hand-populated $HRPOSE_HOME)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import end2end_graph, onnx_const_node
from hrpose import zoo
from hrpose.inference.detectors import (
    DetectorError,
    HOGDetector,
    OnnxDetector,
    WholeImageDetector,
    build_detector,
    hog_available,
    zoo_detector,
)

IMAGE = np.zeros((100, 200, 3), np.uint8)
IMAGE[:] = (10, 20, 200)  # BGR: red


def test_end2end_format_bgr_0_255_top_left_letterbox_no_second_nms(tmp_path):
    path = tmp_path / "end2end.onnx"
    end2end_graph(path)
    det = OnnxDetector(path, input_size=(416, 416), score_thr=0.3)  # dynamic H, W: the zoo gives the size
    out = det(IMAGE)
    # 200 x 100 into 416 x 416: r = 2.08, resized 416 x 208 at the top-left; input px / 2.08 = image px
    np.testing.assert_allclose(out[:, :4], [[10, 20, 40, 60], [15, 20, 35, 60], [100, 0, 100, 100]], atol=1e-3)
    # row 0: the red channel of the (unnormalised) BGR input; row 1: the grey 114 padding below the image
    np.testing.assert_allclose(out[:, 4], [200 / 255, 0.5, 114 / 255], atol=1e-6)


@pytest.mark.parametrize("thr, kept", [(0.0, 3), (0.45, 2), (0.6, 1), (0.79, 0), (1.0, 0)])
def test_score_threshold_over_the_whole_range(tmp_path, thr, kept):
    path = tmp_path / "end2end.onnx"
    end2end_graph(path, static=True)
    assert len(OnnxDetector(path, score_thr=thr)(IMAGE)) == kept


@pytest.mark.parametrize("thr", [-0.1, 1.5, float("nan")])
def test_score_threshold_outside_0_1_is_refused(tmp_path, thr):
    path = tmp_path / "end2end.onnx"
    end2end_graph(path, static=True)
    with pytest.raises(DetectorError, match="between 0 and 1"):
        OnnxDetector(path, score_thr=thr)


def raw_yolox_graph(path, rows: np.ndarray, size: int = 64) -> None:
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    node = onnx_const_node("output", rows[None].astype(np.float32))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, *rows.shape])
    model = helper.make_model(helper.make_graph([node], "yolox", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 13)])  # fmt: skip
    model.ir_version = 8
    onnx.save(model, str(path))


def test_raw_megvii_yolox_grid_output_is_decoded_and_nmsed(tmp_path):
    # 64 x 64 input, strides 8/16/32 -> 64 + 16 + 4 = 84 anchor rows of 85 (4 box, objectness, 80 classes)
    rows = np.zeros((84, 85), np.float32)
    rows[:, 4] = 0.01
    a = 64 + 1 * 4 + 2  # stride 16, cell (x=2, y=1)
    rows[a, :6] = [0.5, 0.25, np.log(2.0), np.log(3.0), 0.9, 0.9]  # person 0.81
    b = 3 * 8 + 5  # stride 8, cell (x=5, y=3): cx 44, cy 28, w 32, h 48: IoU with a > 0.45 -> NMS
    rows[b, :6] = [0.0, 0.0, np.log(4.0), np.log(6.0), 0.8, 0.9]
    c = 64 + 16 + 3  # stride 32, cell (1, 1): a confident dog (class 16)
    rows[c, :4] = [0.5, 0.5, 0.0, 0.0]
    rows[c, 4], rows[c, 5 + 16] = 0.95, 0.95
    path = tmp_path / "yolox_s.onnx"
    raw_yolox_graph(path, rows)
    det = OnnxDetector(path, score_thr=0.3)  # raw vs decoded told apart by itself
    image = np.zeros((64, 128, 3), np.uint8)  # r = 0.5: input px * 2 = image px
    out = det(image)
    # a: cx (0.5 + 2) * 16 = 40, cy (0.25 + 1) * 16 = 20, w 32, h 48 -> x 24..56, y -4..44 -> image x 48..112,
    # y -8..88 clipped to the 128 x 64 image
    np.testing.assert_allclose(out, [[48, 0, 64, 64, 0.81]], atol=1e-4)
    assert OnnxDetector(path, score_thr=0.3, yolox_raw=True)(image).tolist() == out.tolist()


def test_decoded_yolox_rows_are_not_mistaken_for_raw(tmp_path):
    rows = np.zeros((84, 6), np.float32)
    i = np.arange(84)
    stride = np.where(i < 64, 8, np.where(i < 80, 16, 32))
    cell = np.where(i < 64, i, np.where(i < 80, i - 64, i - 80))
    per_row = np.where(i < 64, 8, np.where(i < 80, 4, 2))
    rows[:, 0] = (cell % per_row + 0.5) * stride  # decoded centres, as exported with decode_in_inference
    rows[:, 1] = (cell // per_row + 0.5) * stride
    rows[:, 2:4] = stride[:, None] * 2.0
    rows[70, 4:6] = [0.9, 0.9]  # stride 16 cell (2, 1): centre (40, 24), 32 x 32
    path = tmp_path / "decoded.onnx"
    raw_yolox_graph(path, rows)
    out = OnnxDetector(path, score_thr=0.5)(np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_allclose(out, [[24, 8, 32, 32, 0.81]], atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# the zoo detector (offline, cache populated by hand as an offline user would)


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    return tmp_path / "home"


def test_auto_is_the_cached_zoo_detector(home):
    entry = zoo.get_entry(zoo.DEFAULT_DETECTOR)
    end2end_graph(home / "detector" / entry.name / "end2end.onnx")
    det = build_detector("auto", score_thr=0.3)
    assert isinstance(det, OnnxDetector) and det.input_size == entry.input_size == (416, 416)
    assert det.path == zoo.cache_path(entry)
    assert len(det(IMAGE)) == 3
    other = zoo.get_entry("yolox-m-humanart")
    end2end_graph(home / "detector" / other.name / "end2end.onnx")
    det_m = build_detector("yolox-m-humanart")
    assert isinstance(det_m, OnnxDetector) and det_m.input_size == (640, 640)


def test_offline_without_the_detector_falls_back_with_one_warning(home, caplog):
    with caplog.at_level(logging.WARNING, logger="hrpose.inference.detectors"):
        det = build_detector("auto", score_thr=0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    msg = warnings[0]
    assert "HOG" in msg and "1 of 41 people" in msg and "hrpose models fetch yolox-tiny-humanart" in msg
    assert str(home / "detector" / "yolox-tiny-humanart" / "end2end.onnx") in msg
    assert isinstance(det, HOGDetector if hog_available() else WholeImageDetector)
    with pytest.raises(Exception, match="HRPOSE_OFFLINE"):
        zoo_detector(fallback=False)


def test_a_pose_model_name_is_not_a_detector(home):
    with pytest.raises(DetectorError, match="not a person detector"):
        build_detector(zoo.DEFAULT_POSE_MODEL)
    with pytest.raises(DetectorError, match="unknown detector.*yolox-tiny-humanart"):
        build_detector("yolo")


def test_without_onnxruntime_the_fallback_says_so(home, caplog, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    entry = zoo.get_entry(zoo.DEFAULT_DETECTOR)
    end2end_graph(home / "detector" / entry.name / "end2end.onnx")
    with caplog.at_level(logging.WARNING, logger="hrpose.inference.detectors"):
        det = build_detector("auto")
    assert not isinstance(det, OnnxDetector)
    assert "onnxruntime is not installed: pip install 'hrpose[onnx]'" in caplog.text


# ---------------------------------------------------------------------------------------------------------
# the engines: OpenVINO (the default where installed) and ONNX Runtime give the same boxes


def conv_detector_graph(path, size: int = 64, seed: int = 0) -> None:
    """A tiny real detector: a random 8x8 stride-8 convolution over the image, then sigmoid rows
    [cx, cy, w, h, obj, person, other] scaled to input pixels (decoded YOLOX layout, one row per cell)."""
    rng = np.random.default_rng(seed)
    cells = (size // 8) ** 2
    weight = (rng.standard_normal((7, 3, 8, 8)) / 2000).astype(np.float32)
    bias = np.array([0, 0, 0, 0, 1.5, 1.5, 0], np.float32)  # objectness and person: around 0.8 each
    scale = np.array([size, size, size / 2, size / 2, 1, 1, 1], np.float32).reshape(1, 1, 7)
    nodes = [
        onnx_const_node("w", weight), onnx_const_node("b", bias), onnx_const_node("scale", scale),
        onnx_const_node("shape", np.array([1, 7, cells], np.int64)),
        helper.make_node("Conv", ["images", "w", "b"], ["c"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Sigmoid", ["t"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["output"]),
    ]  # fmt: skip
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, cells, 7])
    model = helper.make_model(helper.make_graph(nodes, "convdet", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])  # fmt: skip
    onnx.save(model, str(path))


def test_openvino_and_onnxruntime_engines_give_the_same_boxes(tmp_path):
    path = tmp_path / "convdet.onnx"
    conv_detector_graph(path)
    ort_det = OnnxDetector(path, score_thr=0.3, yolox_raw=False, engine="onnxruntime")
    ov_det = OnnxDetector(path, score_thr=0.3, yolox_raw=False, engine="openvino")
    assert ort_det.engine.name == "onnxruntime" and ov_det.engine.name == "openvino"
    assert ov_det.input_size == ort_det.input_size == (64, 64) and ov_det.output_names == ["output"]
    rng = np.random.default_rng(1)
    total = 0
    for _ in range(5):
        image = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
        a, b = ort_det(image), ov_det(image)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
        total += len(a)
    assert total >= 5  # boxes were found and compared, not only empty answers


def test_auto_engine_and_onnxruntime_does_not_spin(tmp_path, monkeypatch):
    import importlib.util

    path = tmp_path / "convdet.onnx"
    conv_detector_graph(path)
    assert OnnxDetector(path).engine.name == "onnxruntime"  # installed: the default
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime"
                        else real_find_spec(name, *a))  # fmt: skip
    assert OnnxDetector(path).engine.name == "openvino"  # no ONNX Runtime: OpenVINO reads the graph
    monkeypatch.undo()
    ort_det = OnnxDetector(path, engine="onnxruntime", threads=1)
    opts = ort_det.session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 1
    with pytest.raises(DetectorError, match="unknown detector engine 'tensorrt': expected one of auto, openvino"):
        OnnxDetector(path, engine="tensorrt")
