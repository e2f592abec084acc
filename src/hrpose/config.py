"""The official yacs config tree, YAML + ``KEY VALUE`` merging, and the official output layout.

This is the only module that imports yacs. The default tree holds every key of the official
``lib/config/default.py`` with the official defaults (so the official experiment YAMLs load unchanged)
plus one extra node, ``HRPOSE``, for this project's own switches (see docs/architecture.md).

Merging follows the official ``update_config``: YAML file, then the ``KEY VALUE`` list, then the
``--modelDir/--logDir/--dataDir`` overrides, then ``DATA_DIR`` is joined in front of ``DATASET.ROOT``,
``MODEL.PRETRAINED`` and (when set) ``TEST.MODEL_FILE``. Differences from yacs, all stricter in what they
report and never different in what a valid official config produces:

- YAML is read with ``yaml.safe_load`` only (yacs would also execute ``.py`` config files);
- an unknown key raises :class:`UnknownKeyError` naming the key, where it came from and the closest
  valid key; a wrong value type raises :class:`ConfigError` naming the key and the expected type;
- an ``int`` is accepted where the default is a ``float`` (``TRAIN.LR 1``), widened to float;
- nodes that accept new keys (``MODEL.EXTRA``) accept them from the command line too, and new nodes
  created under them accept new keys as well.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from yacs.config import CfgNode

from hrpose.errors import MissingFileError, UserError

__all__ = [
    "CfgNode",
    "ConfigError",
    "UnknownKeyError",
    "get_default_config",
    "load_config",
    "validate_config",
    "check_output_dirs",
    "output_dir_problem",
    "config_from_args",
    "config_from_dict",
    "merge_dict",
    "merge_opts",
    "config_to_dict",
    "output_dirs",
    "experiment_name",
    "dataset_dir_name",
    "add_official_arguments",
]


class ConfigError(UserError, ValueError):
    """A config file or ``KEY VALUE`` list that cannot be merged (bad key, bad type, bad YAML)."""


class UnknownKeyError(ConfigError, KeyError):
    """A key that is not in the config tree. Also a ``KeyError``, as yacs raises for the same mistake.

    Attributes: ``key`` (the full dotted key), ``source`` (file path or ``'command line'``),
    ``suggestion`` (closest valid full key, or ``None``).
    """

    def __init__(self, key: str, source: str, suggestion: str | None):
        self.key = key
        self.source = source
        self.suggestion = suggestion
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        super().__init__(f"unknown config key {key!r} in {source}{hint}")

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


def _official_tree() -> dict[str, Any]:
    """The official defaults, key for key (lib/config/default.py). Sizes are (width, height)."""
    return {
        "OUTPUT_DIR": "",
        "LOG_DIR": "",
        "DATA_DIR": "",
        "GPUS": (0,),
        "WORKERS": 4,
        "PRINT_FREQ": 20,
        "AUTO_RESUME": False,
        "PIN_MEMORY": True,
        "RANK": 0,
        "CUDNN": {"BENCHMARK": True, "DETERMINISTIC": False, "ENABLED": True},
        "MODEL": {
            "NAME": "pose_hrnet",
            "INIT_WEIGHTS": True,
            "PRETRAINED": "",
            "NUM_JOINTS": 17,
            "TAG_PER_JOINT": True,
            "TARGET_TYPE": "gaussian",
            "IMAGE_SIZE": [256, 256],
            "HEATMAP_SIZE": [64, 64],
            "SIGMA": 2,
            # EXTRA (the architecture spec) is created below with new_allowed=True.
        },
        "LOSS": {
            "USE_OHKM": False,
            "TOPK": 8,
            "USE_TARGET_WEIGHT": True,
            "USE_DIFFERENT_JOINTS_WEIGHT": False,
        },
        "DATASET": {
            "ROOT": "",
            "DATASET": "mpii",
            "TRAIN_SET": "train",
            "TEST_SET": "valid",
            "DATA_FORMAT": "jpg",
            "HYBRID_JOINTS_TYPE": "",
            "SELECT_DATA": False,
            "FLIP": True,
            "SCALE_FACTOR": 0.25,
            "ROT_FACTOR": 30,
            "PROB_HALF_BODY": 0.0,
            "NUM_JOINTS_HALF_BODY": 8,
            "COLOR_RGB": False,
        },
        "TRAIN": {
            "LR_FACTOR": 0.1,
            "LR_STEP": [90, 110],
            "LR": 0.001,
            "OPTIMIZER": "adam",
            "MOMENTUM": 0.9,
            "WD": 0.0001,
            "NESTEROV": False,
            "GAMMA1": 0.99,
            "GAMMA2": 0.0,
            "BEGIN_EPOCH": 0,
            "END_EPOCH": 140,
            "RESUME": False,
            "CHECKPOINT": "",
            "BATCH_SIZE_PER_GPU": 32,
            "SHUFFLE": True,
        },
        "TEST": {
            "BATCH_SIZE_PER_GPU": 32,
            "FLIP_TEST": False,
            "POST_PROCESS": False,
            "SHIFT_HEATMAP": False,
            "USE_GT_BBOX": False,
            "IMAGE_THRE": 0.1,
            "NMS_THRE": 0.6,
            "SOFT_NMS": False,
            "OKS_THRE": 0.5,
            "IN_VIS_THRE": 0.0,
            "COCO_BBOX_FILE": "",
            "BBOX_THRE": 1.0,
            "MODEL_FILE": "",
        },
        "DEBUG": {
            "DEBUG": False,
            "SAVE_BATCH_IMAGES_GT": False,
            "SAVE_BATCH_IMAGES_PRED": False,
            "SAVE_HEATMAPS_GT": False,
            "SAVE_HEATMAPS_PRED": False,
        },
    }


def _hrpose_tree() -> dict[str, Any]:
    """This project's own keys; the table in docs/architecture.md is the reference."""
    return {
        "DECODER": "official",  # 'official' | 'dark' | 'udp'
        "AMP": "",  # '' | 'bf16' | 'fp16'
        "CHANNELS_LAST": False,
        "SYNC_BN": False,
        "SEED": -1,  # seed everything when >= 0
        "DETERMINISTIC": False,
        "FLIP_PAIRS": [],  # [[left, right], ...]; empty = from left_*/right_* joint names
        "OKS_SIGMAS": [],  # per joint; empty = COCO's for 17 joints, else uniform 0.1
        "UPPER_BODY_IDS": [],
        "SKIP_BAD_IMAGES": True,
        "BACKEND": "auto",  # 'auto' or a name of hrpose.runtime.REGISTRY (docs/architecture.md)
        "TENSORBOARD": True,
        "MAX_ITERS_PER_EPOCH": 0,  # 0 = all
        "DEVICE_INPUT": False,  # workers ship uint8 crops + joints; normalisation and targets on the device
        "REDUCED_DECODE": False,  # opt-in: JPEG DCT-scaled decoding for large boxes (changes pixels slightly)
        "GROUP_BY_IMAGE": False,  # training order: images shuffled, each image's people in a row (decoded once)
        "FUSED_OPTIMIZER": False,  # CUDA: Adam/SGD with fused=True
        "VALIDATE_FROM": 0,  # training validates epochs >= this (and always the last one)
        "VALIDATE_EVERY": 1,  # ... every N-th of them, counted from VALIDATE_FROM
        "TRAIN_THREADS": 0,  # torch threads while training; 0 = leave torch's (OMP_NUM_THREADS)
        "MODEL_MIRROR": "",  # model zoo mirror base URL: <MODEL_MIRROR>/<file name> is tried first (docs/models.md)
    }


def get_default_config() -> CfgNode:
    """A fresh, unfrozen copy of the full default tree (official keys + ``HRPOSE``)."""
    tree = _official_tree()
    tree["HRPOSE"] = _hrpose_tree()
    cfg = CfgNode(tree)
    cfg.MODEL.EXTRA = CfgNode(new_allowed=True)
    return cfg


# ----------------------------------------------------------------------------------------------------
# merging


def _all_keys(node: CfgNode, prefix: str = "") -> list[str]:
    keys = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, CfgNode):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _suggest(full_key: str, root: CfgNode) -> str | None:
    """The closest valid full key: the same leaf name elsewhere, else the nearest spelling."""
    candidates = _all_keys(root)
    leaf = full_key.rsplit(".", 1)[-1]
    same_leaf = [c for c in candidates if c.rsplit(".", 1)[-1] == leaf]
    if same_leaf:
        return min(same_leaf, key=lambda c: -difflib.SequenceMatcher(None, c, full_key).ratio())
    close = difflib.get_close_matches(full_key, candidates, n=1, cutoff=0.6)
    if not close:  # compare case-insensitively as a last resort ('train.lr')
        upper = {c.upper(): c for c in candidates}
        close = [upper[m] for m in difflib.get_close_matches(full_key.upper(), list(upper), n=1, cutoff=0.6)]
    return close[0] if close else None


def _type_name(value: Any) -> str:
    return "node" if isinstance(value, CfgNode) else type(value).__name__


#: keys whose default is written as an integer but whose value is any real number (checked by validate_config)
REAL_VALUED_KEYS = frozenset({"MODEL.SIGMA"})


def _coerce(value: Any, default: Any, full_key: str, source: str) -> Any:
    """``value`` checked against the type of ``default`` (yacs rules, plus int -> float)."""
    if type(value) is type(default) or value is None or default is None:
        return value
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if type(default) is float and type(value) is int:
        return float(value)
    if full_key in REAL_VALUED_KEYS and type(default) is int and type(value) is float:
        return value  # an int default (SIGMA: 2) does not make the key integer-only: 2.5 is a valid sigma
    raise ConfigError(
        f"config key {full_key!r} in {source}: expected {_type_name(default)} "
        f"(default {default!r}), got {_type_name(value)} {value!r}"
    )


def _new_node(value: Mapping[str, Any]) -> CfgNode:
    """A node created under a ``new_allowed`` parent: it accepts new keys too."""
    node = CfgNode(new_allowed=True)
    for k, v in value.items():
        node[str(k)] = _new_node(v) if isinstance(v, Mapping) else CfgNode._decode_cfg_value(v)
    return node


def _merge_into(dst: CfgNode, src: Mapping[str, Any], root: CfgNode, prefix: str, source: str) -> None:
    for key, raw in src.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {prefix}{key!r} in {source}: keys must be strings")
        full = f"{prefix}{key}"
        # Strings go through literal_eval as in yacs: '(0,1,2,3)' -> tuple, '0.01' -> float, 'foo' stays.
        value = raw if isinstance(raw, Mapping) else CfgNode._decode_cfg_value(copy.deepcopy(raw))
        if key not in dst:
            if not dst.is_new_allowed():
                raise UnknownKeyError(full, source, _suggest(full, root))
            dst[key] = _new_node(value) if isinstance(value, Mapping) else value
            continue
        current = dst[key]
        if isinstance(current, CfgNode):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {full!r} in {source}: expected a mapping of sub-keys, got "
                    f"{_type_name(value)} {value!r}"
                )
            _merge_into(current, value, root, full + ".", source)
        elif isinstance(value, Mapping):
            raise ConfigError(
                f"config key {full!r} in {source}: expected {_type_name(current)} (default {current!r}), got a mapping"
            )
        else:
            dst[key] = _coerce(value, current, full, source)


def merge_dict(cfg: CfgNode, values: Mapping[str, Any], source: str = "<dict>") -> CfgNode:
    """Merge a nested mapping into unfrozen ``cfg`` in place, checking keys and types; returns ``cfg``."""
    _merge_into(cfg, values, cfg, "", source)
    return cfg


# A config is a few kilobytes; anything far larger is not a config (and is never parsed into memory).
MAX_CONFIG_BYTES = 1 << 20


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases (``*name``): a config needs none, and nested aliases expand
    exponentially when the tree is copied or printed (the "billion laughs" file)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"config file {self.name}: the YAML alias *{event.anchor} (line {event.start_mark.line + 1}, column "
                f"{event.start_mark.column + 1}) is not "
                "allowed; hrpose configs do not use anchors (&name) or aliases (*name): write the values out"
            )
        return super().compose_node(parent, index)


def _load_yaml(cfg_file: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(cfg_file)
    if not path.exists():
        raise MissingFileError(
            f"config file not found: {path} (--cfg); give the path of an experiment YAML, e.g. one under experiments/"
        )
    if not path.is_file():
        raise ConfigError(f"config file {path} (--cfg) is not a regular file; give the path of an experiment YAML")
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"config file {path} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have; "
                "is it the right file? (--cfg takes an experiment YAML)"
            )
        text = path.read_bytes()[: MAX_CONFIG_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    return parse_config_text(text, str(path))


def parse_config_text(text: str, name: str) -> dict[str, Any]:
    """A config's YAML text -> its mapping, by the rules of config files (size limit, no aliases, no Python
    tags, plain data only); `name` is what messages call it after "config file " (a path, or a checkpoint and
    where inside it the text was). Used for --cfg files and for the config a checkpoint carries."""
    path = name
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have")
    loader = _NoAliasLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.constructor.ConstructorError as e:
        # `!!python/object/apply:os.system [...]` and friends: refused, never constructed
        tag = (e.problem or "?").rsplit(" ", 1)[-1].strip("'").replace("tag:yaml.org,2002:", "!!")
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(
            f"config file {path} is not valid YAML for hrpose: the tag {tag} is not allowed ({where}); configs are "
            "plain data (numbers, strings, lists, mappings) and hrpose never builds Python objects from them"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of keys at top level, got {type(data).__name__}")
    return data


def merge_opts(cfg: CfgNode, opts: Sequence[str] | None, source: str = "command line") -> CfgNode:
    """Merge a flat ``[KEY, VALUE, KEY, VALUE, ...]`` list into ``cfg`` (unfrozen) in place; returns ``cfg``.

    Values are strings parsed as Python literals where possible (``False``, ``0.01``, ``[1,2]``), as in yacs.
    """
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"{source}: config overrides must be KEY VALUE pairs, got an odd number of items: {opts}")
    for key, value in zip(opts[0::2], opts[1::2]):
        if not isinstance(key, str) or not key or key.startswith("-"):
            raise ConfigError(f"{source}: expected a config KEY like TRAIN.LR, got {key!r}")
        *parents, leaf = key.split(".")
        node = cfg
        for p in parents:  # report the whole dotted key, not just the first missing part
            if not isinstance(node, CfgNode) or (p not in node and not node.is_new_allowed()):
                raise UnknownKeyError(key, source, _suggest(key, cfg))
            node = node.get(p, CfgNode(new_allowed=True))
        if not isinstance(node, CfgNode):
            raise UnknownKeyError(key, source, _suggest(key, cfg))
        nested: dict[str, Any] = {}
        d = nested
        for p in parents:
            d = d.setdefault(p, {})
        d[leaf] = value
        _merge_into(cfg, nested, cfg, "", source)
    return cfg


def load_config(
    cfg_file: str | os.PathLike[str],
    opts: Sequence[str] | None = (),
    *,
    model_dir: str | None = None,
    log_dir: str | None = None,
    data_dir: str | None = None,
    freeze: bool = True,
) -> CfgNode:
    """The official ``update_config``: defaults <- YAML <- ``KEY VALUE`` opts <- dir overrides.

    Then, exactly as the official code does, ``DATASET.ROOT`` and ``MODEL.PRETRAINED`` become
    ``os.path.join(DATA_DIR, ...)`` and so does ``TEST.MODEL_FILE`` when it is non-empty. Empty or ``None``
    dir overrides leave the file's values. Note the official quirk kept here: with a non-empty
    ``DATA_DIR`` an empty ``MODEL.PRETRAINED`` becomes ``DATA_DIR + '/'``.
    """
    cfg = get_default_config()
    merge_dict(cfg, _load_yaml(cfg_file), source=f"config file {os.fspath(cfg_file)}")
    merge_opts(cfg, opts)
    if model_dir:
        cfg.OUTPUT_DIR = model_dir
    if log_dir:
        cfg.LOG_DIR = log_dir
    if data_dir:
        cfg.DATA_DIR = data_dir
    cfg.DATASET.ROOT = os.path.join(cfg.DATA_DIR, cfg.DATASET.ROOT)
    cfg.MODEL.PRETRAINED = os.path.join(cfg.DATA_DIR, cfg.MODEL.PRETRAINED)
    if cfg.TEST.MODEL_FILE:
        cfg.TEST.MODEL_FILE = os.path.join(cfg.DATA_DIR, cfg.TEST.MODEL_FILE)
    validate_config(cfg, source=f"config file {os.fspath(cfg_file)} (and the command line)")
    if freeze:
        cfg.freeze()
    return cfg


# ----------------------------------------------------------------------------------------------------
# validation: every value checked against its meaning at load, naming the key

# Sides of MODEL.IMAGE_SIZE / HEATMAP_SIZE above this are a typo: a batch of 4096 x 4096 inputs already
# needs gigabytes; larger ones allocate tens of GB before anything else fails.
MAX_SIDE = 4096
MAX_JOINTS = 1000
MAX_BATCH = 65536
#: MODEL.NAME values: the keys of `hrpose.models.MODELS` (a test keeps the two equal; the config layer sits below
#: the models, so it names them instead of importing the model code)
MODEL_NAMES = ("pose_hrnet", "pose_resnet")
AMP_VALUES = ("", "none", "false", "off", "bf16", "fp16")
DECODERS = ("official", "dark", "udp")
OPTIMIZERS = ("adam", "sgd")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate_config(cfg: CfgNode, source: str = "config") -> None:
    """Refuse values that cannot mean anything, naming the key, what was given and what is expected.

    Called by :func:`load_config` after merging, so every command stops here before any work (before a
    model, a dataset or an output folder is made). Checks sizes, counts, ranges, enumerations and the
    ``HRPOSE`` joint index lists against ``MODEL.NUM_JOINTS``. Backend names (``HRPOSE.BACKEND``) are left
    to the backend code, which knows what this machine can run.
    """

    def fail(key: str, value: Any, expected: str) -> None:
        raise ConfigError(f"config key {key} = {value!r} in {source}: expected {expected}")

    def integer(key: str, value: Any, lo: int, hi: int | None = None, what: str = "") -> int:
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            rng = f"an integer >= {lo}" if hi is None else f"an integer from {lo} to {hi}"
            fail(key, value, rng + (f" ({what})" if what else ""))
        return int(value)

    def number(key: str, value: Any, lo: float, hi: float | None = None, *, open_lo: bool = False) -> float:
        bad = not _is_number(value) or value < lo or (open_lo and value == lo) or (hi is not None and value > hi)
        if bad:
            low = f"> {lo:g}" if open_lo else f">= {lo:g}"
            fail(key, value, f"a finite number {low}" + (f" and <= {hi:g}" if hi is not None else ""))
        return float(value)

    def choice(key: str, value: Any, choices: Sequence[str]) -> None:
        if not isinstance(value, str) or value.lower() not in choices:
            fail(key, value, "one of " + ", ".join(repr(c) for c in choices))

    def size(key: str, value: Any) -> tuple[int, int]:
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            fail(key, value, "[width, height]: two integers")
        for v in value:
            if not _is_int(v) or not 1 <= v <= MAX_SIDE:
                fail(key, value, f"[width, height]: two integers from 1 to {MAX_SIDE} pixels")
        return int(value[0]), int(value[1])

    m, t, te, d, hp = cfg.MODEL, cfg.TRAIN, cfg.TEST, cfg.DATASET, cfg.HRPOSE
    if m.NAME not in MODEL_NAMES:
        fail("MODEL.NAME", m.NAME, "one of " + ", ".join(repr(n) for n in sorted(MODEL_NAMES)))
    num_joints = integer("MODEL.NUM_JOINTS", m.NUM_JOINTS, 1, MAX_JOINTS)
    image = size("MODEL.IMAGE_SIZE", m.IMAGE_SIZE)
    heatmap = size("MODEL.HEATMAP_SIZE", m.HEATMAP_SIZE)
    if heatmap[0] > image[0] or heatmap[1] > image[1]:
        fail("MODEL.HEATMAP_SIZE", list(m.HEATMAP_SIZE), f"at most MODEL.IMAGE_SIZE {list(m.IMAGE_SIZE)} per side "
             "(the models predict heatmaps at 1/4 of the input)")  # fmt: skip
    number("MODEL.SIGMA", m.SIGMA, 0.0, float(max(heatmap)), open_lo=True)
    if str(m.TARGET_TYPE) != "gaussian":
        fail("MODEL.TARGET_TYPE", m.TARGET_TYPE, "'gaussian' (the only heatmap target hrpose has)")

    integer("TRAIN.BATCH_SIZE_PER_GPU", t.BATCH_SIZE_PER_GPU, 1, MAX_BATCH)
    integer("TEST.BATCH_SIZE_PER_GPU", te.BATCH_SIZE_PER_GPU, 1, MAX_BATCH)
    integer("WORKERS", cfg.WORKERS, 0, 256, "0 loads data in the main process")
    integer("PRINT_FREQ", cfg.PRINT_FREQ, 0, what="0 = never")
    number("TRAIN.LR", t.LR, 0.0, open_lo=True)
    number("TRAIN.LR_FACTOR", t.LR_FACTOR, 0.0, open_lo=True)
    number("TRAIN.MOMENTUM", t.MOMENTUM, 0.0, 1.0)
    number("TRAIN.WD", t.WD, 0.0)
    choice("TRAIN.OPTIMIZER", t.OPTIMIZER, OPTIMIZERS)
    begin = integer("TRAIN.BEGIN_EPOCH", t.BEGIN_EPOCH, 0)
    end = integer("TRAIN.END_EPOCH", t.END_EPOCH, 0)
    if end < begin:
        fail("TRAIN.END_EPOCH", end, f">= TRAIN.BEGIN_EPOCH ({begin})")
    if not isinstance(t.LR_STEP, (list, tuple)) or not all(_is_int(v) and v >= 0 for v in t.LR_STEP):
        fail("TRAIN.LR_STEP", t.LR_STEP, "a list of epochs (integers >= 0) at which the LR is multiplied by LR_FACTOR")

    if bool(cfg.LOSS.USE_OHKM):
        integer("LOSS.TOPK", cfg.LOSS.TOPK, 1, num_joints, "joints kept by LOSS.USE_OHKM, at most MODEL.NUM_JOINTS")

    number("DATASET.SCALE_FACTOR", d.SCALE_FACTOR, 0.0, 10.0)
    number("DATASET.ROT_FACTOR", d.ROT_FACTOR, 0.0, 360.0)
    number("DATASET.PROB_HALF_BODY", d.PROB_HALF_BODY, -1.0, 1.0)  # official MPII YAMLs: -1 = never
    # (above MODEL.NUM_JOINTS it only means "never": the default 8 stays valid for a 3-joint custom dataset)
    integer("DATASET.NUM_JOINTS_HALF_BODY", d.NUM_JOINTS_HALF_BODY, 0)

    for key in ("IMAGE_THRE", "NMS_THRE", "OKS_THRE", "IN_VIS_THRE"):
        number(f"TEST.{key}", te[key], 0.0, 1.0)
    number("TEST.BBOX_THRE", te.BBOX_THRE, 0.0)

    choice("HRPOSE.DECODER", hp.DECODER, DECODERS)
    choice("HRPOSE.AMP", hp.AMP, AMP_VALUES)
    integer("HRPOSE.MAX_ITERS_PER_EPOCH", hp.MAX_ITERS_PER_EPOCH, 0, what="0 = the whole epoch")
    integer("HRPOSE.VALIDATE_FROM", hp.VALIDATE_FROM, 0, what="the first epoch (0-based) to validate")
    integer("HRPOSE.VALIDATE_EVERY", hp.VALIDATE_EVERY, 1, what="validate every N-th epoch")
    integer("HRPOSE.TRAIN_THREADS", hp.TRAIN_THREADS, 0, what="0 = torch's default thread count")
    if not _is_int(hp.SEED):
        fail("HRPOSE.SEED", hp.SEED, "an integer (a negative one leaves the run unseeded)")
    joint = f"a joint index from 0 to {num_joints - 1} (MODEL.NUM_JOINTS is {num_joints})"
    pairs = hp.FLIP_PAIRS
    if not isinstance(pairs, (list, tuple)):
        fail("HRPOSE.FLIP_PAIRS", pairs, "a list of [left, right] joint index pairs")
    seen: set[int] = set()
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            fail(f"HRPOSE.FLIP_PAIRS[{i}]", pair, "a [left, right] pair of joint indices")
        for v in pair:
            if not _is_int(v) or not 0 <= v < num_joints:
                fail(f"HRPOSE.FLIP_PAIRS[{i}]", list(pair), joint)
        if pair[0] == pair[1] or pair[0] in seen or pair[1] in seen:
            fail(f"HRPOSE.FLIP_PAIRS[{i}]", list(pair), "two different joints, each in at most one pair")
        seen.update(pair)
    sigmas = hp.OKS_SIGMAS
    if not isinstance(sigmas, (list, tuple)) or (len(sigmas) and len(sigmas) != num_joints):
        n = len(sigmas) if isinstance(sigmas, (list, tuple)) else "?"
        fail("HRPOSE.OKS_SIGMAS", sigmas, f"one per joint: {num_joints} numbers (MODEL.NUM_JOINTS), got {n}; "
             "or [] for the defaults")  # fmt: skip
    for i, v in enumerate(sigmas):
        if not _is_number(v) or v <= 0:
            fail(f"HRPOSE.OKS_SIGMAS[{i}]", v, "a finite number > 0")
    ids = hp.UPPER_BODY_IDS
    if not isinstance(ids, (list, tuple)):
        fail("HRPOSE.UPPER_BODY_IDS", ids, f"a list of joint indices ({joint})")
    for i, v in enumerate(ids):
        if not _is_int(v) or not 0 <= v < num_joints:
            fail(f"HRPOSE.UPPER_BODY_IDS[{i}]", v, joint)


def output_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a writable folder (None if it can): a file in the way, or no write access."""
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return f"{parent} is {'a file' if parent.is_file() else 'not a folder'}"
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".hrpose-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{path} is not a writable folder ({e.strerror or e})"
    return None


def check_output_dirs(*dirs: tuple[str, str | os.PathLike[str]]) -> None:
    """Each ``(config key, folder)`` made if missing and checked writable; else a ConfigError naming both."""
    for key, folder in dirs:
        problem = output_dir_problem(Path(folder))
        if problem:
            flag = {"OUTPUT_DIR": " (or --modelDir)", "LOG_DIR": " (or --logDir)"}.get(key, "")
            raise ConfigError(f"{key} cannot be used: {problem}; set {key}{flag} to a folder you can write to")


def config_from_args(args: argparse.Namespace, *, freeze: bool = True) -> CfgNode:
    """``load_config`` from a namespace parsed by :func:`add_official_arguments`."""
    return load_config(
        args.cfg,
        getattr(args, "opts", None),
        model_dir=getattr(args, "modelDir", None),
        log_dir=getattr(args, "logDir", None),
        data_dir=getattr(args, "dataDir", None),
        freeze=freeze,
    )


def config_to_dict(cfg: CfgNode) -> dict[str, Any]:
    """Plain nested dicts with lists for tuples: JSON-ready and safe for ``torch.load(weights_only=True)``."""

    def convert(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        return v

    return convert(cfg)


def config_from_dict(values: Mapping[str, Any], *, freeze: bool = True, source: str = "config dict") -> CfgNode:
    """Defaults with a (possibly partial) dict merged in, e.g. the config stored in a checkpoint.

    No ``DATA_DIR`` joining: the stored values are taken as already resolved.
    """
    cfg = merge_dict(get_default_config(), values, source=source)
    validate_config(cfg, source=source)
    if freeze:
        cfg.freeze()
    return cfg


# ----------------------------------------------------------------------------------------------------
# output layout


def experiment_name(cfg_file: str | os.PathLike[str]) -> str:
    """Official experiment name: the file's base name up to its FIRST dot (``w32_256x192_adam_lr1e-3``)."""
    return os.path.basename(os.fspath(cfg_file)).split(".")[0]


def dataset_dir_name(cfg: CfgNode) -> str:
    """Official dataset folder: ``DATASET[_HYBRID_JOINTS_TYPE]`` with ``:`` replaced by ``_``."""
    name = cfg.DATASET.DATASET
    if cfg.DATASET.HYBRID_JOINTS_TYPE:
        name = f"{name}_{cfg.DATASET.HYBRID_JOINTS_TYPE}"
    return name.replace(":", "_")


def output_dirs(
    cfg: CfgNode,
    cfg_file: str | os.PathLike[str],
    *,
    time_str: str | None = None,
    create: bool = True,
) -> tuple[Path, Path]:
    """``(final_output_dir, tb_log_dir)`` in the official layout, created unless ``create=False``.

    ``final_output_dir = OUTPUT_DIR/<dataset>/<MODEL.NAME>/<experiment name>`` and
    ``tb_log_dir = LOG_DIR/<dataset>/<MODEL.NAME>/<experiment name>_<time_str>``, where ``time_str``
    defaults to the current local time as ``%Y-%m-%d-%H-%M`` (the official log-file stamp).
    """
    dataset = dataset_dir_name(cfg)
    name = experiment_name(cfg_file)
    if time_str is None:
        time_str = time.strftime("%Y-%m-%d-%H-%M")
    final_output_dir = Path(cfg.OUTPUT_DIR) / dataset / cfg.MODEL.NAME / name
    tb_log_dir = Path(cfg.LOG_DIR) / dataset / cfg.MODEL.NAME / f"{name}_{time_str}"
    if create:
        check_output_dirs(("OUTPUT_DIR", final_output_dir), ("LOG_DIR", tb_log_dir))
    return final_output_dir, tb_log_dir


# ----------------------------------------------------------------------------------------------------
# command line


def add_official_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The official ``tools/train.py`` / ``tools/test.py`` arguments, unchanged; returns ``parser``.

    ``--cfg FILE`` (required), trailing ``KEY VALUE`` overrides in ``opts``, and ``--modelDir``,
    ``--logDir``, ``--dataDir``, ``--prevModelDir`` (accepted; unused, as in the official code).
    As in the official scripts, everything after the first ``KEY`` goes into ``opts``, so put the
    ``--`` options before the overrides.
    """
    parser.add_argument("--cfg", help="experiment config file (YAML)", required=True, type=str)
    parser.add_argument(
        "opts",
        help="config overrides as KEY VALUE pairs, e.g. TEST.USE_GT_BBOX False",
        default=None,
        nargs=argparse.REMAINDER,
    )
    parser.add_argument("--modelDir", help="output directory (overrides OUTPUT_DIR)", type=str, default="")
    parser.add_argument("--logDir", help="log directory (overrides LOG_DIR)", type=str, default="")
    parser.add_argument("--dataDir", help="data directory (overrides DATA_DIR)", type=str, default="")
    parser.add_argument("--prevModelDir", help="previous model directory (accepted, unused)", type=str, default="")
    return parser
