"""One rule for every file a user names, and one way to create files in folders hrpose does not own.

Reading (`read_user_file`): open without blocking (a FIFO would wait forever for a writer), check the
*opened* descriptor is a regular file (not a device such as /dev/zero, a FIFO or a folder), check its size
against a limit, then read at most limit + 1 bytes. The checks are made on the descriptor, so a file swapped
between the check and the read cannot slip through.

Writing (`create_exclusive`, `open_nofollow`): files hrpose creates in an output folder are opened with
``O_NOFOLLOW`` (a symbolic link planted under that name is refused, never followed) and, for new temporary
names, ``O_EXCL`` (a name that already exists is never reused or truncated).

`safe_text` escapes control characters in names printed on an `error:` line, so a file name holding a newline
cannot forge a second line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from hrpose.errors import UserError

__all__ = ["RecordFile", "UserFileError", "create_exclusive", "error_text", "open_nofollow", "read_user_file",
           "safe_text"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class UserFileError(UserError, ValueError):
    """A user-named file that is missing, not a regular file, too large or unreadable."""


def safe_text(value: object, limit: int = 300) -> str:
    """`value` as text for one message line: control characters (newline, CR, ESC, ...) escaped, length capped."""
    text = str(value)
    out = []
    for ch in text:
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or ch in "\u2028\u2029":
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    s = "".join(out)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def error_text(message: object) -> str:
    """A message for an `error:` line: control characters escaped except newlines, and every further line
    indented, so no text inside it (a file name holding "\\nerror: ...") can start a line of its own."""
    lines = str(message).split("\n")
    out = [safe_text(line, limit=100_000) for line in lines]
    return "\n".join([out[0], *[x if x[:1].isspace() else "  " + x for x in out[1:]]])


def read_user_file(path: str | os.PathLike[str], what: str, max_bytes: int, fix: str = "") -> bytes:
    """The bytes of a file the user named, by the one rule (see the module docstring).

    `what` names the file's role ("detection file (--detector file:...)"); `fix` is appended to the messages.
    Raises UserFileError (one line: the file, what was expected, how to fix it)."""
    p = Path(path)
    name = safe_text(p)
    tail = f"; {fix}" if fix else ""
    try:
        fd = os.open(p, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    except FileNotFoundError:
        raise UserFileError(f"{what} {name}: no such file{tail}") from None
    except OSError as e:
        if e.errno in (errno.ENXIO,):  # a socket or a FIFO without a writer on some systems
            raise UserFileError(f"{what} {name}: not a regular file (a FIFO, socket or device){tail}") from None
        raise UserFileError(f"{what} {name}: cannot be opened: {e.strerror or e}{tail}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise UserFileError(f"{what} {name}: is a folder, expected a file{tail}")
        if not stat.S_ISREG(st.st_mode):
            raise UserFileError(f"{what} {name}: not a regular file (a FIFO, socket or device){tail}")
        if st.st_size > max_bytes:
            raise UserFileError(
                f"{what} {name}: {st.st_size} bytes, more than the {max_bytes} it may have; is it the right file?{tail}"
            )
        chunks: list[bytes] = []
        got = 0
        while got <= max_bytes:
            try:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - got))
            except BlockingIOError:  # (a regular file never blocks; kept for odd file systems)
                continue
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > max_bytes:  # it grew while being read
            raise UserFileError(f"{what} {name}: more than the {max_bytes} bytes it may have{tail}")
        return b"".join(chunks)
    except OSError as e:
        raise UserFileError(f"{what} {name}: cannot be read: {e.strerror or e}{tail}") from None
    finally:
        os.close(fd)


def open_nofollow(path: str | os.PathLike[str], flags: int, mode: int = 0o644) -> int:
    """os.open with O_NOFOLLOW | O_CLOEXEC: a symbolic link at `path` raises OSError (ELOOP), never followed."""
    return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)


def create_exclusive(folder: str | os.PathLike[str], prefix: str, suffix: str, mode: int = 0o644) -> tuple[int, Path]:
    """A new file `folder/prefix<random>suffix`, created with O_CREAT | O_EXCL | O_NOFOLLOW: (fd, path).

    The name did not exist before (nothing, link or file, is reused), so nothing outside `folder` can be written."""
    for p in _fresh_names(folder, prefix, suffix):
        try:
            return open_nofollow(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), p
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "could not find a free temporary name", str(folder))


def _fresh_names(folder: str | os.PathLike[str], prefix: str, suffix: str) -> Iterator[Path]:
    """100 candidate names `folder/prefix<random>suffix` for an O_EXCL create to try in turn."""
    d = Path(folder)
    return (d / f"{prefix}{secrets.token_hex(4)}{suffix}" for _ in range(100))


def replace_atomically(path: str | os.PathLike[str], data: bytes, mode: int = 0o666) -> Path:
    """`data` to `path` through a new file beside it (`.<name>.<random>.tmp`, created with O_CREAT | O_EXCL |
    O_NOFOLLOW like :func:`create_exclusive`), renamed over `path`: a reader sees the old file or the whole new
    one, never a part. The temporary file is removed on any failure, including a Ctrl-C or SIGTERM that lands
    right after it was created: its name is chosen before it exists, so the cleanup knows it."""
    path = Path(path)
    for tmp in _fresh_names(path.parent, f".{path.name}.", ".tmp"):
        taken = False  # the name was already someone else's: never remove that file
        try:
            try:
                fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                taken = True
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
            return path
        except BaseException:
            if not taken:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
    raise FileExistsError(errno.EEXIST, "could not find a free temporary name", str(path.parent))


class RecordFile:
    """Whole records appended to an open file descriptor, unbuffered (`os.write`).

    `write(text)` writes all of `text` or, when a write fails (ENOSPC, EIO), truncates the file back to where
    it was before the call and re-raises: the file never ends in a torn record. `undo()` removes the last
    write (its records belong to an item whose other outputs failed). Truncating frees space, so it works on
    a full disk."""

    def __init__(self, fd: int, path: str | os.PathLike[str]) -> None:
        self.fd: int | None = fd
        self.path = Path(path)
        self.size = os.lseek(fd, 0, os.SEEK_END)
        self._before_last = self.size

    def write(self, text: str) -> None:
        assert self.fd is not None, "write after close"
        raw = text.encode("utf-8")
        data = memoryview(raw)
        start = self.size
        try:
            while data:
                n = os.write(self.fd, data)
                data = data[n:]
        except OSError:
            self._cut(start)
            raise
        self._before_last, self.size = start, start + len(raw)

    def undo(self) -> None:
        """Remove what the last `write` added (once)."""
        self._cut(self._before_last)

    def _cut(self, size: int) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, size)
        os.lseek(self.fd, size, os.SEEK_SET)
        self.size = self._before_last = size

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
