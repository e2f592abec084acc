"""Inference backends: normalised crops `(N, 3, H, W)` float32 in, heatmaps `(N, K, h, w)` float32 out.

Every backend fits the one `Backend` protocol (a `name`, a `device`, crops -> heatmaps); `hrpose.pipeline`
runs any of them with the flip test, decoding and rescoring, for `PoseEstimator` and `hrpose test` alike.

- `TorchBackend`: a torch model under `inference_mode`, by default with BatchNorm folded into the convs
  (a copy) and channels_last; `fold_bn=False, channels_last=False` is the eager baseline (`EagerBackend`:
  the model as the official code runs it, fp32 NCHW), `live=True` runs the caller's model itself (no
  copy: validation during training, with AMP autocast; train mode restored after each call); optionally frozen
  TorchScript (`jit=True`: oneDNN fuses conv + add + relu), bf16 weights (`dtype=torch.bfloat16`: the whole
  folded model in bf16, which oneDNN runs on AMX / AVX-512 BF16), bf16 autocast (`autocast=True`) or
  `torch.compile`.
- `OnnxRuntimeBackend`: an ONNX file (see `hrpose.export`) in ONNX Runtime, fp32 or int8.
`quantize_int8` makes the int8 model: static QDQ quantization calibrated on real crops.
`make_torch_backend(name, model)` builds one by its `TORCH_BACKENDS` name (the product's configurations:
`make_short_backend` picks the CPU or CUDA one of a short name such as torch-fast; exploratory variants are in
`benchmarks/backend_variants.py`); `auto_backend` says which backend
`--backend auto` runs on this machine (from `hrpose.capabilities.probe`), `make_auto_backend` builds it.
Every backend this machine cannot run refuses with a `BackendUnavailableError` (one line: what is missing,
what to use instead) before it is built: none crashes later, none runs an emulated path (bf16 on a CPU
without bf16 arithmetic: ~10x slower than fp32).
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from . import capabilities
from .errors import UserError
from .export import fold_batchnorm
from .fusion import fuse_pointwise


class BackendUnavailableError(UserError, RuntimeError):
    """A backend this machine cannot run (fast and correctly); the message says what is missing and what to
    use instead."""


@runtime_checkable
class Backend(Protocol):
    """Runs the pose network: normalised crops `(N, 3, H, W)` float32 (numpy or a tensor) -> heatmaps
    `(N, K, h, w)` float32 numpy (multi-stage models: the last stage's maps). `name` says which backend it is,
    `device` where the crops are run (tensor crops may already be there)."""

    name: str
    device: torch.device

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray: ...


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _as_tensor(batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch.float()
    return torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))


def last_stage(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A model's heatmaps: multi-stage models (a list or tuple of outputs) give the last stage's."""
    if isinstance(out, (list, tuple)):
        return out[-1]
    assert isinstance(out, torch.Tensor)
    return out


def EagerBackend(model: nn.Module) -> TorchBackend:  # noqa: N802 - kept as the baseline's name
    """The official code's way, the baseline of `hrpose bench`: the model itself, eager fp32 NCHW
    (`TorchBackend(model, fold_bn=False, channels_last=False)`, named "eager-fp32")."""
    return TorchBackend(model, fold_bn=False, channels_last=False, name="eager-fp32")


class _Fp32Head(nn.Module):
    """Runs `conv` in fp32 on a reduced-precision input: the heatmaps keep fp32 resolution, so nearby
    values at the peak do not round to ties (bf16 has 8 mantissa bits: 0.5 +- 0.002 is one value)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.float())


def _keep_last_conv_fp32(model: nn.Module) -> bool:
    """Replace the last `nn.Conv2d` of `model` (module order: the heatmap head) by an `_Fp32Head`."""
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return False
    parent_name, _, attr = convs[-1].rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, _Fp32Head(getattr(parent, attr)))
    return True


class TorchBackend:
    """Folded BN + channels_last + inference_mode, on the device of `model`'s parameters.

    dtype: the weights' and activations' dtype (bf16: the folded model is converted, no autocast casts
    per op); autocast: keep fp32 weights and run under `torch.autocast(dtype=torch.bfloat16)` instead;
    onednn_fusion: with `jit` on a CPU, optimise the traced graph with TorchScript's oneDNN Graph fuser
    (switched on only while tracing and profiling); about 2x faster in bf16 on AMX, but its results
    differ from the model's far beyond rounding (torch 2.13): for measurements, not for use;
    fp32_head: with a reduced `dtype`, keep the last conv (the heatmap head) in fp32;
    jit: trace and freeze (TorchScript) at the first batch shape, re-traced when the shape changes;
    compile: `torch.compile` (inductor; slow to start), with `compile_options` (inductor options;
    default freezing); cuda_graph: on a CUDA model, capture the forward pass as a CUDA graph per batch
    size (batches padded up to a power of two, so a video's varying person counts reuse a few graphs) and
    replay it: one launch instead of hundreds of small kernels, which is what batch 1 on a GPU waits on;
    fused: on a CPU, rewrite the graph with oneDNN post-op fusion and pre-packed weights at the first call
    (`hrpose.fusion.fuse_pointwise`): conv+relu and conv+add+relu as single convolutions, weights
    re-ordered once instead of per call (bf16 at batch 1: ~1.3x faster than frozen TorchScript, and the
    fused adds round once, so closer to fp32 too).
    fp32 with fold_bn/channels_last/jit is the eager model to float rounding (tested within 1e-4 of the
    heatmap range).
    live: run `model` itself, never a copy and without converting its weights (`fold_bn` must be False):
    validation during training and `hrpose test`'s "torch" backend. The inputs are still made channels_last
    when `channels_last` (the model is expected to be so already), `dtype` below fp32 needs `autocast` (AMP),
    and the model is put in eval mode for each call and given back its train/eval mode after it. No
    capability check is made: it runs what the training runs.
    name: the backend's name (default: made of its options, e.g. "torch-fp32-jit").
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        dtype: torch.dtype = torch.float32,
        autocast: bool = False,
        channels_last: bool = True,
        fold_bn: bool = True,
        jit: bool = False,
        compile: bool = False,
        fp32_head: bool = False,
        onednn_fusion: bool = False,
        compile_options: dict[str, object] | None = None,
        cuda_graph: bool = False,
        fused: bool = False,
        live: bool = False,
        name: str | None = None,
    ):
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"TorchBackend: dtype must be float32, bfloat16 or float16, got {dtype}")
        if jit and compile:
            raise ValueError("TorchBackend: choose jit or compile, not both")
        self.device = _model_device(model)
        if cuda_graph and (jit or compile):
            raise ValueError("TorchBackend: cuda_graph captures the eager model; not with jit or compile")
        if fused and (jit or compile or cuda_graph or autocast or not fold_bn):
            raise ValueError("TorchBackend: fused runs the folded model itself; not with jit, compile, cuda_graph, "
                             "autocast or fold_bn=False")  # fmt: skip
        if fused and self.device.type != "cpu":
            raise ValueError(f"TorchBackend: fused (oneDNN post-ops) is for CPUs, this model is on {self.device}")
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"TorchBackend: cuda_graph needs a model on a CUDA device, this one is on {self.device}")
        if dtype == torch.float16 and self.device.type == "cpu" and not autocast:
            raise ValueError("TorchBackend: float16 is for GPUs (CPUs run fp16 convs slowly); use bfloat16 on a CPU")
        if live and (fold_bn or jit or compile or cuda_graph or fused or (dtype != torch.float32 and not autocast)):
            raise ValueError("TorchBackend: live runs the caller's model as it is; not with fold_bn, jit, compile, "
                             "cuda_graph, fused or reduced-precision weights (use autocast)")  # fmt: skip
        if not live:
            require_runnable("TorchBackend", self.device, dtype=dtype, fused=fused)
        self.live = live
        self.dtype = torch.float32 if autocast else dtype
        self.autocast_dtype = dtype if autocast and dtype != torch.float32 else None
        if live:
            m = model
        elif fold_bn:
            m = fold_batchnorm(model)  # a copy
        elif self.dtype != torch.float32 or channels_last:
            m = copy.deepcopy(model).eval()  # never change the caller's model in place
        else:
            m = model.eval()
        if self.dtype != torch.float32:
            m = m.to(self.dtype)
            if fp32_head:
                _keep_last_conv_fp32(m)
        if channels_last and not live:
            m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if compile:
            # freezing: weights become constants, so inductor pre-packs them for oneDNN (AMX on bf16)
            m = torch.compile(m, options=dict(compile_options or {"freezing": True}))  # type: ignore[assignment,arg-type]
        self.model = m
        self.channels_last = channels_last
        self.jit = jit
        self.onednn_fusion = jit and onednn_fusion and self.device.type == "cpu"
        self._traced: tuple[tuple[int, ...], Callable[[torch.Tensor], torch.Tensor]] | None = None
        self.cuda_graph = cuda_graph
        self.compiled = compile
        self._compiled_once = False
        self.fused = fused
        self._fused: nn.Module | None = None
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        precision = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        parts = ["torch", precision]
        if autocast and dtype != torch.float32:
            parts.append("autocast")
        if fp32_head and self.dtype != torch.float32:
            parts.append("fp32head")
        if jit:
            parts.append("jit")
        if self.onednn_fusion:
            parts.append("onednn")
        if compile:
            parts.append("compile")
        if cuda_graph:
            parts.append("graph")
        if fused:
            parts.append("fused")
        if live:
            parts.append("live")
        self.name = name or "-".join(parts)

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        """The forward pass through a CUDA graph captured for `x`'s batch size padded to a power of two."""
        n = x.shape[0]
        size = 1 << max(0, n - 1).bit_length()
        key = (size, *x.shape[1:])
        if key not in self._graphs:
            static_in = torch.zeros(key, dtype=x.dtype, device=x.device)
            if self.channels_last:
                static_in = static_in.contiguous(memory_format=torch.channels_last)
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm-up off the capture: cuDNN picks its algorithms here
                for _ in range(2):
                    self._forward(static_in)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_in)
            self._graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self._graphs[key]
        static_in[:n].copy_(x)
        if n < size:
            static_in[n:].zero_()
        graph.replay()
        return static_out[:n]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled and not self._compiled_once:
            try:  # inductor compiles at the first call; on a CPU it needs a C++ compiler
                y = last_stage(self.model(x))
            except Exception as e:
                raise RuntimeError(
                    f"backend {self.name}: torch.compile failed at the first batch ({type(e).__name__}: "
                    f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}); on a CPU inductor needs a "
                    "working C++ compiler (g++/clang). Use another backend (torch-fast: same numbers)."
                ) from e
            self._compiled_once = True
            return y
        if self.fused:
            if self._fused is None:  # packed weights fit any batch size: built once, at the first input
                self._fused = fuse_pointwise(self.model, x)
            return last_stage(self._fused(x))
        if not self.jit:
            return last_stage(self.model(x))
        shape = tuple(x.shape)
        if self._traced is None or self._traced[0] != shape:
            # oneDNN Graph (LLGA) fuses conv chains with their adds/relus into larger AMX/VNNI kernels while
            # the profiling executor optimises the graph in the first calls; the switch is process-wide, so
            # it is set for those calls only (the optimised plan keeps its fusions)
            was_on = torch.jit.onednn_fusion_enabled()
            torch.jit.enable_onednn_fusion(self.onednn_fusion)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings about python-constant shapes
                    traced = torch.jit.freeze(torch.jit.trace(self.model, x, check_trace=False))
                    for _ in range(3):  # the profiling runs in which TorchScript specialises and fuses
                        traced(x)
            finally:
                torch.jit.enable_onednn_fusion(was_on)
            self._traced = (shape, traced)
        return last_stage(self._traced[1](x))

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        was_training = self.live and self.model.training  # (a compiled model is a plain function)
        if self.live:
            self.model.eval()
        try:
            with torch.inference_mode():
                x = _as_tensor(batch).to(self.device, dtype=self.dtype)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                if self.cuda_graph:
                    y = self._replay(x)
                elif self.autocast_dtype is None:
                    y = self._forward(x)
                else:
                    with torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype):
                        y = self._forward(x)
                return y.float().cpu().numpy()
        finally:
            if self.live:
                self.model.train(was_training)


USE_INSTEAD = "use --backend auto (fp32: the fastest exact backend on this machine)"


def require_runnable(label: str, device: torch.device | str, *, dtype: torch.dtype = torch.float32,
                     fused: bool = False) -> None:  # fmt: skip
    """Raise `BackendUnavailableError` when this machine cannot run `dtype` [with oneDNN fusion] on `device`
    fast and correctly (see `hrpose.capabilities`); `label` names the backend in the message."""
    device = torch.device(device)
    caps = capabilities.probe()
    if device.type == "cpu":
        if dtype == torch.bfloat16:
            why = caps.missing("bf16") if fused else _bf16_hardware_missing(caps)
            if why:
                raise BackendUnavailableError(f"backend {label}: {why}; {USE_INSTEAD}")
        if fused and dtype == torch.float32 and not caps.fusion_fp32:
            raise BackendUnavailableError(
                f"backend {label}: {caps.missing('fusion')}; use --backend torch-fast (TorchScript, same numbers) "
                "or --backend auto"
            )
    elif device.type == "cuda" and dtype == torch.bfloat16 and not caps.cuda_bf16:
        raise BackendUnavailableError(
            f"backend {label}: {caps.missing('cuda-bf16')}; use --backend torch-fp16 (or auto for fp32)"
        )


def _bf16_hardware_missing(caps) -> str:  # noqa: ANN001 - a capabilities.Capabilities
    return caps.missing("bf16") if not caps.bf16_hardware or not caps.onednn else ""


def ort_session_options(threads: int | None = None, spinning: bool = True):  # -> ort.SessionOptions
    """All graph optimisations; `threads` intra-op threads (None: ONNX Runtime's default, one per core).

    Spinning (threads busy-wait between ops) is on by default: about 25% faster per crop on 2 cores,
    at the price of burning CPU between calls; turn it off when sharing the machine.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return opts


class OnnxRuntimeBackend:
    """An exported ONNX model in ONNX Runtime (CUDA provider first when available)."""

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        *,
        threads: int | None = None,
        spinning: bool = True,
        name: str | None = None,
    ):
        import onnxruntime as ort  # optional (the onnx extra): imported when an ONNX backend is built

        wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        providers = [p for p in wanted if p in ort.get_available_providers()]
        self.session = ort.InferenceSession(
            str(onnx_path), sess_options=ort_session_options(threads, spinning), providers=providers
        )
        self.input_name = self.session.get_inputs()[0].name
        self.name = name or f"onnxruntime-{Path(onnx_path).stem}"
        self.device = torch.device("cpu")  # where the crops are given (numpy), whatever the provider

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


class _StackT(ctypes.Structure):  # Linux `stack_t` (sigaltstack)
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def keep_sigaltstack() -> Iterator[None]:
    """Put back this thread's alternate signal stack (`sigaltstack`) after the block, on Linux.

    OpenVINO's CPU plugin (2026.4) installs its own alternate signal stack on the calling thread when it compiles
    a model, and puts back the one it saw when that model is destroyed. Two compiled models destroyed in the
    order they were made (first in, first out: what garbage collection does to two estimators) leave the thread
    on the first model's stack, already unmapped. The next signal with a handler installed with SA_ONSTACK
    (every Python-level handler, e.g. the SIGCHLD handler of torch's DataLoader) cannot be delivered and the
    kernel kills the process with SIGSEGV; faulthandler prints nothing, its own handler needing that stack too.
    Putting our stack back right after OpenVINO's calls means every model saves, and later restores, a stack
    that stays valid."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = _libc()
    saved = _StackT()
    if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
        yield
        return
    try:
        yield
    finally:
        now = _StackT()
        libc.sigaltstack(None, ctypes.byref(now))
        if (now.ss_sp, now.ss_flags & ~_SS_ONSTACK, now.ss_size) != (saved.ss_sp, saved.ss_flags & ~_SS_ONSTACK,
                                                                     saved.ss_size):  # fmt: skip
            saved.ss_flags &= ~_SS_ONSTACK
            libc.sigaltstack(ctypes.byref(saved), None)


_SS_ONSTACK = 1


def openvino_config(threads: int | None = None) -> dict[str, object]:
    """How hrpose compiles for OpenVINO's CPU plugin: fp32 precision hint (OpenVINO would otherwise run bf16 on
    AMX CPUs), latency mode, and `threads` inference threads where given."""
    config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVinoBackend:
    """An exported ONNX model in OpenVINO's CPU runtime (the optional `openvino` extra), fp32 precision
    hint (OpenVINO would otherwise run bf16 on AMX CPUs), latency mode, `threads` inference threads.
    OpenVINO's calls run under `keep_sigaltstack` (see there: without it, a process that made and dropped two
    of these could die at its next signal)."""

    def __init__(self, onnx_path: str | os.PathLike[str], *, threads: int | None = None, name: str | None = None):
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendUnavailableError(
                "backend openvino: OpenVINO is not installed (pip install 'hrpose[openvino]'); "
                "use --backend auto or onnxruntime"
            ) from e
        config = openvino_config(threads)
        with keep_sigaltstack():
            core = ov.Core()
            model = core.read_model(str(onnx_path))
            self.compiled = core.compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()
        self.name = name or f"openvino-{Path(onnx_path).stem}"
        self.device = torch.device("cpu")

    def __call__(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        x = batch.detach().cpu().numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        with keep_sigaltstack():  # a new batch shape compiles kernels
            self.request.infer({0: x})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32)


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
    combination ONNX Runtime's x86 kernels (AVX-512 VNNI) run fast; s8/s8 is 4x slower there.
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


# The product's torch configurations: name -> TorchBackend keyword arguments. Each is the CPU or the CUDA side
# of a short name users choose (`SHORT_BACKENDS`) or "torch" itself, and `hrpose bench` shows them by default
# (its rows keep these long names). Exploratory, benchmark-only variants (oneDNN Graph fusion, bf16 autocast,
# a bf16 heatmap head, fp32 post-op fusion, fp16 autocast, compiled bf16/fp16, ...) live in
# `benchmarks/backend_variants.py`, which passes them to `hrpose.bench.run_bench(extra_backends=...)`.
TORCH_BACKENDS: dict[str, dict[str, object]] = {
    "torch-fp32": {},  # "torch": the folded fp32 model
    "torch-fp32-jit": {"jit": True},  # torch-fast on a CPU
    # torch-bf16 on a CPU: bf16 weights and activations, fp32 heatmap head, oneDNN post-op fusion with
    # pre-packed weights
    "torch-bf16": {"dtype": torch.bfloat16, "fp32_head": True, "fused": True},
    "torch-fp16": {"dtype": torch.float16, "fp32_head": True},  # torch-fp16 on a CPU: refused (fp16 is for GPUs)
    "torch-fp32-compile": {"compile": True},  # torch-compile on a CPU
    # GPU (CUDA): channels_last, CUDA graphs; fp16/bf16 weights with an fp32 heatmap head
    "torch-fp32-graph": {"cuda_graph": True},
    "torch-fp16-graph": {"dtype": torch.float16, "fp32_head": True, "cuda_graph": True},
    "torch-bf16-graph": {"dtype": torch.bfloat16, "fp32_head": True, "cuda_graph": True},
    # inductor + its own CUDA graphs (the "reduce-overhead" mode) on frozen fp32 weights
    "torch-fp32-compile-graph": {"compile": True, "compile_options": {"freezing": True, "triton.cudagraphs": True}},
}


# the short names `predict`, `test` (HRPOSE.BACKEND) and PoseEstimator offer -> TORCH_BACKENDS entries, on a
# CPU and on a CUDA GPU ("torch" itself is the folded fp32 model; "onnxruntime" an exported graph)
SHORT_BACKENDS: dict[str, tuple[str, str]] = {
    "torch-fast": ("torch-fp32-jit", "torch-fp32-graph"),  # fp32, same numbers
    "torch-bf16": ("torch-bf16", "torch-bf16-graph"),  # CPUs with AMX / AVX-512 BF16, or GPUs
    "torch-fp16": ("torch-fp16", "torch-fp16-graph"),  # GPUs (a CPU refuses fp16: slower than fp32 there)
    "torch-compile": ("torch-fp32-compile", "torch-fp32-compile-graph"),  # fp32 through inductor
}


def make_short_backend(name: str, model: nn.Module) -> TorchBackend:
    """The `SHORT_BACKENDS` entry `name` for the device `model` is on."""
    if name not in SHORT_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(SHORT_BACKENDS)}")
    cpu_name, cuda_name = SHORT_BACKENDS[name]
    return make_torch_backend(cuda_name if _model_device(model).type == "cuda" else cpu_name, model)


def make_torch_backend(name: str, model: nn.Module) -> TorchBackend:
    """A `TORCH_BACKENDS` entry around `model` (named `name`); `BackendUnavailableError` when this machine
    cannot run it (see `require_runnable`)."""
    if name not in TORCH_BACKENDS:
        raise ValueError(f"unknown torch backend {name!r}; choose from {sorted(TORCH_BACKENDS)}")
    return named_torch_backend(name, model, TORCH_BACKENDS[name])


def named_torch_backend(name: str, model: nn.Module, options: dict[str, object]) -> TorchBackend:
    """`TorchBackend(model, **options)` named `name`, after `require_runnable` has checked (with `name` in
    its message) that this machine can run it: a `BackendUnavailableError` otherwise. `make_torch_backend`
    builds the product's configurations with it, `benchmarks/backend_variants.py` the exploratory ones."""
    dtype = options.get("dtype", torch.float32)
    assert isinstance(dtype, torch.dtype)
    require_runnable(name, _model_device(model), dtype=dtype, fused=bool(options.get("fused", False)))
    return TorchBackend(model, **{**options, "name": name})  # type: ignore[arg-type]


PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def onnxruntime_available() -> bool:
    """ONNX Runtime and the ONNX exporter's packages are importable (the `onnx` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def openvino_available() -> bool:
    """OpenVINO (the `openvino` extra) and the ONNX exporter's packages are importable."""
    import importlib.util

    return onnxruntime_available() and importlib.util.find_spec("openvino") is not None


def auto_backend(
    precision: str = "fp32",
    *,
    device: str | torch.device = "cpu",
    weights: str | os.PathLike[str] | None = None,
    caps=None,  # noqa: ANN001 - a capabilities.Capabilities (default: this machine's probe)
    raise_missing: bool = True,
) -> str:
    """The backend `--backend auto` runs: a name `predict`, `hrpose test` and `PoseEstimator` accept.

    The rule comes from the capability probe, not from a timing at start-up (see docs/benchmarks.md: one
    rule per CPU kind, measured there with `hrpose bench`):
    - fp32 (the default: keypoints equal to the fp32 model's): on a CUDA device `torch-fast` (CUDA graphs);
      on a CPU the exported graph (a checkpoint is exported and self-checked in ONNX Runtime once, then cached,
      `hrpose.onnx_cache`) in `openvino` where the `openvino` extra is installed (faster than ONNX Runtime on the
      AVX2 machine in every run measured, docs/benchmarks.md), else `onnxruntime`; `torch-fast` where neither
      is installed; an `.onnx` file given as weights runs in ONNX Runtime as exported;
    - bf16 (asked for): `torch-bf16` where the CPU has bf16 arithmetic (AMX / AVX512_BF16) or the GPU bf16;
    - fp16 (asked for): `torch-fp16` on a CUDA device; a CPU refuses (fp16 convs are slower than fp32);
    - int8 (asked for): `onnxruntime` on an int8 model made by `hrpose export --int8-calib` (`weights`).
    A precision this machine cannot run fast raises `BackendUnavailableError` naming what is missing
    (raise_missing=False: returns the message prefixed by "unavailable: " instead, for `hrpose info`).
    """
    from .capabilities import probe

    caps = caps or probe()
    device = torch.device(device)
    onnx_weights = weights is not None and Path(weights).suffix.lower() == ".onnx"
    why = ""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":  # OpenVINO int8 IR from NNCF (hrpose.quantize); ONNX Runtime int8 is retired
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


def onnxruntime_from_model(
    model: nn.Module, input_size_wh: tuple[int, int], *, threads: int | None = None, spinning: bool = True
) -> OnnxRuntimeBackend:
    """`model` exported to ONNX (dynamic batch, checked against PyTorch, see `hrpose.export`) and loaded into
    ONNX Runtime. The checked graph is cached under `$HRPOSE_HOME/onnx` keyed by the weights, the input size and
    the versions (`hrpose.onnx_cache`): the same checkpoint starts without exporting again."""
    from .onnx_cache import load_exported

    return load_exported(
        model, input_size_wh,
        lambda report: OnnxRuntimeBackend(report.path, threads=threads, spinning=spinning, name="onnxruntime"),
    )  # fmt: skip


def openvino_from_model(model: nn.Module, input_size_wh: tuple[int, int], *, threads: int | None = None
                        ) -> OpenVinoBackend:  # fmt: skip
    """`model` exported to ONNX (dynamic batch, checked against PyTorch in ONNX Runtime, see `hrpose.export`)
    and compiled by OpenVINO (fp32); the checked graph comes from / goes to the export cache, as in
    `onnxruntime_from_model`."""
    from .onnx_cache import load_exported

    return load_exported(model, input_size_wh,
                         lambda report: OpenVinoBackend(report.path, threads=threads, name="openvino"))  # fmt: skip
