"""`PoseDataset`: records -> (input, target, target_weight, meta) for top-down training and testing.

Reading, augmenting, cropping and encoding are separate steps (`images.read_image`, `augment.sample_aug_params`
/ `augment.apply`, `HeatmapCodec.encode`); this class only wires them and handles unreadable images.
`build_dataset(cfg, split, is_train)` is the one place that reads the config.
"""

from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from hrpose.codec import HeatmapCodec, build_codec
from hrpose.config import ConfigError
from hrpose.data.augment import IDENTITY, AugParams, CropResult, apply, plan, sample_aug_params
from hrpose.data.coco import (
    coco_annotation_file,
    coco_image_dir,
    load_coco_records,
    load_detection_records,
    read_coco_keypoint_file,
)
from hrpose.data.custom import meta_from_category
from hrpose.data.mpii import load_mpii_records, mpii_annotation_file, mpii_gt_file
from hrpose.data.records import AnnotationError, PersonRecord, select_data
from hrpose.errors import MissingFileError
from hrpose.geometry import PIXEL_STD
from hrpose.images import ImageReadError, image_size_from_header, read_image
from hrpose.keypoints import COCO, MPII, DatasetMeta

logger = logging.getLogger(__name__)

DATASETS = ("coco", "mpii", "custom")


@dataclass(frozen=True)
class AugConfig:
    """Training augmentation settings (DATASET.SCALE_FACTOR, ROT_FACTOR, FLIP, PROB_HALF_BODY, ...)."""

    scale_factor: float = 0.35
    rotation_factor: float = 45.0
    flip: bool = True
    prob_half_body: float = 0.0
    num_joints_half_body: int = 8


@dataclass(frozen=True)
class EvalSpec:
    """How `PoseDataset.evaluate` scores predictions: COCO keypoint AP (annotation file) or MPII PCKh (.mat)."""

    kind: str  # "coco" | "mpii"
    image_set: str
    ground_truth: Path | None = None  # COCO annotation json / MPII gt_<set>.mat; None = no ground truth
    in_vis_thre: float = 0.2
    oks_thre: float = 0.9
    soft_nms: bool = False
    category_id: int = 1
    rank: int = 0


@dataclass(eq=False, repr=False)
class PoseDataset(Dataset):
    """Top-down pose samples.

    records: the persons (one sample each); meta: their keypoint layout; codec: heatmap encoder;
    input_size_wh: model input (w, h); aug: training augmentation (None = test mode, no augmentation);
    seed: per-item generators are seeded by (seed, epoch, index), so any worker count gives the same
    samples (None = fresh OS entropy per item); skip_bad_images: unreadable images are warned about,
    recorded in `bad_images` (path -> reason, per process) and replaced by the next readable record; the
    item's meta then has `index` != `requested_index`, which is how a DataLoader with worker processes
    counts substitutions in the main process.

    Item: input float32 (3, H, W) normalised; target (K, h, w) float32; target_weight (K, 1) float32;
    sample_format "uint8" (HRPOSE.DEVICE_INPUT): input is the uint8 (3, H, W) crop and target/target_weight
    are empty; the trainer normalises on its device (`fastcrop.normalize_on_device`, the same values) and makes
    the targets there from meta joints/joints_vis (`device_targets.DeviceTargetEncoder`, the same Gaussians).
    reduced_decode (HRPOSE.REDUCED_DECODE, opt-in, changes pixels): JPEGs are decoded at 1/2 or 1/4 size by
    libjpeg's DCT scaling when the person's box is at least that many times larger than the crop, the affine
    matrix adjusted exactly (docs/benchmarks.md states the measured pixel difference).
    cache_last_image (HRPOSE.GROUP_BY_IMAGE): the last decoded image is kept (one entry per process, keyed by
    file and decoding mode), so the people of one image in a row (`grouped.ImageGroupedSampler`) decode it
    once; the samples are the same bit for bit (the cached array is only read).
    meta dict: image, image_id, index (the record actually returned), requested_index (the index asked for),
    center (2,), scale (2,), rotation,
    score, area, joints (K, 3) crop pixels (official: visible joints transformed), joints_vis (K, 3).
    """

    records: list[PersonRecord]
    meta: DatasetMeta
    codec: HeatmapCodec
    input_size_wh: tuple[int, int]
    aug: AugConfig | None = None
    color_rgb: bool = True
    seed: int | None = None
    skip_bad_images: bool = True
    eval_spec: EvalSpec | None = None
    sample_format: str = "float"
    reduced_decode: bool = False
    cache_last_image: bool = False
    epoch: int = 0
    bad_images: dict[str, str] = field(default_factory=dict)
    _last: tuple[tuple[str, bool, int | None], np.ndarray] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__init__()
        self.input_size_wh = (int(self.input_size_wh[0]), int(self.input_size_wh[1]))
        for i, rec in enumerate(self.records):
            if rec.num_joints != self.meta.num_joints:
                raise ValueError(f"record {i} ({rec.image}) has {rec.num_joints} joints but meta "
                                 f"{self.meta.name!r} has {self.meta.num_joints}")  # fmt: skip

    def __repr__(self) -> str:
        mode = "train" if self.aug is not None else "test"
        return (f"PoseDataset({self.meta.name!r}, {len(self.records)} records, {mode}, "
                f"input_size_wh={self.input_size_wh}, codec={self.codec!r})")  # fmt: skip

    @property
    def is_train(self) -> bool:
        return self.aug is not None

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation stream (call before each epoch; workers see it when they are re-created)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng()
        return np.random.default_rng([self.seed, self.epoch, index])

    def sample_params(self, index: int) -> AugParams:
        if self.aug is None:
            return IDENTITY
        a = self.aug
        return sample_aug_params(self.rng(index), a.scale_factor, a.rotation_factor, a.flip,
                                 prob_half_body=a.prob_half_body, num_joints_half_body=a.num_joints_half_body,
                                 num_visible=self.records[index].num_visible)  # fmt: skip

    def load_image(self, index: int, *, bgr: bool = False) -> tuple[int, np.ndarray]:
        """The image of record `index`, or with skipping on, of the next record whose image reads
        (in the dataset's colour order, or BGR as decoded when `bgr`)."""
        n = len(self.records)
        i = index
        for _ in range(n):
            path = self.records[i].image
            if path not in self.bad_images:
                try:
                    return i, self._read(path, self.color_rgb and not bgr)
                except ImageReadError as e:
                    if not self.skip_bad_images:
                        raise
                    self.bad_images[path] = e.reason
                    msg = f"skipping unreadable image ({len(self.bad_images)} so far): {e}"
                    logger.warning(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=2)
            i = (i + 1) % n
        path = self.records[index].image
        reason = f"no readable image in the whole dataset ({n} records)"
        raise ImageReadError(f"cannot read image {path}: {reason}", path=path, reason=reason)

    def _read(self, path: str, rgb: bool, reduce_flag: int | None = None) -> np.ndarray:
        """`read_image`, through the one-entry cache when `cache_last_image` (errors are never cached)."""
        if not self.cache_last_image:
            return read_image(path, rgb, reduce_flag=reduce_flag)
        key = (path, rgb, reduce_flag)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        self._last = None  # the old image is freed before the next one is decoded
        image = read_image(path, rgb, reduce_flag=reduce_flag)
        image.flags.writeable = False  # shared by the people of the image: only ever read
        self._last = (key, image)
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        index = int(index)
        if self.reduced_decode:
            i, item = self._reduced_item(index)
        else:
            # decoded BGR; the colour order is swapped on the crop (the same pixels, a fraction of the work)
            i, image = self.load_image(index, bgr=True)
            item = self.make_item(i, image, self.sample_params(i), bgr=True)
        item[3]["requested_index"] = index
        return item

    def _reduced_item(self, index: int) -> tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]]:
        from hrpose.data.fastcrop import REDUCED_FLAGS, reduced_factor, scale_for_reduced

        rec = self.records[index]
        params = self.sample_params(index)
        try:
            width, _, is_jpeg = image_size_from_header(rec.image)
        except (OSError, ValueError):
            i, image = self.load_image(index, bgr=True)  # unknown size: the full decode and its checks
            return i, self.make_item(i, image, self.sample_params(i), bgr=True)
        res = plan(rec, params, width, input_size_wh=self.input_size_wh, flip_pairs=self.meta.flip_pairs,
                   upper_body_ids=self.meta.upper_body_ids)  # fmt: skip
        # the matrix for the unmirrored image: mirrored x = W - 1 - x
        m = res.trans @ (np.array([[-1.0, 0, width - 1.0], [0, 1, 0], [0, 0, 1]]) if params.flip else np.eye(3))
        factor = reduced_factor(m) if is_jpeg else 1  # DCT scaling exists for JPEGs only
        try:
            image = self._read(rec.image, False, REDUCED_FLAGS.get(factor))
        except ImageReadError:
            i, image = self.load_image(index, bgr=True)  # the usual skipping rules and messages
            return i, self.make_item(i, image, self.sample_params(i), bgr=True)
        if image.shape[1] == width:
            factor = 1  # decoded at full size after all
        elif image.shape[1] != -(-width // factor):  # libjpeg's scaled width is ceil(width / factor)
            i, image = self.load_image(index, bgr=True)
            return i, self.make_item(i, image, params, bgr=True)
        m = scale_for_reduced(m, factor) if factor > 1 else m
        res.crop = cv2.warpAffine(image, m[:2], self.input_size_wh, flags=cv2.INTER_LINEAR)
        return index, self._finish(index, res, bgr=True)

    def make_item(
        self, index: int, image: np.ndarray, params: AugParams, *, bgr: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Deterministic part of __getitem__: record `index` + its image + given params -> the sample.
        `bgr`: the image is BGR as decoded (the dataset's colour order is then made on the crop)."""
        rec = self.records[index]
        res = apply(image, rec, params, input_size_wh=self.input_size_wh, flip_pairs=self.meta.flip_pairs,
                    upper_body_ids=self.meta.upper_body_ids)  # fmt: skip
        return self._finish(index, res, bgr=bgr)

    def _finish(
        self, index: int, res: CropResult, *, bgr: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        from hrpose.data.fastcrop import bgr_to_rgb, normalize_lut

        rec = self.records[index]
        crop = bgr_to_rgb(res.crop) if bgr and self.color_rgb else res.crop
        meta = {
            "image": rec.image,
            "image_id": rec.image_id,
            "index": index,
            "requested_index": index,
            "center": np.asarray(res.center, dtype=np.float64),
            "scale": np.asarray(res.scale, dtype=np.float64),
            "rotation": res.rotation,
            "score": float(rec.score),
            "area": float(rec.area),
            "joints": res.joints_crop,
            "joints_vis": res.joints_vis,
        }
        if self.sample_format == "uint8":
            # normalisation and targets on the trainer's device (see the class docstring)
            empty = torch.empty(0, dtype=torch.float32)
            return torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))), empty, empty, meta
        target, target_weight = self.codec.encode(res.joints_crop, res.joints_vis)
        return normalize_lut(crop), torch.from_numpy(target), torch.from_numpy(target_weight), meta

    # ---------------------------------------------------------------------------------------------------
    def boxes(self) -> np.ndarray:
        """(N, 6) center x, y, scale w, h, area (scale * 200 squared), score: the official `all_boxes`."""
        out = np.zeros((len(self.records), 6), dtype=np.float64)
        for i, r in enumerate(self.records):
            out[i, :2] = r.center
            out[i, 2:4] = r.scale
            out[i, 4] = float(np.prod(np.asarray(r.scale, dtype=np.float64) * PIXEL_STD))
            out[i, 5] = r.score
        return out

    def evaluate(
        self,
        preds_img: np.ndarray,
        output_dir: str | Path,
        boxes: np.ndarray | None = None,
        image_ids: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[OrderedDict[str, float], float]:
        """Score predictions (N, K, 3) (image x, y, joint score), one per record in order unless `image_ids`
        and `boxes` (N, 6) say otherwise -> (named metrics, the headline number: COCO AP or MPII mean PCKh)."""
        spec = self.eval_spec
        if spec is None:
            raise ValueError("this PoseDataset has no evaluation settings (eval_spec is None)")
        preds_img = np.asarray(preds_img, dtype=np.float64)
        if spec.kind == "mpii":
            from hrpose.evaluation.mpii import evaluate_mpii

            name_value = evaluate_mpii(preds_img, spec.ground_truth, output_dir)
            return name_value, float(name_value.get("Mean", 0.0))
        from hrpose.evaluation.coco import evaluate_coco

        boxes = self.boxes() if boxes is None else np.asarray(boxes, dtype=np.float64)
        ids = (np.array([r.image_id for r in self.records]) if image_ids is None
               else np.asarray(image_ids)).astype(np.int64)  # fmt: skip
        name_value = evaluate_coco(preds_img, boxes, ids, output_dir, spec.ground_truth, spec.image_set,
                                   in_vis_thre=spec.in_vis_thre, oks_thre=spec.oks_thre, soft_nms=spec.soft_nms,
                                   sigmas=self.meta.sigmas or None, category_id=spec.category_id,
                                   rank=spec.rank)  # fmt: skip
        return name_value, float(name_value.get("AP", 0.0))


def _hr(cfg: Any, key: str, default: Any) -> Any:
    node = cfg.get("HRPOSE", None)
    return default if node is None else node.get(key, default)


def _require_file(path: Path, set_key: str, image_set: str) -> None:
    """The split's annotation file, or a MissingFileError naming it and the keys that led there."""
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "not found"
        raise MissingFileError(f"annotation file {path} {what} (DATASET.ROOT + {set_key} {image_set!r}); check "
                               f"DATASET.ROOT and {set_key}")  # fmt: skip


def build_dataset(cfg: Any, split: str, is_train: bool) -> PoseDataset:
    """PoseDataset for `split` "train" (DATASET.TRAIN_SET) or "test" (DATASET.TEST_SET).

    GT boxes when `is_train` or TEST.USE_GT_BBOX, else TEST.COCO_BBOX_FILE detections (COCO/custom);
    DATASET.SELECT_DATA filters training records; augmentation only when `is_train`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    kind = str(cfg.DATASET.DATASET).lower()
    if kind not in DATASETS:
        raise ConfigError(f"DATASET.DATASET {cfg.DATASET.DATASET!r} is not supported; expected one of {DATASETS}")
    if str(cfg.DATASET.DATA_FORMAT).lower() == "zip":
        raise ConfigError("DATASET.DATA_FORMAT 'zip' is not supported: unpack the images, DATASET.DATA_FORMAT jpg")
    root = Path(cfg.DATASET.ROOT)
    image_set = str(cfg.DATASET.TRAIN_SET if split == "train" else cfg.DATASET.TEST_SET)
    set_key = "DATASET.TRAIN_SET" if split == "train" else "DATASET.TEST_SET"
    if not root.is_dir():
        raise MissingFileError(f"DATASET.ROOT {str(root)!r} is not a folder (with DATA_DIR joined in front); set "
                               "DATASET.ROOT (or --dataDir) to the dataset folder")  # fmt: skip
    input_size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    aspect_ratio = input_size[0] * 1.0 / input_size[1]
    use_gt = bool(is_train or cfg.TEST.USE_GT_BBOX)

    records: list[PersonRecord]
    if kind == "mpii":
        meta = MPII
        ann_file = mpii_annotation_file(root, image_set)
        _require_file(ann_file, set_key, image_set)
        records = load_mpii_records(ann_file, root / "images", meta.num_joints, with_joints=image_set != "test")
        gt_mat = mpii_gt_file(root, image_set)
        spec = EvalSpec("mpii", image_set, gt_mat if gt_mat.is_file() else None)
    else:
        ann_path = coco_annotation_file(root, image_set, allow_plain=kind == "custom")
        _require_file(ann_path, set_key, image_set)
        kp_file = read_coco_keypoint_file(ann_path, require_annotations=use_gt)
        if kind == "coco":
            meta = COCO
        else:
            meta = meta_from_category(
                kp_file.category, source=str(ann_path), flip_pairs=list(_hr(cfg, "FLIP_PAIRS", [])),
                sigmas=list(_hr(cfg, "OKS_SIGMAS", [])), upper_body_ids=list(_hr(cfg, "UPPER_BODY_IDS", [])),
            )  # fmt: skip
        if kp_file.joint_names and len(kp_file.joint_names) != meta.num_joints:
            raise AnnotationError(f"{ann_path}: category lists {len(kp_file.joint_names)} keypoints, expected "
                             f"{meta.num_joints} for DATASET.DATASET {kind!r}")  # fmt: skip
        image_dir = coco_image_dir(root, image_set)
        if use_gt:
            records, _ = load_coco_records(kp_file, image_dir, aspect_ratio, meta.num_joints)
        else:
            records = load_detection_records(cfg.TEST.COCO_BBOX_FILE, kp_file.images, image_dir, aspect_ratio,
                                             meta.num_joints, float(cfg.TEST.IMAGE_THRE),
                                             category_id=kp_file.category_id)  # fmt: skip
        spec = EvalSpec("coco", image_set, ann_path if "test" not in image_set else None,
                        in_vis_thre=float(cfg.TEST.IN_VIS_THRE), oks_thre=float(cfg.TEST.OKS_THRE),
                        soft_nms=bool(cfg.TEST.SOFT_NMS), category_id=kp_file.category_id,
                        rank=int(cfg.get("RANK", 0)))  # fmt: skip

    if not records:
        raise AnnotationError(f"DATASET.{'TRAIN_SET' if split == 'train' else 'TEST_SET'} {image_set!r} under "
                              f"{root}: no usable person records (see the log for what was skipped)")  # fmt: skip
    if int(cfg.MODEL.NUM_JOINTS) != meta.num_joints:
        raise ConfigError(f"MODEL.NUM_JOINTS is {cfg.MODEL.NUM_JOINTS} but the {kind} dataset has "
                         f"{meta.num_joints} joints")  # fmt: skip
    if is_train and cfg.DATASET.SELECT_DATA:
        records = select_data(records)
    aug = None
    if is_train:
        d = cfg.DATASET
        aug = AugConfig(float(d.SCALE_FACTOR), float(d.ROT_FACTOR), bool(d.FLIP), float(d.PROB_HALF_BODY),
                        int(d.NUM_JOINTS_HALF_BODY))  # fmt: skip
    seed = int(_hr(cfg, "SEED", -1))
    logger.info("=> %s %s (%s): %d samples", kind, image_set, "train" if is_train else "test", len(records))
    return PoseDataset(
        records=records,
        meta=meta,
        codec=build_codec(cfg, meta),
        input_size_wh=input_size,
        aug=aug,
        color_rgb=bool(cfg.DATASET.COLOR_RGB),
        seed=seed if seed >= 0 else None,
        skip_bad_images=bool(_hr(cfg, "SKIP_BAD_IMAGES", True)),
        eval_spec=spec,
        sample_format="uint8" if is_train and bool(_hr(cfg, "DEVICE_INPUT", False)) else "float",
        reduced_decode=bool(is_train and _hr(cfg, "REDUCED_DECODE", False)),
        cache_last_image=bool(is_train and _hr(cfg, "GROUP_BY_IMAGE", False)),
    )
