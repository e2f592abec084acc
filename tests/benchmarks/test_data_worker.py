"""benchmarks/data_worker.py runs on coco-mini and reports every row, ratio and measurement it promises."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import DATA, ROOT

ROWS = {"official", "exact", "exact (cv2 decode)", "device", "device+reduced", "exact+grouped", "device+grouped"}


@pytest.mark.slow  # ~20 s: 7 datasets over coco-mini twice
def test_data_worker_reports_every_row_the_grouped_rows_and_the_decoder_line(tmp_path):
    out = tmp_path / "dw.json"
    cmd = [sys.executable, "-m", "benchmarks.data_worker", "--rounds", "2", "--data", str(DATA / "coco-mini"),
           "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Machine:" in proc.stdout and "grouped rows: 28 images" in proc.stdout
    assert "read_image per image" in proc.stdout and "reduced decoding vs full-size" in proc.stdout
    res = json.loads(out.read_text())
    assert set(res["ratios"]) == ROWS and res["records"] == 86
    assert all(len(v) == 2 and min(v) > 0 for v in res["samples_per_cpu_s"].values())
    assert res["ratios"]["official"] == [1.0, 1.0]
    assert len(res["read_image_cpu_ms"]["cv2"]) == 2 and min(res["read_image_cpu_ms"]["simplejpeg"]) > 0


def test_data_worker_names_a_folder_without_annotations(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.data_worker", "--data", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and proc.stdout.startswith(f"error: {tmp_path} has no annotations/")
