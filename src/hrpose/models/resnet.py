"""pose_resnet: SimpleBaseline (Xiao et al., ECCV 2018), a ResNet with three stride-2 deconvolutions.

`(N, 3, H, W)` -> ResNet-{18..152} to H/32 -> deconvs to H/4 -> 1x1 conv -> `(N, NUM_JOINTS, H/4, W/4)`.
Attribute names follow the official code so its checkpoints (and torchvision's ImageNet ResNets) load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hrpose.models.blocks import BN_MOMENTUM, BasicBlock, Block, Bottleneck, init_normal_, make_layer
from hrpose.models.weights import load_pretrained

# depth -> (block, blocks per stage)
RESNET_SPEC: dict[int, tuple[Block, tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# deconv kernel -> (padding, output_padding) that doubles the size exactly
DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


@dataclass(frozen=True)
class ResNetSpec:
    num_layers: int
    num_joints: int
    deconv_filters: tuple[int, ...] = (256, 256, 256)
    deconv_kernels: tuple[int, ...] = (4, 4, 4)
    deconv_with_bias: bool = False
    final_conv_kernel: int = 1
    pretrained_layers: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        if self.num_layers not in RESNET_SPEC:
            raise ValueError(
                f"MODEL.EXTRA.NUM_LAYERS={self.num_layers} is not a ResNet depth; expected one of "
                f"{sorted(RESNET_SPEC)}"
            )
        if len(self.deconv_filters) != len(self.deconv_kernels):
            raise ValueError(
                f"NUM_DECONV_FILTERS {list(self.deconv_filters)} and NUM_DECONV_KERNELS "
                f"{list(self.deconv_kernels)} differ in length"
            )
        bad = [k for k in self.deconv_kernels if k not in DECONV_PADDING]
        if bad:
            raise ValueError(f"NUM_DECONV_KERNELS {bad} not supported; expected kernels in {sorted(DECONV_PADDING)}")

    @classmethod
    def from_cfg(cls, model_cfg: Mapping[str, Any]) -> ResNetSpec:
        """From `cfg.MODEL` (NUM_JOINTS and EXTRA.NUM_LAYERS, NUM_DECONV_*, DECONV_WITH_BIAS, ...)."""
        extra = model_cfg["EXTRA"]
        filters = tuple(int(f) for f in extra["NUM_DECONV_FILTERS"])
        kernels = tuple(int(k) for k in extra["NUM_DECONV_KERNELS"])
        num = int(extra.get("NUM_DECONV_LAYERS", len(filters)))
        if num != len(filters):
            raise ValueError(f"NUM_DECONV_LAYERS={num} but NUM_DECONV_FILTERS has {len(filters)} entries")
        return cls(
            num_layers=int(extra["NUM_LAYERS"]),
            num_joints=int(model_cfg["NUM_JOINTS"]),
            deconv_filters=filters,
            deconv_kernels=kernels,
            deconv_with_bias=bool(extra.get("DECONV_WITH_BIAS", False)),
            final_conv_kernel=int(extra.get("FINAL_CONV_KERNEL", 1)),
            pretrained_layers=tuple(extra.get("PRETRAINED_LAYERS", ["*"])) or ("*",),
        )


class PoseResNet(nn.Module):
    """`(N, 3, H, W) -> (N, num_joints, H/4, W/4)` heatmaps (with three stride-2 deconvs)."""

    def __init__(self, spec: ResNetSpec):
        super().__init__()
        self.spec = spec
        self.pretrained_layers = spec.pretrained_layers
        block, counts = RESNET_SPEC[spec.num_layers]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
            setattr(self, f"layer{i}", make_layer(block, channels, planes, n, stride=1 if i == 1 else 2))
            channels = planes * block.expansion

        deconvs: list[nn.Module] = []
        for filters, kernel in zip(spec.deconv_filters, spec.deconv_kernels):
            padding, output_padding = DECONV_PADDING[kernel]
            deconvs += [
                nn.ConvTranspose2d(channels, filters, kernel, stride=2, padding=padding,
                                   output_padding=output_padding, bias=spec.deconv_with_bias),
                nn.BatchNorm2d(filters, momentum=BN_MOMENTUM),
                nn.ReLU(inplace=True),
            ]
            channels = filters
        self.deconv_layers = nn.Sequential(*deconvs)
        k = spec.final_conv_kernel
        self.final_layer = nn.Conv2d(channels, spec.num_joints, kernel_size=k, stride=1,
                                     padding=1 if k == 3 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        return self.final_layer(self.deconv_layers(x))

    def init_weights(self, pretrained: str = "") -> None:
        """Official training init: N(0, 0.001) everywhere, then ImageNet weights from `pretrained` if given.

        The classifier (`fc.*`) of an ImageNet checkpoint is ignored; the head keeps its random init.
        """
        init_normal_(self)
        if pretrained:
            load_pretrained(self, pretrained, self.pretrained_layers)
