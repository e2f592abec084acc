"""Checkpoint I/O: read any common form of pose-model weights safely, load them with a clear report.

Forms read by `load_state_dict_file`:
  * a bare `state_dict` (the official `final_state.pth`, `model_best.pth` and released models);
  * the same with a `module.` prefix (saved from DataParallel / DistributedDataParallel);
  * a training checkpoint dict (official `checkpoint.pth`: `epoch`, `model`, `state_dict`,
    `best_state_dict`, `perf`, `optimizer`); `state_dict` is taken unless `key=` names another;
  * safetensors files (by the `.safetensors` suffix or by their header).

The file checks (safe unpickling, size limits, tensor checks) are `hrpose.models.untrusted`; key layouts of
other projects `hrpose.models.layouts`; the metadata hrpose stores beside the weights
`hrpose.models.checkpoint_meta` (all re-exported here: `hrpose.models.weights` is the module callers use).

Pickles are only read with `torch.load(..., weights_only=True)`, within the limits `hrpose.models.untrusted`
describes.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrpose import zoo
from hrpose.errors import MissingFileError, UserError
from hrpose.models.checkpoint_meta import (
    META_FORMAT,
    META_KEY,
    checkpoint_meta,
    config_from_checkpoint_meta,
    dataset_meta_from_checkpoint,
    read_checkpoint_meta,
    with_meta,
)
from hrpose.models.layouts import (
    _IMAGENET_HINT,
    IMAGENET_LAYOUTS,
    LAYOUTS,
    POSE_HEAD_PREFIXES,
    convert_state_dict,
    detect_layout,
)
from hrpose.models.untrusted import (
    _MAX_LISTED,
    DEFAULT_MAX_CHECKPOINT_BYTES,
    MAX_EXPANSION_RATIO,
    MAX_SAFETENSORS_HEADER,
    CheckpointError,
    _read,
    check_tensors,
    max_checkpoint_bytes,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_CHECKPOINT_BYTES", "IMAGENET_LAYOUTS", "LAYOUTS", "MAX_EXPANSION_RATIO", "MAX_SAFETENSORS_HEADER",
    "META_FORMAT", "META_KEY", "POSE_HEAD_PREFIXES", "CheckpointError", "LoadReport", "check_tensors",
    "checkpoint_meta", "compare_state_dicts", "config_from_checkpoint_meta", "convert_state_dict",
    "dataset_meta_from_checkpoint", "detect_layout", "init_backbone", "load_pretrained", "load_state_dict_file",
    "load_weights", "max_checkpoint_bytes", "read_checkpoint_meta", "save_weights", "with_meta",
]  # fmt: skip


# Keys tried, in order, when a checkpoint is a dict wrapping the weights.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# ImageNet classification heads, never part of a pose model.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "last_linear.")

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
