"""Metadata carried by the checkpoints hrpose writes: what inference needs besides the weights (keypoint layout,
sizes, channel order, the config). It takes the layout it is given; it never calls into inference."""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from hrpose.config import ConfigError, config_from_dict, config_to_dict, parse_config_text
from hrpose.keypoints import DatasetMeta
from hrpose.models.untrusted import CheckpointError, _is_safetensors, _numpy_safe_globals, _read

logger = logging.getLogger(__name__)

META_KEY = "hrpose_meta"
META_FORMAT = 1
_MAX_META_CHARS = 8 << 20  # a config and a few hundred joint names take kilobytes


def checkpoint_meta(cfg: Any, dataset_meta: Any) -> dict[str, Any]:
    """The metadata hrpose stores with a model's weights (JSON-ready): keypoint layout (joint names,
    skeleton, flip pairs, OKS sigmas), input and heatmap size (w, h), input channel order
    (DATASET.COLOR_RGB) and the whole config as YAML text. `dataset_meta`: the keypoint layout
    (`hrpose.keypoints.DatasetMeta`, e.g. `hrpose.data.layout.layout_from_config(cfg)`)."""
    m = dataset_meta
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
