"""SIGTERM handled like Ctrl-C: what docker, systemd, Kubernetes and `timeout` send to stop a program.

``with sigterm_as_interrupt() as stop: ...`` turns the first SIGTERM into `Terminated` (a KeyboardInterrupt),
so the code that already keeps its results on Ctrl-C (the images done, the frames of a video) does the same on
SIGTERM; `stop.signum` tells the caller which signal it was (exit status 128 + 15 = 143, as a shell reports).
Further SIGTERMs while the results are being saved are ignored (SIGKILL still ends the process at once).
Only the main thread can install a handler; elsewhere the context does nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

__all__ = ["StopSignal", "Terminated", "exit_status", "sigterm_as_interrupt"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


@dataclass
class StopSignal:
    signum: int | None = None


def exit_status(stop: StopSignal) -> int:
    """143 after SIGTERM, 130 after Ctrl-C (SIGINT)."""
    return 128 + int(stop.signum) if stop.signum else 130


@contextmanager
def sigterm_as_interrupt() -> Iterator[StopSignal]:
    stop = StopSignal()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.signum is not None:
            return  # already stopping: let the results be written
        stop.signum = signum
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
