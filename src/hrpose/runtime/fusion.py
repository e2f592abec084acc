"""oneDNN post-op fusion and weight pre-packing for CPU inference (what `torch-bf16` runs).

HRNet is ~300 convolutions, most of them small (the low-resolution branches are 8x6 pixels at 256x192),
so at batch 1 a CPU spends its time around the convs, not in them: PyTorch's plain `conv2d` re-orders the
weights into oneDNN's blocked layout on every call (a 256-channel 3x3 conv at 8x6: ~300 us plain, ~50 us
pre-packed, bf16, 2 cores), and each `add` / `relu` after a conv is a separate pass over memory.

`fuse_pointwise(model, example)` rewrites a BatchNorm-folded model's FX graph so that

- `conv -> relu` becomes one oneDNN convolution with a ReLU post-op,
- `conv -> add(other) [-> relu]` (residual blocks, HRNet's downsampling fuse paths) one convolution with
  binary-add (+ ReLU) post-ops: the sum is taken in the fp32 accumulator and rounded once, so in bf16 it
  is also *more* accurate than three separately rounded ops,
- every other conv a oneDNN convolution without post-ops,

each with its weight packed once into oneDNN's layout for `example`'s shape (a packed weight serves any
batch size). Convs listed in `keep` (the fp32 heatmap head) stay as they are. Operators are PyTorch's own
`torch.ops.mkldnn._convolution_pointwise` (what inductor's CPU backend emits); no extension is built.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable

import torch
from torch import fx, nn

from hrpose.errors import BackendUnavailableError

from . import capabilities  # capabilities.probe() looked up per call: one probe, patchable in tests

_RELU_FUNCTIONS = (torch.relu, torch.nn.functional.relu, torch.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


def pointwise_fusion_available(dtype: torch.dtype = torch.float32) -> bool:
    """True where the fused convolution really runs in `dtype` on this machine: PyTorch has oneDNN with the
    fused operators and a tiny packed conv+ReLU gives the right result (tried once per process, see
    `hrpose.runtime.capabilities`); for bf16 also only where the CPU has bf16 arithmetic within the
    ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY caps (elsewhere oneDNN refuses or emulates it, ~10x slower)."""
    caps = capabilities.probe()
    if dtype == torch.bfloat16:
        return caps.bf16_fast
    if dtype == torch.float32:
        return caps.fusion_fp32
    return False


def _conv_args(conv: nn.Conv2d) -> tuple[list[int], list[int], list[int], int]:
    if isinstance(conv.padding, str):
        raise ValueError(f"fuse_pointwise: string padding {conv.padding!r} is not supported")
    return list(conv.padding), list(conv.stride), list(conv.dilation), int(conv.groups)


def fuse_pointwise(
    model: nn.Module, example: torch.Tensor, *, keep: Iterable[str] = (), pack: bool = True
) -> fx.GraphModule:
    """A copy of `model` (BatchNorm already folded; any dtype; eval) with convs fused as described above.

    example: an input of the shape (any batch size) and dtype / memory format the model will get; its
    per-conv shapes decide the packed weight layouts. keep: qualified names of `nn.Conv2d` modules left
    alone. pack=False keeps plain weights (for comparisons).
    """
    dtype = example.dtype
    if not pointwise_fusion_available(dtype):
        caps = capabilities.probe()
        why = caps.missing("bf16") if dtype == torch.bfloat16 else caps.missing("fusion") or f"not for {dtype}"
        raise BackendUnavailableError(f"fuse_pointwise: oneDNN fusion cannot run here in {dtype}: {why}")
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    modules = dict(gm.named_modules())
    keep = set(keep)
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(example)

    def module(n: fx.Node) -> nn.Module | None:
        return modules.get(str(n.target)) if n.op == "call_module" else None

    def is_conv(n: fx.Node) -> bool:
        m = module(n)
        return isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d and str(n.target) not in keep

    def is_relu(n: fx.Node) -> bool:
        return isinstance(module(n), nn.ReLU) or (n.op == "call_function" and n.target in _RELU_FUNCTIONS)

    def is_add(n: fx.Node) -> bool:
        return (
            n.op == "call_function"
            and n.target in _ADD_FUNCTIONS
            and len(n.args) == 2
            and not n.kwargs
            and all(isinstance(a, fx.Node) for a in n.args)
        )

    def weight_attr(n: fx.Node, conv: nn.Conv2d) -> tuple[fx.Node, fx.Node | None]:
        """get_attr nodes for the (packed) weight and bias of `conv`, registered as buffers."""
        base = str(n.target).replace(".", "_")
        w = conv.weight.detach()
        if pack:
            x_meta = n.args[0].meta["tensor_meta"]  # type: ignore[union-attr]
            w = torch.ops.mkldnn._reorder_convolution_weight(w, *_conv_args(conv), list(x_meta.shape))
        gm.register_buffer(f"{base}_w", w)
        wn = gm.graph.get_attr(f"{base}_w")
        bn = None
        if conv.bias is not None:
            gm.register_buffer(f"{base}_b", conv.bias.detach())
            bn = gm.graph.get_attr(f"{base}_b")
        return wn, bn

    graph = gm.graph
    fused: dict[str, int] = {"conv+relu": 0, "conv+add": 0, "conv+add+relu": 0, "conv": 0}
    for n in list(graph.nodes):
        if not is_conv(n):
            continue
        conv = modules[str(n.target)]
        assert isinstance(conv, nn.Conv2d)
        user = next(iter(n.users)) if len(n.users) == 1 else None
        other = None
        last, unary = n, None
        if user is not None and is_relu(user):
            last, unary = user, "relu"
        elif user is not None and is_add(user):
            candidate = user.args[1] if user.args[0] is n else user.args[0]
            assert isinstance(candidate, fx.Node)
            if candidate is not n and candidate.meta["tensor_meta"].shape == n.meta["tensor_meta"].shape:
                other, last = candidate, user
                after = next(iter(user.users)) if len(user.users) == 1 else None
                if after is not None and is_relu(after):
                    last, unary = after, "relu"
        with graph.inserting_before(n):
            wn, bn = weight_attr(n, conv)
        pad, stride, dil, groups = _conv_args(conv)
        with graph.inserting_after(last):
            if other is None:
                new = graph.call_function(
                    torch.ops.mkldnn._convolution_pointwise,
                    (n.args[0], wn, bn, pad, stride, dil, groups, unary or "none", [], ""),
                )
            else:
                new = graph.call_function(
                    torch.ops.mkldnn._convolution_pointwise.binary,
                    (n.args[0], other, wn, bn, pad, stride, dil, groups, "add", 1.0, unary, [], ""),
                )
        new.meta = dict(last.meta)
        last.replace_all_uses_with(new)
        chain = [n] + ([user] if user is not None and user is not last and last is not n else [])
        chain += [last] if last is not n else []
        for dead in reversed(chain):  # relu, add, conv: each unused once the fused node took its place
            if not dead.users:
                graph.erase_node(dead)
        key = "conv" + ("+add" if other is not None else "") + ("+relu" if unary else "")
        fused[key] += 1
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    gm.fused_counts = fused  # type: ignore[assignment]
    return gm
