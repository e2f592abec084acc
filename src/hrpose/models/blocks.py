"""Residual blocks shared by pose_resnet and pose_hrnet (one definition for both).

Attribute names (conv1, bn1, ..., downsample) are the official ones, so checkpoints trained with the
official code load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# The official models construct BatchNorm with momentum 0.1, i.e. PyTorch's default; it is spelled out so a
# reader comparing with the paper's setup does not have to look it up.
BN_MOMENTUM = 0.1


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm always follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or projected) shortcut. `(N, C_in, H, W) -> (N, planes, H/s, W/s)`."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4. `(N, C_in, H, W) -> (N, 4*planes, H/s, W/s)`."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


Block = type[BasicBlock] | type[Bottleneck]

# The names used by MODEL.EXTRA.STAGEn.BLOCK in the experiment YAMLs.
BLOCKS: dict[str, Block] = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_layer(block: Block, inplanes: int, planes: int, num_blocks: int, stride: int = 1) -> nn.Sequential:
    """`num_blocks` blocks; the first one strides and projects the shortcut when the shape changes.

    Output channels are `planes * block.expansion`. Used for ResNet stages, the HRNet stem layer and
    every HRNet branch.
    """
    if num_blocks < 1:
        raise ValueError(f"a layer needs at least one block, got num_blocks={num_blocks}")
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out_channels:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out_channels, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels, momentum=BN_MOMENTUM),
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def init_normal_(model: nn.Module, std: float = 0.001) -> None:
    """The official from-scratch init: conv and deconv weights ~ N(0, std), biases 0, BatchNorm (1, 0)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
