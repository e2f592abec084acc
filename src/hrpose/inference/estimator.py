"""`PoseEstimator`: people's keypoints in an image, top-down (person boxes -> crops -> heatmaps -> keypoints).

    est = PoseEstimator("experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml", "pose_hrnet_w32.pth")
    poses = est("photo.jpg")                      # boxes from the default detector (the zoo's YOLOX)
    poses = est(frame_bgr, boxes=[[x, y, w, h]])  # your own boxes

Images are file paths or numpy arrays. **Arrays are BGR** (OpenCV's order, what `cv2.imread` and
`cv2.VideoCapture` give); pass `rgb=True` for RGB arrays. Grayscale, 16-bit, float and RGBA arrays are
converted to 8-bit BGR (`hrpose.inference.images.to_bgr8`). Files are read upright by their EXIF
orientation, so keypoints are in the coordinates of the upright image (see `hrpose.inference.images`).

Each person is cropped exactly as the official test pipeline crops a detection (box -> center/scale
padded by 1.25 to the model aspect, affine warp), normalised as in training (DATASET.COLOR_RGB channel
order, ImageNet mean/std), run through the model with the flip test (merge_flip, TEST.SHIFT_HEATMAP),
decoded by the configured codec (HRPOSE.DECODER, TEST.POST_PROCESS) back to image pixels, and rescored
as the official COCO evaluation does: mean score of the joints above TEST.IN_VIS_THRE times the box score.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hrpose.backends import SHORT_BACKENDS, TorchBackend, make_short_backend
from hrpose.data.augment import IMAGENET_MEAN as _IMAGENET_MEAN
from hrpose.data.augment import IMAGENET_STD as _IMAGENET_STD
from hrpose.errors import UserError
from hrpose.geometry import box_to_center_scale, warp_crop
from hrpose.inference.detectors import Detector, clip_boxes, zoo_detector
from hrpose.inference.images import ImageReadError, check_pixels, load_image, to_bgr8
from hrpose.keypoints import BUILTIN, DatasetMeta, flip_pairs_from_names

logger = logging.getLogger(__name__)

IMAGENET_MEAN = np.array(_IMAGENET_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(_IMAGENET_STD, dtype=np.float32)

ImageLike = str | os.PathLike[str] | np.ndarray

#: per-box warnings logged for one image before the rest are only counted
_MAX_BOX_WARNINGS = 5


class NonFiniteOutputError(UserError, ValueError):
    """The model gave NaN/inf keypoints or scores for a person (the message names the image and person)."""


@dataclass
class PersonPose:
    """One person. keypoints (K, 3): x, y in image pixels and the joint score (heatmap maximum);
    box (4,) x, y, w, h in image pixels; score: official rescoring (mean joint score above threshold x
    box score); box_score: the detector's; track_id: identity across video frames (None for images)."""

    keypoints: np.ndarray
    box: np.ndarray
    score: float
    box_score: float = 1.0
    track_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_coco(self, image_id: int | str, category_id: int = 1) -> dict[str, Any]:
        """A COCO keypoint result: keypoints flat [x1, y1, s1, ...], bbox xywh, score."""
        out: dict[str, Any] = {
            "image_id": image_id,
            "category_id": category_id,
            "keypoints": [round(float(v), 3) for v in np.asarray(self.keypoints, dtype=np.float64).reshape(-1)],
            "score": round(float(self.score), 6),
            "bbox": [round(float(v), 3) for v in np.asarray(self.box, dtype=np.float64)[:4]],
            "box_score": round(float(self.box_score), 6),
        }
        if self.track_id is not None:
            out["track_id"] = int(self.track_id)
        return out


@runtime_checkable
class Backend(Protocol):
    """Runs the pose network: normalised crops (N, 3, H, W) float32 (numpy or tensor) -> heatmaps (N, K, h, w).

    `hrpose.backends` classes (EagerBackend, TorchBackend, OnnxRuntimeBackend) fit this protocol.
    """

    def __call__(self, batch: Any) -> np.ndarray: ...


class TorchModelBackend:
    """The model as it is, eval mode, under `torch.inference_mode()`, on the device of its parameters."""

    name = "torch"

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")

    def __call__(self, batch: Any) -> np.ndarray:
        with torch.inference_mode():
            x = batch if isinstance(batch, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(batch))
            out = self.model(x.to(self.device, dtype=torch.float32))
            if isinstance(out, (list, tuple)):  # multi-stage models: the last stage's maps
                out = out[-1]
            return out.float().cpu().numpy()


class _FixedBatch:
    """Feeds a backend whose model was exported with a fixed batch size `size` (pads the last chunk)."""

    def __init__(self, backend: Backend, size: int) -> None:
        self.backend, self.size = backend, max(1, int(size))

    def __call__(self, batch: Any) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        outs = []
        for s in range(0, len(x), self.size):
            chunk = x[s : s + self.size]
            n = len(chunk)
            if n < self.size:
                chunk = np.concatenate([chunk, np.zeros((self.size - n, *chunk.shape[1:]), np.float32)])
            outs.append(np.asarray(self.backend(chunk))[:n])
        return np.concatenate(outs, axis=0)


# backend names of the torch model (see `_torch_backend`); "onnxruntime" runs an exported .onnx file
TORCH_BACKEND_NAMES = ("torch", *SHORT_BACKENDS)


def _torch_backend(name: str, model: nn.Module, *, fold_bn: bool) -> TorchModelBackend | TorchBackend:
    """The torch backends PoseEstimator offers, all on `model`'s device:

    - "torch": fp32 with BatchNorm folded into the convs (a copy: `fold_bn`, i.e. when the estimator built
      the model; a model the caller passes stays the one that runs, so later changes to it are seen);
      equal to the eager model within float rounding;
    - "torch-fast": folded BN, channels_last, fp32, same numbers as "torch" to float rounding: frozen
      TorchScript on a CPU (~1.5x the eager model), CUDA-graph replay on a GPU (~10x at batch 1);
    - "torch-bf16": bf16 with an fp32 heatmap head: oneDNN post-op fusion with pre-packed weights on a CPU
      (AMX / AVX-512 BF16), CUDA graphs on a GPU; reduced precision, see docs/benchmarks.md;
    - "torch-fp16": GPUs only: fp16 with an fp32 head, channels_last, CUDA-graph replay per batch size
      (padded to a power of two); a CPU refuses it (fp16 convs are slower than fp32 there).
    """
    if name == "torch":
        if fold_bn:
            from hrpose.export import fold_batchnorm

            try:
                return TorchModelBackend(fold_batchnorm(model))
            except Exception as e:  # a model FX cannot trace runs unfolded
                logger.debug("BatchNorm folding failed (%s): running the model unfolded", e)
        return TorchModelBackend(model)
    return make_short_backend(name, model)


def _auto_exported(model: nn.Module, input_size_wh: tuple[int, int], runtime: str = "onnxruntime") -> Backend:
    """`backend="auto"` on a CPU: the model exported to ONNX (checked against PyTorch) and run in `runtime`
    ("onnxruntime" or "openvino"); a model the exporter cannot take runs as "torch" instead."""
    from hrpose.backends import onnxruntime_from_model, openvino_from_model
    from hrpose.export import ExportError

    try:
        if runtime == "openvino":
            return openvino_from_model(model, input_size_wh)
        return onnxruntime_from_model(model, input_size_wh)
    except (ExportError, RuntimeError, ValueError, TypeError) as e:
        logger.warning("backend auto: ONNX export failed (%s); running the PyTorch model", str(e).splitlines()[0])
        return _torch_backend("torch", model, fold_bn=True)


def make_inputs(
    image_bgr: np.ndarray, centers: np.ndarray, scales: np.ndarray, input_size_wh: Sequence[int], color_rgb: bool
) -> np.ndarray:
    """Crops of (center, scale) boxes -> (N, 3, H, W) float32 model inputs, exactly as the test pipeline:
    warp (bilinear) in RGB when DATASET.COLOR_RGB else BGR, / 255, minus ImageNet mean, over its std."""
    w, h = int(input_size_wh[0]), int(input_size_wh[1])
    source = np.ascontiguousarray(image_bgr[:, :, ::-1]) if color_rgb else image_bgr
    batch = np.empty((len(centers), h, w, 3), dtype=np.uint8)
    for i in range(len(centers)):
        batch[i] = warp_crop(source, centers[i], scales[i], 0, (w, h))
    x = (batch.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else as torch.device (checked)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} requested but MPS is not available (use --device cpu)")
    return dev


def meta_from_config(cfg: Any) -> DatasetMeta:
    """The keypoint layout of a config: COCO/MPII built in; `custom` from its annotation file's category
    (ROOT/annotations/person_keypoints_<TEST_SET>.json or <TEST_SET>.json), else generic joint names
    `joint_<i>` with HRPOSE.FLIP_PAIRS."""
    name = str(cfg.DATASET.DATASET).lower()
    if name in BUILTIN:
        return BUILTIN[name]
    k = int(cfg.MODEL.NUM_JOINTS)
    hr = cfg.get("HRPOSE", {})
    flip = tuple((int(a), int(b)) for a, b in hr.get("FLIP_PAIRS", []) or [])
    sigmas = tuple(float(s) for s in hr.get("OKS_SIGMAS", []) or [])
    root = Path(str(cfg.DATASET.ROOT))
    for ann in (root / "annotations" / f"person_keypoints_{cfg.DATASET.TEST_SET}.json",
                root / "annotations" / f"{cfg.DATASET.TEST_SET}.json"):  # fmt: skip
        if ann.is_file():
            try:
                from hrpose.data.custom import meta_from_category

                cats = json.loads(ann.read_text(encoding="utf-8")).get("categories", [])
                if cats:
                    meta = meta_from_category(cats[0], source=str(ann), flip_pairs=flip, sigmas=sigmas)
                    if meta.num_joints == k:
                        return meta
            except (ValueError, OSError, ImportError) as e:
                logger.warning("could not read the joint names from %s: %s", ann, e)
    names = tuple(f"joint_{i}" for i in range(k))
    return DatasetMeta(name or "custom", names, flip or flip_pairs_from_names(names), (), sigmas or (0.1,) * k)


class PoseEstimator:
    """Top-down pose estimation on images (see the module docstring).

    config: a YAML path or a CfgNode, or None to use the config stored in `weights` (checkpoints written
    by hrpose carry it); weights: a checkpoint (strict load; official, hrpose or MMPose 1.x/0.x layout;
    `.onnx` for backend="onnxruntime"), default TEST.MODEL_FILE; a model built here without weights is
    refused unless `random_weights=True` (see also `PoseEstimator.from_pretrained(NAME)`);
    device: "auto" | "cpu" | "cuda[:i]" | "mps"; flip_test: average with the mirrored crop;
    backend: "auto" (the fastest backend with fp32 keypoints on this machine, `hrpose.backends.auto_backend`:
    on a CPU the checkpoint exported to ONNX Runtime; "torch" for a `model` passed in), "torch" (BatchNorm
    folded), "torch-fast" (+ channels_last, TorchScript), "torch-bf16", "onnxruntime" (an exported .onnx
    file as `weights`) or any `Backend` callable (see `_torch_backend`);
    batch_size: crops per forward pass;
    detector: person detector used when no boxes are given (default: the model zoo's YOLOX Human-Art
    ONNX detector, fetched into $HRPOSE_HOME when an image first needs boxes; HOG, with a warning, when it
    cannot be had; see `zoo_detector`);
    meta: the keypoint layout, default the one stored in the checkpoint, else from the config
    (`meta_from_config`); color_rgb: the model's input channel order, default the checkpoint's
    (stored metadata; MMPose checkpoints are RGB), else DATASET.COLOR_RGB.
    """

    def __init__(
        self,
        config: str | os.PathLike[str] | Any = None,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        flip_test: bool = True,
        backend: str | Backend = "auto",
        batch_size: int = 16,
        detector: Detector | None = None,
        meta: DatasetMeta | None = None,
        model: nn.Module | None = None,
        color_rgb: bool | None = None,
        random_weights: bool = False,
    ) -> None:
        from hrpose.codec import build_codec
        from hrpose.config import load_config
        from hrpose.models import weights as W

        # metadata saved with hrpose checkpoints: keypoint layout, channel order, config
        ckpt_meta = None
        if weights is not None and isinstance(backend, str) and backend != "onnxruntime" and Path(weights).is_file():
            ckpt_meta = W.read_checkpoint_meta(weights)
        if config is None:
            if ckpt_meta is None:
                raise UserError(
                    f"no config given and the weights {weights or '(none)'} carry none (only checkpoints saved "
                    "by hrpose do): pass the experiment YAML (--cfg), or use a model zoo name (--model)"
                )
            cfg = W.config_from_checkpoint_meta(ckpt_meta, str(weights))
        else:
            cfg = load_config(config) if isinstance(config, (str, os.PathLike)) else config
        self.cfg = cfg
        if meta is None and ckpt_meta is not None:
            meta = W.dataset_meta_from_checkpoint(ckpt_meta, str(weights))
        self.meta = meta or meta_from_config(cfg)
        if self.meta.num_joints != int(cfg.MODEL.NUM_JOINTS):
            raise ValueError(
                f"the keypoint layout {self.meta.name!r} has {self.meta.num_joints} joints but MODEL.NUM_JOINTS "
                f"is {cfg.MODEL.NUM_JOINTS}"
            )
        self.codec = build_codec(cfg, self.meta)
        self.input_size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))  # (w, h)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        if color_rgb is None and ckpt_meta is not None and "color_rgb" in ckpt_meta:
            color_rgb = bool(ckpt_meta["color_rgb"])
        self.color_rgb = bool(cfg.DATASET.COLOR_RGB) if color_rgb is None else bool(color_rgb)
        self.flip_test = flip_test
        self.shift_heatmap = bool(cfg.TEST.SHIFT_HEATMAP) and self.codec.shift_heatmap
        self.post_process = bool(cfg.TEST.POST_PROCESS)
        self.in_vis_thre = float(cfg.TEST.IN_VIS_THRE)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        # None: the model zoo's person detector, fetched when an image first needs boxes (see `detect`)
        self.detector: Detector | None = detector
        self.warn_no_person = True
        self.max_image_pixels: int | None = None  # None: hrpose.image_limits.max_image_pixels()
        self.model: nn.Module | None = None

        auto_export = ""  # "auto" chose ONNX Runtime / OpenVINO for a checkpoint: export it once the model is loaded
        if isinstance(backend, str) and backend == "auto":
            from hrpose.backends import auto_backend

            if model is not None:  # a caller's model runs as given (later changes to it are seen)
                backend = "torch"
            else:
                backend = auto_backend(device=resolve_device(device), weights=weights)
                if backend in ("onnxruntime", "openvino") and Path(str(weights or "")).suffix.lower() != ".onnx":
                    backend, auto_export = "torch", backend
        if not isinstance(backend, str):
            self.backend: Backend = backend
            self.model = model
            self.device = torch.device("cpu")
        elif backend in TORCH_BACKEND_NAMES:
            built_here = model is None
            if model is None:
                from hrpose.models import build_model

                model = build_model(cfg, is_train=False)
                model.to(resolve_device(device))
                weights = weights or (str(cfg.TEST.MODEL_FILE) or None)
                if weights is None and not random_weights:
                    raise UserError(
                        f"no weights for the {cfg.MODEL.NAME} model: give a checkpoint (--weights FILE, or "
                        "TEST.MODEL_FILE in the config) or a model zoo name (--model NAME; `hrpose models` lists "
                        "them); --random-weights runs the untrained network on purpose"
                    )
                if weights is None:
                    logger.warning("--random-weights: the %s model keeps its random initial weights", cfg.MODEL.NAME)
            if weights is not None:
                report = W.load_weights(model, weights, strict=True)
                if color_rgb is None and ckpt_meta is None and report.layout.startswith("mmpose"):
                    self.color_rgb = True  # MMPose models are trained on RGB input
            self.model = model.eval()
            if auto_export:
                self.backend = _auto_exported(self.model, self.input_size, auto_export)
                self.device = torch.device("cpu")
            else:
                self.backend = _torch_backend(backend, self.model, fold_bn=built_here)
                self.device = self.backend.device
        elif backend == "onnxruntime":
            if weights is None or Path(weights).suffix.lower() != ".onnx":
                raise ValueError(
                    f"backend 'onnxruntime' needs an exported .onnx model as weights (hrpose export), got {weights!r}"
                )
            if not Path(weights).is_file():
                raise FileNotFoundError(f"ONNX model not found: {weights}")
            from hrpose.backends import OnnxRuntimeBackend

            ort_backend = OnnxRuntimeBackend(weights)
            batch_dim = ort_backend.session.get_inputs()[0].shape[0]
            self.backend = _FixedBatch(ort_backend, batch_dim) if isinstance(batch_dim, int) else ort_backend
            self.device = torch.device("cpu")
        else:
            raise ValueError(
                f"unknown backend {backend!r}: expected one of {', '.join(TORCH_BACKEND_NAMES)}, onnxruntime"
            )

    @classmethod
    def from_pretrained(
        cls,
        name: str | None = None,
        *,
        device: str | torch.device = "auto",
        backend: str | Backend = "torch",
        detector: Detector | None = None,
        **kwargs: Any,
    ) -> PoseEstimator:
        """A model of the model zoo by name (default `hrpose.zoo.DEFAULT_POSE_MODEL`), fetched on first use into
        $HRPOSE_HOME (`HRPOSE_OFFLINE=1`: only from there), with its packaged config, its checkpoint's key
        layout converted and its channel order; the person detector defaults to the zoo's (`zoo_detector`,
        HOG with a warning when it cannot be had). Other keyword arguments go to the constructor."""
        from hrpose import zoo
        from hrpose.inference.detectors import zoo_detector

        entry = zoo.get_entry(name or zoo.DEFAULT_POSE_MODEL)
        if entry.kind != "pose" or entry.config is None:
            raise UserError(
                f"{entry.name!r} is a {entry.kind} model, not a pose model; pose models: "
                + ", ".join(n for n, e in zoo.REGISTRY.items() if e.kind == "pose")
            )
        if backend == "onnxruntime":
            raise UserError(
                "from_pretrained runs the PyTorch model: for ONNX Runtime export it first (hrpose export) and pass "
                "the .onnx file as weights with backend='onnxruntime'"
            )
        weights = zoo.fetch(entry)
        if detector is None:
            detector = zoo_detector()
        kwargs.setdefault("color_rgb", entry.channel_order == "rgb")
        return cls(zoo.config_path(entry), weights, device=device, backend=backend, detector=detector, **kwargs)

    @classmethod
    def from_model(cls, model: nn.Module, cfg: Any, meta: DatasetMeta | None = None, **kwargs: Any) -> PoseEstimator:
        """An estimator around an already built (and loaded) model, on that model's device."""
        return cls(cfg, None, model=model, meta=meta, **kwargs)

    # ------------------------------------------------------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.meta.joint_names

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return self.meta.skeleton

    @property
    def flip_pairs(self) -> tuple[tuple[int, int], ...]:
        return self.meta.flip_pairs

    # ------------------------------------------------------------------------------------------------
    def read(self, image: ImageLike, *, rgb: bool = False) -> np.ndarray:
        """A path (read upright by EXIF) or an array (BGR unless `rgb`) -> (H, W, 3) uint8 BGR."""
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, max_pixels=self.max_image_pixels)
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:  # a huge array would only fail later, inside the crop warp
                check_pixels(image.shape[1], image.shape[0], name="the image array", max_pixels=self.max_image_pixels)
            return to_bgr8(image, rgb=rgb)
        raise ImageReadError(f"expected an image path or a numpy array, got {type(image).__name__}")

    def detect(self, image_bgr: np.ndarray, key: Any = None) -> np.ndarray:
        """Person boxes (N, 5) from the detector; `key` names the image for file-based detectors."""
        if self.detector is None:
            self.detector = zoo_detector()  # HOG with a warning when it cannot be had
        if getattr(self.detector, "needs_key", False):
            return self.detector(image_bgr, key=key)  # type: ignore[call-arg]
        boxes = self.detector(image_bgr)
        dropped = int(getattr(self.detector, "last_non_finite", 0) or 0)
        if dropped:
            name = "image" if key is None else key
            logger.warning("%s: the detector gave %d boxes with NaN/infinite values: dropped", name, dropped)
        return boxes

    def prepare_boxes(self, boxes: Any, width: int, height: int, name: str = "image") -> np.ndarray:
        """(N, 4) or (N, 5) xywh[+score] -> (M, 5) clipped to the image; zero-area boxes dropped with a message."""
        arr = np.asarray(boxes, dtype=np.float32)
        if arr.size == 0:
            return np.zeros((0, 5), dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] not in (4, 5):
            raise ValueError(f"{name}: boxes must be (N, 4) xywh or (N, 5) xywh+score, got shape {arr.shape}")
        if arr.shape[1] == 4:
            arr = np.concatenate([arr, np.ones((len(arr), 1), np.float32)], axis=1)
        finite = np.asarray(np.isfinite(arr).all(axis=1), dtype=bool)
        clipped = clip_boxes(np.where(finite[:, None], arr, 0), width, height)
        ok = finite & (clipped[:, 2] > 0) & (clipped[:, 3] > 0)
        bad = np.flatnonzero(~ok)
        for i in bad[:_MAX_BOX_WARNINGS]:
            if not finite[i]:
                logger.warning(
                    "%s: box %d %s has a NaN or infinite value (x, y, w, h, score): skipped",
                    name, i, arr[i].tolist(),
                )  # fmt: skip
            else:
                logger.warning(
                    "%s: box %d %s lies outside the %dx%d image or has zero area: skipped",
                    name, i, np.round(arr[i, :4], 1).tolist(), width, height,
                )  # fmt: skip
        if len(bad) > _MAX_BOX_WARNINGS:
            logger.warning(
                "%s: %d more boxes skipped (%d non-finite in all, %d outside the image or of zero area)",
                name, len(bad) - _MAX_BOX_WARNINGS, int((~finite).sum()), int((finite & ~ok).sum()),
            )  # fmt: skip
        return clipped[ok]

    def crops(self, image_bgr: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """boxes (N, >=4) -> model inputs (N, 3, H, W) float32 normalised, centers (N, 2), scales (N, 2)."""
        n = len(boxes)
        centers = np.zeros((n, 2), dtype=np.float32)
        scales = np.zeros((n, 2), dtype=np.float32)
        for i, box in enumerate(boxes):
            centers[i], scales[i] = box_to_center_scale(box[:4], self.aspect_ratio)
        return make_inputs(image_bgr, centers, scales, self.input_size, self.color_rgb), centers, scales

    def heatmaps(self, inputs: np.ndarray) -> np.ndarray:
        """Normalised crops (N, 3, H, W) -> heatmaps (N, K, h, w), flip-tested when `flip_test`, in batches."""
        from hrpose.codec import merge_flip

        outs = []
        for s in range(0, len(inputs), self.batch_size):
            x = inputs[s : s + self.batch_size]
            if self.flip_test:
                both = self.backend(np.concatenate([x, np.ascontiguousarray(x[..., ::-1])], axis=0))
                hm = merge_flip(both[: len(x)], both[len(x) :], self.flip_pairs, shift=self.shift_heatmap)
            else:
                hm = self.backend(x)
            outs.append(np.asarray(hm, dtype=np.float32))
        return np.concatenate(outs, axis=0)

    def rescore(self, maxvals: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
        """Official COCO rescoring: mean of joint scores > TEST.IN_VIS_THRE (0 if none) x box score -> (N,)."""
        s = np.asarray(maxvals, dtype=np.float64).reshape(len(box_scores), -1)
        above = s > self.in_vis_thre
        n = above.sum(axis=1)
        kpt = np.where(n > 0, (s * above).sum(axis=1) / np.maximum(n, 1), 0.0)
        return kpt * np.asarray(box_scores, dtype=np.float64)

    def __call__(
        self, image: ImageLike, boxes: Any = None, *, rgb: bool = False, key: Any = None
    ) -> list[PersonPose]:
        """Poses of the people in `image` (see the class docstring); boxes (N, 4|5) xywh[+score] or None.

        `key` names the image for a detection-file detector (default: the path, when `image` is one).
        """
        if key is None and isinstance(image, (str, os.PathLike)):
            key = image
        name = str(key) if key is not None else "image"
        img = self.read(image, rgb=rgb)
        height, width = img.shape[:2]
        if boxes is None:
            boxes = self.detect(img, key)
        prepared = self.prepare_boxes(boxes, width, height, name)
        if len(prepared) == 0:
            if self.warn_no_person:
                logger.warning("%s: no person found", name)
            return []
        # Crops are made, run and decoded batch_size at a time: memory stays bounded whatever the box count.
        poses: list[PersonPose] = []
        for start in range(0, len(prepared), self.batch_size):
            chunk = prepared[start : start + self.batch_size]
            inputs, centers, scales = self.crops(img, chunk)
            hm = self.heatmaps(inputs)
            del inputs
            preds, maxvals = self.codec.decode(hm, centers, scales, post_process=self.post_process)
            scores = self.rescore(maxvals, chunk[:, 4])
            kpts = np.concatenate([preds, maxvals], axis=2).astype(np.float32)
            bad = ~(np.isfinite(kpts).reshape(len(chunk), -1).all(axis=1) & np.isfinite(scores))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise NonFiniteOutputError(
                    f"{name}: the model gave NaN/inf keypoints or scores for person {start + i} (box "
                    f"{np.round(chunk[i, :4], 1).tolist()}; {int(bad.sum())} of the {len(chunk)} people in this "
                    "batch); the weights or the backend are broken (check them with `hrpose test`)"
                )
            poses.extend(
                PersonPose(kpts[i], chunk[i, :4].copy(), float(scores[i]), float(chunk[i, 4]))
                for i in range(len(chunk))
            )
        return poses

    def predict_many(self, images: Sequence[ImageLike], **kwargs: Any) -> list[list[PersonPose]]:
        return [self(im, **kwargs) for im in images]
