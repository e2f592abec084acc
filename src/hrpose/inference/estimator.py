"""`PoseEstimator`: people's keypoints in an image, top-down (person boxes -> crops -> heatmaps -> keypoints).

    est = PoseEstimator.from_config("experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml", "pose_hrnet_w32.pth")
    est = PoseEstimator.from_pretrained("hrnet_w32_coco_256x192")   # or a model zoo name
    poses = est("photo.jpg")                      # boxes from the default detector (the zoo's YOLOX)
    poses = est(frame_bgr, boxes=[[x, y, w, h]])  # your own boxes

Images are file paths or numpy arrays. **Arrays are BGR** (OpenCV's order, what `cv2.imread` and
`cv2.VideoCapture` give); pass `rgb=True` for RGB arrays. Grayscale, 16-bit, float and RGBA arrays are
converted to 8-bit BGR (`hrpose.inference.images.to_bgr8`). Files are read upright by their EXIF
orientation, so keypoints are in the coordinates of the upright image (see `hrpose.inference.images`).

Each person is cropped exactly as the official test pipeline crops a detection (box -> center/scale
padded by 1.25 to the model aspect, affine warp), normalised as in training (DATASET.COLOR_RGB channel
order, ImageNet mean/std), then goes through the same test-time pipeline as `hrpose test`
(`hrpose.pipeline`: the backend with the flip test, decoded by the configured codec back to image pixels,
rescored as the official COCO evaluation does: mean score of the joints above TEST.IN_VIS_THRE times the
box score).

The constructor takes the parts (a backend, a codec, a keypoint layout, test settings) and reads no file;
`from_config` (YAML + checkpoint), `from_pretrained` (model zoo) and `from_model` (a built model) load them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hrpose import zoo
from hrpose.codec import build_codec
from hrpose.errors import BackendUnavailableError, DeviceError, UserError
from hrpose.geometry import box_to_center_scale, make_inputs
from hrpose.images import ImageReadError, check_pixels, load_image, to_bgr8
from hrpose.inference.detectors import Detector, clip_boxes, zoo_detector
from hrpose.keypoints import DatasetMeta
from hrpose.models.loading import load as load_model
from hrpose.pipeline import InferenceSettings, infer_heatmaps, predict_crops, rescore
from hrpose.runtime import REGISTRY, Backend, make_backend, resolve_device
from hrpose.runtime.registry import canonical_name

__all__ = ["DeviceError", "ImageLike", "NonFiniteOutputError", "PersonPose", "PoseEstimator", "make_inputs",
           "resolve_device"]  # fmt: skip

logger = logging.getLogger(__name__)


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


# the backend names PoseEstimator, predict and serve accept besides "auto" (the runtime's registry)
TORCH_BACKEND_NAMES = tuple(REGISTRY)


class PoseEstimator:
    """Top-down pose estimation on images (see the module docstring).

    backend: runs the network (a `hrpose.runtime.Backend`, or any callable normalised crops (N, 3, H, W)
    -> heatmaps (N, K, h, w)); codec: decodes the heatmaps (`hrpose.codec.HeatmapCodec`); meta: the
    keypoint layout (joint names, flip pairs, skeleton); settings: the test-time switches (flip test, shift,
    post-processing, rescoring threshold; `InferenceSettings.from_config`); color_rgb: the model's input channel
    order; input_size: (w, h) of the crops, default the codec's; detector: person detector used when no
    boxes are given (default: the model zoo's YOLOX Human-Art ONNX detector, fetched into $HRPOSE_HOME when
    an image first needs boxes; HOG, with a warning, when it cannot be had; see `zoo_detector`);
    batch_size: people per backend call; model: the torch model behind the backend, if any; cfg: the
    config the parts came from, if any. Nothing is read from files here: see `from_config` (an experiment
    YAML and a checkpoint), `from_pretrained` (model zoo) and `from_model` (a model already built).
    """

    def __init__(
        self,
        backend: Backend | Callable[[Any], np.ndarray],
        codec: Any = None,
        meta: DatasetMeta | None = None,
        *,
        settings: InferenceSettings | None = None,
        color_rgb: bool = False,
        input_size: tuple[int, int] | None = None,
        detector: Detector | None = None,
        batch_size: int = 16,
        model: nn.Module | None = None,
        cfg: Any = None,
        max_image_pixels: int | None = None,
        warn_no_person: bool = True,
    ) -> None:
        if isinstance(backend, (str, os.PathLike)) or (cfg is None and hasattr(backend, "MODEL")):
            raise TypeError(
                "PoseEstimator(backend, codec, meta) takes the parts; to load an experiment config and weights use "
                "PoseEstimator.from_config(config, weights, ...) (or from_pretrained(NAME) / from_model(model, cfg))"
            )
        if not callable(backend):
            raise TypeError(f"backend must be callable (crops -> heatmaps), got {type(backend).__name__}")
        if codec is None or meta is None:
            raise TypeError(
                "PoseEstimator(backend, codec, meta) needs the codec (hrpose.codec.build_codec) and the keypoint "
                "layout (hrpose.keypoints.DatasetMeta); PoseEstimator.from_config(config, weights) builds all three"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.codec = codec
        self.meta = meta
        self.settings = settings if settings is not None else InferenceSettings()
        size = input_size if input_size is not None else tuple(int(v) for v in codec.input_size)
        self.input_size: tuple[int, int] = (int(size[0]), int(size[1]))  # (w, h)
        self.aspect_ratio = self.input_size[0] / self.input_size[1]
        self.color_rgb = bool(color_rgb)
        self.batch_size = int(batch_size)
        # None: the model zoo's person detector, fetched when an image first needs boxes (see `detect`)
        self.detector: Detector | None = detector
        self.model = model
        self.cfg = cfg
        self.device: torch.device = getattr(backend, "device", None) or torch.device("cpu")
        self.warn_no_person = warn_no_person  # False: the caller reports images without people itself
        self.max_image_pixels = max_image_pixels  # None: hrpose.image_limits.max_image_pixels()

    @classmethod
    def from_config(
        cls,
        config: str | os.PathLike[str] | Any = None,
        weights: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "auto",
        flip_test: bool = True,
        backend: str | Backend | Callable[[Any], np.ndarray] = "auto",
        batch_size: int = 16,
        detector: Detector | None = None,
        meta: DatasetMeta | None = None,
        model: nn.Module | None = None,
        color_rgb: bool | None = None,
        random_weights: bool = False,
        max_image_pixels: int | None = None,
        warn_no_person: bool = True,
        int8_calib: str | os.PathLike[str] | None = None,
        calib_set: str | None = None,
        max_ap_drop: float | None = 0.5,
    ) -> PoseEstimator:
        """An estimator from an experiment config and a checkpoint: `hrpose.models.loading.load` (the model, its
        config, keypoint layout, channel order and input size) + `hrpose.runtime.make_backend` + the constructor.

        config: a YAML path or a CfgNode, or None to use the config stored in `weights` (checkpoints written
        by hrpose carry it); weights: a checkpoint (strict load; official, hrpose or MMPose 1.x/0.x layout;
        an exported `.onnx` for backend="onnxruntime"/"openvino"), default TEST.MODEL_FILE; a model built here
        without weights is refused unless `random_weights=True`; device: "auto" | "cpu" | "cuda[:i]" | "mps";
        flip_test: average with the mirrored crop (the other test switches come from the config's TEST.*);
        backend: "auto" (the fastest backend with fp32 keypoints on this machine, `hrpose.runtime.auto_backend`;
        "torch" for a `model` passed in), a name of `hrpose.runtime.REGISTRY` (see docs/architecture.md), or any
        `Backend` callable; meta: the keypoint layout, default the checkpoint's, else the config's
        (`hrpose.data.layout.layout_from_config`: may read DATASET.ROOT's annotation file); color_rgb: the
        model's input channel order, default the checkpoint's (MMPose checkpoints are RGB), else
        DATASET.COLOR_RGB; model: an already built (and loaded) model to run itself (see `from_model`);
        detector, max_image_pixels, warn_no_person: see the class;
        backend "openvino-int8" (CPU int8, NNCF): `weights` an IR (.xml) from `hrpose export --format openvino
        --int8-calib`, or a checkpoint quantised on first use from the people of `int8_calib` (`calib_set`,
        accuracy control with `max_ap_drop` AP points; None: none; `hrpose.quantize.CalibrationFolder`).
        """
        ir_weights = weights is not None and Path(weights).suffix.lower() == ".xml"

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(backend, str):
            backend = canonical_name(backend)[0]  # an unknown name is refused before any file is read
        if backend in ("onnxruntime", "onnxruntime-int8"):  # an estimator runs an exported graph as given
            if weights is None or Path(weights).suffix.lower() != ".onnx":
                raise ValueError(f"backend {backend!r} needs an exported .onnx model as weights (hrpose export), "
                                 f"got {weights!r}")  # fmt: skip
            if not Path(weights).is_file():
                raise FileNotFoundError(f"ONNX model not found: {weights}")
        if ir_weights and backend in ("auto", "torch"):
            backend = "openvino-int8"  # an IR runs in OpenVINO: there is no torch model in it
        graph_meta = None
        if ir_weights and isinstance(backend, str):  # an OpenVINO IR carries hrpose's metadata in its rt_info
            from hrpose.runtime.openvino_int8 import read_ir

            graph_meta = read_ir(weights)[1]  # type: ignore[arg-type]
        dev = resolve_device(device) if model is None else None
        if backend == "openvino-int8" and dev is not None and dev.type != "cpu":
            from hrpose.runtime.openvino_int8 import GPU_REFUSAL

            raise BackendUnavailableError(GPU_REFUSAL)  # before a model is built on the GPU
        loaded = load_model(config, weights, device=dev, layout=meta, color_rgb=color_rgb, model=model,
                            random_weights=random_weights, build=isinstance(backend, str),
                            graph_meta=graph_meta)  # fmt: skip
        runner: Backend | Callable[[Any], np.ndarray]
        if not isinstance(backend, str):
            runner = backend
        else:
            if backend == "auto" and loaded.model is not None and not loaded.built:  # a caller's model runs as given
                backend = "torch"
            options: dict[str, Any] = {}
            if backend == "openvino-int8":  # an IR is checked against the config; a model quantised on its people
                options["cfg"] = loaded.cfg
                if loaded.model is not None:
                    from hrpose.quantize import CalibrationFolder

                    options["int8_quantizer"] = CalibrationFolder(
                        loaded.cfg, int8_calib, calib_set, dataset_meta=loaded.layout, color_rgb=loaded.color_rgb,
                        max_ap_drop=max_ap_drop, flip_test=flip_test,
                    )  # fmt: skip
            runner = make_backend(backend, loaded.model if loaded.model is not None else str(loaded.weights),
                                  dev, input_size=loaded.input_size, fold_bn=loaded.built, **options)  # fmt: skip
        return cls(runner, build_codec(loaded.cfg, loaded.layout), loaded.layout,
                   settings=InferenceSettings.from_config(loaded.cfg, flip_test=flip_test), color_rgb=loaded.color_rgb,
                   input_size=loaded.input_size, detector=detector, batch_size=batch_size, model=loaded.model,
                   cfg=loaded.cfg, max_image_pixels=max_image_pixels,
                   warn_no_person=warn_no_person)  # fmt: skip

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
        HOG with a warning when it cannot be had). Other keyword arguments go to `from_config`."""
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
        entry, weights = zoo.fetch_pose(entry)  # the default model falls back to the official W32 (one line)
        if detector is None:
            detector = zoo_detector()
        kwargs.setdefault("color_rgb", entry.channel_order == "rgb")
        return cls.from_config(zoo.config_path(entry), weights, device=device, backend=backend, detector=detector,
                               **kwargs)  # fmt: skip

    @classmethod
    def from_model(cls, model: nn.Module, cfg: Any, meta: DatasetMeta | None = None, **kwargs: Any) -> PoseEstimator:
        """An estimator around an already built (and loaded) model, on that model's device; the model itself
        runs ("torch": later changes to it are seen). Other keyword arguments go to `from_config`."""
        return cls.from_config(cfg, None, model=model, meta=meta, **kwargs)

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
        """Normalised crops (N, 3, H, W) -> heatmaps (N, K, h, w), flip-tested when `flip_test`, in batches
        (`hrpose.pipeline.infer_heatmaps`)."""
        outs = [infer_heatmaps(self.backend, inputs[s : s + self.batch_size], self.flip_pairs, self.settings,
                              one_call=True) for s in range(0, len(inputs), self.batch_size)]  # fmt: skip
        return np.concatenate(outs, axis=0)

    def rescore(self, keypoints: np.ndarray, box_scores: np.ndarray) -> np.ndarray:
        """Official COCO rescoring (`hrpose.pipeline.rescore`): mean of joint scores > TEST.IN_VIS_THRE (0 if
        none) x box score -> (N,). keypoints: (N, K, 3) (joint scores in [..., 2]) or the joint scores (N, K)."""
        k = np.asarray(keypoints)
        if k.ndim == 2 or (k.ndim == 3 and k.shape[2] == 1):  # joint scores only
            k = np.concatenate([np.zeros((*k.shape[:2], 2), k.dtype), k.reshape(*k.shape[:2], 1)], axis=2)
        return rescore(k, box_scores, self.settings.in_vis_thre)

    def __call__(
        self, image: ImageLike, boxes: Any = None, *, rgb: bool = False, key: Any = None
    ) -> list[PersonPose]:
        """Poses of the people in `image` (see the class docstring); boxes (N, 4|5) xywh[+score] or None.

        `key` names the image for a detection-file detector (default: the path, when `image` is one).
        """
        return self._poses([self._people(image, boxes, rgb, key)])[0]

    def predict_many(
        self, images: Sequence[ImageLike], boxes: Sequence[Any] | None = None, *, rgb: bool = False,
        keys: Sequence[Any] | None = None, batch_size: int | None = None,
    ) -> list[list[PersonPose]]:  # fmt: skip
        """Poses of the people of several images, `[self(image) for image in images]` to float rounding, but
        the people of all of them go through the backend together, `batch_size` crops a call (default: the
        estimator's; an image with one person no longer means a backend call of one). boxes: one entry per
        image ((N, 4|5) or None: the detector's); keys: one name per image (see `__call__`). An error in any
        image raises."""
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"predict_many: {len(images)} images but {len(boxes)} box lists")
        if keys is not None and len(keys) != len(images):
            raise ValueError(f"predict_many: {len(images)} images but {len(keys)} keys")
        people = [self._people(im, None if boxes is None else boxes[i], rgb, None if keys is None else keys[i])
                  for i, im in enumerate(images)]  # fmt: skip
        return self._poses(people, batch_size)

    def _people(self, image: ImageLike, boxes: Any, rgb: bool, key: Any) -> tuple[np.ndarray, np.ndarray, str]:
        """One image read, its boxes (given or detected) prepared: (image BGR, boxes (M, 5), name)."""
        if key is None and isinstance(image, (str, os.PathLike)):
            key = image
        name = str(key) if key is not None else "image"
        img = self.read(image, rgb=rgb)
        height, width = img.shape[:2]
        if boxes is None:
            boxes = self.detect(img, key)
        prepared = self.prepare_boxes(boxes, width, height, name)
        if len(prepared) == 0 and self.warn_no_person:
            logger.warning("%s: no person found", name)
        return img, prepared, name

    def _poses(self, people: Sequence[tuple[np.ndarray, np.ndarray, str]],
               batch_size: int | None = None) -> list[list[PersonPose]]:  # fmt: skip
        """The people of the images (`_people`), `batch_size` crops at a time across images, through the
        shared pipeline (`hrpose.pipeline.predict_crops`): crops are made, run and decoded a batch at a
        time, so memory stays bounded whatever the box count."""
        out: list[list[PersonPose]] = [[] for _ in people]
        stream = [(i, j) for i, (_, rows, _) in enumerate(people) for j in range(len(rows))]
        per_call = int(batch_size or self.batch_size)
        for start in range(0, len(stream), per_call):
            chunk = stream[start : start + per_call]
            parts = []  # (image index, first person, boxes) of each image in this batch
            for i in dict.fromkeys(i for i, _ in chunk):
                js = [j for k, j in chunk if k == i]
                parts.append((i, js[0], people[i][1][js[0] : js[-1] + 1]))
            made = [self.crops(people[i][0], rows) for i, _, rows in parts]
            inputs = made[0][0] if len(made) == 1 else np.concatenate([m[0] for m in made])
            centers = np.concatenate([m[1] for m in made])
            scales = np.concatenate([m[2] for m in made])
            rows_all = np.concatenate([rows for _, _, rows in parts])
            del made
            kpts, scores = predict_crops(self.backend, inputs, centers, scales, rows_all[:, 4], codec=self.codec,
                                         flip_pairs=self.flip_pairs, settings=self.settings,
                                         one_call=True)  # fmt: skip
            del inputs
            bad = ~(np.isfinite(kpts).reshape(len(chunk), -1).all(axis=1) & np.isfinite(scores))
            if bad.any():
                b = int(np.flatnonzero(bad)[0])
                i, j = chunk[b]
                raise NonFiniteOutputError(
                    f"{people[i][2]}: the model gave NaN/inf keypoints or scores for person {j} (box "
                    f"{np.round(rows_all[b, :4], 1).tolist()}; {int(bad.sum())} of the {len(chunk)} people in this "
                    "batch); the weights or the backend are broken (check them with `hrpose test`)"
                )
            for b, (i, _) in enumerate(chunk):
                row = rows_all[b]
                out[i].append(PersonPose(kpts[b], row[:4].copy(), float(scores[b]), float(row[4])))
        return out
