"""Evaluate a model with the official command line (as `hrpose test`; only parses and hands over):

    python tools/test.py --cfg FILE [--modelDir DIR] [--logDir DIR] [--dataDir DIR] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from hrpose.cli import add_debug_argument, run_command
from hrpose.config import add_official_arguments


def main(argv: Sequence[str] | None = None) -> int:
    command = importlib.import_module("hrpose.commands.test")
    parser = argparse.ArgumentParser(prog="tools/test.py", description="Test keypoints network")
    # The subcommand's own parser (which includes the official arguments) so that `run` finds every
    # attribute it expects; the official arguments alone if the module does not define one.
    getattr(command, "add_arguments", add_official_arguments)(parser)
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    return run_command(command, args, "test")  # `error:` line / exit 2, as `hrpose test`


if __name__ == "__main__":
    sys.exit(main())
