"""Numerical faults, injected: degenerate heatmaps at decode time, NaN/inf in a training batch or the loss.

- `HeatmapCodec.decode` (official, DARK, UDP; with and without post-processing) on all-zero, negative,
  constant, tiny, huge and single-spike maps: finite keypoints within a pixel of the map, a score that is 0
  for empty maps and never positive for negative ones, and no RuntimeWarning (no log(0), no 0/0).
- NaN/inf reaching the loss (from the input, the target or the model) stops `train_one_epoch` and `train`
  with `NonFiniteLossError` naming the epoch and the step, before the optimizer step and before any
  checkpoint is written.
- NaN in annotation files is caught at load: see test_robustness_annotations.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hrpose.codec import HeatmapCodec, get_max_preds
from hrpose.config import load_config
from hrpose.engine import NonFiniteLossError, train, train_one_epoch
from hrpose.losses import JointsMSELoss

N, K, H, W = 2, 3, 16, 12
CENTERS = np.array([[30.0, 40.0], [100.0, 50.0]])
SCALES = np.array([[1.0, 1.3], [0.5, 0.6]])


def _maps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    spike = np.zeros((N, K, H, W), np.float32)
    spike[:, 0, 0, 0] = 1.0  # corner
    spike[:, 1, H - 1, W - 1] = 1.0  # opposite corner
    spike[:, 2, 5, 7] = 1.0  # interior
    mixed = rng.random((N, K, H, W)).astype(np.float32)
    mixed[:, 1] = 0.0  # one empty joint among normal ones
    return {
        "zeros": np.zeros((N, K, H, W), np.float32),
        "negative_constant": np.full((N, K, H, W), -1.0, np.float32),
        "negative_random": -rng.random((N, K, H, W)).astype(np.float32) - 1e-3,
        "negative_zero_peak": (-rng.random((N, K, H, W)) * (rng.random((N, K, H, W)) > 0.1)).astype(np.float32),
        "positive_constant": np.full((N, K, H, W), 0.7, np.float32),
        "tiny_constant": np.full((N, K, H, W), 1e-30, np.float32),
        "huge_constant": np.full((N, K, H, W), 1e30, np.float32),
        "spikes": spike,
        "mixed": mixed,
    }  # fmt: skip


MAPS = _maps()


@pytest.mark.parametrize("post_process", [True, False])
@pytest.mark.parametrize("method", ["official", "dark", "udp"])
@pytest.mark.parametrize("name", sorted(MAPS))
def test_degenerate_heatmaps_decode_to_finite_keypoints_without_warnings(name, method, post_process):
    hm = MAPS[name]
    codec = HeatmapCodec((48, 64), (W, H), 2.0, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a log(0) or 0/0 inside the decoder would surface here
        coords_hm, maxvals_hm = codec.decode_hm(hm.copy(), post_process)
        preds, maxvals = codec.decode(hm.copy(), CENTERS, SCALES, post_process)
    assert preds.shape == (N, K, 2) and maxvals.shape == (N, K, 1)
    assert np.isfinite(preds).all() and np.isfinite(maxvals).all()
    assert np.all(coords_hm >= -1) and np.all(coords_hm[..., 0] <= W) and np.all(coords_hm[..., 1] <= H)
    np.testing.assert_array_equal(maxvals[..., 0], hm.reshape(N, K, -1).max(axis=2))  # the score is the raw max
    empty = hm.reshape(N, K, -1).max(axis=2) <= 0
    if empty.any():
        # nothing detected: argmax at the map origin (official), a score of 0 (zero map) or below
        _, raw = get_max_preds(hm)
        assert np.all(maxvals[empty] <= 0)
        np.testing.assert_array_equal(get_max_preds(hm)[0][empty], 0.0)
        assert np.all(raw[empty] <= 0)
    if name == "zeros":
        assert np.all(maxvals == 0)


def test_decode_of_an_empty_batch_is_empty():
    codec = HeatmapCodec((48, 64), (W, H), 2.0, method="dark")
    preds, maxvals = codec.decode(np.zeros((0, K, H, W), np.float32), np.zeros((0, 2)), np.zeros((0, 2)))
    assert preds.shape == (0, K, 2) and maxvals.shape == (0, K, 1)


# ---------------------------------------------------------------------------------------------------
# training stops on non-finite numbers, naming where


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, K, 3, stride=4, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _batches(n: int) -> list:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(2, 3, 32, 32, generator=g), torch.rand(2, K, 8, 8, generator=g), torch.ones(2, K, 1), {})
            for _ in range(n)]  # fmt: skip


@pytest.mark.parametrize(
    ("where", "value"),
    [("input", float("nan")), ("input", float("inf")), ("target", float("inf")), ("target", float("nan")),
     ("weight", float("nan")), ("model", float("nan"))],
)  # fmt: skip
def test_non_finite_batch_or_model_stops_train_one_epoch_naming_epoch_and_step(where, value):
    torch.manual_seed(0)
    model = Tiny()
    batches = _batches(5)
    bad_step = 3
    if where == "input":
        batches[bad_step][0][1, 2, 5, 5] = value
    elif where == "target":
        batches[bad_step][1][0, 1, 2, 2] = value
    elif where == "weight":
        batches[bad_step][2][1, 0, 0] = value
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    seen = []

    def loader():
        for i, b in enumerate(batches):
            if where == "model" and i == bad_step:
                with torch.no_grad():
                    model.conv.bias[0] = value  # weights gone bad (e.g. an earlier overflow)
            seen.append([p.detach().clone() for p in model.parameters()])
            yield b

    with pytest.raises(
        NonFiniteLossError, match=rf"non-finite training loss \((nan|inf)\) at epoch 4, step {bad_step}"
    ):
        train_one_epoch(model, loader(), JointsMSELoss(True), opt, "cpu", epoch=4, progress=False, print_freq=0)
    # the optimizer never stepped on the bad batch
    for a, b in zip(seen[bad_step], model.parameters()):
        assert torch.equal(a, b) or (torch.isnan(a).any() and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))


def test_nan_in_a_dataset_item_stops_hrpose_train_before_any_checkpoint(tmp_path, monkeypatch):
    """End to end: the train loader yields a NaN input at a known step; `train` names epoch 0 and that step."""
    from helpers import resnet_exp_dir, tiny_resnet_config
    from hrpose.data.dataset import PoseDataset

    cfg_file = tiny_resnet_config(tmp_path)
    real_getitem = PoseDataset.__getitem__

    def getitem(self, index):
        inp, target, weight, meta = real_getitem(self, index)
        if self.is_train and index == 5:  # batch size 4, no shuffling: step 1
            inp = inp.clone()
            inp[0, 3, 3] = float("nan")
        return inp, target, weight, meta

    monkeypatch.setattr(PoseDataset, "__getitem__", getitem)
    cfg = load_config(cfg_file, ["TRAIN.SHUFFLE", "False", "HRPOSE.MAX_ITERS_PER_EPOCH", "3"])
    with pytest.raises(NonFiniteLossError, match=r"at epoch 0, step 1: lower TRAIN.LR, check the data"):
        train(cfg, cfg_file, validate=lambda *a, **k: pytest.fail("validation must not run after a NaN loss"))
    exp_dir = resnet_exp_dir(cfg_file)
    assert not (exp_dir / "checkpoint.pth").exists() and not (exp_dir / "final_state.pth").exists()
