"""`hrpose` console script: argparse -> the subcommand's module, and the one error path of every command.

Every command ends the same way (:func:`run_command`): a user's mistake (:class:`hrpose.errors.UserError`)
prints one line ``error: <message>`` on stderr and exits 2; Ctrl-C exits 130 after saying what was kept
and how to resume; any other exception is a bug in hrpose and keeps its traceback. ``--debug`` (on every
command) or ``HRPOSE_DEBUG=1`` prints the traceback for user errors and interrupts too.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from types import ModuleType

# subcommand -> (module under hrpose.commands, one-line help). Adding a subcommand is one entry here
# and one module with add_arguments(parser) and run(args).
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("summary", "parameters and GFLOPs of a model config"),
    "train": ("train", "train a model from an experiment YAML"),
    "test": ("test", "evaluate a model (COCO AP / MPII PCKh) from an experiment YAML"),
    "predict": ("predict", "find people's keypoints in images, folders, videos, webcams and live streams"),
    "export": ("export", "export a model to ONNX and check it in ONNX Runtime"),
    "bench": ("bench", "benchmark inference backends against the eager baseline"),
    "synth": ("synth", "write a synthetic COCO-format person-keypoint dataset"),
    "models": ("models", "list the model zoo and fetch pretrained weights into the cache"),
    "info": ("info", "what this machine can run (CPU ISA, oneDNN, bf16, CUDA), versions, the auto backend"),
    "serve": ("serve", "serve pose estimation over HTTP: a JSON API and a web page"),
}


USER_DESCRIPTION = """\
hrpose finds people's body keypoints (nose, shoulders, elbows, knees, ...) in photos, videos and live
streams with HRNet models, and trains, tests and exports those models.

Examples:
  hrpose predict photo.jpg                      keypoints of everyone in a photo (predictions/photo.json)
  hrpose predict holiday/ --format json,csv     a folder of photos and videos, plus one table of all people
  hrpose predict rtsp://camera:8554/live        a live camera stream (Ctrl-C stops it, outputs kept)
  hrpose models                                 the pretrained models you can use
  hrpose serve                                  a web page and a JSON API for your browser or programs

Run `hrpose COMMAND --help` for a command's options."""

PREDICT_EPILOG = """\
Examples:
  hrpose predict photo.jpg photos/ 'shots/*.png'            images, folders and patterns
  hrpose predict clip.mp4 --track --format json,csv          a video: clip_pose.mp4, clip.jsonl, results.csv
  hrpose predict rtsp://user:pw@192.168.1.10:554/stream --duration 60
  ffmpeg -i clip.mp4 -f mjpeg - | hrpose predict -           frames piped from another program
  hrpose predict @list.txt --shard 0/4 --resume              a quarter of a large collection (run 0/4 .. 3/4)
  torchrun --nproc-per-node 4 -m hrpose.cli predict photos/  the same split over 4 processes, merged at the end

Outputs in --out: per image NAME.json and NAME_pose.jpg; per video or stream NAME.jsonl (one line a frame) and
NAME_pose.mp4; results.json (all images, COCO results format) and, with --format, results.csv / results.parquet
(one row per person per image or frame; columns in the README)."""

RANK_REPORT_DELAY_S = 5.0
RANK_FIRST_REPORT_DELAY_S = 1.0  # this rank reported first: rank 0, if it fails the same way, stops meanwhile
DEBUG_HELP = "print the full traceback for any error, user errors included (also: HRPOSE_DEBUG=1)"


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand's parser must not reset a `hrpose --debug COMMAND` given before it
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hrpose", description=USER_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_debug_argument(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                           epilog=PREDICT_EPILOG if name == "predict" else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        add_debug_argument(p)
        # Only the chosen subcommand's module is imported (its arguments are only needed then).
        if name == wanted:
            _load(module).add_arguments(p)
    return parser


def _load(module: str):
    return importlib.import_module(f"hrpose.commands.{module}")


def debug_wanted(args: argparse.Namespace | None = None) -> bool:
    """``--debug`` on the command line or ``HRPOSE_DEBUG`` set to anything but '', 0, false, no, off."""
    env = os.environ.get("HRPOSE_DEBUG", "").strip().lower()
    return bool(getattr(args, "debug", False)) or env not in ("", "0", "false", "no", "off")


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): only rank 0 speaks for a user error."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def run_command(module: ModuleType, args: argparse.Namespace, command: str = "") -> int:
    """``module.run(args)`` through the common error path; returns the exit status (0, 1, 2 or 130)."""
    debug = debug_wanted(args)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as e:
        from hrpose.errors import Interrupted

        if debug:
            traceback.print_exc()
        what = e.message if isinstance(e, Interrupted) and e.message else "nothing more was written"
        if _rank() == 0:
            print(f"\ninterrupted{' ' + command if command else ''}: {what}", file=sys.stderr, flush=True)
        return 130
    except Exception as e:
        from hrpose.errors import UserError

        if not isinstance(e, UserError):
            _report_failure(_rank(), f"{type(e).__name__} (a bug in hrpose: see that rank's traceback)")
            raise  # a bug in hrpose: the traceback is what helps fix it
        if debug:
            traceback.print_exc()
        from hrpose.user_files import error_text

        # control characters escaped, further lines indented: a file name cannot forge an `error:` line
        message = error_text(str(e).strip() or type(e).__name__)
        rank = _rank()
        # torchrun: the other ranks learn of this failure and stop within a second (see report_failure)
        first = _report_failure(rank, message)
        if first is not None and first[0] != rank:
            # another rank failed first: its line comes first (this rank exiting now would have torchrun
            # stop that rank before it prints)
            from hrpose.engine.distributed import wait_for_failure_printed

            wait_for_failure_printed()
        if first is not None and first[0] != rank and first[1] == message:
            pass  # another rank reported this same error first, and printed it
        elif rank == 0:
            print(f"error: {message}", file=sys.stderr, flush=True)
        else:
            # torchrun: rank 0 normally reports the same error and exits (this rank is then stopped during the
            # wait); an error of this rank alone is still reported after it.
            time.sleep(RANK_REPORT_DELAY_S if first is None else RANK_FIRST_REPORT_DELAY_S)
            print(f"error: (rank {rank}) {message}", file=sys.stderr, flush=True)
        if first is not None and first[0] == rank:  # this rank's line is the one the others wait for
            from hrpose.engine.distributed import failure_printed

            failure_printed()
        return 2


def _report_failure(rank: int, message: str) -> tuple[int, str] | None:
    """Under torchrun: tell the other ranks (they stop at once); the first failure reported, or None."""
    if os.environ.get("WORLD_SIZE", "1") in ("", "0", "1"):
        return None
    try:
        from hrpose.engine.distributed import report_failure

        return report_failure(rank, message)
    except Exception:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = _load(COMMANDS[args.command][0])
    return run_command(module, args, args.command)


if __name__ == "__main__":
    sys.exit(main())
