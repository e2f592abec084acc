"""Heatmap losses: the official JointsMSELoss and its online-hard-keypoint-mining variant (OHKM).

All call as `loss(output (B, K, H, W), target (B, K, H, W), target_weight (B, K, 1))` -> scalar tensor.
Both compute 0.5 * mean squared error per joint (weighted maps when `use_target_weight`); the plain loss
averages over joints, OHKM averages only the `topk` largest joint losses of each sample.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def _check(output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None) -> None:
    if output.shape != target.shape or output.dim() != 4:
        raise ValueError(
            f"loss: output {tuple(output.shape)} and target {tuple(target.shape)} must both be (B, K, H, W)"
        )
    if target_weight is not None and target_weight.shape[:2] != output.shape[:2]:
        raise ValueError(
            f"loss: target_weight {tuple(target_weight.shape)} must be (B, K, 1) for output {tuple(output.shape)}"
        )


def joint_mse(
    output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None, use_target_weight: bool
) -> torch.Tensor:
    """Per-sample, per-joint 0.5 * MSE over pixels: (B, K, H, W) x2, (B, K, 1) -> (B, K)."""
    _check(output, target, target_weight if use_target_weight else None)
    b, k = output.shape[:2]
    pred = output.reshape(b, k, -1)
    gt = target.reshape(b, k, -1)
    if use_target_weight:
        if target_weight is None:
            raise ValueError("loss: use_target_weight is set but no target_weight was given")
        w = target_weight.reshape(b, k, 1).to(pred.dtype)
        # weight both maps (not their difference) as the official code does, for identical rounding
        pred, gt = pred * w, gt * w
    return 0.5 * (pred - gt).pow(2).mean(dim=2)


class JointsMSELoss(nn.Module):
    """0.5 * mean squared heatmap error, averaged over joints (the official JointsMSELoss)."""

    def __init__(self, use_target_weight: bool) -> None:
        super().__init__()
        self.use_target_weight = bool(use_target_weight)

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        # every joint has B*H*W terms, so the mean over joints of per-joint means is the overall mean
        return joint_mse(output, target, target_weight, self.use_target_weight).mean()


class JointsOHKMMSELoss(nn.Module):
    """Online hard keypoint mining: per sample, the mean of the `topk` largest joint losses, averaged over B."""

    def __init__(self, use_target_weight: bool, topk: int = 8) -> None:
        super().__init__()
        if int(topk) < 1:
            raise ValueError(f"JointsOHKMMSELoss: topk must be >= 1, got {topk}")
        self.use_target_weight = bool(use_target_weight)
        self.topk = int(topk)

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        per_joint = joint_mse(output, target, target_weight, self.use_target_weight)  # (B, K)
        if self.topk > per_joint.shape[1]:
            raise ValueError(
                f"JointsOHKMMSELoss: topk={self.topk} is larger than the number of joints ({per_joint.shape[1]})"
            )
        hardest = torch.topk(per_joint, k=self.topk, dim=1, sorted=False).values
        return (hardest.sum(dim=1) / self.topk).mean()


def build_loss(cfg: Any) -> nn.Module:
    """The training criterion from LOSS.USE_OHKM, LOSS.TOPK and LOSS.USE_TARGET_WEIGHT."""
    loss_cfg = cfg.LOSS
    use_tw = bool(loss_cfg.USE_TARGET_WEIGHT)
    if bool(loss_cfg.get("USE_OHKM", False)):
        return JointsOHKMMSELoss(use_tw, topk=int(loss_cfg.get("TOPK", 8)))
    return JointsMSELoss(use_tw)
