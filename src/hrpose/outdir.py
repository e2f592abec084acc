"""Output folders of `hrpose predict` (and friends): checked up front, one writer at a time, reserved names.

- `check_out_dir`: before any work, the folder is made (or found) and proven writable by creating and removing
  a probe file: a file where the folder should be, a read-only file system or a missing permission is one
  `error:` line naming the folder, not a traceback after the model ran.
- `acquire_out_lock`: one writer per folder, an ``flock`` held for the run (as `hrpose train`'s lock, see
  `hrpose.engine.lock`); a second run into the same folder is refused with the first one's PID. The lock name
  can be chosen: sharded runs (several ranks writing into one folder) take one lock each, e.g.
  ``acquire_out_lock(out, name=f".hrpose-predict.shard{i}.lock")``.
- `RESERVED_STEMS`: output names a per-input file must not take (`results.json` is the aggregate), so an input
  named `results.jpg` is written as `results_1.json`.
- `disk_error`: the one message for a failed write (disk full, I/O error, read-only remount) mid-run.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from hrpose.engine.lock import OutputDirLockedError, TrainLock
from hrpose.errors import UserError
from hrpose.user_files import create_exclusive, safe_text

__all__ = ["PREDICT_LOCK_NAME", "RESERVED_STEMS", "OutDirError", "OutLock", "acquire_out_lock", "check_out_dir",
           "disk_error"]  # fmt: skip

PREDICT_LOCK_NAME = ".hrpose-predict.lock"
#: stems that per-input outputs never take: the aggregate results.json (and its drawings' names)
RESERVED_STEMS = frozenset({"results"})


class OutDirError(UserError, OSError):
    """An output folder that cannot be used (a file in its place, read-only, no permission, disk full)."""


class OutLock(TrainLock):
    holder = "hrpose predict"
    advice = "give this run another --out folder"
    option = "is the --out folder writable?"


def acquire_out_lock(out_dir: str | os.PathLike[str], name: str = PREDICT_LOCK_NAME) -> OutLock:
    """Hold `out_dir/name` (an flock) until `.release()`; OutputDirLockedError (a UserError) when another live
    process holds it. Sharded runs pass a name of their own per rank."""
    lock = OutLock(out_dir, name=name)
    try:
        lock.acquire()
    except OutputDirLockedError:
        raise
    except OSError as e:  # the lock holds the PID: a full disk fails here, before any work
        raise OutDirError(disk_error(lock.path, e).replace(", then run again on the inputs not yet done", "")) \
            from None  # fmt: skip
    return lock


def check_out_dir(out_dir: str | os.PathLike[str], option: str = "--out") -> Path:
    """Make `out_dir` (parents too) and prove it writable, or raise OutDirError naming it and the fix."""
    p = Path(out_dir)
    name = safe_text(p)
    if p.exists() and not p.is_dir():
        raise OutDirError(f"{option} {name} is a file, not a folder: remove it or give another {option} folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutDirError(f"{option} {name}: a file is in the way of the folder (one of its parent folders is a "
                          f"file): give another {option} folder") from None  # fmt: skip
    except OSError as e:
        why = e.strerror or str(e)
        raise OutDirError(f"{option} {name} cannot be created: {why}; give another {option} folder") from None
    try:
        fd, probe = create_exclusive(p, ".hrpose-probe.", ".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = "the file system is read-only" if e.errno == errno.EROFS else (e.strerror or str(e))
        raise OutDirError(f"{option} {name} is not writable: {why}; give a writable {option} folder") from None
    return p


def disk_error(path: str | os.PathLike[str], e: OSError) -> str:
    """One line for a write that failed mid-run: the file, the system's reason, the likely fix."""
    why = e.strerror or str(e)
    hint = {errno.ENOSPC: "the disk is full: free some space or choose another --out",
            errno.EDQUOT: "the disk quota is full: free some space or choose another --out",
            errno.EROFS: "the file system became read-only"}.get(e.errno or 0, "check the disk")  # fmt: skip
    return f"cannot write {safe_text(path)}: {why}; {hint}, then run again on the inputs not yet done"


__all__ += ["OutputDirLockedError"]
