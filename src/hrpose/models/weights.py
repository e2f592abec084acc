"""Checkpoint I/O: read any common form of pose-model weights safely, load them with a clear report.

Forms read by `load_state_dict_file`:
  * a bare `state_dict` (the official `final_state.pth`, `model_best.pth` and released models);
  * the same with a `module.` prefix (saved from DataParallel / DistributedDataParallel);
  * a training checkpoint dict (official `checkpoint.pth`: `epoch`, `model`, `state_dict`,
    `best_state_dict`, `perf`, `optimizer`); `state_dict` is taken unless `key=` names another;
  * safetensors files (by the `.safetensors` suffix or by their header).

Pickles are only ever read with `torch.load(..., weights_only=True)`: a file that needs arbitrary code
to unpickle is refused with a `CheckpointError` that says how to convert it if you trust it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import struct
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from hrpose.errors import MissingFileError, UserError

logger = logging.getLogger(__name__)

# Keys tried, in order, when a checkpoint is a dict wrapping the weights.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# ImageNet classification heads, never part of a pose model.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "last_linear.")
_MAX_LISTED = 25


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


def _unsafe_message(path: Path, err: Exception) -> str:
    # torch's message is long; keep the line that names the offending global, if any.
    reason = next((ln.strip() for ln in str(err).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
    reason = re.sub(r"\x1b\[[0-9;]*m", "", reason).split(". Please")[0].removeprefix("WeightsUnpickler error: ")
    out = path.with_name(path.stem + "_weights.pth")
    return (
        f"{path} contains pickled Python objects or code, not only tensors, so for safety hrpose does not load it "
        f"(safe loading with torch.load(weights_only=True) refused it{': ' + reason if reason else ''}). "
        "If you trust the file, convert it once to plain weights:\n"
        f"  python -c \"import torch; c = torch.load('{path}', map_location='cpu', weights_only=False); "
        "c = c.state_dict() if hasattr(c, 'state_dict') else c.get('state_dict', c); "
        f"torch.save(dict(c), '{out}')\"\n"
        "(or write .safetensors with hrpose.models.weights.save_weights)."
    )


def _read(path: Path) -> object:
    if _is_safetensors(path):
        return _read_safetensors(path)
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
        what = "is not a regular file" if p.exists() else "not found"
        raise MissingFileError(f"weights file {p} {what}; check the path (--weights or TEST.MODEL_FILE)")
    return _unwrap(_read(p), p, key)


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
    loaded. strict=False loads every key that fits and reports the rest (warning), e.g. to
    fine-tune a 17-joint model into a 16-joint head.
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
            "To fine-tune to a different number of joints, start from backbone weights instead (MODEL.PRETRAINED "
            "takes every tensor that fits), or in Python load_weights(model, path, strict=False)."
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
        raise MissingFileError(
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
