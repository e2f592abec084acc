"""CPU int8 (NNCF -> OpenVINO IR, `hrpose.quantize`) against OpenVINO fp32 and the official eager model.

Speed (random weights are fine for speed):

    python -m benchmarks.int8 speed [--models w32_256x192 w32_384x288 w48_256x192 res50_256x192] [--rounds 7]

  For each model: the eager fp32 baseline (`EagerBackend`), OpenVINO fp32 (the exported, self-checked graph,
  `OpenVinoBackend`) and OpenVINO int8 (NNCF default preset, calibrated on real coco-mini crops + mirrors), at
  batch 1 and 8, timed in interleaved rounds (`hrpose.bench.time_interleaved`) so load from elsewhere hits all
  three alike; prints the median ms/crop and the spread (min-max over rounds) and the ratios from one run.

AP cost and keypoint deviation of a trained model:

    python -m benchmarks.int8 accuracy --cfg CFG --weights W --calib-root data/synth --calib-set train \
        --val-set val [--max-ap-drop 0.5]

  fp32 (the torch model through the test pipeline), int8 (every layer) and int8 with accuracy control: COCO AP
  on the val split (flip test, GT boxes, `hrpose.quantize.coco_ap`), and the keypoint deviation from fp32 on
  the labeled joints of the real crops of ../shared/data/coco-mini, in input pixels and heatmap pixels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "coco-mini"
MODELS = {
    "w32_256x192": "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml",
    "w32_384x288": "experiments/coco/hrnet/w32_384x288_adam_lr1e-3.yaml",
    "w48_256x192": "experiments/coco/hrnet/w48_256x192_adam_lr1e-3.yaml",
    "res50_256x192": "experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml",
}


def _crops(cfg, n: int, labeled: bool = False):  # noqa: ANN001, ANN202
    from hrpose.bench import real_crops_labeled

    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    crops, lab = real_crops_labeled(SHARED / "images" / "train2017",
                                    SHARED / "annotations" / "person_keypoints_train2017.json", size, n)  # fmt: skip
    return (crops, lab) if labeled else crops


def speed(args: argparse.Namespace) -> int:
    from hrpose.bench import machine_description, time_interleaved
    from hrpose.config import load_config
    from hrpose.export import export_onnx
    from hrpose.models import build_model
    from hrpose.runtime import make_backend

    torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}", flush=True)
    rows = []
    for name in args.models:
        cfg = load_config(str(ROOT / MODELS[name]), [])
        size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
        torch.manual_seed(0)
        model = build_model(cfg, is_train=False).eval()
        crops = _crops(cfg, 24)
        work = Path(args.workdir) / name
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        export_onnx(model, work / "fp32.onnx", size, dynamic_batch=True)
        print(f"{name}: exported in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        int8 = make_backend("openvino-int8", model, "cpu", input_size=size, calibration=[crops[: args.calib]],
                            threads=args.threads)  # fmt: skip
        quant_s = time.perf_counter() - t0
        print(f"{name}: quantised on {2 * args.calib} crops (with mirrors) in {quant_s:.0f} s", flush=True)
        fns = {"eager-fp32": make_backend("torch", model, fold_bn=False),
               "openvino-fp32": make_backend("openvino", work / "fp32.onnx", threads=args.threads),
               "openvino-int8": int8}  # fmt: skip
        for bs in args.batch_sizes:
            batch = np.ascontiguousarray(np.resize(crops, (bs, *crops.shape[1:])))
            times = time_interleaved(fns, batch, args.rounds, 2)
            ms = {k: 1000.0 * float(np.median(v)) / bs for k, v in times.items()}
            lo = {k: 1000.0 * float(np.min(v)) / bs for k, v in times.items()}
            hi = {k: 1000.0 * float(np.max(v)) / bs for k, v in times.items()}
            # the ratio per round (each round runs all three back to back): its spread is the noise
            r_ov = np.array(times["openvino-fp32"]) / np.array(times["openvino-int8"])
            r_eager = np.array(times["eager-fp32"]) / np.array(times["openvino-int8"])
            row = {"model": name, "batch": bs, "ms_per_crop": ms, "min_ms": lo, "max_ms": hi,
                   "int8_vs_openvino_fp32": ms["openvino-fp32"] / ms["openvino-int8"],
                   "int8_vs_eager": ms["eager-fp32"] / ms["openvino-int8"],
                   "ratio_ov_per_round": [float(np.min(r_ov)), float(np.max(r_ov))],
                   "ratio_eager_per_round": [float(np.min(r_eager)), float(np.max(r_eager))],
                   "quantise_s": quant_s, "rounds": args.rounds}  # fmt: skip
            rows.append(row)
            print(
                f"| {name} | {bs} | {ms['eager-fp32']:.1f} | {ms['openvino-fp32']:.1f} | {ms['openvino-int8']:.1f} "
                f"| **{row['int8_vs_openvino_fp32']:.2f}x** ({r_ov.min():.2f}-{r_ov.max():.2f}) "
                f"| **{row['int8_vs_eager']:.2f}x** ({r_eager.min():.2f}-{r_eager.max():.2f}) |",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def accuracy(args: argparse.Namespace) -> int:
    from hrpose import quantize as Q
    from hrpose.bench import keypoints_input_px, machine_description
    from hrpose.codec import build_codec
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import load_weights
    from hrpose.pipeline import TestSettings

    print(f"machine: {machine_description()}", flush=True)
    cfg = load_config(args.cfg, [])
    model = build_model(cfg, is_train=False)
    load_weights(model, args.weights)
    model.eval()
    settings = TestSettings.from_config(cfg, flip_test=True)
    calib, _ = Q.calibration_set(cfg, args.calib_root, args.calib_set, max_crops=args.calib_crops)
    val = Q.person_crops(Q.test_side_dataset(cfg, args.calib_root, args.val_set))

    def torch_fp32(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(x))).float().numpy()

    plain, rep_plain = Q.quantize_openvino(model, cfg, calib)
    print(f"int8 (every layer): quantised on {rep_plain.calibration_inputs} crops incl. mirrors", flush=True)
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    stride = size[0] / int(cfg.MODEL.HEATMAP_SIZE[0])
    real, labeled = _crops(cfg, 86, labeled=True)
    codec = build_codec(cfg)
    ref = keypoints_input_px(torch_fp32(real), size, codec, TestSettings.from_config(cfg, flip_test=False))
    print("| run | AP (val) | deviation, input px | heatmap px | median, input px | joints <= 1 px | <= 2 px |",
          flush=True)  # fmt: skip
    print("|---|---|---|---|---|---|---|", flush=True)

    def row(name: str, fn: Any) -> None:
        ap = 100.0 * Q.coco_ap(val, Q.predict_people(fn, val, settings))
        kp = keypoints_input_px(np.concatenate([fn(real[i:i + 8]) for i in range(0, len(real), 8)]), size, codec,
                                TestSettings.from_config(cfg, flip_test=False))  # fmt: skip
        dev = np.linalg.norm(kp - ref, axis=-1)[labeled]
        print(
            f"| {name} | {ap:.2f} | {dev.mean():.3f} | {dev.mean() / stride:.3f} | {np.median(dev):.3f} "
            f"| {100 * (dev <= 1).mean():.1f}% "
            f"| {100 * (dev <= 2).mean():.1f}% |",
            flush=True,
        )

    row("fp32 (torch)", torch_fp32)
    row("int8", Q.CompiledRunner(plain))
    if args.max_ap_drop is not None:
        held_calib, held = Q.calibration_set(cfg, args.calib_root, args.calib_set, max_crops=args.calib_crops,
                                             accuracy_control=True)  # fmt: skip
        ctl, rep = Q.quantize_openvino(model, cfg, held_calib, held_out=held, max_ap_drop=args.max_ap_drop)
        print(f"accuracy control: {rep.summary()}", flush=True)
        row(f"int8, accuracy control {args.max_ap_drop:g}", Q.CompiledRunner(ctl))
    print(
        f"(AP: {len(val)} val people, flip test, GT boxes; deviation: {int(labeled.sum())} labeled joints of "
        f"{len(real)} coco-mini crops, input px and heatmap px (/{stride:g}); int8 calibrated on "
        f"{rep_plain.calibration_inputs} crops incl. mirrors)"
    )
    return 0


def _realistic_random(model: torch.nn.Module, crops: np.ndarray, seed: int = 0) -> torch.nn.Module:
    """Random weights with a trained network's activation statistics: He-normal convs, and BatchNorm running
    statistics measured on real crops (train-mode passes with a cumulative average), then eval mode. The
    official init (conv std 0.001) makes every signal vanish, which says nothing about quantisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for i in range(0, len(crops), 8):
            model(torch.from_numpy(crops[i : i + 8]))
    return model.eval()


def ort(args: argparse.Namespace) -> int:
    """Why ONNX Runtime int8 moved keypoints: the same model, the same calibration crops, ORT static QDQ
    variants against NNCF/OpenVINO: relative heatmap error and argmax deviation on other real crops."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from hrpose.bench import keypoints_input_px, machine_description
    from hrpose.config import load_config
    from hrpose.export import export_onnx
    from hrpose.models import build_model
    from hrpose.runtime import make_backend
    from hrpose.runtime.openvino_int8 import CompiledRunner, openvino_fp32_model
    from hrpose.runtime.quantize import conv_node_names

    torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}", flush=True)
    cfg = load_config(args.cfg or str(ROOT / MODELS[args.model]), [])
    import openvino

    model_name = Path(args.cfg).stem if args.cfg else args.model
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    crops, labeled = _crops(cfg, args.calib + args.eval, labeled=True)
    calib, real, labeled = crops[: args.calib], crops[args.calib :], labeled[args.calib :]
    model = build_model(cfg, is_train=False)
    if args.weights:
        from hrpose.models.weights import load_weights

        load_weights(model, args.weights)
        model.eval()
    else:
        model = _realistic_random(model, calib)
    work = Path(args.workdir) / f"ort-{model_name}"
    work.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, work / "fp32.onnx", size, dynamic_batch=True).path
    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    convs = conv_node_names(pre)
    inputs = [np.ascontiguousarray(c[None]) for c in calib] + [np.ascontiguousarray(c[None, :, :, ::-1]) for c in calib]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input": x} for x in inputs])

        def get_next(self):  # type: ignore[override]  # noqa: ANN202
            return next(self.it, None)

    variants = {
        "ort minmax, all ops (shipped)": {},
        "ort minmax, Conv only (Add/Resize/Upsample fp32)": {"op_types_to_quantize": ["Conv"]},
        "ort minmax, all ops, head conv fp32": {"nodes_to_exclude": convs[-1:]},
        "ort entropy, all ops": {"calibrate_method": CalibrationMethod.Entropy},
        "ort minmax, Conv only, symmetric s8 activations": {"op_types_to_quantize": ["Conv"],
                                                             "activation_type": QuantType.QInt8},
        # x86 without VNNI: u8 x s8 products are summed in pairs into int16 (vpmaddubsw), which can saturate;
        # 7-bit weights (reduce_range) or u8 weights avoid it
        "ort minmax, all ops, 7-bit weights (reduce_range)": {"reduce_range": True},
        "ort minmax, all ops, u8 weights (U8U8)": {"weight_type": QuantType.QUInt8},
    }  # fmt: skip
    with torch.inference_mode():
        ref_hm = model(torch.from_numpy(real)).numpy()
    ref = keypoints_input_px(ref_hm, size)
    stride = size[0] / int(cfg.MODEL.HEATMAP_SIZE[0])
    runners: dict[str, object] = {}
    for name, kw in variants.items():
        out = work / f"v{len(runners)}.onnx"
        opts = {"quant_format": QuantFormat.QDQ, "per_channel": True, "activation_type": QuantType.QUInt8,
                "weight_type": QuantType.QInt8, **kw}  # fmt: skip
        quantize_static(str(pre), str(out), Reader(), **opts)
        runners[name] = make_backend("onnxruntime", out, threads=args.threads)
    runners["nncf -> openvino int8 (default preset)"] = make_backend(
        "openvino-int8", model, "cpu", input_size=size, calibration=[calib], threads=args.threads
    )
    # the same quantised graph (ORT's QDQ, shipped variant) run by OpenVINO: ranges vs the runtime's kernels
    runners["ort minmax, all ops (shipped) QDQ graph run by openvino"] = CompiledRunner(
        openvino.Core().read_model(str(work / "v0.onnx")), name="qdq-openvino", threads=args.threads
    )
    # NNCF without its bias correction: how much of NNCF's lead that step gives
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    q = nncf.quantize(openvino_fp32_model(model, size), nncf.Dataset(inputs), subset_size=len(inputs),
                      advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))  # fmt: skip
    runners["nncf -> openvino int8, no bias correction"] = CompiledRunner(q, name="nncf-nobc", threads=args.threads)
    # speed as CPU time (all threads of the process) per crop at batch 1: steadier than wall time on a shared
    # machine; fp32 references first
    fp32_runners = {"ort fp32": make_backend("onnxruntime", fp32, threads=args.threads),
                    "openvino fp32": CompiledRunner(openvino_fp32_model(model, size), name="ov", threads=args.threads)}
    one = real[:1]

    def cpu_ms(fn: Any) -> float:
        for _ in range(3):
            fn(one)
        best = float("inf")
        for _ in range(3):  # the best of 3 blocks of 5 calls
            t = time.process_time()
            for _ in range(5):
                fn(one)
            best = min(best, (time.process_time() - t) / 5 * 1000)
        return best

    print("| variant | heatmap error | mean dev (input px) | heatmap px | within 2 px | CPU ms/crop b1 |")
    print("|---|---|---|---|---|---|")
    for name, fn in fp32_runners.items():
        print(f"| {name} | 0 | 0 | 0 | 100% | {cpu_ms(fn):.1f} |", flush=True)
    for name, fn in runners.items():
        hm = np.concatenate([fn(real[i : i + 8]) for i in range(0, len(real), 8)])  # type: ignore[operator]
        rel = float(np.linalg.norm(hm - ref_hm) / np.linalg.norm(ref_hm))
        dev = np.linalg.norm(keypoints_input_px(hm, size) - ref, axis=-1)[labeled]
        print(
            f"| {name} | {rel:.4f} | {dev.mean():.2f} | {dev.mean() / stride:.2f} | {100 * (dev <= 2).mean():.1f}% "
            f"| {cpu_ms(fn):.1f} |",
            flush=True,
        )
    print(
        f"({model_name}, {'weights ' + args.weights if args.weights else 'realistic random weights'}; calibrated on "
        f"{len(inputs)} crops incl. mirrors; measured on {int(labeled.sum())} labeled joints of {len(real)} other "
        "coco-mini crops; heatmap error = ||int8 - fp32|| / ||fp32||)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    s.add_argument("--rounds", type=int, default=7, help="timed calls per backend (in blocks of 3, interleaved)")
    s.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    s.add_argument("--calib", type=int, default=16, help="calibration crops (their mirrors are added)")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--workdir", default="/tmp/hrpose-int8-bench")
    s.add_argument("--json", default=None)
    a = sub.add_parser("accuracy")
    a.add_argument("--cfg", required=True)
    a.add_argument("--weights", required=True)
    a.add_argument("--calib-root", required=True)
    a.add_argument("--calib-set", default="train")
    a.add_argument("--val-set", default="val")
    a.add_argument("--calib-crops", type=int, default=300)
    a.add_argument("--max-ap-drop", type=float, default=0.5)
    a.add_argument(
        "--no-accuracy-control",
        dest="max_ap_drop",
        action="store_const",
        const=None,
        help="only fp32 and every-layer int8 (accuracy control ranks every layer group: slow)",
    )
    o = sub.add_parser("ort")
    o.add_argument("--model", default="w32_256x192", choices=list(MODELS))
    o.add_argument("--cfg", default=None, help="another model's config (instead of --model), e.g. the quick start's")
    o.add_argument("--weights", default=None)
    o.add_argument("--calib", type=int, default=16)
    o.add_argument("--eval", type=int, default=24)
    o.add_argument("--threads", type=int, default=2)
    o.add_argument("--workdir", default="/tmp/hrpose-int8-bench")
    args = p.parse_args(argv)
    return {"speed": speed, "accuracy": accuracy, "ort": ort}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
