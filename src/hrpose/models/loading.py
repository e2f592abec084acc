"""`load(config, weights)`: a model ready for inference with what running it needs (config, keypoint layout,
channel order, input size), from an experiment config and a checkpoint, or from the config a checkpoint carries.

The checkpoint's stored metadata (hrpose checkpoints) wins over the config for the layout and the channel order;
MMPose checkpoints are RGB. Nothing here picks a backend: `hrpose.runtime.make_backend` does.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import hrpose.models  # build_model looked up at call time: tests replace hrpose.models.build_model
from hrpose.config import load_config
from hrpose.data.layout import layout_from_config
from hrpose.errors import UserError
from hrpose.keypoints import DatasetMeta
from hrpose.models import weights as W

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """model: the torch model in eval mode (None when the weights are an `.onnx` graph, which runs as it is);
    cfg: its config; layout: its keypoint layout; color_rgb: its input channel order; input_size: (w, h);
    weights: the file loaded (None: random weights or a caller's model); built: whether `load` built the model
    (a caller's model must run itself, so later changes to it are seen)."""

    model: nn.Module | None
    cfg: Any
    layout: DatasetMeta
    color_rgb: bool
    input_size: tuple[int, int]
    weights: str | None
    built: bool


def load(
    config: str | os.PathLike[str] | Any = None,
    weights: str | os.PathLike[str] | None = None,
    *,
    device: torch.device | None = None,
    layout: DatasetMeta | None = None,
    color_rgb: bool | None = None,
    model: nn.Module | None = None,
    random_weights: bool = False,
    build: bool = True,
    graph_meta: dict[str, Any] | None = None,
) -> LoadedModel:
    """The model of `config` (a YAML path or a CfgNode; None: the config stored in `weights`) with `weights` (a
    checkpoint, strict load, any layout `hrpose.models.weights` converts; default TEST.MODEL_FILE; `.onnx`: not
    loaded into torch, the graph is the model), on `device`. A model built here without weights is refused unless
    `random_weights`; `model`: an already built (and loaded) model used as it is. `layout` / `color_rgb` override
    the checkpoint's and the config's; build=False: the config's parts only, no model (a caller's backend runs);
    graph_meta: the hrpose metadata a graph file carries (an OpenVINO IR's, read by the runtime): `weights` is
    that graph, not loaded into torch, and the metadata stands in for a checkpoint's."""
    onnx = weights is not None and (Path(weights).suffix.lower() == ".onnx" or graph_meta is not None)
    ckpt_meta = graph_meta
    if weights is not None and not onnx and Path(weights).is_file():
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
    if layout is None and ckpt_meta is not None:
        layout = W.dataset_meta_from_checkpoint(ckpt_meta, str(weights))
    layout = layout or layout_from_config(cfg)
    if layout.num_joints != int(cfg.MODEL.NUM_JOINTS):
        raise ValueError(
            f"the keypoint layout {layout.name!r} has {layout.num_joints} joints but MODEL.NUM_JOINTS "
            f"is {cfg.MODEL.NUM_JOINTS}"
        )
    if color_rgb is None and ckpt_meta is not None and "color_rgb" in ckpt_meta:
        color_rgb = bool(ckpt_meta["color_rgb"])
    input_size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    built = model is None
    if onnx or (not build and model is None):
        return LoadedModel(None, cfg, layout, bool(cfg.DATASET.COLOR_RGB) if color_rgb is None else color_rgb,
                           input_size, None if weights is None else str(weights), built=False)  # fmt: skip
    if model is None:
        model = hrpose.models.build_model(cfg, is_train=False)
        if device is not None:
            model.to(device)
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
            color_rgb = True  # MMPose models are trained on RGB input
    rgb = bool(cfg.DATASET.COLOR_RGB) if color_rgb is None else bool(color_rgb)
    return LoadedModel(model.eval(), cfg, layout, rgb, input_size, None if weights is None else str(weights), built)
