"""One runtime: `hrpose test`, `predict`, `serve` and `bench` build their backend through
`hrpose.runtime.make_backend`, so a registry entry swapped in is what each of them builds and runs; and the
vocabulary itself (one table, deprecated names with one warning line, options as arguments)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import DATA, ROOT
from helpers import Server, recorded_registry, request
from hrpose.cli import main as cli_main
from hrpose.runtime import REGISTRY, make_backend
from hrpose.runtime.registry import DEPRECATED, backend_names

PHOTO = DATA / "samples" / "coco" / "000000000785.jpg"


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """The registry swapped for recording entries (see `helpers.recorded_registry`); yields the log's path."""
    log = tmp_path / "registry.log"
    for name, entry in recorded_registry(log).items():
        monkeypatch.setitem(REGISTRY, name, entry)
    return log


def lines(log) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_hrpose_test_runs_the_registry_entry(recorded, tmp_path):
    cfg = {
        "GPUS": "(0,)", "WORKERS": 0, "PRINT_FREQ": 100, "PIN_MEMORY": False,
        "DATASET": {"DATASET": "coco", "ROOT": str(DATA / "coco-mini"), "TEST_SET": "train2017",
                    "TRAIN_SET": "train2017"},
        "MODEL": {"NAME": "pose_resnet", "PRETRAINED": "", "IMAGE_SIZE": [64, 64], "HEATMAP_SIZE": [16, 16],
                  "SIGMA": 2, "NUM_JOINTS": 17,
                  "EXTRA": {"FINAL_CONV_KERNEL": 1, "DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3,
                            "NUM_DECONV_FILTERS": [16, 16, 16], "NUM_DECONV_KERNELS": [4, 4, 4], "NUM_LAYERS": 18}},
        "TEST": {"BATCH_SIZE_PER_GPU": 32, "USE_GT_BBOX": True},
        "HRPOSE": {"TENSORBOARD": False},
    }  # fmt: skip
    cfg_file = tmp_path / "tiny_gt.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights

    weights = save_weights(build_model(load_config(cfg_file)), tmp_path / "w.pth")
    out = tmp_path / "out"
    assert cli_main(["test", "--cfg", str(cfg_file), "OUTPUT_DIR", str(out), "LOG_DIR", str(out / "log"),
                     "TEST.MODEL_FILE", str(weights), "HRPOSE.BACKEND", "torch-fast"]) == 0  # fmt: skip
    assert lines(recorded)[0] == "built torch-fast" and "ran torch-fast" in lines(recorded)


def test_predict_runs_the_registry_entry(recorded, tiny_files, tmp_path):
    cfg, weights, _ = tiny_files
    assert cli_main(["predict", "--cfg", cfg, "--weights", weights, str(PHOTO), "--detector", "whole", "--device",
                     "cpu", "--backend", "torch", "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    assert lines(recorded)[0] == "built torch" and "ran torch" in lines(recorded)
    assert (tmp_path / "o").is_dir()


def test_serve_runs_the_registry_entry(model_dir, tmp_path):
    """A real `hrpose serve` process whose registry is swapped at start-up (a sitecustomize on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    log = tmp_path / "serve-registry.log"
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
        "from helpers import recorded_registry\n"
        "from hrpose.runtime import REGISTRY\n"
        "REGISTRY.update(recorded_registry(os.environ['HRPOSE_REGISTRY_LOG']))\n"
    )
    server = Server(model_dir, "--backend", "torch", env={"PYTHONPATH": str(site), "HRPOSE_REGISTRY_LOG": str(log)})
    try:
        status, _, body = request(server, "POST", "/v1/pose", PHOTO.read_bytes(), {"Content-Type": "image/jpeg"})
    finally:
        server.stop()
    assert status == 200, body
    assert json.loads(body)["people"]
    assert lines(log)[0] == "built torch" and "ran torch" in lines(log)


def test_bench_runs_the_registry_entries(recorded, tiny_files, capsys):
    cfg, weights, _ = tiny_files
    assert cli_main(["bench", "--cfg", cfg, "--weights", weights, "--crops-root", str(DATA / "coco-mini"),
                     "--num-crops", "6", "--calib-crops", "2", "--iters", "1", "--batch-sizes", "1",
                     "--backends", "torch-fast", "--json"]) == 0  # fmt: skip
    rows = [r["backend"] for r in json.loads(capsys.readouterr().out)["rows"]]
    assert rows == ["eager-fp32 (baseline)", "torch-fast"]
    # the baseline is the registry's "torch" too (the model itself, unfolded)
    assert lines(recorded)[:2] == ["built torch", "built torch-fast"] and "ran torch-fast" in lines(recorded)


def test_bench_help_and_output_name_no_target(capsys, tiny_files):
    with pytest.raises(SystemExit):
        cli_main(["bench", "--help"])
    text = capsys.readouterr().out
    assert "target" not in text.lower() and "benchmarks." not in text and "bench" in text


def test_one_vocabulary_and_deprecated_names_warn_once(tiny_files, capsys, tmp_path):
    _, _, model = tiny_files
    assert backend_names()[0] == "auto" and set(backend_names()[1:]) == set(REGISTRY)
    assert not set(DEPRECATED) & set(REGISTRY) and all(new in REGISTRY for new, _ in DEPRECATED.values())
    x = np.zeros((1, 3, 64, 32), np.float32)
    old = make_backend("torch-fp32-jit", model)
    assert old.name == "torch-fast" and old(x).shape == (1, 17, 16, 8)
    make_backend("torch-fp32-jit", model)
    err = capsys.readouterr().err
    assert err.count("backend name 'torch-fp32-jit' is deprecated") == 1 and err.count("\n") == 1
    assert "use 'torch-fast'" in err
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; choose from auto, torch, torch-fast"):
        make_backend("tensorrt", model)
    with pytest.raises(RuntimeError, match="runs fp32, not --precision bf16"):
        make_backend("torch-fast", model, precision="bf16")


def test_int8_options_are_arguments(tiny_files, tmp_path):
    """onnxruntime-int8 quantises the exported graph with options given as an argument, not read from a name."""
    from hrpose.runtime.quantize import Int8Options

    _, _, model = tiny_files
    rng = np.random.default_rng(0)
    crops = [rng.normal(size=(2, 3, 64, 32)).astype(np.float32)]
    backend = make_backend("onnxruntime-int8", model, input_size=(32, 64), calibration=crops, workdir=tmp_path,
                           int8=Int8Options(method="entropy", exclude_last=True))  # fmt: skip
    assert backend.name == "onnxruntime-int8" and (tmp_path / "onnxruntime-int8.onnx").is_file()
    assert backend(crops[0]).shape == (2, 17, 16, 8)
    with pytest.raises(Exception, match="calibration"):
        make_backend("onnxruntime-int8", model, input_size=(32, 64))
