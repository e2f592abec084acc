"""Train a model with the official command line (as `hrpose train`; only parses and hands over):

    python tools/train.py --cfg FILE [--modelDir DIR] [--logDir DIR] [--dataDir DIR] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hrpose.config import add_official_arguments


def main(argv: Sequence[str] | None = None) -> int:
    command = importlib.import_module("hrpose.commands.train")
    parser = argparse.ArgumentParser(prog="tools/train.py", description="Train keypoints network")
    # The subcommand's own parser (which includes the official arguments) so that `run` finds every
    # attribute it expects; the official arguments alone if the module does not define one.
    getattr(command, "add_arguments", add_official_arguments)(parser)
    args = parser.parse_args(argv)
    return int(command.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
