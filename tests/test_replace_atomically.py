"""`user_files.replace_atomically`, the one temp-file-and-rename writer: no temporary file survives an interrupt
(Ctrl-C / SIGTERM become exceptions) that lands right after the temporary file was created."""

from __future__ import annotations

import os

import pytest

from hrpose import user_files
from hrpose.commands.predict import write_atomic


def _interrupt_after_open(monkeypatch: pytest.MonkeyPatch) -> None:
    real = user_files.open_nofollow

    def opened_then_interrupted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        fd = real(*args, **kwargs)
        os.close(fd)
        raise KeyboardInterrupt  # the signal arrives as soon as the file exists

    monkeypatch.setattr(user_files, "open_nofollow", opened_then_interrupted)


@pytest.mark.parametrize("writer", ["replace_atomically", "predict.write_atomic"])
def test_an_interrupt_right_after_the_temp_file_exists_leaves_nothing(tmp_path, monkeypatch, writer):
    target = tmp_path / "004_pose.jpg"
    target.write_bytes(b"old")
    _interrupt_after_open(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        if writer == "replace_atomically":
            user_files.replace_atomically(target, b"new")
        else:
            write_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["004_pose.jpg"]
    assert target.read_bytes() == b"old"


def test_a_taken_temporary_name_is_skipped_and_never_removed(tmp_path, monkeypatch):
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(user_files.secrets, "token_hex", lambda n: next(names))
    theirs = tmp_path / ".out.json.aaaa.tmp"
    theirs.write_bytes(b"someone else's")
    user_files.replace_atomically(tmp_path / "out.json", b"{}")
    assert (tmp_path / "out.json").read_bytes() == b"{}"
    assert theirs.read_bytes() == b"someone else's"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.json.aaaa.tmp", "out.json"]


def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch):
    names = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(user_files.secrets, "token_hex", lambda n: next(names))
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / ".out.json.aaaa.tmp").symlink_to(victim)
    user_files.replace_atomically(tmp_path / "d" / "out.json", b"{}")
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / "d" / "out.json").read_bytes() == b"{}"
    assert (tmp_path / "d" / ".out.json.aaaa.tmp").is_symlink()
