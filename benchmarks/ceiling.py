"""The compute ceiling: how fast any direct-convolution backend could run a model on this CPU, measured.

Lab code, not product: `hrpose bench` prints measured rows only; `python benchmarks/ceiling.py --cfg FILE` (or
`benchmarks/backend_variants.py`, which adds these lines under its table) compares them with this bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from hrpose.runtime.openvino_backend import keep_sigaltstack, openvino_config


@dataclass(frozen=True)
class ComputeCeiling:
    """How fast any direct-convolution backend could run this model on this CPU, measured.

    gflop_per_crop: the model's floating-point operations per crop (2 per multiply-add, `hrpose summary`'s
    `gflops`); conv_gflops: the fastest rate one large fp32 3x3 convolution reached here (`conv_rate_gflops`).
    A model of many small convolutions cannot beat the rate of a large one, so `floor_ms` bounds every backend
    that does the model's multiplications (fewer-multiply algorithms such as Winograd could go below it)."""

    gflop_per_crop: float
    conv_gflops: float
    conv_source: str = "torch"

    @property
    def floor_ms(self) -> float:
        return 1000.0 * self.gflop_per_crop / self.conv_gflops

    def max_speedup(self, baseline_ms: float) -> float:
        """The highest speedup over a baseline of `baseline_ms` per crop that direct convolution allows."""
        return baseline_ms / self.floor_ms

    def rate(self, ms_per_crop: float) -> float:
        """GFLOP/s of a backend that takes `ms_per_crop`."""
        return self.gflop_per_crop / (ms_per_crop / 1000.0)


#: (channels, height, width) of the large 3x3 convolutions `conv_rate_gflops` times: HRNet-w32 256x192's
#: resolutions, with channel counts large enough for full vector and cache use
CEILING_SHAPES = ((128, 64, 48), (256, 32, 24), (512, 16, 12))


def _openvino_conv(x: torch.Tensor, weight: torch.Tensor, threads: int) -> Callable[[], object] | None:
    """A padded 3x3 convolution of `x` by `weight` compiled in OpenVINO as `OpenVinoBackend` compiles
    (`openvino_config(threads)`), or None where OpenVINO is not installed or has no CPU plugin for this machine."""
    try:
        import openvino as ov
        import openvino.opset13 as ops
    except ImportError:
        return None
    try:
        with keep_sigaltstack():
            param = ops.parameter(list(x.shape), np.float32)
            conv = ops.convolution(param, ops.constant(weight.numpy()), [1, 1], [1, 1], [1, 1], [1, 1])
            config = openvino_config(threads)
            request = ov.Core().compile_model(ov.Model([conv], [param]), "CPU", config).create_infer_request()
    except RuntimeError:
        return None
    arr = x.numpy()

    def run() -> object:
        with keep_sigaltstack():
            return request.infer({0: arr})

    return run


def conv_rate_gflops(shapes: tuple[tuple[int, int, int], ...] = CEILING_SHAPES, reps: int = 10) -> tuple[float, str]:
    """The fastest rate (GFLOP/s) of batch-1 fp32 3x3 convolutions of `shapes` on this CPU, and the runtime that
    reached it: torch (oneDNN) with torch's current thread count, and OpenVINO (as `OpenVinoBackend` runs it,
    same threads) where installed. The best single call of `reps` per shape and runtime, after one warm-up:
    the best, not the median, so that load from elsewhere lowers the ceiling's claim, never raises it."""
    best, source = 0.0, "torch"
    gen = torch.Generator().manual_seed(0)
    for c, h, w in shapes:
        x = torch.randn(1, c, h, w, generator=gen)
        weight = torch.randn(c, c, 3, 3, generator=gen) * 0.01
        flop = 2.0 * c * c * 9 * h * w

        def run_torch(x: torch.Tensor = x, weight: torch.Tensor = weight) -> object:
            return torch.nn.functional.conv2d(x, weight, padding=1)

        runs: dict[str, Callable[[], object]] = {"torch": run_torch}
        run_ov = _openvino_conv(x, weight, torch.get_num_threads())
        if run_ov is not None:
            runs["OpenVINO"] = run_ov
        with torch.inference_mode():
            for name, fn in runs.items():
                fn()
                for _ in range(reps):
                    t0 = time.perf_counter()
                    fn()
                    rate = flop / (time.perf_counter() - t0) / 1e9
                    if rate > best:
                        best, source = rate, name
    return best, source


def ceiling_lines(rows: list, batch_sizes: tuple[int, ...], ceiling: ComputeCeiling, baseline: str) -> str:
    """Lines under a bench table: the most any direct-convolution backend could reach here, and how close `auto`
    came (the acceptance target of the project lives in docs/benchmarks.md, not in the product)."""
    by_name = {r.backend: r for r in rows}
    auto = next((r for r in rows if r.backend.startswith("auto = ")), None)
    base = by_name.get(baseline)
    bs = 1 if 1 in batch_sizes else batch_sizes[0]
    if auto is None or base is None or bs not in base.ms_per_crop:
        return ""
    cap = ceiling.max_speedup(base.ms_per_crop[bs])
    auto_rate = ceiling.rate(auto.ms_per_crop[bs])
    return (
        f"\n\nCompute ceiling, measured in this run: the model does {ceiling.gflop_per_crop:.1f} GFLOP per crop; "
        f"the fastest large fp32 3x3 convolution here ran at {ceiling.conv_gflops:.0f} GFLOP/s "
        f"({ceiling.conv_source}), so a backend that does every multiplication needs at least "
        f"{ceiling.floor_ms:.1f} ms per crop: at most **{cap:.2f}x** this run's baseline. `auto` ran at "
        f"{auto_rate:.0f} GFLOP/s, {100 * auto_rate / ceiling.conv_gflops:.0f}% of that rate"
        + (" (over 100%: the machine ran slower while the convolution was timed than during auto's rounds, so "
           "this ceiling is low)." if auto_rate > ceiling.conv_gflops else ".")
    )  # fmt: skip


def target_line(rows: list, batch_sizes: tuple[int, ...]) -> str:
    """The project's acceptance target for `auto` at batch 1 (docs/benchmarks.md): >= 2.0x the eager baseline on
    AVX-512/AMX CPUs, >= 1.8x on AVX2-only ones; met or not in this run."""
    from hrpose.runtime.capabilities import probe

    auto = next((r for r in rows if r.backend.startswith("auto = ")), None)
    bs = 1 if 1 in batch_sizes else batch_sizes[0]
    if auto is None:
        return ""
    caps = probe()
    target = 2.0 if caps.avx512 or caps.amx else 1.8
    kind = "AVX-512/AMX" if caps.avx512 or caps.amx else "AVX2-only"
    met = "met" if auto.speedup[bs] >= target else "not met"
    return f"\n\nProject target on {kind} CPUs: `auto` >= {target:.1f}x the baseline at batch {bs}: {met}."


def lab_lines(rows: list, model: object, cfg: object) -> str:
    """What the lab adds under `hrpose bench`'s table on a CPU: the target verdict and the compute ceiling."""
    from hrpose.bench import BASELINE
    from hrpose.models.summary import model_summary

    bs = tuple(sorted(next(iter(rows)).ms_per_crop)) if rows else (1,)
    ceiling = ComputeCeiling(float(model_summary(cfg)["gflops"]), *conv_rate_gflops())
    return target_line(rows, bs) + ceiling_lines(rows, bs, ceiling, BASELINE)
