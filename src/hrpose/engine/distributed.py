"""Process-group setup for ``torchrun`` (DDP), device choice, and small collective helpers.

Under ``torchrun`` (env ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) each process gets one device
(``cuda:LOCAL_RANK`` with NCCL, or the CPU with Gloo). Without it there is one process on
``cuda`` when available, else the CPU (with a printed notice). Every helper here is a no-op when no
process group is initialised, so the single-process path runs the same code.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
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
    "report_failure",
    "failure_printed",
    "wait_for_failure_printed",
    "watch_for_failures",
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
        watch_for_failures(rank)  # before joining: a rank that fails first must not leave this one waiting
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


# ----------------------------------------------------------------------------------------------------
# One rank's failure stops every rank promptly (torchrun)
#
# A rank that fails before a collective (a config or dataset error on one node, an exception before a
# barrier) would leave the others waiting in init_process_group or the collective for gloo's 30-minute
# timeout: on one node torchrun stops them when the failing process exits, across nodes nothing does.
# So the failing rank writes a flag into torchrun's own key-value store (the agent's TCPStore at
# MASTER_ADDR:MASTER_PORT, reachable before and after the process group exists), and every rank watches
# that flag from a daemon thread, which ends its process within a second of another rank's failure.

FAILURE_POLL_S = 0.25
REPORT_WAIT_S = 15.0  # how long a stopping rank waits for the failing rank to print its error line
_watching = False


def _failure_key() -> str | None:
    """The flag's key for this torchrun run and restart, or None outside torchrun (no agent store)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return None
    run = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    return f"hrpose/failed/{run}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"


def _store(timeout_s: float) -> Any:
    return dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
        timeout=timedelta(seconds=timeout_s), wait_for_workers=False,
    )  # fmt: skip


def report_failure(rank: int, message: str) -> tuple[int, str] | None:
    """Tell every rank that ``rank`` failed with ``message``. Returns the failure that was reported first,
    ``(rank, message)`` (this one unless another rank's came before), or None outside torchrun or when the
    store cannot be reached."""
    key = _failure_key()
    if key is None:
        return None
    try:
        stored = _store(5.0).compare_set(key, "", f"{rank}\n{message}")
    except Exception:  # the store is gone (torchrun stopping): nothing to tell
        return None
    first, _, text = bytes(stored).decode("utf-8", "replace").partition("\n")
    return (int(first), text) if first.isdigit() else None


def failure_printed() -> None:
    """The failing rank has printed its error line: the ranks it stops may exit now."""
    key = _failure_key()
    if key is not None:
        try:
            _store(5.0).set(key + "/printed", "1")
        except Exception:
            pass


def wait_for_failure_printed(timeout_s: float = 0.0) -> None:
    """Wait (``REPORT_WAIT_S`` at most) until the rank that failed first has printed its error line: torchrun
    stops every rank as soon as one exits."""
    key = _failure_key()
    if key is None:
        return
    try:
        store = _store(5.0)
        deadline = time.monotonic() + (timeout_s or REPORT_WAIT_S)
        while not store.check([key + "/printed"]) and time.monotonic() < deadline:
            time.sleep(FAILURE_POLL_S)
    except Exception:
        return


def _watch(rank: int, key: str) -> None:
    try:
        store = _store(60.0)
        while True:
            if store.check([key]):
                first, _, text = bytes(store.get(key)).decode("utf-8", "replace").partition("\n")
                if first.isdigit() and int(first) != rank:
                    # the failing rank prints its error line, then marks it printed: wait for that (a while at
                    # most), since torchrun stops the failing rank too once this one exits
                    deadline = time.monotonic() + REPORT_WAIT_S
                    while not store.check([key + "/printed"]) and time.monotonic() < deadline:
                        time.sleep(FAILURE_POLL_S)
                    print(f"hrpose: rank {rank} stopped because rank {first} failed (its error line says why)",
                          file=sys.stderr, flush=True)  # fmt: skip
                    logging.shutdown()
                    os._exit(STOPPED_BY_PEER_EXIT)
                return  # this rank's own failure: it reports it and exits
            time.sleep(FAILURE_POLL_S)
    except Exception:  # the store went away: torchrun is ending the run, which stops this process too
        return


STOPPED_BY_PEER_EXIT = 3


def watch_for_failures(rank: int) -> None:
    """Start (once per process) the thread that ends this process when another rank reports a failure."""
    global _watching
    key = _failure_key()
    if key is None or _watching:
        return
    _watching = True
    threading.Thread(target=_watch, args=(rank, key), name="hrpose-rank-failure-watch", daemon=True).start()
