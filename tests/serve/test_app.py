"""`hrpose serve` over real HTTP: a real uvicorn server (the `hrpose serve` command, a subprocess) on 127.0.0.1.

The served model is a tiny pose network with fixed weights (TINY_YAML) and the whole-image detector; the
answers are checked against that model run directly through `PoseEstimator`. Also: PNG/WebP/multipart, bad
bytes, oversized bodies (by Content-Length and streamed), huge-pixel headers, bad fields, a concurrent load
with p50/p95 latency, a tiny queue with a slow model giving clean 503s and 504s, and the server's RSS.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import struct
import threading
import time
import zlib

import cv2
import numpy as np
import pytest

from conftest import DATA
from helpers import HOST, Server, free_port, multipart, request
from hrpose.cli import main
from hrpose.inference import PoseEstimator, WholeImageDetector
from hrpose.keypoints import COCO

PHOTOS = sorted((DATA / "samples" / "coco").glob("*.jpg"))
PHOTO = DATA / "samples" / "coco" / "000000000785.jpg"


def post_image(server: Server, data: bytes, query: str = "", ctype: str = "image/jpeg") -> tuple[int, dict, dict]:
    status, headers, body = request(server, "POST", "/v1/pose" + query, data, {"Content-Type": ctype})
    return status, headers, json.loads(body)


@pytest.fixture(scope="module")
def server(model_dir):
    # TMPDIR: an empty folder, to see that no upload is spooled to disk
    s = Server(model_dir, "--max-body-mb", "1", "--max-image-pixels", "4000000", env={"TMPDIR": str(model_dir / "tmp")})
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference(model_dir):
    """The served model run directly: what every answer must equal."""
    return PoseEstimator.from_config(model_dir / "tiny.yaml", model_dir / "tiny.safetensors", device="cpu",
                         detector=WholeImageDetector())  # fmt: skip


def keypoints_of(answer: dict) -> np.ndarray:
    return np.asarray([p["keypoints"] for p in answer["people"]], dtype=np.float64).reshape(-1, 17, 3)


def test_jpeg_answer_is_the_models_in_predicts_schema(server, reference):
    status, headers, answer = post_image(server, PHOTO.read_bytes(), "?filename=000000000785.jpg")
    assert status == 200, answer
    assert headers["content-type"] == "application/json"
    assert answer["version"] == 1 and answer["model"] == "tiny"
    assert answer["image"] == {"file": "000000000785.jpg", "width": 640, "height": 425}
    assert set(answer["timings_ms"]) == {"read", "queue", "decode", "inference", "total"}
    assert all(v >= 0 for v in answer["timings_ms"].values())
    (person,) = answer["people"]
    # predict's per-person schema, key for key
    assert set(person) == {"image_id", "category_id", "keypoints", "score", "bbox", "box_score", "image_file",
                           "joint_names"}  # fmt: skip
    assert person["image_id"] == 785 and person["image_file"] == "000000000785.jpg"
    assert person["joint_names"] == list(COCO.joint_names) and person["category_id"] == 1
    np.testing.assert_allclose(person["bbox"], [0, 0, 640, 425], atol=1.01)  # the whole-image "detector"
    want = reference(cv2.imread(str(PHOTO)))
    np.testing.assert_allclose(keypoints_of(answer)[0], want[0].keypoints, atol=2e-3)
    assert person["score"] == pytest.approx(want[0].score, abs=1e-5)


@pytest.mark.parametrize("fmt", [".png", ".webp"])
def test_png_and_webp_give_the_jpegs_pixels_answer(server, reference, fmt):
    pixels = cv2.imread(str(PHOTO))
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if fmt == ".webp" else []  # lossless: the same pixels
    ok, data = cv2.imencode(fmt, pixels, params)
    assert ok
    status, _, answer = post_image(server, data.tobytes(), ctype=f"image/{fmt[1:]}")
    assert status == 200, answer
    np.testing.assert_allclose(keypoints_of(answer)[0], reference(pixels)[0].keypoints, atol=2e-3)


def test_multipart_with_boxes_and_thresholds(server, reference, model_dir):
    boxes = [[277.1, 45.7, 225.1, 333.6, 0.99], [10, 10, 100, 200, 0.2]]
    tmp_before = set((model_dir / "tmp").iterdir())  # what the server's start-up left there (e.g. the auto export)
    body, ctype = multipart({"image": ("me.jpg", PHOTO.read_bytes()), "boxes": (None, json.dumps(boxes).encode()),
                             "det_thr": (None, b"0.5"), "kpt_thr": (None, b"0.05")})  # fmt: skip
    status, _, raw = request(server, "POST", "/v1/pose", body, {"Content-Type": ctype})
    answer = json.loads(raw)
    assert status == 200, answer
    assert answer["image"]["file"] == "me.jpg" and answer["people"][0]["image_id"] == "me"
    (person,) = answer["people"]  # the 0.2 box is under det_thr
    want = reference(cv2.imread(str(PHOTO)), boxes=boxes[:1])[0].keypoints.astype(np.float64)
    got = keypoints_of(answer)[0]
    low = want[:, 2] < 0.05
    assert low.any() and not low.all(), "the test needs joints on both sides of kpt_thr"
    assert (got[low] == 0).all()  # answered as COCO's "not found"
    np.testing.assert_allclose(got[~low], want[~low], atol=2e-3)
    np.testing.assert_allclose(person["bbox"], boxes[0][:4], atol=1e-3)
    # nothing the client sent was spooled to disk (Starlette's form parser would write to TMPDIR)
    assert set((model_dir / "tmp").iterdir()) == tmp_before


@pytest.mark.parametrize(
    ("data", "words"),
    [(PHOTO.read_bytes()[:2000] + bytes(range(256)) * 4, "the JPEG file is truncated"),  # cut, then garbage
     (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "cannot decode the image")],  # a PNG signature, then garbage
)  # fmt: skip
def test_cli_and_api_give_the_same_message_for_a_corrupt_image(server, tmp_path, capsys, model_dir, data, words):
    status, _, answer = post_image(server, data, "?filename=broken.jpg")
    assert status == 422 and answer["field"] == "image"
    (tmp_path / "broken.jpg").write_bytes(data)
    rc = main(["predict", "--cfg", str(model_dir / "tiny.yaml"), "--weights", str(model_dir / "tiny.safetensors"),
               "--detector", "whole", "--device", "cpu", "--out", str(tmp_path / "out"),
               str(tmp_path / "broken.jpg")])  # fmt: skip
    assert rc == 1
    captured = capsys.readouterr()  # (tqdm.write prints per-image errors to stdout)
    line = next(ln for ln in (captured.out + captured.err).splitlines() if ln.startswith("error: "))
    cli_reason = line.split("broken.jpg: ", 1)[1]
    assert answer["detail"] == f"broken.jpg: {cli_reason}"
    assert words in answer["detail"]


def test_bad_bytes_and_empty_bodies(server):
    status, _, answer = post_image(server, os.urandom(5000))
    assert status == 415 and "JPEG, PNG or WebP" in answer["detail"]
    ok, bmp = cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))
    status, _, answer = post_image(server, bmp.tobytes())
    assert status == 415 and answer["detail"].startswith("upload: a BMP file")
    status, _, answer = post_image(server, b"")
    assert status == 400 and "no image" in answer["detail"]
    body, ctype = multipart({"boxes": (None, b"[]")})
    status, _, raw = request(server, "POST", "/v1/pose", body, {"Content-Type": ctype})
    assert status == 400 and json.loads(raw)["field"] == "image"


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [("?boxes=%5B%5B1%2C2%2C3", "boxes", "not valid JSON"),
     ("?boxes=%7B%22x%22%3A1%7D", "boxes", "got a JSON dict"),
     ("?boxes=%5B%5B1%2C2%2C3%5D%5D", "boxes", "boxes[0]: [1, 2, 3] is not [x, y, w, h]"),
     ("?boxes=%5B%5B1%2C2%2CNaN%2C4%5D%5D", "boxes", "finite numbers"),
     ("?det_thr=1.5", "det_thr", "expected a number from 0 to 1, got '1.5'"),
     ("?kpt_thr=abc", "kpt_thr", "expected a number from 0 to 1, got 'abc'")],
)  # fmt: skip
def test_bad_fields_get_422_naming_the_field(server, query, field, words):
    status, _, answer = post_image(server, PHOTO.read_bytes(), query)
    assert status == 422 and answer["field"] == field, answer
    assert answer["detail"].startswith(f"{field}") and words in answer["detail"]


def test_oversized_body_is_refused_by_content_length_before_it_is_read(server):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    t0 = time.perf_counter()
    conn.putrequest("POST", "/v1/pose")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(500 * 2**20))  # 500 MiB announced, 1 KiB sent
    conn.endheaders()
    conn.send(b"\xff\xd8" + b"\0" * 1022)
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    assert r.status == 413 and "500.0 MiB, over the server's limit of 1 MiB" in answer["detail"]
    assert time.perf_counter() - t0 < 5  # answered without waiting for the 500 MiB


def test_oversized_chunked_body_is_cut_off_by_the_streaming_cap(server):
    conn = http.client.HTTPConnection(HOST, server.port, timeout=10)
    conn.putrequest("POST", "/v1/pose")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    chunk = b"\xff" * 65536
    try:
        for _ in range(64):  # up to 4 MiB, no Content-Length: only the streaming cap can stop it
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    r = conn.getresponse()
    answer = json.loads(r.read())
    conn.close()
    assert r.status == 413 and "passed the server's limit of 1 MiB" in answer["detail"]


def huge_png(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (its pixel data is cut short)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\0" * 1000


def test_huge_pixel_header_is_refused_before_decoding(server):
    rss = server.rss_kib()
    status, _, answer = post_image(server, huge_png(30000, 30000), ctype="image/png")
    assert status == 413 and answer["field"] == "image"
    assert "30000 x 30000 = 900 million pixels, over the limit of 4 million" in answer["detail"]
    assert server.rss_kib() - rss < 50 * 1024  # 2.7 GB would have been allocated by decoding it


def test_models_healthz_openapi_and_no_cdn(server):
    status, _, raw = request(server, "GET", "/v1/models")
    info = json.loads(raw)["models"][0]
    assert status == 200 and info["name"] == "tiny" and info["joint_names"] == list(COCO.joint_names)
    assert [tuple(p) for p in info["skeleton"]] == list(COCO.skeleton) and info["detector"] == "whole"
    assert info["limits"]["max_body_bytes"] == 2**20 and info["limits"]["max_image_pixels"] == 4_000_000
    status, _, raw = request(server, "GET", "/healthz")
    assert status == 200 and json.loads(raw)["status"] == "ok"
    status, _, raw = request(server, "GET", "/openapi.json")
    spec = json.loads(raw)
    assert status == 200 and {"/v1/pose", "/v1/models", "/healthz"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/pose"]["post"]["requestBody"]["content"]
    assert request(server, "GET", "/docs")[0] == 404  # Swagger UI would load from a CDN: switched off
    for path in ("/", "/static/app.js", "/static/style.css"):
        status, headers, page = request(server, "GET", path)
        assert status == 200 and b"http://" not in page and b"https://" not in page, path
        assert "default-src 'self'" in headers["content-security-policy"]
    assert request(server, "GET", "/static/../app.py")[0] == 404


def test_concurrent_load_latency_and_bounded_memory(server, reference):
    photos = [p.read_bytes() for p in PHOTOS]
    want = [reference(cv2.imread(str(p)))[0].keypoints for p in PHOTOS]

    def one(i: int) -> tuple[int, float, np.ndarray]:
        t0 = time.perf_counter()
        status, _, answer = post_image(server, photos[i % len(photos)])
        return status, time.perf_counter() - t0, keypoints_of(answer)[0] if status == 200 else None

    def load(n: int) -> list[tuple[int, float, np.ndarray]]:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))

    load(8)  # warm-up (allocator pools, first-call costs)
    rss0 = server.rss_kib()
    t0 = time.perf_counter()
    results = load(48)
    wall = time.perf_counter() - t0
    rss1 = server.rss_kib()
    load(48)
    rss2 = server.rss_kib()
    lat = np.array([r[1] for r in results]) * 1000
    print(f"\nserve load: 48 requests, 8 clients, {wall:.2f} s ({48 / wall:.1f} req/s), latency p50 "
          f"{np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms; RSS {rss0 // 1024} -> "
          f"{rss1 // 1024} -> {rss2 // 1024} MiB")  # fmt: skip
    assert [r[0] for r in results] == [200] * 48
    for i, (_, _, got) in enumerate(results):  # batching does not change any answer
        np.testing.assert_allclose(got, want[i % len(photos)], atol=2e-3)
    assert wall < 60
    assert rss1 - rss0 < 64 * 1024 and rss2 - rss1 < 16 * 1024, (rss0, rss1, rss2)


def test_tiny_queue_and_slow_model_give_clean_503s_and_504s(model_dir):
    # one request runs (2.5 s of test delay + the model), two wait; the first waiter's answer would come after
    # 5 s > the 4 s timeout whatever the load (the delays alone add up to 5 s), while the running request has
    # 1.5 s for the model itself, however busy the machine. The server is warmed up first (its first
    # request builds the backend), and the burst is released at once from 12 ready threads, so all of it
    # arrives while the first request is still running (2.5 s): the rest are refused with 503 at once.
    delay_s, timeout_s = 2.5, 4.0
    slow = Server(model_dir, "--queue-size", "2", "--max-batch", "1", "--test-delay-ms", str(int(delay_s * 1000)),
                  "--timeout", str(timeout_s))  # fmt: skip
    try:
        photo = PHOTO.read_bytes()

        def until_answered(limit_s: float) -> tuple[int, dict, dict]:
            """Post until the server answers 200 (a warm-up job that timed out still finishes, unseen)."""
            deadline = time.monotonic() + limit_s
            while True:
                got = post_image(slow, photo)
                if got[0] == 200 or time.monotonic() > deadline:
                    return got
                assert got[0] in (503, 504), got
                time.sleep(0.5)

        warm = until_answered(120)
        assert warm[0] == 200, warm
        ready = threading.Barrier(12)

        def one(_: int) -> tuple[int, dict, dict, float]:
            ready.wait(30)
            t0 = time.monotonic()
            status, headers, answer = post_image(slow, photo)
            return status, headers, answer, time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(one, range(12)))
        statuses = sorted(r[0] for r in results)
        print(f"\nburst of 12 at a queue of 2: {statuses}")
        assert set(statuses) <= {200, 503, 504}, statuses
        assert statuses.count(200) >= 1 and statuses.count(504) >= 1
        # admitted at most: queue 2 + batch 1 + 2 (reading); the rest are refused at once
        assert statuses.count(503) >= 12 - 5
        for status, headers, answer, seconds in results:
            if status == 503:
                assert headers["retry-after"] == "1" and "busy" in answer["detail"] and answer["version"] == 1
            if status == 504:
                assert "timeout" in answer["detail"]
                assert seconds >= timeout_s - 0.1, f"a 504 after {seconds:.2f} s, before the {timeout_s} s timeout"
            if status == 200:
                assert seconds >= delay_s  # the model (slowed down by the test delay) did run
        # the timed-out jobs finish or are skipped; then the server answers again
        final = until_answered(30)
        assert final[0] == 200, final
    finally:
        slow.stop()


def test_default_zoo_model_served_by_the_command_with_no_model_argument(world, monkeypatch):  # noqa: F811
    """`hrpose serve` with no model argument serves the zoo's default model and detector (test_zoo_predict's
    offline cache: a tiny model under the default's name, a test ONNX detector), over real HTTP in-process
    (the registry patch lives in this process); uvicorn.run is wrapped only to keep a handle to stop it."""
    import threading

    import uvicorn

    servers: list[uvicorn.Server] = []

    def run_keeping_a_handle(app, **kwargs):
        server = uvicorn.Server(uvicorn.Config(app, **kwargs))
        servers.append(server)
        server.run()

    monkeypatch.setattr(uvicorn, "run", run_keeping_a_handle)
    port = free_port()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(main(["serve", "--port", str(port), "--device", "cpu"])))
    thread.start()
    here = type("S", (), {"port": port})()
    try:
        deadline = time.monotonic() + 60
        while not (servers and servers[0].started):
            assert thread.is_alive() and time.monotonic() < deadline, "hrpose serve did not start"
            time.sleep(0.1)
        photo = world["photo"].read_bytes()
        status, _, answer = post_image(here, photo, "?filename=photo.png", ctype="image/png")
        assert status == 200, answer
        assert answer["model"] == "hrnet-w32-coco-256x192" and len(answer["people"]) == 3  # the test detector's 3
        status, _, raw = request(here, "GET", "/v1/models")
        assert json.loads(raw)["models"][0]["detector"] == "auto"
        # exactly what `hrpose predict photo.png` writes for the same photo (the same cache)
        assert main(["predict", "photo.png", "--out", "pred"]) == 0
        assert answer["people"] == json.loads((world["home"].parent / "pred" / "photo.json").read_text())
    finally:
        if servers:
            servers[0].should_exit = True
        thread.join(30)
    assert codes == [0]
