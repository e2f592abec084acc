"""Parameter count and GFLOPs of a model config, without allocating or running real weights.

Two FLOP numbers, because papers disagree on what a FLOP is:
  * `gflops_official`: the number in the HRNet/SimpleBaseline tables (official `get_model_summary`).
    Multiply-adds of every Conv2d / ConvTranspose2d (weight elements x output pixels, so a transposed
    conv is counted at its OUTPUT size and biases are ignored) and Linear layer, divided by 1024**3.
  * `gflops`: real floating-point operations from `torch.utils.flop_counter.FlopCounterMode`, divided
    by 1e9: 2 per multiply-add of convolutions, transposed convolutions and matrix products (a
    transposed conv counted at its input size, as its cost actually is). BatchNorm, activations,
    additions, pooling and upsampling are not counted.
Both come from one batch-1 forward on torch's meta device (shapes only, no arithmetic), so even the
384x288 w48 model is summarised in well under a second.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hrpose.models import build_model


def _official_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            total += module.weight.numel() * math.prod(output.shape[2:])
        elif isinstance(module, nn.Linear):
            total += output.numel() * inputs[0].shape[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return total


# #Params and GFLOPs as published in the official COCO val2017 results table (official README), keyed by
# (MODEL.NAME, ResNet depth or HRNet width, input w, input h). The ResNet GFLOPs there come from the
# SimpleBaseline paper and differ by 0.1-0.2 from what the official counting code gives for the same
# models (e.g. res50 256x192: published 8.9, code 8.99); `summary` prints both so nobody is misled.
PUBLISHED_COCO: dict[tuple[str, int, int, int], tuple[str, float]] = {
    ("pose_resnet", 50, 192, 256): ("34.0M", 8.9),
    ("pose_resnet", 50, 288, 384): ("34.0M", 20.0),
    ("pose_resnet", 101, 192, 256): ("53.0M", 12.4),
    ("pose_resnet", 101, 288, 384): ("53.0M", 27.9),
    ("pose_resnet", 152, 192, 256): ("68.6M", 15.7),
    ("pose_resnet", 152, 288, 384): ("68.6M", 35.3),
    ("pose_hrnet", 32, 192, 256): ("28.5M", 7.1),
    ("pose_hrnet", 32, 288, 384): ("28.5M", 16.0),
    ("pose_hrnet", 48, 192, 256): ("63.6M", 14.6),
    ("pose_hrnet", 48, 288, 384): ("63.6M", 32.9),
}


def published_coco(cfg: Any) -> tuple[str, float] | None:
    """The official table's (#Params, GFLOPs) for this 17-joint COCO model, or None if it has no row."""
    name = str(cfg.MODEL.NAME)
    extra = cfg.MODEL.EXTRA
    if int(cfg.MODEL.NUM_JOINTS) != 17:
        return None
    if name == "pose_resnet":
        size = int(extra.get("NUM_LAYERS", 0))
    elif name == "pose_hrnet" and "STAGE2" in extra:
        size = int(extra.STAGE2.NUM_CHANNELS[0])
    else:
        return None
    w, h = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    return PUBLISHED_COCO.get((name, size, w, h))


def model_summary(cfg: Any) -> dict[str, Any]:
    """Summary of the model `cfg.MODEL` describes, for a batch-1 input of `MODEL.IMAGE_SIZE`.

    Returns model, input_size_wh, heatmap_size_wh, num_joints, params (int), gflops_official,
    gflops (see the module docstring), output_shape (N, K, H, W) and `published`: the official results
    table's {"params": "28.5M", "gflops": 7.1} for the 10 COCO models it lists, else None.
    """
    width, height = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    with torch.device("meta"):
        model = build_model(cfg).eval()
        x = torch.empty(1, 3, height, width)
    with torch.no_grad():
        macs = _official_macs(model, x)
        with FlopCounterMode(display=False) as counter:
            out = model(x)
    return {
        "model": str(cfg.MODEL.NAME),
        "input_size_wh": [width, height],
        "heatmap_size_wh": [int(v) for v in cfg.MODEL.HEATMAP_SIZE],
        "num_joints": int(cfg.MODEL.NUM_JOINTS),
        "params": sum(p.numel() for p in model.parameters()),
        "gflops_official": macs / 1024**3,
        "gflops": counter.get_total_flops() / 1e9,
        "output_shape": list(out.shape),
        "published": dict(zip(("params", "gflops"), published_coco(cfg) or ())) or None,
    }
