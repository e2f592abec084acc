"""`hrpose serve` against hostile clients: a real uvicorn (the `hrpose serve` command) on 127.0.0.1.

Slow clients (half a request header, then silence) must not stop `/healthz` or good requests; connections
that never finish their headers are closed after --header-timeout; SIGINT and SIGTERM end the server cleanly;
`boxes` are validated strictly; numeric options that overflow are refused by name.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from conftest import DATA
from helpers import HOST, ROOT, Server, request

PHOTO = DATA / "samples" / "coco" / "000000000785.jpg"


def half_open(port: int, n: int) -> list[socket.socket]:
    """n connections that each send half a request header and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection((HOST, port), timeout=5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        socks.append(s)
    return socks


def timed(server: Server, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    t0 = time.monotonic()
    status, _, data = request(server, method, path, body, headers or {}, timeout=10)
    return status, time.monotonic() - t0, data


@pytest.fixture(scope="module")
def server(model_dir):
    # the default --header-timeout (10 s); a small admission limit, as on a busy server
    s = Server(model_dir, "--queue-size", "2", "--max-batch", "1")
    yield s
    s.stop()


def test_100_half_open_connections_do_not_block_healthz_or_pose(server):
    socks = half_open(server.port, 100)
    try:
        time.sleep(0.3)
        for _ in range(3):
            status, took, body = timed(server, "GET", "/healthz")
            assert status == 200 and json.loads(body)["status"] == "ok", body
            assert took < 2.0, took
        status, took, body = timed(server, "POST", "/v1/pose", PHOTO.read_bytes(), {"Content-Type": "image/jpeg"})
        assert status == 200, body
        assert took < 2.0, took
        assert len(json.loads(body)["people"]) == 1
    finally:
        for s in socks:
            s.close()


def test_a_connection_that_never_finishes_its_header_is_closed(server):
    (s,) = half_open(server.port, 1)
    try:
        s.settimeout(30)
        t0 = time.monotonic()
        data = s.recv(1024)  # the server closes it (b"") once --header-timeout (10 s) has passed
        took = time.monotonic() - t0
        assert data == b"" or data.startswith(b"HTTP/1.1 4"), data
        assert 8.0 < took < 20.0, took
    finally:
        s.close()


def test_slow_header_after_a_keep_alive_response_is_closed_too(server):
    s = socket.create_connection((HOST, server.port), timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while b'"done"' not in first:  # the whole first answer (headers and body may come apart)
            chunk = s.recv(4096)
            assert chunk, first
            first += chunk
        assert first.startswith(b"HTTP/1.1 200"), first
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # the next request: half a header
        s.settimeout(30)
        t0 = time.monotonic()
        data = s.recv(4096)
        assert data == b"", data
        assert time.monotonic() - t0 < 20.0
    finally:
        s.close()


def test_a_header_sent_byte_by_byte_within_the_timeout_is_answered(server):
    s = socket.create_connection((HOST, server.port), timeout=10)
    try:
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n":
            s.sendall(bytes([b]))
            time.sleep(0.01)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        s.close()


def test_connection_bound_evicts_slow_clients_not_good_ones(model_dir):
    srv = Server(model_dir, "--max-connections", "20", "--header-timeout", "30")
    try:
        socks = half_open(srv.port, 60)  # three times the bound, each holding half a header for 30 s
        try:
            time.sleep(0.3)
            status, took, _ = timed(srv, "GET", "/healthz")
            assert status == 200 and took < 2.0
            closed = 0
            for s in socks:
                s.settimeout(0.05)
                try:
                    closed += s.recv(1) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed += 1
            assert closed >= 40, closed  # the oldest slow ones were dropped to stay within 20
        finally:
            for s in socks:
                s.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_end_the_server_cleanly(model_dir, sig):
    srv = Server(model_dir)
    socks = half_open(srv.port, 5)  # open connections must not keep it alive
    try:
        srv.proc.send_signal(sig)
        rc = srv.proc.wait(20)
    finally:
        for s in socks:
            s.close()
        srv.stop()
    log = srv.log.read_text()
    assert rc == 0, (rc, log)
    assert "hrpose serve: stopped" in log
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("boxes", "needle"),
    [
        ([[10, 10, 100, 100, 50]], "score"),
        ([[10, 10, 100, 100, -3]], "score"),
        ([[10, 10, 1e308, 100]], "float32"),
        ([["10", 10, 100, 100]], "must be a number"),
        ([[10, None, 100, 100]], "must be a number"),
        ([[10, 10, 100, 100, True]], "score"),
        (["10,10,100,100"], "must be a list"),
    ],
)
def test_boxes_are_validated_strictly(server, boxes, needle):
    q = "?boxes=" + urllib.parse.quote(json.dumps(boxes))
    status, _, body = request(server, "POST", "/v1/pose" + q, PHOTO.read_bytes(), {"Content-Type": "image/jpeg"})
    answer = json.loads(body)
    assert status == 422, answer
    assert answer["field"] == "boxes" and needle in answer["detail"], answer


def test_a_valid_box_with_a_score_is_still_accepted(server):
    q = "?boxes=" + urllib.parse.quote(json.dumps([[100, 20, 300, 380, 0.75]]))
    status, _, body = request(server, "POST", "/v1/pose" + q, PHOTO.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200, body
    assert len(json.loads(body)["people"]) == 1


@pytest.mark.parametrize(
    ("option", "value"),
    [("--timeout", "1e400"), ("--timeout", "nan"), ("--max-body-mb", "inf"), ("--header-timeout", "nan"),
     ("--batch-wait-ms", "nan"), ("--batch-wait-ms", "-1")],
)  # fmt: skip
def test_numeric_options_that_overflow_are_refused_by_name(model_dir, option, value):
    cmd = [sys.executable, "-m", "hrpose.cli", "serve", "--cfg", str(model_dir / "tiny.yaml"), "--weights",
           str(model_dir / "tiny.safetensors"), "--detector", "whole", "--device", "cpu", "--port", "0",
           option, value]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and option in lines[-1], p.stderr
    assert "Traceback" not in p.stderr
