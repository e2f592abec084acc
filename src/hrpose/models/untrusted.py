"""Untrusted checkpoint files: read them without running their code and within limits, refuse bad tensors.

Pickles are only ever read with `torch.load(..., weights_only=True)`: a file that needs arbitrary code
to unpickle is refused with a `CheckpointError` (which never advises loading it unsafely).

Limits, checked before anything is decompressed or allocated: a torch zip checkpoint's members may not
declare more than `max_checkpoint_bytes()` (4 GiB; env HRPOSE_MAX_CHECKPOINT_BYTES) in all, nor expand
to more than 10x the file's size (zip bombs); a safetensors header must be at most 16 MiB of JSON and
its tensors must lie inside the file. After reading, every tensor must be a real floating-point tensor
with only finite values (integer tensors only for BatchNorm's `num_batches_tracked`): a checkpoint with
a NaN, an inf, or an int/bool/complex weight is refused naming the key.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from hrpose.errors import UserError

logger = logging.getLogger(__name__)

_MAX_LISTED = 25
DEFAULT_MAX_CHECKPOINT_BYTES = 4 * 2**30
# a zip member set may expand to this many times the file's size (torch stores members uncompressed) ...
MAX_EXPANSION_RATIO = 10
# ... or to this much, whatever the ratio (small files whose pickle compresses well)
_EXPANSION_FLOOR = 64 * 2**20
MAX_SAFETENSORS_HEADER = 16 * 2**20
# integer tensors a pose model legitimately holds (BatchNorm's step counter)
INTEGER_KEY_SUFFIXES = ("num_batches_tracked",)


class CheckpointError(UserError, RuntimeError):
    """A weights file that cannot be read safely, or does not fit the model."""




def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    # safetensors: 8-byte little-endian header length, then a JSON object.
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n <= path.stat().st_size - 8


def max_checkpoint_bytes() -> int:
    """The most a checkpoint may declare in all: $HRPOSE_MAX_CHECKPOINT_BYTES, else 4 GiB."""
    raw = os.environ.get("HRPOSE_MAX_CHECKPOINT_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_CHECKPOINT_BYTES
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # nan, or inf / 1e400 (no integer has that size)
        value = 0
    if value < 1:
        raise CheckpointError(f"HRPOSE_MAX_CHECKPOINT_BYTES={raw!r}: expected a positive number of bytes")
    return value


def check_zip_limits(path: Path) -> None:
    """Refuse a zip checkpoint whose central directory declares more than the limits (nothing is inflated)."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path} is a damaged zip (PyTorch checkpoint) file: {e}") from e
    file_size = path.stat().st_size
    declared = sum(max(i.file_size, 0) for i in infos)
    cap = max_checkpoint_bytes()
    if declared > cap:
        biggest = max(infos, key=lambda i: i.file_size)
        raise CheckpointError(
            f"{path} declares {declared / 2**30:.1f} GiB of data (largest member {biggest.filename!r}: "
            f"{biggest.file_size / 2**30:.1f} GiB), over the limit of {cap / 2**30:.1f} GiB for a checkpoint; "
            "not loaded (set HRPOSE_MAX_CHECKPOINT_BYTES to raise the limit for a file you trust)"
        )
    if declared > max(MAX_EXPANSION_RATIO * file_size, _EXPANSION_FLOOR):
        raise CheckpointError(
            f"{path} is a {file_size / 2**20:.1f} MiB file whose members would expand to "
            f"{declared / 2**20:.0f} MiB (more than {MAX_EXPANSION_RATIO}x; PyTorch stores weights "
            "uncompressed): refused as a likely zip bomb; not loaded"
        )


def _check_safetensors_header(path: Path) -> None:
    """The header is bounded JSON and every tensor's declared bytes lie inside the file."""
    file_size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is too short for a safetensors file ({file_size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_SAFETENSORS_HEADER or n > file_size - 8:
            raise CheckpointError(
                f"{path}: the safetensors header declares {n} bytes, but the file has {file_size - 8} after the "
                f"length field (and headers are limited to {MAX_SAFETENSORS_HEADER // 2**20} MiB); not loaded"
            )
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object")
    data_size = file_size - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1] <= data_size
        ):
            raise CheckpointError(
                f"{path}: tensor {key!r} declares data_offsets {offsets!r} outside the file's "
                f"{data_size} data bytes; not loaded"
            )


def check_tensors(sd: Mapping[str, torch.Tensor], source: str) -> None:
    """Every tensor real floating point and finite (integers only for `INTEGER_KEY_SUFFIXES`), else a
    CheckpointError naming the first bad key."""
    for k, v in sd.items():
        if v.is_complex() or v.dtype == torch.bool or v.is_quantized:
            raise CheckpointError(
                f"{source}: tensor {k!r} has dtype {v.dtype}; pose-model weights are floating point. "
                "The file is damaged or not a weights file for this model"
            )
        if not v.is_floating_point():
            if k.endswith(INTEGER_KEY_SUFFIXES):
                continue
            raise CheckpointError(
                f"{source}: tensor {k!r} has integer dtype {v.dtype}; pose-model weights are floating point "
                "(only BatchNorm's num_batches_tracked is an integer). The file is damaged or not a weights file"
            )
        if v.numel() and not bool(torch.isfinite(v).all()):
            nan = int(torch.isnan(v).sum())
            inf = int(torch.isinf(v).sum())
            raise CheckpointError(
                f"{source}: tensor {k!r} holds non-finite values ({nan} NaN, {inf} inf of {v.numel()}): the "
                "weights are broken (e.g. a training run that diverged); use an earlier checkpoint"
            )


def load_refusal_reason(err: Exception) -> str:
    """The one line of a failed ``torch.load(weights_only=True)`` message that says what was refused (the offending
    global or opcode), or "" — never torch's advice to retry with weights_only=False."""
    reason = next((ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
    return re.sub(r"\x1b\[[0-9;]*m", "", reason).split(". Please")[0].removeprefix("WeightsUnpickler error: ")


def _unsafe_message(path: Path, err: Exception) -> str:
    reason = load_refusal_reason(err)
    return (
        f"{path} contains pickled Python objects or code, not only tensors, so for safety hrpose does not load it "
        f"(safe loading with torch.load(weights_only=True) refused it{': ' + reason if reason else ''}). "
        "Loading it any other way could run that code. Get the weights as a .safetensors file, or a plain "
        "state_dict .pth, from a source you trust (e.g. the model's official release)."
    )


def _read(path: Path) -> object:
    if _is_safetensors(path):
        _check_safetensors_header(path)
        return _read_safetensors(path)
    if zipfile.is_zipfile(path):
        check_zip_limits(path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch raises UnpicklingError both for forbidden globals and for bytes that are no pickle at all (an
        # unknown opcode: "Unsupported operand", e.g. a text file); only the first is code we refuse to run.
        if "Unsupported operand" in str(e):
            raise CheckpointError(_not_a_checkpoint(path, e)) from e
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(_unsafe_message(path, e)) from e
        raise CheckpointError(_not_a_checkpoint(path, e)) from e
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make the unpickler fail in arbitrary ways
        raise CheckpointError(_not_a_checkpoint(path, e)) from e


def _numpy_safe_globals() -> list[Any]:
    """NumPy arrays and scalars, which MMPose 1.x checkpoints hold in their `meta` (dataset sigmas, colours).

    Rebuilding them calls no code of the file's choosing: an array is a dtype, a shape and bytes (object
    arrays' items still go through the restricted unpickler), so the weights_only guarantee stands.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    rec, scalar = core.multiarray._reconstruct, core.multiarray.scalar
    kinds = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1", "U", "S")
    out: list[Any] = [rec, scalar, np.ndarray, np.dtype, *{type(np.dtype(k)) for k in kinds}]
    # files pickled under NumPy 1.x name numpy.core.*; NumPy 2 moved it to numpy._core
    out += [(rec, "numpy.core.multiarray._reconstruct"), (scalar, "numpy.core.multiarray.scalar")]
    return out


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            names = list(f.keys())
            meta = f.metadata() or {}
            # safetensors stores tensors sorted; save_weights records the model's key order.
            order = json.loads(meta["keys"]) if "keys" in meta else names
            if sorted(order) != sorted(names):
                order = names
            return {k: f.get_tensor(k) for k in order}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} looks like a safetensors file but cannot be read: {e}") from e


def _not_a_checkpoint(path: Path, err: Exception) -> str:
    return (
        f"{path} is not a PyTorch checkpoint (.pth/.pt) or safetensors file ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else 'unreadable'})"
    )

