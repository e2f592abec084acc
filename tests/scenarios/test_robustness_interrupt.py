"""Interrupted and failed training, by fault injection: `hrpose train` SIGKILLed at chosen moments, disk full.

The child is `hrpose train` (a tiny pose_resnet on three coco-mini images, one iteration per epoch) run by a
small driver that can make it hang at an exact moment: after the first step of an epoch, or inside the
atomic checkpoint writer after the temporary file is fully written but before it replaces the destination
(`os.replace`). The parent waits for the hang's marker file and sends SIGKILL. Then `train` with AUTO_RESUME
must find a valid checkpoint (or none) and finish, and the outputs written before the kill (model_best.pth,
the log) must be intact. Validation runs for real; its score is replaced by a fixed schedule (epoch 0 is
the best) so that which files are written is known in advance.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import DATA, ROOT
from helpers import DRIVER
from helpers import TINY_RESNET_END_EPOCH as END_EPOCH
from helpers import resnet_exp_dir as _exp_dir
from helpers import tiny_resnet_config as _tiny_config
from hrpose.config import load_config
from hrpose.engine import load_checkpoint, train
from hrpose.engine.checkpoint import CheckpointSaveError, save_checkpoint_atomic

COCO_MINI = DATA / "coco-mini"
PERF = [0.5, 0.3, 0.4, 0.2]  # validation score per epoch: epoch 0 stays the best

def _run_and_kill(cfg_file: Path, hang: str, timeout: float = 180.0) -> str:
    """Start `hrpose train` with the hang, SIGKILL it once the hang's marker appears; returns the marker."""
    tmp = cfg_file.parent
    (tmp / "driver.py").write_text(DRIVER)
    marker = tmp / f"marker_{hang.replace(':', '_')}"
    env = dict(os.environ, RB_MARKER=str(marker), RB_HANG=hang, RB_PERF=",".join(map(str, PERF)), OMP_NUM_THREADS="1")
    with open(tmp / "child.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, str(tmp / "driver.py"), "train", "--cfg", str(cfg_file)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while not marker.exists():
                if proc.poll() is not None:
                    output = (tmp / "child.out").read_text(errors="replace")[-3000:]
                    pytest.fail(f"child exited ({proc.returncode}) before reaching the hang {hang!r}:\n{output}")
                if time.monotonic() > deadline:
                    pytest.fail(f"child did not reach the hang {hang!r} within {timeout} s")
                time.sleep(0.05)
            time.sleep(0.1)  # let the marker's writer be inside sleep()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    return marker.read_text()


def _resume(cfg_file: Path) -> dict:
    """`train` with AUTO_RESUME (in this process, the same score schedule)."""
    from hrpose.engine.evaluate import validate as real_validate

    def validate(*args, step=0, **kwargs):
        name_values, _ = real_validate(*args, step=step, **kwargs)
        return name_values, PERF[step]

    return train(load_config(cfg_file), cfg_file, validate=validate)


def _snapshot(exp_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in exp_dir.iterdir() if p.is_file()} if exp_dir.is_dir() else {}


def _check_finished(exp_dir: Path, result: dict, epochs_run: int) -> None:
    assert result["epochs"] == epochs_run
    ckpt = load_checkpoint(exp_dir / "checkpoint.pth")
    assert ckpt["epoch"] == END_EPOCH and ckpt["best_perf"] == PERF[0]
    final = torch.load(exp_dir / "final_state.pth", weights_only=True)
    assert all(torch.equal(final[k], ckpt["state_dict"]["module." + k]) for k in final)  # official layout
    best = torch.load(exp_dir / "model_best.pth", weights_only=True)
    assert set(best) == set(final)
    assert all(torch.equal(best[k], ckpt["best_state_dict"][k]) for k in best)  # the epoch-0 weights


def _check_earlier_outputs_intact(before: dict[str, bytes], exp_dir: Path) -> None:
    """model_best.pth written before the kill is byte-identical; every log written before it is a prefix."""
    after = _snapshot(exp_dir)
    if "model_best.pth" in before:
        assert after["model_best.pth"] == before["model_best.pth"]
    for name, data in before.items():
        if name.endswith(".log"):
            assert after[name].startswith(data), f"{name} lost what was logged before the kill"


def _temp_files(exp_dir: Path) -> list[str]:
    return sorted(p.name for p in exp_dir.glob(".*.tmp"))


def test_sigkill_inside_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    """The moment that matters most: the new checkpoint's temp file is complete, the old one not yet replaced."""
    cfg_file = _tiny_config(tmp_path)
    exp_dir = _exp_dir(cfg_file)
    what = _run_and_kill(cfg_file, "write:checkpoint.pth:2")  # epoch 1's checkpoint
    assert "checkpoint.pth" in what
    assert len(_temp_files(exp_dir)) == 1  # the orphaned temp file of the interrupted write
    ckpt = load_checkpoint(exp_dir / "checkpoint.pth")  # still epoch 0's, and complete
    assert ckpt["epoch"] == 1 and ckpt["best_perf"] == PERF[0]
    before = _snapshot(exp_dir)
    assert "model_best.pth" in before and any(n.endswith(".log") for n in before)
    result = _resume(cfg_file)
    _check_finished(exp_dir, result, epochs_run=END_EPOCH - 1)
    _check_earlier_outputs_intact(before, exp_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("hang", "checkpoint_epoch_at_kill"),
    [
        ("step:1", 1),  # in the middle of epoch 1, after one optimizer step
        ("write:checkpoint.pth:1", None),  # the very first checkpoint: nothing to keep, resume starts over
        ("write:model_best.pth:1", 1),  # checkpoint.pth of epoch 0 done, model_best.pth not yet
        ("write:final_state.pth:1", END_EPOCH),  # all epochs done, final weights not yet
    ],
)
def test_sigkill_at_other_moments_then_resume_finishes(tmp_path, hang, checkpoint_epoch_at_kill):
    cfg_file = _tiny_config(tmp_path)
    exp_dir = _exp_dir(cfg_file)
    _run_and_kill(cfg_file, hang)
    if checkpoint_epoch_at_kill is None:
        assert not (exp_dir / "checkpoint.pth").exists()
    else:
        assert load_checkpoint(exp_dir / "checkpoint.pth")["epoch"] == checkpoint_epoch_at_kill
    before = _snapshot(exp_dir)
    result = _resume(cfg_file)
    _check_finished(exp_dir, result, epochs_run=END_EPOCH - (checkpoint_epoch_at_kill or 0))
    _check_earlier_outputs_intact(before, exp_dir)


# ---------------------------------------------------------------------------------------------------
# disk full


def _enospc_on_call(n: int, monkeypatch) -> list[int]:
    """torch.save writes some bytes then fails with ENOSPC from its n-th call (1-based) on: the disk is full."""
    real_save = torch.save
    calls = [0]

    def save(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] >= n:
            if hasattr(f, "write"):
                f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    return calls


def test_disk_full_during_atomic_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint_atomic({"epoch": 1, "state_dict": {"w": torch.ones(3)}}, path)
    old = path.read_bytes()
    _enospc_on_call(1, monkeypatch)
    with pytest.raises(CheckpointSaveError, match=r"No space left on device.*previous checkpoint.pth was kept") as e:
        save_checkpoint_atomic({"epoch": 2, "state_dict": {"w": torch.zeros(3)}}, path)
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == old and list(tmp_path.iterdir()) == [path]  # no temp file left behind
    fresh = tmp_path / "new.pth"
    with pytest.raises(CheckpointSaveError, match="no previous new.pth existed"):
        save_checkpoint_atomic({"epoch": 1}, fresh)
    assert not fresh.exists() and list(tmp_path.iterdir()) == [path]


def test_disk_full_during_training_stops_keeps_the_checkpoint_and_resume_finishes(tmp_path, monkeypatch):
    cfg_file = _tiny_config(tmp_path)
    exp_dir = _exp_dir(cfg_file)
    # saves per epoch: checkpoint.pth, then model_best.pth when best (epoch 0 only) -> call 3 = epoch 1's checkpoint
    _enospc_on_call(3, monkeypatch)
    with pytest.raises(CheckpointSaveError, match=r"checkpoint.pth: No space left on device; the previous "
                                                  r"checkpoint.pth was kept unchanged"):  # fmt: skip
        _resume(cfg_file)
    assert _temp_files(exp_dir) == []
    assert load_checkpoint(exp_dir / "checkpoint.pth")["epoch"] == 1
    before = _snapshot(exp_dir)
    monkeypatch.undo()
    result = _resume(cfg_file)
    _check_finished(exp_dir, result, epochs_run=END_EPOCH - 1)
    _check_earlier_outputs_intact(before, exp_dir)
