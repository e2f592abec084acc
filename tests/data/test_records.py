"""Person records against the official loader's goldens, plus the sanitising and error paths."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, GOLDEN, golden_json
from hrpose.data.coco import (
    coco_annotation_file,
    coco_image_dir,
    load_coco_records,
    load_detection_records,
    read_coco_keypoint_file,
)
from hrpose.data.custom import meta_from_category
from hrpose.data.mpii import load_mpii_records
from hrpose.data.records import AnnotationError, select_data
from hrpose.keypoints import COCO

COCO_ROOT = DATA / "coco-mini"
ASPECT = 192 / 256


@pytest.fixture(scope="module")
def golden():
    return golden_json("dataset_samples.json")


@pytest.fixture(scope="module")
def coco_file():
    return read_coco_keypoint_file(coco_annotation_file(COCO_ROOT, "train2017"))


@pytest.fixture(scope="module")
def coco_records(coco_file):
    return load_coco_records(coco_file, coco_image_dir(COCO_ROOT, "train2017"), ASPECT)


def _rel(path: str) -> str:
    return Path(path).relative_to(COCO_ROOT).as_posix()


def test_coco_gt_records_match_official(golden, coco_records):
    records, stats = coco_records
    assert len(records) == golden["coco_num_samples_gt"] == len(golden["coco_db"]) == 86
    for rec, g in zip(records, golden["coco_db"]):
        assert _rel(rec.image) == g["image"]
        np.testing.assert_allclose(rec.center, g["center"], atol=1e-4)
        np.testing.assert_allclose(rec.scale, g["scale"], atol=1e-4)
    assert stats.records == 86 and stats.skipped["crowd"] == 5  # coco-mini holds 5 crowd regions
    assert all(rec.joints_vis.max() <= 1 for rec in records)  # visibility 2 -> 1
    assert all(rec.joints_img[:, 2].max() == 0 for rec in records)


def test_coco_joints_from_keypoint_array(coco_file, coco_records):
    records, _ = coco_records
    anns = {a["id"]: a for a in coco_file.annotations}
    for rec in records[::10]:
        kp = np.asarray(anns[rec.ann_id]["keypoints"], dtype=np.float64).reshape(17, 3)
        np.testing.assert_array_equal(rec.joints_img[:, :2], kp[:, :2])
        np.testing.assert_array_equal(rec.joints_vis[:, 0], (kp[:, 2] > 0).astype(float))
        assert rec.image_id == anns[rec.ann_id]["image_id"]


def test_select_data_matches_official(golden, coco_records):
    records, _ = coco_records
    kept = select_data(records)
    index = {id(r): i for i, r in enumerate(records)}
    assert [index[id(r)] for r in kept] == golden["coco_select_data_keep"]


def test_detection_records_match_official(golden, coco_file):
    recs = load_detection_records(GOLDEN / "coco_mini_detections.json", coco_file.images,
                                  coco_image_dir(COCO_ROOT, "train2017"), ASPECT, 17, image_thre=0.0)  # fmt: skip
    assert len(recs) == len(golden["coco_det_db"]) == 192
    for rec, g in zip(recs, golden["coco_det_db"]):
        assert _rel(rec.image) == g["image"]
        np.testing.assert_allclose(rec.center, g["center"], atol=1e-4)
        np.testing.assert_allclose(rec.scale, g["scale"], atol=1e-4)
        assert rec.score == pytest.approx(g["score"], abs=1e-9)
        assert rec.joints_img.sum() == 0 and rec.joints_vis.min() == 1


def test_detection_threshold_category_and_errors(tmp_path, coco_file):
    dets = json.loads((GOLDEN / "coco_mini_detections.json").read_text())
    thr = 0.5
    expected = sum(d["score"] >= thr for d in dets)
    recs = load_detection_records(GOLDEN / "coco_mini_detections.json", coco_file.images, "img", ASPECT, 17, thr)
    assert len(recs) == expected and 0 < expected < len(dets)
    f = tmp_path / "dets.json"
    f.write_text(json.dumps([dict(dets[0], category_id=2), dets[1]]))
    assert len(load_detection_records(f, coco_file.images, "img", ASPECT, 17)) == 1
    f.write_text("[]")
    with pytest.raises(AnnotationError, match="dets.json.*no boxes"):
        load_detection_records(f, coco_file.images, "img", ASPECT, 17)
    f.write_text(json.dumps([dict(dets[0], image_id=123)]))
    with pytest.raises(AnnotationError, match=r"dets.json: detection \[0\].*image_id 123"):
        load_detection_records(f, coco_file.images, "img", ASPECT, 17)


def _write_coco(tmp_path: Path, anns, images=None, category=None) -> Path:
    images = images or [{"id": 7, "file_name": "sub/a.png", "width": 100, "height": 80}]
    category = category or {"id": 1, "name": "person", "keypoints": list(COCO.joint_names), "skeleton": []}
    path = tmp_path / "annotations" / "person_keypoints_x.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [category]}))
    return path


def _ann(**kw):
    kp = [0] * 51
    kp[15:18] = [50, 40, 2]
    base = {"id": 11, "image_id": 7, "bbox": [-10.0, 5.0, 130.0, 40.0], "area": 100.0, "category_id": 1,
            "iscrowd": 0, "keypoints": kp}  # fmt: skip
    base.update(kw)
    return base


def test_coco_box_sanitising_and_file_names(tmp_path):
    path = _write_coco(tmp_path, [_ann(), _ann(id=12, area=0), _ann(id=13, keypoints=[0] * 51),
                                  _ann(id=14, iscrowd=1), _ann(id=15, bbox=[200, 5, 10, 10])])  # fmt: skip
    recs, stats = load_coco_records(read_coco_keypoint_file(path), tmp_path / "images" / "x", ASPECT)
    assert len(recs) == 1
    rec = recs[0]
    # x1 = max(0, -10) = 0; x2 = min(99, 0 + 129) = 99 -> w 99; y1 = 5, y2 = min(79, 5 + 39) = 44 -> h 39
    np.testing.assert_allclose(rec.box, [0, 5, 99, 39])
    np.testing.assert_allclose(rec.center, [49.5, 24.5])
    np.testing.assert_allclose(rec.scale, [99 / 200 * 1.25, 99 / ASPECT / 200 * 1.25], rtol=1e-6)
    assert rec.image == str(tmp_path / "images" / "x" / "sub" / "a.png") and rec.image_id == 7
    assert dict(stats.skipped) == {"zero_area": 1, "no_keypoints": 1, "crowd": 1, "empty_box": 1}


@pytest.mark.parametrize(
    ("ann", "pattern"),
    [
        ({"keypoints": None}, "missing field 'keypoints'"),
        ({"keypoints": [1.0] * 50}, "'keypoints' has 50 values, expected 51"),
        ({"keypoints": [float("nan")] * 51}, "'keypoints' holds NaN"),
        ({"bbox": [1, 2, 3]}, "'bbox' has 3 values, expected 4"),
        ({"area": None}, "missing field 'area'"),
    ],
)
def test_bad_annotations_name_file_record_and_field(tmp_path, ann, pattern):
    a = _ann(**{k: v for k, v in ann.items() if v is not None})
    for k, v in ann.items():
        if v is None:
            del a[k]
    path = _write_coco(tmp_path, [a])
    with pytest.raises(AnnotationError, match=rf"person_keypoints_x\.json: annotation id 11.*{pattern}"):
        load_coco_records(read_coco_keypoint_file(path), tmp_path, ASPECT)


def test_bad_image_entry_and_missing_category(tmp_path):
    path = _write_coco(tmp_path, [], images=[{"id": 3, "width": 10, "height": 10}])
    with pytest.raises(AnnotationError, match=r"images\[0\] \(id 3\): missing field 'file_name'"):
        read_coco_keypoint_file(path)
    path = _write_coco(tmp_path, [], category={"id": 1, "name": "person"})
    with pytest.raises(AnnotationError, match="no category lists 'keypoints'"):
        read_coco_keypoint_file(path)


def test_mpii_records_match_official(golden, tmp_path):
    src = DATA / "samples" / "mpii" / "test_mpii.json"
    recs = load_mpii_records(src, tmp_path / "images")
    anns = json.loads(src.read_text())
    assert len(recs) == len(golden["mpii_db"]) == 5
    for rec, g, a in zip(recs, golden["mpii_db"], anns):
        assert Path(rec.image).name == g["image"]
        np.testing.assert_allclose(rec.center, g["center"], atol=1e-4)
        np.testing.assert_allclose(rec.scale, g["scale"], atol=1e-4)
        np.testing.assert_allclose(rec.joints_img[:, :2], np.asarray(a["joints"]) - 1)  # 1-based -> 0-based
        np.testing.assert_array_equal(rec.joints_vis[:, 1], a["joints_vis"])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([dict(anns[0], joints=anns[0]["joints"][:15])]))
    with pytest.raises(AnnotationError, match=r"bad.json: record 0 .*'joints' has shape \(15, 2\), expected \(16, 2\)"):
        load_mpii_records(bad, tmp_path)


def test_custom_meta_from_category(caplog):
    cat = {"id": 3, "name": "robot", "keypoints": ["head", "left_arm", "right_arm", "L_foot", "R_foot"],
           "skeleton": [[1, 2], [1, 3], [2, 4], [3, 5]]}  # fmt: skip
    with caplog.at_level(logging.WARNING):
        meta = meta_from_category(cat, source="robots.json")
    assert "uniform OKS sigma" in caplog.text
    assert meta.num_joints == 5 and meta.name == "robot"
    assert meta.skeleton == ((0, 1), (0, 2), (1, 3), (2, 4))
    assert meta.flip_pairs == ((1, 2), (3, 4))
    assert meta.sigmas == (0.1,) * 5
    assert meta.upper_body_ids == (0,)
    meta = meta_from_category(cat, source="r", flip_pairs=[[3, 4]], sigmas=[0.2] * 5, upper_body_ids=[0, 1, 2])
    assert meta.flip_pairs == ((3, 4),) and meta.sigmas == (0.2,) * 5 and meta.upper_body_ids == (0, 1, 2)
    with pytest.raises(ValueError, match="OKS_SIGMAS has 2 values, expected 5"):
        meta_from_category(cat, source="r", sigmas=[0.1, 0.1])
    coco_like = meta_from_category({"id": 1, "keypoints": list(COCO.joint_names)}, source="c")
    assert coco_like.sigmas == COCO.sigmas and coco_like.flip_pairs == COCO.flip_pairs
    assert coco_like.upper_body_ids == COCO.upper_body_ids
