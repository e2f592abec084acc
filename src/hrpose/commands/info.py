"""`hrpose info [--json]`: what this machine can run (the capability probe) and the versions of what runs it,
so a bug report carries both; which backend `--backend auto` picks here; and where its ONNX export cache is
(`hrpose.runtime.onnx_cache`) and how large."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print everything as one JSON object")


def run(args: argparse.Namespace) -> int:
    from ..runtime import auto_backend
    from ..runtime.capabilities import probe, versions
    from ..runtime.onnx_cache import cache_usage

    caps = probe()
    picks = {p: auto_backend(p, device="cpu", caps=caps, raise_missing=False) for p in ("fp32", "bf16", "int8")}
    if caps.cuda_device:
        picks.update({f"cuda {p}": auto_backend(p, device="cuda", caps=caps, raise_missing=False)
                      for p in ("fp32", "fp16", "bf16")})  # fmt: skip
    info = {
        "machine": caps.line(),
        "cpu": caps.cpu_name,
        "arch": caps.arch,
        "isa": sorted(caps.features),
        "isa_without_caps": sorted(caps.hw_features),
        "caps": caps.cap_text(),
        "aten_capability": caps.aten_capability,
        "onednn": caps.onednn,
        "onednn_fusion_fp32": caps.fusion_fp32,
        "bf16_hardware": caps.bf16_hardware,
        "bf16_fast": caps.bf16_fast,
        "bf16_missing": caps.missing("bf16"),
        "cuda_device": caps.cuda_device,
        "cuda_capability": ".".join(map(str, caps.cuda_capability)) if caps.cuda_capability else None,
        "cuda_fp16": caps.cuda_fp16,
        "cuda_bf16": caps.cuda_bf16,
        "auto_backend": picks,
        "onnx_cache": dict(zip(("folder", "graphs", "bytes"), cache_usage(), strict=True)),
        "versions": versions(),
        "notes": list(caps.notes),
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))  # the cache folder: a Path
        return 0
    print(info["machine"])
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key in ("machine", "versions", "auto_backend", "onnx_cache"):
            continue
        if isinstance(value, list):
            value = " ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value if value not in (None, '') else '-'}")
    print("auto backend  " + "; ".join(f"{p}: {b}" for p, b in picks.items()))
    folder, graphs, size = cache_usage()
    print(
        f"onnx cache    {folder} ({graphs} graph{'s' if graphs != 1 else ''}, {size / 1e6:.1f} MB; auto's exported "
        "checkpoints, safe to delete)"
    )
    print("versions      " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    return 0
