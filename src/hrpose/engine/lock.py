"""One training run per output folder: an exclusive ``fcntl.flock`` on ``<folder>/train.lock`` holding the PID.

A second ``hrpose train`` into the same folder is refused with the first one's PID. The kernel drops an
``flock`` when its process dies, so the lock file a killed run leaves behind is stale by construction:
the next run takes it over (and says whose it was). On exit the lock is released and the file removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from hrpose.diskfull import disk_full_error, is_disk_full
from hrpose.errors import UserError

__all__ = ["LOCK_NAME", "OutputDirLockedError", "TrainLock", "pid_alive"]

LOCK_NAME = "train.lock"


class OutputDirLockedError(UserError, RuntimeError):
    """Another live process holds the training lock of this output folder."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        return int(text.split()[0]) if text else None
    except (OSError, ValueError, IndexError):
        return None


class TrainLock:
    """``with TrainLock(folder): ...``: hold the folder's training lock, or raise OutputDirLockedError.

    ``previous_pid`` is set when a stale lock file (its process gone) was taken over.
    """

    #: what holds the lock and how to avoid the clash, for the messages (`hrpose predict` sets its own)
    holder = "hrpose train"
    advice = "train into another folder (OUTPUT_DIR / --modelDir)"
    option = "is OUTPUT_DIR writable?"

    def __init__(self, folder: str | os.PathLike[str], name: str = LOCK_NAME):
        self.path = Path(folder) / name
        self.fd: int | None = None
        self.previous_pid: int | None = None

    def acquire(self) -> TrainLock:
        try:  # imported here: fcntl exists only on POSIX
            import fcntl
        except ImportError:  # not POSIX (Windows): no lock; one run per folder is then up to the user
            return self

        for _ in range(10):
            try:
                # O_NOFOLLOW: a symbolic link planted under the lock's name is refused, never followed (the
                # lock is truncated and written: following it would overwrite a file outside the folder)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise OutputDirLockedError(
                        f"the lock {self.path} is a symbolic link; hrpose never writes through links in an output "
                        "folder: remove the link (or use another folder)"
                    ) from None
                raise OutputDirLockedError(
                    f"cannot create the lock {self.path}: {e.strerror or e}; {self.option}"
                ) from None
            try:
                st = os.fstat(fd)
            except OSError:
                st = None
            if st is not None and not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise OutputDirLockedError(f"the lock {self.path} is not a regular file: remove it")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                who = f"PID {pid}" if pid else "another process"
                raise OutputDirLockedError(
                    f"another {self.holder} ({who}) is writing into {self.path.parent} (lock {self.path}); wait "
                    f"for it to finish or stop it, or {self.advice}"
                ) from None
            # The file may have been removed (and recreated) by its previous holder between our open and
            # flock: then we hold a lock on an orphaned inode; start over on the current file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            old = _read_pid(fd)
            if old and old != os.getpid():
                self.previous_pid = old
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
                os.fsync(fd)
            except OSError as e:
                if not is_disk_full(e):
                    raise
                with contextlib.suppress(OSError):
                    self.path.unlink()
                os.close(fd)
                raise disk_full_error(self.path, e, fix=f"free space on that disk, or {self.advice}") from e
            self.fd = fd
            return self
        raise OutputDirLockedError(f"could not take the lock {self.path}: it keeps being replaced")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still holding the lock: no one else can own this file
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> TrainLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
