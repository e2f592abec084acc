"""The capability probe, `--backend auto` and the refusals: what a machine cannot run fast and correctly is
refused with one line, never crashed into or emulated; `hrpose info` prints what the probe found."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import hrpose.runtime.capabilities as capabilities
from conftest import DATA, ROOT
from helpers import backend_variants
from hrpose.cli import main
from hrpose.config import load_config
from hrpose.errors import UserError
from hrpose.models import build_model
from hrpose.runtime import BackendUnavailableError, auto_backend, make_backend
from hrpose.runtime.capabilities import capped_features, probe, read_cpuinfo
from hrpose.runtime.torch_backend import TORCH_CONFIGS, TorchBackend, named_torch_backend

pytestmark = pytest.mark.portability  # scripts/test.sh runs these again as an AVX2-only CPU

SAPPHIRE_RAPIDS = {"sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni",
                   "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile"}  # fmt: skip
SMALL_CFG = ROOT / "experiments/synthetic/w16_128x96_synth.yaml"


@pytest.fixture()
def as_avx2_cpu(monkeypatch):
    """This machine's probe, capped to AVX2 (what ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 says)."""
    real = probe()
    capped = dataclasses.replace(
        real, features=frozenset(capped_features(set(real.hw_features), "AVX2", "avx2")), onednn_max_isa="AVX2"
    )
    monkeypatch.setattr(capabilities, "probe", lambda: capped)
    return capped


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return build_model(load_config(SMALL_CFG), is_train=False).eval()


def test_caps_make_a_newer_cpu_the_older_one():
    avx2 = capped_features(SAPPHIRE_RAPIDS, "AVX2", None)
    assert {"avx2", "fma"} <= avx2 and not avx2 & {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}
    assert capped_features(SAPPHIRE_RAPIDS, None, "avx2") == avx2  # ATen's cap alone does the same
    bf16 = capped_features(SAPPHIRE_RAPIDS, "avx512_core_bf16", None)  # case does not matter
    assert "avx512_bf16" in bf16 and "avx512_vnni" in bf16 and not bf16 & {"amx_bf16", "amx_int8", "avx512_fp16"}
    assert capped_features(SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", None) >= {"amx_bf16", "amx_int8"}
    assert capped_features(SAPPHIRE_RAPIDS, "ALL", "no-such-level") == SAPPHIRE_RAPIDS  # unknown values cap nothing
    assert capped_features({"asimd", "bf16"}, "AVX2", "avx2") == {"asimd", "bf16"}  # ARM flags are not x86 ISA


def test_read_cpuinfo_reads_a_real_file(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text("processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 fma avx512f\n\n"
                 "processor\t: 1\nmodel name\t: Test CPU 9000\nflags\t\t: fpu\n")  # fmt: skip
    assert read_cpuinfo(f) == ("Test CPU 9000", {"fpu", "avx2", "fma", "avx512f"})
    assert read_cpuinfo(tmp_path / "missing") == ("", set())


def test_probe_reports_this_machine():
    caps = probe()
    assert caps.aten_capability == torch.backends.cpu.get_cpu_capability()
    assert caps.onednn == torch.backends.mkldnn.is_available()
    flags = set()
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = set(line.split(":", 1)[1].split())
                break
        for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16"):
            assert (f in caps.hw_features) == (f in flags), f
    if not (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("ATEN_CPU_CAPABILITY")):
        assert caps.features == caps.hw_features and not caps.capped
    assert caps.line().startswith(caps.cpu_name or caps.arch)


def test_an_emulated_avx2_process_is_treated_as_an_avx2_cpu():
    """Process level: the caps are read by oneDNN and ATen at start-up, so a fresh process is the real test."""
    code = (
        "import json; from hrpose.runtime.capabilities import probe; c = probe(); "
        "from hrpose.runtime.fusion import pointwise_fusion_available as f; import torch; "
        "print(json.dumps({'features': sorted(c.features), 'aten': c.aten_capability, 'bf16': c.bf16_fast, "
        "'fusion_bf16': f(torch.bfloat16), 'fusion_fp32': f(torch.float32), 'line': c.line()}))"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert not set(got["features"]) & {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni"}
    assert got["aten"] in ("AVX2", "DEFAULT")  # a CPU without AVX2 stays below the cap
    assert got["bf16"] is False and got["fusion_bf16"] is False
    assert got["fusion_fp32"] is (probe().onednn and probe().fusion_fp32)
    assert "capped by ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" in got["line"]


def test_bf16_refuses_in_one_line_on_a_cpu_without_bf16(as_avx2_cpu, small_model):
    from hrpose.runtime.fusion import fuse_pointwise, pointwise_fusion_available

    for make in (lambda: make_backend("torch-bf16", small_model),
                 lambda: named_torch_backend("torch-bf16", small_model, TORCH_CONFIGS["torch-bf16"][1]),  # CUDA's
                 lambda: backend_variants().make_variant("torch-bf16-jit", small_model),
                 lambda: backend_variants().make_variant("torch-bf16-autocast", small_model),
                 lambda: TorchBackend(small_model, dtype=torch.bfloat16)):  # fmt: skip
        with pytest.raises(BackendUnavailableError) as e:
            make()
        msg = str(e.value)
        assert isinstance(e.value, UserError) and "\n" not in msg
        assert "AVX512_BF16" in msg and "slower than fp32" in msg and "--backend auto" in msg
    assert not pointwise_fusion_available(torch.bfloat16)
    with pytest.raises(BackendUnavailableError, match="bf16"):
        fuse_pointwise(small_model, torch.zeros(1, 3, 128, 96, dtype=torch.bfloat16))
    # fp32 stays available: the fast exact backends do not need bf16
    x = np.zeros((1, 3, 128, 96), np.float32)
    assert make_backend("torch-fast", small_model)(x).shape == (1, 17, 32, 24)
    with pytest.raises(BackendUnavailableError, match="no bf16 arithmetic"):
        auto_backend("bf16", device="cpu")


@pytest.mark.parametrize(
    "precision, device, caps_change, weights, want",
    [
        ("fp32", "cpu", {}, None, "openvino"),  # the openvino extra is installed by scripts/setup.sh
        ("fp32", "cpu", {}, "m.onnx", "onnxruntime"),
        ("int8", "cpu", {}, "m_int8.xml", "openvino-int8"),  # NNCF/OpenVINO (the int8 extra, scripts/setup.sh)
        ("int8", "cpu", {}, "w.pth", "openvino-int8"),  # quantised on first use from --int8-calib
        ("bf16", "cpu", {"features": frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})}, None, "torch-bf16"),
        ("fp32", "cuda", {"cuda_device": "GPU", "cuda_fp16": True}, None, "torch-fast"),
        ("fp16", "cuda", {"cuda_device": "GPU", "cuda_fp16": True}, None, "torch-fp16"),
        ("bf16", "cuda", {"cuda_device": "GPU", "cuda_bf16": True}, None, "torch-bf16"),
        ("fp32", "mps", {}, None, "torch"),
    ],
)
def test_auto_backend_rule(monkeypatch, precision, device, caps_change, weights, want):
    monkeypatch.setattr(capabilities, "fusion_runs", lambda dtype_name="float32": True)
    caps = dataclasses.replace(probe(), arch="x86_64", onednn=True, **caps_change)
    assert auto_backend(precision, device=device, caps=caps, weights=weights) == want


@pytest.mark.parametrize(
    "precision, device, caps_change, weights, match",
    [
        ("fp16", "cpu", {}, None, "slower than fp32"),
        ("int8", "cpu", {}, "m_int8.onnx", "are retired"),
        ("int8", "cuda", {"cuda_device": "GPU"}, "m.xml", "runs on the CPU"),
        ("bf16", "cpu", {"features": frozenset({"avx2", "fma"})}, None, "AVX512_BF16"),
        ("bf16", "cuda", {"cuda_device": "GPU", "cuda_bf16": False}, None, "compute capability >= 8.0"),
        ("bf16", "cpu", {}, "m.onnx", "runs as exported"),
        ("fp64", "cpu", {}, None, "expected one of"),
    ],
)
def test_auto_backend_refuses_what_this_machine_cannot_run(precision, device, caps_change, weights, match):
    caps = dataclasses.replace(probe(), arch="x86_64", **caps_change)
    with pytest.raises(BackendUnavailableError, match=match):
        auto_backend(precision, device=device, caps=caps, weights=weights)
    if precision != "fp64":  # an unknown precision is a mistake, not a machine's limit: it always raises
        said = auto_backend(precision, device=device, caps=caps, weights=weights, raise_missing=False)
        assert said.startswith("unavailable: ") and match in said


def test_auto_falls_back_to_onnxruntime_then_torch(monkeypatch):
    import hrpose.runtime.policy

    monkeypatch.setattr(hrpose.runtime.policy, "openvino_available", lambda: False)
    assert auto_backend("fp32", device="cpu") == "onnxruntime"
    monkeypatch.setattr(hrpose.runtime.policy, "onnxruntime_available", lambda: False)
    assert auto_backend("fp32", device="cpu") == "torch-fast"


def test_auto_openvino_estimator_matches_the_torch_model(tmp_path):
    """PoseEstimator.from_config(backend="auto") on a CPU with the openvino extra: the checkpoint exported and run in
    OpenVINO, keypoints equal to the PyTorch model's."""
    from hrpose.config import load_config
    from hrpose.inference.detectors import WholeImageDetector
    from hrpose.inference.estimator import PoseEstimator
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights
    from hrpose.runtime.openvino_backend import OpenVinoBackend

    model = build_model(load_config(SMALL_CFG))
    weights = save_weights(model, tmp_path / "w.safetensors")
    image = next((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))
    auto = PoseEstimator.from_config(str(SMALL_CFG), str(weights), device="cpu", detector=WholeImageDetector())
    ref = PoseEstimator.from_config(str(SMALL_CFG), str(weights), device="cpu", backend="torch",
                                    detector=WholeImageDetector())
    assert isinstance(auto.backend, OpenVinoBackend)
    got, want = auto(str(image)), ref(str(image))
    assert len(got) == len(want) == 1
    np.testing.assert_allclose(got[0].keypoints[:, :2], want[0].keypoints[:, :2], atol=1e-2)
    np.testing.assert_allclose(got[0].keypoints[:, 2], want[0].keypoints[:, 2], atol=1e-4)


def test_hrpose_info_prints_the_probe_and_versions(capsys, tmp_path, monkeypatch):
    import onnxruntime

    cache = tmp_path / "onnx-cache"
    cache.mkdir()
    (cache / "PoseResNet-64x64-0123.onnx").write_bytes(b"x" * 1500)
    (cache / "PoseResNet-64x64-0123.onnx.json").write_bytes(b"{}")
    monkeypatch.setenv("HRPOSE_ONNX_CACHE", str(cache))

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    caps = probe()
    assert info["aten_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["isa"] == sorted(caps.features) and info["bf16_fast"] == caps.bf16_fast
    assert info["versions"]["torch"] == torch.__version__ and info["versions"]["onnxruntime"] == onnxruntime.__version__
    assert info["versions"]["numpy"] == np.__version__
    assert info["auto_backend"]["fp32"] == "openvino"  # the openvino extra is installed by scripts/setup.sh
    assert info["onnx_cache"] == {"folder": str(cache), "graphs": 1, "bytes": 1502}
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == caps.line() and f"torch {torch.__version__}" in text
    assert f"onnx cache    {cache} (1 graph, 0.0 MB;" in text


def test_predict_refuses_bf16_in_one_line_on_a_cpu_without_it(as_avx2_cpu, tmp_path, capsys):
    image = next((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))
    base = ["predict", "--cfg", str(SMALL_CFG), str(image), "--out", str(tmp_path), "--device", "cpu",
            "--detector", "whole", "--no-draw", "--random-weights"]  # fmt: skip
    for extra in (["--backend", "torch-bf16"], ["--precision", "bf16"], ["--precision", "fp16"],
                  ["--backend", "torch", "--precision", "bf16"]):  # fmt: skip
        assert main([*base, *extra]) == 2, extra
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(err) == 1 and ("--precision" in err[0] or "--backend auto" in err[0]), (extra, err)
    assert not list(tmp_path.glob("*.json"))  # nothing ran
