"""benchmarks/video_throughput.py: its --det-every deviation measure, its clips (coco-mini, `hrpose synth`), and
one whole run on the CPU with a small model that reports every field it promises."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from helpers import TINY_YAML
from hrpose.inference.estimator import PersonPose
from hrpose.synth import write_synthetic_dataset

_spec = importlib.util.spec_from_file_location("video_throughput", ROOT / "benchmarks" / "video_throughput.py")
assert _spec is not None and _spec.loader is not None
vt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vt)


def person(x: float, y: float, w: float, h: float, joints: list[tuple[float, float, float]]) -> PersonPose:
    return PersonPose(np.asarray(joints, np.float32), np.asarray([x, y, w, h], np.float32), 1.0)


def test_deviation_is_measured_on_frames_without_detection_only():
    # box 30 x 40: diagonal 50 px
    j = [(10.0, 10.0, 0.9), (20.0, 20.0, 0.9), (30.0, 30.0, 0.1)]
    ref = {
        0: [person(0, 0, 30, 40, j)],  # a detection frame: never counted, however far off
        1: [person(0, 0, 30, 40, j), person(200, 200, 30, 40, j)],
        2: [person(0, 0, 30, 40, j)],
        3: [person(0, 0, 30, 40, j)],
    }
    other = {
        0: [person(0, 0, 30, 40, [(99.0, 99.0, 0.9)] * 3)],
        # frame 1: 3 px off on both scored joints; the third joint (score 0.1) is ignored; the second person
        # of ref was lost (no box near it)
        1: [person(1, 0, 30, 40, [(13.0, 10.0, 0.9), (20.0, 23.0, 0.9), (90.0, 90.0, 0.9)])],
        # frame 2: 5 px and 15 px off: 10 px on average; plus a person ref does not have
        2: [person(0, 0, 30, 40, [(15.0, 10.0, 0.9), (20.0, 35.0, 0.9), (30.0, 30.0, 0.9)]),
            person(400, 10, 30, 40, j)],
        # frame 3: no person at all
    }  # fmt: skip
    d = vt.deviation(ref, other, 5)
    assert d["matched"] == d["box_matched"] == 2
    assert d["mean_px"] == pytest.approx(6.5) and d["median_px"] == pytest.approx(6.5)
    assert d["mean_rel"] == pytest.approx(6.5 / 50) and d["median_rel"] == pytest.approx(6.5 / 50)
    assert d["every_frame_people"] == 4 and d["det_every_people"] == 3
    # people are matched one to one: two people of `other` on one of ref count once
    d = vt.deviation({1: [person(0, 0, 30, 40, j)]}, {1: [person(0, 0, 30, 40, j), person(1, 0, 30, 40, j)]}, 5)
    assert d["matched"] == 1 and d["mean_px"] == pytest.approx(0.0)
    # matched by box, but no joint scored >= 0.3 in both: not measured
    low = [(10.0, 10.0, 0.1)] * 3
    d = vt.deviation({1: [person(0, 0, 30, 40, j)]}, {1: [person(0, 0, 30, 40, low)]}, 5)
    assert d["box_matched"] == 1 and d["matched"] == 0 and np.isnan(d["mean_px"])


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(d, 10, seed=3, split="val", image_size=(256, 256))
    return d


def test_synth_clip_keeps_proportions_and_follows_the_annotations(synth_dir, tmp_path):
    boxes = vt.make_clip(tmp_path / "clip.mp4", 8, 4, f"synth:{synth_dir}")
    ann = json.loads((synth_dir / "annotations" / "person_keypoints_val.json").read_text())
    by_image: dict[int, list] = {}
    for a in ann["annotations"]:
        if a["num_keypoints"] > 0:
            by_image.setdefault(a["image_id"], []).append(a["bbox"])
    chosen = sorted((im for im in ann["images"] if 1 <= len(by_image.get(im["id"], [])) <= 3
                     and all(b[2] * b[3] >= 32 * 32 for b in by_image[im["id"]])), key=lambda im: im["id"])  # fmt: skip
    # photos with 1, 2 and 3 people take turns (each group in id order)
    groups = [g for g in ([im for im in chosen if len(by_image[im["id"]]) == n] for n in (1, 2, 3)) if g]
    chosen = [groups[k % len(groups)][(k // len(groups)) % len(groups[k % len(groups)])] for k in range(len(chosen))]
    s = 480 / 256  # one factor: the square image fills the clip's height, centred
    for i in range(8):
        want = np.asarray(by_image[chosen[i // 4]["id"]], np.float32) * s
        want[:, 0] += (640 - 256 * s) / 2 + 3.0 * (i % 4)
        np.testing.assert_allclose(boxes[i][:, :4], want, rtol=1e-5, atol=1e-3)
        assert (boxes[i][:, 4] == 1.0).all()
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == 8 and frames[0].shape == (480, 640, 3)
    # the first frame is the first chosen image, scaled by s and centred (mp4v is lossy: compare loosely)
    img = cv2.imread(str(synth_dir / "images" / "val" / chosen[0]["file_name"]))
    ox = int(round((640 - 256 * s) / 2))
    want = cv2.resize(img, (480, 480), interpolation=cv2.INTER_LINEAR)
    assert np.abs(frames[0][:, ox : ox + 480].astype(int) - want.astype(int)).mean() < 12


def test_coco_mini_clip_has_one_two_and_three_people(tmp_path):
    boxes = vt.make_clip(tmp_path / "clip.mp4", 30, 2, "coco-mini")
    counts = [len(boxes[i]) for i in range(30)]
    assert counts[:6] == [1, 1, 2, 2, 3, 3]  # the photos take turns: 1, 2, 3 people, each held 2 frames
    assert set(counts) == {1, 2, 3}


@pytest.mark.parametrize("spec", ["synth:/no/such/folder", "youtube"])
def test_a_wrong_clip_is_one_error_line(spec):
    with pytest.raises(SystemExit) as e:
        vt.clip_source(spec)
    assert str(e.value).startswith(f"error: --clip {spec}".replace("youtube", "'youtube'"))


@pytest.mark.slow
def test_whole_run_on_a_synth_clip_reports_rates_and_deviation(synth_dir, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML)
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "video_throughput.py"), "--cfg", str(cfg),
                           "--clip", f"synth:{synth_dir}", "--frames", "10", "--hold", "5", "--repeats", "1",
                           "--threads", "1", "--modes", "concurrent,split", "--sweep-crops", "1,2",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    for k in ("decode", "detect", "pose", "draw+write", "serial (sum of stages)", "pipelined e2e",
              "pipelined e2e, --det-every 5", "compute bound 1 / (t_detect + t_pose)",
              "pipelined e2e, concurrent (no slot)", "pipelined e2e, split threads (no slot)"):  # fmt: skip
        assert len(res["fps"][k]) == 1 and res["fps"][k][0] > 0, k
    fps = {k: v[0] for k, v in res["fps"].items()}
    # the compute bound: both models' time per frame added
    assert fps["compute bound 1 / (t_detect + t_pose)"] == pytest.approx(1 / (1 / fps["detect"] + 1 / fps["pose"]))
    assert res["e2e_over_compute_bound"][0] == pytest.approx(fps["pipelined e2e"]
                                                             / fps["compute bound 1 / (t_detect + t_pose)"])
    assert set(res["sweep_s_per_crop"]) == {"1", "2"}
    assert "x compute bound" in proc.stdout and "compute slot True, 1 people a pose call" in proc.stdout
    # every frame's annotated people are posed with detection on every frame
    assert res["posed"]["every_frame"] == res["posed"]["annotated"] > 0
    assert res["posed"]["det_every_5"] > 0
    d = res["deviation"]
    assert d["every_frame_people"] > 0 and 0 <= d["matched"] <= d["every_frame_people"]
    assert "--det-every 5 vs every-frame detection" in proc.stdout and "random pose weights" in proc.stdout
