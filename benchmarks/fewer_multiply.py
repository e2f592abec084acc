"""Can a fewer-multiply convolution beat direct convolution for HRNet on this CPU? Measured, layer by layer.

The lab's compute ceiling (benchmarks/ceiling.py, printed under benchmarks/backend_variants.py's table): the
model's FLOPs over the fastest rate a large direct 3x3 convolution
reaches here. Only an algorithm that does fewer multiplications can pass it. This script measures the two that
are within reach of a pip install, on the stride-1 3x3 convolutions of HRNet (C -> C channels, the basic
blocks: most of the model's FLOPs), at the resolutions of the chosen config:

* ``nnpack``: torch's bundled NNPACK (``torch._nnpack_spatial_convolution``; Winograd F(6x6, 3x3) for 3x3
  kernels on x86), against torch's own direct convolution (oneDNN);
* ``winograd-graph``: Winograd F(2x2, 3x3) written as ordinary graph operations (input transform = a
  depthwise 4x4 stride-2 convolution, the 16 products = a 16-group 1x1 convolution, output transform = a
  grouped 1x1 convolution + depth-to-space), exported to ONNX and run in OpenVINO, the `auto` backend, against
  the same layers as plain convolutions in OpenVINO. It does 2.25x fewer multiplications in the products.

Each row times a chain of ``--depth`` layers of one shape (ReLU between them, as in the model), the methods
taking turns; ``ratio`` > 1 means the fewer-multiply form is faster. ``rel err`` is the chain output's largest
deviation from direct convolution, relative to its largest value. The last row weighs each shape by how often
it occurs in the model. Usage::

    python -m benchmarks.fewer_multiply                        # pose_hrnet_w32 256x192, 2 threads
    python -m benchmarks.fewer_multiply --cfg experiments/coco/hrnet/w48_384x288_adam_lr1e-3.yaml
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hrpose.bench import machine_description
from hrpose.config import load_config
from hrpose.models import build_model
from hrpose.runtime.openvino_backend import OpenVinoBackend

# F(2x2, 3x3) (Lavin & Gray, 2016): Y = A^T [(G g G^T) * (B^T d B)] A
_BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float64)
_G = torch.tensor([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=torch.float64)
_AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float64)


class WinogradConv(nn.Module):
    """A stride-1, padding-1 3x3 convolution (C -> K, even H and W) as Winograd F(2x2, 3x3) in plain ops."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        c, k = conv.in_channels, conv.out_channels
        self.c, self.k = c, k
        tin = torch.einsum("ia,jb->ijab", _BT, _BT).reshape(16, 1, 4, 4)
        self.register_buffer("t_in", tin.repeat(c, 1, 1, 1).float())  # depthwise: channel c*16 + (i, j)
        u = torch.einsum("ia,kcab,jb->ijkc", _G, conv.weight.detach().double(), _G).reshape(16 * k, c, 1, 1)
        self.register_buffer("u", u.float())  # group (i, j): K x C
        tout = torch.einsum("pi,qj->pqij", _AT, _AT).reshape(4, 16, 1, 1)
        self.register_buffer("t_out", tout.repeat(k, 1, 1, 1).float())  # per output channel: 16 -> 2x2
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(k)
        self.register_buffer("bias", bias.view(1, k, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        v = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.t_in, stride=2, groups=self.c)
        h, w = v.shape[-2:]
        v = v.reshape(n, self.c, 16, h, w).transpose(1, 2).reshape(n, 16 * self.c, h, w)
        m = F.conv2d(v, self.u, groups=16)
        m = m.reshape(n, 16, self.k, h, w).transpose(1, 2).reshape(n, 16 * self.k, h, w)
        return F.pixel_shuffle(F.conv2d(m, self.t_out, groups=self.k), 2) + self.bias


class NnpackConv(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch._nnpack_spatial_convolution(x, self.conv.weight, self.conv.bias, [1, 1], [1, 1])


class Chain(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = F.relu(layer(x))
        return x


def basic_block_shapes(cfg_file: str) -> collections.Counter[tuple[int, int, int]]:
    """(channels, height, width) -> count of the model's stride-1 3x3 C -> C convolutions."""
    model = build_model(load_config(cfg_file)).eval()
    w, h = (int(v) for v in load_config(cfg_file).MODEL.IMAGE_SIZE)
    shapes: collections.Counter[tuple[int, int, int]] = collections.Counter()

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        assert isinstance(m, nn.Conv2d)
        if m.kernel_size == (3, 3) and m.stride == (1, 1) and m.groups == 1 and m.in_channels == m.out_channels:
            shapes[(m.in_channels, out.shape[2], out.shape[3])] += 1

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.device("meta"), torch.no_grad():
        model.to("meta")(torch.empty(1, 3, h, w))
    return shapes


def openvino_runner(module: nn.Module, x: torch.Tensor, workdir: Path, threads: int) -> Callable[[], np.ndarray]:
    """`module` exported to ONNX and run as `auto` runs it on a CPU (`OpenVinoBackend`)."""
    path = workdir / f"m{id(module)}.onnx"
    torch.onnx.export(module, (x,), str(path), opset_version=17, dynamo=False)
    backend = OpenVinoBackend(path, threads=threads)
    arr = x.numpy()
    return lambda: backend(arr)


def torch_runner(module: nn.Module, x: torch.Tensor) -> Callable[[], np.ndarray]:
    def run() -> np.ndarray:
        with torch.inference_mode():
            return module(x).numpy()

    return run


def time_pair(a: Callable[[], np.ndarray], b: Callable[[], np.ndarray], rounds: int) -> tuple[float, float]:
    """Median seconds per call of a and b, taking turns, 3 timed calls per turn after one untimed."""
    times: tuple[list[float], list[float]] = ([], [])
    for fn in (a, b):
        fn()
    for _ in range(rounds):
        for fn, t in zip((a, b), times):
            fn()
            for _ in range(3):
                t0 = time.perf_counter()
                fn()
                t.append(time.perf_counter() - t0)
    return float(np.median(times[0])), float(np.median(times[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cfg", default="experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--depth", type=int, default=6, help="layers per timed chain")
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    shapes = basic_block_shapes(args.cfg)
    try:
        import openvino  # noqa: F401

        have_ov = True
    except ImportError:
        have_ov = False
    have_nnpack = torch.backends.nnpack.is_available() and torch._nnpack_available()  # (also initialises NNPACK)
    print(f"{args.cfg}: stride-1 3x3 C->C convolutions; {machine_description()}\n")
    head = "| C x H x W | in model |"
    if have_nnpack:
        head += " torch direct ms | NNPACK ms | ratio | rel err |"
    if have_ov:
        head += " OpenVINO direct ms | Winograd-graph ms | ratio | rel err |"
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    totals = collections.defaultdict(float)
    with tempfile.TemporaryDirectory() as tmp:
        for (c, h, w), count in sorted(shapes.items(), key=lambda kv: -kv[0][1]):
            convs = [nn.Conv2d(c, c, 3, padding=1) for _ in range(args.depth)]
            for conv in convs:
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            direct = Chain(convs).eval()
            x = torch.randn(1, c, h, w)
            with torch.no_grad():
                ref = direct(x).numpy()
            scale = float(np.abs(ref).max())
            cells = [f"{c} x {h} x {w}", str(count)]
            if have_nnpack:
                fast = Chain([NnpackConv(conv) for conv in convs]).eval()
                out = torch_runner(fast, x)()
                t_d, t_f = time_pair(torch_runner(direct, x), torch_runner(fast, x), args.rounds)
                t_d, t_f = t_d / args.depth, t_f / args.depth
                totals["torch direct"] += count * t_d
                totals["nnpack"] += count * t_f
                cells += [f"{1e3 * t_d:.3f}", f"{1e3 * t_f:.3f}", f"{t_d / t_f:.2f}x",
                          f"{np.abs(out - ref).max() / scale:.1e}"]  # fmt: skip
            if have_ov:
                wino = Chain([WinogradConv(conv) for conv in convs]).eval()
                run_d = openvino_runner(direct, x, Path(tmp), args.threads)
                run_w = openvino_runner(wino, x, Path(tmp), args.threads)
                out = run_w()
                t_d, t_w = time_pair(run_d, run_w, args.rounds)
                t_d, t_w = t_d / args.depth, t_w / args.depth
                totals["openvino direct"] += count * t_d
                totals["winograd"] += count * t_w
                cells += [f"{1e3 * t_d:.3f}", f"{1e3 * t_w:.3f}", f"{t_d / t_w:.2f}x",
                          f"{np.abs(out - ref).max() / scale:.1e}"]  # fmt: skip
            print("| " + " | ".join(cells) + " |")
    cells = ["all of them, weighted", str(sum(shapes.values()))]
    if have_nnpack:
        d, f = totals["torch direct"], totals["nnpack"]
        cells += [f"{1e3 * d:.1f}", f"{1e3 * f:.1f}", f"{d / f:.2f}x", ""]
    if have_ov:
        d, f = totals["openvino direct"], totals["winograd"]
        cells += [f"{1e3 * d:.1f}", f"{1e3 * f:.1f}", f"{d / f:.2f}x", ""]
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
