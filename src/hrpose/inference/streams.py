"""Live video input: RTSP/HTTP(S) URLs, frames piped on stdin and webcams, read on a thread into a bounded queue.

- `StreamReader(url)`: an `rtsp://`, `rtsps://`, `http://` or `https://` URL through OpenCV's bundled FFmpeg
  (`cv2.CAP_FFMPEG`). When the stream drops (a read fails) it reconnects with exponential backoff
  (0.5 s, 1 s, 2 s, ... at most 8 s between tries) until `reconnect_s` seconds pass without a frame; a finite
  HTTP video (the server gives its frame count) ends at its last frame instead.
- `StdinReader()`: frames on stdin, either an MJPEG stream (concatenated JPEGs, e.g. `ffmpeg ... -f mjpeg -`)
  or raw `bgr24` frames of a size given by `--stdin-size WxH` (e.g. `ffmpeg ... -f rawvideo -pix_fmt bgr24 -`).
- `CameraReader(index)`: a webcam (OpenCV camera index), read as fast as the camera gives frames.
- `LiveFrames(reader, max_queue)`: reads frames on a thread into a queue of at most `max_queue` frames;
  when the consumer (pose) is slower than the stream, the oldest queued frames are dropped and counted
  (`dropped`), so the results follow the live picture instead of falling behind.

Every reader yields `Frame`s: the 0-based index of the frame in the stream (dropped frames keep their
numbers, so gaps show where frames were dropped), its time in seconds and the BGR image.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

import cv2
import numpy as np

from hrpose.inference.video import DEFAULT_FPS, VideoError, VideoReader

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")
MAX_JPEG_BYTES = 64 << 20


@dataclass
class Frame:
    index: int
    time: float
    image: np.ndarray


def is_stream_spec(spec: str) -> bool:
    """An input that names a live source: `-` (stdin) or anything that looks like a URL (scheme://)."""
    return spec == "-" or "://" in spec


def check_url(url: str) -> str:
    """A stream URL checked for a scheme we read and a host; VideoError (one line) otherwise."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in STREAM_SCHEMES:
        raise VideoError(
            f"{url}: unsupported stream URL scheme {parts.scheme!r}; expected rtsp://, rtsps://, http:// or "
            "https:// (or - for frames on stdin)"
        )
    try:
        port = parts.port
    except ValueError:
        raise VideoError(f"{url}: the port is not a number 1-65535; expected e.g. {scheme}://host:8554/path") from None
    if not parts.hostname:
        raise VideoError(f"{url}: the URL names no host; expected e.g. {scheme}://192.168.1.10:8554/stream")
    del port
    return url


def redact(url: str) -> str:
    """The URL without a password (camera URLs often carry user:password@)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class StreamReader:
    """Frames of an RTSP/HTTP stream, reconnecting when it drops (see the module docstring)."""

    def __init__(self, url: str, *, reconnect_s: float = 30.0, open_timeout_s: float = 10.0,
                 connect_tries: int = 3) -> None:  # fmt: skip
        self.url = check_url(url)
        self.name = redact(url)
        self.reconnect_s = float(reconnect_s)
        self.open_timeout_s = float(open_timeout_s)
        self.reconnects = 0
        self.stop_event = threading.Event()
        self.cap: cv2.VideoCapture | None = None
        delay = 0.5
        for attempt in range(max(1, connect_tries)):
            self.cap = self._open()
            if self.cap is not None:
                break
            if attempt + 1 < connect_tries:
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
        if self.cap is None:
            raise VideoError(
                f"{self.name}: cannot open the stream after {connect_tries} tries (nothing answers there, the "
                "path is wrong, or it is not a video stream); check the URL with e.g. ffprobe"
            )
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FPS
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # a finite HTTP file (not a live stream) says how many frames it has; it ends there
        self.frame_count = count if count > 0 and urlsplit(url).scheme.lower().startswith("http") else 0

    def _open(self) -> cv2.VideoCapture | None:
        # FFmpeg's and OpenCV's own log lines (connection refused, ...) would repeat what our one error says
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        ms = int(self.open_timeout_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            return cap
        cap.release()
        return None

    def stop(self) -> None:
        self.stop_event.set()

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        t0: float | None = None
        while not self.stop_event.is_set():
            ok, image = (False, None) if self.cap is None else self.cap.read()
            if ok and image is not None:
                now = time.monotonic()
                t0 = now if t0 is None else t0
                yield Frame(index, now - t0, image)
                index += 1
                continue
            if self.frame_count and index >= self.frame_count:
                return  # a finite video over HTTP: its end
            if not self._reconnect(index):
                return

    def _reconnect(self, index: int) -> bool:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.5
        logger.warning("%s: the stream dropped after frame %d; reconnecting", self.name, index)
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            self.cap = self._open()
            if self.cap is not None:
                self.reconnects += 1
                logger.warning("%s: reconnected", self.name)
                return True
            self.stop_event.wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 8.0)
        logger.warning("%s: no frame for %.0f s; the stream is over", self.name, self.reconnect_s)
        return False

    def close(self) -> None:
        self.stop()
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class CameraReader:
    """Frames of a webcam (an OpenCV camera index), live like a stream: read on `LiveFrames`' thread as fast as
    the camera gives them, so a model slower than the camera sees the newest frames and the older ones are
    dropped and counted (a camera's own buffer would otherwise hand out ever older frames). A failed read
    ends the run (a camera that is unplugged does not come back by itself)."""

    def __init__(self, index: str | int) -> None:
        self.video = VideoReader(int(index))
        self.name = self.video.name
        self.fps = self.video.fps
        self.frame_count = 0
        self.stop_event = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def __iter__(self) -> Iterator[Frame]:
        t0: float | None = None
        for index, image in enumerate(self.video):
            now = time.monotonic()
            t0 = now if t0 is None else t0
            yield Frame(index, now - t0, image)
            if self.stop_event.is_set():
                return

    def close(self) -> None:
        self.stop()
        self.video.close()


def _read_exact(f: BinaryIO, n: int) -> bytes:
    chunks = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


class StdinReader:
    """Frames piped on stdin: MJPEG (concatenated JPEG images) or raw bgr24 frames of `size` (w, h)."""

    def __init__(self, stream: BinaryIO | None = None, *, size: tuple[int, int] | None = None,
                 fps: float | None = None) -> None:  # fmt: skip
        self.f = stream if stream is not None else sys.stdin.buffer
        self.name = "stdin"
        self.size = size
        self.fps = float(fps) if fps else DEFAULT_FPS
        self.frame_count = 0
        self.reconnects = 0
        self.stop_event = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def __iter__(self) -> Iterator[Frame]:
        frames = self._raw() if self.size is not None else self._mjpeg()
        for i, image in enumerate(frames):
            yield Frame(i, i / self.fps, image)
            if self.stop_event.is_set():
                return

    def _raw(self) -> Iterator[np.ndarray]:
        assert self.size is not None
        w, h = self.size
        n = w * h * 3
        while True:
            buf = _read_exact(self.f, n)
            if len(buf) < n:
                if buf:
                    logger.warning("stdin: the last %d bytes are not a whole %dx%d bgr24 frame: ignored",
                                   len(buf), w, h)  # fmt: skip
                return
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)

    def _mjpeg(self) -> Iterator[np.ndarray]:
        index = 0
        while True:
            data = self._next_jpeg(index)
            if data is None:
                return
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise VideoError(f"stdin: frame {index} is not a decodable JPEG ({len(data)} bytes)")
            yield image
            index += 1

    def _next_jpeg(self, index: int) -> bytes | None:
        """One JPEG from the stream, found by its markers: segments are skipped by their lengths, the
        entropy-coded data after a start-of-scan is scanned for the next marker (FF not followed by 00/RSTn)."""
        f = self.f
        head = _read_exact(f, 2)
        if not head:
            return None
        if head != b"\xff\xd8":
            raise VideoError(
                f"stdin: frame {index} does not start like a JPEG (got {head.hex()}); pipe MJPEG (ffmpeg -f mjpeg -) "
                "or raw frames with --stdin-size WxH (ffmpeg -f rawvideo -pix_fmt bgr24 -)"
            )
        out = bytearray(head)
        pending: bytes | None = None
        while True:
            m = pending if pending is not None else _read_exact(f, 2)
            pending = None
            if len(m) < 2 or m[0] != 0xFF:
                raise VideoError(f"stdin: frame {index}: a cut or corrupt JPEG (no marker after {len(out)} bytes)")
            out += m
            marker = m[1]
            if marker == 0xD9:
                return bytes(out)
            if 0xD0 <= marker <= 0xD7 or marker in (0x01, 0xFF):
                continue
            ln = _read_exact(f, 2)
            if len(ln) < 2 or int.from_bytes(ln, "big") < 2:
                raise VideoError(f"stdin: frame {index}: a cut or corrupt JPEG (bad segment length)")
            seg = _read_exact(f, int.from_bytes(ln, "big") - 2)
            out += ln + seg
            if len(out) > MAX_JPEG_BYTES:
                raise VideoError(f"stdin: frame {index} is over {MAX_JPEG_BYTES >> 20} MiB: not an MJPEG stream?")
            if marker != 0xDA:
                continue
            peek = getattr(f, "peek", None)
            while True:  # entropy-coded data
                if peek is not None:  # copy the run up to the next FF at once
                    chunk = peek(1 << 16)
                    k = chunk.find(b"\xff") if chunk else -1
                    if k != 0 and chunk:
                        out += f.read(k if k > 0 else len(chunk))
                        continue
                b = f.read(1)
                if not b:
                    raise VideoError(f"stdin: frame {index}: a cut JPEG (the stream ended inside the image)")
                if b != b"\xff":
                    out += b
                    continue
                nxt = f.read(1)
                if not nxt:
                    raise VideoError(f"stdin: frame {index}: a cut JPEG (the stream ended inside the image)")
                if nxt == b"\x00" or 0xD0 <= nxt[0] <= 0xD7:
                    out += b + nxt
                    continue
                pending = b + nxt
                break
            if len(out) > MAX_JPEG_BYTES:
                raise VideoError(f"stdin: frame {index} is over {MAX_JPEG_BYTES >> 20} MiB: not an MJPEG stream?")

    def close(self) -> None:
        self.stop()


class LiveFrames:
    """Frames of a live reader, read on a thread into a queue of at most `max_queue` (oldest dropped)."""

    def __init__(self, reader: StreamReader | StdinReader | CameraReader, max_queue: int = 4) -> None:
        self.reader = reader
        self.max_queue = max(1, int(max_queue))
        self.queue: collections.deque[Frame] = collections.deque()
        self.cond = threading.Condition()
        self.dropped = 0
        self.read = 0
        self.done = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"hrpose-read-{reader.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for frame in self.reader:
                with self.cond:
                    self.read += 1
                    if len(self.queue) >= self.max_queue:
                        self.queue.popleft()
                        self.dropped += 1
                    self.queue.append(frame)
                    self.cond.notify()
                if self.reader.stop_event.is_set():
                    break
        except BaseException as e:  # reported by the consumer
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            with self.cond:
                while not self.queue and not self.done:
                    self.cond.wait(0.2)
                if self.queue:
                    frame = self.queue.popleft()
                elif self.error is not None:
                    raise self.error
                else:
                    return
            yield frame

    def stop(self) -> None:
        self.reader.stop()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def close(self) -> None:
        self.stop()
        self.thread.join(timeout=2.0)
        if not self.thread.is_alive():  # never release a capture another thread may still be reading from
            self.reader.close()
