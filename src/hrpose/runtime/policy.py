"""The auto policy: which registry backend `--backend auto` (at a `--precision`) runs on this machine.

One function, `auto_backend`, decided from the capability probe (`hrpose.runtime.capabilities`), not from a
timing at start-up: the rule per CPU kind is measured with `hrpose bench` and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch

from hrpose.errors import BackendUnavailableError

from . import capabilities
from .capabilities import Capabilities

PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def onnxruntime_available() -> bool:
    """ONNX Runtime and the ONNX exporter's packages are importable (the `onnx` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def openvino_available() -> bool:
    """OpenVINO (the `openvino` extra) and the ONNX exporter's packages are importable."""
    return onnxruntime_available() and importlib.util.find_spec("openvino") is not None


def auto_backend(
    precision: str = "fp32",
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
    caps: Capabilities | None = None,
    raise_missing: bool = True,
) -> str:
    """The backend `--backend auto` runs: a name `predict`, `hrpose test` and `PoseEstimator` accept.

    The rule comes from the capability probe, not from a timing at start-up (see docs/benchmarks.md: one
    rule per CPU kind, measured there with `hrpose bench`):
    - fp32 (the default: keypoints equal to the fp32 model's): on a CUDA device `torch-fast` (CUDA graphs);
      on a CPU the exported graph (a checkpoint is exported and self-checked in ONNX Runtime once, then cached,
      `hrpose.runtime.onnx_cache`) in `openvino` where the `openvino` extra is installed (faster than ONNX
      Runtime on the AVX2 machine in every run measured, docs/benchmarks.md), else `onnxruntime`;
      `torch-fast` where neither is installed; an `.onnx` file given as weights runs in ONNX Runtime as exported;
    - bf16 (asked for): `torch-bf16` where the CPU has bf16 arithmetic (AMX / AVX512_BF16) or the GPU bf16;
    - fp16 (asked for): `torch-fp16` on a CUDA device; a CPU refuses (fp16 convs are slower than fp32);
    - int8 (asked for): `openvino-int8` on a CPU (NNCF: an IR from `hrpose export --format openvino --int8-calib`,
      or a checkpoint quantised on first use); a GPU and an int8 `.onnx` (ONNX Runtime int8, retired) refuse.
    A precision this machine cannot run fast raises `BackendUnavailableError` naming what is missing
    (raise_missing=False: returns the message prefixed by "unavailable: " instead, for `hrpose info`).
    """
    caps = caps or capabilities.probe()
    device = torch.device(device)
    onnx_weights = weights is not None and Path(weights).suffix.lower() == ".onnx"
    why = ""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":  # NNCF int8 in OpenVINO ("openvino-int8"); ONNX Runtime int8 is retired
        int8_installed = all(importlib.util.find_spec(m) is not None for m in ("nncf", "openvino"))
        if device.type != "cpu":
            why = "int8 runs on the CPU (OpenVINO); no GPU int8 path is offered: use fp16 or bf16 there"
        elif onnx_weights:
            why = ("int8 .onnx models (ONNX Runtime) are retired (they moved keypoints by up to 8 px, "
                   "docs/benchmarks.md): export an OpenVINO IR with `hrpose export --format openvino --int8-calib "
                   "DATA_ROOT` and pass the .xml")  # fmt: skip
        elif int8_installed:
            return "openvino-int8"
        else:
            why = "int8 needs nncf and openvino: pip install 'hrpose[int8]'"
    elif onnx_weights:
        if precision != "fp32":
            why = f"an .onnx model runs as exported (fp32 or int8), not in {precision}; use --precision fp32"
        elif device.type != "cpu" and not onnxruntime_available():
            why = "an .onnx model needs ONNX Runtime (pip install 'hrpose[onnx]')"
        else:
            return "onnxruntime"
    elif device.type == "cuda":
        if precision == "fp32":
            return "torch-fast"
        if precision == "fp16":
            return "torch-fp16"
        if caps.cuda_bf16:
            return "torch-bf16"
        why = caps.missing("cuda-bf16") + "; use --precision fp16"
    elif device.type == "cpu":
        if precision == "fp32":
            if openvino_available():
                return "openvino"
            return "onnxruntime" if onnxruntime_available() else "torch-fast"
        if precision == "fp16":
            why = "CPUs run fp16 convolutions slower than fp32; use --precision bf16 (CPUs with AMX/AVX512_BF16)"
        elif caps.bf16_fast:
            return "torch-bf16"
        else:
            why = caps.missing("bf16") + "; use --precision fp32"
    else:  # mps and others: the plain torch model
        if precision == "fp32":
            return "torch"
        why = f"reduced precision is not offered on {device.type}; use --precision fp32"
    if raise_missing:
        raise BackendUnavailableError(f"--precision {precision}: {why}")
    return f"unavailable: {why}"
