"""The ONNX Runtime engine: an exported ONNX graph (see `hrpose.export`), fp32 or int8, in ONNX Runtime.

onnxruntime is an optional dependency (the `onnx` extra): imported when a session is built, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .base import Backend


def ort_session_options(threads: int | None = None, spinning: bool = True):  # -> ort.SessionOptions
    """All graph optimisations; `threads` intra-op threads (None: ONNX Runtime's default, one per core).

    Spinning (threads busy-wait between ops) is on by default: faster per crop (docs/benchmarks.md),
    at the price of burning CPU between calls; turn it off when sharing the machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


class OnnxRuntimeBackend:
    """An exported ONNX model in ONNX Runtime (CUDA provider first when available)."""

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        spinning: bool = True,
        name: str | None = None,
    ):
        import onnxruntime as ort  # optional (the onnx extra): imported when an ONNX backend is built

        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=ort_session_options(threads, spinning), providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.name = name or f"onnxruntime-{Path(onnx_path).stem}"
        self.device = torch.device("cpu")  # where the crops are given (numpy), whatever the provider

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


class FixedBatch:
    """Feeds a backend whose graph was exported with a fixed batch size `size` (pads the last chunk)."""

    def __init__(self, backend: Backend, size: int) -> None:
        self.backend, self.size = backend, max(1, int(size))
        self.name, self.device = backend.name, backend.device

    def __call__(self, batch: Any) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        outs = []
        for s in range(0, len(x), self.size):
            chunk = x[s : s + self.size]
            n = len(chunk)
            if n < self.size:
                chunk = np.concatenate([chunk, np.zeros((self.size - n, *chunk.shape[1:]), np.float32)])
            outs.append(np.asarray(self.backend(chunk))[:n])
        return np.concatenate(outs, axis=0)


def onnx_session_backend(path: str | os.PathLike[str], *, threads: int | None = None, spinning: bool = True,
                         name: str = "onnxruntime") -> Backend:  # fmt: skip
    """An `.onnx` file in ONNX Runtime; a graph exported with a fixed batch size is fed through `FixedBatch`."""
    backend = OnnxRuntimeBackend(path, threads=threads, spinning=spinning, name=name)
    batch_dim = backend.session.get_inputs()[0].shape[0]
    return FixedBatch(backend, batch_dim) if isinstance(batch_dim, int) else backend
