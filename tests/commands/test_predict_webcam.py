"""`hrpose predict 0` (a webcam) reads like a live stream: a bounded queue that drops the oldest frames when the model
is slower than the camera, counted and reported. No camera is attached to the test machines, so the camera is a fake
`cv2.VideoCapture` for camera indexes only (files and the written video still go through OpenCV), giving real photos
as fast as a 200 frames/s camera would."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from conftest import DATA
from hrpose.cli import main

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))
FRAMES = 200


class FakeCamera:
    """A camera at `fps` frames/s: read() waits for the next frame like a real camera does; ends after FRAMES."""

    def __init__(self, frames: list[np.ndarray], fps: float) -> None:
        self.frames, self.period, self.n, self.t0 = frames, 1.0 / fps, 0, time.monotonic()
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def get(self, prop: int) -> float:
        known = {cv2.CAP_PROP_FPS: 30.0, cv2.CAP_PROP_FRAME_WIDTH: 320.0, cv2.CAP_PROP_FRAME_HEIGHT: 240.0}
        return known.get(prop, 0.0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.n >= FRAMES or self.released:
            return False, None
        wait = self.t0 + self.n * self.period - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self.n += 1
        return True, self.frames[(self.n - 1) % len(self.frames)].copy()

    def release(self) -> None:
        self.released = True


@pytest.fixture()
def camera(monkeypatch):
    frames = [cv2.resize(cv2.imread(str(f)), (320, 240)) for f in IMAGES[:20]]
    cams: list[FakeCamera] = []
    real = cv2.VideoCapture

    def capture(source, *args):
        if isinstance(source, int):
            cams.append(FakeCamera(frames, 200.0))
            return cams[-1]
        return real(source, *args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    return cams


def test_webcam_drops_the_oldest_frames_when_the_model_is_slower_and_says_how_many(tiny_files, camera, tmp_path,
                                                                                   capsys):  # fmt: skip
    cfg, weights, _ = tiny_files
    rc = main(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", "--detector", "whole", "0",
               "--queue", "1", "--out", str(tmp_path / "o")])  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 0, err
    assert len(camera) == 1 and camera[0].n == FRAMES and camera[0].released
    lines = [json.loads(x) for x in (tmp_path / "o" / "webcam0.jsonl").read_text().splitlines()]
    index = [x["frame"] for x in lines]
    dropped = FRAMES - len(index)
    assert dropped > 0, "the model kept up with a 200 frames/s camera: nothing to drop"
    assert index == sorted(set(index)) and index[-1] == FRAMES - 1  # in order; the newest frame is kept
    assert f"webcam 0: {dropped} of {FRAMES} frames dropped" in captured.out + err
    assert f"{dropped} stream frame(s) dropped" in err
    times = [x["time"] for x in lines]
    assert times == sorted(times) and times[-1] == pytest.approx((FRAMES - 1) / 200.0, abs=0.5)  # camera time
    assert lines[0]["people"][0]["bbox"] == [0.0, 0.0, 320.0, 240.0]  # the camera's frames were posed
    cap = cv2.VideoCapture(str(tmp_path / "o" / "webcam0_pose.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
