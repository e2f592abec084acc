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
from typing import Any

import torch
from torch import nn

from hrpose.errors import MissingFileError, UserError

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
    # the key layout the checkpoint came in (see `detect_layout`), converted to ours before loading
    layout: str = "official"

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
    except (ValueError, OverflowError):  # nan, or inf / 1e400 (no integer has that size)
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


def _strip_module_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module.") :]: v for k, v in sd.items()}
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
    sd = _unwrap(_read(p), p, key)
    check_tensors(sd, str(p))
    return sd


def _bare_model(model: nn.Module) -> nn.Module:
    # DataParallel / DistributedDataParallel keep the real model in .module
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return model.module
    return model


def compare_state_dicts(model_sd: Mapping[str, torch.Tensor], ckpt_sd: Mapping[str, torch.Tensor]) -> LoadReport:
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
    layout = detect_layout(sd)
    if layout not in IMAGENET_LAYOUTS:  # an ImageNet backbone stays as it is: the hint below says why
        sd, layout, _ = convert_state_dict(sd, layout)
    target = _bare_model(model)
    report = compare_state_dicts(target.state_dict(), sd)
    report.layout = layout
    if strict and not report.complete:
        hint = _IMAGENET_HINT if layout in IMAGENET_LAYOUTS else ""
        raise CheckpointError(
            f"weights from {source} do not match the {type(target).__name__} model:\n{report.describe()}\n{hint}"
            "To fine-tune to a different number of joints, start from backbone weights instead (MODEL.PRETRAINED "
            "takes every tensor that fits), or in Python load_weights(model, path, strict=False)."
        )
    target.load_state_dict({k: sd[k] for k in report.loaded}, strict=False)
    if not report.complete:
        logger.warning("partial load from %s: %d keys loaded\n%s", source, len(report.loaded), report.describe())
    return report


def load_pretrained(model: nn.Module, path: str | os.PathLike[str], layers: Iterable[str] = ("*",)) -> LoadReport:
    """Initialise a pose model from ImageNet backbone weights (official `init_weights(pretrained)`).

    The file may be a torchvision/timm ResNet, an HRNet ImageNet classifier (HRNet-Image-Classification,
    timm) or a pose checkpoint in any layout `convert_state_dict` knows; its classification head
    (`fc.*`, `incre_modules.*`, `downsamp_modules.*`, `final_layer.*`, `classifier.*`) is dropped.
    Strict on the backbone: every backbone tensor of the model whose first key component is in
    `layers` ('*' = all; MODEL.EXTRA.PRETRAINED_LAYERS) must be in the file with the right shape, else
    CheckpointError (a wrong file, e.g. W48 weights for a W32 model). The pose head keeps its init;
    checkpoint keys the model lacks (e.g. the classifier's extra stage-4 fuse layers) are reported.
    """
    p = Path(path)
    layout = None
    if not p.is_file():
        p, layout = _pretrained_from_zoo(p)
    report = init_backbone(model, load_state_dict_file(p), layers=layers, source=str(p), layout=layout)
    logger.info("=> loaded %d pretrained tensors from %s", len(report.loaded), p)
    return report


def _pretrained_from_zoo(path: Path) -> tuple[Path, str | None]:
    """A missing MODEL.PRETRAINED file that the model zoo knows by its name (the official YAMLs' names, e.g.
    hrnet_w32-36af842e.pth): the zoo's copy, fetched into $HRPOSE_HOME on first use. Else MissingFileError."""
    from hrpose import zoo

    entry = zoo.entry_for_imagenet_file(path)
    if entry is None:
        known = ", ".join(e.filename for e in zoo.REGISTRY.values() if e.kind == "imagenet")
        raise MissingFileError(
            f"pretrained weights MODEL.PRETRAINED={str(path)!r} not found; download the ImageNet weights there "
            f"(the model zoo fetches these by name: {known}), or train from scratch with MODEL.PRETRAINED '' "
            "(or MODEL.INIT_WEIGHTS False)"
        )
    try:
        found = zoo.fetch(entry)
    except UserError as e:
        raise UserError(
            f"pretrained weights MODEL.PRETRAINED={str(path)!r} not found, and the model zoo's copy "
            f"({entry.name}) could not be had: {e}. Placing the file at {path} works too; or train from scratch "
            "with MODEL.PRETRAINED ''"
        ) from e
    logger.info("=> MODEL.PRETRAINED %s is not there: using the model zoo's %s (%s)", path, entry.name, found)
    return found, entry.layout if entry.layout in LAYOUTS else None


def save_weights(
    model_or_state_dict: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write the official bare state_dict: `.safetensors` by suffix, else a `torch.save` of plain tensors.

    The `.pth` form is an OrderedDict of CPU tensors that the official code loads as is. The write is
    atomic (temporary file, then rename). `meta` (see `checkpoint_meta`) is stored beside the weights,
    never among their keys: in the safetensors header metadata, or as the `.pth` OrderedDict's
    `hrpose_meta` attribute (a JSON string, as PyTorch keeps its own `_metadata` there), so the file
    stays a bare state_dict that `torch.load(weights_only=True)` and `load_state_dict` read as before.
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

            header = {"format": "pt", "keys": json.dumps(list(plain))}
            if meta is not None:
                header[META_KEY] = json.dumps(dict(meta))
            save_file(dict(plain), tmp, metadata=header)
        else:
            torch.save(with_meta(plain, meta) if meta is not None else plain, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


# ---------------------------------------------------------------------------------------------------------
# Key layouts of other projects' checkpoints -> ours (strict loads; proven by tests/test_weights_layouts.py)
#
# official        : the official HRNet/SimpleBaseline files and ours: conv1, ..., stage4 / layer4,
#                   deconv_layers.*, final_layer.*
# mmpose1         : MMPose 1.x TopdownPoseEstimator: {"meta", "state_dict"}; backbone.* (same names as
#                   ours: MMPose's HRNet/ResNet keep the official module names and bn1/bn2 norm names),
#                   head.deconv_layers.* / head.final_layer.* (HeatmapHead), data_preprocessor.* (dropped)
# mmpose0         : MMPose 0.x TopDown: backbone.*, keypoint_head.deconv_layers.* / keypoint_head.final_layer.*
# torchvision     : ImageNet ResNet (torchvision, timm): conv1, bn1, layer1..4 as ours; fc.* dropped
# hrnet-imagenet  : ImageNet HRNet classifier (HRNet-Image-Classification, MMPose's pretrain mirror, timm):
#                   the backbone as ours, plus incre_modules.*, downsamp_modules.*, final_layer.* (its
#                   2048-channel head), classifier.* (dropped, as the official init_weights does through
#                   PRETRAINED_LAYERS) and stage 4's last module fusing into all four branches (extra keys).

LAYOUTS = ("official", "mmpose1", "mmpose0", "torchvision", "hrnet-imagenet", "timm")
IMAGENET_LAYOUTS = ("torchvision", "hrnet-imagenet", "timm")
POSE_HEAD_PREFIXES = ("final_layer.", "deconv_layers.")
_HRNET_CLS_HEAD = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
_MMPOSE_HEAD_PREFIX = {"mmpose1": "head.", "mmpose0": "keypoint_head."}
_IMAGENET_HINT = (
    "This is an ImageNet classification checkpoint (a backbone without a pose head): use it as "
    "MODEL.PRETRAINED to initialise training, not as pose weights.\n"
)


def detect_layout(sd: Mapping[str, object]) -> str:
    """Which project's key layout a state_dict has: one of `LAYOUTS` ('timm' files read as the
    ImageNet layout they share, 'torchvision' or 'hrnet-imagenet')."""
    keys = list(sd)
    if any(k.startswith("backbone.") for k in keys):
        if any(k.startswith("keypoint_head.") for k in keys):
            return "mmpose0"
        return "mmpose1"
    has = {k.split(".", 1)[0] for k in keys}
    if "classifier.weight" in sd or {"incre_modules", "downsamp_modules"} <= has:
        return "hrnet-imagenet"
    if "fc.weight" in sd and any(k.startswith("layer4.") for k in keys):
        return "torchvision"
    return "official"


def convert_state_dict(
    sd: Mapping[str, torch.Tensor], layout: str | None = None
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """A state_dict in any of `LAYOUTS` -> (ours, the layout, the keys dropped as not part of a pose model).

    `layout=None` detects it. Keys that match no rule are kept as they are, so a strict load still
    names them. Conversion renames only: tensors are not copied.
    """
    layout = detect_layout(sd) if layout is None else layout
    if layout not in LAYOUTS:
        raise CheckpointError(f"unknown checkpoint layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for k, v in sd.items():
        new: str | None = k
        if layout in _MMPOSE_HEAD_PREFIX:
            head = _MMPOSE_HEAD_PREFIX[layout]
            if k.startswith("data_preprocessor."):
                new = None
            elif k.startswith("backbone."):
                new = k[len("backbone.") :]
            elif k.startswith(head):
                new = k[len(head) :]
        elif layout == "torchvision":
            new = None if k.startswith("fc.") else k
        elif layout in ("hrnet-imagenet", "timm"):
            new = None if k.startswith(_HRNET_CLS_HEAD) else k
        if new is None:
            dropped.append(k)
        else:
            out[new] = v
    return out, layout, dropped


def init_backbone(
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    *,
    layers: Iterable[str] = ("*",),
    source: str = "the given state_dict",
    layout: str | None = None,
) -> LoadReport:
    """Load the backbone part of `sd` (any layout) into `model`; strict on the backbone (see `load_pretrained`)."""
    converted, layout, dropped = convert_state_dict(_strip_module_prefix(sd), layout)
    layers = tuple(layers)
    take_all = "*" in layers

    def wanted(k: str) -> bool:
        return not k.startswith(POSE_HEAD_PREFIXES) and (take_all or k.split(".", 1)[0] in layers)

    target = _bare_model(model)
    model_sd = target.state_dict()
    chosen = {k: v for k, v in converted.items() if wanted(k)}
    report = compare_state_dicts({k: v for k, v in model_sd.items() if wanted(k)}, chosen)
    report.layout = layout
    if not report.loaded:
        raise CheckpointError(
            f"no weights in {source} fit {type(target).__name__} (looked at {len(chosen)} keys of layers "
            f"{list(layers)}; layout {layout}): is it the ImageNet file of this architecture?"
        )
    if report.missing or report.shape_mismatch:
        shown = LoadReport(missing=report.missing, shape_mismatch=report.shape_mismatch).describe()
        raise CheckpointError(
            f"{source} ({layout} layout) does not fit the backbone of the {type(target).__name__} model:\n{shown}\n"
            "Check that MODEL.PRETRAINED is the ImageNet file of this architecture (e.g. hrnet_w32-36af842e.pth "
            "for W32, resnet50-19c8e357.pth for ResNet-50), or set MODEL.PRETRAINED '' to train from scratch."
        )
    target.load_state_dict({k: chosen[k] for k in report.loaded}, strict=False)
    ignored = dropped + report.unexpected + [k for k in converted if not wanted(k)]
    logger.info(
        "=> loading pretrained model %s (%s layout): %d backbone tensors; the pose head keeps its initial "
        "weights%s", source, layout, len(report.loaded),
        f"; {len(ignored)} checkpoint tensors not used (classifier/other layers)" if ignored else "",
    )  # fmt: skip
    report.unexpected = ignored
    return report


# ---------------------------------------------------------------------------------------------------------
# Metadata carried by the checkpoints hrpose writes: what inference needs besides the weights


META_KEY = "hrpose_meta"
META_FORMAT = 1
_MAX_META_CHARS = 8 << 20  # a config and a few hundred joint names take kilobytes


def checkpoint_meta(cfg: Any, dataset_meta: Any = None) -> dict[str, Any]:
    """The metadata hrpose stores with a model's weights (JSON-ready): keypoint layout (joint names,
    skeleton, flip pairs, OKS sigmas), input and heatmap size (w, h), input channel order
    (DATASET.COLOR_RGB) and the whole config as YAML text. `dataset_meta` defaults to the config's."""
    import yaml

    from hrpose.config import config_to_dict

    m = dataset_meta
    if m is None:
        from hrpose.inference.estimator import meta_from_config

        m = meta_from_config(cfg)
    return {
        "format": META_FORMAT,
        "dataset": str(m.name),
        "joint_names": [str(n) for n in m.joint_names],
        "skeleton": [[int(a), int(b)] for a, b in m.skeleton],
        "flip_pairs": [[int(a), int(b)] for a, b in m.flip_pairs],
        "sigmas": [float(x) for x in m.sigmas],
        "input_size": [int(v) for v in cfg.MODEL.IMAGE_SIZE],
        "heatmap_size": [int(v) for v in cfg.MODEL.HEATMAP_SIZE],
        "color_rgb": bool(cfg.DATASET.COLOR_RGB),
        "model": str(cfg.MODEL.NAME),
        "config": yaml.safe_dump(config_to_dict(cfg), sort_keys=False),
    }


def with_meta(state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """The state_dict (same tensors) as an OrderedDict carrying `meta` as its `hrpose_meta` attribute (JSON)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict(state_dict)
    setattr(out, META_KEY, json.dumps(dict(meta)))
    return out


def _parse_meta(raw: object, path: Path) -> dict[str, Any]:
    if isinstance(raw, Mapping):
        raw = json.dumps(dict(raw))
    if not isinstance(raw, str) or len(raw) > _MAX_META_CHARS:
        raise CheckpointError(f"{path}: the {META_KEY} entry is not a JSON text of at most {_MAX_META_CHARS} chars")
    try:
        meta = json.loads(raw)
    except ValueError as e:
        raise CheckpointError(f"{path}: the {META_KEY} entry is not valid JSON ({e})") from e
    names = meta.get("joint_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: the {META_KEY} entry has no list of joint names ('joint_names')")
    for key in ("skeleton", "flip_pairs"):
        pairs = meta.get(key, [])
        if not isinstance(pairs, list) or not all(
            isinstance(q, list) and len(q) == 2 and all(type(j) is int for j in q) for q in pairs
        ):
            raise CheckpointError(f"{path}: {META_KEY}[{key!r}] must be a list of [joint, joint] index pairs")
    if "config" in meta and not isinstance(meta["config"], str):
        raise CheckpointError(f"{path}: {META_KEY}['config'] must be YAML text")
    return meta


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata stored by `save_weights(..., meta=)` / training, or None for files without it (official,
    MMPose, ...). Reads only the safetensors header, or the pickle with the tensors memory-mapped."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file not found: {p}")
    raw: object = None
    if _is_safetensors(p):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                raw = (f.metadata() or {}).get(META_KEY)
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{p} looks like a safetensors file but cannot be read: {e}") from e
    else:
        try:
            with torch.serialization.safe_globals(_numpy_safe_globals()):
                obj = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip file (legacy format): no mmap
            obj = _read(p)
        except pickle.UnpicklingError:
            obj = _read(p)  # raises the CheckpointError that explains the refusal
        raw = getattr(obj, META_KEY, None)
        if raw is None and isinstance(obj, Mapping):
            raw = obj.get(META_KEY)
    return None if raw is None else _parse_meta(raw, p)


def dataset_meta_from_checkpoint(meta: Mapping[str, Any], source: str = "checkpoint") -> Any:
    """A `hrpose.keypoints.DatasetMeta` from checkpoint metadata (see `checkpoint_meta`)."""
    from hrpose.keypoints import DatasetMeta

    try:
        return DatasetMeta(
            str(meta.get("dataset", "custom")),
            tuple(meta["joint_names"]),
            tuple((int(a), int(b)) for a, b in meta.get("flip_pairs", [])),
            tuple((int(a), int(b)) for a, b in meta.get("skeleton", [])),
            tuple(float(x) for x in meta.get("sigmas", [])),
        )
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{source}: the keypoint layout in its {META_KEY} is inconsistent: {e}") from e


def config_from_checkpoint_meta(meta: Mapping[str, Any], source: str = "checkpoint") -> Any:
    """The config stored in checkpoint metadata, as a frozen CfgNode (defaults + the stored values)."""
    from hrpose.config import ConfigError, config_from_dict, parse_config_text

    text = meta.get("config")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(f"{source} carries no config in its {META_KEY}: pass the experiment YAML (--cfg)")
    # the same loader and validation as --cfg: size limit, no YAML aliases or Python tags, every key checked
    where = f"{source} (the config stored in its {META_KEY})"
    try:
        values = parse_config_text(text, where)
        return config_from_dict(values, source=where)
    except ConfigError as e:
        raise CheckpointError(f"{e}; pass the experiment YAML with --cfg to override it") from None
