"""checkpoint.pth both ways with the official HRNet code, and TRAIN.BEGIN_EPOCH without a checkpoint.

* the official ``tools/train.py`` resume lines (re-stated below, minimal paraphrase) load a checkpoint.pth
  written by ``hrpose train``: strictly, into a real ``torch.nn.DataParallel`` model, same weights and
  optimizer state, and its ``MultiStepLR(..., last_epoch=checkpoint['epoch'])`` builds;
* ``hrpose train`` resumes a checkpoint.pth laid out as the official code writes it (``module.`` keys,
  ``perf``, no scheduler/rng fields) and an older hrpose one with bare keys;
* the ``state_dict`` keys are the official DataParallel model's (golden ``architectures.json``).
"""

from __future__ import annotations

import copy
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
from yacs.config import CfgNode

from conftest import golden_json, mini_coco
from helpers import hrnet_exp_dir as _exp_dir
from helpers import tiny_hrnet_config
from hrpose.config import load_config
from hrpose.engine import load_checkpoint, train
from hrpose.engine.checkpoint import add_module_prefix, strip_module_prefix
from hrpose.engine.distributed import unwrap_model
from hrpose.engine.train import train_one_epoch
from hrpose.models import build_model

LR = 1e-3
BEGIN, END, LR_STEP = 2, 4, [2]
_config = partial(tiny_hrnet_config, lr=LR, lr_step=LR_STEP)  # (tmp, root, name='run', **TRAIN keys)



class EpochRecorder:
    """A train_one_epoch for `train(..., train_one_epoch=recorder)`: records, at the start of every epoch, the
    weights, lr and optimizer state, then runs the real epoch."""

    def __init__(self) -> None:
        self.real = train_one_epoch
        self.seen: list[dict[str, Any]] = []

    def __call__(self, model, loader, criterion, optimizer, device, *, epoch, **kwargs):
        weights = {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}
        self.seen.append({"epoch": epoch, "weights": weights, "lr": optimizer.param_groups[0]["lr"],
                          "optimizer": copy.deepcopy(optimizer.state_dict())})  # fmt: skip
        return self.real(model, loader, criterion, optimizer, device, epoch=epoch, **kwargs)


def assert_same_state(a: Any, b: Any, where: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are equal (tensors exactly)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            assert_same_state(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def begin_epoch_run(tmp_path_factory):
    """`hrpose train` with TRAIN.BEGIN_EPOCH 2, END_EPOCH 4, LR_STEP [2] and no checkpoint."""
    tmp = tmp_path_factory.mktemp("interop")
    root = mini_coco(tmp, 3)
    cfg_file = _config(tmp, root, BEGIN_EPOCH=BEGIN, END_EPOCH=END)
    result = train(load_config(cfg_file), cfg_file)
    return cfg_file, root, result


# ----------------------------------------------------------------------------------------------------
# TRAIN.BEGIN_EPOCH without a checkpoint


def official_lrs_without_checkpoint(begin: int, end: int, milestones: list[int], factor: float) -> list[float]:
    """The learning rate each epoch trains with in the official tools/train.py without a checkpoint, run on the
    installed PyTorch. Minimal paraphrase of its lines: ``last_epoch = -1`` (only a loaded checkpoint changes
    it; BEGIN_EPOCH does not), ``MultiStepLR(optimizer, LR_STEP, LR_FACTOR, last_epoch=last_epoch)``, then
    ``for epoch in range(begin_epoch, END_EPOCH): lr_scheduler.step(); train(...)``."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=LR)
    last_epoch = -1
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, factor, last_epoch=last_epoch)
    lrs = []
    with pytest.warns(UserWarning, match="lr_scheduler.step"):  # PyTorch >= 1.1 warns about this order
        for _epoch in range(begin, end):
            lr_scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()  # the epoch's training
    return lrs


def test_begin_epoch_without_checkpoint_starts_the_schedule_at_the_base_lr(begin_epoch_run):
    _, _, result = begin_epoch_run
    ours = [h["lr"] for h in result["history"]]
    assert [h["epoch"] for h in result["history"]] == [2, 3]
    # like the official code, the schedule starts at the base LR and LR_STEP counts this run's epochs
    # (before this was fixed, hrpose pre-stepped the schedule BEGIN_EPOCH times: [1e-4, 1e-4])
    assert ours == pytest.approx([LR, LR])
    official = official_lrs_without_checkpoint(BEGIN, END, LR_STEP, 0.1)
    # on current PyTorch the official step-first loop decays one epoch early (the documented LR-step
    # deviation): its epoch e trains with the rate ours gives epoch e + 1
    assert official == pytest.approx([LR, LR * 0.1])
    assert official[0] == ours[0] and official[:-1] == ours[1:]


# ----------------------------------------------------------------------------------------------------
# the official resume code on an hrpose checkpoint.pth


def test_state_dict_keys_are_the_official_dataparallel_keys():
    """Golden: the official w32 model has 1754 state_dict entries; its DataParallel model names them `module.`+key."""
    arch = golden_json("architectures.json")[0]
    assert arch["experiment"] == "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
    official_cfg = CfgNode(copy.deepcopy(golden_json("experiments.json")[arch["experiment"]]))
    with torch.device("meta"):
        model = build_model(official_cfg)
    ours = list(add_module_prefix(model.state_dict()))
    assert ours == ["module." + k for k, _ in arch["state_dict"]] and len(ours) == 1754
    assert ours == list(torch.nn.DataParallel(model).state_dict())
    assert list(strip_module_prefix(add_module_prefix(model.state_dict()))) == [k for k, _ in arch["state_dict"]]


def test_official_resume_code_loads_an_hrpose_checkpoint(begin_epoch_run):
    cfg_file, _, result = begin_epoch_run
    exp = _exp_dir(cfg_file)
    checkpoint_file = exp / "checkpoint.pth"
    cfg = load_config(cfg_file)

    # --- minimal paraphrase of the official tools/train.py resume (leoxiaobin/deep-high-resolution-net.pytorch),
    # on the CPU: model = DataParallel(get_pose_net(cfg)); optimizer = get_optimizer(cfg, model); then
    model = torch.nn.DataParallel(build_model(cfg, is_train=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR)  # get_optimizer for 'adam'
    # The official torch.load unpickles everything (the PyTorch it was written for had no weights_only).
    # weights_only=False is safe ONLY because this test wrote this very file a moment ago (hrpose train above).
    checkpoint = torch.load(checkpoint_file, weights_only=False)
    begin_epoch = checkpoint["epoch"]
    best_perf = checkpoint["perf"]
    last_epoch = checkpoint["epoch"]
    missing_unexpected = model.load_state_dict(checkpoint["state_dict"])  # strict, as the official call
    optimizer.load_state_dict(checkpoint["optimizer"])
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, cfg.TRAIN.LR_STEP, cfg.TRAIN.LR_FACTOR, last_epoch=last_epoch
    )  # needs 'initial_lr' in every param group when last_epoch != -1
    # --- end of the official lines

    assert not missing_unexpected.missing_keys and not missing_unexpected.unexpected_keys
    assert begin_epoch == END and best_perf == pytest.approx(result["last_perf"])
    assert lr_scheduler.last_epoch == END + 1  # the official resume on current PyTorch (its own business)
    final = torch.load(exp / "final_state.pth", weights_only=True)  # the weights after the last epoch
    got = model.module.state_dict()
    assert set(got) <= set(final)
    for k, v in got.items():
        assert torch.equal(v, final[k]), k
    ours = load_checkpoint(checkpoint_file)
    assert_same_state(optimizer.state_dict()["state"], ours["optimizer"]["state"], "optimizer.state")
    assert len(optimizer.state_dict()["state"]) == len(list(model.parameters()))  # Adam state for every weight
    # the official fields keep their meaning: perf is the last epoch's score, model the MODEL.NAME
    assert checkpoint["model"] == "pose_hrnet" and checkpoint["perf"] == pytest.approx(result["last_perf"])
    assert not any(k.startswith("module.") for k in checkpoint["best_state_dict"])


# ----------------------------------------------------------------------------------------------------
# hrpose resumes an official checkpoint.pth and an older bare-key hrpose one


def write_official_checkpoint(cfg_file: Path, epochs_done: int, perf: float) -> dict[str, Any]:
    """A checkpoint.pth as the official tools/train.py writes it after `epochs_done` epochs (minimal paraphrase:
    DataParallel model, get_optimizer, MultiStepLR(last_epoch=-1), per epoch `lr_scheduler.step(); train`, then
    save_checkpoint's dict of epoch/model/state_dict/best_state_dict/perf/optimizer with torch.save)."""
    cfg = load_config(cfg_file)
    torch.manual_seed(7)
    model = torch.nn.DataParallel(build_model(cfg, is_train=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR)
    lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.TRAIN.LR_STEP, cfg.TRAIN.LR_FACTOR)
    with pytest.warns(UserWarning, match="lr_scheduler.step"):
        for _epoch in range(epochs_done):
            lr_scheduler.step()
            model.train()
            out = model(torch.randn(2, 3, 64, 64))
            loss = ((out - torch.rand_like(out)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    state = {
        "epoch": epochs_done,
        "model": cfg.MODEL.NAME,
        "state_dict": model.state_dict(),
        "best_state_dict": model.module.state_dict(),
        "perf": perf,
        "optimizer": optimizer.state_dict(),
    }
    exp = _exp_dir(cfg_file)
    exp.mkdir(parents=True, exist_ok=True)
    torch.save(state, exp / "checkpoint.pth")
    return state


def test_hrpose_resumes_an_official_checkpoint(tmp_path, begin_epoch_run):
    _, root, _ = begin_epoch_run
    cfg_file = _config(tmp_path, root, name="official", END_EPOCH=3)
    official = write_official_checkpoint(cfg_file, epochs_done=2, perf=0.125)
    assert all(k.startswith("module.") for k in official["state_dict"]) and "scheduler" not in official
    recorder = EpochRecorder()
    result = train(load_config(cfg_file), cfg_file, train_one_epoch=recorder)
    assert [s["epoch"] for s in recorder.seen] == [2] and result["epochs"] == 1
    start = recorder.seen[0]
    for k, v in official["best_state_dict"].items():  # the official model.module.state_dict()
        assert torch.equal(start["weights"][k], v), k
    assert_same_state(start["optimizer"]["state"], official["optimizer"]["state"], "optimizer.state")
    # the schedule continues at epoch 2 (LR_STEP [2]: decayed), as hrpose's own schedule would be there
    assert start["lr"] == pytest.approx(LR * 0.1)
    ckpt = load_checkpoint(_exp_dir(cfg_file) / "checkpoint.pth")
    assert ckpt["epoch"] == 3 and ckpt["scheduler"]["last_epoch"] == 3
    assert ckpt["best_perf"] == pytest.approx(max(0.125, result["last_perf"]))  # official 'perf' was the best so far
    assert all(k.startswith("module.") for k in ckpt["state_dict"])


def test_an_older_bare_key_hrpose_checkpoint_still_resumes(tmp_path, begin_epoch_run):
    src_cfg, root, _ = begin_epoch_run
    ckpt = load_checkpoint(_exp_dir(src_cfg) / "checkpoint.pth")
    ckpt["state_dict"] = dict(strip_module_prefix(ckpt["state_dict"]))  # the layout hrpose wrote before
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    cfg_file = _config(tmp_path, root, name="old", BEGIN_EPOCH=BEGIN, END_EPOCH=END + 1)
    _exp_dir(cfg_file).mkdir(parents=True)
    torch.save(ckpt, _exp_dir(cfg_file) / "checkpoint.pth")
    recorder = EpochRecorder()
    train(load_config(cfg_file), cfg_file, train_one_epoch=recorder)
    assert [s["epoch"] for s in recorder.seen] == [END]
    start = recorder.seen[0]
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(start["weights"][k], v), k
    assert_same_state(start["optimizer"]["state"], ckpt["optimizer"]["state"], "optimizer.state")
    assert start["lr"] == pytest.approx(LR * 0.1)  # hrpose's scheduler state restored: 2 epochs into LR_STEP [2]
