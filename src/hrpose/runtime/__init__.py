"""The runtime: how a pose model runs, one module per engine, behind one registry.

- `registry`: the vocabulary of backend names (`REGISTRY`, a plain dict) and `make_backend`, the one way to build
  a backend (`hrpose test`, `PoseEstimator`, `predict`, `serve` and `bench` all use it);
- `policy`: `auto_backend`, which entry `--backend auto` runs on this machine;
- `base`: the `Backend` protocol (normalised crops in, heatmaps out) and device resolution;
- engines: `torch_backend` (PyTorch), `onnxruntime_backend`, `openvino_backend`; `quantize` (static int8);
- `capabilities` (what this CPU/GPU can run fast), `fusion` (oneDNN post-op fusion), `onnx_cache` (exported
  graphs, keyed by the weights).
"""

from __future__ import annotations

from hrpose.errors import BackendUnavailableError, DeviceError

from .base import Backend, BackendLike, resolve_device
from .policy import PRECISIONS, auto_backend
from .registry import REGISTRY, BuildRequest, Entry, backend_names, is_backend_name, make_backend

__all__ = [
    "PRECISIONS",
    "REGISTRY",
    "Backend",
    "BackendLike",
    "BackendUnavailableError",
    "BuildRequest",
    "DeviceError",
    "Entry",
    "auto_backend",
    "backend_names",
    "is_backend_name",
    "make_backend",
    "resolve_device",
]
