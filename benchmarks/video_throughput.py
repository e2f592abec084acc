"""Video run throughput: the pipelined `hrpose predict` video path against its stages run one after another.

The clip: real COCO photos from ../shared/data/coco-mini with 1, 2 and 3 people in turn (their annotated
person boxes; 2 people a frame on average), 640x480, each photo held for `--hold` frames with a slow pan (the
picture moves a few pixels a frame), written as an mp4v file. The detector: a YOLOX-tiny-sized network
(CSPDarknet-tiny + PAFPN + decoupled head, width 0.375, depth 0.33, ~5M parameters, 416x416 input) built here
with torch, random weights, exported to ONNX and run by hrpose's `OnnxDetector` (letterbox, ONNX Runtime, or
OpenVINO with `--det-engine openvino`; raw-head decoding, NMS); as its random boxes are meaningless,
each frame's people are the photo's annotated boxes (the ONNX model still runs on every frame it is asked, so
its cost is real). The pose model: HRNet-W32 256x192 (random weights unless --weights), flip test on, fp32,
the `auto` backend. `--clip synth:DIR` makes the clip from the val images of a `hrpose synth`
folder instead (the people a model trained by the quick start knows; use with its --weights).

Measured, interleaved `--repeats` times (median and min-max over the repeats):
- stages one after another, each alone with the settings the pipelined run uses (`pipeline_defaults`: on a
  CPU one person a pose-model call): decode every frame, detect every frame, pose every frame, draw +
  encode + write the JSON line of every frame; their sum is what a serial run costs;
- `pose`: the pose stage alone: the rate the slowest stage allows; `compute bound`: 1 / (t_detect + t_pose)
  per frame, what the cores can do when both models must run on every frame and each already uses all of
  them;
- the pipelined run (`hrpose.inference.pipeline_run.VideoPipeline` with `pipeline_defaults`, what
  `hrpose predict clip.mp4` runs), end to end from the mp4 file to the drawn mp4 and the JSON lines; and
  with `--det-every 5`;
- `--modes` adds other ways to share the CPU for comparison: `concurrent` (no compute slot, both models at
  once on all cores, 4 frames a pose call: the previous default) and `split` (no slot, the detector on 1
  thread, the pose model on the others);
- `--sweep-crops 1,2,4,8`: the pose model's time per crop (flip test: 2 inputs a crop) at that many crops a
  call, interleaved: what `CPU_CROPS_PER_CALL` is set from;
- the keypoint deviation of `--det-every 5` against detection on every frame: mean distance of the joints
  (scored >= 0.3 in both), in pixels and as a fraction of the person's box diagonal, on the frames where the
  detector did not run. Only meaningful with trained --weights (random weights give random joints).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/video_throughput.py                 # 96 frames, 3 repeats
    OMP_NUM_THREADS=2 python benchmarks/video_throughput.py --frames 48 --repeats 1 --modes concurrent,split
    hrpose synth --out /tmp/synth --split val --images 40 --seed 3                  # people like the quick start's
    OMP_NUM_THREADS=2 python benchmarks/video_throughput.py --weights w16_synth_qs.pth --clip synth:/tmp/synth
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
COCO_MINI = SHARED / "data" / "coco-mini"
W, H = 640, 480


def cpu_line() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"Python {platform.python_version()}; load average before the run: {load}")  # fmt: skip


# --- the YOLOX-tiny-sized detector -------------------------------------------------------------------------
def yolox_tiny(num_classes: int = 80):  # noqa: ANN201 - torch is imported lazily
    import torch
    from torch import nn

    def conv(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class Bottleneck(nn.Module):
        def __init__(self, c: int, shortcut: bool) -> None:
            super().__init__()
            self.a, self.b, self.shortcut = conv(c, c, 1), conv(c, c, 3), shortcut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.b(self.a(x))
            return x + y if self.shortcut else y

    class CSP(nn.Module):
        def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True) -> None:
            super().__init__()
            h = cout // 2
            self.c1, self.c2, self.c3 = conv(cin, h, 1), conv(cin, h, 1), conv(2 * h, cout, 1)
            self.m = nn.Sequential(*[Bottleneck(h, shortcut) for _ in range(n)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c3(torch.cat([self.m(self.c1(x)), self.c2(x)], 1))

    class SPP(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.c1, self.c2 = conv(c, c // 2, 1), conv(c // 2 * 4, c, 1)
            self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.c1(x)
            return self.c2(torch.cat([x, *[p(x) for p in self.pools]], 1))

    class Focus(nn.Module):
        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.conv = conv(cin * 4, cout, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))

    class YoloxTiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = [24, 48, 96, 192, 384]  # 64, 128, 256, 512, 1024 x width 0.375
            self.stem = Focus(3, c[0])
            self.dark2 = nn.Sequential(conv(c[0], c[1], 3, 2), CSP(c[1], c[1], 1))
            self.dark3 = nn.Sequential(conv(c[1], c[2], 3, 2), CSP(c[2], c[2], 3))
            self.dark4 = nn.Sequential(conv(c[2], c[3], 3, 2), CSP(c[3], c[3], 3))
            self.dark5 = nn.Sequential(conv(c[3], c[4], 3, 2), SPP(c[4]), CSP(c[4], c[4], 1, shortcut=False))
            self.lat0, self.up = conv(c[4], c[3], 1), nn.Upsample(scale_factor=2, mode="nearest")
            self.p4 = CSP(2 * c[3], c[3], 1, False)
            self.red1 = conv(c[3], c[2], 1)
            self.p3 = CSP(2 * c[2], c[2], 1, False)
            self.bu2, self.n3 = conv(c[2], c[2], 3, 2), CSP(2 * c[2], c[3], 1, False)
            self.bu1, self.n4 = conv(c[3], c[3], 3, 2), CSP(2 * c[3], c[4], 1, False)
            hc = 96  # 256 x 0.375
            self.stems = nn.ModuleList(conv(ci, hc, 1) for ci in (c[2], c[3], c[4]))
            self.cls = nn.ModuleList(nn.Sequential(conv(hc, hc), conv(hc, hc)) for _ in range(3))
            self.reg = nn.ModuleList(nn.Sequential(conv(hc, hc), conv(hc, hc)) for _ in range(3))
            self.cls_pred = nn.ModuleList(nn.Conv2d(hc, num_classes, 1) for _ in range(3))
            self.reg_pred = nn.ModuleList(nn.Conv2d(hc, 4, 1) for _ in range(3))
            self.obj_pred = nn.ModuleList(nn.Conv2d(hc, 1, 1) for _ in range(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x2 = self.dark2(self.stem(x))
            x3 = self.dark3(x2)
            x4 = self.dark4(x3)
            x5 = self.dark5(x4)
            f5 = self.lat0(x5)
            f4 = self.p4(torch.cat([self.up(f5), x4], 1))
            r4 = self.red1(f4)
            out3 = self.p3(torch.cat([self.up(r4), x3], 1))
            out4 = self.n3(torch.cat([self.bu2(out3), r4], 1))
            out5 = self.n4(torch.cat([self.bu1(out4), f5], 1))
            outs = []
            for i, f in enumerate((out3, out4, out5)):
                s = self.stems[i](f)
                c, r = self.cls[i](s), self.reg[i](s)
                o = torch.cat([self.reg_pred[i](r), self.obj_pred[i](r).sigmoid(), self.cls_pred[i](c).sigmoid()], 1)
                outs.append(o.flatten(2))
            return torch.cat(outs, 2).permute(0, 2, 1)  # (1, N, 85): YOLOX's raw head at inference

    return YoloxTiny()


def export_detector(path: Path) -> int:
    import torch

    torch.manual_seed(0)
    model = yolox_tiny().eval()
    with torch.no_grad():
        # a slightly negative objectness bias: random weights then give few boxes over the threshold
        for m in model.obj_pred:
            m.bias.fill_(-4.0)
        torch.onnx.export(model, (torch.zeros(1, 3, 416, 416),), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["output"])  # fmt: skip
    return sum(p.numel() for p in model.parameters())


# --- the clip --------------------------------------------------------------------------------------------
def clip_source(spec: str) -> tuple[Path, str, str]:
    """`--clip` -> (dataset root, annotation file, image folder): "coco-mini" (../shared's real photos, train2017)
    or "synth:DIR" (a folder written by `hrpose synth`: its `val` split, else its only split)."""
    if spec == "coco-mini":
        return COCO_MINI, "person_keypoints_train2017.json", "train2017"
    if spec.startswith("synth:"):
        root = Path(spec[len("synth:"):])
        anns = sorted((root / "annotations").glob("person_keypoints_*.json"))
        split = "val" if (root / "annotations" / "person_keypoints_val.json").is_file() else None
        if split is None and len(anns) == 1:
            split = anns[0].stem[len("person_keypoints_"):]
        if split is None or not (root / "images" / split).is_dir():
            raise SystemExit(f"error: --clip {spec}: expected a folder written by `hrpose synth` (annotations/"
                             f"person_keypoints_val.json and images/val/); make one with `hrpose synth --out DIR "
                             f"--split val --images 40 --seed 3`")  # fmt: skip
        return root, f"person_keypoints_{split}.json", split
    raise SystemExit(f"error: --clip {spec!r}: expected coco-mini or synth:DIR")


def make_clip(path: Path, frames: int, hold: int, spec: str = "coco-mini") -> dict[int, np.ndarray]:
    """The clip (see the module docstring) -> {frame index: (N, 5) person boxes xywh+score}.

    coco-mini photos are stretched to 640x480 (as the throughput table was measured); synth images (square)
    are scaled by one factor to the clip's height and centred (people keep their proportions, as the model
    was trained on them)."""
    import cv2

    root, ann_file, split = clip_source(spec)
    ann = json.loads((root / "annotations" / ann_file).read_text())
    by_image: dict[int, list[list[float]]] = defaultdict(list)
    crowd: set[int] = set()
    for a in ann["annotations"]:
        if a.get("iscrowd"):
            crowd.add(a["image_id"])
        elif a["category_id"] == 1 and a.get("num_keypoints", 1) > 0:
            by_image[a["image_id"]].append(a["bbox"])
    chosen = [im for im in ann["images"] if im["id"] not in crowd and 1 <= len(by_image[im["id"]]) <= 3
              and all(b[2] * b[3] >= 32 * 32 for b in by_image[im["id"]])]  # fmt: skip
    chosen.sort(key=lambda im: im["id"])
    if not chosen:
        raise SystemExit(f"error: --clip {spec}: no image with 1-3 people of at least 32x32 pixels in {ann_file}")
    # photos with 1, 2 and 3 people in turn (each list cycled on its own), so every count is in the clip
    groups = [[im for im in chosen if len(by_image[im["id"]]) == n] for n in (1, 2, 3)]
    groups = [g for g in groups if g]
    chosen = [groups[k % len(groups)][(k // len(groups)) % len(groups[k % len(groups)])]
              for k in range(len(chosen))]  # fmt: skip
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (W, H))
    boxes: dict[int, np.ndarray] = {}
    for i in range(frames):
        im = chosen[(i // hold) % len(chosen)]
        img = cv2.imread(str(root / "images" / split / im["file_name"]))
        if spec == "coco-mini":
            sx, sy, ox = W / img.shape[1], H / img.shape[0], 0.0
            border = cv2.BORDER_REFLECT
        else:
            sx = sy = min(W / img.shape[1], H / img.shape[0])
            ox, border = (W - img.shape[1] * sx) / 2, cv2.BORDER_REPLICATE
        dx = ox + 3.0 * (i % hold)  # a slow pan: the people move 3 px a frame
        m = np.float32([[sx, 0, dx], [0, sy, 0]])
        writer.write(cv2.warpAffine(img, m, (W, H), borderMode=border))
        b = np.asarray([[x * sx + dx, y * sy, w * sx, h * sy, 1.0] for x, y, w, h in by_image[im["id"]]], np.float32)
        boxes[i] = b
    writer.release()
    return boxes


class ClipDetector:
    """Runs the YOLOX-tiny-sized ONNX detector on the frame (its real cost), returns the frame's annotated boxes."""

    needs_key = True

    def __init__(self, onnx_path: Path, boxes: dict[int, np.ndarray], engine: str = "auto",
                 threads: int | None = None) -> None:  # fmt: skip
        from hrpose.inference.detectors import OnnxDetector

        self.onnx = OnnxDetector(onnx_path, score_thr=0.3, input_size=(416, 416), yolox_raw=True, engine=engine,
                                 threads=threads)  # fmt: skip
        self.boxes = boxes
        self.calls = 0

    def __call__(self, image: np.ndarray, key: int | None = None) -> np.ndarray:
        self.onnx(image)
        self.calls += 1
        return self.boxes[int(key or 0)].copy()


# --- the runs --------------------------------------------------------------------------------------------
def serial(est, clip: Path, out: Path, crops_per_call: int | None) -> dict[str, float]:  # noqa: ANN001
    """Every stage over the whole clip, one after another (the pose stage `crops_per_call` people a model call,
    one frame at a time, as in the pipelined run): seconds per stage."""
    import cv2

    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.video import VideoReader, VideoWriter

    t = {}
    t0 = time.perf_counter()
    with VideoReader(clip) as r:
        frames = list(r)
        fps = r.fps
    t["decode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    boxes = [est.prepare_boxes(est.detect(f, i), W, H) for i, f in enumerate(frames)]
    t["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    per_call = {} if crops_per_call is None else {"batch_size": crops_per_call}
    poses = [est.predict_many([f], [b], keys=[i], **per_call)[0] for i, (f, b) in enumerate(zip(frames, boxes))]
    t["pose"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with VideoWriter(out / "serial.mp4", fps, (W, H)) as w, (out / "serial.jsonl").open("w") as j:
        for i, (f, p) in enumerate(zip(frames, poses)):
            j.write(json.dumps({"frame": i, "people": [x.to_coco(i) for x in p]}) + "\n")
            w.write(draw_poses(f, p, est.joint_names, est.skeleton))
    t["draw+write"] = time.perf_counter() - t0
    del cv2
    return t


def pipelined(est, clip: Path, out: Path, det_every: int, tag: str,  # noqa: ANN001
              settings: dict) -> tuple[float, dict[int, list]]:  # fmt: skip
    """The pipelined run as `hrpose predict` runs it, with `settings` (`pipeline_defaults`): (seconds, poses by
    frame)."""
    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.pipeline_run import VideoPipeline
    from hrpose.inference.streams import Frame
    from hrpose.inference.tracking import PoseTracker
    from hrpose.inference.video import VideoReader, VideoWriter

    got: dict[int, list] = {}
    t0 = time.perf_counter()
    with VideoReader(clip) as r, VideoWriter(out / f"{tag}.mp4", r.fps, (W, H)) as w, \
            (out / f"{tag}.jsonl").open("w") as j:  # fmt: skip
        tracker = PoseTracker(est.meta.sigmas_array(), fps=r.fps) if det_every > 1 else None
        frames = (Frame(i, i / r.fps, f) for i, f in enumerate(r))

        def sink(f: Frame, poses: list) -> None:
            j.write(json.dumps({"frame": f.index, "people": [x.to_coco(f.index) for x in poses]}) + "\n")
            w.write(draw_poses(f.image, poses, est.joint_names, est.skeleton))
            got[f.index] = poses

        VideoPipeline(est, det_every=det_every, tracker=tracker, **settings).run(frames, sink)
    return time.perf_counter() - t0, got


def deviation(ref: dict[int, list], other: dict[int, list], det_every: int) -> dict[str, float | int]:
    """Keypoint deviation of `other` (--det-every N) vs `ref` (detection on every frame) on the frames where the
    detector did not run: people matched one to one by box IoU (>= 0.3, best first), joints scored >= 0.3 in
    both; per person the mean distance of its joints, in pixels and as a fraction of `ref`'s box diagonal.
    Returns mean/median of those over people, how many were matched (`box_matched`: by box; `matched`: also
    with a joint scored >= 0.3 in both, the people measured), and how many people each run posed on those
    frames."""
    from hrpose.inference.tracking import box_iou_matrix

    px: list[float] = []
    rel: list[float] = []
    ref_n = other_n = box_matched = 0
    for i, a in ref.items():
        if i % det_every == 0:
            continue
        b = other.get(i, [])
        ref_n, other_n = ref_n + len(a), other_n + len(b)
        if not a or not b:
            continue
        iou = box_iou_matrix(np.stack([p.box[:4] for p in a]), np.stack([p.box[:4] for p in b]))
        used_a: set[int] = set()
        used_b: set[int] = set()
        for flat in np.argsort(-iou, axis=None):
            ia, ib = divmod(int(flat), iou.shape[1])
            if iou[ia, ib] < 0.3:
                break
            if ia in used_a or ib in used_b:
                continue
            used_a.add(ia)
            used_b.add(ib)
            box_matched += 1
            ka, kb = np.asarray(a[ia].keypoints), np.asarray(b[ib].keypoints)
            ok = (ka[:, 2] >= 0.3) & (kb[:, 2] >= 0.3)
            if not ok.any():
                continue
            d = float(np.linalg.norm(ka[ok, :2] - kb[ok, :2], axis=1).mean())
            px.append(d)
            rel.append(d / max(float(np.hypot(a[ia].box[2], a[ia].box[3])), 1.0))
    nan = float("nan")
    return {"mean_px": float(np.mean(px)) if px else nan, "median_px": float(np.median(px)) if px else nan,
            "mean_rel": float(np.mean(rel)) if rel else nan, "median_rel": float(np.median(rel)) if rel else nan,
            "matched": len(px), "box_matched": box_matched, "every_frame_people": ref_n,
            "det_every_people": other_n}  # fmt: skip


W32_CFG = ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"


def sweep_crops(est, sizes: list[int], rounds: int) -> dict[int, list[float]]:  # noqa: ANN001
    """The pose backend's seconds per crop at each number of crops a call (with the flip test: 2 inputs a
    crop, one call), interleaved over `rounds`."""
    w, h = est.input_size
    n = max(sizes)
    crops = np.random.default_rng(0).standard_normal((2 * n, 3, h, w)).astype(np.float32)
    for c in sizes:  # warm-up: a new batch shape compiles kernels
        est.backend(crops[: 2 * c])
    got: dict[int, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for c in sizes:
            t0 = time.perf_counter()
            est.backend(crops[: 2 * c])
            got[c].append((time.perf_counter() - t0) / c)
    return got


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cfg", default=None,
                    help="pose config (default: the config stored in --weights; HRNet-W32 256x192 without --weights)")
    ap.add_argument("--weights", default=None, help="trained pose weights (default: random weights)")
    ap.add_argument("--clip", default="coco-mini",
                    help="coco-mini (the real photos in ../shared, default) or synth:DIR (the val split of a "
                         "folder written by `hrpose synth`)")  # fmt: skip
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--hold", type=int, default=10,
                    help="frames per photo (a multiple of 5 puts the scene cuts on --det-every 5's detection frames)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the 2 cores)")
    ap.add_argument("--det-engine", default="auto", choices=("auto", "openvino", "onnxruntime"),
                    help="the detector's engine (OnnxDetector's `engine`)")
    ap.add_argument("--modes", default="",
                    help="also run the pipeline these ways, comma-separated: concurrent, split (see the docstring)")
    ap.add_argument("--no-det-every", action="store_true", help="skip the --det-every 5 run")
    ap.add_argument("--sweep-crops", default="", help="e.g. 1,2,4,8: pose time per crop at that many crops a call")
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    args = ap.parse_args(argv)
    cfg = args.cfg if args.cfg is not None else (None if args.weights else str(W32_CFG))
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in ("concurrent", "split"):
            raise SystemExit(f"error: --modes {args.modes}: unknown mode {m!r}; expected concurrent and/or split")

    import copy

    import torch

    torch.set_num_threads(args.threads)
    from hrpose.inference import PoseEstimator
    from hrpose.inference.pipeline_run import pipeline_defaults

    print(f"CPU: {cpu_line()}")
    with tempfile.TemporaryDirectory(prefix="hrpose-video-bench-") as d:
        out = Path(d)
        n_params = export_detector(out / "yolox_tiny.onnx")
        boxes = make_clip(out / "clip.mp4", args.frames, args.hold, args.clip)
        people = [len(b) for b in boxes.values()]
        est = PoseEstimator.from_config(cfg, args.weights, device="cpu", detector=None,
                                        random_weights=args.weights is None)  # fmt: skip
        size = est.input_size
        det = ClipDetector(out / "yolox_tiny.onnx", boxes, engine=args.det_engine)
        est.detector = det
        est.warn_no_person = False
        settings = pipeline_defaults(est, est.batch_size)
        crops = settings["crops_per_call"]
        print(f"clip: {args.frames} frames {W}x{H} from {args.clip} images, each held {args.hold} frames, "
              f"{min(people)}-{max(people)} people a frame ({sum(people) / len(people):.2f} on average); detector: "
              f"YOLOX-tiny-sized ONNX, {n_params / 1e6:.2f}M parameters, 416x416, random weights (answers the "
              f"annotated boxes), engine {det.onnx.engine.name}; pose: "
              f"{Path(cfg).name if cfg else 'the config in the checkpoint'} (input {size[0]}x{size[1]}), "
              f"{'weights ' + args.weights if args.weights else 'random weights'}, flip test, backend "
              f"{type(est.backend).__name__}; pipeline: compute slot {settings['compute_slot'] is not None}, "
              f"{crops} people a pose call, {settings['batch_frames']} frame(s) a pose call")  # fmt: skip
        variants: dict[str, tuple[Any, dict[str, Any]]] = {}
        for m in modes:
            if m == "concurrent":  # the previous default: both models at once, 4 frames / 16 crops a call
                variants["pipelined e2e, concurrent (no slot)"] = (est, {"compute_slot": None, "batch_frames": 4,
                                                                         "crops_per_call": est.batch_size})
            else:  # split: detector 1 thread, pose the other cores, no slot
                from hrpose.runtime import make_backend

                e2 = copy.copy(est)
                e2.backend = make_backend("openvino", est.model, device="cpu", input_size=est.input_size,
                                          threads=max(1, (os.cpu_count() or 2) - 1))
                e2.detector = ClipDetector(out / "yolox_tiny.onnx", boxes, engine=args.det_engine, threads=1)
                variants["pipelined e2e, split threads (no slot)"] = (e2, {**settings, "compute_slot": None})
        # warm-up: one frame through every stage
        make_clip(out / "warm.mp4", 2, 1, args.clip)
        pipelined(est, out / "warm.mp4", out, 1, "warm", pipeline_defaults(est, est.batch_size))
        for e, st in variants.values():
            pipelined(e, out / "warm.mp4", out, 1, "warm", {**st})
        sweep = sweep_crops(est, [int(c) for c in args.sweep_crops.split(",")], 3) if args.sweep_crops else {}
        if sweep:
            print("pose model ms per crop (flip test, one call) by crops a call, median [min-max] of 3: "
                  + "; ".join(f"{c}: {1000 * statistics.median(v):.1f} [{1000 * min(v):.1f}-{1000 * max(v):.1f}]"
                              for c, v in sweep.items()), flush=True)  # fmt: skip
        runs: dict[str, list[float]] = defaultdict(list)
        ref: dict[int, list] = {}
        other: dict[int, list] = {}
        for rep in range(args.repeats):
            t = serial(est, out / "clip.mp4", out, crops)
            for k, v in t.items():
                runs[k].append(args.frames / v)
            runs["serial (sum of stages)"].append(args.frames / sum(t.values()))
            runs["compute bound 1 / (t_detect + t_pose)"].append(args.frames / (t["detect"] + t["pose"]))
            s, ref = pipelined(est, out / "clip.mp4", out, 1, "e2e", pipeline_defaults(est, est.batch_size))
            runs["pipelined e2e"].append(args.frames / s)
            for name, (e, st) in variants.items():
                s, _ = pipelined(e, out / "clip.mp4", out, 1, "var", {**st})
                runs[name].append(args.frames / s)
            if not args.no_det_every:
                s, other = pipelined(est, out / "clip.mp4", out, 5, "e2e5", pipeline_defaults(est, est.batch_size))
                runs["pipelined e2e, --det-every 5"].append(args.frames / s)
            posed = (sum(len(p) for p in ref.values()), sum(len(p) for p in other.values()))
            print(f"repeat {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in runs.items())
                  + f"; people posed: every-frame detection {posed[0]}, --det-every 5 {posed[1]}", file=sys.stderr,
                  flush=True)  # fmt: skip
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in runs.items()}
    bound = "compute bound 1 / (t_detect + t_pose)"
    print()
    print("| run | frames/s, median | min - max | x pose alone | x compute bound |")
    print("| --- | --- | --- | --- | --- |")
    for k, v in runs.items():
        print(f"| {k} | {med[k]:.2f} | {min(v):.2f} - {max(v):.2f} | {med[k] / med['pose']:.2f} | "
              f"{med[k] / med[bound]:.2f} |")  # fmt: skip
    ratios = [e / p for e, p in zip(runs["pipelined e2e"], runs["pose"])]
    to_bound = [e / b for e, b in zip(runs["pipelined e2e"], runs[bound])]
    print(f"\npipelined e2e / pose alone, per repeat: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"pipelined e2e / compute bound, per repeat: {', '.join(f'{r:.2f}' for r in to_bound)}")
    if "pipelined e2e, --det-every 5" in runs:
        r5 = [e / p for e, p in zip(runs["pipelined e2e, --det-every 5"], runs["pose"])]
        print(f"pipelined e2e --det-every 5 / pose alone, per repeat: {', '.join(f'{r:.2f}' for r in r5)}")
    print(f"pipelined e2e / serial sum, median: {med['pipelined e2e'] / med['serial (sum of stages)']:.2f}")
    print(f"load average after the run: {', '.join(f'{x:.1f}' for x in load_after)}")
    posed_d: dict[str, int] = {}
    dev: dict[str, float | int] = {}
    if other:
        dev = deviation(ref, other, 5)
        posed_d = {"every_frame": sum(len(p) for p in ref.values()),
                   "det_every_5": sum(len(p) for p in other.values()), "annotated": sum(people)}  # fmt: skip
        print(f"--det-every 5 vs every-frame detection (last repeat), on the frames without detection: joint "
              f"distance mean {dev['mean_px']:.2f} px, median {dev['median_px']:.2f} px ({100 * dev['mean_rel']:.2f}% "
              f"/ {100 * dev['median_rel']:.2f}% of the box diagonal) over {dev['matched']} people "
              f"({dev['box_matched']} matched by box IoU >= 0.3); people posed "
              f"on those frames: every-frame detection {dev['every_frame_people']}, --det-every 5 "
              f"{dev['det_every_people']}; on all frames: {posed_d['every_frame']} and {posed_d['det_every_5']} "
              f"({posed_d['annotated']} annotated)"
              f"{'' if args.weights else ' (random pose weights: not meaningful)'}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({
            "clip": args.clip, "frames": args.frames, "hold": args.hold, "weights": args.weights, "cfg": cfg,
            "fps": {k: list(v) for k, v in runs.items()}, "median_fps": med, "e2e_over_pose": ratios,
            "e2e_over_compute_bound": to_bound, "deviation": dev, "posed": posed_d,
            "sweep_s_per_crop": {str(c): v for c, v in sweep.items()},
        }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
