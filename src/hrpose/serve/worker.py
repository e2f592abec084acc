"""The inference worker of `hrpose serve`: one thread owns the `PoseEstimator`; requests wait in a bounded queue.

A request's job (the uploaded bytes, already checked for size and declared pixels) is put in a queue of at
most `queue_size` jobs; a full queue refuses it at once (`QueueFull`: the API answers 503 + Retry-After).
The thread takes the first job, collects more for up to `batch_wait_ms` (at most `max_batch` jobs), decodes
them from memory and runs the detector-boxed ones in one `predict_many` call, the ones with client boxes one
by one. Only one image is decoded per job in the batch at a time on this thread, so memory is bounded by the
queue size times the body limit plus one batch of decoded images. A job cancelled before its batch starts
(the client's deadline passed) is skipped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The request queue holds `queue_size` jobs already."""


@dataclass
class Job:
    data: bytes
    name: str
    boxes: list[list[float]] | None = None
    future: concurrent.futures.Future[Any] = field(default_factory=concurrent.futures.Future)
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class Result:
    """What the worker gives a job: its people (PersonPose list), image size and timings (ms)."""

    poses: list[Any]
    width: int
    height: int
    timings_ms: dict[str, float]
    batch: int


class BatchWorker:
    """See the module docstring. `delay_s` (tests only) sleeps before each batch, to make the model slow."""

    def __init__(
        self,
        estimator: Any,
        *,
        queue_size: int = 16,
        max_batch: int = 8,
        batch_wait_ms: float = 5.0,
        max_pixels: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise ValueError(f"queue_size and max_batch must be >= 1, got {queue_size} and {max_batch}")
        self.estimator = estimator
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.max_batch = max_batch
        self.batch_wait_s = max(0.0, batch_wait_ms) / 1000.0
        self.max_pixels = max_pixels
        self.delay_s = delay_s
        self.batches = 0
        self.jobs_done = 0
        self._thread = threading.Thread(target=self._loop, name="hrpose-serve-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def submit(self, job: Job) -> concurrent.futures.Future[Any]:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    # ------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.perf_counter() + self.batch_wait_s
            stop = False
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    nxt = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._run(batch)
            except Exception as e:  # our bug: every waiting client gets a 500, the worker lives on
                logger.exception("serve worker: a batch failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
            if stop:
                return

    def _run(self, batch: list[Job]) -> None:
        from hrpose.errors import UserError
        from hrpose.images import decode_image

        started = time.perf_counter()
        live = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        decoded: list[tuple[Job, np.ndarray, float]] = []
        for job in live:
            t0 = time.perf_counter()
            try:
                image = decode_image(job.data, name=job.name, max_pixels=self.max_pixels)
            except UserError as e:
                job.future.set_exception(e)
                continue
            job.data = b""  # the encoded bytes are not needed any more
            decoded.append((job, image, (time.perf_counter() - t0) * 1000.0))
        est = self.estimator
        auto = [d for d in decoded if d[0].boxes is None]
        given = [d for d in decoded if d[0].boxes is not None]
        n = len(decoded)
        if auto:
            t0 = time.perf_counter()
            try:
                many = est.predict_many([image for _, image, _ in auto])
            except Exception:  # one image's error must not fail the others: run them one by one
                many = None
            if many is not None:
                ms = (time.perf_counter() - t0) * 1000.0
                for (job, image, dec_ms), poses in zip(auto, many):
                    self._done(job, image, poses, started, dec_ms, ms, n)
            else:
                for job, image, dec_ms in auto:
                    self._one(job, image, None, started, dec_ms, n)
        for job, image, dec_ms in given:
            self._one(job, image, job.boxes, started, dec_ms, n)
        self.batches += 1

    def _one(self, job: Job, image: np.ndarray, boxes: Any, started: float, dec_ms: float, n: int) -> None:
        from hrpose.errors import UserError
        from hrpose.inference.detectors import DetectorError

        t0 = time.perf_counter()
        try:
            poses = self.estimator(image, boxes=boxes, key=job.name)
        except (UserError, DetectorError, ValueError) as e:
            job.future.set_exception(e)
            return
        self._done(job, image, poses, started, dec_ms, (time.perf_counter() - t0) * 1000.0, n)

    def _done(self, job: Job, image: np.ndarray, poses: list[Any], started: float, dec_ms: float, inf_ms: float,
              n: int) -> None:  # fmt: skip
        timings = {"queue": round((started - job.enqueued) * 1000.0, 2), "decode": round(dec_ms, 2),
                   "inference": round(inf_ms, 2)}  # fmt: skip
        job.future.set_result(Result(list(poses), int(image.shape[1]), int(image.shape[0]), timings, n))
        self.jobs_done += 1
