"""The PyTorch engine: `TorchBackend` runs a torch model under `inference_mode`, on the device of its weights.

By default BatchNorm is folded into the convs (a copy) and the input made channels_last; `live=True` runs the
caller's model itself (validation during training, `hrpose test`'s "torch"). The options (jit, compile, CUDA
graphs, oneDNN post-op fusion, bf16/fp16 weights, autocast) are arguments; `TORCH_CONFIGS` names the product's
combinations of them (the registry, `hrpose.runtime.registry`, picks one per device). Every configuration this
machine cannot run refuses with a `BackendUnavailableError` before it is built (`require_runnable`): none
crashes later, none runs an emulated path (bf16 on a CPU without bf16 arithmetic: far slower than fp32,
see docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hrpose.errors import BackendUnavailableError
from hrpose.export import fold_batchnorm
from hrpose.models.outputs import last_stage

from . import capabilities
from .base import as_tensor, model_device
from .fusion import fuse_pointwise


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
    (switched on only while tracing and profiling); faster in bf16 on AMX (docs/benchmarks.md), but its results
    differ from the model's far beyond rounding (torch 2.13): for measurements, not for use;
    fp32_head: with a reduced `dtype`, keep the last conv (the heatmap head) in fp32;
    jit: trace and freeze (TorchScript) at the first batch shape, re-traced when the shape changes;
    compile: `torch.compile` (inductor; slow to start), with `compile_options` (inductor options;
    default freezing); cuda_graph: on a CUDA model, capture the forward pass as a CUDA graph per batch
    size (batches padded up to a power of two, so a video's varying person counts reuse a few graphs) and
    replay it: one launch instead of hundreds of small kernels, which is what batch 1 on a GPU waits on;
    fused: on a CPU, rewrite the graph with oneDNN post-op fusion and pre-packed weights at the first call
    (`hrpose.runtime.fusion.fuse_pointwise`): conv+relu and conv+add+relu as single convolutions, weights
    re-ordered once instead of per call (faster than frozen TorchScript at batch 1, docs/benchmarks.md; and the
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
        self.device = model_device(model)
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
                x = as_tensor(batch).to(self.device, dtype=self.dtype)
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
    fast and correctly (see `hrpose.runtime.capabilities`); `label` names the backend in the message."""
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


#: The product's torch configurations: registry name -> (TorchBackend options on a CPU, on a CUDA GPU). Each
#: name means one thing (the fastest way to run that precision in PyTorch on the model's device); exploratory,
#: benchmark-only variants (oneDNN Graph fusion, bf16 autocast, fp16 autocast, ...) live in
#: `benchmarks/backend_variants.py`.
TORCH_CONFIGS: dict[str, tuple[dict[str, object], dict[str, object]]] = {
    # fp32, same numbers as "torch": frozen TorchScript on a CPU, CUDA-graph replay on a GPU
    "torch-fast": ({"jit": True}, {"cuda_graph": True}),
    # bf16 weights and activations with an fp32 heatmap head: oneDNN post-op fusion with pre-packed weights on a
    # CPU (AMX / AVX-512 BF16), CUDA graphs on a GPU
    "torch-bf16": ({"dtype": torch.bfloat16, "fp32_head": True, "fused": True},
                   {"dtype": torch.bfloat16, "fp32_head": True, "cuda_graph": True}),  # fmt: skip
    # GPUs (a CPU refuses fp16: slower than fp32 there)
    "torch-fp16": ({"dtype": torch.float16, "fp32_head": True},
                   {"dtype": torch.float16, "fp32_head": True, "cuda_graph": True}),  # fmt: skip
    # fp32 through inductor (frozen weights); on a GPU with inductor's own CUDA graphs
    "torch-compile": ({"compile": True}, {"compile": True, "compile_options": {"freezing": True,
                                                                             "triton.cudagraphs": True}}),
}


def torch_config(name: str, model: nn.Module) -> TorchBackend:
    """The `TORCH_CONFIGS` entry `name` for the device `model` is on (named `name`)."""
    cpu, cuda = TORCH_CONFIGS[name]
    return named_torch_backend(name, model, cuda if model_device(model).type == "cuda" else cpu)


def named_torch_backend(name: str, model: nn.Module, options: dict[str, object]) -> TorchBackend:
    """`TorchBackend(model, **options)` named `name`, after `require_runnable` has checked (with `name` in
    its message) that this machine can run it: a `BackendUnavailableError` otherwise. `torch_config`
    builds the product's configurations with it, `benchmarks/backend_variants.py` the exploratory ones."""
    dtype = options.get("dtype", torch.float32)
    assert isinstance(dtype, torch.dtype)
    require_runnable(name, model_device(model), dtype=dtype, fused=bool(options.get("fused", False)))
    return TorchBackend(model, **{**options, "name": name})  # type: ignore[arg-type]


def plain_torch(model: nn.Module, *, fold_bn: bool = True, amp_dtype: torch.dtype | None = None,
                channels_last: bool = False) -> TorchBackend:  # fmt: skip
    """The "torch" backend: the model in eager PyTorch, fp32 keypoints.

    fold_bn: run a copy with BatchNorm folded into the convs (equal to the model within float rounding; a model
    FX cannot trace runs unfolded); fold_bn=False runs the caller's model itself, never a copy (later changes
    to it are seen; validation during training, `hrpose test`): eval mode and `inference_mode` for each call,
    its train mode given back after, AMP autocast with `amp_dtype`, inputs made channels_last with
    `channels_last` (the model is expected to be converted already)."""
    if fold_bn and amp_dtype is None and not channels_last:
        try:
            return TorchBackend(model, fold_bn=True, channels_last=False, name="torch")
        except Exception as e:  # a model FX cannot trace runs unfolded
            warnings.warn(f"BatchNorm folding failed ({e}): running the model unfolded", stacklevel=2)
    return TorchBackend(model, fold_bn=False, channels_last=channels_last, dtype=amp_dtype or torch.float32,
                        autocast=amp_dtype is not None, live=True, name="torch")  # fmt: skip
