"""`hrpose bench`: the product's inference backends against the official-style eager fp32 baseline, in one run.

The default rows are the backends a user can choose (`DEFAULT_BACKENDS` on a CPU, `GPU_DEFAULT_BACKENDS` on a
GPU); `run_bench(extra_backends={name: factory})` adds more, which is how `benchmarks/backend_variants.py`
measures the exploratory torch variants that are not product backends.

For each backend: ms/crop at batch 1 and 8, crops/s, speedup over the baseline's crops/s at the same batch
size, and the keypoint deviation from the baseline's decoded keypoints in input pixels (mean, share within
2 px, and the mean over joints the baseline is confident about). Deviation is measured on real crops
(coco-mini, or any COCO-layout dataset) that are NOT the int8 calibration crops, decoded by the config's
codec through `hrpose.pipeline.decode` (the decoding of `hrpose test` and `predict`) on the identity crop; it is
only meaningful with trained weights (`--weights`): an untrained model's heatmaps are flat, so
any rounding moves the argmax.

Timing on a shared machine: the backends take turns (a few calls each, round after round), so a burst
of load from elsewhere hits all of them alike, and each reports its median call time.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from . import capabilities
from .backends import (
    CALIBRATION_METHODS,
    TORCH_BACKENDS,
    BackendUnavailableError,
    EagerBackend,
    OnnxRuntimeBackend,
    OpenVinoBackend,
    auto_backend,
    keep_sigaltstack,
    make_torch_backend,
    openvino_config,
    quantize_int8,
)
from .codec import HeatmapCodec
from .export import export_onnx
from .geometry import PIXEL_STD, box_to_center_scale
from .inference.estimator import make_inputs
from .pipeline import TestSettings, decode

BASELINE = "eager-fp32 (baseline)"
# the rows `hrpose bench` shows by default: the product's choices (hrpose.backends.TORCH_BACKENDS, by their
# long names: torch-fp32 = "torch", torch-fp32-jit = torch-fast, ...; ONNX Runtime fp32 and int8, OpenVINO)
# and what `auto` runs; exploratory variants come from `benchmarks/backend_variants.py` (`extra_backends`)
DEFAULT_BACKENDS = (
    "auto",
    "torch-fp32",
    "torch-fp32-jit",
    "torch-bf16",
    "onnxruntime-fp32",
    "openvino-fp32",
    "openvino-int8",
)
GPU_DEFAULT_BACKENDS = ("auto", "torch-fp32", "torch-fp32-graph", "torch-fp16-graph", "torch-bf16-graph",
                        "torch-fp32-compile-graph")  # fmt: skip
#: a named backend `run_bench` builds around the (eval, on-device) model, beside the built-in names
BackendFactory = Callable[[nn.Module], Callable[[np.ndarray], np.ndarray]]
# what `auto` (hrpose.backends.auto_backend, fp32) runs, by its bench name
AUTO_BENCH_NAMES = {"onnxruntime": "onnxruntime-fp32", "torch-fast": "torch-fp32-jit", "torch": "torch-fp32",
                    "openvino": "openvino-fp32"}  # fmt: skip
CUDA_AUTO_BENCH_NAMES = {"torch-fast": "torch-fp32-graph", "torch": "torch-fp32"}


def default_backends(device: str | torch.device = "cpu") -> tuple[str, ...]:
    """The rows `hrpose bench` shows by default on `device` (CUDA: the GPU set)."""
    return GPU_DEFAULT_BACKENDS if torch.device(device).type == "cuda" else DEFAULT_BACKENDS


def auto_bench_name(device: str | torch.device = "cpu") -> str:
    """The bench backend `--backend auto` (fp32) runs on `device` of this machine."""
    device = torch.device(device)
    picked = auto_backend("fp32", device=device)
    return (CUDA_AUTO_BENCH_NAMES if device.type == "cuda" else AUTO_BENCH_NAMES)[picked]
# onnxruntime-int8[-entropy|-percentile][-pertensor][-keepfirst][-keeplast]
_INT8 = re.compile(r"onnxruntime-int8(?:-(entropy|percentile|minmax))?(-pertensor)?(-keepfirst)?(-keeplast)?")


@dataclass
class BenchRow:
    backend: str
    ms_per_crop: dict[int, float] = field(default_factory=dict)
    crops_per_s: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    mean_dev_px: float = 0.0
    within_2px: float = 1.0
    mean_dev_confident_px: float = 0.0
    within_2px_confident: float = 1.0
    max_abs_heatmap_err: float = 0.0
    mean_dev_labeled_px: float = float("nan")
    within_2px_labeled: float = float("nan")


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


def backend_names(extra_backends: Mapping[str, BackendFactory] | None = None) -> list[str]:
    """The backend names `run_bench` accepts (int8 variants follow the `_INT8` pattern), `extra_backends`' last."""
    return ["auto", *TORCH_BACKENDS, "onnxruntime-fp32", "openvino-fp32", "openvino-int8", "onnxruntime-int8",
            "onnxruntime-int8-entropy", "onnxruntime-int8-percentile", "onnxruntime-int8-pertensor",
            "onnxruntime-int8-keeplast", "onnxruntime-int8-keepfirst-keeplast", *(extra_backends or {})]  # fmt: skip


def is_backend_name(name: str, extra_backends: Mapping[str, BackendFactory] | None = None) -> bool:
    """Whether `run_bench` knows `name`: a built-in row (`backend_names()`, int8 variants by `_INT8`) or an extra."""
    return (name in TORCH_BACKENDS or name in ("onnxruntime-fp32", "openvino-fp32", "openvino-int8", "auto")
            or bool(_INT8.fullmatch(name)) or name in (extra_backends or {}))  # fmt: skip


def machine_description() -> str:
    caps = capabilities.probe()
    threads = torch.get_num_threads()
    gpu = "no GPU"
    if torch.cuda.is_available():
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        gpu = f"GPU {torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda}, cuDNN {cudnn})"
    v = capabilities.versions()
    try:
        load = f"load average {os.getloadavg()[0]:.1f}"
    except OSError:  # pragma: no cover
        load = "load unknown"
    return (
        f"{caps.line()}; {os.cpu_count()} logical cores visible, {threads} threads; "
        f"{gpu}; Python {platform.python_version()}, torch {torch.__version__}, onnxruntime {v['onnxruntime']}, "
        f"openvino {v['openvino']}; {load} at start"
    )


def real_crops(image_dir: Path, annotation: Path, input_size_wh: tuple[int, int], n: int) -> np.ndarray:
    """Up to `n` normalised person crops `(n, 3, H, W)` from a COCO keypoint file (ground-truth boxes),
    made exactly as the test pipeline makes them (`inference.estimator.make_inputs`, RGB)."""
    return real_crops_labeled(image_dir, annotation, input_size_wh, n)[0]


def real_crops_labeled(
    image_dir: Path, annotation: Path, input_size_wh: tuple[int, int], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """`real_crops` and, per crop, which joints the annotation marks as labeled (v > 0) `(n, K)` bool."""
    data = json.loads(Path(annotation).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    w, h = input_size_wh
    crops: list[np.ndarray] = []
    labeled: list[np.ndarray] = []
    for ann in data["annotations"]:
        if ann.get("num_keypoints", 0) == 0 or ann.get("iscrowd", 0):
            continue
        img = cv2.imread(str(Path(image_dir) / files[ann["image_id"]]), cv2.IMREAD_COLOR)
        if img is None:
            continue
        center, scale = box_to_center_scale(ann["bbox"], w / h)
        crops.append(make_inputs(img, center[None], scale[None], (w, h), color_rgb=True)[0])
        labeled.append(np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)[:, 2] > 0)
        if len(crops) == n:
            break
    if not crops:
        raise FileNotFoundError(f"no readable person crops from {annotation} with images in {image_dir}")
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32), np.stack(labeled)


def identity_crops(n: int, input_size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Centers and scales (n, 2) of the crop that maps the model input onto itself: the center of the input
    and its size in units of `PIXEL_STD` (200 px), so `pipeline.decode` gives keypoints in input pixels."""
    w, h = (float(v) for v in input_size_wh)
    centers = np.tile(np.array([[w / 2.0, h / 2.0]]), (n, 1))
    scales = np.tile(np.array([[w / PIXEL_STD, h / PIXEL_STD]]), (n, 1))
    return centers, scales


def decode_input_px(
    heatmaps: np.ndarray,
    input_size_wh: tuple[int, int],
    codec: HeatmapCodec | None = None,
    settings: TestSettings | None = None,
) -> np.ndarray:
    """Keypoints of `heatmaps (N, K, h, w)` in input-crop pixels with their joint scores `(N, K, 3)`, decoded
    as `hrpose test` and `predict` decode (`pipeline.decode`) with the identity crop (`identity_crops`).

    codec: the config's codec (default: the official decoder for this input and heatmap size); settings:
    the config's test settings (default: post-processed with a codec, the bare argmax without one; no flip:
    bench compares the backends' single calls)."""
    h, w = heatmaps.shape[-2:]
    if settings is None:
        settings = TestSettings(flip_test=False, post_process=codec is not None)
    if codec is None:
        codec = HeatmapCodec(input_size_wh, (w, h), sigma=2.0)
    centers, scales = identity_crops(len(heatmaps), input_size_wh)
    return decode(codec, heatmaps, centers, scales, settings)


def keypoints_input_px(
    heatmaps: np.ndarray,
    input_size_wh: tuple[int, int],
    codec: HeatmapCodec | None = None,
    settings: TestSettings | None = None,
) -> np.ndarray:
    """Keypoints of `heatmaps (N, K, h, w)` in input-crop pixels `(N, K, 2)`: `decode_input_px` without the
    scores (the codec's post-processed decoding, or the bare argmax times the stride without a codec)."""
    return decode_input_px(heatmaps, input_size_wh, codec, settings)[..., :2]


def time_backend(fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, iters: int, warmup: int) -> float:
    """Median seconds per call."""
    return float(np.median(time_interleaved({"x": fn}, batch, iters, warmup)["x"]))


def time_interleaved(
    fns: dict[str, Callable[[np.ndarray], np.ndarray]],
    batch: np.ndarray,
    iters: int,
    warmup: int,
    block: int = 3,
) -> dict[str, list[float]]:
    """Seconds per call of each of `fns` on `batch`, `iters` timed calls each.

    After `warmup` untimed calls each, the functions take turns in rounds, `block` timed calls at a time
    after one untimed call: load from elsewhere spreads over all of them, and the threads one runtime
    leaves spinning (OpenMP, ONNX Runtime) after its turn do not slow the next one's timed calls.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn(batch)
    times: dict[str, list[float]] = {name: [] for name in fns}
    while any(len(t) < iters for t in times.values()):
        for name, fn in fns.items():
            fn(batch)
            for _ in range(min(block, iters - len(times[name]))):
                t0 = time.perf_counter()
                fn(batch)
                times[name].append(time.perf_counter() - t0)
    return times


def _run_batched(fn: Callable[[np.ndarray], np.ndarray], crops: np.ndarray, bs: int = 8) -> np.ndarray:
    return np.concatenate([fn(crops[i : i + bs]) for i in range(0, len(crops), bs)])


def prepare_backends(
    model: nn.Module,
    input_size_wh: tuple[int, int],
    backends: tuple[str, ...],
    calib_crops: np.ndarray,
    workdir: Path,
    *,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    skipped: dict[str, str] | None = None,
    extra_backends: Mapping[str, BackendFactory] | None = None,
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Baseline first, then every backend of `backends` (ONNX exported / int8 quantized into `workdir`);
    a name of `extra_backends` is built by its factory (`factory(model)`).

    "auto" is the backend `--backend auto` runs here (a row "auto = <name>"). A backend this machine cannot
    run (`BackendUnavailableError`: bf16 without bf16 hardware, OpenVINO not installed) raises, or, when
    `skipped` is a dict, is left out and recorded there with the reason."""
    extra = dict(extra_backends or {})
    shadowed = [n for n in extra if is_backend_name(n) or n == BASELINE]
    if shadowed:
        raise ValueError(f"extra backends may not reuse a built-in backend name: {', '.join(shadowed)}")
    for name in backends:
        if not is_backend_name(name, extra):
            raise ValueError(f"unknown backend {name!r}; choose from {', '.join(backend_names(extra))}")
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {BASELINE: EagerBackend(model)}
    onnx_fp32 = workdir / "model_fp32.onnx"
    device = next(model.parameters()).device
    auto_name = auto_bench_name(device) if "auto" in backends else ""
    if any(b.startswith(("onnxruntime", "openvino")) for b in (*backends, auto_name)):
        log("exporting ONNX (self-checked in ONNX Runtime) ...")
        export_onnx(model, onnx_fp32, input_size_wh, dynamic_batch=True)
    threads = threads or torch.get_num_threads()
    for name in backends:
        log(f"preparing {name} ...")
        try:
            if name in extra:
                fn = extra[name](model)
            else:
                fn = _make_bench_backend(auto_name if name == "auto" else name, model, onnx_fp32, threads, workdir,
                                         calib_crops, input_size_wh)  # fmt: skip
        except BackendUnavailableError as e:
            if skipped is None:
                raise
            skipped[name] = str(e)
            log(f"skipped {name}: {e}")
            continue
        candidates[f"auto = {auto_name}" if name == "auto" else name] = fn
    return candidates


def _make_bench_backend(
    name: str, model: nn.Module, onnx_fp32: Path, threads: int, workdir: Path, calib_crops: np.ndarray,
    input_size_wh: tuple[int, int] = (192, 256),
) -> Callable[[np.ndarray], np.ndarray]:
    if name in TORCH_BACKENDS:
        return make_torch_backend(name, model)
    if name == "onnxruntime-fp32":
        return OnnxRuntimeBackend(onnx_fp32, threads=threads, name=name)
    if name == "openvino-fp32":
        return OpenVinoBackend(onnx_fp32, threads=threads, name=name)
    if name == "openvino-int8":  # NNCF post-training int8 (hrpose.quantize), calibrated on the crops + mirrors
        from .quantize import quantize_crops

        return quantize_crops(model, input_size_wh, calib_crops, threads=threads, name=name)
    m = _INT8.fullmatch(name)
    assert m is not None
    method = m.group(1) or "minmax"
    assert method in CALIBRATION_METHODS
    calib = [calib_crops[i : i + 8] for i in range(0, len(calib_crops), 8)]
    path = quantize_int8(
        onnx_fp32, workdir / f"{name}.onnx", calib, per_channel=not m.group(2), method=method,
        exclude_first=bool(m.group(3)), exclude_last=bool(m.group(4)),
    )  # fmt: skip
    return OnnxRuntimeBackend(path, threads=threads, name=name)


def run_bench(
    model: nn.Module,
    input_size_wh: tuple[int, int],
    crops: np.ndarray,
    *,
    calib_crops: np.ndarray | None = None,
    codec: HeatmapCodec | None = None,
    settings: TestSettings | None = None,
    batch_sizes: tuple[int, ...] = (1, 8),
    iters: int = 10,
    warmup: int = 2,
    backends: tuple[str, ...] = DEFAULT_BACKENDS,
    workdir: Path | None = None,
    threads: int | None = None,
    confident: float = 0.2,
    device: str | torch.device = "cpu",
    labeled: np.ndarray | None = None,
    log: Callable[[str], None] = print,
    skipped: dict[str, str] | None = None,
    extra_backends: Mapping[str, BackendFactory] | None = None,
) -> list[BenchRow]:
    """Benchmark `backends` against the eager baseline.

    crops (M, 3, H, W): real normalised crops for the deviation; calib_crops: int8 calibration crops
    (default: `crops`; pass a disjoint set); codec, settings: keypoint decoding, through `pipeline.decode`
    with the identity crop (`decode_input_px`; default: bare argmax);
    confident: `mean_dev_confident_px` counts joints whose baseline heatmap maximum exceeds this;
    device: where the torch backends (and the baseline) run; on a GPU each timed call includes copying the
    crops in and the heatmaps out (numpy in, numpy out, as `predict` uses them), which also synchronises;
    labeled (M, K) bool: the joints annotated in each crop, for the `*_labeled` deviation columns (a joint
    that is not in the picture has no position: its heatmap is noise, and its argmax moves with any rounding);
    skipped: collect the backends this machine cannot run instead of raising (see `prepare_backends`);
    extra_backends: name -> factory(model) -> backend, names `backends` may use beside the built-in ones
    (`benchmarks/backend_variants.py` passes the exploratory torch variants this way).
    """
    model = model.eval().to(device)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hrpose-bench-"))
    calib_crops = crops if calib_crops is None else calib_crops
    candidates = prepare_backends(model, input_size_wh, backends, calib_crops, workdir, threads=threads, log=log,
                                  skipped=skipped, extra_backends=extra_backends)  # fmt: skip

    ref_hm = _run_batched(candidates[BASELINE], crops)
    ref = decode_input_px(ref_hm, input_size_wh, codec, settings)
    ref_kp = ref[..., :2]
    sure = ref[..., 2] > confident  # the joint score: the baseline heatmap's maximum
    rows: dict[str, BenchRow] = {}
    for name, fn in candidates.items():
        hm = _run_batched(fn, crops)
        dev = np.linalg.norm(keypoints_input_px(hm, input_size_wh, codec, settings) - ref_kp, axis=-1)
        rows[name] = BenchRow(
            name,
            mean_dev_px=float(dev.mean()),
            within_2px=float((dev <= 2.0).mean()),
            mean_dev_confident_px=float(dev[sure].mean()) if sure.any() else float("nan"),
            within_2px_confident=float((dev[sure] <= 2.0).mean()) if sure.any() else float("nan"),
            max_abs_heatmap_err=float(np.abs(hm - ref_hm).max()),
        )
        if labeled is not None and labeled.any():
            rows[name].mean_dev_labeled_px = float(dev[labeled].mean())
            rows[name].within_2px_labeled = float((dev[labeled] <= 2.0).mean())
    for bs in batch_sizes:
        batch = np.ascontiguousarray(np.resize(crops, (bs, *crops.shape[1:])))
        log(f"timing batch {bs}: {iters} interleaved rounds ...")
        times = time_interleaved(candidates, batch, iters, warmup)
        for name, t in times.items():
            sec = float(np.median(t))
            rows[name].ms_per_crop[bs] = 1000.0 * sec / bs
            rows[name].crops_per_s[bs] = bs / sec
    base = rows[BASELINE]
    for row in rows.values():
        row.speedup = {bs: row.crops_per_s[bs] / base.crops_per_s[bs] for bs in batch_sizes}
        log(f"{row.backend}: " + ", ".join(f"b{bs} {row.ms_per_crop[bs]:.1f} ms/crop" for bs in batch_sizes))
    return list(rows.values())


def markdown_table(rows: list[BenchRow], batch_sizes: tuple[int, ...] = (1, 8)) -> str:
    with_labeled = any(not np.isnan(r.mean_dev_labeled_px) for r in rows)
    head = ["backend"]
    for bs in batch_sizes:
        head += [f"ms/crop b{bs}", f"crops/s b{bs}", f"speedup b{bs}"]
    head += ["mean dev (px)", "within 2 px", "mean dev, confident (px)", "within 2 px, confident"]
    if with_labeled:
        head += ["mean dev, labeled (px)", "within 2 px, labeled"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.backend]
        for bs in batch_sizes:
            cells += [f"{r.ms_per_crop[bs]:.1f}", f"{r.crops_per_s[bs]:.1f}", f"{r.speedup[bs]:.2f}x"]
        cells += [f"{r.mean_dev_px:.3f}", f"{100 * r.within_2px:.1f}%", f"{r.mean_dev_confident_px:.3f}"]
        cells += [f"{100 * r.within_2px_confident:.1f}%"]
        if with_labeled:
            cells += [f"{r.mean_dev_labeled_px:.3f}", f"{100 * r.within_2px_labeled:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_to_json(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
