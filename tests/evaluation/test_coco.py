"""COCO keypoint evaluation: the official pipeline's golden results/stats, the pieces, and bad input."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, ROOT, golden_json
from hrpose.evaluation.coco import (
    STATS_NAMES,
    build_results,
    coco_keypoint_stats,
    evaluate_coco,
    group_by_image,
    image_ids_from_paths,
    load_coco,
    markdown_table,
    rescore,
    select_poses,
    write_results_json,
)

ANN = DATA / "coco-mini" / "annotations" / "person_keypoints_train2017.json"
CASES = golden_json("coco_eval.json")


@pytest.fixture(scope="module")
def coco_gt():
    return load_coco(ANN)


def _key(r: dict) -> tuple:
    return (r["image_id"], r["score"], tuple(r["keypoints"]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_official_pipeline_golden(case: str, coco_gt, tmp_path: Path) -> None:
    c = CASES[case]
    preds = np.asarray(c["preds"], dtype=np.float32)  # the official run kept predictions in float32
    image_ids = image_ids_from_paths(coco_gt, c["images"])
    stats = evaluate_coco(
        preds, np.asarray(c["boxes"]), image_ids, tmp_path, coco_gt, "train2017",
        in_vis_thre=c["in_vis_thre"], oks_thre=c["oks_thre"], soft_nms=c["soft_nms"],
    )  # fmt: skip
    assert list(stats) == list(STATS_NAMES) == list(c["stats"])
    for name, value in c["stats"].items():
        assert stats[name] == pytest.approx(value, abs=1e-6), name
    written = json.loads((tmp_path / "results" / "keypoints_train2017_results_0.json").read_text())
    assert sorted(map(_key, written)) == sorted(map(_key, c["results"]))
    assert all(r["category_id"] == 1 for r in written)


def test_image_ids_come_from_the_annotation_not_the_file_name(coco_gt, tmp_path: Path) -> None:
    img = coco_gt.imgs[sorted(coco_gt.imgs)[0]]
    assert image_ids_from_paths(coco_gt, [f"/some/dir/{img['file_name']}"]).tolist() == [img["id"]]
    with pytest.raises(KeyError, match="not_there.jpg"):
        image_ids_from_paths(coco_gt, ["a/not_there.jpg"])
    with pytest.raises(ValueError, match=r"not in the COCO annotation: \[123\]"):
        coco_keypoint_stats(coco_gt, [{"image_id": 123, "category_id": 1, "keypoints": [0.0] * 51, "score": 1.0}])
    with pytest.raises(ValueError, match="empty"):
        coco_keypoint_stats(coco_gt, [])


def test_ground_truth_as_predictions_scores_perfectly(coco_gt, tmp_path: Path) -> None:
    anns = [a for a in coco_gt.anns.values() if a["num_keypoints"] > 0]
    preds = np.array([np.asarray(a["keypoints"], dtype=np.float64).reshape(17, 3) for a in anns])
    preds[:, :, 2] = 1.0
    boxes = np.zeros((len(anns), 6))
    boxes[:, 4] = [a["area"] for a in anns]
    boxes[:, 5] = 1.0
    ids = np.array([a["image_id"] for a in anns])
    stats = evaluate_coco(preds, boxes, ids, tmp_path, str(ANN), "train2017", oks_thre=1.1)  # no suppression
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)
    assert evaluate_coco(preds, boxes, ids, tmp_path, None, "test2017") == {"Null": 0.0}
    assert (tmp_path / "results" / "keypoints_test2017_results_0.json").is_file()


def test_rescore_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    preds = rng.uniform(0, 1, (50, 17, 3)).astype(np.float32)
    preds[3, :, 2] = 0.1  # nothing above the threshold: score 0
    box = rng.uniform(0.1, 1, 50)
    got = rescore(preds, box, 0.2)
    for i in range(50):
        s = preds[i, :, 2][preds[i, :, 2] > 0.2]
        want = (s.astype(np.float64).mean() if s.size else 0.0) * box[i]
        assert got[i] == pytest.approx(want, rel=1e-6, abs=1e-12)
    assert got[3] == 0.0


def test_group_by_image_keeps_first_appearance_and_input_order() -> None:
    groups = group_by_image(np.array([7, 3, 7, 9, 3, 7]))
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 4], [3]]
    assert group_by_image(np.array([], dtype=np.int64)) == []


def test_custom_joint_count_uses_its_sigmas(tmp_path: Path) -> None:
    k = 5
    ann = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "categories": [{"id": 3, "name": "hand", "keypoints": [f"j{i}" for i in range(k)], "skeleton": []}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "iscrowd": 0, "area": 2500.0, "bbox": [10, 10, 50, 50],
             "num_keypoints": k, "keypoints": [v for i in range(k) for v in (20.0 + 5 * i, 30.0 + 3 * i, 2)]},
        ],
    }  # fmt: skip
    ann_file = tmp_path / "hand.json"
    ann_file.write_text(json.dumps(ann))
    gt_kp = np.asarray(ann["annotations"][0]["keypoints"], dtype=np.float64).reshape(k, 3)
    preds = np.stack([gt_kp, gt_kp + [40.0, 40.0, 0.0]])
    preds[:, :, 2] = 0.9
    boxes = np.array([[0, 0, 0, 0, 2500.0, 1.0], [0, 0, 0, 0, 2500.0, 0.5]])
    with pytest.raises(ValueError, match="5 joints"):
        evaluate_coco(preds, boxes, np.array([1, 1]), tmp_path, ann_file, "val")
    stats = evaluate_coco(preds, boxes, np.array([1, 1]), tmp_path, ann_file, "val", sigmas=[0.05] * k)
    assert stats["AP"] == pytest.approx(1.0)
    written = json.loads((tmp_path / "results" / "keypoints_val_results_0.json").read_text())
    assert {r["category_id"] for r in written} == {3} and len(written) == 2


def test_results_file_is_valid_json_and_rejects_non_finite(tmp_path: Path) -> None:
    preds = np.ones((2, 17, 3))
    preds[1, 4, 0] = np.nan
    with pytest.raises(ValueError, match="person 1"):
        build_results(preds, np.array([1, 1]), np.ones(2), np.array([0, 1]))
    res = build_results(preds, np.array([5, 6]), np.array([0.5, 0.25]), np.array([0]))
    path = write_results_json(res, tmp_path / "deep" / "r.json")
    assert json.loads(path.read_text()) == [{"image_id": 5, "category_id": 1, "keypoints": [1.0] * 51, "score": 0.5}]
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_bad_shapes_are_reported() -> None:
    with pytest.raises(ValueError, match=r"\(N, K, 3\)"):
        select_poses(np.zeros((2, 17, 2)), np.zeros((2, 6)), np.zeros(2))
    with pytest.raises(ValueError, match="one row per person"):
        select_poses(np.zeros((2, 17, 3)), np.zeros((3, 6)), np.zeros(2))


def test_markdown_table_is_the_official_layout() -> None:
    values = dict(zip(STATS_NAMES, [0.1234, 0.5, 0.25, 0, 1, 0.7777, 0.9, 0.1, 0.2, 0.3]))
    assert markdown_table(values, "pose_hrnet_w32_256x192").splitlines() == [
        "| Arch | AP | Ap .5 | AP .75 | AP (M) | AP (L) | AR | AR .5 | AR .75 | AR (M) | AR (L) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        "| pose_hrn... | 0.123 | 0.500 | 0.250 | 0.000 | 1.000 | 0.778 | 0.900 | 0.100 | 0.200 | 0.300 |",
    ]
    assert markdown_table({"AP": 0.5}, "short").splitlines()[2] == "| short | 0.500 |"


def _bench():
    spec = importlib.util.spec_from_file_location("eval_speed", ROOT / "benchmarks" / "eval_speed.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("soft", [False, True])
def test_vectorised_pipeline_equals_the_official_loops_port(soft: bool, tmp_path: Path) -> None:
    bench = _bench()
    data = bench.simulate(num_images=40, num_people=60, num_dets=800, seed=1)
    preds, boxes, ids = data["preds"], data["boxes"], data["image_ids"]
    groups = bench.baseline_group(preds, boxes, ids)
    bench.baseline_rescore(groups, 17, 0.2)
    kept = bench.baseline_nms(groups, 0.9, soft)
    base = bench.baseline_write(kept, 17, str(tmp_path / "base.json"))
    sel, scores = select_poses(preds, boxes, ids, in_vis_thre=0.2, oks_thre=0.9, soft_nms=soft)
    ours = build_results(preds, ids, scores, sel)
    assert 0 < len(ours) < len(preds) if not soft else len(ours) > 0
    assert bench.same_results(ours, base)
    # per-image keep lists, index by index
    for idx, img_kept in zip(group_by_image(ids), kept):
        keep_ours = [int(i) for i in sel if ids[i] == ids[idx[0]]]
        assert [p["score"] for p in img_kept] == scores[keep_ours].tolist()


def test_vectorised_decode_equals_the_official_loops_port() -> None:
    from hrpose.codec import HeatmapCodec

    bench = _bench()
    hms = bench.random_heatmaps(16, 17, 64, 48, seed=2)
    rng = np.random.default_rng(3)
    centers, scales = rng.uniform(100, 500, (16, 2)), rng.uniform(0.5, 3, (16, 2))
    pb, vb = bench.baseline_decode(hms, centers, scales)
    po, vo = HeatmapCodec((192, 256), (48, 64), 2.0).decode(hms, centers, scales, post_process=True)
    np.testing.assert_allclose(po, pb, atol=1e-3)
    np.testing.assert_array_equal(vo, vb)


# ----------------------------------------------------------------------------------------------------
# the results file: orjson's bytes, json's values and json's refusal of NaN


def test_results_file_reads_back_to_the_same_values_as_json_writes(tmp_path: Path) -> None:
    """Every float kind (tiny, huge, negative zero, float32-rounded, integral) reads back bit-identical."""
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.normal(0, 300, (40, 51)), rng.uniform(0, 1, (40, 51)).astype(np.float32)])
    kp[0, :6] = [1e-7, 5e-324, 1.7976931348623157e308, -0.0, 12.0, 2.0**-30]
    res = [{"image_id": int(i), "category_id": 1, "keypoints": k, "score": float(s)}
           for i, k, s in zip(range(80), kp.astype(np.float64).tolist(), rng.uniform(0, 1, 80))]  # fmt: skip
    path = write_results_json(res, tmp_path / "r.json")
    raw = path.read_bytes()
    assert json.loads(raw) == res == json.loads(json.dumps(res, allow_nan=False))
    assert [np.float64(v).tobytes() for r in json.loads(raw) for v in r["keypoints"]] == [
        np.float64(v).tobytes() for r in res for v in r["keypoints"]
    ]  # bit for bit, -0.0 included
    assert b"NaN" not in raw and b"null" not in raw


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_results_writer_refuses_non_finite_numbers_and_writes_nothing(tmp_path: Path, bad: float) -> None:
    res = [{"image_id": 1, "category_id": 1, "keypoints": [1.0] * 50 + [bad], "score": 0.5}]
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_results_json(res, tmp_path / "r.json")
    res = [{"image_id": 1, "category_id": 1, "keypoints": [1.0] * 51, "score": bad}]
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_results_json(res, tmp_path / "r.json")
    assert not tmp_path.joinpath("r.json").exists() and list(tmp_path.iterdir()) == []
    # a genuine None is JSON null, as json writes it
    assert json.loads(write_results_json([{"a": None}], tmp_path / "n.json").read_text()) == [{"a": None}]


def test_results_file_through_load_res_gives_the_golden_stats(coco_gt, tmp_path: Path) -> None:
    """pycocotools reads the written file (COCO.loadRes on the path, as the official evaluation does)."""
    c = CASES["det_boxes"]
    preds = np.asarray(c["preds"], dtype=np.float32)
    image_ids = image_ids_from_paths(coco_gt, c["images"])
    sel, scores = select_poses(preds, np.asarray(c["boxes"]), image_ids, in_vis_thre=c["in_vis_thre"],
                               oks_thre=c["oks_thre"], soft_nms=c["soft_nms"])  # fmt: skip
    path = write_results_json(build_results(preds, image_ids, scores, sel), tmp_path / "r.json")
    stats = coco_keypoint_stats(coco_gt, str(path))  # json.loads of the file -> loadRes
    from contextlib import redirect_stdout
    from io import StringIO

    from pycocotools.cocoeval import COCOeval

    with redirect_stdout(StringIO()):
        dt = coco_gt.loadRes(str(path))  # pycocotools' own file reader
        ev = COCOeval(coco_gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    for i, (name, value) in enumerate(c["stats"].items()):
        assert stats[name] == pytest.approx(value, abs=1e-6), name
        assert ev.stats[i] == pytest.approx(value, abs=1e-6), name


def test_write_results_from_arrays_is_byte_identical_to_the_list_writer(coco_gt, tmp_path: Path) -> None:
    """evaluate_coco's writer (orjson straight from the float64 rows) = build_results + write_results_json."""
    from hrpose.evaluation.coco import write_results

    for name, c in CASES.items():
        preds = np.asarray(c["preds"], dtype=np.float32)
        ids = image_ids_from_paths(coco_gt, c["images"])
        sel, scores = select_poses(preds, np.asarray(c["boxes"]), ids, in_vis_thre=c["in_vis_thre"],
                                   oks_thre=c["oks_thre"], soft_nms=c["soft_nms"])  # fmt: skip
        a = write_results(preds, ids, scores, sel, tmp_path / f"{name}_a.json").read_bytes()
        b = write_results_json(build_results(preds, ids, scores, sel), tmp_path / f"{name}_b.json").read_bytes()
        assert a == b and len(json.loads(a)) == len(sel) > 0, name
    preds = np.ones((3, 17, 3))
    preds[2, 4, 1] = np.inf
    with pytest.raises(ValueError, match="person 2 has a non-finite"):
        write_results(preds, np.array([1, 1, 2]), np.ones(3), np.array([0, 2]), tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_faster_coco_eval_gives_the_pycocotools_stats_on_the_golden_cases(case: str, coco_gt, tmp_path: Path) -> None:
    """The optional evaluator: the golden stats and pycocotools' own numbers, to float rounding (<= 1e-12)."""
    c = CASES[case]
    preds = np.asarray(c["preds"], dtype=np.float32)
    ids = image_ids_from_paths(coco_gt, c["images"])
    kw = {"in_vis_thre": c["in_vis_thre"], "oks_thre": c["oks_thre"], "soft_nms": c["soft_nms"]}
    fast = evaluate_coco(preds, np.asarray(c["boxes"]), ids, tmp_path, coco_gt, "train2017",
                         evaluator="faster-coco-eval", **kw)  # fmt: skip
    ref = evaluate_coco(preds, np.asarray(c["boxes"]), ids, tmp_path, coco_gt, "train2017", **kw)
    assert list(fast) == list(STATS_NAMES)
    for name, value in c["stats"].items():
        assert fast[name] == pytest.approx(value, abs=1e-6), name
        assert fast[name] == pytest.approx(ref[name], abs=1e-12), name
    with pytest.raises(ValueError, match="evaluator must be one of"):
        coco_keypoint_stats(coco_gt, str(tmp_path / "results" / "keypoints_train2017_results_0.json"), evaluator="x")
