"""`hrpose export --cfg FILE --weights FILE --format onnx [--dynamic-batch] [--opset N] [--out PATH]`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg", required=True, help="experiment config (YAML)")
    parser.add_argument("--weights", required=True, help="checkpoint (.pth official state_dict or .safetensors)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--out", default=None, help="output file (default: weights path with .onnx)")
    parser.add_argument("--dynamic-batch", action="store_true", help="export with a dynamic batch dimension")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    parser.add_argument(
        "--int8-calib",
        default=None,
        metavar="COCO_ROOT",
        help="also write an int8 model calibrated on person crops of this COCO-layout folder "
        "(annotations/person_keypoints_<set>.json, images/<set>/)",
    )
    parser.add_argument("--calib-set", default="train2017", help="split name for --int8-calib")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..export import export_onnx
    from ..models import build_model
    from ..models.weights import load_weights

    cfg = load_config(args.cfg, args.opts)
    model = build_model(cfg)
    load_weights(model, args.weights)
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(".onnx")
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    report = export_onnx(model, out, size, dynamic_batch=args.dynamic_batch, opset=args.opset)
    print(
        f"exported {report.path} (opset {report.opset}, dynamic batch {report.dynamic_batch}); checked in "
        f"ONNX Runtime: max rel error {report.rel_err:.2e}, decoded keypoints equal: {report.keypoints_equal}"
    )
    if args.int8_calib:
        from ..backends import quantize_int8
        from ..bench import real_crops

        root = Path(args.int8_calib)
        crops = real_crops(
            root / "images" / args.calib_set, root / "annotations" / f"person_keypoints_{args.calib_set}.json", size, 32
        )
        q = quantize_int8(out, out.with_name(out.stem + "_int8.onnx"), [crops[i : i + 8] for i in range(0, 32, 8)])
        print(f"int8 model calibrated on {len(crops)} real crops: {q}")
    return 0
