"""Key layouts of other projects' checkpoints -> ours (strict loads; proven by tests/models/test_layouts.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from hrpose.models.untrusted import CheckpointError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Key layouts of other projects' checkpoints -> ours (strict loads; proven by tests/models/test_layouts.py)
#
# official        : the official HRNet/SimpleBaseline files and ours: conv1, ..., stage4 / layer4,
#                   deconv_layers.*, final_layer.*
# mmpose1         : MMPose 1.x TopdownPoseEstimator: {"meta", "state_dict"}; backbone.* (same names as
#                   ours: MMPose's HRNet/ResNet keep the official module names and bn1/bn2 norm names),
#                   head.deconv_layers.* / head.final_layer.* (HeatmapHead), data_preprocessor.* (dropped)
# mmpose0         : MMPose 0.x TopDown: backbone.*, keypoint_head.deconv_layers.* / keypoint_head.final_layer.*
# torchvision     : ImageNet ResNet (torchvision, timm): conv1, bn1, layer1..4 as ours; fc.* dropped
# hrnet-imagenet  : ImageNet HRNet classifier (HRNet-Image-Classification, MMPose's pretrain mirror, timm):
#                   the backbone as ours, plus incre_modules.*, downsamp_modules.*, final_layer.* (its
#                   2048-channel head), classifier.* (dropped, as the official init_weights does through
#                   PRETRAINED_LAYERS) and stage 4's last module fusing into all four branches (extra keys).

LAYOUTS = ("official", "mmpose1", "mmpose0", "torchvision", "hrnet-imagenet", "timm")
IMAGENET_LAYOUTS = ("torchvision", "hrnet-imagenet", "timm")
POSE_HEAD_PREFIXES = ("final_layer.", "deconv_layers.")
_HRNET_CLS_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
_MMPOSE_HEAD_PREFIX = {"mmpose1": "head.", "mmpose0": "keypoint_head."}
_IMAGENET_HINT = (
    "This is an ImageNet classification checkpoint (a backbone without a pose head): use it as "
    "MODEL.PRETRAINED to initialise training, not as pose weights.\n"
)


def detect_layout(sd: Mapping[str, object]) -> str:
    """Which project's key layout a state_dict has: one of `LAYOUTS` ('timm' files read as the
    ImageNet layout they share, 'torchvision' or 'hrnet-imagenet')."""
    keys = list(sd)
    if any(k.startswith("backbone.") for k in keys):
        if any(k.startswith("keypoint_head.") for k in keys):
            return "mmpose0"
        return "mmpose1"
    has = {k.split(".", 1)[0] for k in keys}
    if "classifier.weight" in sd or {"incre_modules", "downsamp_modules"} <= has:
        return "hrnet-imagenet"
    if "fc.weight" in sd and any(k.startswith("layer4.") for k in keys):
        return "torchvision"
    return "official"


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """A state_dict in any of `LAYOUTS` -> (ours, the layout, the keys dropped as not part of a pose model).

    `layout=None` detects it. Keys that match no rule are kept as they are, so a strict load still
    names them. Conversion renames only: tensors are not copied.
    """
    layout = detect_layout(sd) if layout is None else layout
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        new: str | None = k
        if layout in _MMPOSE_HEAD_PREFIX:
            head = _MMPOSE_HEAD_PREFIX[layout]
            if k.startswith("data_preprocessor."):
                new = None
            elif k.startswith("backbone."):
                new = k[len("backbone."):]
            elif k.startswith(head):
                new = k[len(head):]
        elif layout == "torchvision":
            new = None if k.startswith("fc.") else k
        elif layout in ("hrnet-imagenet", "timm"):
            new = None if k.startswith(_HRNET_CLS_HEAD) else k
        if new is None:
            dropped.append(k)
        else:
            out[new] = v
    return out, layout, dropped
