"""`hrpose test --cfg FILE [KEY VALUE ...]`: the official tools/test.py command line.

Loads TEST.MODEL_FILE (or final_state.pth from the experiment's output directory), predicts over
DATASET.TEST_SET and prints the COCO AP / MPII PCKh table. Works under torchrun too (sharded inference).
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hrpose.config import add_official_arguments

    add_official_arguments(parser)
    parser.add_argument("--precision", default=None, choices=("fp32", "int8"),
                        help="int8: run TEST.MODEL_FILE, an OpenVINO IR (.xml) from `hrpose export --format openvino "
                        "--int8-calib`, on the CPU (HRPOSE.BACKEND openvino-int8)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from hrpose.config import config_from_args
    from hrpose.engine import test
    from hrpose.models import check_model_config

    if getattr(args, "precision", None) == "int8":
        args.opts = [*(args.opts or []), "HRPOSE.BACKEND", "openvino-int8"]
    cfg = config_from_args(args)
    check_model_config(cfg)  # before any folder or file is made
    result = test(cfg, args.cfg)  # logs the results table (console + log file)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"=> results in {result['output_dir']}")
    return 0
