"""The pipelined video run (`hrpose.inference.pipeline_run`): order, batching across frames, --det-every with boxes
carried from the previous poses, --max-people, and errors handed to the caller's thread."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest

from conftest import DATA
from hrpose.inference import PoseEstimator
from hrpose.inference.pipeline_run import VideoPipeline, boxes_from_poses, cap_people
from hrpose.inference.streams import Frame

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))


class CountingDetector:
    """Two fixed boxes per frame (the larger scored higher), counting on which frames it ran."""

    needs_key = True

    def __init__(self) -> None:
        self.keys: list = []
        self.threads: set[str] = set()

    def __call__(self, image, key=None):
        self.keys.append(key)
        self.threads.add(threading.current_thread().name)
        h, w = image.shape[:2]
        return np.array([[10, 10, w / 2, h - 20, 0.9], [w / 2, 20, w / 3, h / 2, 0.6]], np.float32)


@pytest.fixture(scope="module")
def frames():
    return [Frame(i, i / 10, cv2.resize(cv2.imread(str(IMAGES[i // 3])), (160, 120))) for i in range(12)]


@pytest.fixture()
def estimator(tiny_files):
    cfg, weights, _ = tiny_files
    est = PoseEstimator.from_config(cfg, weights, device="cpu", flip_test=False, detector=CountingDetector())
    est.warn_no_person = False
    return est


def test_same_poses_as_frame_by_frame_and_in_order(estimator, frames):
    expected = [estimator(f.image, key=f.index) for f in frames]
    seen: list[int] = []
    got: dict[int, list] = {}

    def sink(f, poses):
        seen.append(f.index)
        got[f.index] = poses
        assert threading.current_thread() is threading.main_thread()

    estimator.detector.keys.clear()
    estimator.detector.threads.clear()
    stats = VideoPipeline(estimator, batch_frames=4).run(iter(frames), sink)
    assert seen == list(range(12)) and stats.frames == 12 and stats.people == 24
    assert estimator.detector.threads == {"hrpose-detect"}  # detection ran on its own thread
    for i, poses in got.items():
        assert len(poses) == len(expected[i])
        for a, b in zip(poses, expected[i]):
            np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=1e-4, atol=1e-3)


def test_det_every_detects_every_nth_frame_and_carries_people(estimator, frames):
    from hrpose.inference.tracking import PoseTracker

    estimator.detector.keys.clear()
    got: dict[int, list] = {}
    tracker = PoseTracker(estimator.meta.sigmas_array(), metric="iou")
    VideoPipeline(estimator, det_every=4, tracker=tracker).run(iter(frames), lambda f, p: got.__setitem__(f.index, p))
    assert estimator.detector.keys == [0, 4, 8]
    assert [len(got[i]) for i in range(12)] == [2] * 12  # both people followed between detections
    assert all(p.track_id is not None for poses in got.values() for p in poses)


def test_max_people_keeps_the_highest_scores(estimator, frames):
    got: dict[int, list] = {}
    stats = VideoPipeline(estimator, max_people=1).run(iter(frames[:3]), lambda f, p: got.__setitem__(f.index, p))
    assert [len(got[i]) for i in range(3)] == [1, 1, 1]
    assert all(p[0].box_score == pytest.approx(0.9) for p in got.values())
    assert stats.capped_frames == 3 and stats.capped_people == 3
    boxes = np.array([[0, 0, 1, 1, s] for s in (0.2, 0.9, 0.5, 0.7)], np.float32)
    kept, dropped = cap_people(boxes, 2)
    assert dropped == 2 and kept[:, 4].tolist() == pytest.approx([0.9, 0.7])  # original order kept


def test_an_error_in_a_stage_reaches_the_caller(estimator, frames):
    def broken(image, key=None):
        if key == 5:
            raise ValueError("frame 5: broken detector")
        return np.array([[0, 0, 50, 80, 1.0]], np.float32)

    broken.needs_key = True  # type: ignore[attr-defined]
    estimator.detector = broken
    seen: list[int] = []
    with pytest.raises(ValueError, match="frame 5"):
        VideoPipeline(estimator).run(iter(frames), lambda f, p: seen.append(f.index))
    assert seen == [0, 1, 2, 3, 4]


def test_boxes_from_poses_enlarges_and_clips():
    from hrpose.inference.estimator import PersonPose

    k = np.zeros((17, 3), np.float32)
    k[:, 0], k[:, 1], k[:, 2] = np.linspace(20, 60, 17), np.linspace(10, 90, 17), 0.9
    p = PersonPose(k, np.array([0, 0, 100, 100], np.float32), 0.8, 0.7)
    (b,) = boxes_from_poses([p], 200, 95, 0.3)
    assert b.tolist() == pytest.approx([15.0, 0.0, 50.0, 95.0, 0.7])  # 40x80 -> 50x100 around (40, 50), clipped
    flat = PersonPose(np.zeros((17, 3), np.float32) + 0.9, np.array([5, 6, 30, 40], np.float32), 0.8, 0.7)
    assert boxes_from_poses([flat], 200, 95, 0.3)[0].tolist() == pytest.approx([5, 6, 30, 40, 0.7])


# ---------------------------------------------------------------------------------------------------------
# sharing the CPU: the compute slot and the cap on crops per model call


class TimedModels:
    """A fake estimator whose detector and pose model each take `secs` (sleeping: the GIL is free, so without a
    slot the two overlap) and record when they ran."""

    def __init__(self, secs: float = 0.02) -> None:
        self.secs = secs
        self.spans: list[tuple[str, float, float]] = []
        self.lock = threading.Lock()

    def _run(self, what: str) -> None:
        t0 = time.perf_counter()
        time.sleep(self.secs)
        with self.lock:
            self.spans.append((what, t0, time.perf_counter()))

    def detect(self, image, key=None):
        self._run("detect")
        return np.array([[0, 0, 10, 10, 0.9]], np.float32)

    def prepare_boxes(self, boxes, w, h, name="image"):
        return boxes

    def predict_many(self, images, boxes, keys=None, batch_size=None):
        self._run("pose")
        return [[] for _ in images]

    def overlaps(self) -> int:
        s = sorted(self.spans, key=lambda x: x[1])
        return sum(1 for a, b in zip(s, s[1:]) if b[1] < a[2])


def _blank_frames(n: int):
    return (Frame(i, i / 10, np.zeros((8, 8, 3), np.uint8)) for i in range(n))


def test_compute_slot_runs_one_model_call_at_a_time():
    from hrpose.inference.pipeline_run import ComputeSlot

    free = TimedModels()
    VideoPipeline(free, batch_frames=1).run(_blank_frames(16), lambda f, p: None)
    assert free.overlaps() >= 3  # the setup really overlaps the two models without a slot
    slotted = TimedModels()
    stats = VideoPipeline(slotted, batch_frames=1, compute_slot=ComputeSlot()).run(_blank_frames(16),
                                                                                    lambda f, p: None)  # fmt: skip
    assert stats.frames == 16 and len(slotted.spans) == 32
    assert slotted.overlaps() == 0


def test_compute_slot_is_first_come_first_served():
    from hrpose.inference.pipeline_run import ComputeSlot

    slot = ComputeSlot()
    order: list[int] = []

    def waiter(i: int, ready: threading.Event) -> None:
        ready.set()
        with slot:
            order.append(i)

    with slot:  # hold it while three threads queue up, one after another
        threads = []
        for i in range(3):
            ready = threading.Event()
            t = threading.Thread(target=waiter, args=(i, ready))
            t.start()
            ready.wait()
            time.sleep(0.05)  # it has taken its ticket and waits
            threads.append(t)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2]


class CountingBackend:
    def __init__(self, inner) -> None:
        self.inner, self.sizes = inner, []
        self.device = getattr(inner, "device", None)

    def __call__(self, batch):
        self.sizes.append(len(batch))
        return self.inner(batch)


def test_crops_per_call_caps_every_pose_model_call(estimator, frames):
    expected = [estimator(f.image, key=f.index) for f in frames]
    counting = CountingBackend(estimator.backend)
    estimator.backend = counting
    got: dict[int, list] = {}
    # up to 4 frames of 2 people a pose call (8 crops), cut into calls of one crop
    VideoPipeline(estimator, batch_frames=4, crops_per_call=1).run(iter(frames),
                                                                   lambda f, p: got.__setitem__(f.index, p))
    assert counting.sizes == [1] * 24
    for i, poses in got.items():
        for a, b in zip(poses, expected[i]):
            np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=1e-4, atol=1e-3)
    counting.sizes.clear()
    many = estimator.predict_many([f.image for f in frames[:4]], keys=[f.index for f in frames[:4]], batch_size=3)
    assert counting.sizes == [3, 3, 2] and [len(p) for p in many] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        estimator.predict_many([frames[0].image], batch_size=0)


def test_pipeline_defaults_cpu_versus_gpu(estimator):
    from types import SimpleNamespace

    from hrpose.inference.pipeline_run import CPU_CROPS_PER_CALL, ComputeSlot, pipeline_defaults, runs_on_cpu

    cpu = pipeline_defaults(estimator, 16)
    assert isinstance(cpu["compute_slot"], ComputeSlot) and cpu["crops_per_call"] == CPU_CROPS_PER_CALL
    assert cpu["batch_frames"] == 1
    gpu_backend = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    gpu = pipeline_defaults(SimpleNamespace(backend=gpu_backend), 16)
    assert gpu == {"compute_slot": None, "crops_per_call": 16, "batch_frames": 4}
    # an ONNX Runtime session on CUDA takes CPU arrays but computes on the GPU
    ort_cuda = SimpleNamespace(device=SimpleNamespace(type="cpu"),
                               session=SimpleNamespace(get_providers=lambda: ["CUDAExecutionProvider"]))  # fmt: skip
    assert not runs_on_cpu(ort_cuda) and runs_on_cpu(estimator.backend)
