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


def model_summary(cfg: Any) -> dict[str, Any]:
    """Summary of the model `cfg.MODEL` describes, for a batch-1 input of `MODEL.IMAGE_SIZE`.

    Returns model, input_size_wh, heatmap_size_wh, num_joints, params (int), gflops_official,
    gflops (see the module docstring) and output_shape (N, K, H, W).
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
    }
