"""Quick-start benchmark: synthetic people -> train the small HRNet -> keypoint AP on the held-out split.

    python -m benchmarks.synthetic_train [--out DIR] [--images 1000] [--val-images 100] [KEY VALUE ...]

Prints the wall-clock training time and the pycocotools keypoint AP on the `val` split, and whether the
goal (AP >= 0.5 after at most 10 minutes of training on 2 CPU cores) was met. Trailing KEY VALUE pairs
override the config, e.g. `TRAIN.END_EPOCH 6`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "experiments" / "synthetic" / "w16_128x96_synth.yaml"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="output/bench_synthetic", help="working folder (data + outputs)")
    p.add_argument("--cfg", default=str(CFG))
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--val-images", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-min", type=float, default=10.0, help="training time goal in minutes")
    p.add_argument("--ap-goal", type=float, default=0.5)
    p.add_argument("opts", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)

    import torch

    from hrpose.config import load_config
    from hrpose.engine import test, train
    from hrpose.synth import write_synthetic_dataset

    out = Path(args.out)
    data = out / "synth"
    if not (data / "annotations" / "person_keypoints_val.json").is_file():
        t0 = time.perf_counter()
        write_synthetic_dataset(data, args.images, args.seed, split="train")
        write_synthetic_dataset(data, args.val_images, args.seed + 1, split="val")
        print(f"synthetic data: {args.images} train / {args.val_images} val images in {time.perf_counter() - t0:.0f} s")
    opts = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(out / "output"), "LOG_DIR", str(out / "log"), *args.opts]
    cfg = load_config(args.cfg, opts)
    t0 = time.perf_counter()
    result = train(cfg, args.cfg)
    minutes = (time.perf_counter() - t0) / 60
    test_cfg = load_config(args.cfg, [*opts, "TEST.MODEL_FILE", str(result["final_state"])])
    name_values = test(test_cfg, args.cfg)["name_values"]
    ap = float(name_values["AP"])
    ok = ap >= args.ap_goal and minutes <= args.budget_min
    summary = {
        "config": args.cfg,
        "train_minutes": round(minutes, 2),
        "AP": round(ap, 4),
        "AP .5": round(float(name_values["Ap .5"]), 4),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "goal": f"AP >= {args.ap_goal} within {args.budget_min:g} min",
        "met": ok,
    }
    print(json.dumps(summary))
    verdict = "MET" if ok else "NOT met"
    print(f"trained in {minutes:.1f} min, keypoint AP {ap:.3f} on the held-out split: goal {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
