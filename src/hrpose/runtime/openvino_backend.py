"""The OpenVINO engine: an exported ONNX graph compiled by OpenVINO's CPU plugin (the optional `openvino` extra).

`keep_sigaltstack` wraps every OpenVINO call: without it a process that made and dropped two compiled models
could die at its next signal (see there).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from hrpose.errors import BackendUnavailableError


class _StackT(ctypes.Structure):  # Linux `stack_t` (sigaltstack)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def keep_sigaltstack() -> Iterator[None]:
    """Put back this thread's alternate signal stack (`sigaltstack`) after the block, on Linux.

    OpenVINO's CPU plugin (2026.4) installs its own alternate signal stack on the calling thread when it compiles
    a model, and puts back the one it saw when that model is destroyed. Two compiled models destroyed in the
    order they were made (first in, first out: what garbage collection does to two estimators) leave the thread
    on the first model's stack, already unmapped. The next signal with a handler installed with SA_ONSTACK
    (every Python-level handler, e.g. the SIGCHLD handler of torch's DataLoader) cannot be delivered and the
    kernel kills the process with SIGSEGV; faulthandler prints nothing, its own handler needing that stack too.
    Putting our stack back right after OpenVINO's calls means every model saves, and later restores, a stack
    that stays valid."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = _libc()
    saved = _StackT()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _StackT()
        libc.sigaltstack(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_flags & ~_SS_ONSTACK, now.ss_size) != (saved.ss_sp, saved.ss_flags & ~_SS_ONSTACK,
                                                                     saved.ss_size):  # fmt: skip
            saved.ss_flags &= ~_SS_ONSTACK
            libc.sigaltstack(ctypes.byref(saved), None)


_SS_ONSTACK = 1


def openvino_config(threads: int | None = None) -> dict[str, object]:
    """How hrpose compiles for OpenVINO's CPU plugin: fp32 precision hint (OpenVINO would otherwise run bf16 on
    AMX CPUs), latency mode, and `threads` inference threads where given."""
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoBackend:
    """An exported ONNX model in OpenVINO's CPU runtime (the optional `openvino` extra), fp32 precision
    hint (OpenVINO would otherwise run bf16 on AMX CPUs), latency mode, `threads` inference threads.
    OpenVINO's calls run under `keep_sigaltstack` (see there: without it, a process that made and dropped two
    of these could die at its next signal)."""

    def __init__(self, onnx_path: str | os.PathLike[str], *, threads: int | None = None, name: str | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(
                "backend openvino: OpenVINO is not installed (pip install 'hrpose[openvino]'); "
                "use --backend auto or onnxruntime"
            ) from e
        config = openvino_config(threads)
        with keep_sigaltstack():
            core = ov.Core()
            model = core.read_model(str(onnx_path))
            self.compiled = core.compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()
        self.name = name or f"openvino-{Path(onnx_path).stem}"
        self.device = torch.device("cpu")

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        with keep_sigaltstack():  # a new batch shape compiles kernels
            self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)
