"""hrpose.losses against the official loss values, plus a per-joint reference written out by hand."""

from __future__ import annotations

import pytest
import torch
from yacs.config import CfgNode

from conftest import golden_json, golden_npz
from hrpose.losses import JointsMSELoss, JointsOHKMMSELoss, build_loss


def _golden_tensors():
    z = golden_npz("loss.npz")
    return tuple(torch.from_numpy(z[k]) for k in ("output", "target", "target_weight"))


@pytest.mark.parametrize(
    "key, loss",
    [
        ("mse_target_weight", JointsMSELoss(True)),
        ("mse_no_weight", JointsMSELoss(False)),
        ("ohkm_top8_target_weight", JointsOHKMMSELoss(True, topk=8)),
        ("ohkm_top4_no_weight", JointsOHKMMSELoss(False, topk=4)),
    ],
)
def test_losses_match_official(key, loss):
    output, target, weight = _golden_tensors()
    value = loss(output, target, weight)
    assert value.dim() == 0
    assert value.item() == pytest.approx(golden_json("loss.json")[key], rel=1e-6)


def _reference_per_joint(output, target, weight):
    """(B, K) 0.5 * mean over pixels of the weighted squared error, one joint at a time."""
    b, k = output.shape[:2]
    rows = []
    for n in range(b):
        row = []
        for j in range(k):
            d = (output[n, j] - target[n, j]) * weight[n, j, 0]
            row.append(0.5 * float((d * d).mean()))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("batch", [1, 3])
def test_losses_match_hand_reference(batch):
    g = torch.Generator().manual_seed(0)
    output = torch.rand(batch, 6, 8, 6, generator=g, dtype=torch.float64)
    target = torch.rand(batch, 6, 8, 6, generator=g, dtype=torch.float64)
    weight = (torch.rand(batch, 6, 1, generator=g, dtype=torch.float64) > 0.3).double() * 1.5
    ref = _reference_per_joint(output, target, weight)
    assert JointsMSELoss(True)(output, target, weight).item() == pytest.approx(ref.mean().item(), rel=1e-12)
    hardest = ref.sort(dim=1, descending=True).values[:, :3]
    ohkm = JointsOHKMMSELoss(True, topk=3)(output, target, weight)
    assert ohkm.item() == pytest.approx(hardest.mean(dim=1).mean().item(), rel=1e-12)
    ones = torch.ones_like(weight)
    unweighted = _reference_per_joint(output, target, ones).mean().item()
    assert JointsMSELoss(False)(output, target, weight).item() == pytest.approx(unweighted, rel=1e-12)


def test_losses_backpropagate():
    output, target, weight = _golden_tensors()
    output = output.clone().requires_grad_(True)
    for loss in (JointsMSELoss(True), JointsOHKMMSELoss(True)):
        output.grad = None
        loss(output, target, weight).backward()
        assert output.grad is not None and torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_losses_reject_bad_input():
    output, target, weight = _golden_tensors()
    with pytest.raises(ValueError, match="topk"):
        JointsOHKMMSELoss(True, topk=18)(output, target, weight)
    with pytest.raises(ValueError, match="must both be"):
        JointsMSELoss(True)(output, target[:, :16], weight)
    with pytest.raises(ValueError, match="target_weight"):
        JointsMSELoss(True)(output, target, None)
    with pytest.raises(ValueError, match="topk"):
        JointsOHKMMSELoss(True, topk=0)


def _cfg(ohkm, topk=8, use_tw=True):
    return CfgNode({"LOSS": {"USE_OHKM": ohkm, "TOPK": topk, "USE_TARGET_WEIGHT": use_tw}})


def test_build_loss():
    plain = build_loss(_cfg(False, use_tw=False))
    assert isinstance(plain, JointsMSELoss) and plain.use_target_weight is False
    ohkm = build_loss(_cfg(True, topk=4))
    assert isinstance(ohkm, JointsOHKMMSELoss) and ohkm.topk == 4 and ohkm.use_target_weight is True
