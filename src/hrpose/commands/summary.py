"""`hrpose summary --cfg FILE [--json] [KEY VALUE ...]`: parameters and GFLOPs of a model config."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="experiment config (YAML)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def format_table(s: dict) -> str:
    """The columns of the official results tables: Arch, input size, #Params, GFLOPs (+ the published row)."""
    w, h = s["input_size_wh"]
    pub = s.get("published") or {}
    rows = [
        ("Arch", "Input size", "#Params", "GFLOPs", "GFLOPs (2 dp)", "real GFLOPs", "Joints", "published"),
        (
            s["model"],
            f"{h}x{w}",
            f"{s['params'] / 1e6:.1f}M",
            f"{s['gflops_official']:.1f}",
            f"{s['gflops_official']:.2f}",
            f"{s['gflops']:.1f}",
            str(s["num_joints"]),
            f"{pub['params']} / {pub['gflops']:.1f}" if pub else "-",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows]
    lines.append(
        "GFLOPs: official formula (conv/linear multiply-adds / 1024^3, deconvs at output size); "
        "real GFLOPs: torch FlopCounterMode (2 per multiply-add) / 1e9; published: #Params / GFLOPs in the "
        "official COCO results table (its ResNet GFLOPs come from the SimpleBaseline paper's counting)."
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from hrpose.config import load_config
    from hrpose.models.summary import model_summary

    cfg = load_config(args.cfg, args.opts)
    summary = model_summary(cfg)
    print(json.dumps(summary) if args.json else format_table(summary))
    return 0
