"""ONNX export checks itself in ONNX Runtime; the fast backends agree with the eager baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA, requires_capability
from helpers import REDUCED, W32, backend_variants, benchmark_script
from helpers import fill_module as _fill
from hrpose.bench import keypoints_input_px, markdown_table, real_crops, run_bench
from hrpose.config import load_config
from hrpose.export import ExportError, export_onnx, fold_batchnorm
from hrpose.models import build_model
from hrpose.runtime import make_backend
from hrpose.runtime.onnxruntime_backend import OnnxRuntimeBackend
from hrpose.runtime.openvino_backend import OpenVinoBackend
from hrpose.runtime.quantize import conv_node_names, quantize_int8
from hrpose.runtime.torch_backend import TorchBackend

pytestmark = pytest.mark.portability  # scripts/test.sh runs these again as an AVX2-only CPU

SMALL = (64, 64)  # (w, h): small inputs keep the suite fast; the graph is the full architecture




@pytest.fixture(scope="module")
def hrnet():
    return _fill().fill_(build_model(load_config(W32, REDUCED)), 3).eval()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, hrnet):
    return export_onnx(hrnet, tmp_path_factory.mktemp("onnx") / "m.onnx", SMALL, dynamic_batch=True)


@pytest.fixture(scope="module")
def crops():
    root = DATA / "coco-mini"
    return real_crops(root / "images/train2017", root / "annotations/person_keypoints_train2017.json", SMALL, 16)


def test_real_crops_are_normalised_person_crops(crops):
    assert crops.shape == (16, 3, SMALL[1], SMALL[0]) and crops.dtype == np.float32
    # ImageNet-normalised pixels: roughly zero mean, unit spread, not constant
    assert abs(float(crops.mean())) < 1.0 and 0.3 < float(crops.std()) < 2.0


def test_fold_batchnorm_keeps_outputs(hrnet):
    x = torch.randn(2, 3, SMALL[1], SMALL[0])
    folded = fold_batchnorm(hrnet)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        ref, got = hrnet(x), folded(x)
    assert torch.allclose(ref, got, atol=1e-4 * float(ref.abs().max()))


def test_export_onnx_self_checks_and_matches(onnx_model, hrnet, crops):
    report = onnx_model
    assert report.path.is_file() and report.keypoints_equal and report.rel_err < 1e-4
    ort_backend = OnnxRuntimeBackend(report.path)
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[:5])
    got = ort_backend(crops[:5])  # batch 5: the dynamic batch axis works
    assert got.shape == ref.shape == (5, 17, SMALL[1] // 4, SMALL[0] // 4)
    np.testing.assert_allclose(got, ref, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_array_equal(keypoints_input_px(got, SMALL), keypoints_input_px(ref, SMALL))


def test_export_refuses_a_graph_that_disagrees(tmp_path, hrnet, monkeypatch):
    import onnxruntime

    real = onnxruntime.InferenceSession

    class Corrupt(real):  # type: ignore[misc, valid-type]
        def run(self, *a, **k):
            return [o + 1.0 for o in super().run(*a, **k)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", Corrupt)
    (tmp_path / "keep.onnx").write_bytes(b"previous export")
    with pytest.raises(ExportError, match="disagrees"):
        export_onnx(hrnet, tmp_path / "keep.onnx", SMALL)
    assert (tmp_path / "keep.onnx").read_bytes() == b"previous export"  # nothing already written is lost
    assert [p.name for p in tmp_path.iterdir()] == ["keep.onnx"]


def test_torch_fast_backends_agree_with_eager(hrnet, crops):
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[:4])
    fp32 = TorchBackend(hrnet)(crops[:4])
    np.testing.assert_allclose(fp32, ref, atol=1e-4 * np.abs(ref).max())


@requires_capability("bf16")
def test_torch_bf16_backend_is_close_to_eager(hrnet, crops):
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[:4])
    bf16 = TorchBackend(hrnet, dtype=torch.bfloat16)(crops[:4])
    assert bf16.dtype == np.float32 and bf16.shape == ref.shape
    # bf16 has an 8-bit mantissa: heatmaps agree to a few percent of their range
    assert np.abs(bf16 - ref).max() < 0.1 * np.abs(ref).max()


def test_torch_backend_variants_agree_and_leave_the_model_alone(hrnet, crops):
    before = {k: v.clone() for k, v in hrnet.state_dict().items()}
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[:3])
    scale = np.abs(ref).max()
    for name in ("torch", "torch-fast"):  # exact: fp32 within 1e-4 of the heatmap range
        b = make_backend(name, hrnet)
        np.testing.assert_allclose(b(crops[:3]), ref, atol=1e-4 * scale, err_msg=name)
        eager = make_backend("torch", hrnet, fold_bn=False)
        np.testing.assert_allclose(b(crops[3:5]), eager(crops[3:5]), atol=1e-4 * scale)  # re-traced
    # the caller's model is untouched: still fp32, NCHW, BatchNorm in place, same weights
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in hrnet.modules())
    for k, v in hrnet.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert hrnet.conv1.weight.is_contiguous()
    with pytest.raises(ValueError, match="unknown backend 'torch-int4'"):
        make_backend("torch-int4", hrnet)
    with pytest.raises(ValueError, match="jit or compile"):
        TorchBackend(hrnet, jit=True, compile=True)


@requires_capability("bf16")
def test_torch_bf16_backend_variants_are_close_and_leave_the_model_alone(hrnet, crops):
    before = {k: v.clone() for k, v in hrnet.state_dict().items()}
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[:3])
    scale = np.abs(ref).max()
    bf16 = make_backend("torch-bf16", hrnet)
    autocast = backend_variants().make_variant("torch-bf16-autocast", hrnet)
    for b in (bf16, autocast):
        got = b(torch.from_numpy(crops[:3]))  # tensors are accepted too
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert 0 < np.abs(got - ref).max() < 0.1 * scale  # reduced precision, but close
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    # the heatmap head stays fp32 (bf16 heatmaps would round nearby values at the peak into ties)
    head = [m for m in bf16.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert head.weight.dtype == torch.float32 and head.out_channels == 17
    plain = backend_variants().make_variant("torch-bf16-bf16head", hrnet)
    assert [m for m in plain.model.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight.dtype == torch.bfloat16
    # the caller's model is untouched: still fp32, NCHW, BatchNorm in place, same weights
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in hrnet.modules())
    for k, v in hrnet.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert hrnet.conv1.weight.is_contiguous()
    fused = backend_variants().make_variant("torch-bf16-onednn", hrnet)
    assert fused.name == "torch-bf16-onednn" and fused.onednn_fusion
    assert fused(crops[:3]).shape == ref.shape
    assert not torch.jit.onednn_fusion_enabled()  # switched on for tracing only, not left on for the process


def test_int8_quantization_runs_and_stays_close(tmp_path, onnx_model, hrnet, crops):
    fp32 = onnx_model.path
    q = quantize_int8(fp32, tmp_path / "m_int8.onnx", [crops[:8]])
    ref = make_backend("torch", hrnet, fold_bn=False)(crops[8:12])
    got = OnnxRuntimeBackend(q)(crops[8:12])
    assert got.shape == ref.shape
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(fp32, tmp_path / "x.onnx", [])
    with pytest.raises(ValueError, match="calibration method"):
        quantize_int8(fp32, tmp_path / "x.onnx", [crops[:2]], method="mse")


def test_int8_can_keep_the_first_and_last_conv_in_fp32(tmp_path, onnx_model, crops):
    import onnx

    convs = conv_node_names(onnx_model.path)
    q = quantize_int8(onnx_model.path, tmp_path / "keep.onnx", [crops[:4]], exclude_first=True, exclude_last=True)
    graph = onnx.load(str(q)).graph
    # a quantized conv reads its weight through a DequantizeLinear node; a kept one reads the fp32 initializer
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    weight_of = {n.name: n.input[1] for n in graph.node if n.op_type == "Conv"}
    assert weight_of[convs[0]] not in dq_outputs and weight_of[convs[-1]] not in dq_outputs
    assert all(weight_of[c] in dq_outputs for c in convs[1:-1])
    assert not (tmp_path / "keep.pre.onnx").exists()  # the pre-processed temp file is cleaned up


def test_pose_estimator_torch_backends(tmp_path, hrnet):
    from hrpose.inference import PoseEstimator
    from hrpose.inference.detectors import WholeImageDetector
    from hrpose.models.weights import save_weights

    weights = save_weights(hrnet, tmp_path / "w.pth")
    cfg = load_config(W32, REDUCED)
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    box = [[5, 5, 70, 100, 0.9]]
    ref = PoseEstimator.from_model(hrnet, cfg, detector=WholeImageDetector())
    assert ref.backend.model is hrnet and not ref.backend.jit  # a caller's model runs as it is (not a folded copy)
    want = ref(image, boxes=box)[0].keypoints
    for name in ("torch", "torch-fast"):
        est = PoseEstimator.from_config(cfg, weights, device="cpu", backend=name, detector=WholeImageDetector())
        got = est(image, boxes=box)[0].keypoints
        np.testing.assert_allclose(got[:, 2], want[:, 2], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-2, err_msg=name)
    folded = PoseEstimator.from_config(cfg, weights, device="cpu", backend="torch", detector=WholeImageDetector())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.backend.model.modules())
    # the default, "auto": on a CPU the checkpoint exported and run in OpenVINO (the openvino extra that
    # scripts/setup.sh installs), same keypoints
    auto = PoseEstimator.from_config(cfg, weights, device="cpu", detector=WholeImageDetector())
    assert isinstance(auto.backend, OpenVinoBackend) and auto.device.type == "cpu"
    got = auto(image, boxes=box)[0].keypoints
    np.testing.assert_allclose(got[:, 2], want[:, 2], atol=1e-4)
    np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-2)
    # a model the caller passes runs as given under "auto" too
    assert PoseEstimator.from_model(hrnet, cfg, detector=WholeImageDetector()).backend.model is hrnet
    with pytest.raises(ValueError, match="torch-fast"):
        PoseEstimator.from_config(cfg, weights, backend="torch-int4", detector=WholeImageDetector())


@requires_capability("bf16")
def test_pose_estimator_bf16_backend(tmp_path, hrnet):
    from hrpose.inference import PoseEstimator
    from hrpose.inference.detectors import WholeImageDetector
    from hrpose.models.weights import save_weights

    weights = save_weights(hrnet, tmp_path / "w.pth")
    cfg = load_config(W32, REDUCED)
    image = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)
    box = [[5, 5, 70, 100, 0.9]]
    want = PoseEstimator.from_model(hrnet, cfg, detector=WholeImageDetector())(image, boxes=box)[0].keypoints
    bf16 = PoseEstimator.from_config(cfg, weights, device="cpu", backend="torch-bf16", detector=WholeImageDetector())
    assert bf16.backend.name == "torch-bf16"
    assert bf16(image, boxes=box)[0].keypoints.shape == want.shape


def test_gpu_options_refuse_a_cpu_model_clearly(hrnet):
    with pytest.raises(ValueError, match="cuda_graph needs a model on a CUDA device.*cpu"):
        TorchBackend(hrnet, cuda_graph=True)
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        TorchBackend(hrnet, dtype=torch.float16)
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        make_backend("torch-fp16", hrnet)
    with pytest.raises(ValueError, match="not with jit or compile"):
        TorchBackend(hrnet, cuda_graph=True, jit=True)


def test_run_bench_reports_every_backend(tmp_path, hrnet, crops):
    rows = run_bench(hrnet, SMALL, crops[:8], batch_sizes=(1, 2), iters=1, warmup=0,
                     backends=("torch", "onnxruntime"), workdir=tmp_path, log=lambda s: None)
    assert [r.backend for r in rows] == ["eager-fp32 (baseline)", "torch", "onnxruntime"]
    assert rows[0].speedup == {1: 1.0, 2: 1.0} and rows[0].mean_dev_px == 0.0
    for r in rows:
        assert all(v > 0 for v in r.ms_per_crop.values()) and 0.99 <= r.within_2px <= 1.0
    table = markdown_table(rows, (1, 2))
    assert table.count("\n") == 1 + len(rows) and "| onnxruntime |" in table
    with pytest.raises(ValueError, match="unknown backend"):
        run_bench(hrnet, SMALL, crops[:2], backends=("tensorrt",), workdir=tmp_path, log=lambda s: None)


def test_product_backends_are_the_registry_and_the_variants_live_in_benchmarks(hrnet):
    """The runtime's registry is the one vocabulary: the torch configurations are its torch names (each with a
    CPU and a CUDA side); `hrpose bench`'s default rows are registry names; the exploratory variants are only in
    benchmarks/backend_variants.py."""
    import inspect

    from hrpose.bench import DEFAULT_BACKENDS, GPU_DEFAULT_BACKENDS, backend_names, default_backends
    from hrpose.runtime import REGISTRY
    from hrpose.runtime.torch_backend import TORCH_CONFIGS

    variants = backend_variants()
    assert set(TORCH_CONFIGS) == {"torch-fast", "torch-bf16", "torch-fp16", "torch-compile"} < set(REGISTRY)
    for row in (*DEFAULT_BACKENDS, *GPU_DEFAULT_BACKENDS):
        assert row == "auto" or row in REGISTRY, row
    assert "openvino-int8" in DEFAULT_BACKENDS and not any(r.startswith("onnxruntime-int8") for r in DEFAULT_BACKENDS)
    assert default_backends("cpu") == DEFAULT_BACKENDS and default_backends("cuda") == GPU_DEFAULT_BACKENDS
    assert not set(variants.VARIANTS) & set(REGISTRY) and not set(variants.VARIANTS) & set(backend_names())
    assert set(variants.CPU_ROWS) | set(variants.GPU_ROWS) <= set(variants.VARIANTS)
    options = set(inspect.signature(TorchBackend).parameters)
    for name, kw in {**{f"{n}/{i}": side for n, sides in TORCH_CONFIGS.items() for i, side in enumerate(sides)},
                     **variants.VARIANTS}.items():  # fmt: skip
        assert set(kw) <= options, name  # every configuration is TorchBackend options
    jit_onednn = variants.make_variant("torch-fp32-onednn", hrnet)  # fp32 TorchScript + oneDNN Graph: any CPU
    assert jit_onednn.name == "torch-fp32-onednn" and jit_onednn.jit and jit_onednn.onednn_fusion
    for name in ("torch-bf16-onednn", "torch-fp32-fused", "torch-bf16-autocast"):
        with pytest.raises(ValueError, match="unknown backend"):
            make_backend(name, hrnet)
    with pytest.raises(ValueError, match="unknown backend variant"):
        variants.make_variant("torch-fast", hrnet)


def test_run_bench_takes_extra_named_backends(tmp_path, hrnet, crops):
    """`run_bench(extra_backends={name: factory})`: the way benchmarks/backend_variants.py adds its variants;
    a name of neither kind is refused, and an extra may not take a built-in name."""
    extra = backend_variants().factories(["torch-fp32-fused"])
    rows = run_bench(hrnet, SMALL, crops[:4], batch_sizes=(1,), iters=1, warmup=0, workdir=tmp_path,
                     backends=("torch", "torch-fp32-fused"), extra_backends=extra, log=lambda s: None)  # fmt: skip
    assert [r.backend for r in rows] == ["eager-fp32 (baseline)", "torch", "torch-fp32-fused"]
    assert rows[2].mean_dev_px == 0.0 and rows[2].max_abs_heatmap_err < 1e-3  # fp32 post-op fusion: exact
    with pytest.raises(ValueError, match="unknown backend 'torch-fp32-fused'"):
        run_bench(hrnet, SMALL, crops[:2], backends=("torch-fp32-fused",), workdir=tmp_path, log=lambda s: None)
    with pytest.raises(ValueError, match="may not reuse a built-in backend name: torch"):
        run_bench(hrnet, SMALL, crops[:2], backends=("torch",), workdir=tmp_path, log=lambda s: None,
                  extra_backends={"torch": extra["torch-fp32-fused"]})  # fmt: skip


def test_bench_runs_auto_and_openvino_and_leaves_out_what_the_cpu_cannot_run(tmp_path, hrnet, crops, monkeypatch):
    """`auto` is a row of its own (what --backend auto runs here); OpenVINO runs the same exported graph; on a
    CPU without bf16 (this machine's probe capped to AVX2) the default set leaves bf16 out with the reason, and a
    bf16 backend asked for by name refuses."""
    import dataclasses

    import hrpose.runtime.capabilities as capabilities
    from hrpose.commands.bench import auto_verdict
    from hrpose.errors import BackendUnavailableError

    real = capabilities.probe()
    avx2 = dataclasses.replace(real, features=frozenset(capabilities.capped_features(set(real.hw_features), "AVX2",
                                                                                     None)))  # fmt: skip
    monkeypatch.setattr(capabilities, "probe", lambda: avx2)
    skipped: dict[str, str] = {}
    rows = run_bench(hrnet, SMALL, crops[:4], batch_sizes=(1,), iters=1, warmup=0, workdir=tmp_path,
                     backends=("auto", "openvino", "onnxruntime", "torch-bf16"), skipped=skipped,
                     log=lambda s: None)  # fmt: skip
    assert [r.backend for r in rows] == ["eager-fp32 (baseline)", "auto = openvino", "openvino", "onnxruntime"]
    assert list(skipped) == ["torch-bf16"] and "no bf16 arithmetic" in skipped["torch-bf16"]
    for r in rows[1:]:  # fp32 on the exported graph: the baseline's keypoints, heatmaps to float rounding
        assert r.mean_dev_px == 0.0 and r.max_abs_heatmap_err < 1e-3, r.backend
    verdict = auto_verdict(rows, (1,))
    assert "`auto` runs `openvino` here: **" in verdict and "target" not in verdict  # measures, prints no target
    with pytest.raises(BackendUnavailableError, match="torch-bf16.*AVX512_BF16"):
        run_bench(hrnet, SMALL, crops[:2], backends=("torch-bf16",), workdir=tmp_path, log=lambda s: None)


def test_lab_compute_ceiling_bounds_direct_convolution_and_judges_the_target(monkeypatch):
    """benchmarks/ceiling.py (the lab, not the product): a model's FLOPs at the fastest measured convolution rate
    is the least time any backend that does every multiplication can take; its lines say how far `auto` got and
    whether the project's target was met."""
    import dataclasses

    import hrpose.runtime.capabilities as capabilities
    from hrpose.bench import BASELINE, BenchRow

    lab = benchmark_script("ceiling")  # the lab's lines, outside the product
    ComputeCeiling, conv_rate_gflops = lab.ComputeCeiling, lab.conv_rate_gflops  # noqa: N806

    def auto_verdict(rows: list, bs: tuple[int, ...], _device: str, ceiling=None) -> str:  # noqa: ANN001
        return lab.target_line(rows, bs) + ("" if ceiling is None else lab.ceiling_lines(rows, bs, ceiling, BASELINE))

    ceiling = ComputeCeiling(gflop_per_crop=15.3, conv_gflops=153.0, conv_source="OpenVINO")
    assert ceiling.floor_ms == pytest.approx(100.0) and ceiling.max_speedup(180.0) == pytest.approx(1.8)
    assert ceiling.rate(102.0) == pytest.approx(150.0)
    real = capabilities.probe()
    avx2 = dataclasses.replace(real, features=frozenset(capabilities.capped_features(set(real.hw_features), "AVX2",
                                                                                     None)))  # fmt: skip
    monkeypatch.setattr(capabilities, "probe", lambda: avx2)

    def rows(base_ms: float, auto_ms: float) -> list[BenchRow]:
        out = [BenchRow(BASELINE), BenchRow("auto = openvino")]
        for r, ms in zip(out, (base_ms, auto_ms)):
            r.ms_per_crop, r.crops_per_s, r.speedup = {1: ms}, {1: 1000 / ms}, {1: base_ms / ms}
        return out

    text = auto_verdict(rows(190.0, 102.0), (1,), "cpu", ceiling)
    assert ">= 1.8x the baseline at batch 1: met." in text and "at least 100.0 ms per crop" in text
    assert "at most **1.90x** this run's baseline" in text and "153 GFLOP/s (OpenVINO)" in text
    assert "`auto` ran at 150 GFLOP/s, 98% of that rate" in text and "above this ceiling" not in text
    text = auto_verdict(rows(170.0, 102.0), (1,), "cpu", ceiling)  # a fast baseline: 1.8x needs < 94.4 ms
    assert "not met" in text and "at most **1.70x**" in text
    assert "Compute ceiling" not in auto_verdict(rows(170.0, 102.0), (1,), "cpu")  # none measured, none claimed
    text = auto_verdict(rows(190.0, 95.0), (1,), "cpu", ceiling)  # auto faster than the measured convolution
    assert "105% of that rate (over 100%: the machine ran slower" in text and "this ceiling is low" in text
    rate, source = conv_rate_gflops(((8, 8, 8),), reps=2)  # a real measurement, on a tiny shape
    assert rate > 0 and np.isfinite(rate) and source in ("torch", "OpenVINO")
    x, w = torch.randn(1, 8, 6, 5), torch.randn(8, 8, 3, 3)
    run_ov = lab._openvino_conv(x, w, 1)  # OpenVINO is installed here (scripts/setup.sh)
    assert run_ov is not None  # ... and times the same convolution as torch
    np.testing.assert_allclose(np.asarray(next(iter(run_ov().values()))), torch.nn.functional.conv2d(x, w, padding=1),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    monkeypatch.setattr(lab, "_openvino_conv", lambda *a: None)  # without OpenVINO: torch's rate alone
    assert conv_rate_gflops(((8, 8, 8),), reps=1)[1] == "torch"


def test_export_cli_writes_checked_model(tmp_path, hrnet, capsys):
    from hrpose.cli import main
    from hrpose.models.weights import save_weights

    weights = tmp_path / "w.pth"
    save_weights(hrnet, weights)
    out = tmp_path / "w.onnx"
    args = ["export", "--cfg", str(W32), "--weights", str(weights), "--out", str(out), "--dynamic-batch",
            "--int8-calib", str(DATA / "coco-mini"), "--calib-crops", "4", "--int8-keep-last", *REDUCED]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and "checked in ONNX Runtime" in printed and "calibrated (minmax) on 4 real crops" in printed
    q = tmp_path / "w_int8.onnx"
    assert sorted(conv_node_names(q)) == sorted(conv_node_names(out))  # same convs, quantized around
    assert OnnxRuntimeBackend(q)(np.zeros((3, 3, SMALL[1], SMALL[0]), np.float32)).shape == (3, 17, 16, 16)


def test_time_interleaved_takes_turns():
    from hrpose.bench import time_interleaved

    order: list[str] = []
    fns = {name: (lambda b, name=name: order.append(name) or b) for name in ("a", "b")}
    times = time_interleaved(fns, np.zeros(1), iters=4, warmup=1, block=2)
    assert {k: len(v) for k, v in times.items()} == {"a": 4, "b": 4}
    # warmup, then rounds of one untimed + `block` timed calls each
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3


def test_write_section_replaces_its_own_block(tmp_path):
    from hrpose.commands.bench import write_section

    md = tmp_path / "b.md"
    md.write_text("# Benchmarks\n\nintro\n")
    write_section(md, "w32:random", "table 1")
    write_section(md, "w16:best.pth", "other")
    write_section(md, "w32:random", "table 2")
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n") and "table 1" not in text
    assert text.count("<!-- bench:w32:random -->") == 1 and text.index("table 2") < text.index("other")


def test_bench_cli_json_and_markdown(tmp_path, hrnet, capsys):
    import json

    from hrpose.cli import main
    from hrpose.models.weights import save_weights

    weights = save_weights(hrnet, tmp_path / "w.pth")
    md = tmp_path / "bench.md"
    args = ["bench", "--cfg", str(W32), "--weights", str(weights), "--num-crops", "12", "--calib-crops", "4",
            "--iters", "1", "--batch-sizes", "1", "2", "--threads", "2", "--backends", "torch-fast",
            "onnxruntime-int8-keeplast", "--json", "--write", str(md), "--crops-root", str(DATA / "coco-mini"),
            *REDUCED]  # fmt: skip
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration_crops"] == 4 and out["deviation_crops"] == 8 and "no GPU" in out["machine"]
    assert "ceiling" not in out  # the compute ceiling is the lab's (benchmarks/ceiling.py), not the product's
    rows = {r["backend"]: r for r in out["rows"]}
    # an old int8 name is the registry's onnxruntime-int8 with its options (a deprecation line on stderr)
    int8 = "onnxruntime-int8 (fp32 last conv)"
    assert list(rows) == ["eager-fp32 (baseline)", "torch-fast", int8]
    assert rows["torch-fast"]["mean_dev_px"] == 0.0 and rows["torch-fast"]["max_abs_heatmap_err"] < 1e-3
    assert set(rows[int8]["ms_per_crop"]) == {"1", "2"}
    # coco-mini annotates joints, so the deviation over labeled joints is reported (exact backend: 0)
    assert rows["torch-fast"]["mean_dev_labeled_px"] == 0.0 and rows["torch-fast"]["within_2px_labeled"] == 1.0
    text = md.read_text()
    assert "mean dev, labeled (px)" in text and "target" not in text
    assert f"| {int8} |" in text and "Command: `hrpose bench" in text and "--weights" in text
    assert main([*args[:5], "--num-crops", "3", "--calib-crops", "4", *REDUCED]) == 2
    assert "calib-crops" in capsys.readouterr().err


def test_backend_variants_script_is_bench_with_the_variants(tmp_path, hrnet, capsys):
    """`python benchmarks/backend_variants.py ...`: `hrpose bench`'s options and error path, the variants
    accepted as --backends, and the record written under the script's own name."""
    import json

    from hrpose.models.weights import save_weights

    weights = save_weights(hrnet, tmp_path / "w.pth")
    md = tmp_path / "bench.md"
    args = ["--cfg", str(W32), "--weights", str(weights), "--num-crops", "6", "--calib-crops", "2", "--iters", "1",
            "--batch-sizes", "1", "--backends", "torch-fast", "torch-fp32-fused", "--json", "--write", str(md),
            "--crops-root", str(DATA / "coco-mini"), *REDUCED]  # fmt: skip
    assert backend_variants().main(args) == 0
    rows = {r["backend"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert list(rows) == ["eager-fp32 (baseline)", "torch-fast", "torch-fp32-fused"]
    assert rows["torch-fp32-fused"]["mean_dev_px"] == 0.0
    assert "Command: `python benchmarks/backend_variants.py --cfg" in md.read_text()
    assert backend_variants().main([*args[:2], "--num-crops", "3", "--calib-crops", "4", *REDUCED]) == 2
    assert "calib-crops" in capsys.readouterr().err


@pytest.mark.slow
def test_pose_estimator_torch_compile_backend(tmp_path, hrnet, monkeypatch):
    """`--backend torch-compile`: torch.compile (inductor) of the folded fp32 model, same keypoints as "torch"."""
    import shutil

    from hrpose.inference import PoseEstimator
    from hrpose.inference.detectors import WholeImageDetector
    from hrpose.models.weights import save_weights

    # a private inductor cache: kernels cached by a run under another ATEN_CPU_CAPABILITY (e.g. the AVX2 portability
    # run after a native one on an AVX-512 machine) were reused and gave wrong heatmaps (torch 2.13)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    weights = save_weights(hrnet, tmp_path / "w.pth")
    cfg = load_config(W32, REDUCED)
    image = (np.random.default_rng(1).random((100, 80, 3)) * 255).astype(np.uint8)
    box = [[5, 5, 60, 90, 0.9]]
    want_est = PoseEstimator.from_config(cfg, weights, device="cpu", detector=WholeImageDetector())
    want = want_est(image, boxes=box)[0].keypoints
    est = PoseEstimator.from_config(cfg, weights, device="cpu", backend="torch-compile", detector=WholeImageDetector())
    assert est.backend.name == "torch-compile"
    if shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"):
        got = est(image, boxes=box)[0].keypoints
        np.testing.assert_allclose(got[:, 2], want[:, 2], atol=1e-4)
        np.testing.assert_allclose(got[:, :2], want[:, :2], atol=1e-2)
    else:  # inductor needs a C++ compiler on CPUs: the error says so and names the way out
        with pytest.raises(RuntimeError, match="C\\+\\+ compiler.*torch-fast"):
            est(image, boxes=box)


def test_compile_failure_is_a_clear_error(hrnet, crops, monkeypatch):
    def broken_compile(model, **kwargs):
        def run(x):
            raise OSError("cc1plus: not found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    backend = make_backend("torch-compile", hrnet)
    with pytest.raises(RuntimeError, match="torch-compile: torch.compile failed.*cc1plus.*torch-fast"):
        backend(crops[:1])


def test_fewer_multiply_benchmark_computes_the_same_convolution_and_finds_hrnets_layers():
    """benchmarks/fewer_multiply.py (the docs' evidence that Winograd loses here): its Winograd F(2x2, 3x3) in graph
    operations is the same convolution (to float rounding, any C -> K, with bias), and the layers it weighs are
    HRNet-w32's stride-1 3x3 C -> C convolutions: 4 in layer1's bottlenecks at 64 x 48, then 2 per basic block, 4
    blocks per branch, in stage 2 (1 module, 2 branches), stage 3 (4 modules, 3 branches), stage 4 (3 modules, 4)."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("fewer_multiply", ROOT / "benchmarks" / "fewer_multiply.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 7, 3, padding=1)
    x = torch.randn(2, 5, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(bench.WinogradConv(conv)(x), conv(x), rtol=1e-5, atol=1e-5)
    shapes = bench.basic_block_shapes(str(W32))
    per_branch = 4 * 2  # blocks x convs
    expected = {(64, 64, 48): 4, (32, 64, 48): (1 + 4 + 3) * per_branch, (64, 32, 24): (1 + 4 + 3) * per_branch,
                (128, 16, 12): (4 + 3) * per_branch, (256, 8, 6): 3 * per_branch}  # fmt: skip
    assert dict(shapes) == expected and sum(shapes.values()) == 212
