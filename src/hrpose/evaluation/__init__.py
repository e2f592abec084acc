"""Evaluation: OKS NMS, COCO keypoint AP/AR (pycocotools) and MPII PCKh, with the official semantics."""

from hrpose.evaluation.coco import (
    STATS_NAMES,
    evaluate_coco,
    image_ids_from_paths,
    load_coco,
    markdown_table,
    rescore,
    select_poses,
)
from hrpose.evaluation.mpii import PCKH_NAMES, evaluate_mpii
from hrpose.evaluation.oks_nms import oks_iou, oks_matrix, oks_nms, soft_oks_nms

__all__ = [
    "STATS_NAMES", "PCKH_NAMES", "evaluate_coco", "evaluate_mpii", "image_ids_from_paths", "load_coco",
    "markdown_table", "rescore", "select_poses", "oks_iou", "oks_matrix", "oks_nms", "soft_oks_nms",
]  # fmt: skip
