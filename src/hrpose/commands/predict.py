"""`hrpose predict`: poses on image files, folders, globs, videos or a webcam; JSON + drawings out.

Per image: `<out>/<stem>.json`, a list of COCO keypoint results (image_id, image_file, category_id 1,
keypoints [x1, y1, s1, ...], score, bbox, joint_names), and `<out>/<stem>_pose.jpg` with the skeletons.
All images together: `<out>/results.json` (COCO results, loadable by pycocotools `loadRes`).
Per video / webcam: `<out>/<stem>_pose.mp4` (same fps and size, mp4v) and `<out>/<stem>.jsonl`, one
JSON line per frame (with --detector file:..., a video's detections are looked up by image_id = frame
index, 0-based). Images are read upright by their EXIF orientation (keypoints refer to the upright
image). Unreadable files are reported by name and skipped; the exit code is 1 when nothing could be
processed, 2 for a bad config/weights/detector, else 0.

Every file is written atomically (a temporary file, then a rename), JSON strictly (no NaN tokens: a person
whose keypoints are not finite is an error for that image, which is skipped). Images over the pixel limit
(`--max-image-pixels`, env HRPOSE_MAX_IMAGE_PIXELS, default 100 million) are skipped by their header.
Ctrl-C stops the run: `results.json` is written for the images done, each video keeps the frames done,
and the exit code is 130. Folders and globs skip the drawings hrpose wrote (`*_pose.jpg`, `*_pose.mp4`
inside the output folder), so the default `--out` inside an input folder is not read back in.

Videos, webcams and streams run in `predict_video`; the shards of a collection meet and merge in
`predict_collection`.
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
    from ..runtime import backend_names  # at call time: `hrpose --help` starts without torch

    parser.add_argument("--cfg", default=None,
                        help="experiment config (YAML); default: the config stored in --weights (hrpose "
                             "checkpoints), or the --model's")  # fmt: skip
    parser.add_argument("--weights", default=None,
                        help="model checkpoint (.pth/.safetensors, hrpose/official or MMPose layout; .onnx with "
                             "--backend onnxruntime); default TEST.MODEL_FILE")  # fmt: skip
    parser.add_argument("--model", default=None, metavar="NAME",
                        help="a model zoo pose model (`hrpose models` lists them), fetched on first use into "
                             "$HRPOSE_HOME; the default when neither --cfg nor --weights is given: "
                             "hrnet-w32-coco-256x192")  # fmt: skip
    parser.add_argument("--random-weights", action="store_true",
                        help="run the untrained network (random weights) on purpose, e.g. to test a pipeline")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders, glob patterns, list files (@list.txt: one path a line), video "
                             "files, a webcam index (0, 1, ...), a stream URL (rtsp://, http(s)://) or - (MJPEG or "
                             "raw frames on stdin, e.g. piped from ffmpeg)")  # fmt: skip
    parser.add_argument("--out", default="predictions", help="output folder (default: ./predictions)")
    parser.add_argument("--detector", default="auto",
                        help="person boxes: auto (the model zoo's YOLOX Human-Art ONNX detector, fetched on first "
                             "use; HOG when it cannot be had), a zoo detector name (yolox-m-humanart), hog, whole, "
                             "file:DETECTIONS.json (COCO results) or onnx:MODEL.onnx")  # fmt: skip
    parser.add_argument("--det-thr", type=float, default=None, help="detector score threshold, 0..1")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--kpt-thr", type=float, default=0.3, help="joints scored below this are not drawn")
    parser.add_argument("--no-flip", action="store_true", help="skip the flip test (twice as fast)")
    parser.add_argument("--smooth", action="store_true",
                        help="video: One Euro smoothing of keypoints (implies --track)")  # fmt: skip
    parser.add_argument("--track", action="store_true", help="video: person identities across frames")
    parser.add_argument("--backend", default="auto",
                        choices=backend_names(),
                        help="auto (default): the fastest backend with fp32 keypoints on this machine, or the "
                        "fastest one at --precision (see `hrpose info`); "
                        "torch: BatchNorm folded; torch-fast: + channels_last + TorchScript (same numbers); "
                        "torch-bf16: bf16 weights (AMX/AVX-512 BF16); torch-fp16: GPUs, fp16 + CUDA graphs; "
                        "torch-compile: torch.compile (inductor; slow first batch); "
                        "onnxruntime / openvino: the exported graph (or --weights FILE.onnx); "
                        "onnxruntime-int8: --weights an int8 .onnx (see docs/architecture.md)")  # fmt: skip
    parser.add_argument("--precision", default=None, choices=("fp32", "bf16", "fp16", "int8"),
                        help="with --backend auto: fp32 (default; keypoints as the fp32 model's), or a reduced "
                        "precision this machine runs fast: bf16 (CPUs with AMX/AVX512_BF16, GPUs), fp16 (GPUs), "
                        "int8 (CPU, OpenVINO: --weights model.xml from `hrpose export --format openvino "
                        "--int8-calib`, or quantised on first use from --int8-calib)")  # fmt: skip
    add_int8_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=16, help="person crops per forward pass")
    parser.add_argument("--max-frames", type=int, default=0,
                        help="stop each video/webcam/stream after N frames (0 = all)")  # fmt: skip
    _add_run_arguments(parser)
    parser.add_argument("--no-draw", action="store_true", help="write JSON only, no drawings/videos")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="skip images whose header declares more than N pixels (default: "
                             "$HRPOSE_MAX_IMAGE_PIXELS or 100000000)")  # fmt: skip


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Streams, video pipeline, tables, caps and sharding (issue 25)."""
    from hrpose.inference.pipeline_run import DEFAULT_MAX_PEOPLE

    g = parser.add_argument_group("video and streams")
    g.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                   help="stop each video/stream after this many seconds of it (0 = no limit)")  # fmt: skip
    g.add_argument("--det-every", type=int, default=1, metavar="N",
                   help="video: run the person detector on every N-th frame only and follow people from their "
                        "previous pose in between (faster; see README for the keypoint deviation)")  # fmt: skip
    g.add_argument("--reconnect", type=float, default=30.0, metavar="SECONDS",
                   help="stream: when it drops, keep trying to reconnect for this long (default 30)")  # fmt: skip
    g.add_argument("--queue", type=int, default=4, metavar="FRAMES",
                   help="stream or webcam: frames waiting for the model at most; older ones are dropped and "
                        "counted (default 4)")  # fmt: skip
    g.add_argument("--stdin-size", default=None, metavar="WxH",
                   help="input - carries raw bgr24 frames of this size (ffmpeg -f rawvideo -pix_fmt bgr24 -); "
                        "without it, stdin is read as MJPEG (ffmpeg -f mjpeg -)")  # fmt: skip
    g.add_argument("--stdin-fps", type=float, default=None, metavar="FPS",
                   help="input -: the frame rate, for the frame times and the drawn video (default 30)")
    o = parser.add_argument_group("output and collections")
    o.add_argument("--format", default="json", metavar="LIST",
                   help="what to write, comma separated: json (always), csv (results.csv), parquet "
                        "(results.parquet, needs pyarrow): one row per person per image/frame")  # fmt: skip
    o.add_argument("--max-people", type=int, default=DEFAULT_MAX_PEOPLE, metavar="N",
                   help=f"keep at most N people per image/frame, the highest-scoring boxes (default "
                        f"{DEFAULT_MAX_PEOPLE}; 0 = no limit)")  # fmt: skip
    o.add_argument("--shard", default=None, metavar="I/N",
                   help="do share I (0..N-1) of the inputs, item k going to share k %% N; the share that "
                        "finishes last writes results.json (under torchrun, RANK/WORLD_SIZE choose the share)")
    o.add_argument("--resume", action="store_true",
                   help="skip the inputs already done in --out (after a stopped or killed run)")
    o.add_argument("--merge", action="store_true",
                   help="only merge the per-item outputs of finished shards in --out into results.json/tables")


def add_int8_arguments(parser: argparse.ArgumentParser) -> None:
    """--int8-calib / --calib-set / --max-ap-drop: where `--precision int8` quantises a checkpoint from."""
    parser.add_argument("--int8-calib", default=None, metavar="DATASET_ROOT",
                        help="--precision int8 with a checkpoint: quantise it once (cached) on the people of this "
                        "COCO-layout folder (annotations/person_keypoints_<set>.json, images/<set>/)")  # fmt: skip
    parser.add_argument("--calib-set", default=None, metavar="SET",
                        help="the --int8-calib set (default: the folder's only person_keypoints_<set>.json)")
    parser.add_argument("--max-ap-drop", type=float, default=0.5, metavar="AP",
                        help="--int8-calib: accuracy control keeps layers in fp32 until the held-out AP drops by "
                        "at most this many AP points (default 0.5)")  # fmt: skip


@dataclass
class _Summary:
    images: int = 0
    frames: int = 0
    people: int = 0
    seconds: float = 0.0
    bad: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    interrupted: bool = False
    kept: list[str] = field(default_factory=list)
    dropped: int = 0  # stream frames dropped because the model was slower
    capped: int = 0  # people dropped by --max-people
    capped_items: int = 0
    skipped: int = 0  # --resume: items already done
    disk_error: str = ""  # a write into --out failed (disk full, I/O error): the run stopped


#: the files hrpose predict draws; folder/glob expansion skips them inside the output folder
OWN_OUTPUT_SUFFIXES = ("_pose.jpg", "_pose.mp4")


def _is_own_output(path: str | Path, out_dir: Path | None) -> bool:
    if out_dir is None or not str(path).endswith(OWN_OUTPUT_SUFFIXES):
        return False
    try:
        return Path(path).resolve().is_relative_to(out_dir.resolve())
    except OSError:
        return False


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` via a temporary file in the same folder and os.replace: never half a file, and no
    temporary file left behind, even by a signal (`user_files.replace_atomically`)."""
    from hrpose.user_files import replace_atomically

    replace_atomically(path, data.encode("utf-8") if isinstance(data, str) else data)


def strict_json(obj: Any) -> str:
    """JSON without NaN/Infinity tokens (which strict parsers reject): a non-finite value raises ValueError."""
    return json.dumps(obj, allow_nan=False)


def expand_inputs(specs: list[str], out_dir: str | Path | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """INPUT arguments -> ([(kind 'image'|'video'|'webcam', path)], [error messages]).

    Folders and globs skip the drawings hrpose wrote into `out_dir` (`*_pose.jpg`, `*_pose.mp4`), so a
    second run does not process its own output; a file named explicitly is always taken."""
    from hrpose.images import is_image_path
    from hrpose.inference.video import is_video_path, is_webcam

    items: list[tuple[str, str]] = []
    errors: list[str] = []
    out = Path(out_dir) if out_dir is not None else None
    from hrpose.inference.streams import check_url, is_stream_spec
    from hrpose.inference.video import VideoError

    specs = _read_list_files(specs, errors)
    for spec in specs:
        p = Path(spec)
        if is_stream_spec(spec) and not p.exists():
            if spec == "-":
                items.append(("stream", spec))
                continue
            try:
                items.append(("stream", check_url(spec)))
            except VideoError as e:
                errors.append(str(e))
        elif is_webcam(spec) and not p.exists():
            items.append(("webcam", spec))
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and (is_image_path(f) or is_video_path(f)))
            own = [f for f in found if _is_own_output(f, out)]
            if own:
                logger.info("%s: skipping %d drawings hrpose wrote into %s", p, len(own), out)
                found = [f for f in found if f not in set(own)]
            if not found:
                errors.append(f"{p}: the folder has no image or video files")
            items.extend(("video" if is_video_path(f) else "image", str(f)) for f in found)
        elif p.is_file():
            items.append(("video" if is_video_path(p) else "image", str(p)))
        elif any(c in spec for c in "*?["):
            matches = sorted(
                m for m in glob.glob(spec, recursive=True) if Path(m).is_file() and not _is_own_output(m, out)
            )
            if not matches:
                errors.append(f"{spec}: the pattern matches no file")
            items.extend(("video" if is_video_path(m) else "image", m) for m in matches)
        elif p.exists():  # a FIFO, a device, a socket: never opened (a read could block or never end)
            errors.append(f"{spec}: not a regular file (a FIFO, device or socket); give an image or video file")
        else:
            errors.append(f"{spec}: no such file, folder or webcam")
    return items, errors


def _read_list_files(specs: list[str], errors: list[str]) -> list[str]:
    """`@FILE` arguments -> the paths FILE lists, one a line (blank lines and lines starting with # skipped;
    relative paths are relative to the list file's folder)."""
    out: list[str] = []
    for spec in specs:
        if not spec.startswith("@") or Path(spec).exists():
            out.append(spec)
            continue
        lst = Path(spec[1:])
        try:
            text = lst.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            errors.append(f"{lst}: cannot read the list file ({getattr(e, 'strerror', None) or e}); expected a "
                          "UTF-8 text file with one image or video path a line")  # fmt: skip
            continue
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line if Path(line).is_absolute() or "://" in line else str(lst.parent / line))
    return out


class _Namer:
    """Unique output stems: photo, photo_1, ... when two inputs share a name."""

    def __init__(self) -> None:
        from hrpose.outdir import RESERVED_STEMS

        self.used: set[str] = set(RESERVED_STEMS)  # results.json is the aggregate: results.jpg -> results_1.json

    def __call__(self, path: str) -> str:
        if path == "-":
            stem = "stdin"
        elif "://" in path:
            from urllib.parse import urlsplit

            u = urlsplit(path)
            stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{u.hostname}_{u.path.strip('/')}")
            stem = stem.strip("_")[:80] or "stream"
        else:
            from hrpose.inference.video import is_webcam

            stem = Path(path).stem if not is_webcam(path) else f"webcam{path}"
        name, i = stem, 1
        while name in self.used:
            name, i = f"{stem}_{i}", i + 1
        self.used.add(name)
        return name


def _results(poses: list[Any], path: str, joint_names: list[str]) -> list[dict[str, Any]]:
    from hrpose.inference.results import people_json

    return people_json(poses, path, joint_names)


def _build_detector(spec: str, det_thr: float | None) -> Any:
    from hrpose.inference.detectors import build_detector, check_score_thr

    if det_thr is not None:
        check_score_thr(det_thr, "--det-thr")
    kind = spec.partition(":")[0].lower()
    kwargs = {} if det_thr is None or kind in ("whole", "none", "full") else {"score_thr": det_thr}
    return build_detector(spec, **kwargs)


def _fetch_pose_model(name: str) -> str:
    """Fetch the zoo pose model (the default one falls back to the official W32); the name that was had."""
    from hrpose import zoo

    entry, _ = zoo.fetch_pose(zoo.get_entry(name))
    return entry.name


def _with_detector_sources(err: Any, detector_spec: str) -> Exception:
    """The pose model could not be had: also try the zoo detector predict would use, so that one error names
    every source of both (an outage hits both hosts alike)."""
    from hrpose import zoo
    from hrpose.errors import UserError
    from hrpose.zoo.download import FetchError

    spec = detector_spec.strip()
    name = zoo.DEFAULT_DETECTOR if spec.lower() == "auto" else spec
    entry = zoo.REGISTRY.get(name)
    if entry is None or entry.kind != "detector" or zoo.is_offline():
        return err
    try:
        zoo.fetch(entry)
    except FetchError as det:
        tried = [f"pose model: {t}" for t in err.tried] + [f"detector {entry.name}: {t}" for t in det.tried]
        return UserError(
            "could not fetch the models predict needs from any source: "
            + "; ".join(f"[{i}] {t}" for i, t in enumerate(tried, 1))
            + ". To place the pose model by hand:" + str(err).split(". To place", 1)[-1].split(" by hand:", 1)[-1]
            + ". For the detector: " + zoo_place_hint(entry)
        )
    except UserError:
        return err
    return err


def zoo_place_hint(entry: Any) -> str:
    from hrpose.zoo.download import place_hint

    return place_hint(entry)


def build_estimator(args: argparse.Namespace) -> Any:
    """The model (--model NAME / --cfg + --weights / the default zoo model), the detector and the pixel limit,
    from predict's options (`hrpose serve` takes the same ones). Raises UserError for a bad choice."""
    from hrpose.errors import UserError
    from hrpose.image_limits import max_image_bytes, max_image_pixels
    from hrpose.inference.estimator import PoseEstimator

    max_image_pixels(args.max_image_pixels)  # a bad HRPOSE_MAX_IMAGE_PIXELS / option: one error, exit 2
    _check_numbers(args)
    max_image_bytes(args.max_image_pixels)  # likewise HRPOSE_MAX_IMAGE_BYTES

    model = getattr(args, "model", None)
    random_weights = bool(getattr(args, "random_weights", False))
    if model is not None and (args.cfg is not None or args.weights is not None):
        raise UserError(f"--model {model} brings its own config and weights: leave out --cfg/--weights, or drop "
                        "--model to use your own files")  # fmt: skip
    if model is None and args.cfg is None and args.weights is None:
        if random_weights:
            raise UserError("--random-weights needs the architecture: give --cfg YAML")
        from hrpose.zoo import DEFAULT_POSE_MODEL

        model = DEFAULT_POSE_MODEL
        print(f"using the model zoo's {model} (--model NAME picks another, `hrpose models` lists them)",
              file=sys.stderr)  # fmt: skip
    if model is not None:
        from hrpose.zoo.download import FetchError

        try:  # a missing pose model is the error to see first, not the detector's
            model = _fetch_pose_model(model)
        except FetchError as e:
            raise _with_detector_sources(e, args.detector) from None
    # warn_no_person=False: the caller reports images without people itself
    common: dict[str, Any] = dict(device=args.device, flip_test=not args.no_flip, backend=_resolve_backend(args),
                                  batch_size=args.batch_size, max_image_pixels=args.max_image_pixels,
                                  warn_no_person=False)  # fmt: skip
    if common["backend"] == "openvino-int8":  # int8 is a CPU path: --device auto means the CPU here
        common.update(device="cpu", int8_calib=getattr(args, "int8_calib", None),
                      calib_set=getattr(args, "calib_set", None), max_ap_drop=getattr(args, "max_ap_drop", 0.5))
    if model is not None:
        estimator = PoseEstimator.from_pretrained(model, detector=_build_detector(args.detector, args.det_thr),
                                                  **common)  # fmt: skip
    else:  # the config and weights are checked before the detector is fetched
        estimator = PoseEstimator.from_config(args.cfg, args.weights, random_weights=random_weights, **common)
        # set after loading, not passed in: a bad config or checkpoint is the error a user sees first
        estimator.detector = _build_detector(args.detector, args.det_thr)
    return estimator


def _check_numbers(args: argparse.Namespace) -> None:
    """Numeric options a user can get wrong silently (nan compares false with everything): refused by name."""
    import math

    from hrpose.errors import UserError

    kpt_thr = getattr(args, "kpt_thr", None)
    if kpt_thr is not None and not (math.isfinite(kpt_thr) and 0.0 <= kpt_thr <= 1.0):
        raise UserError(f"--kpt-thr must be a number from 0 to 1 (a joint score), got {kpt_thr}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (person crops per forward pass), got {args.batch_size}")
    if getattr(args, "max_frames", 0) < 0:
        raise UserError(f"--max-frames must be >= 0 (0 = every frame), got {args.max_frames}")


def _resolve_backend(args: argparse.Namespace) -> str:
    """--backend / --precision -> the backend name PoseEstimator runs ("auto" at fp32 stays "auto")."""
    from hrpose.runtime import BackendUnavailableError, auto_backend, resolve_device

    precision = getattr(args, "precision", None)
    if precision is None or (args.backend == "auto" and precision == "fp32"):
        return str(args.backend)
    if args.backend != "auto":
        raise BackendUnavailableError(
            f"--precision {precision} chooses the backend itself; drop --backend {args.backend} (or --precision)"
        )
    if precision == "int8":  # CPU int8 in OpenVINO (hrpose.quantize); never chosen without --precision int8
        from hrpose.runtime.openvino_int8 import GPU_REFUSAL, require_int8

        if str(args.device) != "auto" and _device_type(str(args.device)) != "cpu":
            raise BackendUnavailableError(GPU_REFUSAL)
        weights = str(getattr(args, "weights", None) or "")
        if weights.lower().endswith(".onnx"):
            raise BackendUnavailableError(
                f"--weights {weights}: int8 ONNX models (ONNX Runtime) are retired (they moved keypoints by up to "
                "8 px, docs/benchmarks.md); run `hrpose export --format openvino --int8-calib DATA` and pass the "
                ".xml, or give the checkpoint with --int8-calib DATA"
            )
        require_int8()
        return "openvino-int8"
    return auto_backend(precision, device=resolve_device(args.device), weights=args.weights)


class _DiskFull(Exception):
    """A write into --out failed (disk full, I/O error): the run stops with one error line."""


def _check_write_error(e: OSError, what: Path) -> None:
    """Raise _DiskFull (one line: the file, the reason, the fix) for a failed write."""
    from hrpose.outdir import disk_error

    raise _DiskFull(disk_error(what, e)) from e


def _device_type(spec: str) -> str:
    """The kind of device `spec` names ("cpu", "cuda", ...), without asking whether this machine has it."""
    import torch

    try:
        return torch.device(spec).type
    except (RuntimeError, ValueError):
        from hrpose.inference.estimator import resolve_device

        return resolve_device(spec).type  # its DeviceError names the bad spec


def run(args: argparse.Namespace) -> int:
    from hrpose.errors import UserError
    from hrpose.outdir import acquire_out_lock, check_out_dir
    from hrpose.termination import exit_status, sigterm_as_interrupt
    from hrpose.user_files import error_text

    try:
        formats, shard = _check_run_options(args)
    except UserError as e:
        print(f"error: {error_text(e)}", file=sys.stderr)
        return 2
    if not args.inputs and not args.merge:
        print("error: no INPUT given; name image files, folders, videos, a webcam index, a stream URL or -",
              file=sys.stderr)  # fmt: skip
        return 2
    # the SIGTERM handler goes in before anything touches --out: a SIGTERM that lands once the lock file exists
    # (while the model loads) ends the run with a message and status 143, never death by signal
    with sigterm_as_interrupt() as stop:
        try:
            try:
                out_dir = check_out_dir(args.out)  # a file in the way, read-only: refused before the model loads
                # one predict per --out (a second one would mix results.json); each share of a sharded run has its own
                lock = acquire_out_lock(out_dir) if shard is None else \
                    acquire_out_lock(out_dir, name=f".hrpose-predict.shard{shard.index}.lock")  # fmt: skip
            except UserError as e:
                print(f"error: {error_text(e)}", file=sys.stderr)
                return 2
            try:
                return _run(args, formats, shard, out_dir, stop)
            except _DiskFull as e:
                print(f"error: {error_text(e)}", file=sys.stderr)
                return 1
            finally:
                lock.release()
        except KeyboardInterrupt:  # before the first image (loading the model): nothing was written
            if not stop.signum:
                raise
            print("terminated (SIGTERM) before any result was written", file=sys.stderr)
            return int(exit_status(stop))


def _check_run_options(args: argparse.Namespace) -> tuple[tuple[str, ...], Any]:
    """--format, --shard/torchrun, --det-every, --max-people, --stdin-size -> (formats, shard or None);
    UserError for a bad value."""
    from hrpose.errors import UserError
    from hrpose.inference.shard import parse_shard, shard_from_env
    from hrpose.inference.tables import TableFormatError, parse_formats

    try:
        formats = parse_formats(getattr(args, "format", "json"))
    except TableFormatError as e:
        raise UserError(str(e)) from None
    shard = parse_shard(args.shard) if getattr(args, "shard", None) else shard_from_env()
    if getattr(args, "det_every", 1) < 1:
        raise UserError(f"--det-every {args.det_every}: expected a whole number >= 1 (1 = detect on every frame)")
    if getattr(args, "max_people", 0) < 0:
        raise UserError(f"--max-people {args.max_people}: expected a whole number >= 0 (0 = no limit)")
    if getattr(args, "max_frames", 0) < 0 or getattr(args, "duration", 0.0) < 0:
        raise UserError("--max-frames and --duration must be >= 0 (0 = no limit)")
    if getattr(args, "stdin_size", None):
        _parse_size(args.stdin_size)
    return formats, shard


def _parse_size(spec: str) -> tuple[int, int]:
    from hrpose.errors import UserError

    w, sep, h = str(spec).lower().partition("x")
    if sep and w.isdigit() and h.isdigit() and 0 < int(w) <= 16384 and 0 < int(h) <= 16384:
        return int(w), int(h)
    raise UserError(f"--stdin-size {spec}: expected WIDTHxHEIGHT in pixels, e.g. --stdin-size 640x480")


def _run(args: argparse.Namespace, formats: tuple[str, ...], shard: Any, out_dir: Path, stop: Any) -> int:
    from hrpose.commands.predict_collection import _finish_collection, _item_done, _merge
    from hrpose.commands.predict_video import _predict_stream
    from hrpose.errors import UserError
    from hrpose.inference import shard as sh
    from hrpose.inference.detectors import DetectorError
    from hrpose.user_files import error_text

    if args.merge:
        try:
            return _merge(out_dir, formats, None if shard is None else shard.count)
        except UserError as e:
            print(f"error: {error_text(e)}", file=sys.stderr)
            return 2
    items, errors = expand_inputs(list(args.inputs), out_dir=args.out)
    for message in errors:
        print(f"error: {error_text(message)}", file=sys.stderr)
    if not items:
        if not errors:  # each missing input already had its own error line
            print("error: nothing to process: the inputs name no image, video or webcam", file=sys.stderr)
        return 2
    # names over the whole list, so that every shard agrees where each item's outputs go
    namer = _Namer()
    named = [(k, kind, path, namer(path)) for k, (kind, path) in enumerate(items)]
    collection = shard is not None or args.resume
    args.mark_done = collection  # done markers in <out>/.hrpose/ only for runs that split or resume
    mine = [it for it in named if shard is None or shard.mine(it[0])]
    summary = _Summary(bad=[f"{e}" for e in errors])
    if args.resume:
        todo = [it for it in mine if not _item_done(out_dir, it[1], it[3])]
        summary.skipped = len(mine) - len(todo)
        if summary.skipped:
            print(f"--resume: {summary.skipped} of {len(mine)} inputs already done in {out_dir}", file=sys.stderr)
        mine = todo
    try:
        estimator = build_estimator(args)
    except (UserError, DetectorError, ValueError, OSError, RuntimeError) as e:
        print(f"error: {error_text(e)}", file=sys.stderr)
        return 2
    table = None
    if "csv" in formats and not collection:
        from hrpose.inference.tables import CsvTable

        try:
            table = CsvTable(out_dir / "results.csv", estimator.joint_names)
        except OSError as e:
            _check_write_error(e, out_dir / "results.csv")
            raise
    rows: list[list[Any]] | None = [] if "parquet" in formats and not collection else None
    images = [(path, name) for _, kind, path, name in mine if kind == "image"]
    streams = [(kind, path, name) for _, kind, path, name in mine if kind != "image"]
    t0 = time.perf_counter()
    try:
        if images:
            _predict_images(estimator, images, out_dir, args, summary, table, rows, write_results=not collection)
        for kind, path, name in streams:
            if summary.interrupted or summary.disk_error:
                break
            _predict_stream(estimator, kind, path, name, out_dir, args, summary, table, rows)
    finally:
        if table is not None:
            pending = sys.exc_info()[1]  # the error this finally runs for, if any
            try:
                table.close()
                summary.kept.append(f"{table.path} ({table.rows} rows)")
            except OSError as e:  # a full disk: when an error is already on its way, it says so
                table.tmp.unlink(missing_ok=True)
                if pending is None:
                    _check_write_error(e, table.path)
                    raise
    if rows is not None and (rows or not summary.disk_error):
        from hrpose.inference.tables import write_parquet
        from hrpose.outdir import disk_error

        try:
            write_parquet(out_dir / "results.parquet", estimator.joint_names, rows)
            summary.kept.append(f"{out_dir / 'results.parquet'} ({len(rows)} rows)")
        except OSError as e:  # a full disk: the other outputs are kept, one error line says what is missing
            msg = disk_error(out_dir / "results.parquet", e)
            summary.disk_error = f"{summary.disk_error}; also {msg}" if summary.disk_error else msg
    summary.seconds = time.perf_counter() - t0
    if collection and not summary.interrupted and not summary.disk_error:
        assert shard is not None or args.resume
        this = shard if shard is not None else sh.Shard()
        done_items = [{"k": k, "kind": kind, "path": path, "name": name, "done": _item_done(out_dir, kind, name),
                       "joint_names": list(estimator.joint_names)}
                      for k, kind, path, name in named if this.mine(k)]  # fmt: skip
        sh.write_manifest(out_dir, this, done_items)
        _finish_collection(out_dir, formats, this, summary)
    return _report(summary, out_dir, stop)


def _report(summary: _Summary, out_dir: Path, stop: Any) -> int:
    from hrpose.termination import exit_status
    from hrpose.user_files import error_text

    done = summary.images + summary.frames
    rate = done / summary.seconds if summary.seconds > 0 else 0.0
    if summary.empty:
        print(f"no person found in {len(summary.empty)} image(s)/frame(s)", file=sys.stderr)
    if summary.capped:
        print(f"--max-people: {summary.capped} people dropped in {summary.capped_items} image(s)/frame(s) (the "
              "highest-scoring kept)", file=sys.stderr)  # fmt: skip
    if summary.dropped:
        print(f"{summary.dropped} stream frame(s) dropped because the model was slower than the stream",
              file=sys.stderr)  # fmt: skip
    if summary.bad:
        print(f"{len(summary.bad)} input(s) could not be processed:", file=sys.stderr)
        for b in summary.bad:
            print(f"  {error_text(b)}", file=sys.stderr)
    print(f"{summary.images} images, {summary.frames} frames, {summary.people} people found, "
          f"{rate:.2f} frames/s; results in {out_dir}")  # fmt: skip
    kept = ", ".join(summary.kept) if summary.kept else "nothing"
    if summary.disk_error:
        print(f"error: {summary.disk_error}; kept {kept}", file=sys.stderr)
        return 1
    if summary.interrupted:
        how = "terminated (SIGTERM)" if stop.signum else "interrupted"
        print(f"{how}: kept {kept}; run again with --resume to finish the inputs not yet done", file=sys.stderr)
        return int(exit_status(stop))
    return 0 if done > 0 or (summary.skipped and not summary.bad) else 1


def _predict_images(estimator: Any, items: list[tuple[str, str]], out_dir: Path, args: Any, s: _Summary,
                    table: Any, rows: list[list[Any]] | None, *, write_results: bool) -> None:  # fmt: skip
    import cv2

    from hrpose.errors import UserError
    from hrpose.images import ImageReadError, load_image
    from hrpose.inference.detectors import DetectorError
    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.pipeline_run import cap_people
    from hrpose.inference.shard import mark_done
    from hrpose.inference.tables import rows_of
    from hrpose.outdir import disk_error
    from hrpose.user_files import error_text

    names = list(estimator.joint_names)
    all_results: list[dict[str, Any]] = []
    if args.track or args.smooth:
        tqdm.write("note: --track/--smooth apply to videos only; images are predicted independently")
    max_people = int(getattr(args, "max_people", 0) or 0)
    try:
        for path, stem in tqdm(items, desc="images", unit="img", disable=len(items) < 2 or None):
            try:
                image = load_image(path, max_pixels=getattr(estimator, "max_image_pixels", None))
                h, w = image.shape[:2]
                boxes = estimator.prepare_boxes(estimator.detect(image, path), w, h, path)
                boxes, dropped = cap_people(boxes, max_people)
                if dropped:
                    tqdm.write(f"warning: {path}: {dropped} people over --max-people {max_people} dropped (the "
                               f"{max_people} highest-scoring boxes kept)")  # fmt: skip
                    s.capped += dropped
                    s.capped_items += 1
                poses = estimator(image, boxes, key=path)
                results = _results(poses, path, names)
                text = strict_json(results)  # ValueError for a non-finite value: the image is reported
            except (UserError, ImageReadError, DetectorError, ValueError) as e:
                tqdm.write(f"error: {error_text(e)}")
                s.bad.append(str(e))
                continue
            target = out_dir / f"{stem}_pose.jpg"
            in_table = json_written = False
            try:
                if not args.no_draw:
                    drawn = draw_poses(image, poses, names, estimator.skeleton, kpt_thr=args.kpt_thr)
                    ok, jpg = cv2.imencode(".jpg", drawn)
                    if ok:
                        write_atomic(target, jpg.tobytes())
                if table is not None:  # whole rows or none (a failed write is cut back)
                    target = table.path
                    table.write(rows_of(results, path))
                    in_table = True
                target = out_dir / f"{stem}.json"  # written last: an image with its JSON is done
                write_atomic(target, text)
                json_written = True
                if args.mark_done:
                    target = out_dir / ".hrpose"
                    mark_done(out_dir, stem)
            except OSError as e:  # disk full, I/O error: stop, keep what was done (results.json below)
                if in_table and not json_written:
                    table.undo()  # the table holds the images that are done, no other
                s.disk_error = disk_error(target, e)
                break
            if rows is not None:
                rows.extend(rows_of(results, path))
            all_results.extend(results)
            if not poses:
                tqdm.write(f"{path}: no person found")
                s.empty.append(path)
            s.images += 1
            s.people += len(poses)
    except KeyboardInterrupt:
        s.interrupted = True
        tqdm.write(f"interrupted after {s.images} of {len(items)} images")
    if s.images and write_results:
        try:
            write_atomic(out_dir / "results.json", strict_json(all_results))
            s.kept.append(f"{out_dir / 'results.json'} ({s.images} of {len(items)} images)")
        except OSError as e:
            msg = disk_error(out_dir / "results.json", e)
            s.disk_error = f"{s.disk_error}; also {msg}" if s.disk_error else msg

