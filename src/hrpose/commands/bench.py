"""`hrpose bench --cfg FILE --crops-root DIR [--weights FILE] [--json] [--write docs/benchmarks.md]`.

One run, same machine, same weights: the official-style eager fp32 baseline and the backends of the runtime's
registry (`hrpose.runtime.REGISTRY`, by their names), with the measured table and each backend's keypoint
deviation from the baseline. It prints measurements only.

The real person crops (int8 calibration and the keypoint deviation) come from a COCO-layout folder:
`--crops-root DIR`, else the environment variable `HRPOSE_BENCH_CROPS`; without either, bench stops with
one `error:` line saying how to give it (e.g. `--crops-root ../shared/data/coco-mini` in a checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..bench import BackendFactory

#: environment variable naming the default --crops-root
CROPS_ENV = "HRPOSE_BENCH_CROPS"


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
        default=None,
        help="COCO-layout folder (annotations/person_keypoints_<set>.json, images/<set>/) whose ground-truth "
        f"person crops feed calibration and deviation (default: ${CROPS_ENV})",
    )
    parser.add_argument("--crops-set", default="train2017")
    parser.add_argument("--num-crops", type=int, default=86, help="crops read (calibration + deviation)")
    parser.add_argument(
        "--calib-crops", type=int, default=32, help="the first N crops calibrate int8; the others measure deviation"
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iters", type=int, default=20, help="interleaved timing rounds (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads")
    parser.add_argument(
        "--device", default="cpu", help="cpu or cuda[:i]: where the baseline and the torch backends run"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        help="backend names as in --backend of predict (see `hrpose info`); 'auto' = what --backend auto runs "
        "here (default: auto, torch, torch-fast, torch-bf16, onnxruntime, openvino, openvino-int8, leaving "
        "out with the reason what this machine cannot run, e.g. bf16 without bf16 hardware; or the GPU set with "
        "--device cuda). A backend named here that this machine cannot run is refused",
    )
    parser.add_argument("--precision", default=None, choices=("int8",),
                        help="int8: the rows int8 is judged by, without --backends: openvino (fp32) and openvino-int8 "
                        "(NNCF, as `--precision int8` runs) beside the eager baseline")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--write",
        default=None,
        metavar="MD",
        help="write the table into this markdown file (replacing the previous table of the same config "
        "and weights, else appending)",
    )
    parser.add_argument(
        "--label", default="", help="names this run's section in --write (several runs of one config and weights)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def write_section(md: Path, key: str, body: str) -> None:
    """Put `body` between `<!-- bench:key -->` markers in `md`: replace the old block or append one."""
    start, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = md.read_text(encoding="utf-8") if md.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    md.write_text(text, encoding="utf-8")


def _check(args: argparse.Namespace) -> None:
    """Options that cannot work, refused before any work with the option named (a UserError)."""
    from ..errors import UserError

    for name, value, low in (("--iters", args.iters, 1), ("--num-crops", args.num_crops, 1),
                             ("--calib-crops", args.calib_crops, 0), ("--threads", args.threads or 1, 1)):  # fmt: skip
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if any(b < 1 for b in args.batch_sizes):
        raise UserError(f"--batch-sizes must all be >= 1, got {' '.join(map(str, args.batch_sizes))}")
    if args.num_crops <= args.calib_crops:
        raise UserError(
            f"--num-crops {args.num_crops} must be more than --calib-crops {args.calib_crops}: the crops after the "
            "calibration ones measure the deviation"
        )


def _crops_root(args: argparse.Namespace) -> Path:
    """--crops-root, else $HRPOSE_BENCH_CROPS, checked to hold the --crops-set annotations (else a UserError)."""
    from ..errors import MissingFileError, UserError

    given = f"--crops-root {args.crops_root}"
    if not args.crops_root:
        args.crops_root = os.environ.get(CROPS_ENV, "").strip() or None
        given = f"--crops-root from {CROPS_ENV}={args.crops_root}"
    if not args.crops_root:
        raise UserError(
            "hrpose bench needs real person crops: pass --crops-root DIR, a COCO-layout folder "
            "(annotations/person_keypoints_<set>.json, images/<set>/; e.g. --crops-root ../shared/data/coco-mini "
            f"in a checkout, or a dataset written by `hrpose synth` with --crops-set val), or set {CROPS_ENV}=DIR"
        )
    ann = Path(args.crops_root) / "annotations" / f"person_keypoints_{args.crops_set}.json"
    if not ann.is_file():
        raise MissingFileError(f"{given}: {ann} not found; give a COCO-layout folder "
                               "(annotations/person_keypoints_<set>.json, images/<set>/) and --crops-set")  # fmt: skip
    return Path(args.crops_root)


def auto_verdict(rows: list, batch_sizes: tuple[int, ...]) -> str:
    """The line under the table: what `auto` ran, its measured speedup over the baseline, and OpenVINO's."""
    by_name = {r.backend: r for r in rows}
    auto = next((r for r in rows if r.backend.startswith("auto = ")), None)
    bs = 1 if 1 in batch_sizes else batch_sizes[0]
    if auto is None:
        return ""
    text = f"\n\n`auto` runs `{auto.backend[7:]}` here: **{auto.speedup[bs]:.3f}x** the baseline's crops/s"
    text += f" at batch {bs}"
    ov = by_name.get("openvino")
    if ov is not None and auto.backend[7:] != "openvino":
        text += f"; OpenVINO fp32 on the same graph: {ov.speedup[bs]:.2f}x"
    return text + "."


def run(
    args: argparse.Namespace,
    *,
    extra_backends: Mapping[str, BackendFactory] | None = None,
    extra_defaults: Mapping[str, Sequence[str]] | None = None,
    program: str = "hrpose bench",
    extra_lines: Callable[[list, Any, Any], str] = lambda rows, model, cfg: "",
) -> int:
    """`hrpose bench`. extra_backends: more named backends (`run_bench(extra_backends=...)`); extra_defaults:
    device type ("cpu", "cuda") -> names of them added to the default rows; program: the command named in
    `--write`'s record; extra_lines(rows, model, cfg): more text under the table (the lab's scripts add theirs)."""
    import torch

    _check(args)

    from ..bench import (
        backend_names,
        default_backends,
        is_backend_name,
        machine_description,
        markdown_table,
        real_crops_labeled,
        rows_to_json,
        run_bench,
    )
    from ..codec import build_codec
    from ..config import load_config
    from ..engine.train import apply_cudnn_settings
    from ..errors import UserError
    from ..models import build_model
    from ..models.weights import load_weights
    from ..pipeline import InferenceSettings
    from ..runtime import resolve_device
    from ..runtime.capabilities import probe

    unknown = [name for name in args.backends or () if not is_backend_name(name, extra_backends)]
    if unknown:
        raise UserError(f"--backends: unknown backend {unknown[0]!r}; choose from "
                        f"{', '.join(backend_names(extra_backends))}")  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.cfg, args.opts)
    root = _crops_root(args)  # after the config, so that a bad --cfg is the error a user sees first
    device = resolve_device(args.device)
    apply_cudnn_settings(cfg)  # as the official tools/test.py (CUDNN.BENCHMARK: autotuning, on in every YAML)
    defaults = (*default_backends(device), *(extra_defaults or {}).get(device.type, ()))
    # the default set leaves out (and notes) what this machine cannot run; a backend asked for by name refuses
    if getattr(args, "precision", None) == "int8" and not args.backends:
        args.backends = ["openvino", "openvino-int8"]
    skipped: dict[str, str] | None = None if args.backends else {}
    args.backends = list(args.backends or defaults)
    torch.manual_seed(0)
    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights)
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    crops, labeled = real_crops_labeled(
        root / "images" / args.crops_set,
        root / "annotations" / f"person_keypoints_{args.crops_set}.json",
        size,
        args.num_crops,
    )
    if len(crops) <= args.calib_crops:
        raise UserError(
            f"--crops-root {root} gave {len(crops)} crops, not more than --calib-crops {args.calib_crops}: none "
            "would be left to measure the deviation; raise --num-crops or lower --calib-crops"
        )
    calib, evaluate = crops[: args.calib_crops], crops[args.calib_crops :]
    labeled = labeled[args.calib_crops :]
    log = (lambda s: None) if args.json else print
    machine = machine_description()
    rows = run_bench(
        model,
        size,
        evaluate,
        calib_crops=calib,
        codec=build_codec(cfg),
        settings=InferenceSettings.from_config(cfg, flip_test=False),  # the backends' single calls, compared
        batch_sizes=tuple(args.batch_sizes),
        iters=args.iters,
        threads=args.threads,
        backends=tuple(args.backends),
        confident=float(cfg.TEST.IN_VIS_THRE),
        device=device,
        labeled=labeled,
        log=log,
        skipped=skipped,
        extra_backends=extra_backends,
    )
    table = markdown_table(rows, tuple(args.batch_sizes))
    not_run = "".join(f"\n\nNot run here: `{name}`: {why}" for name, why in (skipped or {}).items())
    not_run = auto_verdict(rows, tuple(args.batch_sizes)) + extra_lines(rows, model, cfg) + not_run
    weights = args.weights or "seeded random weights"
    if args.json:
        print(
            json.dumps(
                {
                    "config": args.cfg,
                    "weights": weights,
                    "machine": machine,
                    "calibration_crops": int(len(calib)),
                    "deviation_crops": int(len(evaluate)),
                    "rows": rows_to_json(rows),
                    "skipped": skipped or {},
                },
                indent=2,
            )
        )
    else:
        print(f"\n{args.cfg} ({weights}) on {machine}; deviation over {len(evaluate)} real crops\n")
        print(table + not_run)
    if args.write:
        opts = " ".join(args.opts)
        cmd = (
            f"{program} --cfg {args.cfg}" + (f" --weights {args.weights}" if args.weights else "")
            + f" --crops-root {args.crops_root} --crops-set {args.crops_set}"
            + (f" --num-crops {args.num_crops}" if args.num_crops != 86 else "")
            + (f" --calib-crops {args.calib_crops}" if args.calib_crops != 32 else "")
            + f" --iters {args.iters}" + (f" --threads {args.threads}" if args.threads else "")
            + (f" --device {args.device}" if device.type != "cpu" else "")
            + (f" --batch-sizes {' '.join(map(str, args.batch_sizes))}" if args.batch_sizes != [1, 8] else "")
            + (f" --backends {' '.join(args.backends)}" if tuple(args.backends) != defaults else "")
            + (f" --label '{args.label}'" if args.label else "") + (f" {opts}" if opts else "")
        )  # fmt: skip
        caps = probe()
        write_section(
            Path(args.write),
            f"{Path(args.cfg).stem}:{Path(weights).name}"
            + (f":{device}" if device.type != "cpu" else f":cpu-{caps.cpu_kind()}")
            + (f":{args.label}" if args.label else ""),
            f"#### `{Path(args.cfg).name}`, {'weights `' + weights + '`' if args.weights else weights}"
            + (f": {args.label}" if args.label else "")
            + (f" ({caps.cpu_kind()} CPU)" if device.type == "cpu" else "")
            + "\n\n"
            f"Probe (`hrpose info`): {caps.line()}\n\n"
            f"Command: `{cmd} --write {args.write}`\n\nMachine: {machine}. Timing: median of {args.iters} "
            f"interleaved rounds. Deviation: keypoints decoded by the config's codec (`{build_codec(cfg).method}`, "
            f"`hrpose.pipeline.decode` on the identity crop, no flip) vs the baseline's, in input pixels, over "
            f"{len(evaluate)} real crops from `{root.name}` (int8 calibrated on {len(calib)} other crops); "
            f"'confident' = joints whose baseline heatmap maximum exceeds TEST.IN_VIS_THRE "
            f"({float(cfg.TEST.IN_VIS_THRE):g}); 'labeled' = joints the annotation marks (v > 0) in the crop.\n\n"
            f"{table}{not_run}\n",
        )
    return 0
