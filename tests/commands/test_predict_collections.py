"""`hrpose predict` over collections: CSV/Parquet tables, --shard / torchrun with a merge, --resume after a killed
shard, --max-people, a full disk, bad --shard, and the user-facing --help. Real files and real processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
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
from hrpose.cli import main

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))
SAMPLES = DATA / "samples" / "coco"
DETS = SAMPLES / "test_coco_det_AP_H_56.json"
COCO_JOINTS = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
               "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
               "right_knee", "left_ankle", "right_ankle"]  # fmt: skip


def predict(tiny_files, *args):
    cfg, weights, _ = tiny_files
    return main(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", *map(str, args)])


def cli(tiny_files, *args: str, torchrun: int = 0, env: dict | None = None) -> subprocess.Popen:
    cfg, weights, _ = tiny_files
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    launcher = [sys.executable, "-m", "hrpose.cli"]
    if torchrun:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(torchrun),
                    "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "hrpose.cli"]  # fmt: skip
    cmd = [*launcher, "predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", "--no-flip", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """12 real COCO photos and a 12-frame clip of real photos in one folder."""
    d = tmp_path_factory.mktemp("collection")
    for f in IMAGES[:12]:
        shutil.copy(f, d / f.name)
    writer = cv2.VideoWriter(str(d / "clip.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10, (160, 120))
    for f in IMAGES[20:32]:
        writer.write(cv2.resize(cv2.imread(str(f)), (160, 120)))
    writer.release()
    return d


def test_csv_and_parquet_tables_match_the_json(tiny_files, tmp_path):
    import pyarrow.parquet as pq

    out = tmp_path / "o"
    rc = predict(tiny_files, SAMPLES, "--detector", f"file:{DETS}", "--det-thr", "0.9", "--format", "json,csv,parquet",
                 "--out", out, "--no-draw")  # fmt: skip
    assert rc == 0
    people = json.loads((out / "results.json").read_text())
    with (out / "results.csv").open(newline="") as f:
        table = list(csv.DictReader(f))
    header = list(table[0].keys())
    expected = ["source", "image_id", "frame", "time", "track_id", "person", "box_x", "box_y", "box_w", "box_h",
                "box_score", "score"] + [f"{j}_{c}" for j in COCO_JOINTS for c in ("x", "y", "score")]  # fmt: skip
    assert header == expected
    assert len(table) == len(people) > 0
    for row, person in zip(table, people):
        assert row["source"] == person["image_file"] and row["image_id"] == str(person["image_id"])
        assert row["frame"] == row["time"] == row["track_id"] == ""  # images: no frame
        assert [float(row[c]) for c in ("box_x", "box_y", "box_w", "box_h")] == person["bbox"]
        assert float(row["score"]) == person["score"]
        assert float(row["left_ankle_x"]) == person["keypoints"][15 * 3]
        assert float(row["right_ankle_score"]) == person["keypoints"][16 * 3 + 2]
    pt = pq.read_table(out / "results.parquet")
    assert pt.column_names == expected and pt.num_rows == len(people)
    assert pt.column("nose_y").to_pylist() == [p["keypoints"][1] for p in people]


def test_video_rows_have_frame_time_and_track(tiny_files, collection, tmp_path):
    out = tmp_path / "o"
    assert predict(tiny_files, collection / "clip.mp4", "--detector", "whole", "--track", "--format", "csv",
                   "--out", out, "--no-draw") == 0  # fmt: skip
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["frame"]) for r in rows] == list(range(12))
    assert float(rows[3]["time"]) == pytest.approx(0.3)
    assert {r["track_id"] for r in rows} == {"0"}
    assert {r["box_w"] for r in rows} == {"160.0"}


def test_bad_format_and_shard_one_error_line(tiny_files, tmp_path, capsys):
    image = SAMPLES / "000000000785.jpg"
    for args, words in [(("--format", "json,xlsx"), "unknown format 'xlsx'"), (("--shard", "2/2"), "0..1"),
                        (("--shard", "one/2"), "expected I/N"), (("--shard", "0/0"), "N >= 1"),
                        (("--max-people", "-1"), "--max-people -1")]:  # fmt: skip
        assert predict(tiny_files, image, "--detector", "whole", "--out", tmp_path / "o", *args) == 2
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("error:")]
        assert len(lines) == 1 and words in lines[0], err


def read_outputs(out: Path) -> tuple[str, str]:
    return (out / "results.json").read_text(), (out / "results.csv").read_text()


@pytest.fixture(scope="module")
def one_process(tiny_files, collection, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "o"
    p = cli(tiny_files, collection, "--detector", "whole", "--format", "json,csv", "--out", out)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return out


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_same_results_as_one_process(tiny_files, collection, one_process, tmp_path):
    out = tmp_path / "o"
    p = cli(tiny_files, collection, "--detector", "whole", "--format", "json,csv", "--out", out, torchrun=2)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert read_outputs(out) == read_outputs(one_process)
    # each rank did its own share: 13 items, rank 0 items 0, 2, ..., rank 1 items 1, 3, ...
    for rank in (0, 1):
        items = json.loads((out / ".hrpose" / f"shard-{rank}-of-2.json").read_text())["items"]
        assert [it["k"] for it in items] == list(range(rank, 13, 2)) and all(it["done"] for it in items)
    # the per-item outputs are those of one process
    for f in sorted(one_process.glob("*.json*")):
        assert (out / f.name).read_text() == f.read_text(), f.name


@pytest.mark.slow
def test_killed_shard_resumed_loses_nothing(tiny_files, collection, one_process, tmp_path):
    out = tmp_path / "o"
    common = [collection, "--detector", "whole", "--format", "json,csv", "--out", out]
    p0 = cli(tiny_files, *common, "--shard", "0/2")
    _, err0 = p0.communicate(timeout=300)
    assert p0.returncode == 0, err0
    assert "shard-0-of-2 done" in err0 and not (out / "results.json").exists()  # shard 1 has not run
    # shard 1 killed (SIGKILL: no clean-up at all) once it has finished some of its items
    p1 = cli(tiny_files, *common, "--shard", "1/2", "--batch-size", "1")
    done = out / ".hrpose" / "done"
    mine = {f.stem for f in sorted(collection.glob("*.jpg"))[1::2]}  # items 1, 3, ..., 11 (clip.mp4 is item 12)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p1.poll() is None:
        if done.is_dir() and any(f.name in mine for f in done.iterdir()):
            break
        time.sleep(0.005)
    p1.send_signal(signal.SIGKILL)
    p1.communicate(timeout=60)
    finished = {f.name for f in done.iterdir()} & mine
    assert 0 < len(finished) < len(mine), f"shard 1 finished {len(finished)} of {len(mine)} items before the kill"
    assert not (out / "results.json").exists()
    # resumed: the done items are skipped, the rest done, and this last shard merges
    p1 = cli(tiny_files, *common, "--shard", "1/2", "--resume")
    _, err1 = p1.communicate(timeout=300)
    assert p1.returncode == 0, err1
    assert f"--resume: {len(finished)} of {len(mine)} inputs already done" in err1
    assert read_outputs(out) == read_outputs(one_process)


def test_merge_before_all_shards_finished_is_one_error(tiny_files, collection, tmp_path, capsys):
    out = tmp_path / "o"
    assert predict(tiny_files, collection, "--detector", "whole", "--out", out, "--shard", "1/3", "--no-draw") == 0
    capsys.readouterr()
    assert predict(tiny_files, "--merge", "--out", out) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "shards 0, 2 of 3 have not finished" in lines[0], err


def test_max_people_caps_100k_boxes_quickly(tiny_files, tmp_path, capsys):
    rng = np.random.default_rng(0)
    image = SAMPLES / "000000000785.jpg"
    h, w = cv2.imread(str(image)).shape[:2]
    n = 100_000
    xy = rng.uniform(0, [w - 40, h - 60], (n, 2))
    scores = rng.uniform(0.05, 1.0, n)
    dets = [{"image_id": 785, "category_id": 1, "bbox": [float(x), float(y), 30.0, 50.0], "score": float(s)}
            for (x, y), s in zip(xy, scores)]  # fmt: skip
    det_file = tmp_path / "dets.json"
    det_file.write_text(json.dumps(dets))
    t0 = time.perf_counter()
    rc = predict(tiny_files, image, "--detector", f"file:{det_file}", "--out", tmp_path / "o", "--no-draw")
    seconds = time.perf_counter() - t0
    assert rc == 0
    assert seconds < 60, f"{seconds:.1f} s for one image"
    people = json.loads((tmp_path / "o" / "000000000785.json").read_text())
    assert len(people) == 100
    top = np.sort(np.float32(scores))[::-1][:100]
    assert sorted((p["box_score"] for p in people), reverse=True) == pytest.approx(top.tolist(), abs=1e-6)
    err = capsys.readouterr()
    assert "99900 people over --max-people 100 dropped" in err.out + err.err
    # --max-people 0: no cap
    assert predict(tiny_files, image, "--detector", f"file:{DETS}", "--out", tmp_path / "p", "--no-draw",
                   "--max-people", "2") == 0  # fmt: skip
    assert len(json.loads((tmp_path / "p" / "000000000785.json").read_text())) == 2


def test_full_disk_one_error_line(tiny_files, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        p = cli(tiny_files, *IMAGES[:6], "--detector", "whole", "--out", mnt / "o")
        out, err = p.communicate(timeout=120)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
    assert p.returncode == 1, err  # what was done is kept; the run stopped at the failed write
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "the disk is full" in lines[0] and str(mnt / "o") in lines[0], err
    assert "Traceback" not in err


def test_help_is_for_users(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "argparse" not in text and "subcommand's module" not in text
    assert "hrpose predict photo.jpg" in text
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    for words in ("rtsp://", "--max-people", "--shard I/N", "--det-every N", "--format LIST", "Examples:"):
        assert words in text, words
