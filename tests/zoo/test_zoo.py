"""Model zoo: registry sanity, cache layout, and the downloader against real HTTP servers on 127.0.0.1.

The servers are started by the tests (http.server, threads) and serve files the tests build: a small torch
checkpoint, zips with and without a usable member, HTML error pages, cut and slow bodies. The real URLs cannot be
reached from CI; `pytest -m network` checks them where the internet is available.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import socket
import threading
import time
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from hrpose import zoo
from hrpose.cli import main
from hrpose.config import load_config
from hrpose.errors import UserError
from hrpose.zoo import download as dl
from hrpose.zoo.registry import KINDS, LAYOUTS, REGISTRY, ZooEntry

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------------------------------
# fixtures: payloads, a test server, an isolated cache


def _checkpoint_bytes() -> bytes:
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(0)
    # ~300 kB, so a body can be cut in the middle of it
    torch.save({"state_dict": {"deconv_layers.0.weight": torch.randn(17, 32, 12, 12, generator=g)}}, buf)
    return buf.getvalue()


CKPT = _checkpoint_bytes()
CKPT_SHA = hashlib.sha256(CKPT).hexdigest()
def _onnx_bytes() -> bytes:
    import tempfile

    from helpers import end2end_graph

    with tempfile.TemporaryDirectory() as d:
        end2end_graph(Path(d) / "end2end.onnx")
        return (Path(d) / "end2end.onnx").read_bytes()


ONNX_BYTES = _onnx_bytes()  # a real (tiny) MMDeploy-end2end-like graph: the zoo checks a detector's structure


def _zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


ZIP = _zip_bytes({"yolox_tiny_test/end2end.onnx": ONNX_BYTES, "yolox_tiny_test/deploy.json": b"{}"})
HTML = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Service unavailable</body></html>\n" * 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, dict] = {}
        self.log: list[tuple[str, str | None]] = []  # (path, Range header)
        self.hits: dict[str, int] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: C901 - one branch per behaviour
        srv = self.server
        path = self.path.split("?")[0]
        rng = self.headers.get("Range")
        srv.log.append((path, rng))
        n = srv.hits[path] = srv.hits.get(path, 0) + 1
        route = srv.routes.get(path)
        if route is None:
            self._plain(404, b"not found")
            return
        if n <= route.get("fail_first", 0):
            self._plain(route.get("fail_status", 500), b"temporarily broken")
            return
        if "status" in route:
            self._plain(route["status"], route.get("body", b"error"))
            return
        body: bytes = route["body"]
        start = 0
        if rng and route.get("ranges", True):
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            assert m, rng
            start = int(m.group(1))
            if start >= len(body):
                self._plain(416, b"range not satisfiable")
                return
        part = body[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", route.get("type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(part)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if route.get("ranges", True):
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = route.get("cut_first", 0)
        if n <= cut:  # send part of the body, then (after a stall, when asked) drop the connection
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            time.sleep(route.get("stall_s", 0))
            self.close_connection = True
            return
        try:
            self.wfile.write(part)
        except OSError:
            pass

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, request):
    """Own cache, no offline/mirror/proxy from the environment, fast retries, and only 127.0.0.1 reachable."""
    if request.node.get_closest_marker("network") is None:
        real = socket.create_connection

        def local_only(address, *args, **kwargs):
            assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address}"
            return real(address, *args, **kwargs)

        monkeypatch.setattr(socket, "create_connection", local_only)
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "home"))
    for var in ("HRPOSE_OFFLINE", "HRPOSE_MIRROR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    from hrpose.zoo import sources

    sources.clear_manifest_cache()


def _dead_url(name: str) -> str:
    """A URL on a port nothing listens on: any attempt to use it fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _entry(urls, *, sha256=CKPT_SHA, filename="td-hm_test-81c58e40_20220909.pth", member=None, member_sha256=""):
    return ZooEntry(
        name="test-model" if member is None else "test-detector",
        kind="pose" if member is None else "detector",
        filename=filename,
        urls=tuple(urls),
        sha256=sha256,
        layout="mmpose1" if member is None else "onnx-end2end",
        config=None,
        channel_order="rgb",
        archive_member=member,
        input_size=(192, 256),
        metric="test",
        licence="Apache-2.0",
        source="tests",
        member_sha256=member_sha256,
    )


def _home() -> Path:
    return Path(os.environ["HRPOSE_HOME"])


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


# ----------------------------------------------------------------------------------------------------
# registry


def test_registry_sanity():
    names = {e.name for e in REGISTRY.values()}
    assert len(REGISTRY) == len(names)
    assert len({(e.kind, e.filename) for e in REGISTRY.values()}) == len(REGISTRY), "file names must be unique"
    for key, e in REGISTRY.items():
        assert key == e.name
        assert e.kind in KINDS and e.layout in LAYOUTS, e
        assert e.channel_order in ("rgb", "bgr"), e
        assert all(u.startswith("https://") for u in e.urls), e
        # every source serves the file under its own name (detectors: the zip, or the bare ONNX taken out of it)
        assert all(u.rsplit("/", 1)[1] in (e.filename, e.member_filename) for u in e.urls), e
        if e.layout == "official":  # the official zoo: pose_coco mirrored on the HF Hub, pose_mpii has no source
            assert e.official_path == f"models/pytorch/pose_{'coco' if e.urls else 'mpii'}/{e.filename}", e
            assert e.sha256 == "" or (len(e.sha256) == 64 and e.size > 0), e  # only the two published digests
        elif e.archive_member is None:
            assert e.urls and re.fullmatch(r"[0-9a-f]{8,64}", e.sha256), e
            # never an invented digest: a prefix is exactly the 8+ hex digits published in the file name
            assert len(e.sha256) == 64 or re.search(rf"-{e.sha256}[._]", e.filename), e
        else:  # zips: no digest of the zip is published (the name's digits belong to the .pth it came from)
            assert e.sha256 == "" and e.filename.endswith(".zip") and e.kind == "detector", e
            assert len(e.urls) == 2 and e.urls[1].endswith("/" + e.member_filename), e
        assert e.licence in ("Apache-2.0", "BSD-3-Clause", "MIT"), e
        assert e.source.startswith("https://") and e.metric, e
        if e.kind == "pose":
            cfg = load_config(zoo.config_path(e))
            w, h = e.input_size
            assert list(cfg.MODEL.IMAGE_SIZE) == [w, h], e
            assert cfg.DATASET.DATASET in (e.official_path or e.name), e
            assert ("hrnet" in e.name) == (cfg.MODEL.NAME == "pose_hrnet"), e
        else:
            assert e.config is None
    # the issue's list: COCO pose_resnet 50/101/152 and hrnet w32/w48 at both sizes, MPII, detectors, ImageNet
    for arch in ("resnet50", "resnet101", "resnet152", "hrnet-w32", "hrnet-w48"):
        for size in ("coco-256x192", "coco-384x288", "mpii-256x256"):
            assert f"{arch}-{size}" in REGISTRY
        assert f"imagenet-{arch}" in REGISTRY
    assert {"yolox-tiny-humanart", "yolox-m-humanart"} <= names
    assert REGISTRY[zoo.DEFAULT_POSE_MODEL].kind == "pose" and REGISTRY[zoo.DEFAULT_DETECTOR].kind == "detector"


def test_default_entries_match_the_issue():
    e = REGISTRY["hrnet-w32-coco-256x192"]
    assert e.urls[0] == (
        "https://download.openmmlab.com/mmpose/v1/body_2d_keypoint/topdown_heatmap/coco/"
        "td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth"
    )
    assert e.sha256 == "81c58e40" and e.layout == "mmpose1" and e.channel_order == "rgb"
    d = REGISTRY["yolox-tiny-humanart"]
    assert d.urls[0].endswith("/onnx_sdk/yolox_tiny_8xb8-300e_humanart-6f3252f9.zip")
    assert d.archive_member == "end2end.onnx" and d.input_size == (416, 416) and d.channel_order == "bgr"
    assert REGISTRY["yolox-m-humanart"].input_size == (640, 640)


def test_packaged_configs_are_the_experiment_files():
    pose = [e for e in REGISTRY.values() if e.kind == "pose"]
    assert len(pose) == 30  # 15 MMPose checkpoints and the 15 files of the official zoo
    for e in pose:
        packaged = zoo.config_path(e)
        assert packaged.read_bytes() == (ROOT / "experiments" / e.config).read_bytes(), e.name


def test_entry_for_imagenet_file_matches_the_official_yaml_names():
    names = {}
    for cfg in sorted((ROOT / "experiments").glob("*/*/*.yaml")):
        pretrained = load_config(cfg).MODEL.PRETRAINED
        entry = zoo.entry_for_imagenet_file(pretrained)
        assert entry is not None, (cfg, pretrained)
        names[Path(pretrained).name] = entry.name
    assert names == {
        "resnet50-19c8e357.pth": "imagenet-resnet50",
        "resnet101-5d3b4d8f.pth": "imagenet-resnet101",
        "resnet152-b121ed2d.pth": "imagenet-resnet152",
        "hrnet_w32-36af842e.pth": "imagenet-hrnet-w32",
        "hrnet_w48-8ef0771d.pth": "imagenet-hrnet-w48",
    }
    assert zoo.entry_for_imagenet_file("imagenet-resnet50").filename == "resnet50-19c8e357.pth"
    assert zoo.entry_for_imagenet_file("models/pytorch/imagenet/other.pth") is None


def test_get_entry_unknown_name_suggests_close_ones():
    with pytest.raises(UserError, match=r"unknown model name 'hrnet-w32-coco-256x191'.*hrnet-w32-coco-256x192"):
        zoo.get_entry("hrnet-w32-coco-256x191")


def test_hrpose_home(monkeypatch, tmp_path):
    assert zoo.hrpose_home() == tmp_path / "home"
    monkeypatch.delenv("HRPOSE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.hrpose_home() == tmp_path / "xdg" / "hrpose"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert zoo.hrpose_home() == tmp_path / "user" / ".cache" / "hrpose"


def test_cache_layout():
    e = REGISTRY["hrnet-w32-coco-256x192"]
    assert zoo.cache_path(e) == _home() / "pose" / e.filename
    d = REGISTRY["yolox-tiny-humanart"]
    assert zoo.cache_path(d) == _home() / "detector" / "yolox-tiny-humanart" / "end2end.onnx"
    assert zoo.cache_path("imagenet-resnet50") == _home() / "imagenet" / "resnet50-19c8e357.pth"
    assert zoo.cached_path(e) is None


# ----------------------------------------------------------------------------------------------------
# downloads


def test_download_good_file(server):
    server.routes["/good.pth"] = {"body": CKPT}
    e = _entry([server.base + "/good.pth"])
    p = zoo.fetch(e, progress=False)
    assert p == _home() / "pose" / e.filename
    assert p.read_bytes() == CKPT
    state = torch.load(p, map_location="cpu", weights_only=True)
    assert state["state_dict"]["deconv_layers.0.weight"].shape == (17, 32, 12, 12)
    assert _files(_home()) == [f"pose/{e.filename}", f"pose/{e.filename}.sha256"]
    # second call: a cache hit, no request
    assert zoo.fetch(e, progress=False) == p and len(server.log) == 1
    assert zoo.cached_path(e) == p


def test_download_with_prefix_hash_and_progress(server, capsys):
    server.routes["/good.pth"] = {"body": CKPT}
    e = _entry([server.base + "/good.pth"], sha256=CKPT_SHA[:8])
    p = zoo.fetch(e, progress=True)
    assert hashlib.sha256(p.read_bytes()).hexdigest() == CKPT_SHA
    assert f"from {server.base}/good.pth" in capsys.readouterr().err


def test_wrong_content_is_refused_with_both_hashes(server):
    server.routes["/bad.pth"] = {"body": CKPT[:-10] + b"0123456789"}
    actual = hashlib.sha256(CKPT[:-10] + b"0123456789").hexdigest()
    e = _entry([server.base + "/bad.pth"], sha256=CKPT_SHA[:8])
    with pytest.raises(UserError) as ei:
        zoo.fetch(e, progress=False)
    msg = str(ei.value)
    assert f"expected sha256 starting {CKPT_SHA[:8]}" in msg and f"got sha256 {actual}" in msg
    assert str(_home() / "pose" / e.filename) in msg and e.urls[0] in msg
    assert _files(_home()) == []  # nothing partial or wrong left behind


def test_truncated_file_is_refused(server):
    server.routes["/short.pth"] = {"body": CKPT[: len(CKPT) // 3]}  # a complete response of a shorter file
    e = _entry([server.base + "/short.pth"])
    with pytest.raises(UserError, match=f"expected sha256 {CKPT_SHA}, got sha256 "):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []


def test_html_error_page_with_200_is_named(server):
    server.routes["/page.pth"] = {"body": HTML, "type": "text/html"}
    e = _entry([server.base + "/page.pth"])
    with pytest.raises(UserError, match="HTML page instead of the file"):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []


def test_404_fails_at_once(server):
    e = _entry([server.base + "/missing.pth"])
    with pytest.raises(UserError, match="HTTP 404"):
        zoo.fetch(e, progress=False)
    assert server.hits == {"/missing.pth": 1}


def test_500_then_ok_is_retried(server):
    server.routes["/flaky.pth"] = {"body": CKPT, "fail_first": 2}
    e = _entry([server.base + "/flaky.pth"])
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert server.hits["/flaky.pth"] == 3


def test_persistent_500_gives_up_after_the_attempts(server):
    server.routes["/down.pth"] = {"body": CKPT, "fail_first": 100, "fail_status": 503}
    e = _entry([server.base + "/down.pth"])
    with pytest.raises(UserError, match="HTTP 503"):
        zoo.fetch(e, progress=False)
    assert server.hits["/down.pth"] == dl.ATTEMPTS


def test_cut_connection_resumes_with_range(server):
    server.routes["/cut.pth"] = {"body": CKPT, "cut_first": 1}
    e = _entry([server.base + "/cut.pth"])
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert server.log[0] == ("/cut.pth", None)
    assert server.log[1] == ("/cut.pth", f"bytes={len(CKPT) // 2}-")
    assert len(server.log) == 2


def test_stalled_connection_times_out_and_resumes(server, monkeypatch):
    monkeypatch.setattr(dl, "TIMEOUT_S", 0.3)
    server.routes["/slow.pth"] = {"body": CKPT, "cut_first": 1, "stall_s": 1.0}
    e = _entry([server.base + "/slow.pth"])
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert server.log[1] == ("/slow.pth", f"bytes={len(CKPT) // 2}-")


def test_cut_connection_without_range_support_restarts(server):
    server.routes["/norange.pth"] = {"body": CKPT, "cut_first": 1, "ranges": False}
    e = _entry([server.base + "/norange.pth"])
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT  # the 200 answer replaced the partial file
    assert len(server.log) == 2 and server.log[1][1] is not None


def test_size_limit(server, monkeypatch):
    monkeypatch.setattr(dl, "MAX_DOWNLOAD_BYTES", 1000)
    server.routes["/big.pth"] = {"body": CKPT}
    e = _entry([server.base + "/big.pth"])
    with pytest.raises(UserError, match=f"announces {len(CKPT)} bytes, over the 1000 limit"):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []


def test_two_concurrent_fetches_download_once(server):
    server.routes["/cut.pth"] = {"body": CKPT, "cut_first": 1, "stall_s": 0.2}
    e = _entry([server.base + "/cut.pth"])
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(zoo.fetch(e, progress=False))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2 and results[0] == results[1] and results[0].read_bytes() == CKPT
    assert len(server.log) == 2  # one cut request + its resume; the second fetch found the finished file


def test_stale_partial_file_from_an_earlier_run(server):
    server.routes["/good.pth"] = {"body": CKPT}
    e = _entry([server.base + "/good.pth"])
    part = _home() / "pose" / (e.filename + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from somewhere else" * 10)  # resumed, fails the hash, then one clean try
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert [r for _, r in server.log] == ["bytes=270-", None]
    assert not part.exists()


def test_zip_member_is_extracted_and_the_zip_dropped(server):
    server.routes["/det.zip"] = {"body": ZIP}
    e = _entry([server.base + "/det.zip"], sha256=hashlib.sha256(ZIP).hexdigest(), filename="det-12345678.zip",
               member="end2end.onnx")
    p = zoo.fetch(e, progress=False)
    assert p == _home() / "detector" / "test-detector" / "end2end.onnx"
    assert p.read_bytes() == ONNX_BYTES
    assert "detector/det-12345678.zip" not in _files(_home())
    assert zoo.cached_path(e) == p and len(server.log) == 1


def test_zip_member_placed_by_hand_is_accepted_offline(monkeypatch):
    e = _entry([_dead_url("det.zip")], sha256="", filename="det.zip", member="end2end.onnx")
    target = zoo.cache_path(e)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"anything")
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    assert zoo.fetch(e, progress=False) == target
    # ... unless the registry records the member's full digest
    e2 = _entry([_dead_url("det.zip")], sha256="", filename="det.zip", member="end2end.onnx",
                member_sha256=hashlib.sha256(ONNX_BYTES).hexdigest())
    with pytest.raises(UserError, match="expected sha256 " + hashlib.sha256(ONNX_BYTES).hexdigest()):
        zoo.fetch(e2, progress=False)
    assert not target.exists()


def test_zip_placed_by_hand_is_verified_and_extracted(monkeypatch):
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    e = _entry([_dead_url("det.zip")], sha256=hashlib.sha256(ZIP).hexdigest()[:8], filename="det.zip",
               member="end2end.onnx")
    (_home() / "detector").mkdir(parents=True)
    (_home() / "detector" / "det.zip").write_bytes(ZIP)
    assert zoo.fetch(e, progress=False).read_bytes() == ONNX_BYTES


def test_zip_member_path_traversal_never_leaves_the_cache(server, tmp_path):
    evil = _zip_bytes({"../../../../evil/end2end.onnx": ONNX_BYTES})
    server.routes["/evil.zip"] = {"body": evil}
    e = _entry([server.base + "/evil.zip"], sha256="", filename="evil.zip", member="end2end.onnx")
    p = zoo.fetch(e, progress=False)
    assert p == _home() / "detector" / "test-detector" / "end2end.onnx" and p.read_bytes() == ONNX_BYTES
    assert not any(tmp_path.parent.rglob("evil"))


def test_zip_bomb_and_corrupt_member_are_refused(server):
    bomb = _zip_bytes({"end2end.onnx": b"\0" * (8 << 20)})
    assert len(bomb) < 100_000
    server.routes["/bomb.zip"] = {"body": bomb}
    e = _entry([server.base + "/bomb.zip"], sha256="", filename="bomb.zip", member="end2end.onnx")
    with pytest.raises(UserError, match="compression ratio"):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []  # neither the member nor the refused zip is kept

    stored = bytearray(_zip_bytes({"end2end.onnx": ONNX_BYTES}, zipfile.ZIP_STORED))
    i = bytes(stored).index(ONNX_BYTES[:64])
    stored[i + 100] ^= 0xFF  # the CRC-32 no longer matches
    server.routes["/crc.zip"] = {"body": bytes(stored)}
    e = _entry([server.base + "/crc.zip"], sha256="", filename="crc.zip", member="end2end.onnx")
    with pytest.raises(UserError, match="corrupt"):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []

    server.routes["/nomember.zip"] = {"body": _zip_bytes({"model.onnx": ONNX_BYTES})}
    e = _entry([server.base + "/nomember.zip"], sha256="", filename="nomember.zip", member="end2end.onnx")
    with pytest.raises(UserError, match="expected exactly one member named 'end2end.onnx', found 0"):
        zoo.fetch(e, progress=False)


def test_html_instead_of_a_zip_without_published_hash(server, monkeypatch):
    server.routes["/det.zip"] = {"body": HTML, "type": "text/html"}
    e = _entry([server.base + "/det.zip"], sha256="", filename="det.zip", member="end2end.onnx")
    with pytest.raises(UserError, match="not a readable zip archive.*HTML page.*was removed"):
        zoo.fetch(e, progress=False)
    assert _files(_home()) == []
    # a mirror answering with an HTML page (a mirror serves the bare ONNX): the registry URL is tried next
    server.routes["/good/det.zip"] = {"body": ZIP}
    server.routes["/m/det.onnx"] = {"body": HTML, "type": "text/html"}
    monkeypatch.setenv("HRPOSE_MIRROR", server.base + "/m")
    e = _entry([server.base + "/good/det.zip"], sha256="", filename="det.zip", member="end2end.onnx")
    assert zoo.fetch(e, progress=False).read_bytes() == ONNX_BYTES
    assert [p for p, _ in server.log[-2:]] == ["/m/det.onnx", "/good/det.zip"]


def test_offline_never_touches_the_network_and_says_where_to_place(server, monkeypatch):
    server.routes["/good.pth"] = {"body": CKPT}
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    e = _entry([server.base + "/good.pth"], sha256=CKPT_SHA[:8])
    with pytest.raises(UserError) as ei:
        zoo.fetch(e, progress=False)
    msg = str(ei.value)
    assert "HRPOSE_OFFLINE" in msg and e.urls[0] in msg and str(_home() / "pose" / e.filename) in msg
    assert CKPT_SHA[:8] in msg
    assert server.log == []
    d = REGISTRY["yolox-tiny-humanart"]
    with pytest.raises(UserError, match=re.escape(str(zoo.cache_path(d)))):
        zoo.fetch(d)


def test_file_placed_by_hand_is_a_cache_hit_without_network(monkeypatch):
    e = _entry([_dead_url("x.pth")], sha256=CKPT_SHA[:8])
    dest = _home() / "pose" / e.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(CKPT)
    assert zoo.fetch(e, progress=False) == dest  # the dead URL would fail if it were tried
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    assert zoo.fetch(e, progress=False) == dest


def test_corrupt_file_in_the_cache_is_refused_and_removed(server, monkeypatch, capsys):
    e = _entry([server.base + "/good.pth"])
    dest = _home() / "pose" / e.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(CKPT[:1000])  # a partial copy
    bad = hashlib.sha256(CKPT[:1000]).hexdigest()
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    with pytest.raises(UserError, match=f"expected sha256 {CKPT_SHA}, got sha256 {bad}.*removed"):
        zoo.fetch(e, progress=False)
    assert not dest.exists()
    # online: the bad copy is reported, removed and replaced
    dest.write_bytes(CKPT[:1000])
    monkeypatch.delenv("HRPOSE_OFFLINE")
    server.routes["/good.pth"] = {"body": CKPT}
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert f"got sha256 {bad}" in capsys.readouterr().err


def test_a_file_changed_after_verification_is_hashed_again():
    e = _entry([_dead_url("x.pth")])
    dest = _home() / "pose" / e.filename
    dest.parent.mkdir(parents=True)
    dest.write_bytes(CKPT)
    assert zoo.cached_path(e) == dest and (dest.parent / (dest.name + ".sha256")).exists()
    dest.write_bytes(CKPT[:-1] + b"\1")  # same size, new mtime: the stamp no longer vouches for it
    with pytest.raises(UserError, match="got sha256"):
        zoo.cached_path(e)


def test_mirror_env_var_replaces_the_url_up_to_the_file_name(server, monkeypatch):
    e = _entry([_dead_url("mmpose/v1/x.pth")])
    server.routes[f"/mirror/{e.filename}"] = {"body": CKPT}
    monkeypatch.setenv("HRPOSE_MIRROR", server.base + "/mirror/")
    assert dl.candidate_urls(e) == [f"{server.base}/mirror/{e.filename}", e.urls[0]]
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    # the mirror's manifest.json is asked for first (this one has none: the entry's own hash still applies)
    assert server.log == [("/mirror/manifest.json", None), (f"/mirror/{e.filename}", None)]


def test_mirror_config_key_first_then_env_then_registry(server, monkeypatch):
    e = _entry([server.base + "/canonical.pth"])
    server.routes["/canonical.pth"] = {"body": CKPT}
    monkeypatch.setenv("HRPOSE_MIRROR", server.base + "/env")
    assert dl.candidate_urls(e, mirror=server.base + "/cfg") == [
        f"{server.base}/cfg/{e.filename}", f"{server.base}/env/{e.filename}", e.urls[0]
    ]
    # both mirrors miss the file (404): the registry URL still delivers it
    assert zoo.fetch(e, progress=False, mirror=server.base + "/cfg").read_bytes() == CKPT
    assert [p for p, _ in server.log if not p.endswith("/manifest.json")] == [
        f"/cfg/{e.filename}", f"/env/{e.filename}", "/canonical.pth"]
    monkeypatch.setenv("HRPOSE_MIRROR", "ftp://example.org/models")
    with pytest.raises(UserError, match="HRPOSE_MIRROR must be a base URL"):
        dl.candidate_urls(e)
    cfg = load_config(ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml")
    assert cfg.HRPOSE.MODEL_MIRROR == ""


def test_file_mirror(tmp_path, monkeypatch):
    e = _entry([_dead_url("x.pth")])
    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / e.filename).write_bytes(CKPT)
    monkeypatch.setenv("HRPOSE_MIRROR", (tmp_path / "mirror").as_uri())
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    e2 = _entry([_dead_url("y.pth")], filename="absent-12345678.pth")
    with pytest.raises(UserError, match=r"file:.*absent-12345678\.pth: .*No such file"):
        zoo.fetch(e2, progress=False)


def test_docs_list_every_entry():
    text = (ROOT / "docs" / "models.md").read_text()
    for e in REGISTRY.values():
        row = next((ln for ln in text.splitlines() if ln.startswith(f"| `{e.name}`")), None)
        assert row is not None, e.name
        assert f"[{e.filename}]({e.urls[0] if e.urls else e.source})" in row and e.licence in row, e.name
        assert all(u in row for u in e.urls), e.name  # every source
        assert e.metric.split(" (")[0].split()[-1] in row, e.name  # the published number


def test_proxy_from_the_environment_is_used(server, monkeypatch):
    server.routes["/good.pth"] = {"body": CKPT}
    proxied: list[str] = []

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            proxied.append(self.path)  # a proxy receives the absolute URL
            headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "user-agent")}
            direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with direct.open(urllib.request.Request(self.path, headers=headers)) as r:
                body = r.read()
                self.send_response(r.status)
                for k in ("Content-Type", "Content-Range"):
                    if r.headers.get(k):
                        self.send_header(k, r.headers[k])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.delenv("no_proxy")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
        e = _entry([server.base + "/good.pth"])
        assert zoo.fetch(e, progress=False).read_bytes() == CKPT
        assert proxied == [server.base + "/good.pth"]
    finally:
        proxy.shutdown()
        proxy.server_close()


# ----------------------------------------------------------------------------------------------------
# the command


def test_models_listing(capsys):
    e = REGISTRY["imagenet-resnet50"]
    placed = _home() / "imagenet" / e.filename
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"not hashed by the listing")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out
    line = next(ln for ln in out.splitlines() if ln.startswith("imagenet-resnet50 "))
    assert "yes (unverified)" in line and "BSD-3-Clause" in line
    line = next(ln for ln in out.splitlines() if ln.startswith("yolox-m-humanart "))
    assert " 640x640 " in line and "Apache-2.0" in line
    line = next(ln for ln in out.splitlines() if ln.startswith("hrnet-w32-coco-256x192 "))
    assert line.rstrip().endswith("-") and " 256x192 " in line and "74.9" in line
    assert str(_home()) in out

    assert main(["models", "list", "--json", "--kind", "detector"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["yolox-tiny-humanart", "yolox-m-humanart"]
    assert rows[0]["path"] == str(_home() / "detector" / "yolox-tiny-humanart" / "end2end.onnx")
    assert rows[0]["cached"] is False


def test_models_fetch_and_path_commands(server, monkeypatch, capsys):
    e = REGISTRY["imagenet-resnet50"]
    payload = b"x" * 1000
    # the registry's prefix cannot match our bytes: the mismatch is reported, nothing is kept
    server.routes[f"/m/{e.filename}"] = {"body": payload}
    monkeypatch.setenv("HRPOSE_MIRROR", server.base + "/m")
    e = dataclasses.replace(e, urls=(_dead_url(e.filename),))  # never the real host
    monkeypatch.setitem(REGISTRY, e.name, e)
    assert main(["models", "fetch", "imagenet-resnet50", "--no-progress", "--mirror", server.base + "/m"]) == 2
    lines = capsys.readouterr().err.splitlines()
    # one line per failing source (the same mirror given twice is tried once, then the dead registry URL) ...
    assert [ln.split(" failed:")[0] for ln in lines[:-1]] == [
        "imagenet-resnet50: source 1/2", "imagenet-resnet50: source 2/2"]
    # ... then one error naming both with their reasons
    err = lines[-1]
    assert err.startswith("error: could not fetch model 'imagenet-resnet50' from any of its 2 sources")
    assert "connection refused" in err
    assert "expected sha256 starting 19c8e357" in err and hashlib.sha256(payload).hexdigest() in err

    assert main(["models", "path", "imagenet-resnet50"]) == 1
    captured = capsys.readouterr()
    assert captured.out.strip() == str(_home() / "imagenet" / e.filename)
    assert captured.err.startswith("error: ") and e.urls[0] in captured.err

    assert main(["models", "fetch", "no-such-model"]) == 2
    assert "unknown model name 'no-such-model'" in capsys.readouterr().err
    assert main(["models", "fetch"]) == 2
    assert "needs at least one model NAME" in capsys.readouterr().err


def test_models_fetch_offline_command(monkeypatch, capsys):
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    assert main(["models", "fetch", "hrnet-w32-coco-256x192"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: model 'hrnet-w32-coco-256x192' is not in the cache")
    assert str(_home() / "pose" / REGISTRY["hrnet-w32-coco-256x192"].filename) in err


# ----------------------------------------------------------------------------------------------------
# the real files (opt-in: needs the internet)


@pytest.mark.network
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("name", [zoo.DEFAULT_POSE_MODEL, zoo.DEFAULT_DETECTOR])
def test_real_default_files(name):
    e = REGISTRY[name]
    p = zoo.fetch(e, progress=True)
    data_digest = hashlib.sha256(p.read_bytes()).hexdigest()
    print(f"{name}: {p} sha256 {data_digest}")
    if e.archive_member is None:
        assert data_digest.startswith(e.sha256)
        state = torch.load(p, map_location="cpu", weights_only=True)
        assert "state_dict" in state and any(k.startswith("backbone.") for k in state["state_dict"])
    else:
        ort = pytest.importorskip("onnxruntime")
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        assert list(sess.get_inputs()[0].shape)[1] == 3


@pytest.mark.network
def test_real_urls_answer():
    """Every registry URL answers a one-byte Range request (nothing big is downloaded)."""
    bad = []
    for e in REGISTRY.values():
        for url in e.urls:
            req = urllib.request.Request(url, headers={"Range": "bytes=0-0", "User-Agent": dl.USER_AGENT})
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    if r.status not in (200, 206):
                        bad.append(f"{url}: HTTP {r.status}")
            except OSError as err:
                bad.append(f"{url}: {err}")
    assert bad == []
