"""The one vocabulary of backend names, and the one way to build a backend: `make_backend`.

`REGISTRY` is a plain dict, name -> `Entry` (a builder, the precision its keypoints have, a one-line summary).
`hrpose test` (HRPOSE.BACKEND), `PoseEstimator.from_config` / `predict` / `serve` (`--backend`) and `hrpose bench`
(`--backends`, one row per name) all build through `make_backend`, so a name means the same backend everywhere.
"auto" is not an entry: `make_backend` asks the auto policy (`hrpose.runtime.policy.auto_backend`) which entry
to build. Options (threads, BatchNorm folding, AMP, int8 calibration) are arguments, never parsed from a name.

How to add a backend: write `def _build_mine(req: BuildRequest) -> Backend` (read `req.model()` or
`req.graph(loader)`, and whatever option of `req` it needs; raise `BackendUnavailableError` naming what is missing
when this machine cannot run it) and add one line `"mine": Entry(_build_mine, "fp32", "what it runs")` to
`REGISTRY`; then add its row to the table in docs/architecture.md. Bench, predict, serve and test offer it.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from hrpose.errors import BackendUnavailableError, UnknownBackendError, UserError
from hrpose.export import ExportError, ExportReport

from .base import Backend, model_device
from .onnx_cache import load_exported
from .onnxruntime_backend import onnx_session_backend
from .openvino_backend import OpenVinoBackend
from .openvino_int8 import GPU_REFUSAL, Int8Quantizer, OpenVinoIRBackend, quantize_crops, require_int8
from .policy import auto_backend
from .quantize import Int8Options, quantize_int8
from .torch_backend import plain_torch, torch_config

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class BuildRequest:
    """What a builder gets: the name it was asked by, the source (a torch model, or the path of an exported
    `.onnx` graph), and the options `make_backend` was given."""

    name: str
    source: nn.Module | Path
    device: torch.device | None = None
    input_size: tuple[int, int] | None = None  # (w, h): needed to export a model for an ONNX engine
    threads: int | None = None
    fold_bn: bool = True  # "torch": run a BatchNorm-folded copy (False: the caller's model itself)
    amp_dtype: torch.dtype | None = None  # "torch" with fold_bn=False: AMP autocast
    channels_last: bool = False  # "torch" with fold_bn=False: inputs made channels_last
    calibration: Sequence[np.ndarray] | None = None  # int8: normalised real crops (N, 3, H, W)
    int8: Int8Options = field(default_factory=Int8Options)
    workdir: Path | None = None  # int8: where the quantised graph is written
    spinning: bool = True  # ONNX Runtime: threads busy-wait between ops
    int8_quantizer: Int8Quantizer | None = None  # openvino-int8: quantises the model (hrpose.quantize)
    flip_test: bool = True  # openvino-int8 with `calibration`: the mirrored crops calibrate too
    cfg: Any = None  # openvino-int8 on an IR: refuse an IR made for another model than this config's

    def model(self) -> nn.Module:
        """The torch model (on `device` when given); a torch engine asked to run an `.onnx` file refuses."""
        if not isinstance(self.source, nn.Module):
            raise UserError(f"backend {self.name!r} runs a PyTorch checkpoint, not the ONNX graph {self.source}; "
                            "use --backend onnxruntime (or openvino) for an .onnx file")  # fmt: skip
        if self.device is not None and model_device(self.source) != self.device:
            self.source.to(self.device)
        return self.source

    def graph(self, load: Callable[[Path], T]) -> T:
        """`load(path)` on the ONNX graph: the given `.onnx` file, or the model exported (self-checked in ONNX
        Runtime) through the export cache (`hrpose.runtime.onnx_cache`)."""
        if isinstance(self.source, nn.Module):
            if self.input_size is None:
                raise ValueError(f"backend {self.name!r}: exporting a model needs input_size (w, h)")

            def load_report(report: ExportReport) -> T:
                return load(Path(report.path))

            return load_exported(self.source, self.input_size, load_report)
        return load(Path(self.source))


Builder = Callable[[BuildRequest], Backend]


@dataclass(frozen=True)
class Entry:
    """A registry entry: `build(request) -> Backend`, the precision of its keypoints ("fp32", "bf16", "fp16",
    "int8"; "as exported" for a given graph), and what it runs, in one line (docs, --help)."""

    build: Builder
    precision: str
    summary: str


def _torch(req: BuildRequest) -> Backend:
    return plain_torch(req.model(), fold_bn=req.fold_bn, amp_dtype=req.amp_dtype, channels_last=req.channels_last)


def _torch_config(req: BuildRequest) -> Backend:
    return torch_config(req.name, req.model())


def _onnxruntime(req: BuildRequest) -> Backend:
    return req.graph(lambda path: onnx_session_backend(path, threads=req.threads, spinning=req.spinning,
                                                       name=req.name))  # fmt: skip


def _onnxruntime_int8(req: BuildRequest) -> Backend:
    if req.calibration is None:  # an int8 graph made by `hrpose export --int8-calib`: runs as it is
        if isinstance(req.source, nn.Module):
            raise UserError(f"backend {req.name!r} quantises the model on calibration crops: give calibration "
                            "batches, or an int8 .onnx made by `hrpose export --int8-calib`")  # fmt: skip
        return onnx_session_backend(req.source, threads=req.threads, spinning=req.spinning, name=req.name)
    workdir = Path(req.workdir) if req.workdir is not None else None

    def quantised(path: Path) -> Backend:
        out_dir = workdir or Path(tempfile.mkdtemp(prefix="hrpose-int8-"))
        o = req.int8
        out = quantize_int8(path, out_dir / f"{req.name}.onnx", req.calibration or (), per_channel=o.per_channel,
                            method=o.method, exclude_first=o.exclude_first, exclude_last=o.exclude_last)  # fmt: skip
        return onnx_session_backend(out, threads=req.threads, spinning=req.spinning, name=req.name)

    return req.graph(quantised)


def _openvino(req: BuildRequest) -> Backend:
    return req.graph(lambda path: OpenVinoBackend(path, threads=req.threads, name=req.name))


def _openvino_int8(req: BuildRequest) -> Backend:
    """NNCF int8 in OpenVINO on the CPU: a given IR (.xml, `hrpose export --format openvino --int8-calib`), or a
    torch model quantised by `int8_quantizer` (a user's calibration folder, accuracy control, cached) or on the
    `calibration` crops (every layer int8)."""
    if req.device is not None and req.device.type != "cpu":
        raise BackendUnavailableError(GPU_REFUSAL)
    require_int8()
    if isinstance(req.source, Path):
        if req.source.suffix.lower() == ".onnx":
            raise BackendUnavailableError(INT8_ONNX_RETIRED.format(path=req.source))
        return OpenVinoIRBackend(req.source, cfg=req.cfg, threads=req.threads, name=req.name)
    model = req.source.eval()
    if req.int8_quantizer is not None:
        ir = req.int8_quantizer.quantize(model)
        return OpenVinoIRBackend(ir, cfg=req.cfg, threads=req.threads, name=req.name)
    if req.calibration is None:
        raise UserError(f"backend {req.name!r} quantises the model on calibration crops: give --int8-calib "
                        "DATASET_ROOT, or an int8 IR (.xml) made by `hrpose export --format openvino --int8-calib`")
    if req.input_size is None:
        raise ValueError(f"backend {req.name!r}: quantising a model needs input_size (w, h)")
    crops = np.concatenate([np.asarray(c, np.float32) for c in req.calibration])
    return quantize_crops(model, req.input_size, crops, flip_test=req.flip_test, threads=req.threads,
                          name=req.name)  # fmt: skip


#: an int8 .onnx (ONNX Runtime static int8) offered to `--precision int8` / "openvino-int8"
INT8_ONNX_RETIRED = ("{path}: int8 .onnx models (ONNX Runtime) are retired (they moved keypoints by up to 8 px, "
                     "docs/benchmarks.md); export an OpenVINO IR with `hrpose export --format openvino --int8-calib "
                     "DATA_ROOT` and pass the .xml")  # fmt: skip


#: The vocabulary: every backend name hrpose accepts (besides "auto"), what it builds and what it runs.
REGISTRY: dict[str, Entry] = {
    "torch": Entry(_torch, "fp32", "the model in eager PyTorch, fp32 NCHW; BatchNorm folded into a copy unless "
                   "the caller's model must run itself (hrpose test: with HRPOSE.AMP / HRPOSE.CHANNELS_LAST)"),
    "torch-fast": Entry(_torch_config, "fp32", "BatchNorm folded, channels_last, fp32, same numbers as torch: "
                        "frozen TorchScript on a CPU, CUDA-graph replay on a GPU"),
    "torch-bf16": Entry(_torch_config, "bf16", "bf16 with an fp32 heatmap head: oneDNN post-op fusion on a CPU "
                        "with bf16 arithmetic (AMX / AVX512_BF16), CUDA graphs on a GPU"),
    "torch-fp16": Entry(_torch_config, "fp16", "fp16 with an fp32 heatmap head, CUDA graphs: GPUs only (a CPU "
                        "refuses it)"),
    "torch-compile": Entry(_torch_config, "fp32", "fp32 through torch.compile (inductor, frozen weights; on a GPU "
                           "with CUDA graphs); slow to start, needs a C++ compiler on a CPU"),
    "onnxruntime": Entry(_onnxruntime, "as exported", "the ONNX graph in ONNX Runtime: the model exported and "
                         "self-checked (cached), or a given .onnx file (fp32, or int8 as exported)"),
    "onnxruntime-int8": Entry(_onnxruntime_int8, "int8", "deprecated (moved keypoints by up to 8 px): the exported "
                              "graph quantised to int8 here (static QDQ, calibrated on given real crops) in ONNX "
                              "Runtime; or a given int8 .onnx file"),
    "openvino": Entry(_openvino, "fp32", "the exported graph (or a given .onnx file) in OpenVINO's CPU plugin, "
                      "fp32 (the openvino extra)"),
    "openvino-int8": Entry(_openvino_int8, "int8", "NNCF int8 in OpenVINO on the CPU (the int8 extra): a given IR "
                           "(.xml, `hrpose export --format openvino --int8-calib`), or the model quantised on a "
                           "calibration folder (accuracy control, cached) or on given crops"),
}

#: Old names, kept working for one release with a one-line deprecation warning: old -> (name, int8 options)
DEPRECATED: dict[str, tuple[str, Int8Options | None]] = {
    "torch-fp32": ("torch", None),
    "torch-fp32-jit": ("torch-fast", None),
    "torch-fp32-graph": ("torch-fast", None),
    "torch-fp16-graph": ("torch-fp16", None),
    "torch-bf16-graph": ("torch-bf16", None),
    "torch-fp32-compile": ("torch-compile", None),
    "torch-fp32-compile-graph": ("torch-compile", None),
    "onnxruntime-fp32": ("onnxruntime", None),
    "openvino-fp32": ("openvino", None),
    "onnxruntime-int8-entropy": ("onnxruntime-int8", Int8Options(method="entropy")),
    "onnxruntime-int8-percentile": ("onnxruntime-int8", Int8Options(method="percentile")),
    "onnxruntime-int8-pertensor": ("onnxruntime-int8", Int8Options(per_channel=False)),
    "onnxruntime-int8-keeplast": ("onnxruntime-int8", Int8Options(exclude_last=True)),
    "onnxruntime-int8-keepfirst-keeplast": ("onnxruntime-int8", Int8Options(exclude_first=True, exclude_last=True)),
}

_warned: set[str] = set()


def backend_names() -> list[str]:
    """The names `make_backend` takes: "auto" and the registry's, in the table's order."""
    return ["auto", *REGISTRY]


def is_backend_name(name: str) -> bool:
    """A current name, "auto", or a deprecated one."""
    return name == "auto" or name in REGISTRY or name in DEPRECATED


def canonical_name(name: str) -> tuple[str, Int8Options | None]:
    """`name` in today's vocabulary (a deprecated name: its replacement, with a one-line warning on stderr, once
    per process) and the int8 options an old int8 name stood for; an unknown name is a `UserError`."""
    if name == "auto" or name in REGISTRY:
        return name, None
    if name in DEPRECATED:
        new, options = DEPRECATED[name]
        if name not in _warned:
            _warned.add(name)
            extra = "" if options is None else f" with {options}"
            print(f"warning: backend name {name!r} is deprecated and goes in the next release; use {new!r}{extra}",
                  file=sys.stderr)  # fmt: skip
        return new, options
    raise UnknownBackendError(f"unknown backend {name!r}; choose from {', '.join(backend_names())}")


def make_backend(
    name: str,
    model_or_graph: nn.Module | str | os.PathLike[str],
    device: str | torch.device | None = None,
    precision: str | None = None,
    **options: Any,
) -> Backend:
    """The backend `name` (a `REGISTRY` name, "auto", or a deprecated name) around a torch model or an `.onnx`.

    device: where a torch model runs (the model is moved there); precision: for "auto", the precision asked for
    (default fp32: `auto_backend` picks the entry); for a named backend, refused unless it is that entry's.
    options: `BuildRequest` fields (input_size, threads, fold_bn, amp_dtype, channels_last, calibration, int8,
    workdir, spinning, int8_quantizer, flip_test, cfg). "auto" on a model picks an ONNX engine on a CPU: where
    the model cannot be exported, it runs as "torch" instead, with a warning. Raises `BackendUnavailableError`
    for what this machine cannot run.
    """
    name, int8 = canonical_name(name)
    if int8 is not None and "int8" not in options:
        options["int8"] = int8
    dev = None if device is None else torch.device(device)
    source: nn.Module | Path = model_or_graph if isinstance(model_or_graph, nn.Module) else Path(model_or_graph)
    if dev is None and isinstance(source, nn.Module):
        dev = model_device(source)
    auto = name == "auto"
    if auto:
        weights = None if isinstance(source, nn.Module) else source
        name = auto_backend(precision or "fp32", device=dev or "cpu", weights=weights)
        logger.info("backend auto: %s", name)
    elif precision is not None and REGISTRY[name].precision not in (precision, "as exported"):
        raise BackendUnavailableError(f"backend {name} runs {REGISTRY[name].precision}, not --precision {precision}; "
                                      "drop --backend (or --precision)")  # fmt: skip
    req = BuildRequest(name=name, source=source, device=dev, **options)
    if not auto or not isinstance(source, nn.Module) or name not in ("onnxruntime", "openvino"):
        return REGISTRY[name].build(req)
    try:
        return REGISTRY[name].build(req)
    except (ExportError, RuntimeError, ValueError, TypeError) as e:
        if isinstance(e, BackendUnavailableError):
            raise
        logger.warning("backend auto: ONNX export failed (%s); running the PyTorch model", str(e).splitlines()[0])
        return REGISTRY["torch"].build(replace(req, name="torch"))
