"""Training checkpoints: atomic saving, ``weights_only`` loading, RNG state capture/restore.

``checkpoint.pth`` keeps the official field names (``epoch``, ``model``, ``state_dict``,
``best_state_dict``, ``perf``, ``optimizer``) and adds what an exact resume needs (``scheduler``,
``scaler``, ``rng``, ``best_perf``, ``config``). Everything stored is a tensor, a Python primitive or a
plain container of those, so :func:`load_checkpoint` can always use ``torch.load(weights_only=True)``:
NumPy arrays are converted to tensors by :func:`to_safe` and RNG states are stored as tensors.
"""

from __future__ import annotations

import collections
import errno
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrpose.errors import UserError

__all__ = [
    "CheckpointSaveError",
    "save_checkpoint_atomic",
    "load_checkpoint",
    "to_safe",
    "capture_rng_state",
    "restore_rng_state",
]


class CheckpointSaveError(UserError, OSError):
    """Saving a checkpoint failed; the previous file at the destination (if any) is unchanged."""


def to_safe(obj: Any) -> Any:
    """``obj`` with NumPy arrays/scalars turned into tensors/Python numbers, recursively.

    The result only holds what ``torch.load(weights_only=True)`` accepts (tensors, primitives,
    dicts, lists, tuples). Any other object raises ``TypeError`` naming its path in ``obj``.
    """

    def convert(v: Any, where: str) -> Any:
        if isinstance(v, torch.Tensor) or v is None or isinstance(v, (bool, int, float, str, bytes)):
            return v
        if isinstance(v, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, Mapping):
            out = {k: convert(x, f"{where}[{k!r}]") for k, x in v.items()}
            # OrderedDict and Counter (MultiStepLR milestones) are on torch's weights_only allow-list.
            if isinstance(v, collections.Counter):
                return collections.Counter(out)
            if isinstance(v, collections.OrderedDict):
                return collections.OrderedDict(out)
            return out
        if isinstance(v, (list, tuple)):
            items = [convert(x, f"{where}[{i}]") for i, x in enumerate(v)]
            return items if isinstance(v, list) else tuple(items)
        if isinstance(v, (torch.dtype, torch.device, torch.Size)):
            return v
        raise TypeError(
            f"checkpoint entry {where} has type {type(v).__name__}, which torch.load(weights_only=True) "
            "cannot read; store tensors, numbers, strings or containers of them"
        )

    return convert(obj, "checkpoint")


def _fsync_dir(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj)`` to ``path`` so that ``path`` is always either the old or the new file.

    Writes a temporary file in the same directory, flushes and fsyncs it, ``os.replace``s it over
    ``path`` and fsyncs the directory. Any failure (disk full, permissions, an unpicklable object)
    removes the temporary file, leaves a previous ``path`` intact and raises
    :class:`CheckpointSaveError` saying so. Returns ``path``.
    """
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    tmp_name: str | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
        tmp_name = None
        _fsync_dir(directory)
    except Exception as e:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
        kept = f"the previous {path.name} was kept unchanged" if path.exists() else f"no previous {path.name} existed"
        code = e.errno if isinstance(e, OSError) and e.errno is not None else errno.EIO
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CheckpointSaveError(code, f"could not save checkpoint {path}: {reason}; {kept}") from e
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by the engine, read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f"could not read checkpoint {path} with torch.load(weights_only=True): {e}. "
            "It may be truncated or written by other code that stores arbitrary Python objects."
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise RuntimeError(
            f"{path} is not a training checkpoint: expected a dict with 'epoch' and 'state_dict', got {keys}"
        )
    return ckpt


# ----------------------------------------------------------------------------------------------------
# RNG state, stored as tensors


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (when present) CUDA RNG states, as tensors and numbers."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python_version": int(py_version),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_name": str(np_name),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py_state = tuple(int(x) for x in state["python"].tolist())
    random.setstate((int(state["python_version"]), py_state, state["python_gauss"]))
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy_keys"].numpy().astype(np.uint32),
            int(state["numpy_pos"]),
            int(state["numpy_has_gauss"]),
            float(state["numpy_gauss"]),
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
