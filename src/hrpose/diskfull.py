"""A full disk (or an exhausted quota) while writing an output file, as one :class:`~hrpose.errors.UserError`.

``ENOSPC``/``EDQUOT`` are not our bugs: the message names the file that could not be written, says what was
kept, and how to go on (free space on that disk, or write somewhere else). :func:`disk_full_error` builds
that error from an ``OSError``; :func:`translate_disk_full` is the same as a context manager.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

from hrpose.errors import UserError

__all__ = ["DISK_FULL_ERRNOS", "DiskFullError", "is_disk_full", "disk_full_error", "translate_disk_full"]

DISK_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


class DiskFullError(UserError, OSError):
    """Writing ``filename`` failed because its disk is full (or the user's quota is used up); ``str()`` is the
    whole message (no ``[Errno 28]`` prefix)."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


def is_disk_full(e: BaseException | None) -> bool:
    """``e`` (or an exception it was raised from) is an ``OSError`` for a full disk or quota."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def disk_full_error(
    path: str | os.PathLike[str], e: BaseException | None = None, *, kept: str = "", fix: str = ""
) -> DiskFullError:
    """The error for ``path`` not written for lack of space: its name, ``kept`` (what is still intact) and ``fix``
    (default: free space on that disk or choose another output folder)."""
    from hrpose.user_files import safe_text

    code = errno.ENOSPC
    while e is not None:
        if isinstance(e, OSError) and e.errno in DISK_FULL_ERRNOS:
            code = int(e.errno or errno.ENOSPC)
            break
        e = e.__cause__ or e.__context__
    reason = os.strerror(code)  # "No space left on device" / "Disk quota exceeded"
    fix = fix or "free space on that disk or choose another output folder"
    message = f"cannot write {safe_text(path)}: {reason}; {kept + '; ' if kept else ''}{fix}"
    err = DiskFullError(code, message)
    err.filename = os.fspath(path)
    return err


@contextmanager
def translate_disk_full(path: str | os.PathLike[str], *, kept: str = "", fix: str = "") -> Iterator[None]:
    """Inside the block, a disk-full ``OSError`` becomes :func:`disk_full_error` for ``path``."""
    try:
        yield
    except UserError:
        raise
    except OSError as e:
        if not is_disk_full(e):
            raise
        raise disk_full_error(path, e, kept=kept, fix=fix) from e
