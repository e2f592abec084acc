"""Log file + console logger, running averages, the markdown results table, optional TensorBoard.

The log file follows the official name ``<cfg name>_<%Y-%m-%d-%H-%M>_<phase>.log`` in the output
directory; only rank 0 writes it. TensorBoard is optional: :class:`TensorBoardWriter` is a no-op when
tensorboard is not importable or when it is disabled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from hrpose.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hrpose.diskfull import disk_full_error, is_disk_full
from hrpose.errors import UserError
from hrpose.evaluation.coco import markdown_table
from hrpose.user_files import open_nofollow, safe_text

__all__ = [
    "LOGGER_NAME",
    "setup_logger",
    "get_logger",
    "AverageMeter",
    "name_value_table",
    "TensorBoardWriter",
    "draw_skeleton_batch",
]

LOGGER_NAME = "hrpose"
_FORMAT = "%(asctime)-15s %(message)s"


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def setup_logger(
    output_dir: str | Path | None,
    cfg_name: str,
    phase: str,
    *,
    rank: int = 0,
    time_str: str | None = None,
) -> tuple[logging.Logger, Path | None]:
    """The ``hrpose`` logger with a console handler and (rank 0, ``output_dir`` given) a log file.

    Calling it again replaces the handlers it added before (repeated ``train`` calls in one process).
    Ranks other than 0 only log warnings and errors. Returns ``(logger, log_file or None)``.
    """
    logger = get_logger()
    for h in list(logger.handlers):
        if getattr(h, "_hrpose", False):
            logger.removeHandler(h)
            h.close()
    if not hasattr(logger, "_hrpose_saved"):
        logger._hrpose_saved = (logger.level, logger.propagate)  # type: ignore[attr-defined]
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False  # our handlers print it; the root logger would print it twice
    fmt = logging.Formatter(_FORMAT)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console._hrpose = True  # type: ignore[attr-defined]
    logger.addHandler(console)
    log_file = None
    if rank == 0 and output_dir is not None:
        time_str = time_str or time.strftime("%Y-%m-%d-%H-%M")
        log_file = Path(output_dir) / f"{cfg_name}_{time_str}_{phase}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = _nofollow_file_handler(log_file)
        fh.setFormatter(fmt)
        fh._hrpose = True  # type: ignore[attr-defined]
        logger.addHandler(fh)
    return logger, log_file


def _nofollow_file_handler(log_file: Path) -> logging.Handler:
    """A handler appending to `log_file`, opened with O_NOFOLLOW: a symbolic link planted under the log's name
    in the output folder is refused (UserError), never followed to a file outside it."""
    try:
        fd = open_nofollow(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"the log file {safe_text(log_file)} is a symbolic link; hrpose never writes through "
                            "links in its output folder: remove the link") from None  # fmt: skip
        raise UserError(f"cannot create the log file {safe_text(log_file)}: {e.strerror or e}") from None
    return _LogFileHandler(os.fdopen(fd, "a", encoding="utf-8"), log_file)


class _LogFileHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The log file's handler. A write that fails for lack of space raises one UserError naming the file (not
    logging's printed traceback); after any failed write the handler stays quiet, so that the error's own
    unwinding (which logs too) cannot fail again, and closing it never raises."""

    def __init__(self, stream: Any, path: Path) -> None:
        super().__init__(stream)
        self.path = path
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        error = sys.exc_info()[1]
        self.failed = True
        if is_disk_full(error):
            raise disk_full_error(
                self.path, error, kept="the lines logged before are kept",
                fix="free space on that disk or set OUTPUT_DIR to a folder on another disk, then run the same "
                "command again (AUTO_RESUME continues from the last checkpoint.pth)",
            ) from error  # fmt: skip
        if isinstance(error, OSError):
            raise UserError(f"cannot write the log file {safe_text(self.path)}: {error.strerror or error}") from error
        super().handleError(record)

    def close(self) -> None:
        stream = self.stream
        try:
            try:
                logging.StreamHandler.close(self)
            finally:
                stream.close()
        except OSError:
            # the unwritten tail of a full disk: what the file holds so far stays; the error was reported
            self.failed = True


def close_logger() -> None:
    """Remove and close the handlers added by :func:`setup_logger` (flushes the log file) and give the
    ``hrpose`` logger back its previous level and propagation."""
    logger = get_logger()
    for h in list(logger.handlers):
        if getattr(h, "_hrpose", False):
            logger.removeHandler(h)
            h.close()
    saved = getattr(logger, "_hrpose_saved", None)
    if saved is not None:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        del logger._hrpose_saved  # type: ignore[attr-defined]


class AverageMeter:
    """Last value and running (weighted) average."""

    def __init__(self) -> None:
        self.val = 0.0
        self.sum = 0.0
        self.count = 0.0
        self.avg = 0.0

    def update(self, val: float, n: float = 1) -> None:
        self.val = float(val)
        self.sum += float(val) * n
        self.count += n
        self.avg = self.sum / self.count if self.count else 0.0


def name_value_table(name_values: Mapping[str, float], arch: str) -> str:
    """The official markdown results table (``| Arch | AP | Ap .5 | ... |``), three lines."""
    return markdown_table(name_values, arch)


# ----------------------------------------------------------------------------------------------------
# TensorBoard


_MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
_STD = np.array(IMAGENET_STD, dtype=np.float32)


def draw_skeleton_batch(
    images: torch.Tensor,
    joints_input: np.ndarray,
    visible: np.ndarray | None = None,
    skeleton: Sequence[tuple[int, int]] = (),
    *,
    max_images: int = 4,
) -> np.ndarray:
    """Normalised input crops with joints and limbs drawn, as uint8 ``(B, H, W, 3)`` RGB.

    ``images``: ``(B, 3, H, W)`` normalised with the ImageNet mean/std; ``joints_input``: ``(B, K, 2)`` in
    input-crop pixels; ``visible``: ``(B, K)`` bool (all drawn when ``None``).
    """
    imgs = images[:max_images].detach().float().cpu().numpy().transpose(0, 2, 3, 1)
    imgs = np.clip((imgs * _STD + _MEAN) * 255.0, 0, 255).astype(np.uint8)
    out = []
    for b, img in enumerate(imgs):
        canvas = np.ascontiguousarray(img)
        pts = joints_input[b]
        vis = np.ones(len(pts), bool) if visible is None else np.asarray(visible[b], bool)
        for a, c in skeleton:
            if vis[a] and vis[c]:
                p, q = pts[a], pts[c]
                cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), (0, 200, 255), 1, cv2.LINE_AA)
        for k, p in enumerate(pts):
            if vis[k]:
                cv2.circle(canvas, (int(p[0]), int(p[1])), 2, (255, 40, 40), -1, cv2.LINE_AA)
        out.append(canvas)
    return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)


def _quiet_tensorboard_disk_full(args: Any) -> None:
    """``threading.excepthook``: tensorboard's writer thread failing on a full disk prints nothing (the main
    thread's next TensorBoard call raises the same error, reported as one ``error:`` line); anything else goes
    to the previous hook."""
    if type(args.thread).__name__ == "_AsyncWriterThread" and is_disk_full(args.exc_value):
        return
    _previous_excepthook(args)


_previous_excepthook = threading.excepthook


class TensorBoardWriter:
    """``SummaryWriter`` when enabled and importable, else every method does nothing. A full disk under
    ``log_dir`` raises one UserError naming the folder (the event file written so far is kept)."""

    def __init__(self, log_dir: str | Path | None, enabled: bool = True) -> None:
        self._writer: Any = None
        self._log_dir = Path(log_dir) if log_dir is not None else None
        if not enabled or log_dir is None:
            return
        try:  # lazily: tensorboard is an optional extra, and importing it is slow
            from torch.utils.tensorboard import SummaryWriter
        except Exception as e:  # tensorboard missing or broken: training goes on without it
            get_logger().info(f"=> TensorBoard disabled ({type(e).__name__}: {e})")
            return
        if threading.excepthook is not _quiet_tensorboard_disk_full:
            global _previous_excepthook
            _previous_excepthook = threading.excepthook
            threading.excepthook = _quiet_tensorboard_disk_full
        with self._disk_full():
            self._writer = SummaryWriter(log_dir=str(log_dir))

    @contextlib.contextmanager
    def _disk_full(self) -> Iterator[None]:
        try:
            yield
        except OSError as e:
            if not is_disk_full(e):
                raise
            self._abandon()
            raise disk_full_error(
                self._log_dir or "the TensorBoard folder", e, kept="the TensorBoard events written before are kept",
                fix="free space on that disk, set LOG_DIR to a folder on another disk or HRPOSE.TENSORBOARD False, "
                "then run the same command again (AUTO_RESUME continues from the last checkpoint.pth)",
            ) from e  # fmt: skip

    def _abandon(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            with self._disk_full():
                self._writer.add_scalar(tag, float(value), step)

    def scalars(self, tag: str, values: Mapping[str, float], step: int) -> None:
        if self._writer is not None:
            with self._disk_full():
                self._writer.add_scalars(tag, {k: float(v) for k, v in values.items()}, step)

    def images(self, tag: str, images_nhwc: np.ndarray, step: int) -> None:
        if self._writer is not None and len(images_nhwc):
            with self._disk_full():
                self._writer.add_images(tag, images_nhwc, step, dataformats="NHWC")

    def close(self, *, quiet: bool = False) -> None:
        """Flush and close the event file; ``quiet``: (while another error is on its way) raise nothing."""
        if quiet:
            self._abandon()
        elif self._writer is not None:
            with self._disk_full():
                self._writer.close()
            self._writer = None
