"""Process-group setup for ``torchrun`` (DDP), device choice, and small collective helpers.

Under ``torchrun`` (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) each process gets one device
(``cuda:LOCAL_RANK`` with NCCL, or the CPU with Gloo). Without it there is one process on
``cuda`` when available, else the CPU (with a printed notice). Every helper here is a no-op when no
process group is initialised, so the single-process path runs the same code.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "setup_distributed",
    "cleanup_distributed",
    "is_dist",
    "barrier",
    "all_gather_objects",
    "broadcast_object",
    "all_reduce_mean",
    "wrap_ddp",
    "unwrap_model",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs. ``initialized_here``: :func:`setup_distributed` created the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the ``torchrun`` process group if the environment asks for one; pick this process's device.

    ``device`` overrides the automatic choice (``'cpu'`` forces Gloo under ``torchrun``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        rank = int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        use_cuda = torch.cuda.is_available() if device is None else torch.device(device).type == "cuda"
        if use_cuda:
            dev = torch.device("cuda", local_rank)
            torch.cuda.set_device(dev)
        else:
            dev = torch.device("cpu")
        created = False
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
            created = True
        return DistInfo(rank, world_size, local_rank, dev, created)
    if device is not None:
        dev = torch.device(device)
    elif torch.cuda.is_available():
        dev = torch.device("cuda")
    else:
        dev = torch.device("cpu")
        print("hrpose: no CUDA device found, running on the CPU (slow for real training)", flush=True)
    return DistInfo(0, 1, 0, dev, False)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if is_dist():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_dist():
        return obj
    box = [obj if dist.get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a detached copy; the input is unchanged)."""
    out = value.detach().clone()
    if is_dist():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def wrap_ddp(model: nn.Module, info: DistInfo, *, sync_bn: bool = False) -> nn.Module:
    """``model`` (already on ``info.device``) in DDP when distributed, optionally with SyncBatchNorm (CUDA)."""
    if not info.is_distributed:
        return model
    if sync_bn and info.device.type != "cuda":
        # torch's SyncBatchNorm only runs on GPUs; on the CPU each process keeps its own BN statistics.
        logging.getLogger("hrpose").warning("HRPOSE.SYNC_BN ignored: SyncBatchNorm needs CUDA devices")
    elif sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
