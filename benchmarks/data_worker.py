"""One data worker's samples/s with the w32 training augmentation on real COCO images: hrpose's PoseDataset
against the official JointsDataset/COCODataset (``benchmarks/official_dataset.py``), in one process, in
interleaved rounds.

    python -m benchmarks.data_worker [--rounds 7] [--data ../shared/data/coco-mini] [--json FILE]

Rows: ``official`` (the baseline), ``exact`` (the default: normalised float input and targets, the same
values as before), ``exact (cv2 decode)`` (the same with cv2.imdecode instead of simplejpeg, to show what
the decoder pays), ``device`` (HRPOSE.DEVICE_INPUT: uint8 crop + joints; normalisation and targets are made
on the trainer's device), ``device+reduced`` (HRPOSE.REDUCED_DECODE, opt-in, changes pixels),
``exact+grouped`` / ``device+grouped`` (HRPOSE.GROUP_BY_IMAGE: the records in the image-grouped order of
`ImageGroupedSampler`, each image decoded once for its people; the same samples). Each round runs every
row over all records in one shuffled order (the grouped rows: that round's grouped order); the table gives
the median samples/s and the min-max over rounds, and each row's ratio to the official row of the same
round (median, min-max).
Samples/s are per CPU second of the process (``time.process_time``: what one worker costs, steady when
other jobs share the cores) and, in the last column, per wall-clock second.
One thread for OpenCV and torch (one worker's share of a host). Also printed: the reduced decoding's pixel
difference against full-size decoding for the same samples (uint8 crops, grey levels).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W32 = ROOT / "experiments" / "coco" / "hrnet" / "w32_256x192_adam_lr1e-3.yaml"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def build(data: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from hrpose.config import load_config
    from hrpose.data import build_dataset

    opts = ["DATASET.ROOT", str(data), "DATASET.TEST_SET", "train2017", "HRPOSE.SEED", "0"]
    for k, v in overrides.items():
        opts += [k, str(v)]
    return build_dataset(load_config(str(W32), opts), "train", True)


def pixel_difference(full, reduced, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Grey-level difference of the reduced-decoding crops against full-size decoding, same samples."""
    import numpy as np

    diffs = []
    for i in range(n):
        a = full[i][0].numpy().astype(np.int16)
        b = reduced[i][0].numpy().astype(np.int16)
        diffs.append(np.abs(a - b).ravel())
    d = np.concatenate(diffs)
    return {"mean_abs": float(d.mean()), "p99_abs": float(np.percentile(d, 99)), "max_abs": float(d.max()),
            "share_over_8": float((d > 8).mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "coco-mini"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--limit", type=int, default=0, help="records per round (0 = all)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from benchmarks.official_dataset import OfficialJointsDataset

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    data = Path(args.data)
    if not (data / "annotations").is_dir():
        print(f"error: {data} has no annotations/ folder; pass --data with a COCO-layout folder (coco-mini)")
        return 2
    exact = build(data)
    device = build(data, **{"HRPOSE.DEVICE_INPUT": True})
    reduced = build(data, **{"HRPOSE.DEVICE_INPUT": True, "HRPOSE.REDUCED_DECODE": True})
    d = exact.aug
    official = OfficialJointsDataset(exact.records, exact.meta.flip_pairs, exact.meta.upper_body_ids,
                                     image_size=exact.input_size_wh, heatmap_size=(48, 64), sigma=2,
                                     scale_factor=d.scale_factor, rotation_factor=d.rotation_factor, flip=d.flip,
                                     prob_half_body=d.prob_half_body, num_joints_half_body=d.num_joints_half_body,
                                     color_rgb=exact.color_rgb)  # fmt: skip
    import hrpose.images as images
    from hrpose.data.grouped import ImageGroupedSampler

    grouped_exact = build(data, **{"HRPOSE.GROUP_BY_IMAGE": True})
    grouped_device = build(data, **{"HRPOSE.GROUP_BY_IMAGE": True, "HRPOSE.DEVICE_INPUT": True})
    rows = {"official": official, "exact": exact, "exact (cv2 decode)": exact, "device": device,
            "device+reduced": reduced, "exact+grouped": grouped_exact, "device+grouped": grouped_device}  # fmt: skip
    grouped = {"exact+grouped", "device+grouped"}
    cv2_only = {"exact (cv2 decode)"}  # the decoder simplejpeg replaces, for the same samples
    turbo = images._SIMPLEJPEG
    n = len(exact) if args.limit <= 0 else min(args.limit, len(exact))
    sampler = ImageGroupedSampler([r.image for r in exact.records[:n]], seed=0)
    rng = np.random.default_rng(0)
    np.random.seed(0)
    for ds in rows.values():  # warm-up: file cache, imports
        for i in range(min(n, 8)):
            ds[i]
    rates: dict[str, list[float]] = {k: [] for k in rows}  # per CPU second of this process
    walls: dict[str, list[float]] = {k: [] for k in rows}  # per wall-clock second
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        order = rng.permutation(n).tolist()
        sampler.set_epoch(r)
        grouped_order = sampler.order()  # images shuffled, each image's people in a row
        names = list(rows)
        if r % 2:
            names.reverse()  # alternate who goes first
        for name in names:
            ds = rows[name]
            if hasattr(ds, "set_epoch"):
                ds.set_epoch(r)
            images._SIMPLEJPEG = None if name in cv2_only else turbo
            todo = grouped_order if name in grouped else order
            t0, c0 = time.perf_counter(), time.process_time()
            for i in todo:
                ds[i]
            walls[name].append(n / (time.perf_counter() - t0))
            rates[name].append(n / (time.process_time() - c0))
        images._SIMPLEJPEG = turbo
    # the decoder alone, interleaved: every coco-mini image through read_image with cv2.imdecode / simplejpeg
    paths = sorted({r.image for r in exact.records[:n]})
    decode_ms: dict[str, list[float]] = {"cv2": [], "simplejpeg": []}
    for r in range(args.rounds if turbo is not None else 0):
        for name in ("cv2", "simplejpeg") if r % 2 else ("simplejpeg", "cv2"):
            images._SIMPLEJPEG = turbo if name == "simplejpeg" else None
            c0 = time.process_time()
            for _ in range(3):
                for path in paths:
                    images.read_image(path)
            decode_ms[name].append(1e3 * (time.process_time() - c0) / (3 * len(paths)))
    images._SIMPLEJPEG = turbo
    load1 = os.getloadavg()[0]
    ratios = {k: [a / b for a, b in zip(v, rates["official"])] for k, v in rates.items()}
    device.set_epoch(0)
    reduced.set_epoch(0)
    diff = pixel_difference(device, reduced, n)
    machine = (f"{_cpu_name()}; {os.cpu_count()} logical cores; Python {platform.python_version()}, "
               f"torch {torch.__version__}, OpenCV {cv2.__version__}; one thread; load average {load0:.1f} at "
               f"start, {load1:.1f} at end")  # fmt: skip
    print(f"Machine: {machine}")
    print(f"JPEG decoder: {'simplejpeg ' + str(getattr(turbo, '__version__', '')) if turbo else 'cv2.imdecode'}; "
          f"grouped rows: {len(sampler.groups)} images")  # fmt: skip
    print(f"Data: {data} ({n} person records, w32 256x192 training augmentation, {args.rounds} interleaved rounds)")
    print()
    print("| row | samples/s per CPU second (median) | min - max | vs official (median) | min - max | "
          "samples/s wall (median) |")
    print("|---|---|---|---|---|---|")
    for k in rows:
        v, q = rates[k], ratios[k]
        print(f"| {k} | {statistics.median(v):.1f} | {min(v):.1f} - {max(v):.1f} | {statistics.median(q):.2f}x | "
              f"{min(q):.2f} - {max(q):.2f} | {statistics.median(walls[k]):.1f} |")  # fmt: skip
    print()
    print(f"reduced decoding vs full-size decoding (uint8 crops, same samples): mean |diff| {diff['mean_abs']:.2f} "
          f"grey levels, 99th percentile {diff['p99_abs']:.0f}, max {diff['max_abs']:.0f}, "
          f"{100 * diff['share_over_8']:.2f}% of values differ by more than 8")  # fmt: skip
    if decode_ms["cv2"]:
        q = [a / b for a, b in zip(decode_ms["cv2"], decode_ms["simplejpeg"])]
        m_cv2, m_sj = statistics.median(decode_ms["cv2"]), statistics.median(decode_ms["simplejpeg"])
        print(f"read_image per image (CPU ms, median over rounds): cv2.imdecode {m_cv2:.2f}, simplejpeg {m_sj:.2f}; "
              f"cv2 / simplejpeg {statistics.median(q):.2f}x (min {min(q):.2f}, max {max(q):.2f})")  # fmt: skip
    if args.json:
        out = {"machine": machine, "records": n, "rounds": args.rounds, "samples_per_cpu_s": rates,
               "samples_per_wall_s": walls, "ratios": ratios, "reduced_pixel_difference": diff,
               "read_image_cpu_ms": decode_ms}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
