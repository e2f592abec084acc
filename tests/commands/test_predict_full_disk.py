"""`hrpose predict` on a real full file system (a small tmpfs mounted by the test; the tests run as root): per-item
JSON and drawings, CSV and Parquet tables, a drawn video with its JSON lines and CSV rows, and a shard merge.
Each run ends with one `error:` line naming the file and the full disk, no traceback, and every output already
written stays whole and consistent with the others (no torn CSV row or JSON line, no partial file left)."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import pytest

from conftest import DATA
from hrpose.cli import main

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))


def predict(tiny_files, *args):
    cfg, weights, _ = tiny_files
    return main(["predict", "--cfg", cfg, "--weights", weights, "--device", "cpu", "--no-flip", "--detector", "whole",
                 *map(str, args)])  # fmt: skip


@pytest.fixture()
def small_disk(tmp_path):
    """mount(size) -> a folder on a new tmpfs of that size; unmounted after the test. Mounting needs root: where
    it is refused the test fails and says so (a full disk cannot be faked here)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        d = tmp_path / f"disk{len(mounted)}"
        d.mkdir()
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)], capture_output=True,
                           text=True)  # fmt: skip
        if p.returncode != 0:
            pytest.fail(f"cannot mount a {size} tmpfs at {d} (these tests need root to make a real full disk): "
                        f"{p.stderr.strip() or p.returncode}")  # fmt: skip
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False)


def fill(folder: Path, leave: int = 0) -> None:
    """Write zeros into folder/filler until the file system is full, then give back `leave` bytes."""
    with (folder / "filler").open("wb", buffering=0) as f:
        chunk = b"\0" * 4096
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
        if leave:
            f.truncate(max(0, f.tell() - leave))


def one_disk_error(err: str, where: Path) -> str:
    assert "Traceback" not in err, err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    assert "the disk is full" in lines[0] and str(where) in lines[0], lines[0]
    return lines[0]


def no_partial_files(out: Path) -> None:
    left = [p.name for p in out.rglob("*") if "partial" in p.name or p.name.endswith(".tmp")]
    assert not left, left


def per_item(out: Path) -> dict[int, list[dict]]:
    """The per-image JSON files, each one whole: {image id: people}."""
    got = {}
    for p in out.glob("*.json"):
        if p.name != "results.json":
            got[int(p.stem)] = json.loads(p.read_text())
    return got


def csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows, f"{path} is empty: not even its header"
    for r in rows[1:]:
        assert len(r) == len(rows[0]), f"a torn row in {path}: {r}"
    return rows[0], rows[1:]


@pytest.mark.parametrize(("formats", "size", "draw"), [
    ("json,csv", "28k", False), ("json,csv", "32k", False), ("json,csv", "36k", False), ("json,csv", "48k", False),
    ("json,csv", "60k", False), ("json,csv", "300k", True), ("json,csv", "600k", True),
    ("json,parquet", "300k", True), ("json,parquet", "64k", False),
])  # fmt: skip
def test_images_on_a_full_disk_keep_whole_consistent_outputs(tiny_files, small_disk, capsys, formats, size, draw):
    # the sizes put the first failed write at different outputs: a drawing, an image's JSON, the CSV,
    # results.json or the Parquet file (12 images: a 4 KiB page each for the JSON, 2 pages of CSV, 3 of results.json,
    # drawings of tens of KiB)
    out = small_disk(size) / "o"
    rc = predict(tiny_files, *IMAGES[:12], "--format", formats, "--out", out, *([] if draw else ["--no-draw"]))
    err = capsys.readouterr().err
    assert rc == 1, err
    print(one_disk_error(err, out))
    no_partial_files(out)
    items = per_item(out)
    stems = {int(p.stem): p.stem for p in IMAGES[:12]}
    for image_id, people in items.items():  # each done image has its drawing, whole
        assert len(people) == 1 and people[0]["image_id"] == image_id
        drawing = out / f"{stems[image_id]}_pose.jpg"
        assert not draw or (drawing.is_file() and cv2.imread(str(drawing)) is not None)
    if (out / "results.json").exists():
        assert sorted(r["image_id"] for r in json.loads((out / "results.json").read_text())) == sorted(items)
    if "csv" in formats:  # the table holds the images that are done, each whole
        header, rows = csv_rows(out / "results.csv")
        assert header[:3] == ["source", "image_id", "frame"]
        assert sorted(int(r[1]) for r in rows) == sorted(items)
    if (out / "results.parquet").exists():
        import pyarrow.parquet as pq

        assert sorted(int(x) for x in pq.read_table(out / "results.parquet")["image_id"].to_pylist()) == sorted(items)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """30 frames of real photos, 320x240, mp4v."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (320, 240))
    for f in IMAGES[:30]:
        writer.write(cv2.resize(cv2.imread(str(f)), (320, 240)))
    writer.release()
    return path


@pytest.mark.parametrize("size", ["48k", "96k", "200k"])
def test_video_on_a_full_disk_keeps_whole_lines_rows_and_no_broken_video(tiny_files, small_disk, capsys, clip, size):
    out = small_disk(size) / "o"
    rc = predict(tiny_files, clip, "--format", "json,csv", "--out", out)
    err = capsys.readouterr().err
    assert rc == 1, err
    one_disk_error(err, out)
    no_partial_files(out)
    lines = [json.loads(x) for x in (out / "clip.jsonl").read_text().splitlines()]  # each line whole
    assert [x["frame"] for x in lines] == list(range(len(lines))) and 0 < len(lines) <= 30
    _, rows = csv_rows(out / "results.csv")
    assert sorted(int(r[2]) for r in rows) == [x["frame"] for x in lines]  # one person (whole) a frame
    video = out / "clip_pose.mp4"
    if video.exists():  # kept only when whole: every frame of the JSON lines, readable
        cap = cv2.VideoCapture(str(video))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == len(lines)


def test_video_whose_drawing_fails_alone_is_dropped_with_one_error_line(tiny_files, small_disk, capsys, clip,
                                                                       monkeypatch):  # fmt: skip
    """OpenCV's video writer reports no failed write: the written video is checked when it is closed. Here the
    disk is filled (by another program, say) after the last frame, so only the video's index cannot be
    written; every JSON line was written before."""
    from hrpose.inference import video as video_mod

    disk = small_disk("1m")
    real = video_mod.VideoWriter

    class FillingWriter(real):  # type: ignore[misc, valid-type]
        def close(self):
            fill(disk)
            super().close()

    monkeypatch.setattr(video_mod, "VideoWriter", FillingWriter)
    out = disk / "o"
    rc = predict(tiny_files, clip, "--out", out)
    err = capsys.readouterr().err
    assert rc == 1, err
    line = one_disk_error(err, out / "clip_pose.mp4")
    assert "kept" in line and "clip.jsonl (30 frames)" in line
    assert [json.loads(x)["frame"] for x in (out / "clip.jsonl").read_text().splitlines()] == list(range(30))
    assert not (out / "clip_pose.mp4").exists()
    no_partial_files(out)


def test_shard_merge_on_a_full_disk_leaves_the_outputs_as_they_were(tiny_files, small_disk, capsys, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for f in IMAGES[:8]:
        shutil.copy(f, src / f.name)
    disk = small_disk("1m")
    out = disk / "o"
    for i in (1, 0):  # the second shard to finish merges
        assert predict(tiny_files, src, "--out", out, "--shard", f"{i}/2", "--format", "json,csv", "--no-draw") == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert out / "results.json" in before and out / "results.csv" in before
    os.remove(out / "results.csv")  # the merge must write it anew: a full disk stops it
    del before[out / "results.csv"]
    fill(disk, leave=4096)  # one page: for the PID in the run's lock file
    rc = predict(tiny_files, "--merge", "--out", out, "--format", "json,csv")
    err = capsys.readouterr().err
    assert rc == 1, err
    one_disk_error(err, out)
    no_partial_files(out)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.endswith(".lock")}
    assert after == before  # results.json as the first merge wrote it, every per-item output untouched


def test_a_disk_full_before_the_run_is_one_error_line(tiny_files, small_disk, capsys):
    disk = small_disk("64k")
    fill(disk)
    rc = predict(tiny_files, IMAGES[0], "--out", disk / "o")
    err = capsys.readouterr().err
    assert rc == 2, err
    one_disk_error(err, disk / "o")
    assert not [p for p in (disk / "o").iterdir() if p.name.endswith(".json")]
