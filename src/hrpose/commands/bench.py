"""`hrpose bench --cfg FILE [--weights FILE] [--json] [--write docs/benchmarks.md]`.

One run, same machine, same weights: the official-style eager fp32 baseline and every backend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CROPS = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "coco-mini"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="experiment config (YAML)")
    parser.add_argument(
        "--weights",
        default=None,
        help="checkpoint; without it the model has seeded random weights (timings only: the "
        "keypoint deviation of untrained weights says little)",
    )
    parser.add_argument(
        "--crops-root",
        default=str(DEFAULT_CROPS),
        help="COCO-layout folder whose ground-truth person crops feed calibration and deviation",
    )
    parser.add_argument("--crops-set", default="train2017")
    parser.add_argument("--num-crops", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument(
        "--backends", nargs="+", default=["torch-fp32", "torch-bf16", "onnxruntime-fp32", "onnxruntime-int8"]
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--write", default=None, metavar="MD", help="append the table to this markdown file")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..bench import machine_description, markdown_table, real_crops, rows_to_json, run_bench
    from ..config import load_config
    from ..models import build_model
    from ..models.weights import load_weights

    cfg = load_config(args.cfg, args.opts)
    torch.manual_seed(0)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    root = Path(args.crops_root)
    crops = real_crops(
        root / "images" / args.crops_set,
        root / "annotations" / f"person_keypoints_{args.crops_set}.json",
        size,
        args.num_crops,
    )
    log = (lambda s: None) if args.json else print
    rows = run_bench(
        model,
        size,
        crops,
        batch_sizes=tuple(args.batch_sizes),
        iters=args.iters,
        backends=tuple(args.backends),
        log=log,
    )
    table = markdown_table(rows, tuple(args.batch_sizes))
    machine = machine_description()
    weights = args.weights or "seeded random weights"
    if args.json:
        print(
            json.dumps(
                {
                    "config": args.cfg,
                    "weights": weights,
                    "machine": machine,
                    "crops": int(len(crops)),
                    "rows": rows_to_json(rows),
                },
                indent=2,
            )
        )
    else:
        print(f"\n{args.cfg} ({weights}) on {machine}; deviation over {len(crops)} real crops\n")
        print(table)
    if args.write:
        with open(args.write, "a") as f:
            f.write(
                f"\n### `{args.cfg}` ({weights})\n\nMachine: {machine}. Deviation: decoded keypoints vs the "
                f"baseline over {len(crops)} real crops from `{root.name}`, in input pixels.\n\n{table}\n"
            )
    return 0
