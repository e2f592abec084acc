"""`hrpose test --cfg FILE [KEY VALUE ...]`: the official tools/test.py command line.

Loads TEST.MODEL_FILE (or final_state.pth from the experiment's output directory), predicts over
DATASET.TEST_SET and prints the COCO AP / MPII PCKh table. Works under torchrun too (sharded inference).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from hrpose.config import add_official_arguments

    add_official_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from hrpose.config import config_from_args
    from hrpose.engine import test
    from hrpose.engine.logging import name_value_table

    cfg = config_from_args(args)
    result = test(cfg, args.cfg)
    tables = result["name_values"]
    for table in tables if isinstance(tables, (list, tuple)) else [tables]:
        if table:
            print(name_value_table(table, str(cfg.MODEL.NAME)))
    return 0
