"""Static int8 quantisation of an exported ONNX graph (ONNX Runtime's QDQ tooling), calibrated on real crops.

Its options are arguments (`Int8Options`), never parsed from a backend name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def conv_node_names(onnx_path: str | os.PathLike[str]) -> list[str]:
    """Names of the Conv nodes of an ONNX graph, in graph order (first = stem conv, last = final layer)."""
    import onnx  # optional (the onnx extra)

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "Conv"]


def quantize_int8(
    onnx_fp32: str | os.PathLike[str],
    onnx_int8: str | os.PathLike[str],
    calibration: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
    method: str = "minmax",
    exclude_first: bool = False,
    exclude_last: bool = False,
    percentile: float = 99.999,
) -> Path:
    """Static int8 quantization (QDQ, s8 weights, u8 activations) calibrated on `calibration`.

    `calibration` yields normalised crops `(N, 3, H, W)` float32: real people, not noise, so the
    activation ranges are the ones the model meets in use. u8 activations with s8 weights is the
    combination ONNX Runtime's x86 kernels (AVX-512 VNNI) run fast; s8/s8 is much slower there.
    method: activation range calibration, "minmax" | "entropy" | "percentile" (`percentile`);
    exclude_first / exclude_last: keep the stem conv / the final 1x1 heatmap conv in fp32.
    """
    # optional (the onnx extra), and slow to import: only when quantizing
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"quantize_int8: unknown calibration method {method!r}; choose from {CALIBRATION_METHODS}")
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
    convs = conv_node_names(src)
    exclude = ([convs[0]] if exclude_first and convs else []) + ([convs[-1]] if exclude_last and convs else [])
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    try:
        quantize_static(
            str(src),
            str(onnx_int8),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude or None,
            calibrate_method=calib,
            extra_options=extra,
        )
    finally:
        if pre.exists():
            pre.unlink()
    return onnx_int8




@dataclass(frozen=True)
class Int8Options:
    """How `quantize_int8` quantises: activation calibration `method`, per-channel weights, and whether the
    stem conv / the final heatmap conv stay fp32."""

    method: str = "minmax"
    per_channel: bool = True
    exclude_first: bool = False
    exclude_last: bool = False
