"""pose_hrnet: HRNet (Sun et al., CVPR 2019) with a 1x1 heatmap head on the highest-resolution branch.

The architecture is data: `HRNetSpec` holds what `MODEL.EXTRA` says (per stage: modules, branches,
block type, blocks and channels per branch). The module tree and attribute names follow the official
implementation, so `state_dict()` keys, shapes and order equal the official checkpoints.

Layout for an input `(N, 3, H, W)`:
  stem (two stride-2 3x3 convs) -> layer1 (4 Bottlenecks, 256 ch)       at H/4
    (`MODEL.EXTRA.STAGE1` may change layer1's block count and width, as in MMPose's and HRNet-classification's
    configs; without it the official 4 x Bottleneck(64) -> 256 is built)
  transition1 -> stage2 (2 branches) -> transition2 -> stage3 (3) -> transition3 -> stage4 (4)
  branch i runs at H/4 / 2**i; each module ends by fusing every branch into every other (sum).
  final_layer on branch 0 -> heatmaps `(N, NUM_JOINTS, H/4, W/4)`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from hrpose.models.blocks import BLOCKS, BN_MOMENTUM, init_normal_, make_layer
from hrpose.models.weights import load_pretrained

logger = logging.getLogger(__name__)

STEM_CHANNELS = 64


@dataclass(frozen=True)
class StageSpec:
    """One HRNet stage: `num_modules` multi-resolution modules of `num_branches` parallel branches."""

    num_modules: int
    num_branches: int
    block: str  # a key of blocks.BLOCKS
    num_blocks: tuple[int, ...]  # per branch
    num_channels: tuple[int, ...]  # per branch, before block expansion
    fuse_method: str = "SUM"

    def __post_init__(self) -> None:
        if self.block not in BLOCKS:
            raise ValueError(f"unknown HRNet block {self.block!r}; expected one of {sorted(BLOCKS)}")
        for name in ("num_blocks", "num_channels"):
            if len(getattr(self, name)) != self.num_branches:
                raise ValueError(
                    f"HRNet stage has NUM_BRANCHES={self.num_branches} but {name.upper()}="
                    f"{list(getattr(self, name))}"
                )
        if self.fuse_method != "SUM":
            raise ValueError(f"HRNet FUSE_METHOD {self.fuse_method!r} is not supported (only 'SUM')")
        if self.num_modules < 1:
            raise ValueError(f"HRNet stage needs NUM_MODULES >= 1, got {self.num_modules}")

    @property
    def out_channels(self) -> list[int]:
        return [c * BLOCKS[self.block].expansion for c in self.num_channels]

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any]) -> StageSpec:
        return cls(
            num_modules=int(node["NUM_MODULES"]),
            num_branches=int(node["NUM_BRANCHES"]),
            block=str(node["BLOCK"]),
            num_blocks=tuple(int(b) for b in node["NUM_BLOCKS"]),
            num_channels=tuple(int(c) for c in node["NUM_CHANNELS"]),
            fuse_method=str(node.get("FUSE_METHOD", "SUM")),
        )


@dataclass(frozen=True)
class HRNetSpec:
    """Everything that shapes a pose_hrnet; `stages[0]` is the official STAGE2."""

    stages: tuple[StageSpec, ...]
    num_joints: int
    final_conv_kernel: int = 1
    pretrained_layers: tuple[str, ...] = ("*",)
    stage1: StageSpec = StageSpec(1, 1, "BOTTLENECK", (4,), (64,))  # layer1: the official 4 x Bottleneck(64)

    @classmethod
    def from_cfg(cls, model_cfg: Mapping[str, Any]) -> HRNetSpec:
        """From `cfg.MODEL` (reads NUM_JOINTS and EXTRA.STAGE2, STAGE3, ... in order)."""
        extra = model_cfg["EXTRA"]
        stages = []
        n = 2
        while f"STAGE{n}" in extra:
            stages.append(StageSpec.from_cfg(extra[f"STAGE{n}"]))
            n += 1
        if not stages:
            raise ValueError("MODEL.EXTRA has no STAGE2 for pose_hrnet")
        stage1 = cls.stage1
        if "STAGE1" in extra:
            defaults = {"NUM_MODULES": 1, "NUM_BRANCHES": 1, "BLOCK": "BOTTLENECK", "NUM_BLOCKS": [4]}
            defaults["NUM_CHANNELS"] = [64]
            stage1 = StageSpec.from_cfg({**defaults, **extra["STAGE1"]})
            if stage1.num_modules != 1 or stage1.num_branches != 1:
                raise ValueError(
                    "MODEL.EXTRA.STAGE1 is one module of one branch (layer1): NUM_MODULES 1, NUM_BRANCHES 1; "
                    f"got {stage1.num_modules} and {stage1.num_branches}"
                )
            if stage1.num_blocks[0] < 1:
                raise ValueError(f"MODEL.EXTRA.STAGE1.NUM_BLOCKS needs one entry >= 1, got {list(stage1.num_blocks)}")
        return cls(
            stages=tuple(stages),
            stage1=stage1,
            num_joints=int(model_cfg["NUM_JOINTS"]),
            final_conv_kernel=int(extra.get("FINAL_CONV_KERNEL", 1)),
            pretrained_layers=tuple(extra.get("PRETRAINED_LAYERS", ["*"])) or ("*",),
        )


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    # The official fuse/transition BatchNorms use PyTorch's default momentum (also 0.1).
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _fuse_path(in_channels: Sequence[int], src: int, dst: int) -> nn.Module:
    """Brings branch `src` to the resolution and width of branch `dst`."""
    if src == dst:
        return nn.Identity()
    if src > dst:  # lower resolution: 1x1 conv, then nearest upsampling
        path = _conv_bn(in_channels[src], in_channels[dst], 1, 1, relu=False)
        path.append(nn.Upsample(scale_factor=2 ** (src - dst), mode="nearest"))
        return path
    # higher resolution: stride-2 3x3 convs; the last one changes width and has no ReLU
    steps = dst - src
    return nn.Sequential(
        *[
            _conv_bn(in_channels[src], in_channels[dst], 3, 2, relu=False)
            if k == steps - 1
            else _conv_bn(in_channels[src], in_channels[src], 3, 2, relu=True)
            for k in range(steps)
        ]
    )


class HighResolutionModule(nn.Module):
    """Parallel branches, then every output branch sums all inputs brought to its resolution.

    `list of (N, C_i, H/2**i, W/2**i)` -> same list, or only branch 0 when `multi_scale_output=False`.
    """

    def __init__(self, in_channels: Sequence[int], spec: StageSpec, multi_scale_output: bool = True):
        super().__init__()
        if len(in_channels) != spec.num_branches:
            raise ValueError(f"HRNet module has {spec.num_branches} branches but {len(in_channels)} inputs")
        block = BLOCKS[spec.block]
        self.num_branches = spec.num_branches
        self.branches = nn.ModuleList(
            make_layer(block, in_channels[i], spec.num_channels[i], spec.num_blocks[i])
            for i in range(spec.num_branches)
        )
        self.out_channels = spec.out_channels
        # A single branch has nothing to fuse (and, as in the official code, no final ReLU).
        num_out = 0 if spec.num_branches == 1 else (spec.num_branches if multi_scale_output else 1)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(self.out_channels, j, i) for j in range(spec.num_branches))
            for i in range(num_out)
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x)]
        if len(self.fuse_layers) == 0:
            return x
        out = []
        for fuse_any in self.fuse_layers:
            fuse = cast(nn.ModuleList, fuse_any)
            y = fuse[0](x[0])
            for j in range(1, self.num_branches):
                y = y + fuse[j](x[j])
            out.append(self.relu(y))
        return out


def _transition(pre: Sequence[int], cur: Sequence[int]) -> nn.ModuleList:
    """Adapts the previous stage's branches to the next stage; new branches come from the last one.

    Branch i < len(pre) gets a 3x3 conv only when its width changes; a new branch i >= len(pre) is made
    from the lowest-resolution branch with i + 1 - len(pre) stride-2 convs.
    """
    layers: list[nn.Module] = []
    for i, out_ch in enumerate(cur):
        if i < len(pre):
            layers.append(nn.Identity() if pre[i] == out_ch else _conv_bn(pre[i], out_ch, 3, 1, relu=True))
        else:
            steps = i + 1 - len(pre)
            layers.append(
                nn.Sequential(
                    *[
                        _conv_bn(pre[-1], out_ch if k == steps - 1 else pre[-1], 3, 2, relu=True)
                        for k in range(steps)
                    ]
                )
            )
    return nn.ModuleList(layers)


class PoseHighResolutionNet(nn.Module):
    """`(N, 3, H, W) -> (N, num_joints, H/4, W/4)` heatmaps."""

    def __init__(self, spec: HRNetSpec):
        super().__init__()
        self.spec = spec
        self.pretrained_layers = spec.pretrained_layers
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.conv2 = nn.Conv2d(STEM_CHANNELS, STEM_CHANNELS, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(STEM_CHANNELS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        s1 = spec.stage1
        self.layer1 = make_layer(BLOCKS[s1.block], STEM_CHANNELS, s1.num_channels[0], s1.num_blocks[0])

        channels = s1.out_channels
        # Registration order (transition1, stage2, transition2, ...) fixes the state_dict key order.
        for n, stage in enumerate(spec.stages, start=1):
            setattr(self, f"transition{n}", _transition(channels, stage.out_channels))
            modules = []
            channels = stage.out_channels
            last = n == len(spec.stages)
            for m in range(stage.num_modules):
                # Only the very last module of the network collapses to branch 0.
                multi_scale = not (last and m == stage.num_modules - 1)
                modules.append(HighResolutionModule(channels, stage, multi_scale_output=multi_scale))
            setattr(self, f"stage{n + 1}", nn.Sequential(*modules))

        k = spec.final_conv_kernel
        self.final_layer = nn.Conv2d(channels[0], spec.num_joints, kernel_size=k, stride=1,
                                     padding=1 if k == 3 else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for n in range(1, len(self.spec.stages) + 1):
            transition: nn.ModuleList = getattr(self, f"transition{n}")
            xs = [t(ys[min(i, len(ys) - 1)]) for i, t in enumerate(transition)]
            ys = getattr(self, f"stage{n + 1}")(xs)
        return self.final_layer(ys[0])

    def init_weights(self, pretrained: str = "") -> None:
        """Official training init: N(0, 0.001) convs, then ImageNet weights from `pretrained` if given.

        Only keys whose first component is in `MODEL.EXTRA.PRETRAINED_LAYERS` ('*' = all) are taken.
        """
        init_normal_(self)
        if pretrained:
            load_pretrained(self, pretrained, self.pretrained_layers)
