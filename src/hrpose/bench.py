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
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from .codec import HeatmapCodec
from .errors import BackendUnavailableError
from .export import export_onnx
from .geometry import PIXEL_STD, box_to_center_scale, make_inputs
from .pipeline import InferenceSettings, decode
from .runtime import auto_backend, capabilities, make_backend
from .runtime import backend_names as runtime_backend_names
from .runtime import is_backend_name as runtime_is_backend_name
from .runtime.quantize import Int8Options
from .runtime.registry import canonical_name

BASELINE = "eager-fp32 (baseline)"
# the rows `hrpose bench` shows by default: registry names (hrpose.runtime.REGISTRY) a user can choose on a CPU, and
# what `auto` runs; exploratory variants come from `benchmarks/backend_variants.py` (`extra_backends`)
DEFAULT_BACKENDS = ("auto", "torch", "torch-fast", "torch-bf16", "onnxruntime", "openvino", "openvino-int8")
GPU_DEFAULT_BACKENDS = ("auto", "torch", "torch-fast", "torch-fp16", "torch-bf16", "torch-compile")
#: a named backend `run_bench` builds around the (eval, on-device) model, beside the registry's
BackendFactory = Callable[[nn.Module], Callable[[np.ndarray], np.ndarray]]


def default_backends(device: str | torch.device = "cpu") -> tuple[str, ...]:
    """The rows `hrpose bench` shows by default on `device` (CUDA: the GPU set)."""
    return GPU_DEFAULT_BACKENDS if torch.device(device).type == "cuda" else DEFAULT_BACKENDS


def auto_bench_name(device: str | torch.device = "cpu") -> str:
    """The registry backend `--backend auto` (fp32) runs on `device` of this machine."""
    return auto_backend("fp32", device=torch.device(device))


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


def backend_names(extra_backends: Mapping[str, BackendFactory] | None = None) -> list[str]:
    """The backend names `run_bench` accepts: the runtime's (`hrpose.runtime.backend_names`), `extra_backends`' last."""
    return [*runtime_backend_names(), *(extra_backends or {})]


def is_backend_name(name: str, extra_backends: Mapping[str, BackendFactory] | None = None) -> bool:
    """Whether `run_bench` knows `name`: a registry name, "auto", a deprecated name, or an extra."""
    return runtime_is_backend_name(name) or name in (extra_backends or {})


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
    made exactly as the test pipeline makes them (`geometry.make_inputs`, RGB)."""
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
    settings: InferenceSettings | None = None,
) -> np.ndarray:
    """Keypoints of `heatmaps (N, K, h, w)` in input-crop pixels with their joint scores `(N, K, 3)`, decoded
    as `hrpose test` and `predict` decode (`pipeline.decode`) with the identity crop (`identity_crops`).

    codec: the config's codec (default: the official decoder for this input and heatmap size); settings:
    the config's test settings (default: post-processed with a codec, the bare argmax without one; no flip:
    bench compares the backends' single calls)."""
    h, w = heatmaps.shape[-2:]
    if settings is None:
        settings = InferenceSettings(flip_test=False, post_process=codec is not None)
    if codec is None:
        codec = HeatmapCodec(input_size_wh, (w, h), sigma=2.0)
    centers, scales = identity_crops(len(heatmaps), input_size_wh)
    return decode(codec, heatmaps, centers, scales, settings)


def keypoints_input_px(
    heatmaps: np.ndarray,
    input_size_wh: tuple[int, int],
    codec: HeatmapCodec | None = None,
    settings: InferenceSettings | None = None,
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


#: the registry's engines that run an exported graph: bench exports the model once for all of them
ONNX_ENGINES = ("onnxruntime", "onnxruntime-int8", "openvino")


def _int8_label(o: Int8Options) -> str:
    """The non-default int8 options, for a row label: e.g. "entropy, per-tensor, fp32 last conv"."""
    parts = [o.method] if o.method != "minmax" else []
    parts += ["per-tensor"] * (not o.per_channel) + ["fp32 first conv"] * o.exclude_first
    return ", ".join(parts + ["fp32 last conv"] * o.exclude_last)


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
    # (row label, registry name or extra, int8 options): an old name is its registry name (one warning each); an
    # old int8 variant's label names its options
    rows: list[tuple[str, str, Int8Options | None]] = []
    for name in backends:
        real, int8 = (name, None) if name in extra else canonical_name(name)
        rows.append((real if int8 is None else f"{real} ({_int8_label(int8)})", real, int8))
    # the official code's way: the model itself, eager fp32 NCHW
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {BASELINE: make_backend("torch", model,
                                                                                        fold_bn=False)}
    onnx_fp32 = workdir / "model_fp32.onnx"
    device = next(model.parameters()).device
    auto_name = auto_bench_name(device) if any(real == "auto" for _, real, _ in rows) else ""
    if any(real in ONNX_ENGINES for real in (*(r for _, r, _ in rows), auto_name)):
        log("exporting ONNX (self-checked in ONNX Runtime) ...")
        export_onnx(model, onnx_fp32, input_size_wh, dynamic_batch=True)
    threads = threads or torch.get_num_threads()
    calibration = [calib_crops[i : i + 8] for i in range(0, len(calib_crops), 8)]
    for i, (label, real, int8) in enumerate(rows):
        log(f"preparing {label} ...")
        try:
            if real in extra:
                fn = extra[real](model)
            else:
                real = auto_name if real == "auto" else real
                options: dict[str, Any] = {"int8": int8} if int8 is not None else {}
                if real == "onnxruntime-int8":
                    options.update(calibration=calibration, workdir=workdir / f"int8-{i}")
                    (workdir / f"int8-{i}").mkdir(parents=True, exist_ok=True)
                elif real == "openvino-int8":  # NNCF, calibrated on the crops and their mirrors
                    options.update(calibration=calibration)
                fn = make_backend(real, onnx_fp32 if real in ONNX_ENGINES else model, device, threads=threads,
                                  input_size=input_size_wh, **options)  # fmt: skip
        except BackendUnavailableError as e:
            if skipped is None:
                raise
            skipped[label] = str(e)
            log(f"skipped {label}: {e}")
            continue
        candidates[f"auto = {auto_name}" if label == "auto" else label] = fn
    return candidates


def run_bench(
    model: nn.Module,
    input_size_wh: tuple[int, int],
    crops: np.ndarray,
    *,
    calib_crops: np.ndarray | None = None,
    codec: HeatmapCodec | None = None,
    settings: InferenceSettings | None = None,
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
