"""`hrpose bench`: every inference backend against the official-style eager fp32 baseline, in one run.

For each backend: ms/crop at batch 1 and 8, crops/s, speedup over the baseline's crops/s at the same batch
size, and the keypoint deviation from the baseline's decoded keypoints in input pixels (mean, and the share
within 2 px). Deviation is measured on real crops (coco-mini, or any dataset the config points at) and is
only meaningful with trained weights: pass `--weights`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .backends import EagerBackend, OnnxRuntimeBackend, TorchBackend, quantize_int8
from .codec import get_max_preds
from .export import export_onnx

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass
class BenchRow:
    backend: str
    ms_per_crop: dict[int, float] = field(default_factory=dict)
    crops_per_s: dict[int, float] = field(default_factory=dict)
    speedup: dict[int, float] = field(default_factory=dict)
    mean_dev_px: float = 0.0
    within_2px: float = 1.0


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}; {os.cpu_count()} logical cores visible, torch threads {threads}; {gpu}; "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def real_crops(image_dir: Path, annotation: Path, input_size_wh: tuple[int, int], n: int) -> np.ndarray:
    """Up to `n` normalised person crops `(n, 3, H, W)` from a COCO keypoint file (ground-truth boxes)."""
    import cv2

    from .geometry import box_to_center_scale, warp_crop

    data = json.loads(Path(annotation).read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    w, h = input_size_wh
    crops: list[np.ndarray] = []
    for ann in data["annotations"]:
        if ann.get("num_keypoints", 0) == 0 or ann.get("iscrowd", 0):
            continue
        img = cv2.imread(str(Path(image_dir) / files[ann["image_id"]]), cv2.IMREAD_COLOR)
        if img is None:
            continue
        center, scale = box_to_center_scale(ann["bbox"], w / h)
        crop = warp_crop(img, center, scale, 0.0, (w, h))[:, :, ::-1].astype(np.float32) / 255.0
        crops.append(((crop - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1))
        if len(crops) == n:
            break
    if not crops:
        raise FileNotFoundError(f"no readable person crops from {annotation} with images in {image_dir}")
    return np.ascontiguousarray(np.stack(crops), dtype=np.float32)


def keypoints_input_px(heatmaps: np.ndarray, input_size_wh: tuple[int, int]) -> np.ndarray:
    """Argmax keypoints of `heatmaps (N, K, h, w)` in input-crop pixels `(N, K, 2)`."""
    coords, _ = get_max_preds(heatmaps)
    stride = input_size_wh[0] / heatmaps.shape[-1]
    return coords * stride


def time_backend(fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, iters: int, warmup: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run_bench(
    model: nn.Module,
    input_size_wh: tuple[int, int],
    crops: np.ndarray,
    *,
    batch_sizes: tuple[int, ...] = (1, 8),
    iters: int = 10,
    warmup: int = 2,
    backends: tuple[str, ...] = ("torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8"),
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> list[BenchRow]:
    """Benchmark `backends` against the eager baseline; `crops (M, 3, H, W)` are real normalised crops."""
    model = model.eval().cpu()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="hrpose-bench-"))
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {"eager-fp32 (baseline)": EagerBackend(model)}
    onnx_fp32 = workdir / "model_fp32.onnx"
    if any(b.startswith("onnxruntime") for b in backends):
        log("exporting ONNX (self-checked in ONNX Runtime) ...")
        export_onnx(model, onnx_fp32, input_size_wh, dynamic_batch=True)
    for name in backends:
        log(f"preparing {name} ...")
        if name == "torch-fp32":
            candidates[name] = TorchBackend(model)
        elif name == "torch-bf16":
            candidates[name] = TorchBackend(model, dtype=torch.bfloat16)
        elif name == "torch-compile":
            candidates[name] = TorchBackend(model, compile=True)
        elif name == "onnxruntime-fp32":
            candidates[name] = OnnxRuntimeBackend(onnx_fp32, name=name)
        elif name == "onnxruntime-int8":
            calib = [crops[i : i + 8] for i in range(0, min(len(crops), 32), 8)]
            path = quantize_int8(onnx_fp32, workdir / "model_int8.onnx", calib)
            candidates[name] = OnnxRuntimeBackend(path, name=name)
        else:
            raise ValueError(
                f"unknown backend {name!r}; choose from torch-fp32, torch-bf16, torch-compile, "
                "onnxruntime-fp32, onnxruntime-int8"
            )

    ref_hm = np.concatenate(
        [candidates["eager-fp32 (baseline)"](crops[i : i + 8]) for i in range(0, len(crops), 8)]
    )
    ref_kp = keypoints_input_px(ref_hm, input_size_wh)
    rows: list[BenchRow] = []
    for name, fn in candidates.items():
        row = BenchRow(name)
        hm = np.concatenate([fn(crops[i : i + 8]) for i in range(0, len(crops), 8)])
        dev = np.linalg.norm(keypoints_input_px(hm, input_size_wh) - ref_kp, axis=-1)
        row.mean_dev_px, row.within_2px = float(dev.mean()), float((dev <= 2.0).mean())
        for bs in batch_sizes:
            batch = np.ascontiguousarray(np.resize(crops, (bs, *crops.shape[1:])))
            sec = time_backend(fn, batch, iters, warmup)
            row.ms_per_crop[bs] = 1000.0 * sec / bs
            row.crops_per_s[bs] = bs / sec
        rows.append(row)
        log(f"{name}: " + ", ".join(f"b{bs} {row.ms_per_crop[bs]:.1f} ms/crop" for bs in batch_sizes))
    base = rows[0]
    for row in rows:
        row.speedup = {bs: row.crops_per_s[bs] / base.crops_per_s[bs] for bs in batch_sizes}
    return rows


def markdown_table(rows: list[BenchRow], batch_sizes: tuple[int, ...] = (1, 8)) -> str:
    head = ["backend"]
    for bs in batch_sizes:
        head += [f"ms/crop b{bs}", f"crops/s b{bs}", f"speedup b{bs}"]
    head += ["mean dev (px)", "within 2 px"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.backend]
        for bs in batch_sizes:
            cells += [f"{r.ms_per_crop[bs]:.1f}", f"{r.crops_per_s[bs]:.1f}", f"{r.speedup[bs]:.2f}x"]
        cells += [f"{r.mean_dev_px:.3f}", f"{100 * r.within_2px:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rows_to_json(rows: list[BenchRow]) -> list[dict]:
    return [asdict(r) for r in rows]
