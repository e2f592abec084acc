"""`hrpose train --cfg FILE [KEY VALUE ...]`: the official tools/train.py command line.

Single process: the GPU if there is one, else the CPU. Multi-GPU: launch with torchrun, e.g.
``torchrun --nproc_per_node 4 -m hrpose.cli train --cfg FILE`` (DDP, TRAIN.BATCH_SIZE_PER_GPU per process).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hrpose.config import add_official_arguments

    add_official_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hrpose.config import config_from_args
    from hrpose.engine import train
    from hrpose.models import check_model_config

    cfg = config_from_args(args)
    check_model_config(cfg, training=True)  # before any folder or file is made
    result = train(cfg, args.cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"=> best perf {result['best_perf']:.4f}; final weights: {result['final_state']}")
    return 0
