"""Hostile input to every command: one `error:` line naming the file/key, exit 2, no traceback, nothing wrong written.

Most cases call `hrpose.cli.main` in-process (capsys); a few run the real console script where the process level
matters (exit status of the installed `hrpose`, SIGINT, two concurrent trainings). The training cases use a
pose_resnet-18 at 64x64 on three coco-mini images (`helpers.tiny_resnet_config`).
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DATA, ROOT, mini_coco, python_with_sigint
from helpers import DRIVER, free_port, resnet_exp_dir, tiny_resnet_config
from hrpose.cli import main
from hrpose.config import ConfigError, load_config
from hrpose.errors import MissingFileError

SYNTH = ROOT / "experiments" / "synthetic" / "w16_128x96_synth.yaml"
HRPOSE = Path(sys.executable).with_name("hrpose")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`hrpose ARGV` in-process: (exit status, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *names: str) -> str:
    """Exit 2, one `error:` line naming every one of `names`, no traceback; returns the error line."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    for name in names:
        assert name in err, f"{name!r} not named in: {err}"
    return lines[0]


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file under `path` with its bytes (folders as None): to prove nothing was written or changed."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


# ---------------------------------------------------------------------------------------------------
# config values: refused at load, naming the key, before any folder is made

BAD_VALUES = [
    ("TRAIN.BATCH_SIZE_PER_GPU", "0"),
    ("TRAIN.BATCH_SIZE_PER_GPU", "-1"),
    ("TEST.BATCH_SIZE_PER_GPU", "0"),
    ("WORKERS", "-1"),
    ("MODEL.IMAGE_SIZE", "[100000, 100000]"),  # tens of GB per batch
    ("MODEL.IMAGE_SIZE", "[0, 64]"),
    ("MODEL.IMAGE_SIZE", "[64]"),
    ("MODEL.IMAGE_SIZE", "['a', 'b']"),
    ("MODEL.HEATMAP_SIZE", "[512, 512]"),  # larger than the input
    ("MODEL.NUM_JOINTS", "0"),
    ("MODEL.SIGMA", "0"),
    ("MODEL.SIGMA", "-2"),
    ("MODEL.TARGET_TYPE", "offset"),
    ("MODEL.NAME", "pose_transformer"),
    ("TRAIN.LR", "0.0"),
    ("TRAIN.LR", "-0.001"),
    ("TRAIN.LR_FACTOR", "-0.1"),
    ("TRAIN.LR_STEP", "[-3]"),
    ("TRAIN.OPTIMIZER", "rmsprop"),
    ("TRAIN.BEGIN_EPOCH", "-1"),
    ("TRAIN.END_EPOCH", "-5"),
    ("HRPOSE.DECODER", "bogus"),
    ("HRPOSE.AMP", "fp8"),
    ("HRPOSE.MAX_ITERS_PER_EPOCH", "-1"),
    ("HRPOSE.FLIP_PAIRS", "[[1, 17]]"),  # joint 17 of 17
    ("HRPOSE.FLIP_PAIRS", "[[1, 1]]"),
    ("HRPOSE.FLIP_PAIRS", "[[1, 2, 3]]"),
    ("HRPOSE.FLIP_PAIRS", "[[-1, 2]]"),
    ("HRPOSE.OKS_SIGMAS", "[0.1, 0.2]"),  # 2 sigmas for 17 joints
    ("HRPOSE.UPPER_BODY_IDS", "[0, 99]"),
    ("DATASET.PROB_HALF_BODY", "2.0"),
    ("DATASET.NUM_JOINTS_HALF_BODY", "-1"),
    ("TEST.OKS_THRE", "1.5"),
    ("TEST.IN_VIS_THRE", "-0.5"),
    ("PRINT_FREQ", "-1"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_config_value_names_the_key_and_writes_nothing(tmp_path, capsys, key, value):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "train", "--cfg", SYNTH, "OUTPUT_DIR", out, "LOG_DIR", tmp_path / "log", key, value)
    line = assert_user_error(code, err, key, str(SYNTH))
    assert "expected" in line
    assert not out.exists() and not (tmp_path / "log").exists()  # refused before any folder is made


@pytest.mark.parametrize(
    ("opts", "named"),
    [
        (["MODEL.EXTRA.STAGE2.NUM_BRANCHES", "3"], "NUM_BRANCHES=3"),
        (["MODEL.EXTRA.STAGE2.NUM_CHANNELS", "[0, 32]"], "MODEL.EXTRA.STAGE2"),
        (["MODEL.EXTRA.STAGE3.BLOCK", "FOO"], "'FOO'"),
        (["MODEL.EXTRA.STAGE3.NUM_MODULES", "-1"], "NUM_MODULES"),
        (["MODEL.IMAGE_SIZE", "[100, 100]", "MODEL.HEATMAP_SIZE", "[25, 25]"], "multiples of 32"),
        (["MODEL.HEATMAP_SIZE", "[20, 30]"], "quarter of MODEL.IMAGE_SIZE"),  # train only: targets vs output
        (["MODEL.NAME", "pose_resnet"], "'NUM_DECONV_FILTERS'"),  # an HRNet EXTRA for a ResNet: the missing key
        (["MODEL.NAME", "pose_resnet", "MODEL.EXTRA.NUM_LAYERS", "19", "MODEL.EXTRA.NUM_DECONV_FILTERS", "[8]",
          "MODEL.EXTRA.NUM_DECONV_KERNELS", "[4]", "MODEL.EXTRA.NUM_DECONV_LAYERS", "1"], "NUM_LAYERS=19"),
    ],
)
def test_model_architecture_keys_are_checked_before_any_file(tmp_path, capsys, opts, named):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "train", "--cfg", SYNTH, "OUTPUT_DIR", out, "LOG_DIR", tmp_path / "log", *opts)
    assert_user_error(code, err, named, "MODEL.")
    assert not out.exists() and not (tmp_path / "log").exists()


def test_train_epochs_must_be_consistent(tmp_path, capsys):
    code, _, err = run_cli(capsys, "summary", "--cfg", SYNTH, "TRAIN.BEGIN_EPOCH", "5", "TRAIN.END_EPOCH", "2")
    assert_user_error(code, err, "TRAIN.END_EPOCH", "TRAIN.BEGIN_EPOCH (5)")


def test_ohkm_topk_is_checked_against_num_joints(capsys):
    code, _, err = run_cli(capsys, "summary", "--cfg", SYNTH, "LOSS.USE_OHKM", "True", "LOSS.TOPK", "99")
    assert_user_error(code, err, "LOSS.TOPK", "MODEL.NUM_JOINTS")
    # the same TOPK is fine while OHKM is off (the key is unused then), and a good value beside it loads
    assert load_config(SYNTH, ["LOSS.TOPK", "99"]).LOSS.TOPK == 99
    assert load_config(SYNTH, ["LOSS.USE_OHKM", "True", "LOSS.TOPK", "8"]).LOSS.TOPK == 8


def test_every_official_experiment_yaml_still_loads():
    files = sorted((ROOT / "experiments").rglob("*.yaml"))
    assert len(files) >= 17
    for f in files:
        cfg = load_config(f)
        assert cfg.MODEL.NUM_JOINTS in (16, 17), f


_INT_KEYS = ["TRAIN.BATCH_SIZE_PER_GPU", "TEST.BATCH_SIZE_PER_GPU", "WORKERS", "MODEL.NUM_JOINTS", "MODEL.SIGMA",
             "TRAIN.END_EPOCH", "HRPOSE.MAX_ITERS_PER_EPOCH", "PRINT_FREQ"]  # fmt: skip
_FLOAT_KEYS = ["TRAIN.LR", "TRAIN.LR_FACTOR", "TRAIN.MOMENTUM", "TEST.OKS_THRE", "DATASET.SCALE_FACTOR"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(_INT_KEYS + _FLOAT_KEYS + ["MODEL.IMAGE_SIZE"]),
    number=st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True)),
    side=st.integers(-10, 10**6),
)
def test_random_config_values_load_sanely_or_are_refused_naming_the_key(key, number, side):
    """Any value: either a ConfigError naming the key, or a config whose value means something."""
    if key == "MODEL.IMAGE_SIZE":
        value = f"[{side}, {side}]"
    elif key in _INT_KEYS:
        value = str(int(number)) if isinstance(number, int) or math.isfinite(number) else repr(number)
    else:
        value = repr(float(number))
    try:
        cfg = load_config(SYNTH, [key, value])
    except ConfigError as e:
        assert key in str(e)
        return
    got = cfg
    for part in key.split("."):
        got = got[part]
    if key == "MODEL.IMAGE_SIZE":
        assert all(1 <= v <= 4096 for v in got) and all(h <= v for h, v in zip(cfg.MODEL.HEATMAP_SIZE, got))
    elif key in ("WORKERS", "HRPOSE.MAX_ITERS_PER_EPOCH", "PRINT_FREQ"):
        assert isinstance(got, int) and got >= 0
    elif key == "TRAIN.END_EPOCH":
        assert isinstance(got, int) and got >= cfg.TRAIN.BEGIN_EPOCH
    elif key in _INT_KEYS:
        assert isinstance(got, int) and got >= 1
    else:
        assert math.isfinite(got) and got >= 0
        if key in ("TRAIN.LR", "TRAIN.LR_FACTOR"):
            assert got > 0
        if key in ("TRAIN.MOMENTUM", "TEST.OKS_THRE"):
            assert got <= 1


# ---------------------------------------------------------------------------------------------------
# config files

BILLION_LAUGHS = "\n".join(
    ["a: &a ['lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol', 'lol']"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["MODEL:", "  EXTRA:", "    BOOM: *i"]
)


def test_yaml_alias_bomb_is_refused_fast_and_never_expanded(tmp_path, capsys):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS)
    start = time.perf_counter()
    code, out, err = run_cli(capsys, "train", "--cfg", path, "OUTPUT_DIR", tmp_path / "out")
    assert time.perf_counter() - start < 5
    assert_user_error(code, err, "laughs.yaml", "alias *a", "line 2")
    assert "lol" not in out + err and not (tmp_path / "out").exists()


def test_a_single_harmless_alias_is_refused_too(tmp_path, capsys):
    path = tmp_path / "alias.yaml"
    path.write_text("SIZE: &s [96, 128]\nMODEL:\n  IMAGE_SIZE: *s\n")
    code, _, err = run_cli(capsys, "summary", "--cfg", path)
    assert_user_error(code, err, "alias.yaml", "alias *s", "anchors")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("binary.yaml", b"\xff\xfe\x00\x01garbage", "not UTF-8"),
        ("list.yaml", b"- 1\n- 2\n", "expected a mapping"),
        ("deep.yaml", b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        ("huge.yaml", b"A: 1\n" + b"#" * (2 << 20), "more than the"),
        ("tabs.yaml", b"MODEL:\n\tNAME: x\n", "not valid YAML"),
        ("unknown.yaml", b"TRAIN:\n  LRR: 0.1\n", "TRAIN.LR"),
    ],
)
def test_config_file_that_is_not_a_config(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    code, _, err = run_cli(capsys, "summary", "--cfg", path)
    assert_user_error(code, err, name, expected)


@pytest.mark.parametrize("command", ["train", "test", "summary", "bench", "export"])
def test_missing_cfg_file_is_one_line_for_every_command(tmp_path, capsys, command):
    extra = ["--weights", str(tmp_path / "w.pth")] if command == "export" else []
    code, _, err = run_cli(capsys, command, "--cfg", tmp_path / "nope.yaml", *extra)
    assert_user_error(code, err, "nope.yaml", "--cfg")


def test_cfg_that_is_a_folder(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--cfg", tmp_path)
    assert_user_error(code, err, str(tmp_path), "not a regular file")


# ---------------------------------------------------------------------------------------------------
# output folders, the training lock, files in the way


def _cfg_with(tmp_path: Path, **top) -> Path:
    path = tiny_resnet_config(tmp_path)
    cfg = yaml.safe_load(path.read_text())
    cfg.update(top)
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_output_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    cfg = _cfg_with(tmp_path, OUTPUT_DIR=str(blocker))
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert_user_error(code, err, "OUTPUT_DIR", str(blocker), "is a file")
    assert blocker.read_text() == "keep me"
    # test reports the same
    code, _, err = run_cli(capsys, "test", "--cfg", cfg)
    assert_user_error(code, err, "OUTPUT_DIR", str(blocker))


def test_log_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "logs"
    blocker.write_text("")
    cfg = _cfg_with(tmp_path, LOG_DIR=str(blocker))
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert_user_error(code, err, "LOG_DIR", str(blocker))
    assert not (resnet_exp_dir(cfg) / "train.lock").exists()  # the lock of the refused run is released


def test_output_dir_that_cannot_be_created(tmp_path, capsys):
    cfg = _cfg_with(tmp_path, OUTPUT_DIR="/proc/hrpose-cannot-be-here")
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert_user_error(code, err, "OUTPUT_DIR", "/proc/hrpose-cannot-be-here", "not a writable folder")


@pytest.mark.parametrize("name", ["checkpoint.pth", "model_best.pth", "final_state.pth"])
def test_training_file_that_is_a_folder_is_found_at_start(tmp_path, capsys, name):
    cfg = tiny_resnet_config(tmp_path)
    (resnet_exp_dir(cfg) / name).mkdir(parents=True)
    before = tree(tmp_path / "output")
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert_user_error(code, err, name, "is a folder", "move it away")
    assert tree(tmp_path / "output") == before  # no log, no epoch, no lock left


def _hold_lock(folder: Path, pid: int) -> int:
    """Take `folder`'s training lock through another open file (as another process would) claiming `pid`."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "train.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_second_train_into_a_locked_folder_refuses_naming_the_pid(tmp_path, capsys):
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    sleeper = subprocess.Popen(["sleep", "60"])
    fd = _hold_lock(exp, sleeper.pid)
    try:
        before = tree(tmp_path / "output")
        code, _, err = run_cli(capsys, "train", "--cfg", cfg)
        assert_user_error(code, err, f"PID {sleeper.pid}", str(exp), "another hrpose train")
        assert tree(tmp_path / "output") == before  # the lock file still names the first run; nothing else
    finally:
        os.close(fd)
        sleeper.kill()
        sleeper.wait()


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    dead = subprocess.Popen(["true"])
    dead.wait()
    exp.mkdir(parents=True)
    (exp / "train.lock").write_text(f"{dead.pid}\n")  # a killed run's lock file: no process holds its flock
    code, out, err = run_cli(capsys, "train", "--cfg", cfg, "TRAIN.END_EPOCH", "1", "HRPOSE.MAX_ITERS_PER_EPOCH", "1")
    assert code == 0, err
    assert f"took over the training lock of PID {dead.pid}" in out
    assert (exp / "final_state.pth").is_file() and not (exp / "train.lock").exists()


# ---------------------------------------------------------------------------------------------------
# resume: every field of checkpoint.pth checked, the file named


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """A real one-epoch run: its config and checkpoint.pth (copied by each test)."""
    tmp = tmp_path_factory.mktemp("resume")
    cfg = tiny_resnet_config(tmp)
    assert main(["train", "--cfg", str(cfg), "TRAIN.END_EPOCH", "1", "HRPOSE.MAX_ITERS_PER_EPOCH", "1"]) == 0
    return cfg, torch.load(resnet_exp_dir(cfg) / "checkpoint.pth", weights_only=True)


def _edit(ckpt: dict, field: str, value):
    out = dict(ckpt)
    if callable(value):  # a change of the real value
        value = value(ckpt[field])
    if value is _DELETE:
        del out[field]
    else:
        out[field] = value
    return out


_DELETE = object()
RESUME_CASES = [
    ("epoch", -1, "epoch"),
    ("epoch", 999, "TRAIN.END_EPOCH (3)"),
    ("epoch", "2", "epoch"),
    ("epoch", 1.5, "epoch"),
    ("epoch", True, "epoch"),
    ("best_perf", float("nan"), "best_perf"),
    ("best_perf", float("inf"), "best_perf"),
    ("best_perf", "0.9", "best_perf"),
    ("state_dict", [1, 2, 3], "state_dict"),
    ("state_dict", {"conv1.weight": torch.zeros(1)}, "does not fit this model"),
    ("optimizer", None, "optimizer"),
    ("optimizer", {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "does not fit this optimizer"),
    ("scheduler", "MultiStepLR", "scheduler"),
    ("scheduler", {"last_epoch": 1}, "has keys"),
    ("scheduler", lambda sched: {**sched, "milestones": 5}, "entry 'milestones' is int"),
    ("global_step", -4, "global_step"),
    ("rng", [1, 2], "rng"),
    ("rng", {"python": torch.zeros(3)}, "rng"),
    ("best_state_dict", {"w": "not a tensor"}, "best_state_dict"),
    ("state_dict", _DELETE, "state_dict"),
]


RESUME_IDS = [f"{c[0]}-{i}" for i, c in enumerate(RESUME_CASES)]


@pytest.mark.parametrize(("field", "value", "named"), RESUME_CASES, ids=RESUME_IDS)
def test_resume_checks_every_field_and_names_the_file(tmp_path, capsys, trained_once, field, value, named):
    src_cfg, ckpt = trained_once
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    exp.mkdir(parents=True)
    torch.save(_edit(ckpt, field, value), exp / "checkpoint.pth")
    before = (exp / "checkpoint.pth").read_bytes()
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert_user_error(code, err, str(exp / "checkpoint.pth"), f"'{field}'" if named == field else named, "AUTO_RESUME")
    assert (exp / "checkpoint.pth").read_bytes() == before
    assert not (exp / "model_best.pth").exists() and not (exp / "final_state.pth").exists()
    assert not (exp / "train.lock").exists()


_ANY = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=5),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["epoch", "best_perf", "perf", "global_step", "state_dict", "optimizer", "scheduler",
                              "scaler", "rng", "best_state_dict"]), value=_ANY)  # fmt: skip
def test_random_resume_field_values_are_accepted_only_when_they_mean_something(field, value):
    """`check_resume_fields` on a valid checkpoint with one field replaced by anything."""
    from hrpose.engine.checkpoint import CheckpointReadError, check_resume_fields

    good = {"epoch": 1, "best_perf": 0.5, "perf": 0.5, "global_step": 3, "state_dict": {"w": torch.zeros(1)},
            "optimizer": {"state": {}, "param_groups": []}, "scheduler": {}, "scaler": None, "rng": None,
            "best_state_dict": None}  # fmt: skip
    ckpt = {**good, field: value}
    try:
        check_resume_fields(ckpt, "dir/checkpoint.pth", end_epoch=3)
    except CheckpointReadError as e:
        assert "dir/checkpoint.pth" in str(e) and f"'{field}'" in str(e) and "AUTO_RESUME" in str(e)
        return
    v = ckpt[field]
    if field == "epoch":
        assert type(v) is int and 0 <= v <= 3
    elif field in ("best_perf", "perf"):
        assert type(v) in (int, float) and math.isfinite(v)
    elif field == "global_step":
        assert type(v) is int and v >= 0
    elif field == "state_dict":
        raise AssertionError(f"state_dict {v!r} accepted")  # no value from _ANY maps names to tensors
    elif field == "optimizer":
        assert isinstance(v, dict) and "state" in v and isinstance(v["param_groups"], list)
    elif field == "rng":
        assert v is None or isinstance(v, dict)  # (a list must hold one state per rank: never from _ANY)
    else:
        assert v is None or isinstance(v, dict)


def test_the_unedited_checkpoint_resumes(tmp_path, capsys, trained_once):
    """Control for the cases above: the same copy, unedited, resumes and finishes (epochs 1..2)."""
    _, ckpt = trained_once
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    exp.mkdir(parents=True)
    torch.save(ckpt, exp / "checkpoint.pth")
    code, out, err = run_cli(capsys, "train", "--cfg", cfg, "HRPOSE.MAX_ITERS_PER_EPOCH", "1")
    assert code == 0, err
    assert "loaded checkpoint" in out and "(epoch 1)" in out
    assert torch.load(exp / "checkpoint.pth", weights_only=True)["epoch"] == 3


# ---------------------------------------------------------------------------------------------------
# test: model and data files


def test_test_with_missing_model_file_names_the_key(tmp_path, capsys):
    cfg = tiny_resnet_config(tmp_path)
    code, _, err = run_cli(capsys, "test", "--cfg", cfg, "TEST.MODEL_FILE", tmp_path / "nope.pth")
    assert_user_error(code, err, "nope.pth", "TEST.MODEL_FILE")
    code, _, err = run_cli(capsys, "test", "--cfg", cfg)  # no MODEL_FILE: the trained final_state.pth
    assert_user_error(code, err, "final_state.pth", "train first")


def test_pretrained_file_missing_names_the_key(tmp_path, capsys):
    cfg = tiny_resnet_config(tmp_path)
    code, _, err = run_cli(capsys, "train", "--cfg", cfg, "MODEL.PRETRAINED", tmp_path / "imagenet.pth")
    assert_user_error(code, err, "imagenet.pth", "MODEL.PRETRAINED")
    assert not (resnet_exp_dir(cfg) / "checkpoint.pth").exists()


@pytest.mark.parametrize("fault", ["root", "set", "annotation_folder", "bbox_file"])
def test_dataset_root_or_annotation_missing_names_the_key(tmp_path, capsys, trained_once, fault):
    cfg = tiny_resnet_config(tmp_path)
    weights = tmp_path / "w.pth"
    torch.save(trained_once[1]["state_dict"], weights)
    root = tmp_path / "coco"
    opts = ["TEST.MODEL_FILE", str(weights)]
    if fault == "root":
        opts += ["DATASET.ROOT", str(tmp_path / "no_such_root")]
        names = ("DATASET.ROOT", "no_such_root")
    elif fault == "set":
        opts += ["DATASET.TEST_SET", "val2071"]
        names = ("DATASET.TEST_SET", "person_keypoints_val2071.json")
    elif fault == "bbox_file":
        opts += ["TEST.USE_GT_BBOX", "False", "TEST.COCO_BBOX_FILE", str(tmp_path / "dets.json")]
        names = ("TEST.COCO_BBOX_FILE", "dets.json", "TEST.USE_GT_BBOX True")
    else:
        ann = root / "annotations" / "person_keypoints_train2017.json"
        ann.unlink()
        ann.mkdir()
        names = ("person_keypoints_train2017.json", "not a regular file")
    code, _, err = run_cli(capsys, "test", "--cfg", cfg, *opts)
    assert_user_error(code, err, *names)
    assert not list((resnet_exp_dir(cfg)).glob("results/*"))


# ---------------------------------------------------------------------------------------------------
# export, synth, bench options


@pytest.fixture
def weights_file(tmp_path, trained_once):
    path = tmp_path / "model.pth"
    torch.save(trained_once[1]["state_dict"], path)
    return path


@pytest.mark.parametrize("fault", ["missing_weights", "out_is_folder", "out_is_weights", "out_under_file", "opset",
                                   "calib_root"])  # fmt: skip
def test_export_bad_paths_and_options(tmp_path, capsys, trained_once, weights_file, fault):
    cfg = trained_once[0]
    before = weights_file.read_bytes()
    args = ["export", "--cfg", cfg, "--weights", weights_file]
    if fault == "missing_weights":
        args[-1], names = tmp_path / "gone.pth", ("gone.pth", "--weights")
    elif fault == "out_is_folder":
        (tmp_path / "dir.onnx").mkdir()
        args += ["--out", tmp_path / "dir.onnx"]
        names = ("dir.onnx", "a folder")
    elif fault == "out_is_weights":
        args += ["--out", weights_file]
        names = ("model.pth", "overwrite the checkpoint")
    elif fault == "out_under_file":
        (tmp_path / "file").write_text("")
        args += ["--out", tmp_path / "file" / "m.onnx"]
        names = ("--out", "is a file")
    elif fault == "opset":
        args += ["--opset", "99"]
        names = ("--opset 99",)
    else:
        args += ["--int8-calib", tmp_path / "no_coco"]
        names = ("--int8-calib", "no_coco")
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, *names)
    assert weights_file.read_bytes() == before
    assert not list(tmp_path.glob("*.onnx*")) or fault == "out_is_folder"


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--images", "0"], "--images"),
        (["--images", "2", "--val-images", "-1"], "--val-images"),
        (["--images", "2", "--max-people", "0"], "--max-people"),
        (["--images", "2", "--image-size", "10", "10"], "--image-size"),
        (["--images", "2", "--image-size", "100000", "100000"], "--image-size"),
        (["--images", "2", "--split", "../escape"], "--split"),
        (["--images", "2", "--seed", "-1"], "--seed"),
        (["--images", "2", "--split", "val", "--val-images", "1"], "--split"),
    ],
)
def test_synth_bad_options(tmp_path, capsys, args, named):
    code, _, err = run_cli(capsys, "synth", "--out", tmp_path / "ds", *args)
    assert_user_error(code, err, named)
    assert not (tmp_path / "ds").exists() and not (tmp_path / "escape").exists()


def test_synth_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "ds").write_text("mine")
    code, _, err = run_cli(capsys, "synth", "--out", tmp_path / "ds", "--images", "1")
    assert_user_error(code, err, "--out", "is a file")
    assert (tmp_path / "ds").read_text() == "mine"


@pytest.mark.parametrize(("args", "named"), [(["--iters", "0"], "--iters"), (["--batch-sizes", "0"], "--batch-sizes"),
                                             (["--crops-root", "/nonexistent"], "--crops-root")])  # fmt: skip
def test_bench_bad_options(tmp_path, capsys, args, named):
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH, *args)
    assert_user_error(code, err, named)


@pytest.mark.parametrize(("args", "named"), [(["--device", "gpu0"], "'gpu0' is not a device name"),
                                             (["--backends", "auto", "turbo"], "unknown backend 'turbo'")])  # fmt: skip
def test_bench_unknown_device_or_backend_is_one_error_line(capsys, args, named):
    """Names bench cannot use are refused before any model is built (they were tracebacks: ValueError/RuntimeError)."""
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH, "--crops-root", DATA / "coco-mini", *args)
    assert_user_error(code, err, named)


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_device_name_that_is_no_device_is_one_error_line(tmp_path, capsys, command):
    image = next((DATA / "samples" / "coco").iterdir())
    extra = [image, "--out", tmp_path / "out"] if command == "predict" else []
    code, _, err = run_cli(capsys, command, "--device", "gpu0", "--random-weights", "--cfg", SYNTH, *extra)
    assert_user_error(code, err, "'gpu0' is not a device name", "cpu")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_bench_without_crops_says_how_to_give_them(tmp_path, capsys, monkeypatch):
    """The crops folder is --crops-root or $HRPOSE_BENCH_CROPS, never a path computed from the package."""
    import argparse

    from hrpose.commands.bench import _crops_root

    monkeypatch.delenv("HRPOSE_BENCH_CROPS", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH)
    assert_user_error(code, err, "needs real person crops", "--crops-root DIR", "HRPOSE_BENCH_CROPS")
    monkeypatch.setenv("HRPOSE_BENCH_CROPS", str(tmp_path / "nowhere"))
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH)
    assert_user_error(code, err, f"HRPOSE_BENCH_CROPS={tmp_path / 'nowhere'}", "person_keypoints_train2017.json")
    monkeypatch.setenv("HRPOSE_BENCH_CROPS", str(DATA / "coco-mini"))
    assert _crops_root(argparse.Namespace(crops_root=None, crops_set="train2017")) == DATA / "coco-mini"
    given = argparse.Namespace(crops_root=str(tmp_path), crops_set="val")
    with pytest.raises(MissingFileError, match=rf"--crops-root {tmp_path}: .*person_keypoints_val\.json not found"):
        _crops_root(given)  # the option wins over the environment


def test_bench_too_few_crops_is_one_error_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH, "--num-crops", "3", "--calib-crops", "4")
    assert_user_error(code, err, "--num-crops 3", "--calib-crops 4")  # refused before any work
    root = mini_coco(tmp_path, 1)  # one image: fewer people than the 32 calibration crops
    code, _, err = run_cli(capsys, "bench", "--cfg", SYNTH, "--crops-root", root, "--num-crops", "40",
                           "--calib-crops", "32", "--threads", "1")  # fmt: skip
    assert_user_error(code, err, f"--crops-root {root} gave", "not more than --calib-crops 32")


# ---------------------------------------------------------------------------------------------------
# the error path itself: --debug, HRPOSE_DEBUG, bugs keep their traceback, no `--partial`


def test_debug_flag_and_env_show_the_traceback(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, "summary", "--debug", "--cfg", tmp_path / "nope.yaml")
    assert code == 2 and "Traceback" in err and "MissingFileError" in err and "error: config file not found" in err
    code, _, err = run_cli(capsys, "--debug", "summary", "--cfg", tmp_path / "nope.yaml")
    assert code == 2 and "Traceback" in err
    monkeypatch.setenv("HRPOSE_DEBUG", "1")
    code, _, err = run_cli(capsys, "summary", "--cfg", tmp_path / "nope.yaml")
    assert code == 2 and "Traceback" in err
    monkeypatch.setenv("HRPOSE_DEBUG", "0")
    code, _, err = run_cli(capsys, "summary", "--cfg", tmp_path / "nope.yaml")
    assert_user_error(code, err, "nope.yaml")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import hrpose.commands.summary as summary

    def broken(args):
        raise ZeroDivisionError("a bug in hrpose")

    monkeypatch.setattr(summary, "run", broken)
    with pytest.raises(ZeroDivisionError, match="a bug in hrpose"):
        main(["summary", "--cfg", str(SYNTH)])


def test_no_message_suggests_a_partial_flag():
    offenders = [str(p) for p in (ROOT / "src").rglob("*.py") if "--partial" in p.read_text(encoding="utf-8")]
    assert offenders == []


@pytest.mark.parametrize("auto_resume", [True, False])
def test_ctrl_c_in_train_exits_130_saying_which_epoch_checkpoint_holds(tmp_path, capsys, monkeypatch, auto_resume):
    """KeyboardInterrupt inside epoch 1 (in-process); the real SIGINT is in the subprocess test below."""
    import hrpose.engine
    from hrpose.engine.train import train_one_epoch

    def interrupt_epoch_1(*args, epoch, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_one_epoch(*args, epoch=epoch, **kwargs)

    # `hrpose train` calls hrpose.engine.train(cfg, cfg_file): the fake goes in as its keyword argument
    fake_train = functools.partial(hrpose.engine.train, train_one_epoch=interrupt_epoch_1)
    monkeypatch.setattr(hrpose.engine, "train", fake_train)
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    code, _, err = run_cli(capsys, "train", "--cfg", cfg, "HRPOSE.MAX_ITERS_PER_EPOCH", "1", "AUTO_RESUME",
                           str(auto_resume))  # fmt: skip
    assert code == 130 and "Traceback" not in err
    how = "run the same command to resume" if auto_resume else "run the same command with AUTO_RESUME True to resume"
    assert f"interrupted train: checkpoint.pth in {exp} holds epoch 1 (1 of 3 epochs done); {how}" in err
    assert torch.load(exp / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not (exp / "train.lock").exists() and not (exp / "final_state.pth").exists()


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    import hrpose.engine

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hrpose.engine, "train", functools.partial(hrpose.engine.train, train_one_epoch=interrupt))
    cfg = tiny_resnet_config(tmp_path)
    code, _, err = run_cli(capsys, "train", "--cfg", cfg)
    assert code == 130 and "no epoch finished, so no checkpoint was written" in err and "Traceback" not in err
    assert not (resnet_exp_dir(cfg) / "checkpoint.pth").exists() and not (resnet_exp_dir(cfg) / "train.lock").exists()


def test_keyboard_interrupt_exits_130_saying_what_was_kept(monkeypatch, capsys):
    import hrpose.commands.summary as summary
    from hrpose.errors import Interrupted

    def interrupted(args):
        raise Interrupted("3 files kept in X; run again to go on")

    monkeypatch.setattr(summary, "run", interrupted)
    code, _, err = run_cli(capsys, "summary", "--cfg", SYNTH)
    assert code == 130 and "interrupted summary: 3 files kept in X; run again to go on" in err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------------
# real processes: the installed console script, SIGINT, two concurrent trainings


def test_console_script_user_error_is_exit_2_and_one_line(tmp_path):
    proc = subprocess.run([str(HRPOSE), "train", "--cfg", str(SYNTH), "WORKERS", "-1"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: config key WORKERS")
    assert "Traceback" not in proc.stderr + proc.stdout


def _start_hanging_train(cfg: Path, hang: str) -> tuple[subprocess.Popen, Path]:
    tmp = cfg.parent
    (tmp / "driver.py").write_text(DRIVER)
    marker = tmp / "marker"
    env = dict(os.environ, RB_MARKER=str(marker), RB_HANG=hang, RB_PERF="0.5,0.3,0.4,0.2", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(python_with_sigint(str(tmp / "driver.py"), "train", "--cfg", str(cfg)), env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 150
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"train exited ({proc.returncode}) before the hang: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("train did not reach the hang")
        time.sleep(0.1)
    return proc, marker


@pytest.mark.slow  # two real trainings (~20 s on 2 busy cores)
def test_second_train_refuses_naming_the_first_then_sigint_exits_130_with_the_resume_hint(tmp_path):
    """Two real `hrpose train` processes into one folder; then Ctrl-C (SIGINT) to the first, mid-epoch 1."""
    cfg = tiny_resnet_config(tmp_path)
    exp = resnet_exp_dir(cfg)
    first, _ = _start_hanging_train(cfg, "step:1")  # epoch 0 done and checkpointed, hangs inside epoch 1
    try:
        files_before = tree(tmp_path / "output")
        second = subprocess.run([str(HRPOSE), "train", "--cfg", str(cfg)], capture_output=True, text=True,
                                timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip
        assert second.returncode == 2, second.stderr
        assert f"another hrpose train (PID {first.pid}) is writing into {exp}" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert tree(tmp_path / "output") == files_before  # the second run wrote nothing
        assert (exp / "train.lock").read_text().strip() == str(first.pid)
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130, err
    assert "Traceback" not in err
    assert f"checkpoint.pth in {exp} holds epoch 1 (1 of 3 epochs done); run the same command to resume" in err
    assert torch.load(exp / "checkpoint.pth", weights_only=True)["epoch"] == 1
    assert not (exp / "train.lock").exists() and not (exp / "final_state.pth").exists()


@pytest.mark.slow  # torchrun with two processes (~15 s)
def test_torchrun_user_error_is_one_line_from_rank_0(tmp_path):
    """Under torchrun a folder problem found by rank 0 stops every rank; only rank 0 prints the `error:` line."""
    cfg = tiny_resnet_config(tmp_path)
    (tmp_path / "output").write_text("a file where OUTPUT_DIR should be")

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "hrpose.cli", "train", "--cfg", str(cfg)]  # fmt: skip
    proc = subprocess.run(torchrun, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [ln for ln in text.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "OUTPUT_DIR" in errors[0] and "is a file" in errors[0], text[-3000:]
    assert "hrpose/engine" not in text and "hrpose/cli.py" not in text  # no traceback through hrpose code


def test_predict_of_a_missing_photo_is_one_error_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "predict", tmp_path / "nope.jpg")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "nope.jpg" in lines[0] and "no such file" in lines[0]
