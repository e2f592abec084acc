"""Checkpoint I/O: read any common form of pose-model weights safely, load them with a clear report.

Forms read by `load_state_dict_file`:
  * a bare `state_dict` (the official `final_state.pth`, `model_best.pth` and released models);
  * the same with a `module.` prefix (saved from DataParallel / DistributedDataParallel);
  * a training checkpoint dict (official `checkpoint.pth`: `epoch`, `model`, `state_dict`,
    `best_state_dict`, `perf`, `optimizer`); `state_dict` is taken unless `key=` names another;
  * safetensors files (by the `.safetensors` suffix or by their header).

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
import tempfile
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hrpose.errors import UserError

logger = logging.getLogger(__name__)

# Keys tried, in order, when a checkpoint is a dict wrapping the weights.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# ImageNet classification heads, never part of a pose model.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "last_linear.")
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


@dataclass
class LoadReport:
    """What `load_weights` did. `shape_mismatch` items are (key, checkpoint shape, model shape)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, list[int], list[int]]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def describe(self, limit: int = _MAX_LISTED) -> str:
        def listing(items: list[str]) -> str:
            more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
            return ", ".join(items[:limit]) + more

        lines = []
        if self.missing:
            lines.append(f"  missing from the checkpoint ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            lines.append(f"  not in the model ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.shape_mismatch:
            shapes = [f"{k} {ck} in checkpoint vs {mk} in model" for k, ck, mk in self.shape_mismatch]
            lines.append(f"  wrong shape ({len(shapes)}): {listing(shapes)}")
        return "\n".join(lines)


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
    except ValueError:
        value = 0
    if value < 1:
        raise CheckpointError(f"HRPOSE_MAX_CHECKPOINT_BYTES={raw!r}: expected a positive number of bytes")
    return value


def _check_zip_limits(path: Path) -> None:
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


def _unsafe_message(path: Path, err: Exception) -> str:
    # torch's message is long; keep the line that names the offending global, if any.
    reason = next((ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
    reason = re.sub(r"\x1b\[[0-9;]*m", "", reason).split(". Please")[0].removeprefix("WeightsUnpickler error: ")
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
        _check_zip_limits(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch raises UnpicklingError both for forbidden globals and for bytes that are no pickle at all.
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "GLOBAL" in str(e):
            raise CheckpointError(_unsafe_message(path, e)) from e
        raise CheckpointError(_not_a_checkpoint(path, e)) from e
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - arbitrary bytes make the unpickler fail in arbitrary ways
        raise CheckpointError(_not_a_checkpoint(path, e)) from e


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


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _unwrap(obj: object, path: Path, key: str | None) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict (a mapping of tensors)")
    if key is not None:
        if key not in obj:
            raise CheckpointError(f"{path} has no key {key!r}; its top-level keys are {sorted(map(str, obj))}")
        obj = obj[key]
    elif not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for k in WRAPPER_KEYS:
            if isinstance(obj.get(k), Mapping):
                obj = obj[k]
                break
        else:
            raise CheckpointError(
                f"{path} is a dict but neither a state_dict nor a checkpoint with one of {list(WRAPPER_KEYS)}; "
                f"its keys are {sorted(map(str, obj))[:20]} (choose one with key=...)"
            )
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}[{key!r}] is a {type(obj).__name__}, not a state_dict")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the state_dict has entries that are not tensors: {bad[:10]}")
    return _strip_module_prefix(obj)


def load_state_dict_file(path: str | os.PathLike[str], key: str | None = None) -> dict[str, torch.Tensor]:
    """The weights in `path` as a plain `{name: tensor}` on the CPU, with any `module.` prefix removed.

    `key` picks the entry of a checkpoint dict (default: `state_dict`, then other usual names).
    Raises FileNotFoundError, or CheckpointError for unsafe or unreadable files.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    sd = _unwrap(_read(p), p, key)
    check_tensors(sd, str(p))
    return sd


def _bare_model(model: nn.Module) -> nn.Module:
    # DataParallel / DistributedDataParallel keep the real model in .module
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def compare_state_dicts(
    model_sd: Mapping[str, torch.Tensor], ckpt_sd: Mapping[str, torch.Tensor]
) -> LoadReport:
    """Which checkpoint keys fit the model. BatchNorm `num_batches_tracked` may be absent (old files)."""
    report = LoadReport()
    for k, v in ckpt_sd.items():
        if k not in model_sd:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(model_sd[k].shape):
            report.shape_mismatch.append((k, list(v.shape), list(model_sd[k].shape)))
        else:
            report.loaded.append(k)
    report.missing = [k for k in model_sd if k not in ckpt_sd and not k.endswith("num_batches_tracked")]
    return report


def load_weights(
    model: nn.Module,
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, torch.Tensor],
    strict: bool = True,
    key: str | None = None,
) -> LoadReport:
    """Load weights into `model` (in place, onto the model's device and dtype).

    strict=True (default): every model key must be present with the right shape and nothing extra,
    otherwise a CheckpointError lists the missing, unexpected and wrongly shaped keys and nothing is
    loaded. strict=False loads every key that fits and reports the rest, e.g. to fine-tune a 17-joint
    model into a 16-joint head.
    """
    if isinstance(path_or_state_dict, Mapping):
        source = "the given state_dict"
        sd = _strip_module_prefix(path_or_state_dict)
    else:
        source = str(path_or_state_dict)
        sd = load_state_dict_file(path_or_state_dict, key=key)
    target = _bare_model(model)
    report = compare_state_dicts(target.state_dict(), sd)
    if strict and not report.complete:
        raise CheckpointError(
            f"weights from {source} do not match the {type(target).__name__} model:\n{report.describe()}\n"
            "Check that the config matches the checkpoint (MODEL.NAME, MODEL.EXTRA, MODEL.NUM_JOINTS); to "
            "fine-tune to a different number of joints, load only the matching keys with "
            "hrpose.models.weights.load_weights(model, path, strict=False)."
        )
    target.load_state_dict({k: sd[k] for k in report.loaded}, strict=False)
    if not report.complete:
        logger.warning("partial load from %s: %d keys loaded\n%s", source, len(report.loaded), report.describe())
    return report


def load_pretrained(model: nn.Module, path: str | os.PathLike[str], layers: Iterable[str] = ("*",)) -> LoadReport:
    """Initialise a pose model from ImageNet backbone weights (official `init_weights(pretrained)`).

    Takes the checkpoint keys whose first component is in `layers` ('*' = all), skips classifier keys
    (`fc.*`, `classifier.*`, ...) and keys the model lacks or shapes it disagrees with (logged). The
    pose head stays as initialised. Raises CheckpointError if nothing at all fits: a wrong file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"pretrained weights MODEL.PRETRAINED={str(path)!r} not found; download the ImageNet weights "
            "there, or train from scratch with MODEL.PRETRAINED '' (or MODEL.INIT_WEIGHTS False)"
        )
    layers = tuple(layers)
    sd = load_state_dict_file(p)
    take_all = "*" in layers
    chosen = {
        k: v
        for k, v in sd.items()
        if not k.startswith(CLASSIFIER_PREFIXES) and (take_all or k.split(".", 1)[0] in layers)
    }
    report = load_weights(model, chosen, strict=False)
    if not report.loaded:
        raise CheckpointError(
            f"no weights in {p} fit {type(model).__name__} (looked at {len(chosen)} keys of layers {list(layers)})"
        )
    logger.info("=> loaded %d pretrained tensors from %s", len(report.loaded), p)
    return report


def save_weights(model_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> Path:
    """Write the official bare state_dict: `.safetensors` by suffix, else a `torch.save` of plain tensors.

    The `.pth` form is an OrderedDict of CPU tensors that the official code loads as is. The write is
    atomic (temporary file, then rename).
    """
    if isinstance(model_or_state_dict, nn.Module):
        sd: Mapping[str, torch.Tensor] = _bare_model(model_or_state_dict).state_dict()
    else:
        sd = _strip_module_prefix(model_or_state_dict)
    plain = OrderedDict((k, v.detach().to("cpu").contiguous().clone()) for k, v in sd.items())
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(dict(plain), tmp, metadata={"format": "pt", "keys": json.dumps(list(plain))})
        else:
            torch.save(plain, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
