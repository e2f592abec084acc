"""`hrpose` console script: argparse -> the subcommand's module. Nothing else lives here."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module under hrpose.commands, one-line help). Adding a subcommand is one entry here
# and one module with add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("summary", "parameters and GFLOPs of a model config"),
    "train": ("train", "train a model from an experiment YAML"),
    "test": ("test", "evaluate a model (COCO AP / MPII PCKh) from an experiment YAML"),
    "predict": ("predict", "pose on images, folders, videos or a webcam"),
    "export": ("export", "export a model to ONNX and check it in ONNX Runtime"),
    "bench": ("bench", "benchmark inference backends against the eager baseline"),
    "synth": ("synth", "write a synthetic COCO-format person-keypoint dataset"),
    "models": ("models", "list the model zoo and fetch pretrained weights into the cache"),
    "serve": ("serve", "serve pose estimation over HTTP: a JSON API and a web page"),
}


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrpose", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (its arguments are only needed then).
        if name == wanted:
            _load(module).add_arguments(p)
    return parser


def _load(module: str):
    return importlib.import_module(f"hrpose.commands.{module}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = _load(COMMANDS[args.command][0])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
