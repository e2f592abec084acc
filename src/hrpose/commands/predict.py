"""`hrpose predict`: poses on image files, folders, globs, videos or a webcam; JSON + drawings out.

Per image: `<out>/<stem>.json`, a list of COCO keypoint results (image_id, image_file, category_id 1,
keypoints [x1, y1, s1, ...], score, bbox, joint_names), and `<out>/<stem>_pose.jpg` with the skeletons.
All images together: `<out>/results.json` (COCO results, loadable by pycocotools `loadRes`).
Per video / webcam: `<out>/<stem>_pose.mp4` (same fps and size, mp4v) and `<out>/<stem>.jsonl`, one
JSON line per frame (with --detector file:..., a video's detections are looked up by image_id = frame
index, 0-based). Images are read upright by their EXIF orientation (keypoints refer to the upright
image). Unreadable files are reported by name and skipped; the exit code is 1 when nothing could be
processed, 2 for a bad config/weights/detector, else 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference.estimator import TORCH_BACKEND_NAMES

    parser.add_argument("--cfg", required=True, help="experiment config (YAML)")
    parser.add_argument("--weights", default=None,
                        help="model checkpoint (.pth/.safetensors; .onnx with --backend onnxruntime); "
                             "default TEST.MODEL_FILE")  # fmt: skip
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders, glob patterns, video files, or a webcam index (0, 1, ...)")
    parser.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    parser.add_argument("--detector", default="auto",
                        help="person boxes: auto (hog if this OpenCV has it, else whole), hog, whole, "
                             "file:DETECTIONS.json (COCO results) or onnx:MODEL.onnx")  # fmt: skip
    parser.add_argument("--det-thr", type=float, default=None, help="detector score threshold")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--kpt-thr", type=float, default=0.3, help="joints scored below this are not drawn")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test (twice as fast)")
    parser.add_argument("--smooth", action="store_true",
                        help="video: One Euro smoothing of keypoints (implies --track)")  # fmt: skip
    parser.add_argument("--track", action="store_true", help="video: person identities across frames")
    parser.add_argument("--backend", default="auto",
                        choices=("auto", *TORCH_BACKEND_NAMES, "onnxruntime"),
                        help="auto (default): the fastest backend with fp32 keypoints on this machine, or the "
                        "fastest one at --precision (see `hrpose info`); "
                        "torch: BatchNorm folded; torch-fast: + channels_last + TorchScript (same numbers); "
                        "torch-bf16: bf16 weights (AMX/AVX-512 BF16); torch-fp16: GPUs, fp16 + CUDA graphs; "
                        "torch-compile: torch.compile (inductor; slow first batch); "
                        "onnxruntime: --weights FILE.onnx")  # fmt: skip
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16", "int8"),
                        help="with --backend auto: fp32 (default; keypoints as the fp32 model's), or a reduced "
                        "precision this machine runs fast: bf16 (CPUs with AMX/AVX512_BF16, GPUs), fp16 (GPUs), "
                        "int8 (an int8 .onnx from `hrpose export --int8-calib`)")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="person crops per forward pass")
    parser.add_argument("--max-frames", type=int, default=0, help="stop each video/webcam after N frames (0 = all)")
    parser.add_argument("--no-draw", action="store_true", help="write JSON only, no drawings/videos")


@dataclass
class _Summary:
    images: int = 0
    frames: int = 0
    people: int = 0
    seconds: float = 0.0
    bad: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)


def expand_inputs(specs: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """INPUT arguments -> ([(kind 'image'|'video'|'webcam', path)], [error messages])."""
    from hrpose.inference.images import is_image_path
    from hrpose.inference.video import is_video_path, is_webcam

    items: list[tuple[str, str]] = []
    errors: list[str] = []
    for spec in specs:
        p = Path(spec)
        if is_webcam(spec) and not p.exists():
            items.append(("webcam", spec))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and (is_image_path(f) or is_video_path(f)))
            if not found:
                errors.append(f"{p}: the folder has no image or video files")
            items.extend(("video" if is_video_path(f) else "image", str(f)) for f in found)
        elif p.is_file():
            items.append(("video" if is_video_path(p) else "image", str(p)))
        elif any(c in spec for c in "*?["):
            matches = sorted(m for m in glob.glob(spec, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append(f"{spec}: the pattern matches no file")
            items.extend(("video" if is_video_path(m) else "image", m) for m in matches)
        else:
            errors.append(f"{spec}: no such file, folder or webcam")
    return items, errors


class _Namer:
    """Unique output stems: photo, photo_1, ... when two inputs share a name."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, path: str) -> str:
        stem = Path(path).stem if not path.isdigit() else f"webcam{path}"
        name, i = stem, 1
        while name in self.used:
            name, i = f"{stem}_{i}", i + 1
        self.used.add(name)
        return name


def _image_id(path: str) -> int | str:
    stem = Path(path).stem
    return int(stem) if stem.isdigit() else stem


def _results(poses: list[Any], path: str, joint_names: list[str]) -> list[dict[str, Any]]:
    out = []
    for pose in poses:
        r = pose.to_coco(_image_id(path))
        r["image_file"] = path
        r["joint_names"] = joint_names
        out.append(r)
    return out


def _build_detector(spec: str, det_thr: float | None) -> Any:
    from hrpose.inference.detectors import HOGDetector, build_detector, default_detector, hog_available

    if spec == "auto":
        if hog_available() and det_thr is not None:
            return HOGDetector(score_thr=det_thr)
        return default_detector()
    kind = spec.partition(":")[0].lower()
    kwargs = {} if det_thr is None or kind in ("whole", "none", "full") else {"score_thr": det_thr}
    return build_detector(spec, **kwargs)


def _resolve_backend(args: argparse.Namespace) -> str:
    """--backend / --precision -> the backend name PoseEstimator runs ("auto" at fp32 stays "auto")."""
    from hrpose.backends import BackendUnavailableError, auto_backend
    from hrpose.inference.estimator import resolve_device

    precision = getattr(args, "precision", None)
    if precision is None or (args.backend == "auto" and precision == "fp32"):
        return str(args.backend)
    if args.backend != "auto":
        raise BackendUnavailableError(
            f"--precision {precision} chooses the backend itself; drop --backend {args.backend} (or --precision)"
        )
    return auto_backend(precision, device=resolve_device(args.device), weights=args.weights)


def run(args: argparse.Namespace) -> int:
    from hrpose.inference.detectors import DetectorError

    items, errors = expand_inputs(list(args.inputs))
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if not items:
        print("error: nothing to process", file=sys.stderr)
        return 1
    try:
        from hrpose.inference.estimator import PoseEstimator

        detector = _build_detector(args.detector, args.det_thr)
        backend = _resolve_backend(args)
        estimator = PoseEstimator(
            args.cfg, args.weights, device=args.device, flip_test=not args.no_flip, backend=backend,
            batch_size=args.batch_size, detector=detector,
        )  # fmt: skip
    except (DetectorError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    estimator.warn_no_person = False
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = _Summary(bad=[f"{e}" for e in errors])
    namer = _Namer()
    images = [path for kind, path in items if kind == "image"]
    streams = [(kind, path) for kind, path in items if kind != "image"]
    t0 = time.perf_counter()
    if images:
        _predict_images(estimator, images, out_dir, namer, args, summary)
    for kind, path in streams:
        _predict_stream(estimator, kind, path, out_dir, namer, args, summary)
    summary.seconds = time.perf_counter() - t0

    done = summary.images + summary.frames
    rate = done / summary.seconds if summary.seconds > 0 else 0.0
    if summary.empty:
        print(f"no person found in {len(summary.empty)} image(s)/frame(s)", file=sys.stderr)
    if summary.bad:
        print(f"{len(summary.bad)} input(s) could not be processed:", file=sys.stderr)
        for b in summary.bad:
            print(f"  {b}", file=sys.stderr)
    print(f"{summary.images} images, {summary.frames} frames, {summary.people} people found, "
          f"{rate:.2f} frames/s; results in {out_dir}")  # fmt: skip
    return 0 if done > 0 else 1


def _predict_images(estimator: Any, paths: list[str], out_dir: Path, namer: _Namer, args: Any, s: _Summary) -> None:
    import cv2

    from hrpose.inference.detectors import DetectorError
    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.images import ImageReadError, load_image

    names = list(estimator.joint_names)
    all_results: list[dict[str, Any]] = []
    if args.track or args.smooth:
        tqdm.write("note: --track/--smooth apply to videos only; images are predicted independently")
    for path in tqdm(paths, desc="images", unit="img", disable=len(paths) < 2 or None):
        try:
            image = load_image(path)
            poses = estimator(image, key=path)
        except (ImageReadError, DetectorError, ValueError) as e:
            tqdm.write(f"error: {e}")
            s.bad.append(str(e))
            continue
        stem = namer(path)
        results = _results(poses, path, names)
        (out_dir / f"{stem}.json").write_text(json.dumps(results))
        all_results.extend(results)
        if not args.no_draw:
            drawn = draw_poses(image, poses, names, estimator.skeleton, kpt_thr=args.kpt_thr)
            cv2.imwrite(str(out_dir / f"{stem}_pose.jpg"), drawn)
        if not poses:
            tqdm.write(f"{path}: no person found")
            s.empty.append(path)
        s.images += 1
        s.people += len(poses)
    if s.images:
        (out_dir / "results.json").write_text(json.dumps(all_results))


def _predict_stream(
    estimator: Any, kind: str, path: str, out_dir: Path, namer: _Namer, args: Any, s: _Summary
) -> None:
    from hrpose.inference.detectors import DetectorError
    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.tracking import PoseTracker
    from hrpose.inference.video import VideoError, VideoReader, VideoWriter

    names = list(estimator.joint_names)
    try:
        reader = VideoReader(path)
    except VideoError as e:
        tqdm.write(f"error: {e}")
        s.bad.append(str(e))
        return
    stem = namer(path)
    tracker = None
    if args.track or args.smooth:
        tracker = PoseTracker(estimator.meta.sigmas_array(), smooth=args.smooth, fps=reader.fps, kpt_thr=args.kpt_thr)
    writer = None
    frames_before = s.frames
    total = reader.frame_count or None
    if args.max_frames and total:
        total = min(total, args.max_frames)
    try:
        with reader, (out_dir / f"{stem}.jsonl").open("w") as jsonl:
            for i, frame in enumerate(tqdm(reader, desc=Path(path).name, unit="frame", total=total)):
                if args.max_frames and i >= args.max_frames:
                    break
                # a detection file for a video lists frames by image_id = frame index (0-based)
                poses = estimator(frame, key=i)
                if tracker is not None:
                    poses = tracker.update(poses)
                line = {"frame": i, "time": round(i / reader.fps, 4), "source": path,
                        "people": [p.to_coco(i) for p in poses]}  # fmt: skip
                jsonl.write(json.dumps(line) + "\n")
                if not args.no_draw:
                    if writer is None:
                        size = (frame.shape[1], frame.shape[0])
                        writer = VideoWriter(out_dir / f"{stem}_pose.mp4", reader.fps, size)
                    writer.write(draw_poses(frame, poses, names, estimator.skeleton, kpt_thr=args.kpt_thr))
                if not poses:
                    s.empty.append(f"{path}#{i}")
                s.frames += 1
                s.people += len(poses)
    except KeyboardInterrupt:
        tqdm.write(f"{reader.name}: stopped after {s.frames - frames_before} frames")
    except (VideoError, DetectorError, ValueError) as e:
        tqdm.write(f"error: {reader.name}: {e}")
        s.bad.append(f"{reader.name}: {e}")
    finally:
        if writer is not None:
            writer.close()
    if s.frames == frames_before:
        s.bad.append(f"{reader.name}: no frame could be read")
