"""Exploratory torch backend variants: measured in docs/benchmarks.md, not offered to users.

`hrpose.runtime.torch_backend.TORCH_CONFIGS` keeps only the product's configurations (what `torch`, `torch-fast`,
`torch-bf16`, `torch-fp16` and `torch-compile` run on a CPU or a CUDA GPU). The variants tried on the way
there live here: `VARIANTS` maps each name to its `TorchBackend` keyword arguments, `make_variant` builds one
(refusing with `BackendUnavailableError` what this machine cannot run, as the product names do), and
`factories` gives them in the form `hrpose.bench.run_bench(extra_backends=...)` takes.

Run: `python benchmarks/backend_variants.py --cfg FILE --crops-root DIR [--weights W] [hrpose bench options]`:
`hrpose bench` with these variants added. Without `--backends` it shows bench's default rows plus the
exploratory rows of the recorded tables (`CPU_ROWS` / `GPU_ROWS`), leaving out what this machine cannot run;
`--backends` may name any product backend or variant.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

try:
    from hrpose.runtime.torch_backend import TorchBackend, named_torch_backend
except ImportError:  # run as a file from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from hrpose.runtime.torch_backend import TorchBackend, named_torch_backend

# name -> TorchBackend keyword arguments
VARIANTS: dict[str, dict[str, object]] = {
    # CPU
    "torch-fp32-onednn": {"jit": True, "onednn_fusion": True},  # TorchScript + oneDNN Graph (LLGA) fusion
    "torch-fp32-fused": {"fused": True},  # oneDNN post-op fusion, pre-packed weights, fp32
    "torch-bf16-autocast": {"dtype": torch.bfloat16, "autocast": True},  # fp32 weights, bf16 autocast
    "torch-bf16-jit": {"dtype": torch.bfloat16, "jit": True, "fp32_head": True},  # frozen TorchScript in bf16
    "torch-bf16-bf16head": {"dtype": torch.bfloat16, "jit": True},  # ... with the heatmap head in bf16 too
    # oneDNN Graph fusion: 2x faster, but NOT exact (fp32 heatmaps off by up to 25% of their range with
    # torch 2.13): benchmark-only, see docs/benchmarks.md
    "torch-bf16-onednn": {"dtype": torch.bfloat16, "jit": True, "fp32_head": True, "onednn_fusion": True},
    "torch-bf16-eager": {"dtype": torch.bfloat16},  # bf16 weights, eager, bf16 head
    "torch-bf16-compile": {"dtype": torch.bfloat16, "compile": True, "fp32_head": True},
    # GPU (CUDA)
    "torch-fp16-autocast": {"dtype": torch.float16, "autocast": True},
    # inductor + its own CUDA graphs (the "reduce-overhead" mode) on frozen fp16 weights
    "torch-fp16-compile": {
        "dtype": torch.float16,
        "fp32_head": True,
        "compile": True,
        "compile_options": {"freezing": True, "triton.cudagraphs": True},
    },
}

# the exploratory rows of the recorded tables, added to bench's default rows when --backends is not given
CPU_ROWS = ("torch-fp32-fused", "torch-bf16-autocast", "torch-bf16-jit")
GPU_ROWS = ("torch-fp16-autocast", "torch-fp16-compile")
PROGRAM = "python benchmarks/backend_variants.py"


def make_variant(name: str, model: nn.Module) -> TorchBackend:
    """The `VARIANTS` entry `name` around `model`; `BackendUnavailableError` when this machine cannot run it."""
    if name not in VARIANTS:
        raise ValueError(f"unknown backend variant {name!r}; choose from {sorted(VARIANTS)}")
    return named_torch_backend(name, model, VARIANTS[name])


def factories(names: Sequence[str] | None = None) -> dict[str, Callable[[nn.Module], TorchBackend]]:
    """name -> model -> backend, for `hrpose.bench.run_bench(extra_backends=...)` (default: every variant)."""
    return {name: (lambda model, name=name: make_variant(name, model)) for name in (names or VARIANTS)}  # type: ignore[misc]


def main(argv: Sequence[str] | None = None) -> int:
    """`hrpose bench` with the variants added (same options and the same error path; see the docstring)."""
    import argparse
    import types

    from hrpose.cli import add_debug_argument, run_command
    from hrpose.commands import bench

    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_debug_argument(parser)
    bench.add_arguments(parser)
    args = parser.parse_args(argv)
    command = types.ModuleType("backend_variants_bench")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's ceiling.py (the lab's lines)
    from ceiling import lab_lines

    def lines(rows: list, model: object, cfg: object) -> str:  # the ceiling is a CPU bound
        return lab_lines(rows, model, cfg) if args.device == "cpu" else ""

    command.run = lambda a: bench.run(a, extra_backends=factories(), extra_defaults={"cpu": CPU_ROWS, "cuda": GPU_ROWS},
                                      program=PROGRAM, extra_lines=lines)  # type: ignore[attr-defined]  # fmt: skip
    return run_command(command, args, "bench")


if __name__ == "__main__":
    sys.exit(main())
