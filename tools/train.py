"""Train a model with the official command line (as `hrpose train`; only parses and hands over):

    python tools/train.py --cfg FILE [--modelDir DIR] [--logDir DIR] [--dataDir DIR] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hrpose.cli import add_debug_argument, run_command
from hrpose.config import add_official_arguments


def main(argv: Sequence[str] | None = None) -> int:
    command = importlib.import_module("hrpose.commands.train")
    parser = argparse.ArgumentParser(prog="tools/train.py", description="Train keypoints network")
    # The subcommand's own parser (which includes the official arguments) so that `run` finds every
    # attribute it expects; the official arguments alone if the module does not define one.
    getattr(command, "add_arguments", add_official_arguments)(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_command(command, args, "train")  # `error:` line / exit 2, as `hrpose train`


if __name__ == "__main__":
    sys.exit(main())
