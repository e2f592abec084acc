"""hrpose.engine.checkpoint: atomic saving, weights_only loading, RNG capture/restore."""

from __future__ import annotations

import collections
import errno
import os
import random

import numpy as np
import pytest
import torch

from hrpose.engine import checkpoint as ck
from hrpose.engine.checkpoint import (
    CheckpointSaveError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint_atomic,
    to_safe,
)
from hrpose.errors import UserError


def _ckpt(value: float) -> dict:
    return {"epoch": 1, "state_dict": {"w": torch.full((3,), value)}, "perf": value}


def test_save_and_load_roundtrip_weights_only(tmp_path):
    path = tmp_path / "sub" / "checkpoint.pth"
    obj = to_safe({**_ckpt(2.0), "arr": np.arange(4, dtype=np.float32), "n": np.int64(7),
                   "milestones": collections.Counter({3: 1})})  # fmt: skip
    assert save_checkpoint_atomic(obj, path) == path
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["w"], torch.full((3,), 2.0))
    assert torch.equal(loaded["arr"], torch.arange(4, dtype=torch.float32))
    assert loaded["n"] == 7 and type(loaded["n"]) is int
    assert isinstance(loaded["milestones"], collections.Counter)
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pth"]  # no temp file left behind


def test_failed_replace_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint_atomic(_ckpt(1.0), path)

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "replace", no_space)
    with pytest.raises(CheckpointSaveError) as info:
        save_checkpoint_atomic(_ckpt(5.0), path)
    msg = str(info.value)
    assert "No space left on device" in msg and "previous checkpoint.pth was kept unchanged" in msg
    assert str(path) in msg
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["perf"] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


def test_failed_write_midway_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint_atomic(_ckpt(1.0), path)
    real_save = torch.save

    def partial_then_enospc(obj, f, *a, **k):
        real_save(obj, f, *a, **k)  # some bytes reach the temp file, then the disk fills up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", partial_then_enospc)
    with pytest.raises(CheckpointSaveError, match="kept unchanged"):
        save_checkpoint_atomic(_ckpt(5.0), path)
    monkeypatch.undo()
    assert load_checkpoint(path)["perf"] == 1.0
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_failure_without_previous_file_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(ck.os, "replace", lambda s, d: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))
    with pytest.raises(CheckpointSaveError, match="no previous final_state.pth existed"):
        save_checkpoint_atomic({"w": torch.zeros(1)}, tmp_path / "final_state.pth")
    assert os.listdir(tmp_path) == []


def test_to_safe_rejects_arbitrary_objects():
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"checkpoint\['a'\]\[1\].*Thing"):
        to_safe({"a": [1, Thing()]})


def test_load_rejects_pickled_objects_and_non_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"epoch": 1, "state_dict": {}, "x": random.Random(0)}, bad)
    with pytest.raises(RuntimeError, match="weights_only=True"):
        load_checkpoint(bad)
    bare = tmp_path / "bare.pth"
    torch.save({"w": torch.zeros(1)}, bare)
    with pytest.raises(RuntimeError, match="not a training checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")


def test_rng_state_roundtrip_through_file(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's legacy state
    state = capture_rng_state()
    save_checkpoint_atomic({"epoch": 0, "state_dict": {}, "rng": state}, tmp_path / "c.pth")
    expected = (random.random(), np.random.rand(3), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pth")["rng"])
    got = (random.random(), np.random.rand(3), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert torch.equal(got[3], expected[3])


def test_unreadable_checkpoint_is_one_line_that_never_advises_unsafe_loading(tmp_path):
    """torch's own refusal text says re-running with weights_only=False "will likely succeed": that advice must
    not reach the user (never unpickle untrusted files); the error is one line naming the file and the fix."""
    pickled = tmp_path / "pickled.pth"
    torch.save({"epoch": 1, "state_dict": {}, "x": random.Random(0)}, pickled)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 4)
    for path in (pickled, garbage):
        with pytest.raises(RuntimeError) as e:
            load_checkpoint(path)
        msg = str(e.value)
        assert "\n" not in msg and path.name in msg and "move it away" in msg
        assert "weights_only=False" not in msg and "set to False" not in msg and "will likely succeed" not in msg


def test_training_checkpoint_over_the_size_limit_is_refused_before_loading(tmp_path, monkeypatch):
    """checkpoint.pth (AUTO_RESUME reads it) gets the same declared-size limit as weights files."""
    path = tmp_path / "checkpoint.pth"
    torch.save({"epoch": 1, "state_dict": {"w": torch.zeros(4096)}}, path)
    monkeypatch.setenv("HRPOSE_MAX_CHECKPOINT_BYTES", "1000")
    with pytest.raises(UserError, match=r"checkpoint\.pth declares .* over the limit .*HRPOSE_MAX_CHECKPOINT_BYTES"):
        load_checkpoint(path)
    monkeypatch.delenv("HRPOSE_MAX_CHECKPOINT_BYTES")
    assert load_checkpoint(path)["epoch"] == 1
