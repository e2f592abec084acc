"""A REAL full disk (a small tmpfs mounted here; the tests run as root) under `hrpose synth` and `hrpose train`:
one `error:` line naming the file and what to do, no traceback, nothing written before is lost, no temporary
file left behind, and a resumed training continues from the checkpoint that was kept."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import mini_coco
from helpers import tiny_hrnet_config
from hrpose.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block; unmounted afterwards whatever happens."""
    assert os.geteuid() == 0, "these tests mount a tmpfs: run them as root"
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(mnt: Path, leave: int) -> Path:
    """A file taking all of `mnt`'s free space but about `leave` bytes."""
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def hrpose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "hrpose.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_synth_on_a_full_disk_names_the_file_and_keeps_the_finished_dataset(tmp_path):
    with tmpfs(tmp_path / "mnt", "384k") as mnt:
        out = mnt / "ds"
        ok = hrpose("synth", "--out", str(out), "--images", "2", "--image-size", "64", "64", timeout=120)
        assert ok.returncode == 0, ok.stderr
        ann = out / "annotations" / "person_keypoints_train.json"
        before = ann.read_bytes()
        full = hrpose("synth", "--out", str(out), "--images", "3000", "--image-size", "64", "64", timeout=120)
        line = one_error_line(full)
        assert "No space left on device" in line and "--out" in line, line
        assert "images" in line and ".jpg" in line, line  # names the image file it could not write
        assert ann.read_bytes() == before  # the earlier complete split is untouched
        assert temp_files(mnt) == []
    # the annotation file itself: the images fit (one spare page each), the JSON (several pages) does not
    with tmpfs(tmp_path / "mnt2", "1m") as mnt:
        out = mnt / "ds"
        args = ("synth", "--out", str(out), "--images", "20", "--image-size", "64", "64", "--max-people", "15")
        assert hrpose(*args, timeout=120).returncode == 0
        ann = out / "annotations" / "person_keypoints_train.json"
        before = ann.read_bytes()
        assert len(before) > 4 * 4096  # the JSON needs more than the space left below
        fill(mnt, 2 * 4096)
        line = one_error_line(hrpose(*args, timeout=120))
        assert "person_keypoints_train.json" in line and "No space left on device" in line, line
        assert ann.read_bytes() == before and temp_files(mnt) == []


def _train(cfg: Path, mnt_out: Path, log_dir: Path, *opts: str) -> subprocess.CompletedProcess[str]:
    return hrpose("train", "--cfg", str(cfg), "OUTPUT_DIR", str(mnt_out), "LOG_DIR", str(log_dir), *opts)


@pytest.mark.slow
def test_train_with_a_full_disk_keeps_the_checkpoint_and_resumes(tmp_path):
    cfg = tiny_hrnet_config(tmp_path, mini_coco(tmp_path, 3), "full")
    with tmpfs(tmp_path / "mnt", "32m") as mnt:
        first = _train(cfg, mnt / "out", tmp_path / "log")
        assert first.returncode == 0, first.stderr[-3000:]
        (ckpt,) = (mnt / "out").rglob("checkpoint.pth")
        assert load_checkpoint(ckpt)["epoch"] == 1
        old = ckpt.read_bytes()

        # checkpoint.pth of epoch 2 does not fit (the log lines do)
        filler = fill(mnt, ckpt.stat().st_size // 2)
        second = _train(cfg, mnt / "out", tmp_path / "log", "TRAIN.END_EPOCH", "2")
        line = one_error_line(second)
        assert "checkpoint.pth" in line and "No space left on device" in line, line
        assert "previous checkpoint.pth was kept" in line and "OUTPUT_DIR" in line, line
        assert ckpt.read_bytes() == old and load_checkpoint(ckpt)["epoch"] == 1
        assert temp_files(mnt) == []

        # not even the training lock's PID fits
        filler.unlink()
        filler = fill(mnt, 0)
        line = one_error_line(_train(cfg, mnt / "out", tmp_path / "log", "TRAIN.END_EPOCH", "2"))
        assert "train.lock" in line and "No space left on device" in line and "OUTPUT_DIR" in line, line
        assert not list(mnt.rglob("train.lock"))

        # the lock fits (one page), the log file's first line does not
        filler.unlink()
        filler = fill(mnt, 4096)
        line = one_error_line(_train(cfg, mnt / "out", tmp_path / "log", "TRAIN.END_EPOCH", "2"))
        assert "_train.log" in line and "No space left on device" in line and "OUTPUT_DIR" in line, line
        assert ckpt.read_bytes() == old and temp_files(mnt) == []

        # space again: the resume continues from the kept checkpoint
        filler.unlink()
        fourth = _train(cfg, mnt / "out", tmp_path / "log", "TRAIN.END_EPOCH", "2")
        assert fourth.returncode == 0, fourth.stderr[-3000:]
        assert "(epoch 1)" in fourth.stdout, fourth.stdout[-2000:]
        assert load_checkpoint(ckpt)["epoch"] == 2


@pytest.mark.slow
def test_train_with_tensorboard_on_a_full_disk_names_its_folder(tmp_path):
    cfg = tiny_hrnet_config(tmp_path, mini_coco(tmp_path, 3), "tb")
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        fill(mnt, 0)
        run = _train(cfg, tmp_path / "out", mnt / "log", "HRPOSE.TENSORBOARD", "True")
        line = one_error_line(run)
        assert "No space left on device" in line and str(mnt / "log") in line and "LOG_DIR" in line, line
        assert temp_files(tmp_path / "out") == []


def test_synth_max_people_limit_is_the_renderers():
    """--max-people above what the renderer draws (15: its label map is uint8) is the option's error, not a
    ValueError traceback from inside the renderer."""
    from hrpose.commands.synth import MAX_PEOPLE
    from hrpose.synth import MAX_PEOPLE as RENDERER_MAX

    assert MAX_PEOPLE == RENDERER_MAX
    run = hrpose("synth", "--out", "/nonexistent-never-written", "--images", "1", "--max-people", str(RENDERER_MAX + 1))
    assert "--max-people must be from 1 to 15" in one_error_line(run)
