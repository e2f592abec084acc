"""Person detectors for top-down pose estimation: pluggable, all returning boxes (N, 5) = x, y, w, h, score.

A detector is any callable `detector(image_bgr (H, W, 3) uint8) -> (N, 5) float32` in image pixels,
sorted by score (see `Detector`). Detectors that look boxes up by image (a detection file) also take
`key=` (the image's file name or COCO id), and say so with `needs_key = True`.

- `WholeImageDetector`: one box covering the image (single-person photos, pre-cropped people).
- `HOGDetector`: OpenCV's HOG + linear SVM pedestrian detector; needs no model file, so it is the
  offline default. Upright, whole-body people of at least ~64x128 pixels; expect misses otherwise.
- `DetectionFileDetector`: precomputed detections in the COCO results format.
- `OnnxDetector`: a user-supplied ONNX detector (YOLOX- or RTMDet-style outputs; see its docstring).

- `zoo_detector`: the model zoo's YOLOX Human-Art ONNX (fetched into $HRPOSE_HOME), the `--detector auto`.

`build_detector("auto" | ZOO_NAME | "hog" | "whole" | "file:PATH" | "onnx:PATH")` makes one from the CLI
spelling.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from hrpose.errors import UserError

logger = logging.getLogger(__name__)

__all__ = [
    "default_detector",
    "hog_available",
    "Detector",
    "DetectorError",
    "WholeImageDetector",
    "HOGDetector",
    "DetectionFileDetector",
    "OnnxDetector",
    "nms_boxes",
    "build_detector",
    "check_score_thr",
    "zoo_detector",
]


class DetectorError(UserError, ValueError):
    """A detector that cannot be built or run (bad file, unknown output layout, missing key)."""


@runtime_checkable
class Detector(Protocol):
    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (N, 5) float32 boxes x, y, w, h, score in image pixels, best first."""
        ...


def _empty() -> np.ndarray:
    return np.zeros((0, 5), dtype=np.float32)


def nms_boxes(boxes_xywh: np.ndarray, scores: np.ndarray, iou_thr: float) -> np.ndarray:
    """Greedy class-agnostic NMS. boxes (N, 4) xywh, scores (N,) -> kept indices, best first."""
    boxes = np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_thr]
    return np.asarray(keep, dtype=np.int64)


def clip_boxes(boxes_xywh: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip (N, >=4) xywh boxes to the image; extra columns (score) are kept. Boxes may become empty."""
    out = np.array(boxes_xywh, dtype=np.float32, copy=True)
    if out.ndim != 2:
        out = out.reshape(len(out), -1)
    x1 = np.clip(out[:, 0], 0, width)
    y1 = np.clip(out[:, 1], 0, height)
    x2 = np.clip(out[:, 0] + out[:, 2], 0, width)
    y2 = np.clip(out[:, 1] + out[:, 3], 0, height)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x1, y1, np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)
    return out


class WholeImageDetector:
    """One box, the whole image, score 1: for photos of one person filling the frame."""

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        return np.array([[0.0, 0.0, w, h, 1.0]], dtype=np.float32)


HOG_MISSING = (
    "the HOG people detector needs cv2.HOGDescriptor, which OpenCV {version} does not have (OpenCV 5 moved "
    "it out of the main modules): install 'opencv-python-headless<5', or use another detector "
    "(--detector whole, file:DETECTIONS.json or onnx:MODEL.onnx)"
)


def hog_available() -> bool:
    """Whether this OpenCV build has the HOG people detector (OpenCV 4.x does, 5.x does not)."""
    return hasattr(cv2, "HOGDescriptor") and hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector")


def _default_people_hog() -> Any:
    if not hog_available():
        raise DetectorError(HOG_MISSING.format(version=cv2.__version__))
    hog = cv2.HOGDescriptor()  # type: ignore[attr-defined]
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())  # type: ignore[attr-defined]
    return hog


def default_detector() -> Detector:
    """HOG when this OpenCV has it, else the whole image (with a warning saying why)."""
    if hog_available():
        return HOGDetector()
    logger.warning(
        "OpenCV %s has no HOG people detector: using the whole image as the person box "
        "(install 'opencv-python-headless<5' for HOG, or pass --detector file:... / onnx:...)",
        cv2.__version__,
    )
    return WholeImageDetector()


class HOGDetector:
    """OpenCV's default HOG people detector (Dalal-Triggs), multi-scale, with box NMS.

    The image is resized so its longest side is at most `max_side` (speed), and small images are
    upsampled so their shortest side is at least `min_side` (HOG's window is 64x128, so people shorter
    than ~128 pixels are never found otherwise). Scores are the SVM margins squashed with a logistic
    function into (0, 1), so they can multiply keypoint scores like a detector's confidence does.

    OpenCV 5 moved HOG out of its main modules: there, pass `hog=` an object with OpenCV 4's
    `detectMultiScale(gray, winStride, padding, scale, hitThreshold) -> (rects, weights)` or install
    `opencv-python-headless<5`; `hog_available()` tells. Without it the constructor raises DetectorError.
    """

    def __init__(
        self,
        score_thr: float = 0.5,
        nms_thr: float = 0.45,
        max_side: int = 800,
        min_side: int = 384,
        win_stride: int = 8,
        pyramid_scale: float = 1.05,
        hog: Any = None,
    ) -> None:
        self.score_thr = score_thr
        self.nms_thr = nms_thr
        self.max_side = max_side
        self.min_side = min_side
        self.win_stride = win_stride
        self.pyramid_scale = pyramid_scale
        self._hog = hog if hog is not None else _default_people_hog()

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        factor = min(1.0, self.max_side / max(h, w))
        if min(h, w) * factor < self.min_side:
            factor = min(self.min_side / min(h, w), 4.0)
        work = image_bgr
        if factor != 1.0:
            interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
            work = cv2.resize(image_bgr, (round(w * factor), round(h * factor)), interpolation=interp)
        if work.shape[0] < 128 or work.shape[1] < 64:
            return _empty()
        gray = cv2.cvtColor(work, cv2.COLOR_BGR2GRAY)
        stride = (self.win_stride, self.win_stride)
        rects, weights = self._hog.detectMultiScale(
            gray, winStride=stride, padding=(8, 8), scale=self.pyramid_scale, hitThreshold=0.0
        )
        if len(rects) == 0:
            return _empty()
        rects = np.asarray(rects, dtype=np.float32).reshape(-1, 4) / factor
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, dtype=np.float32).reshape(-1)))
        ok = scores >= self.score_thr
        rects, scores = rects[ok], scores[ok]
        keep = nms_boxes(rects, scores, self.nms_thr)
        out = np.concatenate([rects[keep], scores[keep, None]], axis=1)
        return clip_boxes(out, w, h)


#: a detection file for a large COCO split is some tens of MB; far larger is not one (and is never read whole)
MAX_DETECTION_FILE_BYTES = 512 * 2**20


class DetectionFileDetector:
    """Boxes from a COCO detection-results JSON: `[{"image_id", "category_id", "bbox": [x,y,w,h], "score"}]`.

    Entries are matched to an image by `image_id` (int, or a string) or by an optional `file_name` /
    `image_name` field; `key` may be a path, a file name, a stem or an id: for `000000000785.jpg` the
    lookups are the file name, the stem and the integer 785 (COCO's naming). Only `category_id` ==
    `category` (1, person) with `score >= score_thr` are kept. An image with no entry has no people.
    """

    needs_key = True

    def __init__(self, path: str | os.PathLike[str], score_thr: float = 0.0, category: int = 1) -> None:
        from hrpose.inference.boxes import BoxError, check_box, check_score
        from hrpose.user_files import UserFileError, read_user_file, safe_text

        self.path = Path(path)
        name = safe_text(self.path)
        try:
            raw = read_user_file(self.path, "detection file", MAX_DETECTION_FILE_BYTES,
                                 "give a COCO detection-results JSON (--detector file:DETS.json)")  # fmt: skip
        except UserFileError as e:
            raise DetectorError(str(e).replace(": no such file", ": not found")) from None
        try:
            entries = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:
            raise DetectorError(f"detection file {name} is not readable JSON: {safe_text(e)}") from None
        if isinstance(entries, dict) and "annotations" in entries:
            entries = entries["annotations"]
        if not isinstance(entries, list):
            raise DetectorError(
                f"detection file {name}: expected a list of COCO detection results, got {type(entries).__name__}"
            )
        table: dict[str, list[list[float]]] = defaultdict(list)
        non_finite = 0
        for i, entry in enumerate(entries):
            where = f"detection file {name}: entry {i}"
            if not isinstance(entry, dict) or "bbox" not in entry:
                raise DetectorError(f"{where} has no 'bbox': {safe_text(str(entry)[:120])}")
            cat = entry.get("category_id", 1)
            if type(cat) is not int:
                raise DetectorError(f"{where}: 'category_id' must be an integer (1 = person), got "
                                    f"{type(cat).__name__} {safe_text(repr(cat)[:40])}")  # fmt: skip
            if cat != category:
                continue
            try:
                score = check_score(entry.get("score", 1.0), "'score'")
                bbox = check_box(entry["bbox"], "'bbox'")
            except BoxError as e:
                if not e.non_finite:
                    raise DetectorError(f"{where}: {safe_text(e)}; fix or remove the entry") from None
                non_finite += 1  # clipping would turn it into a fake box: drop it
                if non_finite <= 5:
                    logger.warning(
                        "detection file %s: entry %d (image %s) has a NaN/infinite bbox or score %s: skipped",
                        name, i, safe_text(entry.get("image_id", entry.get("file_name"))), safe_text(e),
                    )  # fmt: skip
                continue
            if score < score_thr:
                continue
            ident = entry.get("file_name", entry.get("image_name", entry.get("image_id")))
            if ident is None:
                raise DetectorError(f"{where} has no 'image_id' or 'file_name'")
            if not (isinstance(ident, str) or type(ident) is int):
                raise DetectorError(f"{where}: 'image_id'/'file_name' must be an integer or a string, got "
                                    f"{type(ident).__name__} {safe_text(repr(ident)[:40])}")  # fmt: skip
            table[self._norm(ident)].append([*bbox, score])
        if non_finite > 5:
            logger.warning("detection file %s: %d entries with NaN/infinite values skipped", name, non_finite)
        self._table = {k: np.asarray(v, dtype=np.float32) for k, v in table.items()}

    @staticmethod
    def _norm(ident: Any) -> str:
        s = str(ident)
        return str(int(s)) if s.isdigit() else s

    def boxes_for(self, key: str | int | os.PathLike[str]) -> np.ndarray:
        """(N, 5) boxes for an image path / name / id, best first; (0, 5) when the file lists none."""
        p = Path(str(key))
        for k in (self._norm(p.name), self._norm(p.stem), self._norm(str(key))):
            if k in self._table:
                boxes = self._table[k]
                return boxes[np.argsort(-boxes[:, 4], kind="stable")].copy()
        return _empty()

    def __call__(self, image_bgr: np.ndarray, key: str | int | os.PathLike[str] | None = None) -> np.ndarray:
        if key is None:
            raise DetectorError(
                f"the detection file {self.path} is looked up by image name/id, but this image has none "
                "(an array or a video frame): pass boxes=... or use another detector"
            )
        h, w = image_bgr.shape[:2]
        return clip_boxes(self.boxes_for(key), w, h)


DETECTOR_ENGINES = ("auto", "openvino", "onnxruntime")


class _OrtEngine:
    """The detector graph in ONNX Runtime: all graph optimisations, `threads` intra-op threads (default one per
    core), and no spinning: ONNX Runtime's threads would otherwise busy-wait after each call, taking the cores
    from the pose model that runs next (a video run alternates the two)."""

    name = "onnxruntime"

    def __init__(self, path: Path, providers: list[str] | None, threads: int | None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=providers or ["CPUExecutionProvider"])  # fmt: skip
        except Exception as e:  # onnxruntime raises its own exception types
            raise DetectorError(f"cannot load the ONNX detector {path}: {e}") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape: list[Any] = list(inp.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(None, {self.input_name: blob})]


class _OpenVinoEngine:
    """The detector graph read from ONNX by OpenVINO's CPU plugin (fp32, latency mode, `threads` threads)."""

    name = "openvino"

    def __init__(self, path: Path, threads: int | None) -> None:
        import openvino as ov

        from hrpose.runtime.openvino_backend import keep_sigaltstack, openvino_config

        try:
            with keep_sigaltstack():
                core = ov.Core()
                model = core.read_model(str(path))
                self.compiled = core.compile_model(model, "CPU", openvino_config(threads))
                self.request = self.compiled.create_infer_request()
        except Exception as e:  # OpenVINO raises its own exception types
            raise DetectorError(f"cannot load the ONNX detector {path} in OpenVINO: {e}") from e
        inp = self.compiled.inputs[0]
        self.input_name = inp.get_any_name()
        self.input_shape = [d.get_length() if d.is_static else None for d in inp.get_partial_shape()]
        self.output_names = [next(iter(o.get_names()), f"output{i}") for i, o in enumerate(self.compiled.outputs)]
        self._keep = keep_sigaltstack

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        with self._keep():
            self.request.infer({0: blob})
        return [np.array(self.request.get_output_tensor(i).data) for i in range(len(self.output_names))]


def _open_engine(path: Path, engine: str, providers: list[str] | None, threads: int | None) -> Any:
    """`engine`: "onnxruntime", "openvino", or "auto": ONNX Runtime where it is installed, else OpenVINO.
    OpenVINO gives the same boxes but was not faster for a YOLOX-tiny-sized graph on the shared 2-core CPU
    measured (faster by ~20% of CPU time at load 5, slower by ~50% at load 13: docs/benchmarks.md "Video
    throughput"), so it is the choice only where ONNX Runtime is missing, or asked for."""
    import importlib.util

    if engine not in DETECTOR_ENGINES:
        raise DetectorError(f"unknown detector engine {engine!r}: expected one of {', '.join(DETECTOR_ENGINES)}")
    have_ort = importlib.util.find_spec("onnxruntime") is not None
    if engine == "openvino" or (engine == "auto" and not have_ort and importlib.util.find_spec("openvino")):
        if importlib.util.find_spec("openvino") is None:
            raise DetectorError("the openvino detector engine needs OpenVINO: pip install 'hrpose[openvino]'")
        return _OpenVinoEngine(path, threads)
    if not have_ort:
        raise DetectorError("OnnxDetector needs onnxruntime (or OpenVINO): pip install 'hrpose[onnx]'")
    return _OrtEngine(path, providers, threads)


class OnnxDetector:
    """A user's ONNX person detector, run by ONNX Runtime (CPU unless `providers` says otherwise) or by OpenVINO's
    CPU plugin (`engine="openvino"`; the same boxes; `engine="auto"`, the default, takes ONNX Runtime where it is
    installed, else OpenVINO: see `_open_engine`). `threads`: the engine's threads (default: one per core).

    Input: the first graph input, NCHW float32, `input_size` (w, h) taken from the graph when static,
    else the `input_size` argument (default 640x640). The image is letterboxed: resized by
    r = min(W / w_img, H / h_img) keeping its aspect, placed at the top-left (`center=False`, YOLOX and
    mmdeploy's RTMDet) or centred (`center=True`), padded with `pad_value` (114). Pixels are BGR 0..255 as
    YOLOX expects, or RGB (`rgb=True`) and/or normalised `(x - mean) / std` per channel for models that
    fold no normalisation into the graph (RTMDet from mmdeploy: mean 103.53,116.28,123.675 /
    std 57.375,57.12,58.395 in BGR).

    Outputs accepted (a leading batch dim of 1 is optional):

    1. YOLOX style, one output (1, N, 5 + C): rows `[cx, cy, w, h, objectness, class_0 .. class_C-1]`
       in input pixels (YOLOX exported with decode_in_inference); score = objectness x class
       `person_class`. Megvii's released ONNX files (`tools/export_onnx.py`, no decoding) give the raw
       head outputs instead, one row per grid cell of `strides` (8, 16, 32), row-major per stride:
       decoded here as cx = (x + grid_x) * stride, w = exp(w) * stride (`yolox_raw=True`; the default
       None tells the two apart: raw when N equals the number of grid cells and the x column holds cell
       offsets rather than pixel positions). Objectness and class scores are taken as already
       sigmoid-ed, as YOLOX's head outputs them at inference.
    2. MMDeploy end2end (YOLOX / RTMDet with NMS in the graph, the Human-Art detectors of the model zoo):
       output `dets` (1, N, 5) `[x1, y1, x2, y2, score]` in input pixels, and optionally `labels`
       (1, N) integers; rows whose label != `person_class` are dropped. The same layout with C == 0
       (a single (1, N, 5) output and no labels) is read as this format. The graph already ran NMS,
       so no second NMS is applied (as MMDeploy's SDK and rtmlib do).

    Then: score >= `score_thr` (0..1), NMS at `nms_thr` for format 1, boxes mapped back through the
    letterbox ((input px - pad) / r) and clipped to the image; empty boxes are dropped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        score_thr: float = 0.3,
        nms_thr: float = 0.45,
        person_class: int = 0,
        input_size: tuple[int, int] | None = None,
        rgb: bool = False,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        pad_value: float = 114.0,
        center: bool = False,
        yolox_raw: bool | None = None,
        strides: tuple[int, ...] = (8, 16, 32),
        providers: list[str] | None = None,
        engine: str = "auto",
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DetectorError(f"ONNX detector model not found: {self.path}")
        self.engine = _open_engine(self.path, engine, providers, threads)
        self.session = getattr(self.engine, "session", None)  # the ONNX Runtime session (None under OpenVINO)
        self.input_name = self.engine.input_name
        shape = self.engine.input_shape
        if len(shape) != 4:
            raise DetectorError(f"{self.path}: expected an NCHW image input, got input {self.input_name} of shape "
                                f"{shape}")  # fmt: skip
        if isinstance(shape[2], int) and isinstance(shape[3], int):
            self.input_size = (int(shape[3]), int(shape[2]))
        else:
            self.input_size = tuple(input_size) if input_size else (640, 640)  # type: ignore[assignment]
        self.output_names = self.engine.output_names
        check_score_thr(score_thr, "score_thr")
        self.score_thr, self.nms_thr, self.person_class = score_thr, nms_thr, person_class
        self.rgb, self.pad_value, self.center = rgb, pad_value, center
        self.mean = None if mean is None else np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
        self.std = None if std is None else np.asarray(std, np.float32).reshape(1, 3, 1, 1)
        self.yolox_raw, self.strides = yolox_raw, tuple(strides)

    def letterbox(self, image_bgr: np.ndarray) -> tuple[np.ndarray, float, tuple[float, float]]:
        """-> (input (1, 3, H, W) float32, ratio r, pad (x, y)); input px = image px * r + pad."""
        h, w = image_bgr.shape[:2]
        tw, th = self.input_size
        r = min(tw / w, th / h)
        nw, nh = max(1, min(tw, int(w * r + 0.5))), max(1, min(th, int(h * r + 0.5)))  # mmdet's rounding
        resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
        canvas = np.full((th, tw, 3), self.pad_value, dtype=np.float32)
        px, py = ((tw - nw) // 2, (th - nh) // 2) if self.center else (0, 0)
        canvas[py : py + nh, px : px + nw] = resized
        if self.rgb:
            canvas = canvas[:, :, ::-1]
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None])
        if self.mean is not None:
            blob = blob - self.mean
        if self.std is not None:
            blob = blob / self.std
        return blob.astype(np.float32), r, (float(px), float(py))

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        """YOLOX's anchor points: (A, 2) cell x, y and (A, 1) stride, stride by stride, row-major."""
        tw, th = self.input_size
        grids, strides = [], []
        for s in self.strides:
            gh, gw = th // s, tw // s
            ys, xs = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            grids.append(np.stack([xs, ys], -1).reshape(-1, 2))
            strides.append(np.full((gh * gw, 1), s))
        return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def _is_raw(self, rows: np.ndarray) -> bool:
        """Whether (A, 5 + C) rows are raw YOLOX head outputs (see the class docstring) or decoded boxes."""
        if self.yolox_raw is not None:
            return self.yolox_raw
        grid, stride = self._grid()
        if len(grid) != len(rows) or len(rows) == 0:
            return False
        # raw: x is an offset within its cell (~0..1); decoded: x is (grid_x + offset) * stride
        raw_err = np.median(np.abs(rows[:, 0] - 0.5))
        decoded_err = np.median(np.abs(rows[:, 0] / stride[:, 0] - grid[:, 0] - 0.5))
        return bool(raw_err < decoded_err)

    def _grid_decode(self, rows: np.ndarray) -> np.ndarray:
        tw, th = self.input_size
        grid, stride = self._grid()
        if len(grid) != len(rows):
            raise DetectorError(
                f"{self.path}: yolox_raw expects {len(grid)} rows for input {tw}x{th} and strides "
                f"{self.strides}, the model gave {len(rows)}"
            )
        out = rows.copy()
        out[:, :2] = (rows[:, :2] + grid) * stride
        out[:, 2:4] = np.exp(rows[:, 2:4]) * stride
        return out

    def parse_outputs(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Raw session outputs -> (boxes (N, 4) x1y1x2y2 in input pixels, scores (N,)) of persons."""
        named = dict(zip(self.output_names, outputs))
        arrays = [np.asarray(o) for o in outputs]
        dets = named.get("dets")
        labels = named.get("labels")
        if dets is None:
            floats = [a for a in arrays if np.issubdtype(a.dtype, np.floating) and a.shape[-1] >= 5]
            if not floats:
                raise DetectorError(
                    f"{self.path}: no output of shape (1, N, 5) or (1, N, 5 + C); outputs are "
                    f"{[(n, a.shape) for n, a in zip(self.output_names, arrays)]}"
                )
            dets = floats[0]
            if labels is None:
                # labels: the other output with one dimension less (int or float class ids)
                others = [a for a in arrays if a is not dets and a.ndim == dets.ndim - 1]
                labels = others[0] if others else None
        dets = np.asarray(dets, dtype=np.float32)
        if dets.ndim == 3:
            dets = dets[0]
        if dets.ndim != 2 or dets.shape[1] < 5:
            raise DetectorError(f"{self.path}: detector output of shape {dets.shape} is not (1, N, >=5)")
        if dets.shape[1] == 5 and not self.yolox_raw:  # MMDeploy end2end: x1, y1, x2, y2, score (+ labels)
            boxes, scores = dets[:, :4], dets[:, 4]
            if labels is not None:
                lab = np.asarray(labels).reshape(-1)
                if len(lab) != len(dets):
                    raise DetectorError(f"{self.path}: {len(lab)} labels for {len(dets)} boxes")
                keep = lab.astype(np.int64) == self.person_class
                boxes, scores = boxes[keep], scores[keep]
            return boxes, scores
        rows = self._grid_decode(dets) if self._is_raw(dets) else dets  # YOLOX: cx, cy, w, h, obj, cls...
        if rows.shape[1] > 5 + self.person_class:
            scores = rows[:, 4] * rows[:, 5 + self.person_class]
        else:
            scores = rows[:, 4]
        cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return boxes, scores

    def nms_in_graph(self, outputs: list[np.ndarray]) -> bool:
        """MMDeploy end2end graphs (a (1, N, 5) `dets` output) ran NMS already; YOLOX outputs did not."""
        named = dict(zip(self.output_names, outputs))
        if "dets" in named:
            return True
        floats = [np.asarray(o) for o in outputs if np.issubdtype(np.asarray(o).dtype, np.floating)]
        return bool(floats) and floats[0].shape[-1] == 5 and not self.yolox_raw

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        h, w = image_bgr.shape[:2]
        blob, r, (px, py) = self.letterbox(image_bgr)
        outputs = self.engine.run(blob)
        boxes, scores = self.parse_outputs(outputs)
        finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        # NaN/inf rows are dropped, never clipped into a fake box; PoseEstimator names the image in a warning
        self.last_non_finite = int((~finite).sum())
        boxes, scores = boxes[finite], scores[finite]
        ok = scores >= self.score_thr
        boxes, scores = boxes[ok], scores[ok]
        if len(boxes) == 0:
            return _empty()
        x1 = (boxes[:, 0] - px) / r
        y1 = (boxes[:, 1] - py) / r
        x2 = (boxes[:, 2] - px) / r
        y2 = (boxes[:, 3] - py) / r
        xywh = np.stack([x1, y1, x2 - x1, y2 - y1], axis=1)
        if self.nms_in_graph(outputs):
            keep = np.argsort(-scores, kind="stable")
        else:
            keep = nms_boxes(xywh, scores, self.nms_thr)
        out = np.concatenate([xywh[keep], scores[keep, None]], axis=1).astype(np.float32)
        out = clip_boxes(out, w, h)
        return out[(out[:, 2] > 0) & (out[:, 3] > 0)]


def check_score_thr(value: float, what: str = "--det-thr") -> float:
    """A detector score threshold must be a number in [0, 1] (detector scores are probabilities)."""
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise DetectorError(f"{what} must be between 0 and 1 (a detection score), got {value}")
    return v


HOG_FALLBACK = (
    "person detector {name} is not available ({reason}): falling back to OpenCV's HOG people detector, which "
    "misses most people (it found 1 of 41 people on 10 real photos); to get the real detector run "
    "`hrpose models fetch {name}`{place}"
)


def zoo_detector(
    name: str | None = None, *, score_thr: float | None = None, fallback: bool = True, mirror: str | None = None
) -> Detector:
    """The model zoo's ONNX person detector `name` (default `hrpose.zoo.DEFAULT_DETECTOR`), fetched on first
    use into $HRPOSE_HOME. When it cannot be had (offline, not cached, download failed) and `fallback`:
    one warning line (how weak HOG is and how to get the detector), then HOG (or the whole image when this
    OpenCV has no HOG)."""
    from hrpose import zoo

    entry = zoo.get_entry(name or zoo.DEFAULT_DETECTOR)
    if entry.kind != "detector":
        raise DetectorError(f"{entry.name!r} is a {entry.kind} model, not a person detector; detectors: "
                            + ", ".join(n for n, e in zoo.REGISTRY.items() if e.kind == "detector"))  # fmt: skip
    kwargs: dict[str, Any] = {} if score_thr is None else {"score_thr": score_thr}
    import importlib.util

    try:
        if importlib.util.find_spec("onnxruntime") is None:
            raise DetectorError("onnxruntime is not installed: pip install 'hrpose[onnx]'")
        path = zoo.fetch(entry, mirror=mirror)
    except UserError as e:
        if not fallback:
            raise
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        place = f", or place {entry.archive_member or entry.filename} at {zoo.cache_path(entry)}"
        if isinstance(e, DetectorError):
            place = " after installing onnxruntime"
        logger.warning(HOG_FALLBACK.format(name=entry.name, reason=reason.rstrip("."), place=place))
        if hog_available():
            return HOGDetector(**kwargs)
        return default_detector()
    return OnnxDetector(
        path, input_size=entry.input_size, yolox_raw=entry.layout == "onnx-yolox-raw",
        rgb=entry.channel_order == "rgb", **kwargs,
    )  # fmt: skip


def build_detector(spec: str, **kwargs: Any) -> Detector:
    """'auto' | zoo name | 'hog' | 'whole' | 'file:PATH' | 'onnx:PATH' -> a detector; kwargs go to its constructor."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "hog" and not arg:
        return HOGDetector(**kwargs)
    if kind in ("whole", "none", "full") and not arg:
        return WholeImageDetector()
    if kind == "file" and arg:
        return DetectionFileDetector(arg, **kwargs)
    if kind == "onnx" and arg:
        return OnnxDetector(arg, **kwargs)
    if kind == "auto" and not arg:
        return zoo_detector(None, **kwargs)
    from hrpose.zoo import REGISTRY

    if spec in REGISTRY:  # a pose/ImageNet name is refused there with the list of detectors
        return zoo_detector(spec, **kwargs)
    zoo_names = ", ".join(n for n, e in REGISTRY.items() if e.kind == "detector")
    raise DetectorError(
        f"unknown detector {spec!r}: expected auto, a model zoo detector ({zoo_names}), hog, whole, "
        "file:PATH (COCO detections JSON) or onnx:PATH"
    )
