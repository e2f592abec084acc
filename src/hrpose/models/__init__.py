"""Pose models: `MODELS` maps `MODEL.NAME` to a builder; `build_model(cfg)` is the entry point.

Adding a model is one builder here and one entry in `MODELS`; the parametrised tests pick it up.
Builders read only `cfg.MODEL`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from hrpose.models.blocks import BasicBlock, Bottleneck
from hrpose.models.hrnet import HRNetSpec, PoseHighResolutionNet
from hrpose.models.resnet import PoseResNet, ResNetSpec

logger = logging.getLogger(__name__)

__all__ = [
    "MODELS",
    "BasicBlock",
    "Bottleneck",
    "HRNetSpec",
    "PoseHighResolutionNet",
    "PoseResNet",
    "ResNetSpec",
    "build_model",
    "build_pose_hrnet",
    "build_pose_resnet",
]


def _init_for_training(model: PoseHighResolutionNet | PoseResNet, cfg: Any, is_train: bool) -> None:
    # As the official get_pose_net: only training runs initialise (and load MODEL.PRETRAINED);
    # evaluation models keep PyTorch's default init until their weights are loaded.
    if is_train and bool(cfg.MODEL.get("INIT_WEIGHTS", True)):
        pretrained = str(cfg.MODEL.get("PRETRAINED", "") or "")
        if pretrained and os.path.isdir(pretrained):
            # load_config joins DATA_DIR to an empty PRETRAINED (official quirk): that means "none".
            logger.warning("MODEL.PRETRAINED %r is a directory, not a weights file: training from scratch", pretrained)
            pretrained = ""
        model.init_weights(pretrained)


def build_pose_hrnet(cfg: Any, is_train: bool = False) -> nn.Module:
    model = PoseHighResolutionNet(HRNetSpec.from_cfg(cfg.MODEL))
    _init_for_training(model, cfg, is_train)
    return model


def build_pose_resnet(cfg: Any, is_train: bool = False) -> nn.Module:
    model = PoseResNet(ResNetSpec.from_cfg(cfg.MODEL))
    _init_for_training(model, cfg, is_train)
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "pose_hrnet": build_pose_hrnet,
    "pose_resnet": build_pose_resnet,
}


def build_model(cfg: Any, is_train: bool = False) -> nn.Module:
    """The model named by `cfg.MODEL.NAME`, on the CPU (or the ambient `torch.device` context).

    With `is_train` and `MODEL.INIT_WEIGHTS`, weights get the official N(0, 0.001) init and the
    ImageNet backbone from `MODEL.PRETRAINED` (if set; a set path that does not exist is an error).
    """
    name = str(cfg.MODEL.NAME)
    if name not in MODELS:
        from hrpose.config import ConfigError

        raise ConfigError(f"unknown MODEL.NAME {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](cfg, is_train=is_train)
