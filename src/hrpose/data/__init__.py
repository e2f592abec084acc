"""Datasets: person records (COCO, MPII, custom COCO-format, detection files), augmentation, torch Dataset."""

from hrpose.data.augment import IDENTITY, AugParams, CropResult, apply, sample_aug_params, to_input_tensor
from hrpose.data.dataset import AugConfig, EvalSpec, PoseDataset, build_dataset
from hrpose.data.records import AnnotationError, PersonRecord, select_data
from hrpose.images import ImageReadError, read_image

__all__ = [
    "IDENTITY", "AnnotationError", "AugConfig", "AugParams", "CropResult", "EvalSpec", "ImageReadError",
    "PersonRecord", "PoseDataset", "apply", "build_dataset", "read_image", "sample_aug_params", "select_data",
    "to_input_tensor",
]  # fmt: skip
