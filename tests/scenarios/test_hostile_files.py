"""Hostile files and folders around `hrpose predict` / `train`: planted symbolic links, user-named files that are
devices or FIFOs, two writers into one --out, reserved output names, strict detection boxes, output folders that
are files, read-only or full (a real tmpfs mounted by the test), small numerics and control characters in names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, ROOT
from hrpose.cli import main
from hrpose.engine.lock import OutputDirLockedError, TrainLock
from hrpose.inference import DetectionFileDetector
from hrpose.inference.detectors import DetectorError

GOOD = DATA / "samples" / "coco" / "000000000785.jpg"
SECRET = b"precious data outside the output folder\n"


def predict(tiny_files, *args) -> int:
    cfg, weights, _ = tiny_files
    return main(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", "--no-flip", *map(str, args)])


def predict_proc(tiny_files, *args, timeout: float = 120, limit_as: int | None = None) -> subprocess.CompletedProcess:
    cfg, weights, _ = tiny_files
    cmd = [sys.executable, "-m", "hrpose.cli", "predict", "--cfg", cfg, "--weights", weights, "--device", "cpu",
           "--no-flip", *map(str, args)]  # fmt: skip

    def cap() -> None:
        if limit_as:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, preexec_fn=cap)


def outside(tmp_path: Path, name: str = "outside.txt") -> Path:
    f = tmp_path / "elsewhere" / name
    f.parent.mkdir(exist_ok=True)
    f.write_bytes(SECRET)
    return f


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def make_video(path: Path, frames: int = 12) -> Path:
    import cv2

    img = cv2.resize(cv2.imread(str(GOOD)), (320, 212))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (320, 212))
    for _ in range(frames):
        w.write(img)
    w.release()
    return path


# ---------------------------------------------------------------------------------------------------------
# 5. symbolic links planted in an output folder are never followed


def test_train_lock_does_not_follow_a_planted_link(tmp_path):
    target = outside(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "train.lock").symlink_to(target)
    with pytest.raises(OutputDirLockedError, match="symbolic link"):
        TrainLock(folder).acquire()
    assert target.read_bytes() == SECRET


def test_predict_lock_does_not_follow_a_planted_link(tiny_files, tmp_path, capsys):
    target = outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".hrpose-predict.lock").symlink_to(target)
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", out) == 2
    err = capsys.readouterr().err
    assert error_lines(err) and "symbolic link" in error_lines(err)[0], err
    assert target.read_bytes() == SECRET


def test_video_temporary_files_never_follow_planted_links(tiny_files, tmp_path, capsys):
    video = make_video(tmp_path / "clip.mp4", 6)
    out = tmp_path / "out"
    out.mkdir()
    t1, t2 = outside(tmp_path, "a.txt"), outside(tmp_path, "b.txt")
    # the names the temporary files used to have, and the final names: all links to files elsewhere
    (out / ".clip.jsonl.partial").symlink_to(t1)
    (out / ".clip_pose.partial.mp4").symlink_to(t2)
    assert predict(tiny_files, video, "--detector", "whole", "--out", out) == 0, capsys.readouterr().err
    assert t1.read_bytes() == SECRET and t2.read_bytes() == SECRET
    lines = (out / "clip.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["frame"] == 0
    assert not (out / "clip_pose.mp4").is_symlink() and (out / "clip_pose.mp4").stat().st_size > 0


def test_final_output_names_that_are_links_are_replaced_not_followed(tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    targets = {name: outside(tmp_path, name + ".txt") for name in ("results.json", "img.json", "img_pose.jpg")}
    for name, t in targets.items():
        (out / name).symlink_to(t)
    src = tmp_path / "img.jpg"
    shutil.copy(GOOD, src)
    assert predict(tiny_files, src, "--detector", "whole", "--out", out) == 0, capsys.readouterr().err
    assert all(t.read_bytes() == SECRET for t in targets.values())
    assert not (out / "results.json").is_symlink() and len(json.loads((out / "results.json").read_text())) == 1


def test_training_log_does_not_follow_a_planted_link(tmp_path):
    from hrpose.engine.logging import close_logger, setup_logger
    from hrpose.errors import UserError

    target = outside(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "exp_T_train.log").symlink_to(target)
    try:
        with pytest.raises(UserError, match="symbolic link"):
            setup_logger(out, "exp", "train", time_str="T")
    finally:
        close_logger()
    assert target.read_bytes() == SECRET
    logger, log_file = setup_logger(out, "exp", "valid", time_str="T")  # a normal log still works
    try:
        logger.info("hello log")
    finally:
        close_logger()
    assert "hello log" in Path(log_file).read_text()


# ---------------------------------------------------------------------------------------------------------
# 6. one rule for every user-named file: regular, size limit, then read


def test_detector_file_dev_zero_is_refused_at_once(tiny_files, tmp_path):
    t0 = time.monotonic()
    p = predict_proc(tiny_files, GOOD, "--detector", "file:/dev/zero", "--out", tmp_path / "o", timeout=60,
                     limit_as=3 * 2**30)  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    (line,) = error_lines(p.stderr)
    assert "/dev/zero" in line and "not a regular file" in line
    assert "Traceback" not in p.stderr and time.monotonic() - t0 < 60


def test_detector_file_fifo_is_refused_without_blocking(tiny_files, tmp_path):
    fifo = tmp_path / "dets.json"
    os.mkfifo(fifo)
    p = predict_proc(tiny_files, GOOD, "--detector", f"file:{fifo}", "--out", tmp_path / "o", timeout=60)
    assert p.returncode == 2, p.stderr[-2000:]
    (line,) = error_lines(p.stderr)
    assert "dets.json" in line and "not a regular file" in line


def test_detector_file_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(DetectorError, match="is a folder"):
        DetectionFileDetector(tmp_path)


def test_detector_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    import hrpose.inference.detectors as det

    monkeypatch.setattr(det, "MAX_DETECTION_FILE_BYTES", 1000)
    f = tmp_path / "big.json"
    f.write_text(json.dumps([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}] * 100))
    with pytest.raises(DetectorError, match=r"big.json: \d+ bytes, more than the 1000"):
        DetectionFileDetector(f)


def test_read_user_file_rule(tmp_path):
    from hrpose.user_files import UserFileError, read_user_file

    f = tmp_path / "a.txt"
    f.write_bytes(b"abc")
    assert read_user_file(f, "thing", 10) == b"abc"
    with pytest.raises(UserFileError, match="thing .*a.txt: 3 bytes, more than the 2"):
        read_user_file(f, "thing", 2)
    with pytest.raises(UserFileError, match="no such file"):
        read_user_file(tmp_path / "missing", "thing", 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(UserFileError, match="not a regular file"):
        read_user_file(fifo, "thing", 10)
    assert time.monotonic() - t0 < 2
    with pytest.raises(UserFileError, match="not a regular file"):
        read_user_file("/dev/zero", "thing", 10)


# ---------------------------------------------------------------------------------------------------------
# 8. one writer per --out, reserved names


def test_second_predict_into_a_locked_out_is_refused(tiny_files, tmp_path, capsys):
    from hrpose.outdir import acquire_out_lock

    out = tmp_path / "out"
    out.mkdir()
    held = acquire_out_lock(out)  # another open file description: as another process would hold it
    try:
        assert predict(tiny_files, GOOD, "--detector", "whole", "--out", out) == 2
    finally:
        held.release()
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "another hrpose predict" in line and f"PID {os.getpid()}" in line and "--out" in line
    assert not (out / "results.json").exists()
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", out) == 0  # free again after release


def test_two_concurrent_predict_processes_one_is_refused(tiny_files, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(400):  # long enough for the second process to start while the first runs
        os.link(GOOD, folder / f"{i:03d}.jpg")
    out = tmp_path / "out"
    cfg, weights, _ = tiny_files
    cmd = [sys.executable, "-m", "hrpose.cli", "predict", "--cfg", cfg, "--weights", weights, "--device", "cpu",
           "--detector", "whole", "--no-draw", str(folder), "--out", str(out)]  # fmt: skip
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while not (out / "001.json").exists() and time.monotonic() < deadline:  # the first one is at work
            time.sleep(0.05)
        second = predict_proc(tiny_files, GOOD, "--detector", "whole", "--out", out)
        still_running = first.poll() is None
    finally:
        _, err1 = first.communicate(timeout=300)
    assert still_running, "the first run ended before the second was refused: give it more images"
    assert second.returncode == 2 and "another hrpose predict" in error_lines(second.stderr)[0], second.stderr
    assert first.returncode == 0, err1
    assert len(json.loads((out / "results.json").read_text())) == 400


def test_lock_name_can_be_chosen_per_shard(tmp_path):
    from hrpose.outdir import acquire_out_lock

    a = acquire_out_lock(tmp_path, name=".hrpose-predict.shard0.lock")
    b = acquire_out_lock(tmp_path, name=".hrpose-predict.shard1.lock")
    try:
        with pytest.raises(OutputDirLockedError):
            acquire_out_lock(tmp_path, name=".hrpose-predict.shard0.lock")
    finally:
        a.release()
        b.release()


def test_a_stale_lock_of_a_dead_run_does_not_block(tiny_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".hrpose-predict.lock").write_text("999999\n")  # left by a killed run: no flock held
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", out) == 0, capsys.readouterr().err
    assert not (out / ".hrpose-predict.lock").exists()


def test_an_input_named_results_keeps_its_own_json(tiny_files, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(GOOD, folder / "results.jpg")
    shutil.copy(GOOD, folder / "other.jpg")
    out = tmp_path / "out"
    assert predict(tiny_files, folder, "--detector", "whole", "--out", out) == 0, capsys.readouterr().err
    aggregate = json.loads((out / "results.json").read_text())
    assert sorted(r["image_id"] for r in aggregate) == ["other", "results"]
    own = json.loads((out / "results_1.json").read_text())
    assert [r["image_id"] for r in own] == ["results"]


# ---------------------------------------------------------------------------------------------------------
# 9. strict box validation in detection files


def _dets(tmp_path: Path, **broken) -> Path:
    good = {"image_id": 785, "category_id": 1, "bbox": [100.0, 20.0, 300.0, 380.0], "score": 0.9}
    bad = {**good, **broken}
    f = tmp_path / "dets.json"
    f.write_text(json.dumps([good, bad]))
    return f


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("bbox", "10,10,50,50", "'bbox' must be a list"),
        ("bbox", None, "'bbox' must be a list"),
        ("bbox", [10, None, 50, 50], "'bbox'[1] must be a number"),
        ("bbox", ["10", 10, 50, 50], "'bbox'[0] must be a number"),
        ("bbox", [10, True, 50, 50], "'bbox'[1] must be a number"),
        ("score", None, "'score' must be a number"),
        ("score", 50, "'score' is 50"),
        ("score", -3, "'score' is -3"),
        ("score", "0.9", "'score' must be a number"),
        ("category_id", None, "'category_id' must be an integer"),
        ("image_id", None, "no 'image_id'"),
        ("image_id", [785], "must be an integer or a string"),
    ],
)
def test_detection_file_fields_are_checked_strictly(tmp_path, field, value, needle):
    with pytest.raises(DetectorError) as e:
        DetectionFileDetector(_dets(tmp_path, **{field: value}))
    assert "dets.json: entry 1" in str(e.value) and needle in str(e.value), str(e.value)


def test_detection_box_beyond_float32_is_dropped_not_made_full_width(tmp_path):
    det = DetectionFileDetector(_dets(tmp_path, bbox=[10.0, 10.0, 1e308, 100.0]))
    boxes = det(np.zeros((425, 640, 3), np.uint8), key="000000000785.jpg")
    assert len(boxes) == 1 and np.isfinite(boxes).all()
    np.testing.assert_allclose(boxes[0, :4], [100, 20, 300, 380])


def test_detection_file_error_reaches_the_cli_as_one_line(tiny_files, tmp_path, capsys):
    f = _dets(tmp_path, score=50)
    assert predict(tiny_files, GOOD, "--detector", f"file:{f}", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "entry 1" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------
# 10. output folders: a file in the way, read-only, full (a real tmpfs)


@pytest.fixture()
def tmpfs(tmp_path):
    """Mount a tmpfs (the test machine runs as root); yields a function mount(size, ro) -> folder."""
    mounted: list[Path] = []

    def mount(size: str = "4m", ro: bool = False) -> Path:
        d = tmp_path / f"mnt{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], check=True, capture_output=True)
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_out_that_is_a_file_is_refused_up_front(tiny_files, tmp_path, capsys):
    f = tmp_path / "out"
    f.write_text("not a folder")
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", f) == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "is a file, not a folder" in line and "Traceback" not in err
    assert f.read_text() == "not a folder"


def test_out_under_a_file_is_refused_up_front(tiny_files, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", f / "sub") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "--out" in line and "sub" in line


def test_read_only_out_is_refused_up_front(tiny_files, tmpfs, capsys):
    ro = tmpfs("1m", ro=True)
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", ro / "out") == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "read-only" in line.lower() and "Traceback" not in err


def test_read_only_existing_out_is_refused_up_front(tiny_files, tmpfs, capsys):
    ro = tmpfs("1m", ro=True)
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", ro) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "not writable" in line and "read-only" in line


def test_full_disk_mid_run_keeps_results_of_what_was_done(tiny_files, tmp_path, tmpfs, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        shutil.copy(GOOD, folder / f"{i:02d}.jpg")
    out = tmpfs("256k")
    rc = predict(tiny_files, folder, "--detector", "whole", "--out", out)
    err = capsys.readouterr().err
    assert rc == 1, err
    lines = error_lines(err)
    assert any("No space left on device" in line and "cannot write" in line for line in lines), err
    assert "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    done = sorted({r["image_id"] for r in results})
    assert 1 <= len(done) < 12
    for stem in done:  # every image in results.json has its own JSON
        assert (out / f"{int(stem):02d}.json").exists() if isinstance(stem, int) else (out / f"{stem}.json").exists()
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------------------------------------
# 12. small numerics, webcam indexes, control characters in names


@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan"])
def test_pixel_limit_env_var_that_overflows_is_one_error_line(tiny_files, tmp_path, monkeypatch, capsys, value):
    monkeypatch.setenv("HRPOSE_MAX_IMAGE_PIXELS", value)
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    (line,) = error_lines(err)
    assert "HRPOSE_MAX_IMAGE_PIXELS" in line and "Traceback" not in err


@pytest.mark.parametrize("value", ["1e400", "inf"])
def test_checkpoint_size_env_var_that_overflows_is_refused(monkeypatch, value):
    from hrpose.models.weights import CheckpointError, max_checkpoint_bytes

    monkeypatch.setenv("HRPOSE_MAX_CHECKPOINT_BYTES", value)
    with pytest.raises(CheckpointError, match="HRPOSE_MAX_CHECKPOINT_BYTES"):
        max_checkpoint_bytes()


@pytest.mark.parametrize(("option", "value"), [("--kpt-thr", "nan"), ("--kpt-thr", "2"), ("--batch-size", "0"),
                                               ("--max-frames", "-1")])  # fmt: skip
def test_numeric_options_that_mean_nothing_are_refused(tiny_files, tmp_path, capsys, option, value):
    assert predict(tiny_files, GOOD, "--detector", "whole", "--out", tmp_path / "o", option, value) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert option in line


@pytest.mark.parametrize("spec", ["\u00b2", "\u0663", "99999999999999999999"])
def test_webcam_index_that_is_digits_but_not_an_int_is_not_a_webcam(tiny_files, tmp_path, capsys, spec):
    from hrpose.inference.video import is_webcam

    assert not is_webcam(spec)
    assert predict(tiny_files, spec, "--detector", "whole", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "no such file, folder or webcam" in err and "Traceback" not in err


def test_non_integer_sigma_is_accepted(tmp_path):
    from helpers import TINY_YAML
    from hrpose.codec import build_codec
    from hrpose.config import load_config

    f = tmp_path / "s.yaml"
    f.write_text(TINY_YAML + "\n" if "SIGMA" not in TINY_YAML else TINY_YAML)
    text = f.read_text()
    text = text.replace("SIGMA: 2\n", "SIGMA: 2.5\n") if "SIGMA: 2\n" in text else text + "MODEL:\n  SIGMA: 2.5\n"
    f.write_text(text)
    cfg = load_config(f)
    assert cfg.MODEL.SIGMA == 2.5
    assert build_codec(cfg).sigma == 2.5


def test_control_characters_in_a_file_name_cannot_forge_an_error_line(tiny_files, tmp_path, capsys):
    name = "nope\nerror: everything is fine\x1b[2K.jpg"
    assert predict(tiny_files, tmp_path / name, "--detector", "whole", "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert not any(line.startswith("error: everything") for line in err.splitlines()), err
    assert "\x1b" not in err and "\\x1b" in err


def test_error_text_escapes_and_indents():
    from hrpose.user_files import error_text

    assert error_text("a\nerror: x\x07") == "a\n  error: x\\x07"


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_predict_input_that_is_a_fifo_or_a_device_is_named_as_such_without_blocking(tiny_files, tmp_path, capsys,
                                                                                       kind):  # fmt: skip
    spec = "/dev/zero" if kind == "device" else tmp_path / "cam.jpg"
    if kind == "fifo":
        os.mkfifo(spec)
    t0 = time.monotonic()
    assert predict(tiny_files, spec, "--detector", "whole", "--out", tmp_path / "o") == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert str(spec) in line and "not a regular file" in line
    assert time.monotonic() - t0 < 30
