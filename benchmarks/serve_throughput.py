"""`hrpose serve` throughput: requests/s and latency at 1/4/16 concurrent clients vs `PoseEstimator` called directly.

Starts `hrpose serve` (a subprocess, 127.0.0.1, a free port) twice on the same model: with batching (the
worker collects up to `--max-batch` requests for `--batch-wait-ms` and runs them in one `predict_many`
call) and without (`--max-batch 1`). Clients are threads posting real photos (../shared/data/samples/coco,
one person box each: the whole-image detector, so the detector's cost is left out on both sides). The
direct baseline decodes the same bytes and calls the estimator in one thread, one image after another.
Prints a markdown table and the CPU line. Usage::

    OMP_NUM_THREADS=2 python benchmarks/serve_throughput.py                      # pose_hrnet_w32 256x192
    OMP_NUM_THREADS=2 python benchmarks/serve_throughput.py --requests 16 --levels 1,4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT.parent / "shared" / "data" / "samples" / "coco").glob("*.jpg"))


def cpu_line() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
            f"Python {platform.python_version()}; load average before the run: {load}")  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(port: int, data: bytes) -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", "/v1/pose", body=data, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"the server answered {r.status}")
    finally:
        conn.close()
    return time.perf_counter() - t0


def start_server(args: argparse.Namespace, max_batch: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [sys.executable, "-m", "hrpose.cli", "serve", "--cfg", args.cfg, "--detector", "whole", "--device", "cpu",
           "--port", str(port), "--max-batch", str(max_batch), "--queue-size", "64", "--timeout", "600"]  # fmt: skip
    cmd += ["--weights", args.weights] if args.weights else ["--random-weights"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hrpose serve exited:\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"hrpose serve did not start:\n{log.read_text()}")


def measure(port: int, photos: list[bytes], clients: int, n: int) -> tuple[float, np.ndarray]:
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda i: post(port, photos[i % len(photos)]), range(clients)))  # warm-up
        t0 = time.perf_counter()
        lat = list(pool.map(lambda i: post(port, photos[i % len(photos)]), range(n)))
        wall = time.perf_counter() - t0
    return n / wall, np.asarray(lat) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cfg", default=str(ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"))
    ap.add_argument("--weights", default=None, help="default: random weights (the same speed)")
    ap.add_argument("--requests", type=int, default=32, help="requests per measurement")
    ap.add_argument("--levels", default="1,4,16", help="concurrent clients")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    photos = [p.read_bytes() for p in PHOTOS]
    print(f"CPU: {cpu_line()}")
    print(f"model: {Path(args.cfg).name}, {'weights ' + args.weights if args.weights else 'random weights'}, "
          f"flip test, 1 person per photo ({len(photos)} COCO photos), {args.requests} requests per row")  # fmt: skip

    from hrpose.images import decode_image
    from hrpose.inference import PoseEstimator, WholeImageDetector

    est = PoseEstimator.from_config(args.cfg, args.weights, device="cpu", detector=WholeImageDetector(),
                        random_weights=args.weights is None)  # fmt: skip
    est.warn_no_person = False
    est(decode_image(photos[0]))
    lat = []
    t0 = time.perf_counter()
    for i in range(args.requests):
        t = time.perf_counter()
        est(decode_image(photos[i % len(photos)]))
        lat.append((time.perf_counter() - t) * 1000)
    direct = args.requests / (time.perf_counter() - t0)
    rows = [("PoseEstimator, direct (decode + call)", 1, direct, np.asarray(lat))]
    del est

    with tempfile.TemporaryDirectory() as tmp:
        for label, max_batch in (("hrpose serve, batching (max 8, 5 ms)", 8), ("hrpose serve, no batching", 1)):
            proc, port = start_server(args, max_batch, Path(tmp) / f"serve{max_batch}.log")
            try:
                for clients in levels:
                    rate, lat_ms = measure(port, photos, clients, args.requests)
                    rows.append((label, clients, rate, lat_ms))
                    print(f"  {label}, {clients} clients: {rate:.2f} req/s", flush=True)
            finally:
                proc.terminate()
                proc.wait(20)

    print("\n| how | clients | requests/s | vs direct | latency p50 ms | latency p95 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, clients, rate, lat_ms in rows:
        print(f"| {label} | {clients} | {rate:.2f} | {rate / direct:.2f}x | {np.percentile(lat_ms, 50):.0f} | "
              f"{np.percentile(lat_ms, 95):.0f} |")  # fmt: skip
    print(f"\nload average after the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
