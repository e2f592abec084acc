"""Pose models: `MODELS` maps `MODEL.NAME` to a builder; `build_model(cfg)` is the entry point.

Adding a model is one builder here, one entry in `MODELS` and its name in `hrpose.config.MODEL_NAMES`; the
parametrised tests pick it up.
Builders read only `cfg.MODEL`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from hrpose.config import ConfigError
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
    "check_model_config",
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


def check_model_config(cfg: Any, training: bool = False) -> None:
    """`MODEL.*` shaped for the chosen architecture (the spec parses, channel counts >= 1, IMAGE_SIZE a multiple
    of 32, and for training HEATMAP_SIZE a quarter of it: the targets must match the network's output);
    a ConfigError naming the key otherwise."""
    name = str(cfg.MODEL.NAME)
    spec_of = {"pose_hrnet": HRNetSpec.from_cfg, "pose_resnet": ResNetSpec.from_cfg}.get(name)
    if spec_of is None:
        return
    try:
        spec: Any = spec_of(cfg.MODEL)
    except KeyError as e:
        raise ConfigError(f"MODEL.EXTRA has no key {e} that {name} needs (see the experiments/ YAMLs)") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"MODEL.EXTRA does not describe a {name}: {e}") from None
    for i, stage in enumerate(getattr(spec, "stages", ())):
        if any(c < 1 for c in stage.num_channels) or any(b < 1 for b in stage.num_blocks):
            raise ConfigError(f"MODEL.EXTRA.STAGE{i + 2}: NUM_CHANNELS {list(stage.num_channels)} and NUM_BLOCKS "
                              f"{list(stage.num_blocks)} must all be >= 1")  # fmt: skip
    if any(f < 1 for f in getattr(spec, "deconv_filters", ())):
        raise ConfigError(f"MODEL.EXTRA.NUM_DECONV_FILTERS {list(spec.deconv_filters)} must all be >= 1")
    size, heat = [int(v) for v in cfg.MODEL.IMAGE_SIZE], [int(v) for v in cfg.MODEL.HEATMAP_SIZE]
    if any(v % 32 for v in size):
        raise ConfigError(f"MODEL.IMAGE_SIZE {size}: {name} needs multiples of 32 (its deepest features are 1/32 "
                          "of the input), e.g. [192, 256] or [288, 384]")  # fmt: skip
    if training and heat != [v // 4 for v in size]:
        raise ConfigError(f"MODEL.HEATMAP_SIZE {heat}: {name} predicts heatmaps at a quarter of MODEL.IMAGE_SIZE "
                          f"{size}, so it must be {[v // 4 for v in size]}")  # fmt: skip
    from hrpose.models.memory import check_model_memory

    check_model_memory(cfg, spec, training=training)  # before any allocation: refused with the estimate


def build_model(cfg: Any, is_train: bool = False) -> nn.Module:
    """The model named by `cfg.MODEL.NAME`, on the CPU (or the ambient `torch.device` context).

    With `is_train` and `MODEL.INIT_WEIGHTS`, weights get the official N(0, 0.001) init and the
    ImageNet backbone from `MODEL.PRETRAINED` (if set; a set path that does not exist is an error).
    """
    name = str(cfg.MODEL.NAME)
    if name not in MODELS:
            raise ConfigError(f"unknown MODEL.NAME {name!r}; available: {sorted(MODELS)}")
    check_model_config(cfg, training=is_train)
    return MODELS[name](cfg, is_train=is_train)
