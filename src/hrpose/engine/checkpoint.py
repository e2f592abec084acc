"""Training checkpoints: atomic saving, ``weights_only`` loading, RNG state capture/restore.

``checkpoint.pth`` is laid out as the official ``tools/train.py`` writes it, so that the official code can
resume it: ``epoch`` (finished epochs), ``model`` (``MODEL.NAME``), ``state_dict`` (the weights with the
``module.`` prefix of the official ``DataParallel`` model, see :func:`add_module_prefix`), ``perf`` (the last
validation score), ``optimizer`` and ``best_state_dict`` (bare keys). Beside them it keeps what an exact
resume needs (``scheduler``, ``scaler``, ``rng``, ``best_perf``, ``global_step``, ``config``,
``hrpose_meta``); the official code ignores those. A resume accepts ``state_dict`` with or without the
prefix (:func:`strip_module_prefix`), so older hrpose checkpoints keep resuming.

Everything stored is a tensor, a Python primitive or a plain container of those, so :func:`load_checkpoint`
can always use ``torch.load(weights_only=True)``: NumPy arrays are converted to tensors by :func:`to_safe`
and RNG states are stored as tensors.
"""

from __future__ import annotations

import collections
import errno
import math
import os
import random
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hrpose.diskfull import disk_full_error, is_disk_full
from hrpose.errors import MissingFileError, UserError
from hrpose.models.untrusted import check_zip_limits, load_refusal_reason

__all__ = [
    "MODULE_PREFIX",
    "add_module_prefix",
    "strip_module_prefix",
    "CheckpointSaveError",
    "CheckpointReadError",
    "check_resume_fields",
    "save_checkpoint_atomic",
    "load_checkpoint",
    "to_safe",
    "capture_rng_state",
    "restore_rng_state",
]


class CheckpointSaveError(UserError, OSError):
    """Saving a checkpoint failed; the previous file at the destination (if any) is unchanged. ``str()`` is the
    message alone (no ``[Errno N]`` prefix)."""

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else super().__str__()


class CheckpointReadError(UserError, RuntimeError):
    """A training checkpoint that cannot be read safely or holds fields a resume cannot use."""


MODULE_PREFIX = "module."


def add_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> collections.OrderedDict[str, torch.Tensor]:
    """``state_dict`` with every key prefixed ``module.``, as ``nn.DataParallel(model).state_dict()`` names them
    (the official ``checkpoint.pth`` stores its ``state_dict`` that way). Order is kept; already prefixed keys
    are left alone."""
    return collections.OrderedDict(
        (k if k.startswith(MODULE_PREFIX) else MODULE_PREFIX + k, v) for k, v in state_dict.items()
    )


def strip_module_prefix(state_dict: Mapping[str, Any]) -> collections.OrderedDict[str, Any]:
    """``state_dict`` without the ``module.`` prefix when every key has it (DataParallel/DDP checkpoints);
    otherwise unchanged. Bare-key (older hrpose) and prefixed (official, current hrpose) both load."""
    items = list(state_dict.items())
    if items and all(isinstance(k, str) and k.startswith(MODULE_PREFIX) for k, _ in items):
        return collections.OrderedDict((k[len(MODULE_PREFIX) :], v) for k, v in items)
    return collections.OrderedDict(items)


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


class _WriteRecorder:
    """A binary file for ``torch.save`` that remembers the ``OSError`` a write or flush raised."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return int(self._f.write(data))
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        try:
            self._f.flush()
        except OSError as e:
            self.error = e
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


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
            # torch.save reports a failed write as its own RuntimeError ("unexpected pos ..."): the file
            # object keeps the OSError (a full disk) so that the message can say what really happened
            recorder = _WriteRecorder(f)
            try:
                torch.save(obj, recorder)  # type: ignore[arg-type]
            except Exception as e:
                if recorder.error is not None and recorder.error is not e:
                    raise recorder.error from e
                raise
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
        if is_disk_full(e):
            full = disk_full_error(
                path, e, kept=kept, fix="free space on that disk or set OUTPUT_DIR to a folder on another disk, then "
                "run the same command again (AUTO_RESUME continues from the last checkpoint.pth)"
            )
            raise CheckpointSaveError(full.errno, str(full)) from e
        code = e.errno if isinstance(e, OSError) and e.errno is not None else errno.EIO
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise CheckpointSaveError(code, f"could not save checkpoint {path}: {reason}; {kept}") from e
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by the engine, read with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointReadError(f"checkpoint {path} is not a regular file; move it away to start over")
    if zipfile.is_zipfile(path):
        check_zip_limits(path)  # declared sizes against HRPOSE_MAX_CHECKPOINT_BYTES and a zip-bomb ratio
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        text = str(e).strip()  # torch's own text may advise weights_only=False: never passed on
        reason = load_refusal_reason(e) or (
            type(e).__name__ if not text or "weights_only" in text else text.splitlines()[0][:300]
        )
        raise CheckpointReadError(
            f"could not read checkpoint {path} with torch.load(weights_only=True), the safe loading ({reason}): it "
            "is damaged, truncated or holds Python objects besides tensors; move it away (or set AUTO_RESUME "
            "False) to start the training over"
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "epoch" not in ckpt:
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointReadError(
            f"{path} is not a training checkpoint: expected a dict with 'epoch' and 'state_dict', got {keys}; "
            "to start the training over, move it away (or set AUTO_RESUME False)"
        )
    return ckpt


def _is_state_dict(v: Any) -> bool:
    return isinstance(v, Mapping) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())


def check_resume_fields(ckpt: Mapping[str, Any], path: str | os.PathLike[str], end_epoch: int) -> None:
    """Refuse a ``checkpoint.pth`` whose fields a resume would misuse, naming the file and the field.

    ``epoch``: an int from 0 to ``end_epoch`` (TRAIN.END_EPOCH); ``best_perf``/``perf``: finite numbers;
    ``state_dict``/``best_state_dict``: mappings of names to tensors; ``optimizer``/``scheduler``/``scaler``:
    mappings (the optimizer's with ``state`` and ``param_groups``); ``global_step``: an int >= 0;
    ``rng``: a mapping or a list of them. Raises :class:`CheckpointReadError`.
    """
    fix = f"; move {path} away (or set AUTO_RESUME False) to start this training over"

    def bad(field: str, value: Any, expected: str) -> CheckpointReadError:
        shown = repr(value) if isinstance(value, (bool, int, float, str, type(None))) else type(value).__name__
        return CheckpointReadError(f"checkpoint {path}: field '{field}' is {shown[:80]}, expected {expected}{fix}")

    epoch = ckpt.get("epoch")
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 and not epoch.is_floating_point():
        epoch = int(epoch.item())
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch <= end_epoch:
        raise bad("epoch", epoch, f"the number of finished epochs, an integer from 0 to TRAIN.END_EPOCH ({end_epoch})")
    for name in ("best_perf", "perf"):
        if name in ckpt:
            v = ckpt[name]
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise bad(name, v, "a finite number (the validation score)")
    if not _is_state_dict(ckpt.get("state_dict")) or not ckpt["state_dict"]:
        raise bad("state_dict", ckpt.get("state_dict"), "the model weights: a mapping of parameter names to tensors")
    if ckpt.get("best_state_dict") is not None and not _is_state_dict(ckpt["best_state_dict"]):
        raise bad("best_state_dict", ckpt["best_state_dict"], "a mapping of parameter names to tensors, or None")
    opt = ckpt.get("optimizer")
    if not isinstance(opt, Mapping) or not isinstance(opt.get("param_groups"), list) or "state" not in opt:
        raise bad("optimizer", opt, "an optimizer state (a mapping with 'state' and 'param_groups')")
    for name in ("scheduler", "scaler"):
        if ckpt.get(name) is not None and not isinstance(ckpt[name], Mapping):
            raise bad(name, ckpt[name], f"a {name} state (a mapping), or None")
    step = ckpt.get("global_step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise bad("global_step", step, "an integer >= 0")
    rng = ckpt.get("rng")
    if rng is not None and not isinstance(rng, Mapping):
        if not isinstance(rng, (list, tuple)) or not rng or not all(isinstance(r, Mapping) for r in rng):
            raise bad("rng", rng, "the random generator states (a mapping, or one per rank)")


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
