"""`hrpose predict` on videos, webcams and live streams: the pipelined run of one source into `<stem>.jsonl`,
`<stem>_pose.mp4` and the table rows (see `hrpose.inference.pipeline_run`, `hrpose.inference.streams`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from hrpose.commands.predict import _check_write_error, _DiskFull, _parse_size, _Summary, strict_json


def _open_source(kind: str, path: str, args: Any) -> tuple[Any, Any]:
    """(reader with name/fps/frame_count, the frames to iterate, or a LiveFrames for streams)."""
    from hrpose.inference.streams import CameraReader, Frame, LiveFrames, StdinReader, StreamReader
    from hrpose.inference.video import VideoReader

    if kind == "webcam":  # live: the same bounded queue as streams, the oldest frames dropped and counted
        camera = CameraReader(path)
        return camera, LiveFrames(camera, max_queue=getattr(args, "queue", 4))
    if kind == "stream":
        if path == "-":
            size = _parse_size(args.stdin_size) if getattr(args, "stdin_size", None) else None
            reader: Any = StdinReader(size=size, fps=getattr(args, "stdin_fps", None))
        else:
            reader = StreamReader(path, reconnect_s=getattr(args, "reconnect", 30.0))
        return reader, LiveFrames(reader, max_queue=getattr(args, "queue", 4))
    video = VideoReader(path)

    def frames() -> Any:
        for i, image in enumerate(video):
            yield Frame(i, i / video.fps, image)

    return video, frames()


def _predict_stream(estimator: Any, kind: str, path: str, stem: str, out_dir: Path, args: Any, s: _Summary,
                    table: Any, rows: list[list[Any]] | None) -> None:  # fmt: skip
    from hrpose.inference.detectors import DetectorError
    from hrpose.inference.drawing import draw_poses
    from hrpose.inference.pipeline_run import VideoPipeline, pipeline_defaults
    from hrpose.inference.shard import mark_done
    from hrpose.inference.streams import Frame, LiveFrames
    from hrpose.inference.tables import rows_of
    from hrpose.inference.tracking import PoseTracker
    from hrpose.inference.video import VideoError, VideoWriter
    from hrpose.outdir import disk_error
    from hrpose.user_files import RecordFile, create_exclusive, error_text

    names = list(estimator.joint_names)
    try:
        reader, frames = _open_source(kind, path, args)
    except VideoError as e:
        tqdm.write(f"error: {error_text(e)}", file=sys.stderr)
        s.bad.append(str(e))
        return
    live = frames if isinstance(frames, LiveFrames) else None
    tracker = None
    det_every = int(getattr(args, "det_every", 1) or 1)
    if args.track or args.smooth or det_every > 1:
        tracker = PoseTracker(estimator.meta.sigmas_array(), smooth=args.smooth, fps=reader.fps, kpt_thr=args.kpt_thr)
    writer: Any = None
    frames_before = s.frames
    total = getattr(reader, "frame_count", 0) or None
    if args.max_frames and (total is None or total > args.max_frames):
        total = args.max_frames
    source = "stdin" if path == "-" else getattr(reader, "name", path)
    # written under new temporary names (created exclusively, never through a planted link) and renamed when
    # the stream ends (also on Ctrl-C, SIGTERM and on errors)
    jsonl_path, video_path = out_dir / f"{stem}.jsonl", out_dir / f"{stem}_pose.mp4"
    video_tmp: Path | None = None
    jsonl_tmp: Path | None = None
    # on a CPU: one model call at a time, small calls; on a GPU: crops of several frames in one call
    pipeline = VideoPipeline(estimator, det_every=det_every, max_people=int(getattr(args, "max_people", 0) or 0),
                             tracker=tracker, kpt_thr=args.kpt_thr,
                             **pipeline_defaults(estimator, args.batch_size))  # fmt: skip
    duration = float(getattr(args, "duration", 0.0) or 0.0)
    complete = False

    def limited(src: Any) -> Any:
        for f in src:
            if args.max_frames and f.index >= args.max_frames:
                break
            if duration and f.time >= duration:
                break
            yield f

    bar = tqdm(desc=Path(path).name if kind != "stream" else source, unit="frame", total=total)
    try:
        fd, jsonl_tmp = create_exclusive(out_dir, f".{stem}.jsonl.", ".partial")
        jsonl = RecordFile(fd, jsonl_tmp)  # whole lines: a failed write is cut back to the last one
        try:

            def sink(f: Frame, poses: list[Any]) -> None:
                nonlocal writer, video_tmp
                people = [p.to_coco(f.index) for p in poses]
                line = {"frame": f.index, "time": round(f.time, 4), "source": source, "people": people}
                target = jsonl_path
                try:
                    jsonl.write(strict_json(line) + "\n")
                    if table is not None:
                        target = table.path
                        try:
                            table.write(rows_of(people, source, frame=f.index, time=round(f.time, 4)))
                        except OSError:
                            jsonl.undo()  # the frame is in both or in neither
                            raise
                    if not args.no_draw:
                        target = video_path
                        if writer is None:
                            size = (f.image.shape[1], f.image.shape[0])
                            vfd, video_tmp = create_exclusive(out_dir, f".{stem}_pose.", ".partial.mp4")
                            os.close(vfd)  # OpenCV opens it by name: the name is ours, made just now
                            writer = VideoWriter(video_tmp, reader.fps, size)
                        writer.write(draw_poses(f.image, poses, names, estimator.skeleton, kpt_thr=args.kpt_thr))
                except OSError as e:
                    _check_write_error(e, target)
                if rows is not None:
                    rows.extend(rows_of(people, source, frame=f.index, time=round(f.time, 4)))
                if not poses:
                    s.empty.append(f"{path}#{f.index}")
                s.frames += 1
                s.people += len(poses)
                bar.update(1)

            stats = pipeline.run(limited(frames), sink)
            s.capped += stats.capped_people
            s.capped_items += stats.capped_frames
            complete = True
        finally:
            jsonl.close()
    except KeyboardInterrupt:
        s.interrupted = True
        tqdm.write(f"{reader.name}: stopped after {s.frames - frames_before} frames")
    except (VideoError, DetectorError, ValueError) as e:
        tqdm.write(f"error: {error_text(reader.name)}: {error_text(e)}", file=sys.stderr)
        s.bad.append(f"{reader.name}: {e}")
    except _DiskFull as e:  # a write into --out failed: stop, keep the frames done
        s.disk_error = str(e)
    except OSError as e:
        s.disk_error = disk_error(jsonl_path, e)
    finally:
        bar.close()
        pipeline.stop()
        if live is not None:
            live.close()
            s.dropped += live.dropped
            if live.dropped:
                tqdm.write(f"{reader.name}: {live.dropped} of {live.read} frames dropped (the model was slower "
                           "than the stream)")  # fmt: skip
        else:
            reader.close()
        if writer is not None:
            writer.close()
        if video_tmp is not None:
            drawn = writer is not None and writer.frames > 0
            if drawn and not _video_complete(video_tmp, writer.frames):  # OpenCV's writer fails silently
                drawn = False
                if not s.disk_error:
                    s.disk_error = disk_error(video_path, _video_write_error(out_dir))
            _keep_or_drop(video_tmp, video_path, drawn)
        if jsonl_tmp is not None:
            _keep_or_drop(jsonl_tmp, jsonl_path, s.frames > frames_before)
    if s.frames > frames_before:
        s.kept.append(f"{jsonl_path} ({s.frames - frames_before} frames)")
        if complete and args.mark_done:
            mark_done(out_dir, stem)
    if s.frames == frames_before and not s.interrupted:
        s.bad.append(f"{reader.name}: no frame could be read")


def _video_complete(path: Path, frames: int) -> bool:
    """Whether the video OpenCV wrote holds all `frames` (its writer says nothing when a write fails: a full disk
    leaves a file without its index, which does not open, or with fewer frames)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened()) and int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) >= frames
    finally:
        cap.release()


def _video_write_error(out_dir: Path) -> OSError:
    """The likely reason a video could not be written: a full disk when less space is left than one write of the
    encoder (64 KiB), else I/O."""
    import errno

    try:
        st = os.statvfs(out_dir)
        full = st.f_bavail * st.f_frsize < (64 << 10)
    except OSError:
        full = False
    code = errno.ENOSPC if full else errno.EIO
    return OSError(code, os.strerror(code) + ("" if full else " (the video writer failed)"))


def _keep_or_drop(tmp: Path, final: Path, keep: bool) -> None:
    """Rename a stream's temporary output to its name (os.replace: a link at `final` is replaced, not
    followed), or remove it when it holds nothing; never leaves a hidden temporary file behind."""
    try:
        if keep:
            os.replace(tmp, final)
        else:
            tmp.unlink(missing_ok=True)
    except OSError:
        tmp.unlink(missing_ok=True)
