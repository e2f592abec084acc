"""The `Backend` protocol every engine module fits, and the device helpers they share.

A backend takes normalised crops `(N, 3, H, W)` float32 (numpy or a tensor) and gives heatmaps `(N, K, h, w)`
float32 numpy; `hrpose.pipeline` runs any of them with the flip test, decoding and rescoring.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hrpose.errors import DeviceError


@runtime_checkable
class Backend(Protocol):
    """Runs the pose network: normalised crops `(N, 3, H, W)` float32 (numpy or a tensor) -> heatmaps
    `(N, K, h, w)` float32 numpy (multi-stage models: the last stage's maps). `name` says which backend it is,
    `device` where the crops are run (tensor crops may already be there)."""

    name: str
    device: torch.device

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray: ...


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def as_tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch.float()
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


#: what the pipeline runs: a `Backend`, or any plain callable crops -> heatmaps (a test's fake network)
BackendLike = Backend | Callable[[Any], np.ndarray]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else as torch.device, checked (DeviceError)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"device {device!r} is not a device name; use cpu, cuda, cuda:<index>, mps or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available (use --device cpu)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError(f"device {device!r} requested but MPS is not available (use --device cpu)")
    return dev
