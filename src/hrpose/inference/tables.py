"""Pose results as tables: one row per person per image or video frame, for spreadsheets and pandas.

`hrpose predict --format json,csv[,parquet]` writes `results.csv` (and `results.parquet` when pyarrow is
installed) beside the JSON. The columns, in order (`columns(joint_names)`):

    source       the input file, URL or `-` (stdin) the row comes from
    image_id     COCO image id of an image (its stem, as an integer when all digits); the frame index for video
    frame        0-based frame index in a video/stream; empty for an image
    time         seconds from the start of the video/stream (frame / fps; stream: wall clock); empty for images
    track_id     identity across frames (--track, --smooth, --det-every); empty otherwise
    person       0-based index of the person in its image/frame
    box_x, box_y, box_w, box_h   person box in image pixels (x, y = top-left corner)
    box_score    the detector's score of the box
    score        the person's pose score (mean confident joint score x box score)
    <joint>_x, <joint>_y, <joint>_score   for every joint of the model, in the model's joint order
                 (COCO: nose, left_eye, right_eye, ..., right_ankle); pixels of the original image

Numbers are written with at most 3 decimals (pixels) or 6 (scores), as the JSON; an empty cell is a
missing value. A person whose values are not finite is never written (predict skips that image).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FIXED_COLUMNS = ("source", "image_id", "frame", "time", "track_id", "person",
                 "box_x", "box_y", "box_w", "box_h", "box_score", "score")  # fmt: skip
FORMATS = ("json", "csv", "parquet")


class TableFormatError(ValueError):
    """A bad --format value."""


def parse_formats(spec: str) -> tuple[str, ...]:
    """'json,csv' -> ('json', 'csv'); json is always written (the per-image files and results.json)."""
    names = [s.strip().lower() for s in str(spec).split(",") if s.strip()]
    if not names:
        raise TableFormatError("--format: give one or more of json, csv, parquet separated by commas (e.g. json,csv)")
    for n in names:
        if n not in FORMATS:
            raise TableFormatError(f"--format: unknown format {n!r}; expected json, csv or parquet (e.g. json,csv)")
    if "parquet" in names:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise TableFormatError(
                "--format parquet needs pyarrow, which is not installed: pip install pyarrow (or drop parquet)"
            ) from None
    out = ["json", *[n for n in names if n != "json"]]
    return tuple(dict.fromkeys(out))


def columns(joint_names: Sequence[str]) -> list[str]:
    cols = list(FIXED_COLUMNS)
    for j in joint_names:
        cols += [f"{j}_x", f"{j}_y", f"{j}_score"]
    return cols


def rows_of(people: Sequence[dict[str, Any]], source: str, *, frame: int | None = None,
            time: float | None = None) -> list[list[Any]]:  # fmt: skip
    """COCO person results of one image/frame (`to_coco` dicts) -> table rows (see the module docstring)."""
    out = []
    for i, p in enumerate(people):
        bbox = p["bbox"]
        row: list[Any] = [source, p.get("image_id"), frame, time, p.get("track_id"), i,
                          bbox[0], bbox[1], bbox[2], bbox[3], p.get("box_score"), p.get("score")]  # fmt: skip
        row.extend(p["keypoints"])
        out.append(row)
    return out


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"a non-finite value {v} in a table row")
    return v


class CsvTable:
    """A CSV file written row by row under a temporary name until `close()`, unbuffered: a write that fails (a
    full disk) leaves the rows written before it whole (`hrpose.outdir.RecordFile`), and `close()` keeps them.
    `undo()` removes the rows of the last `write`."""

    def __init__(self, path: Path, joint_names: Sequence[str]) -> None:
        from hrpose.user_files import RecordFile

        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.cols = columns(joint_names)
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        self._f: RecordFile | None = RecordFile(fd, self.tmp)
        self.rows = 0
        self._last = 0
        try:
            self._f.write(self._text([self.cols]))
        except OSError:
            self._f.close()
            self._f = None
            self.tmp.unlink(missing_ok=True)
            raise

    @staticmethod
    def _text(rows: Iterable[Sequence[Any]]) -> str:
        buf = io.StringIO(newline="")
        csv.writer(buf).writerows(rows)
        return buf.getvalue()

    def write(self, rows: Iterable[Sequence[Any]]) -> None:
        assert self._f is not None
        cells = []
        for r in rows:
            if len(r) != len(self.cols):
                raise ValueError(f"{self.path}: a row of {len(r)} values for {len(self.cols)} columns")
            cells.append([_cell(v) for v in r])
        self._f.write(self._text(cells))
        self.rows += len(cells)
        self._last = len(cells)

    def undo(self) -> None:
        """Remove the rows of the last `write` (their item's other outputs could not be written)."""
        assert self._f is not None
        self._f.undo()
        self.rows -= self._last
        self._last = 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
            os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Close and remove the temporary file: an existing file at `path` is left as it was."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self.tmp.unlink(missing_ok=True)


def write_csv(path: Path, joint_names: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """All rows at once: `path` is replaced only when every row was written (a full disk leaves it as it was)."""
    t = CsvTable(path, joint_names)
    try:
        t.write(rows)
    except BaseException:
        t.discard()
        raise
    t.close()
    return t.rows


def write_parquet(path: Path, joint_names: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """The same columns as the CSV, typed: source string, image_id string, frame/track_id/person int64,
    the rest float64 (missing values null)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = columns(joint_names)
    data: dict[str, list[Any]] = {c: [] for c in cols}
    for r in rows:
        for c, v in zip(cols, r):
            data[c].append(v)
    types: dict[str, Any] = {"source": pa.string(), "image_id": pa.string(), "frame": pa.int64(),
                             "track_id": pa.int64(), "person": pa.int64()}  # fmt: skip
    arrays = []
    for c in cols:
        t = types.get(c, pa.float64())
        vals = data[c] if c != "image_id" else [None if v is None else str(v) for v in data[c]]
        arrays.append(pa.array(vals, type=t))
    table = pa.Table.from_arrays(arrays, names=cols)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no partial file is left, an earlier results.parquet stays
        tmp.unlink(missing_ok=True)
        raise
    return len(table)


def read_csv_rows(path: Path) -> list[list[str]]:
    """The data rows of a CSV written by `CsvTable` (header dropped)."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))[1:]
