"""The config a checkpoint carries goes through the same loader and validation as --cfg (size limit, no YAML
aliases, no Python tags, every key checked), and a model too large for the machine is refused with its
memory estimate before anything is allocated (from --cfg or from a checkpoint)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time

import pytest
import yaml

from conftest import DATA, ROOT
from helpers import TINY_YAML
from hrpose.config import ConfigError, config_to_dict, load_config
from hrpose.data.layout import layout_from_config
from hrpose.models import build_model
from hrpose.models.weights import CheckpointError, checkpoint_meta, config_from_checkpoint_meta, save_weights

GOOD = DATA / "samples" / "coco" / "000000000785.jpg"
HRNET = ROOT / "experiments" / "coco" / "hrnet" / "w32_256x192_adam_lr1e-3.yaml"


def meta_with(cfg_text: str, tiny_files) -> dict:
    cfg = load_config(tiny_files[0])
    meta = checkpoint_meta(cfg, layout_from_config(cfg))
    meta["config"] = cfg_text
    return meta


def test_stored_config_with_yaml_aliases_is_refused(tiny_files):
    text = "a: &x [1, 2]\nMODEL:\n  IMAGE_SIZE: *x\n"
    with pytest.raises(CheckpointError, match=r"alias \*x"):
        config_from_checkpoint_meta(meta_with(text, tiny_files), "ckpt.pth")


def test_stored_config_billion_laughs_is_refused_fast(tiny_files):
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    t0 = time.monotonic()
    with pytest.raises(CheckpointError, match="alias"):
        config_from_checkpoint_meta(meta_with("\n".join(lines) + "\n", tiny_files), "ckpt.pth")
    assert time.monotonic() - t0 < 2


def test_stored_config_over_the_size_limit_is_refused(tiny_files):
    text = TINY_YAML + "\n# " + "x" * (1 << 20) + "\n"
    with pytest.raises(CheckpointError, match="more than the 1048576 a config may have"):
        config_from_checkpoint_meta(meta_with(text, tiny_files), "ckpt.pth")


def test_stored_config_with_a_python_tag_is_refused(tiny_files):
    text = "MODEL:\n  NAME: !!python/object/apply:os.system ['true']\n"
    with pytest.raises(CheckpointError, match="python/object/apply"):
        config_from_checkpoint_meta(meta_with(text, tiny_files), "ckpt.pth")


def test_stored_config_with_a_bad_value_names_the_key_and_the_checkpoint(tiny_files):
    text = yaml.safe_dump({**config_to_dict(load_config(tiny_files[0])), "WORKERS": -5})
    with pytest.raises(CheckpointError, match=r"WORKERS = -5 in ckpt.pth \(the config stored"):
        config_from_checkpoint_meta(meta_with(text, tiny_files), "ckpt.pth")


def _hostile_checkpoint(tmp_path, tiny_files, **model_changes):
    """A checkpoint holding the tiny model's weights, but a stored config that asks for a huge HRNet."""
    cfg = config_to_dict(load_config(HRNET))
    cfg["MODEL"].update(model_changes)
    tiny = load_config(tiny_files[0])
    meta = checkpoint_meta(tiny, layout_from_config(tiny))
    meta["config"] = yaml.safe_dump(cfg)
    return save_weights(tiny_files[2], tmp_path / "hostile.safetensors", meta=meta)


def test_checkpoint_asking_for_a_huge_model_is_refused_with_its_estimate(tiny_files, tmp_path):
    cfg = config_to_dict(load_config(HRNET))
    extra = cfg["MODEL"]["EXTRA"]
    extra["STAGE4"]["NUM_CHANNELS"] = [32, 64, 128, 200000]
    ckpt = _hostile_checkpoint(tmp_path, tiny_files, EXTRA=extra)
    limit = 3 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "hrpose.cli", "predict", "--weights", str(ckpt), "--device", "cpu",
                        "--detector", "whole", str(GOOD), "--out", str(tmp_path / "o")], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, preexec_fn=cap,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert p.returncode == 2, p.stderr[-3000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "needs about" in lines[0] and "GiB" in lines[0], p.stderr[-3000:]
    assert "Traceback" not in p.stderr and "MemoryError" not in p.stderr
    assert time.monotonic() - t0 < 120


def test_cfg_asking_for_more_than_the_limit_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setenv("HRPOSE_MAX_MODEL_BYTES", str(500 * 2**20))
    f = tmp_path / "big.yaml"
    text = HRNET.read_text().replace("- 192\n  - 256", "- 2048\n  - 2048")
    assert text != HRNET.read_text()
    f.write_text(text)
    cfg = load_config(f)
    with pytest.raises(ConfigError, match=r"needs about [\d.]+ GiB .* more than the 0.5 GiB"):
        build_model(cfg)


def test_a_normal_model_builds_under_a_realistic_limit(monkeypatch):
    monkeypatch.setenv("HRPOSE_MAX_MODEL_BYTES", str(1 * 2**30))
    model = build_model(load_config(HRNET))
    assert sum(p.numel() for p in model.parameters()) > 28_000_000


@pytest.mark.parametrize("value", ["1e400", "inf", "nan", "-5", "lots"])
def test_memory_limit_env_var_that_means_nothing_is_refused(monkeypatch, value):
    monkeypatch.setenv("HRPOSE_MAX_MODEL_BYTES", value)
    with pytest.raises(ConfigError, match="HRPOSE_MAX_MODEL_BYTES"):
        build_model(load_config(HRNET))
