"""benchmarks/train_throughput.py runs on the CPU with a tiny config and reports every field it promises."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import DATA, ROOT

TINY = ["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]", "TRAIN.BATCH_SIZE_PER_GPU", "2"]


def _run(tmp_path, *extra):
    out = tmp_path / "tt.json"
    cmd = [sys.executable, "-m", "benchmarks.train_throughput", "--cfg",
           str(ROOT / "experiments/synthetic/w16_128x96_synth.yaml"), "--data", str(DATA / "coco-mini"),
           "--batch-sizes", "2", "--steps", "1", "--warmup", "1", "--repeats", "2", "--distinct", "2",
           "--loss-steps", "3", "--workers", "0", "--json", str(out), *extra, *TINY]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc, out


def test_train_throughput_reports_step_loop_ratios_and_losses(tmp_path):
    proc, out = _run(tmp_path, "--variants", "fp32,dev", "--loss-variants", "dev")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Machine:" in proc.stdout and "model step" in proc.stdout and "full loop" in proc.stdout
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["lr_rule"].startswith("linear")
    steps = {(r["variant"], r["batch"]) for r in res["rows"] if r["kind"] == "step"}
    assert steps == {("fp32", 2), ("dev", 2)}
    for r in res["rows"]:
        assert "error" not in r, r
        assert r["samples_per_s"] > 0 and r["finite"] is True
    assert any(r["kind"] == "loop" and r["variant"] == "fp32" for r in res["rows"])
    assert set(res["ratios_vs_fp32"]) == {"fp32@2", "dev@2"}
    assert res["ratios_vs_fp32"]["fp32@2"] == 1.0 and res["ratios_vs_fp32"]["dev@2"] > 0
    loss = res["loss"]
    assert loss["steps"] == 3 and len(loss["reference"]) == 3
    assert all(math.isfinite(v) for v in loss["reference"])
    dev = loss["variants"]["dev"]
    # device-made targets and normalisation are the same values: the same losses, exactly
    assert dev["losses"] == loss["reference"] and dev["max_abs_diff"] == 0.0 and dev["within_noise"] is True
    assert res["skipped"] == []


def test_train_throughput_refuses_unknown_options_and_missing_gpu(tmp_path):
    proc, _ = _run(tmp_path, "--variants", "fp32+warp9")
    assert proc.returncode != 0 and "unknown option" in (proc.stdout + proc.stderr)
    assert "Traceback" not in proc.stderr
    proc, _ = _run(tmp_path, "--variants", "fp32", "--device", "cuda")
    import torch

    if not torch.cuda.is_available():
        assert proc.returncode == 2 and proc.stdout.startswith("error:") and "Traceback" not in proc.stderr
