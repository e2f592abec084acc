"""Inference backends: normalised crops `(N, 3, H, W)` float32 in, heatmaps `(N, K, h, w)` float32 out.

- `EagerBackend`: the model as the official code runs it (fp32, NCHW, `no_grad`): the baseline.
- `TorchBackend`: BatchNorm folded into the convs, channels_last, `inference_mode`, optional bf16 autocast
  (uses AMX/AVX-512 BF16 on CPUs that have it) and optional `torch.compile`.
- `OnnxRuntimeBackend`: an ONNX file (see `hrpose.export`) in ONNX Runtime, fp32 or int8.
`quantize_int8` makes the int8 model: static QDQ quantization calibrated on real crops.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Backend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class EagerBackend:
    """The official code's way: eager fp32 NCHW under `torch.no_grad()`."""

    name = "eager-fp32"

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.device = _model_device(model)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            return self.model(x).float().cpu().numpy()


class TorchBackend:
    """Folded BN + channels_last + inference_mode; `dtype=torch.bfloat16` for bf16 autocast."""

    def __init__(
        self,
        model: nn.Module,
        *,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        fold_bn: bool = True,
        compile: bool = False,
    ):
        from .export import fold_batchnorm

        self.device = _model_device(model)
        m = fold_batchnorm(model) if fold_bn else model.eval()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compile:
            m = torch.compile(m)  # type: ignore[assignment]
        self.model = m
        self.dtype = dtype
        self.channels_last = channels_last
        parts = ["torch", "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "fp32"]
        if compile:
            parts.append("compile")
        self.name = "-".join(parts)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.dtype == torch.float32:
                y = self.model(x)
            else:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    y = self.model(x)
            return y.float().cpu().numpy()


class OnnxRuntimeBackend:
    """An exported ONNX model in ONNX Runtime (CUDA provider first when available)."""

    def __init__(
        self, onnx_path: str | os.PathLike[str], *, threads: int | None = None, name: str | None = None
    ):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.name = name or f"onnxruntime-{Path(onnx_path).stem}"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


def quantize_int8(
    onnx_fp32: str | os.PathLike[str],
    onnx_int8: str | os.PathLike[str],
    calibration: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
) -> Path:
    """Static int8 quantization (QDQ, per-channel weights, u8 activations) calibrated on `calibration`.

    `calibration` yields normalised crops `(N, 3, H, W)` float32: real people, not noise, so the
    activation ranges are the ones the model meets in use.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in calibration]
    if not batches:
        raise ValueError("quantize_int8 needs at least one calibration batch of real crops")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"input": b[i : i + 1]} for b in batches for i in range(len(b))])

        def get_next(self):  # type: ignore[override]
            return next(self._it, None)

    onnx_int8 = Path(onnx_int8)
    pre = onnx_int8.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(onnx_fp32), str(pre), skip_symbolic_shape=True)
        src = pre
    except Exception:  # pre-processing is an optimisation; quantize the raw graph if it fails
        src = Path(onnx_fp32)
    quantize_static(
        str(src),
        str(onnx_int8),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    if pre.exists():
        pre.unlink()
    return onnx_int8
