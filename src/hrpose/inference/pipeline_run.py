"""A video or stream run as overlapping stages: read/decode, detect, pose, then draw + write on the caller's thread.

    reader thread -> [queue] -> detect thread -> [queue] -> pose thread -> [queue] -> caller (sink)

Each stage is one thread taking frames in order from a bounded queue (`queue_size` frames), so frames
stay in order and memory stays bounded; OpenCV, ONNX Runtime and torch release the GIL while they work,
so decoding the next frame, detecting on it and the pose model on the previous one run at the same time.
The pose stage takes every frame already waiting (up to `batch_frames`) and runs their people through
the model together (`PoseEstimator.predict_many`), `crops_per_call` people a model call.

On a CPU the two models share the same cores: each of them already uses all of them, and run at the same
time they fight (each slows the other more than it gains). `compute_slot` (a `ComputeSlot`) lets one model
call run at a time, first come first served, while reading, cropping, drawing and writing still overlap;
and the crops of a call are capped at the batch size measured fastest per crop on the CPU (cross-frame
batching pays on a GPU, not there). `pipeline_defaults` picks both for a pose backend
(docs/benchmarks.md "Video throughput" has the measurements).

`det_every=N` runs the detector on every N-th frame only; on the frames between, each person's box is the
box around their confident joints in the previous frame (enlarged by 25%), and the tracker carries the
identities. `max_people` keeps the highest-scoring boxes of each frame.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hrpose.inference.streams import Frame

logger = logging.getLogger(__name__)

DEFAULT_MAX_PEOPLE = 100
_DONE = object()


@dataclass
class RunStats:
    frames: int = 0
    people: int = 0
    capped_frames: int = 0  # frames with more boxes than max_people
    capped_people: int = 0  # boxes dropped by max_people
    detector_runs: int = 0
    pose_calls: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def cap_people(boxes: np.ndarray, max_people: int) -> tuple[np.ndarray, int]:
    """The `max_people` highest-scoring rows of boxes (N, 5) (in their original order), and how many were dropped.
    `max_people` <= 0 keeps all."""
    n = len(boxes)
    if max_people <= 0 or n <= max_people:
        return boxes, 0
    keep = np.argpartition(-boxes[:, 4], max_people - 1)[:max_people]
    keep.sort()
    return boxes[keep], n - max_people


def boxes_from_poses(poses: list[Any], width: int, height: int, kpt_thr: float, pad: float = 1.25) -> np.ndarray:
    """(N, 5) xywh+score boxes around each person's joints scored >= kpt_thr (all joints when fewer than 2 are),
    enlarged by `pad` around their center, clipped to the image; the score is the person's box score. A person
    whose joints span less than 2 px keeps the box of the previous frame."""
    rows = []
    for p in poses:
        k = np.asarray(p.keypoints, dtype=np.float64)
        sel = k[k[:, 2] >= kpt_thr] if (k[:, 2] >= kpt_thr).sum() >= 2 else k
        x1, y1 = sel[:, 0].min(), sel[:, 1].min()
        x2, y2 = sel[:, 0].max(), sel[:, 1].max()
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * pad, (y2 - y1) * pad
        x1, y1 = max(0.0, cx - w / 2), max(0.0, cy - h / 2)
        x2, y2 = min(float(width), cx + w / 2), min(float(height), cy + h / 2)
        if x2 - x1 >= 2 and y2 - y1 >= 2:
            rows.append([x1, y1, x2 - x1, y2 - y1, float(p.box_score)])
        else:
            rows.append([*np.asarray(p.box, dtype=np.float64)[:4].tolist(), float(p.box_score)])
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


# People per pose-model call on a CPU: `hrpose bench` measured OpenVINO fp32 HRNet-W32 at 127 ms/crop at batch 1
# and 156 ms/crop at batch 8 on the quiet 2-core EPYC (docs/benchmarks.md "Inference benchmark"; "Video
# throughput" for the loaded sweep, where larger calls did better).
CPU_CROPS_PER_CALL = 1


class ComputeSlot:
    """One model call at a time, in the order asked for (a ticket lock: neither stage can starve the other).
    `with slot:` around a detector or pose-model call."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> ComputeSlot:
        with self._cond:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def runs_on_cpu(backend: Any) -> bool:
    """Whether a pose backend computes on the CPU (its crops are given as CPU arrays either way; an ONNX
    Runtime session whose first provider is not the CPU one runs elsewhere)."""
    device = getattr(backend, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return False
    session = getattr(backend, "session", None)
    providers = session.get_providers() if session is not None and hasattr(session, "get_providers") else []
    return not providers or providers[0] == "CPUExecutionProvider"


def pipeline_defaults(estimator: Any, batch_size: int) -> dict[str, Any]:
    """VideoPipeline's compute settings for this estimator: on a CPU one compute slot for both models and
    `CPU_CROPS_PER_CALL` crops a call (frames not batched together); elsewhere (a GPU) no slot, and the
    people of up to `batch_size // 4` frames in calls of `batch_size` crops."""
    if runs_on_cpu(estimator.backend):
        return {"compute_slot": ComputeSlot(), "crops_per_call": min(CPU_CROPS_PER_CALL, batch_size),
                "batch_frames": 1}  # fmt: skip
    return {"compute_slot": None, "crops_per_call": batch_size, "batch_frames": max(1, batch_size // 4)}


class _Stop(Exception):
    pass


class _Failed:
    """Put in a queue in place of the frames after a stage failed: the frames before it still go through."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class VideoPipeline:
    """Runs `estimator` over `frames` (an iterable of `Frame`) in stages; `sink(frame, poses)` runs on the
    calling thread, in frame order. See the module docstring."""

    def __init__(
        self,
        estimator: Any,
        *,
        det_every: int = 1,
        max_people: int = DEFAULT_MAX_PEOPLE,
        tracker: Any = None,
        batch_frames: int = 4,
        queue_size: int = 4,
        kpt_thr: float = 0.3,
        key: Callable[[Frame], Any] | None = None,
        compute_slot: ComputeSlot | None = None,
        crops_per_call: int | None = None,
    ) -> None:
        if det_every < 1:
            raise ValueError(f"det_every must be >= 1, got {det_every}")
        self.estimator = estimator
        self.det_every = int(det_every)
        self.max_people = int(max_people)
        self.tracker = tracker
        self.batch_frames = max(1, int(batch_frames))
        self.queue_size = max(1, int(queue_size))
        self.kpt_thr = kpt_thr
        self.key = key if key is not None else (lambda f: f.index)
        self.compute_slot = compute_slot
        self.crops_per_call = None if crops_per_call is None else max(1, int(crops_per_call))
        self.stats = RunStats()
        self.stop_event = threading.Event()

    # the queues: a put/get that gives up when the run is stopped
    def _put(self, q: queue.Queue[Any], item: Any) -> None:
        while True:
            if self.stop_event.is_set():
                raise _Stop
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _get(self, q: queue.Queue[Any]) -> Any:
        while True:
            if self.stop_event.is_set():
                raise _Stop
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue

    def _stage(self, name: str, body: Callable[[], None], out: queue.Queue[Any]) -> threading.Thread:
        def run() -> None:
            try:
                body()
                end: Any = _DONE
            except _Stop:
                return
            except BaseException as e:  # handed down the stages to the caller's thread, after the frames before it
                end = _Failed(e)
            try:
                self._put(out, end)
            except _Stop:
                pass

        t = threading.Thread(target=run, name=f"hrpose-{name}", daemon=True)
        t.start()
        return t

    def _deliver(self, q: queue.Queue[Any], f: Frame, poses: list[Any]) -> list[Any]:
        if self.tracker is not None:
            poses = self.tracker.update(poses)
        self._put(q, (f, poses))
        return poses

    def _compute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A model call, in the compute slot when there is one."""
        if self.compute_slot is None:
            return fn(*args, **kwargs)
        with self.compute_slot:
            return fn(*args, **kwargs)

    def run(self, frames: Iterable[Frame], sink: Callable[[Frame, list[Any]], None]) -> RunStats:
        q_read: queue.Queue[Any] = queue.Queue(self.queue_size)
        q_det: queue.Queue[Any] = queue.Queue(self.queue_size)
        q_pose: queue.Queue[Any] = queue.Queue(self.queue_size)
        est = self.estimator

        def read() -> None:
            for f in frames:
                self._put(q_read, f)

        def detect() -> None:
            while (f := self._get(q_read)) is not _DONE:
                if isinstance(f, _Failed):
                    raise f.error
                boxes = None
                if f.index % self.det_every == 0 or self.det_every == 1:
                    h, w = f.image.shape[:2]
                    key = self.key(f)
                    boxes = est.prepare_boxes(self._compute(est.detect, f.image, key), w, h, str(key))
                    boxes, dropped = cap_people(boxes, self.max_people)
                    self.stats.detector_runs += 1
                    if dropped:
                        self.stats.capped_frames += 1
                        self.stats.capped_people += dropped
                        if self.stats.capped_frames <= 3:
                            logger.warning("frame %d: %d people over --max-people %d dropped (the highest-scoring "
                                           "kept)", f.index, dropped, self.max_people)  # fmt: skip
                self._put(q_det, (f, boxes))

        per_call = {} if self.crops_per_call is None else {"batch_size": self.crops_per_call}

        def pose() -> None:
            last: list[Any] = []
            pending: list[Any] = []
            finished = False
            failed: _Failed | None = None
            while not finished:
                item = pending.pop(0) if pending else self._get(q_det)
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                batch = [item]
                # frames with their own boxes can share a model call with those already waiting
                while item[1] is not None and len(batch) < self.batch_frames:
                    try:
                        nxt = q_det.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _DONE or isinstance(nxt, _Failed):
                        finished = True
                        failed = nxt if isinstance(nxt, _Failed) else None
                        break
                    if nxt[1] is None:
                        pending.append(nxt)
                        break
                    batch.append(nxt)
                images, boxes = [], []
                for f, b in batch:
                    if b is None:  # carried from the previous frame's people
                        h, w = f.image.shape[:2]
                        b = boxes_from_poses(last, w, h, self.kpt_thr)
                    images.append(f.image)
                    boxes.append(b)
                keys = [self.key(f) for f, _ in batch]
                try:
                    results = self._compute(est.predict_many, images, boxes, keys=keys, **per_call)
                except BaseException:
                    if len(batch) == 1:
                        raise
                    # one frame at a time: the frames before the failing one are still delivered, in order
                    results = []
                    for i in range(len(batch)):
                        try:
                            one = self._compute(est.predict_many, images[i : i + 1], boxes[i : i + 1],
                                                keys=keys[i : i + 1], **per_call)
                            results.append(one[0])
                        except BaseException:
                            for (f, _), poses in zip(batch, results):
                                self._deliver(q_pose, f, poses)
                            raise
                self.stats.pose_calls += 1
                for (f, _), poses in zip(batch, results):
                    last = self._deliver(q_pose, f, poses)
            if failed is not None:
                raise failed.error

        threads = [self._stage("read", read, q_read), self._stage("detect", detect, q_det),
                   self._stage("pose", pose, q_pose)]  # fmt: skip
        try:
            while True:
                try:
                    item = q_pose.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                if isinstance(item, _Failed):
                    raise item.error
                f, poses = item
                sink(f, poses)
                self.stats.frames += 1
                self.stats.people += len(poses)
        finally:
            self.stop_event.set()
            for t in threads:
                t.join(timeout=5.0)
        return self.stats

    def stop(self) -> None:
        self.stop_event.set()
