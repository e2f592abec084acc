"""`hrpose predict` on live streams served on 127.0.0.1: HTTP (ffmpeg -listen), RTSP (GStreamer's RTSP server),
stdin pipes from ffmpeg; reconnects, dropped frames, --duration, SIGTERM, and the one-line errors.

Needs Debian's ffmpeg, python3-gi and gir1.2-gst-rtsp-server-1.0 (scripts/test.sh installs them); the tests
fail, not skip, without them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA
from helpers import free_port

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))
FFMPEG = "/usr/bin/ffmpeg"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (GStreamer)

RTSP_SERVER = r'''
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer
Gst.init(None)
port, folder = sys.argv[1], sys.argv[2]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(f'( multifilesrc location={folder}/f%03d.jpg loop=true caps="image/jpeg,framerate=10/1" '
                   '! jpegdec ! videoconvert ! jpegenc ! rtpjpegpay name=pay0 pt=26 )')
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
'''


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 40-frame 10 fps 320x240 clip of real COCO photos (2 frames each), and its frames as JPEGs."""
    d = tmp_path_factory.mktemp("clip")
    writer = cv2.VideoWriter(str(d / "clip.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    (d / "frames").mkdir()
    for i, f in enumerate(IMAGES[:20]):
        im = cv2.resize(cv2.imread(str(f)), (320, 240))
        cv2.imwrite(str(d / "frames" / f"f{i:03d}.jpg"), im)
        writer.write(im)
        writer.write(im)
    writer.release()
    return d / "clip.mp4"


def hrpose(tiny_files, *args: str, **kw) -> subprocess.Popen:
    cfg, weights, _ = tiny_files
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hrpose.cli", "predict", "--cfg", cfg, "--weights", weights, "--device", "cpu",
           "--detector", "whole", "--no-flip", *args]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kw)


def http_server(clip: Path, port: int, *, loop: bool = True) -> subprocess.Popen:
    """ffmpeg serving `clip` as MPEG-TS over HTTP to one client, in real time (-re)."""
    cmd = [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", *(["-stream_loop", "-1"] if loop else []),
           "-i", str(clip), "-c:v", "mpeg4", "-f", "mpegts", "-listen", "1", f"http://127.0.0.1:{port}/live.ts"]
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def rtsp_server(folder: Path, port: int) -> subprocess.Popen:
    p = subprocess.Popen([SYSTEM_PYTHON, "-c", RTSP_SERVER, str(port), str(folder)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def frames_of(jsonl: Path) -> list[dict]:
    return [json.loads(x) for x in jsonl.read_text().splitlines()]


def video_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def error_lines(stderr: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith("error:")]


def test_http_stream(tiny_files, clip, tmp_path):
    port = free_port()
    server = http_server(clip, port)
    try:
        p = hrpose(tiny_files, f"http://127.0.0.1:{port}/live.ts", "--max-frames", "15", "--out", tmp_path / "o",
                   "--format", "json,csv")  # fmt: skip
        out, err = p.communicate(timeout=120)
    finally:
        stop(server)
    assert p.returncode == 0, err
    assert "0 images, 15 frames, 15 people found" in out
    lines = frames_of(tmp_path / "o" / "127_0_0_1_live_ts.jsonl")
    assert [x["frame"] for x in lines] == list(range(15))
    assert all(x["source"] == f"http://127.0.0.1:{port}/live.ts" for x in lines)
    assert video_frames(tmp_path / "o" / "127_0_0_1_live_ts_pose.mp4") == 15
    rows = (tmp_path / "o" / "results.csv").read_text().splitlines()
    assert len(rows) == 16 and rows[0].startswith("source,image_id,frame,time,track_id,person,box_x")


@pytest.mark.slow
def test_rtsp_stream_stops_and_comes_back(tiny_files, clip, tmp_path):
    port = free_port()
    server = rtsp_server(clip.parent / "frames", port)
    out_dir = tmp_path / "o"
    p = hrpose(tiny_files, f"rtsp://127.0.0.1:{port}/live", "--max-frames", "60", "--reconnect", "30",
               "--out", out_dir, "--queue", "200")  # fmt: skip
    try:
        def partial_lines() -> int:  # the temporary JSONL (created exclusively, under a random name)
            found = list(out_dir.glob(".127_0_0_1_live.jsonl.*partial")) if out_dir.is_dir() else []
            return len(found[0].read_text().splitlines()) if found else 0

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and partial_lines() < 10:
            time.sleep(0.1)
        assert partial_lines() >= 10, "no frame arrived from the RTSP server"
        stop(server)  # the camera goes away ...
        time.sleep(2.0)
        server = rtsp_server(clip.parent / "frames", port)  # ... and comes back on the same address
        out, err = p.communicate(timeout=120)
    finally:
        stop(server)
        stop(p)
    assert p.returncode == 0, err
    assert "reconnected" in err
    assert "0 images, 60 frames" in out
    lines = frames_of(out_dir / "127_0_0_1_live.jsonl")
    assert [x["frame"] for x in lines] == list(range(60))


@pytest.mark.slow
def test_http_stream_stops_and_comes_back(tiny_files, clip, tmp_path):
    port = free_port()
    server = http_server(clip, port, loop=False)  # 40 frames, then the server exits
    out_dir = tmp_path / "o"
    p = hrpose(tiny_files, f"http://127.0.0.1:{port}/live.ts", "--max-frames", "55", "--out", out_dir, "--no-draw",
               "--queue", "200")  # fmt: skip
    try:
        server.wait(60)
        time.sleep(1.0)
        server = http_server(clip, port, loop=False)
        out, err = p.communicate(timeout=120)
    finally:
        stop(server)
        stop(p)
    assert p.returncode == 0, err
    assert "reconnected" in err and "0 images, 55 frames" in out
    assert [x["frame"] for x in frames_of(out_dir / "127_0_0_1_live_ts.jsonl")] == list(range(55))


@pytest.mark.parametrize("fmt", ["mjpeg", "raw"])
def test_stdin_pipe_from_ffmpeg(tiny_files, clip, tmp_path, fmt):
    pipe_args = ["-f", "mjpeg", "-q:v", "3"] if fmt == "mjpeg" else ["-f", "rawvideo", "-pix_fmt", "bgr24"]
    ff = subprocess.Popen([FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(clip), *pipe_args, "-"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    extra = ["--stdin-size", "320x240"] if fmt == "raw" else []
    # a queue as long as the clip: no frame is dropped
    p = hrpose(tiny_files, "-", "--out", tmp_path / "o", "--queue", "100", "--stdin-fps", "10", *extra, stdin=ff.stdout)
    assert ff.stdout is not None
    ff.stdout.close()
    out, err = p.communicate(timeout=120)
    ff.wait(10)
    assert p.returncode == 0, err
    assert "0 images, 40 frames, 40 people found" in out
    lines = frames_of(tmp_path / "o" / "stdin.jsonl")
    assert [x["frame"] for x in lines] == list(range(40))
    assert lines[5]["time"] == pytest.approx(0.5)
    # the frames are the clip's: the box of the whole-image detector is the frame size
    assert lines[0]["people"][0]["bbox"] == [0.0, 0.0, 320.0, 240.0]


def test_slow_model_drops_oldest_frames_and_counts_them(tiny_files, clip, tmp_path):
    # 400 frames piped at full speed, a queue of 1 frame: the model cannot keep up, so frames are dropped
    frames = b"".join(cv2.imencode(".jpg", cv2.resize(cv2.imread(str(f)), (640, 480)))[1].tobytes()
                      for f in IMAGES[:40]) * 10  # fmt: skip
    (tmp_path / "frames.mjpeg").write_bytes(frames)
    with (tmp_path / "frames.mjpeg").open("rb") as stdin:
        p = hrpose(tiny_files, "-", "--out", tmp_path / "o", "--queue", "1", stdin=stdin)
        out, err = p.communicate(timeout=180)
    assert p.returncode == 0, err
    lines = frames_of(tmp_path / "o" / "stdin.jsonl")
    index = [x["frame"] for x in lines]
    dropped = 400 - len(index)
    assert dropped > 0, "the model kept up with a full-speed pipe: nothing to drop"
    assert f"{dropped} stream frame(s) dropped" in err
    assert index == sorted(set(index)) and index[-1] == 399  # in order, the newest frame is kept


def test_duration_and_sigterm_close_outputs(tiny_files, clip, tmp_path):
    port = free_port()
    server = http_server(clip, port)
    try:
        p = hrpose(tiny_files, f"http://127.0.0.1:{port}/live.ts", "--duration", "1.5", "--out", tmp_path / "d")
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        times = [x["time"] for x in frames_of(tmp_path / "d" / "127_0_0_1_live_ts.jsonl")]
        assert times and max(times) < 1.5 and len(times) >= 5
    finally:
        stop(server)
    server = http_server(clip, port)
    try:
        out_dir = tmp_path / "t"
        p = hrpose(tiny_files, f"http://127.0.0.1:{port}/live.ts", "--out", out_dir)
        def partial_lines() -> int:  # the temporary JSONL (created exclusively, under a random name)
            found = list(out_dir.glob(".127_0_0_1_live_ts.jsonl.*partial")) if out_dir.is_dir() else []
            return found[0].read_text().count("\n") if found else 0

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and partial_lines() < 5:
            time.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        stop(server)
    assert p.returncode == 143, err  # SIGTERM: 128 + 15, results kept as on Ctrl-C
    assert "Traceback" not in err
    n = len(frames_of(out_dir / "127_0_0_1_live_ts.jsonl"))
    assert n >= 5 and not list(out_dir.glob(".*partial*"))  # no hidden temporary file left
    assert video_frames(out_dir / "127_0_0_1_live_ts_pose.mp4") == n  # the video was closed, every frame in it


@pytest.mark.parametrize(
    "url, words",
    [
        ("ftp://127.0.0.1/cam", "unsupported stream URL scheme"),
        ("http:///live.ts", "names no host"),
        ("rtsp://127.0.0.1:99999/live", "port"),
    ],
)
def test_wrong_url_one_error_line(tiny_files, tmp_path, url, words):
    p = hrpose(tiny_files, url, "--out", tmp_path / "o")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 2
    errors = error_lines(err)
    assert len(errors) == 1 and words in errors[0] and url in errors[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("scheme", ["rtsp", "http"])
def test_unreachable_stream_one_error_line(tiny_files, tmp_path, scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}/live"  # nothing listens there
    p = hrpose(tiny_files, url, "--out", tmp_path / "o")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    errors = error_lines(err)
    assert len(errors) == 1 and url in errors[0] and "cannot open the stream" in errors[0], err
    assert "Traceback" not in err and "WARN" not in err


def test_stdin_not_mjpeg_one_error_line(tiny_files, tmp_path):
    (tmp_path / "junk").write_bytes(b"this is not a video\n" * 10)
    with (tmp_path / "junk").open("rb") as stdin:
        p = hrpose(tiny_files, "-", "--out", tmp_path / "o", stdin=stdin)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 1
    errors = error_lines(err)
    assert len(errors) == 1 and "stdin" in errors[0] and "--stdin-size" in errors[0], err


def test_mjpeg_parser_splits_real_jpegs(tmp_path):
    import io

    from hrpose.inference.streams import StdinReader

    jpegs = [cv2.imencode(".jpg", cv2.imread(str(f)))[1].tobytes() for f in IMAGES[:5]]
    progressive = cv2.imencode(".jpg", cv2.imread(str(IMAGES[5])), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    stream = io.BufferedReader(io.BytesIO(b"".join(jpegs + [progressive])))  # type: ignore[arg-type]
    frames = [f.image for f in StdinReader(stream)]
    assert len(frames) == 6
    for got, data in zip(frames, jpegs + [progressive]):
        assert np.array_equal(got, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
