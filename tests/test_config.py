"""hrpose.config against the official merged configs, plus the official command-line entry scripts."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import types
from pathlib import Path

import pytest

from conftest import ROOT, golden_json
from hrpose.config import (
    ConfigError,
    UnknownKeyError,
    add_official_arguments,
    config_from_args,
    config_from_dict,
    config_to_dict,
    get_default_config,
    load_config,
    merge_opts,
    output_dirs,
)

EXPERIMENTS = sorted(golden_json("experiments.json"))
COCO_W32 = "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"

# docs/architecture.md, "hrpose's own config keys", written out independently of the code under test.
HRPOSE_DEFAULTS = {
    "DECODER": "official",
    "AMP": "",
    "CHANNELS_LAST": False,
    "SYNC_BN": False,
    "SEED": -1,
    "DETERMINISTIC": False,
    "FLIP_PAIRS": [],
    "OKS_SIGMAS": [],
    "UPPER_BODY_IDS": [],
    "SKIP_BAD_IMAGES": True,
    "BACKEND": "auto",
    "TENSORBOARD": True,
    "MAX_ITERS_PER_EPOCH": 0,
    "DEVICE_INPUT": False,
    "REDUCED_DECODE": False,
    "GROUP_BY_IMAGE": False,
    "FUSED_OPTIMIZER": False,
    "VALIDATE_FROM": 0,
    "VALIDATE_EVERY": 1,
    "TRAIN_THREADS": 0,
    "MODEL_MIRROR": "",
}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    # Experiment paths are relative to the repo root, as in the official README.
    monkeypatch.chdir(ROOT)


def _without_hrpose(cfg) -> dict:
    d = config_to_dict(cfg)
    d.pop("HRPOSE")
    return d


def test_golden_has_the_15_official_experiments() -> None:
    assert len(EXPERIMENTS) == 15
    assert all((ROOT / p).is_file() for p in EXPERIMENTS)


@pytest.mark.parametrize("path", EXPERIMENTS)
def test_merged_experiment_equals_official(path: str) -> None:
    # The golden is the official update_config output with no --dataDir (DATA_DIR ''), so the joins
    # leave ROOT/PRETRAINED as written. JSON turns tuples (GPUS) into lists, as config_to_dict does.
    cfg = load_config(path)
    assert cfg.is_frozen()
    expected = golden_json("experiments.json")[path]
    got = _without_hrpose(cfg)
    assert got == expected
    assert json.loads(json.dumps(got)) == expected  # JSON-ready
    assert type(cfg.GPUS) is tuple  # yacs type kept inside the CfgNode


def test_default_tree_is_the_official_one_plus_hrpose() -> None:
    cfg = get_default_config()
    assert not cfg.is_frozen()
    assert set(cfg) == {
        "OUTPUT_DIR", "LOG_DIR", "DATA_DIR", "GPUS", "WORKERS", "PRINT_FREQ", "AUTO_RESUME", "PIN_MEMORY",
        "RANK", "CUDNN", "MODEL", "LOSS", "DATASET", "TRAIN", "TEST", "DEBUG", "HRPOSE",
    }
    # Spot checks of official defaults that no experiment YAML overrides.
    assert cfg.GPUS == (0,) and cfg.WORKERS == 4 and cfg.PRINT_FREQ == 20
    assert cfg.MODEL.IMAGE_SIZE == [256, 256] and cfg.MODEL.HEATMAP_SIZE == [64, 64]
    assert cfg.DATASET.DATASET == "mpii" and cfg.DATASET.SCALE_FACTOR == 0.25
    assert cfg.TRAIN.LR_STEP == [90, 110] and cfg.TRAIN.END_EPOCH == 140
    assert cfg.TEST.IMAGE_THRE == 0.1 and cfg.TEST.NMS_THRE == 0.6 and cfg.TEST.OKS_THRE == 0.5
    assert dict(cfg.MODEL.EXTRA) == {} and cfg.MODEL.EXTRA.is_new_allowed()
    # A fresh copy every call.
    cfg.TRAIN.LR = 5.0
    assert get_default_config().TRAIN.LR == 0.001


def test_hrpose_defaults() -> None:
    assert config_to_dict(get_default_config())["HRPOSE"] == HRPOSE_DEFAULTS
    assert config_to_dict(load_config(COCO_W32))["HRPOSE"] == HRPOSE_DEFAULTS


def test_opts_merge_after_file() -> None:
    cfg = load_config(COCO_W32, ["TEST.USE_GT_BBOX", "False", "TRAIN.LR", "0.01", "TRAIN.LR_STEP", "[1, 2]",
                                 "HRPOSE.DECODER", "dark", "GPUS", "(0,)"])
    assert cfg.TEST.USE_GT_BBOX is False  # the file says true
    assert cfg.TRAIN.LR == 0.01
    assert cfg.TRAIN.LR_STEP == [1, 2]
    assert cfg.HRPOSE.DECODER == "dark"
    assert cfg.GPUS == (0,)
    # An int where the default is a float is widened.
    widened = load_config(COCO_W32, ["TRAIN.LR", "1"]).TRAIN.LR
    assert widened == 1.0 and type(widened) is float


@pytest.mark.parametrize(
    ("opts", "key", "suggestion"),
    [
        (["TEST.USE_GT_BOX", "False"], "TEST.USE_GT_BOX", "TEST.USE_GT_BBOX"),
        (["TRAIN.LR_STEPS", "[1,2]"], "TRAIN.LR_STEPS", "TRAIN.LR_STEP"),
        (["TRAIN.FLIP_TEST", "True"], "TRAIN.FLIP_TEST", "TEST.FLIP_TEST"),
        (["train.lr", "0.1"], "train.lr", "TRAIN.LR"),
    ],
)
def test_unknown_opt_names_key_and_closest(opts: list[str], key: str, suggestion: str) -> None:
    with pytest.raises(UnknownKeyError) as info:
        load_config(COCO_W32, opts)
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError) and isinstance(err, ConfigError)
    assert err.key == key and err.suggestion == suggestion
    assert key in str(err) and suggestion in str(err) and "command line" in str(err)


def test_unknown_file_key_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("MODEL:\n  NAME: pose_resnet\n  NUM_JOINT: 16\n")
    with pytest.raises(UnknownKeyError) as info:
        load_config(bad)
    msg = str(info.value)
    assert "MODEL.NUM_JOINT" in msg and str(bad) in msg and "MODEL.NUM_JOINTS" in msg


def test_bad_type_names_key_and_expected_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TRAIN\.LR.*expected float.*str 'fast'"):
        load_config(COCO_W32, ["TRAIN.LR", "fast"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("TEST:\n  FLIP_TEST: 3\n")
    with pytest.raises(ConfigError, match=r"TEST\.FLIP_TEST.*bad\.yaml.*expected bool"):
        load_config(bad)
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(COCO_W32, ["TRAIN.LR"])


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.yaml"
    evil.write_text("OUTPUT_DIR: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_model_extra_accepts_new_keys(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("MODEL:\n  EXTRA:\n    NUM_LAYERS: 50\n    STAGE2:\n      NUM_MODULES: 1\n")
    cfg = load_config(f, ["MODEL.EXTRA.DECONV_WITH_BIAS", "False", "MODEL.EXTRA.STAGE2.NEW", "[1, 2]"])
    assert cfg.MODEL.EXTRA.NUM_LAYERS == 50
    assert cfg.MODEL.EXTRA.DECONV_WITH_BIAS is False
    assert cfg.MODEL.EXTRA.STAGE2.NUM_MODULES == 1 and cfg.MODEL.EXTRA.STAGE2.NEW == [1, 2]
    with pytest.raises(UnknownKeyError):  # ...but nothing else does
        load_config(f, ["MODEL.NEW_KEY", "1"])


def test_data_dir_prefixing_is_official() -> None:
    cfg = load_config(COCO_W32, ["TEST.MODEL_FILE", "models/x.pth"], data_dir="/data", model_dir="/out",
                      log_dir="/logs")
    assert cfg.DATA_DIR == "/data" and cfg.OUTPUT_DIR == "/out" and cfg.LOG_DIR == "/logs"
    assert cfg.DATASET.ROOT == "/data/data/coco/"
    assert cfg.MODEL.PRETRAINED == "/data/models/pytorch/imagenet/hrnet_w32-36af842e.pth"
    assert cfg.TEST.MODEL_FILE == "/data/models/x.pth"
    # Official quirks: an empty MODEL_FILE stays empty, an empty PRETRAINED becomes DATA_DIR + '/'.
    cfg = load_config(COCO_W32, ["MODEL.PRETRAINED", "''"], data_dir="/data")
    assert cfg.TEST.MODEL_FILE == "" and cfg.MODEL.PRETRAINED == "/data/"
    # Absolute paths win, as with os.path.join; empty overrides keep the file's values.
    cfg = load_config(COCO_W32, ["DATASET.ROOT", "/abs/coco"], data_dir="/data", model_dir="", log_dir=None)
    assert cfg.DATASET.ROOT == "/abs/coco" and cfg.OUTPUT_DIR == "output" and cfg.LOG_DIR == "log"
    assert not load_config(COCO_W32, freeze=False).is_frozen()


def test_output_dirs_layout(tmp_path: Path) -> None:
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "LOG_DIR", str(tmp_path / "log")]
    cfg = load_config(COCO_W32, opts)
    final, tb = output_dirs(cfg, COCO_W32, time_str="2024-01-02-03-04")
    assert final == tmp_path / "out" / "coco" / "pose_hrnet" / "w32_256x192_adam_lr1e-3"
    assert tb == tmp_path / "log" / "coco" / "pose_hrnet" / "w32_256x192_adam_lr1e-3_2024-01-02-03-04"
    assert final.is_dir() and tb.is_dir()
    # HYBRID_JOINTS_TYPE is appended and ':' replaced, the name stops at the first dot (official).
    cfg = load_config(COCO_W32, [*opts, "DATASET.DATASET", "a:b", "DATASET.HYBRID_JOINTS_TYPE", "h",
                                 "MODEL.NAME", "pose_resnet"])
    final, tb = output_dirs(cfg, "some/dir/my.exp.yaml", create=False)
    assert final == tmp_path / "out" / "a_b_h" / "pose_resnet" / "my"
    assert tb.parent == tmp_path / "log" / "a_b_h" / "pose_resnet" and tb.name.startswith("my_20")
    assert not final.exists() and not tb.exists()


def test_config_dict_round_trip() -> None:
    cfg = load_config(COCO_W32, ["MODEL.EXTRA.NEW", "3"])
    d = config_to_dict(cfg)
    assert isinstance(d["GPUS"], list) and d["MODEL"]["EXTRA"]["NEW"] == 3
    back = config_from_dict(json.loads(json.dumps(d)))
    assert back == cfg and back.is_frozen() and type(back.GPUS) is tuple


def test_merge_opts_rejects_non_keys() -> None:
    with pytest.raises(ConfigError, match="--modelDir"):
        merge_opts(get_default_config(), ["--modelDir", "x"])


# ----------------------------------------------------------------------------------------------------
# official command lines


README_TEST_COCO = [
    "--cfg", COCO_W32, "TEST.MODEL_FILE", "models/pytorch/pose_coco/pose_hrnet_w32_256x192.pth",
    "TEST.USE_GT_BBOX", "False",
]


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_official_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_official_arguments_parse_readme_lines() -> None:
    args = _parse(README_TEST_COCO)
    assert args.cfg == COCO_W32
    assert args.opts == ["TEST.MODEL_FILE", "models/pytorch/pose_coco/pose_hrnet_w32_256x192.pth",
                         "TEST.USE_GT_BBOX", "False"]
    assert (args.modelDir, args.logDir, args.dataDir, args.prevModelDir) == ("", "", "", "")
    cfg = config_from_args(args)
    assert cfg.TEST.MODEL_FILE == "models/pytorch/pose_coco/pose_hrnet_w32_256x192.pth"
    assert cfg.TEST.USE_GT_BBOX is False

    args = _parse(["--cfg", "experiments/mpii/hrnet/w32_256x256_adam_lr1e-3.yaml"])
    assert args.opts == [] and config_from_args(args).DATASET.DATASET == "mpii"

    args = _parse(["--cfg", COCO_W32, "--modelDir", "m", "--logDir", "l", "--dataDir", "d",
                   "--prevModelDir", "p", "TRAIN.LR", "0.01"])
    assert (args.modelDir, args.logDir, args.dataDir, args.prevModelDir) == ("m", "l", "d", "p")
    cfg = config_from_args(args)
    assert (cfg.OUTPUT_DIR, cfg.LOG_DIR, cfg.DATASET.ROOT, cfg.TRAIN.LR) == ("m", "l", "d/data/coco/", 0.01)


def test_official_arguments_require_cfg(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["TEST.USE_GT_BBOX", "False"])
    assert "--cfg" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train", "test"])
def test_tools_script_hands_official_args_to_command(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for hrpose.commands.<name> (another module): records what the script passes to run().
    received: list[argparse.Namespace] = []
    fake = types.ModuleType(f"hrpose.commands.{name}")
    fake.add_arguments = add_official_arguments  # type: ignore[attr-defined]
    fake.run = lambda args: received.append(args) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, f"hrpose.commands.{name}", fake)
    monkeypatch.setattr(sys, "argv", [f"tools/{name}.py", *README_TEST_COCO])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(os.fspath(ROOT / "tools" / f"{name}.py"), run_name="__main__")
    assert info.value.code == 3  # run()'s return value is the exit status
    (args,) = received
    assert args.cfg == COCO_W32 and args.opts == README_TEST_COCO[2:]
    assert (args.modelDir, args.logDir, args.dataDir) == ("", "", "")
