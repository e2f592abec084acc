"""`hrpose export --cfg FILE --weights FILE --format onnx [--dynamic-batch] [--opset N] [--out PATH]`;
`hrpose export ... --format openvino [--int8-calib DATASET_ROOT [--calib-set S] [--max-ap-drop X]] --out model.xml`:
an OpenVINO IR carrying hrpose's metadata, int8 (NNCF, `hrpose.quantize`) with --int8-calib."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="experiment config (YAML)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth official state_dict or .safetensors)")
    parser.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                        help="onnx, or openvino: an OpenVINO IR (.xml + .bin) with hrpose's metadata, int8 with "
                        "--int8-calib (`hrpose predict --weights model.xml --precision int8` runs it)")  # fmt: skip
    parser.add_argument("--out", default=None, help="output file (default: weights path with .onnx / .xml)")
    parser.add_argument("--dynamic-batch", action="store_true", help="export with a dynamic batch dimension")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument(
        "--int8-calib",
        default=None,
        metavar="COCO_ROOT",
        help="also write an int8 model calibrated on person crops of this COCO-layout folder "
        "(annotations/person_keypoints_<set>.json, images/<set>/)",
    )
    parser.add_argument("--calib-set", default=None,
                        help="split name for --int8-calib (default: the folder's only person_keypoints_<set>.json)")
    parser.add_argument("--calib-crops", type=int, default=None,
                        help="person crops that calibrate int8 (default: 300 for openvino, 32 for onnx)")
    parser.add_argument("--max-ap-drop", type=_ap_drop, default=0.5, metavar="AP",
                        help="--format openvino: accuracy control keeps in fp32 the layers that cost AP until the "
                        "COCO AP of held-out people (every third image of the set) drops by at most this many AP "
                        "points (default 0.5; 'none': no accuracy control, every layer int8)")  # fmt: skip
    parser.add_argument(
        "--int8-method", default="minmax", choices=("minmax", "entropy", "percentile"), help="activation ranges"
    )
    parser.add_argument("--int8-keep-first", action="store_true", help="keep the stem conv in fp32")
    parser.add_argument("--int8-keep-last", action="store_true", help="keep the heatmap head conv in fp32")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def _ap_drop(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected AP points >= 0 (e.g. 0.5) or 'none'")
    return value


def _check(args: argparse.Namespace) -> Path:
    """The options checked before any work; returns the output path. A UserError naming the option otherwise."""
    from ..config import output_dir_problem
    from ..errors import MissingFileError, UserError

    weights = Path(args.weights)
    if not weights.is_file():
        what = "is not a regular file" if weights.exists() else "not found"
        raise MissingFileError(f"--weights {weights} {what}; give the checkpoint to export (.pth or .safetensors)")
    out = Path(args.out) if args.out else weights.with_suffix(".xml" if args.format == "openvino" else ".onnx")
    if args.format == "openvino" and out.suffix.lower() != ".xml":
        raise UserError(f"--out {out}: an OpenVINO IR is named .xml (its weights go beside it as .bin)")
    if out.exists() and not out.is_file():
        raise UserError(f"--out {out} is {'a folder' if out.is_dir() else 'not a regular file'}; give a file path "
                        "such as model.onnx")  # fmt: skip
    if out.exists() and out.resolve() == weights.resolve():
        raise UserError(f"--out {out} is the --weights file itself; exporting would overwrite the checkpoint: give "
                        "another --out (default: the weights path with .onnx)")  # fmt: skip
    problem = output_dir_problem(out.parent)
    if problem:
        raise UserError(f"--out {out}: {problem}; give an --out in a folder you can write to")
    lo, hi = _opset_range()
    if not lo <= args.opset <= hi:
        raise UserError(f"--opset {args.opset}: this PyTorch exports ONNX opsets {lo} to {hi} (default 17)")
    if args.int8_calib:
        if args.calib_crops is not None and args.calib_crops < 1:
            raise UserError(f"--calib-crops must be >= 1 (person crops for int8 calibration), got {args.calib_crops}")
        if args.format == "openvino":
            from ..quantize import default_calib_set, require_int8

            require_int8()
            if not Path(args.int8_calib).is_dir():
                raise MissingFileError(f"--int8-calib {args.int8_calib}: not a folder; give a COCO-layout folder "
                                       "(annotations/person_keypoints_<set>.json, images/<set>/)")  # fmt: skip
            args.calib_set = args.calib_set or default_calib_set(args.int8_calib)
        args.calib_set = args.calib_set or "train2017"
        ann = Path(args.int8_calib) / "annotations" / f"person_keypoints_{args.calib_set}.json"
        if not ann.is_file():
            raise MissingFileError(
                f"--int8-calib {args.int8_calib}: {ann} not found; give a COCO-layout folder "
                "(annotations/person_keypoints_<set>.json, images/<set>/) and --calib-set"
            )
    return out


def _opset_range() -> tuple[int, int]:
    try:
        from torch.onnx import _constants

        return int(_constants.ONNX_MIN_OPSET), int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError):
        return 7, 20


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..export import export_onnx
    from ..models import build_model
    from ..models.weights import load_weights

    cfg = load_config(args.cfg, args.opts)
    out = _check(args)
    model = build_model(cfg)
    load_weights(model, args.weights)
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    if args.format == "openvino":
        return _run_openvino(args, cfg, model, out)
    report = export_onnx(model, out, size, dynamic_batch=args.dynamic_batch, opset=args.opset)
    print(
        f"exported {report.path} (opset {report.opset}, dynamic batch {report.dynamic_batch}); checked in "
        f"ONNX Runtime: max rel error {report.rel_err:.2e}, decoded keypoints equal: {report.keypoints_equal}"
    )
    if args.int8_calib:
        import sys

        print("warning: int8 .onnx models (ONNX Runtime static int8) are deprecated and no longer offered by "
              "--precision int8: they moved keypoints by up to 8 px (docs/benchmarks.md); use --format openvino "
              "--int8-calib DATA (NNCF, accuracy-controlled)", file=sys.stderr)  # fmt: skip
        from ..bench import real_crops
        from ..runtime.quantize import quantize_int8

        root = Path(args.int8_calib)
        crops = real_crops(
            root / "images" / args.calib_set,
            root / "annotations" / f"person_keypoints_{args.calib_set}.json",
            size,
            args.calib_crops or 32,
        )
        q = quantize_int8(
            out,
            out.with_name(out.stem + "_int8.onnx"),
            [crops[i : i + 8] for i in range(0, len(crops), 8)],
            method=args.int8_method,
            exclude_first=args.int8_keep_first,
            exclude_last=args.int8_keep_last,
        )
        print(
            f"int8 model calibrated ({args.int8_method}) on {len(crops)} real crops: {q}. Check its keypoint "
            "deviation on your data with `hrpose bench --weights ... --backends onnxruntime-int8`: on the trained "
            "models of docs/benchmarks.md int8 moved 7-30% of keypoints by more than 2 px (AP -0.004 on the "
            "quick-start model); `--backend torch-bf16` is the accurate fast path on CPUs with bf16."
        )
    return 0


def _run_openvino(args: argparse.Namespace, cfg: object, model: object, out: Path) -> int:
    """--format openvino: the IR (int8 with --int8-calib) with hrpose's metadata."""
    from ..quantize import DEFAULT_CALIB_CROPS, export_int8_ir, openvino_fp32_model, require_int8, save_ir

    require_int8()
    if args.int8_calib:
        path, report = export_int8_ir(model, cfg, out, args.int8_calib, args.calib_set,  # type: ignore[arg-type]
                                      max_crops=args.calib_crops or DEFAULT_CALIB_CROPS,
                                      max_ap_drop=args.max_ap_drop)  # fmt: skip
        print(f"exported {path} (OpenVINO IR, int8): {report.summary()}")
        return 0
    from ..data.layout import layout_from_config
    from ..models.weights import checkpoint_meta

    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))  # type: ignore[attr-defined]
    path = save_ir(openvino_fp32_model(model, size), out, checkpoint_meta(cfg, layout_from_config(cfg)), None)  # type: ignore[arg-type]
    print(f"exported {path} (OpenVINO IR, fp32; give --int8-calib DATASET_ROOT for int8)")
    return 0
