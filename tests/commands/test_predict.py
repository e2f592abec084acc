"""`hrpose predict` end to end: real images, a generated video, bad input, exit codes."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from conftest import DATA
from hrpose.cli import main

SAMPLES = DATA / "samples" / "coco"
DETS = SAMPLES / "test_coco_det_AP_H_56.json"


def predict(tiny_files, *args):
    cfg, weights, _ = tiny_files
    return main(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", *map(str, args)])


def test_folder_with_detection_file(tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    rc = predict(tiny_files, SAMPLES, "--detector", f"file:{DETS}", "--det-thr", "0.9", "--out", out)
    assert rc == 0
    stdout = capsys.readouterr().out
    raw = json.loads(DETS.read_text())
    expected_people = sum(1 for r in raw if r["category_id"] == 1 and r["score"] >= 0.9)
    assert f"4 images, 0 frames, {expected_people} people found" in stdout
    per_image = json.loads((out / "000000000785.json").read_text())
    assert per_image and all(len(r["keypoints"]) == 51 and r["category_id"] == 1 for r in per_image)
    assert per_image[0]["joint_names"][5] == "left_shoulder"
    assert per_image[0]["image_file"].endswith("000000000785.jpg")
    drawn = cv2.imread(str(out / "000000000785_pose.jpg"))
    assert drawn.shape == cv2.imread(str(SAMPLES / "000000000785.jpg")).shape
    # the combined file is a valid COCO results file for the samples' ground truth
    gt = CocoApi(str(SAMPLES / "test_coco.json"))
    dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == expected_people


def test_bad_files_are_reported_and_skipped(tiny_files, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "000000000785.jpg", folder / "good.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "cut.jpg").write_bytes((SAMPLES / "000000040083.jpg").read_bytes()[:5000])
    (folder / "text.png").write_text("not an image")
    rc = predict(tiny_files, folder, tmp_path / "missing.jpg", "--detector", "whole", "--out", tmp_path / "o")
    assert rc == 0
    captured = capsys.readouterr()
    assert "1 images, 0 frames, 1 people found" in captured.out
    assert "4 input(s) could not be processed" in captured.err
    for name in ("empty.jpg", "cut.jpg", "text.png", "missing.jpg"):
        assert name in captured.err
    assert (tmp_path / "o" / "good.json").is_file()


def test_nothing_processed_exits_non_zero(tiny_files, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert predict(tiny_files, tmp_path / "empty.jpg", "--detector", "whole", "--out", tmp_path / "o") == 1
    # no input at all is a user error: exit 2, one error: line
    assert predict(tiny_files, tmp_path / "nothing_here_*.jpg", "--out", tmp_path / "o") == 2
    assert "matches no file" in capsys.readouterr().err


def test_bad_config_detector_weights_exit_2(tiny_files, tmp_path, capsys):
    cfg, weights, _ = tiny_files
    image = SAMPLES / "000000000785.jpg"
    assert main(["predict", "--cfg", str(tmp_path / "no.yaml"), str(image)]) == 2
    assert predict(tiny_files, image, "--detector", "yolo") == 2
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    assert main(["predict", "--cfg", cfg, "--weights", str(bad), str(image), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no.yaml" in err and "unknown detector" in err and "bad.pth" in err


def test_no_person_message(tiny_files, tmp_path, capsys):
    rc = predict(tiny_files, SAMPLES / "000000000785.jpg", "--detector", f"file:{DETS}", "--det-thr", "1.0",
                 "--out", tmp_path)  # fmt: skip
    assert rc == 0
    captured = capsys.readouterr()
    assert "000000000785.jpg: no person found" in captured.out + captured.err
    assert json.loads((tmp_path / "000000000785.json").read_text()) == []


def test_video_end_to_end_same_fps_and_size(tiny_files, tmp_path, capsys):
    src = tmp_path / "clip.mp4"
    fps, size = 12.0, (96, 64)
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    frame0 = cv2.resize(cv2.imread(str(SAMPLES / "000000000785.jpg")), size)
    for i in range(10):
        writer.write(np.roll(frame0, i, axis=1))
    writer.release()
    out = tmp_path / "out"
    rc = predict(tiny_files, src, "--detector", "whole", "--track", "--smooth", "--no-flip", "--out", out)
    assert rc == 0
    assert "0 images, 10 frames, 10 people found" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(out / "clip_pose.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(fps)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == size
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 10
    lines = [json.loads(x) for x in (out / "clip.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(10))
    assert all(len(x["people"]) == 1 and x["people"][0]["track_id"] == 0 for x in lines)
    assert lines[3]["time"] == pytest.approx(3 / fps, abs=1e-3)


def test_unreadable_video(tiny_files, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert predict(tiny_files, bad, "--detector", "whole", "--out", tmp_path / "o") == 1
    assert "broken.mp4" in capsys.readouterr().err
