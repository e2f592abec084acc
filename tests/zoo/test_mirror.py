"""Host your own: `hrpose models mirror`, HRPOSE_MIRROR (http:// served by `python -m http.server`, and file://)
checked against the mirror's manifest, `hrpose models verify`, and the outage as a user meets it.

The cache is the `world` fixture's (tests/conftest.py): a tiny real pose model under the default model's file name
and a tiny real MMDeploy-end2end-like ONNX detector. The registry's URLs are replaced by ports on 127.0.0.1
where nothing listens, so the real hosts are never reached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hrpose import zoo
from hrpose.cli import main
from hrpose.zoo import download as dl
from hrpose.zoo import sources


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dead_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


@pytest.fixture()
def unreachable(monkeypatch) -> None:
    """Every registry URL of the default models, and their fallbacks, points at a closed port on 127.0.0.1."""
    for name in (zoo.DEFAULT_POSE_MODEL, zoo.DEFAULT_POSE_FALLBACK, zoo.DEFAULT_DETECTOR):
        e = zoo.REGISTRY[name]
        urls = tuple(_dead_url(u.rsplit("/", 1)[1]) for u in e.urls)
        monkeypatch.setitem(zoo.REGISTRY, name, dataclasses.replace(e, urls=urls))
    for var in ("HRPOSE_MIRROR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    sources.clear_manifest_cache()


@pytest.fixture()
def http_server() -> Iterator[callable]:
    procs: list[subprocess.Popen] = []

    def start(directory: Path) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                 "--directory", str(directory)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/", timeout=1).close()  # the directory listing
                return base
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("http.server did not start")

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def _mirror(tmp_path: Path, capsys) -> Path:
    out = tmp_path / "mirror"
    assert main(["models", "mirror", str(out)]) == 0
    capsys.readouterr()
    return out


def test_mirror_writes_the_files_and_a_manifest(world, tmp_path, capsys):
    out = _mirror(tmp_path, capsys)
    manifest = json.loads((out / "manifest.json").read_text())
    pose, det = zoo.REGISTRY[zoo.DEFAULT_POSE_MODEL], zoo.REGISTRY[zoo.DEFAULT_DETECTOR]
    assert manifest["format"] == "hrpose-mirror/1"
    assert sorted(manifest["files"]) == sorted([pose.filename, "yolox_tiny_8xb8-300e_humanart-6f3252f9.onnx"])
    for name, line in manifest["files"].items():
        data = (out / name).read_bytes()
        assert line["size"] == len(data) and line["sha256"] == _sha(data)
    src = world["home"] / "detector" / det.name / "end2end.onnx"
    assert (out / det.member_filename).read_bytes() == src.read_bytes()


def test_a_mirror_served_by_http_server_satisfies_predict(world, tmp_path, capsys, monkeypatch, unreachable,
                                                          http_server):  # fmt: skip
    out = _mirror(tmp_path, capsys)
    base = http_server(out)
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "fresh-home"))  # an empty cache on another machine
    monkeypatch.delenv("HRPOSE_OFFLINE")
    monkeypatch.setenv("HRPOSE_MIRROR", base)
    assert main(["predict", "photo.png", "--out", str(tmp_path / "pred")]) == 0
    captured = capsys.readouterr()
    assert "3 people found" in captured.out
    assert " failed: " not in captured.err  # the mirror answered first; the dead hosts were never needed
    people = json.loads((tmp_path / "pred" / "photo.json").read_text())
    assert len(people) == 3
    # what was fetched is what the mirror's manifest lists
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    det = zoo.REGISTRY[zoo.DEFAULT_DETECTOR]
    got = zoo.cache_path(det).read_bytes()
    assert _sha(got) == manifest[det.member_filename]["sha256"]
    assert sources.trusted(det)["sha256"] == manifest[det.member_filename]["sha256"]


def test_a_mirror_file_that_does_not_match_its_manifest_is_refused(world, tmp_path, capsys, monkeypatch,
                                                                   unreachable):  # fmt: skip
    out = _mirror(tmp_path, capsys)
    det = zoo.REGISTRY[zoo.DEFAULT_DETECTOR]
    other = tmp_path / "other.onnx"
    from helpers import end2end_graph

    end2end_graph(other, static=True)  # a valid graph, but not the one the manifest lists
    shutil.copyfile(other, out / det.member_filename)
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "fresh-home"))
    monkeypatch.delenv("HRPOSE_OFFLINE")
    monkeypatch.setenv("HRPOSE_MIRROR", out.as_uri())  # file:// this time
    with pytest.raises(dl.FetchError) as info:
        zoo.fetch(det, progress=False)
    msg = str(info.value)
    assert "[1] HRPOSE_MIRROR file://" in msg and "(the mirror's manifest)" in msg  # its size differs
    assert "size mismatch" in msg
    assert "[2] download.openmmlab.com" not in msg and "connection refused" in msg  # the next sources were tried
    assert msg.count("connection refused") == 2
    # same size, one byte changed: the manifest's digest refuses it
    good = (world["home"] / "detector" / det.name / "end2end.onnx").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 1
    (out / det.member_filename).write_bytes(bytes(bad))
    with pytest.raises(dl.FetchError, match=rf"\[1\] HRPOSE_MIRROR file://\S+: hash mismatch: the mirror's manifest "
                                            rf"says sha256 {_sha(good)}, got {_sha(bytes(bad))}"):  # fmt: skip
        zoo.fetch(det, progress=False)
    # the pose model from the same file:// mirror is fine
    assert zoo.fetch(zoo.DEFAULT_POSE_MODEL, progress=False).is_file()
    # a file the manifest does not list is refused
    (out / "manifest.json").write_text(json.dumps({"format": "hrpose-mirror/1", "files": {}}))
    sources.clear_manifest_cache()
    (zoo.cache_path(zoo.DEFAULT_POSE_MODEL)).unlink()
    with pytest.raises(dl.FetchError, match="is not listed in its manifest.json"):
        zoo.fetch(zoo.DEFAULT_POSE_MODEL, progress=False)


def test_verify_names_a_damaged_file(world, capsys):
    assert main(["models", "verify"]) == 0
    out = capsys.readouterr().out
    assert f"ok: {zoo.DEFAULT_POSE_MODEL}" in out and f"ok: {zoo.DEFAULT_DETECTOR}" in out
    assert "2 files verified, 0 damaged" in out
    pose = zoo.cache_path(zoo.DEFAULT_POSE_MODEL)
    data = bytearray(pose.read_bytes())
    data[len(data) // 2] ^= 1  # one bit, same size (the stamp's size check alone would not see it) ...
    st = pose.stat()
    pose.write_bytes(bytes(data))
    os.utime(pose, ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and the same mtime
    det = zoo.cache_path(zoo.DEFAULT_DETECTOR)
    det.write_bytes(b"<html>not a model</html>")
    assert main(["models", "verify"]) == 1
    captured = capsys.readouterr()
    damaged = [ln for ln in captured.err.splitlines() if ln.startswith("damaged: ")]
    assert len(damaged) == 2
    assert damaged[0].startswith(f"damaged: {zoo.DEFAULT_POSE_MODEL}: ") and "got sha256" in damaged[0]
    assert damaged[1].startswith(f"damaged: {zoo.DEFAULT_DETECTOR}: ") and "not an ONNX model" in damaged[1]
    assert "0 files verified, 2 damaged" in captured.out


def test_outage_predict_and_fetch_end_in_one_error_naming_every_source(world, tmp_path, capsys, monkeypatch,
                                                                       unreachable):  # fmt: skip
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "fresh-home"))
    monkeypatch.delenv("HRPOSE_OFFLINE")
    t0 = time.monotonic()
    assert main(["predict", "photo.png"]) == 2
    assert time.monotonic() - t0 < 20
    err = capsys.readouterr().err.splitlines()
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1 and errors == err[-1:]
    fallback = [ln for ln in err if "every source of hrnet-w32-coco-256x192 failed" in ln]
    assert len(fallback) == 1 and "official pose_hrnet_w32_256x192.pth (COCO val AP 74.4)" in fallback[0]
    msg = errors[0]
    # two sources of the pose model (the MMPose file and the official fallback), two of the detector
    assert msg.count("pose model: ") == 2 and msg.count("detector yolox-tiny-humanart: ") == 2
    assert msg.count("connection refused") == 4
    for name in (zoo.DEFAULT_POSE_MODEL, zoo.DEFAULT_POSE_FALLBACK, zoo.DEFAULT_DETECTOR):
        for url in zoo.REGISTRY[name].urls:
            assert url in msg
    assert "To place the pose model by hand" in msg and "For the detector: get" in msg

    assert main(["models", "fetch", zoo.DEFAULT_POSE_MODEL, "--no-progress"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [ln for ln in err if ln.startswith("error:")] == err[-1:]
    assert err[-1].startswith("error: could not fetch the default pose model 'hrnet-w32-coco-256x192' nor its "
                              "fallback 'pose_hrnet_w32_256x192': [1] ")  # fmt: skip
    assert "[2] huggingface.co" not in err[-1] and err[-1].count("connection refused") == 2


def test_list_json_shows_sources_checks_and_official_names(capsys):
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    w32 = rows["pose_hrnet_w32_256x192"]
    assert w32["official_path"] == "models/pytorch/pose_coco/pose_hrnet_w32_256x192.pth"
    assert w32["sources"] == [{
        "url": "https://huggingface.co/Prophetetc/cocopose/resolve/main/pose_hrnet_w32_256x192.pth",
        "label": "huggingface.co (Prophetetc/cocopose)", "serves": "file",
        "checks": "sha256 19bc083708bb8d873211e50d85d56344c10290c6e8b564c813fdde09645c4c1c; size 114721619 bytes"}]
    assert rows["pose_hrnet_w48_384x288"]["size"] == 255_061_287
    assert rows["pose_resnet_50_256x256"]["sources"] == []  # official MPII: listed, no known source
    det = rows["yolox-tiny-humanart"]["sources"]
    assert [s["serves"] for s in det] == ["zip", "file"]
    assert det[1]["label"] == "huggingface.co (DavidPagnon/rtmlib_models)"
    assert all("trust on first use" in s["checks"] and "opset" in s["checks"] for s in det)
    assert rows["hrnet-w32-coco-256x192"]["fallback"] == "pose_hrnet_w32_256x192"
    assert rows["imagenet-hrnet-w32"]["official_path"] == "models/pytorch/imagenet/hrnet_w32-36af842e.pth"
    official = {r["official_path"] for r in rows.values() if r["official_path"]}
    assert len([p for p in official if "/pose_coco/" in p]) == 10
    assert len([p for p in official if "/pose_mpii/" in p]) == 5


def test_fetch_dest_places_the_file_under_its_official_path(world, tmp_path, capsys, monkeypatch):
    src = zoo.cache_path(zoo.DEFAULT_POSE_MODEL)
    e = zoo.REGISTRY[zoo.DEFAULT_POSE_FALLBACK]
    (zoo.hrpose_home() / "pose" / e.filename).write_bytes(src.read_bytes())
    monkeypatch.setitem(zoo.REGISTRY, e.name, dataclasses.replace(e, sha256=_sha(src.read_bytes()),
                                                                 size=src.stat().st_size))  # fmt: skip
    dest = tmp_path / e.official_path
    assert main(["models", "fetch", e.name, "--dest", str(dest)]) == 0
    assert capsys.readouterr().out.strip() == f"{e.name}: {dest}"
    assert dest.read_bytes() == src.read_bytes()


def test_default_model_falls_back_to_the_official_w32_in_one_line(world, tmp_path, capsys, monkeypatch, unreachable,
                                                                  http_server):  # fmt: skip
    """The default model's only source is down; the official pose_hrnet_w32_256x192 (here: a tiny model in the
    official layout, served by http.server) is fetched instead and predict runs on it."""
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights

    served = tmp_path / "hf"
    served.mkdir()
    fb = zoo.REGISTRY[zoo.DEFAULT_POSE_FALLBACK]
    model = build_model(load_config(world["cfg"]))
    from helpers import fill_module

    fill_module().fill_(model, 5)
    save_weights(model, served / fb.filename)  # the official bare state_dict layout
    data = (served / fb.filename).read_bytes()
    base = http_server(served)
    monkeypatch.setitem(zoo.REGISTRY, fb.name, dataclasses.replace(
        fb, urls=(f"{base}/{fb.filename}",), sha256=_sha(data), size=len(data), config=str(world["cfg"])))
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "fresh-home"))
    monkeypatch.delenv("HRPOSE_OFFLINE")
    assert main(["predict", "photo.png", "--detector", "whole", "--out", str(tmp_path / "pred")]) == 0
    captured = capsys.readouterr()
    notes = [ln for ln in captured.err.splitlines() if "official" in ln]
    assert notes == ["warning: every source of hrnet-w32-coco-256x192 failed: using the official "
                     "pose_hrnet_w32_256x192.pth (COCO val AP 74.4) instead"]  # fmt: skip
    assert "1 people found" in captured.out
    assert zoo.cache_path(fb.name).read_bytes() == data
