"""Robustness of the annotation loaders (COCO keypoint files, MPII json, detection files), by fault injection.

Property: for a valid file with ONE field of ONE record broken (missing, wrong type, NaN/inf, negative or
zero boxes, wrong-length keypoints, unknown ids, file names escaping the image folder, huge numbers), the
loader either raises `AnnotationError` naming the file, the record and the field, or it skips with a count;
and every record it accepts then gives a valid `PoseDataset` item (finite input, target in [0, 1], weight in
[0, 1], finite joints) in train mode (flip, rotation, half-body) and in test mode, for every codec method.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hrpose.codec import HeatmapCodec
from hrpose.data.coco import load_coco_records, load_detection_records, read_coco_keypoint_file
from hrpose.data.dataset import AugConfig, PoseDataset
from hrpose.data.mpii import load_mpii_records
from hrpose.data.records import AnnotationError, PersonRecord
from hrpose.keypoints import COCO, MPII, DatasetMeta

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INPUT_WH = (48, 64)
HEATMAP_WH = (12, 16)
IMAGE_WH = (80, 60)

# ---------------------------------------------------------------------------------------------------
# bad values

UNSAFE_NAMES = ["../x.png", "../../etc/passwd", "a/../../x.png", "/etc/passwd", "/abs/img.png", "C:\\img.png",
                "..\\x.png", "\\\\server\\share\\x.png", "", ".", "..", "a/..", "x\x00.png"]  # fmt: skip
moderate = st.floats(min_value=-300, max_value=300, allow_nan=False)
finite = st.one_of(moderate, moderate, st.floats(min_value=-2e6, max_value=2e6, allow_nan=False))
any_float = st.floats(allow_nan=True, allow_infinity=True)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.integers(-3, 3), any_float,
                   st.text(max_size=5), st.just(float("nan")), st.just(float("inf")), st.just(-0.0),
                   st.just(10**400), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))  # fmt: skip


def number_list(n: int) -> st.SearchStrategy[list[Any]]:
    """Lists near the right length, mostly numbers, sometimes NaN/inf/huge/wrong-typed elements."""
    element = st.one_of(finite, finite, st.integers(-5, 200), any_float, st.none(), st.text(max_size=2),
                        st.booleans(), st.just(10**400), st.lists(st.integers(), max_size=2))  # fmt: skip
    return st.one_of(
        st.lists(element, min_size=n, max_size=n),
        st.lists(finite, min_size=max(n - 3, 0), max_size=n + 3),
        st.lists(st.lists(finite, min_size=1, max_size=3), min_size=n, max_size=n),
    )


def boxes() -> st.SearchStrategy[list[float]]:
    """Well-typed boxes that are negative, zero, tiny, huge or outside the image."""
    coord = st.one_of(finite, st.sampled_from([0.0, -1.0, 1.0, 1 + 2**-52, 79.0, 80.0, 1e6, -1e6, 5e-324]))
    return st.lists(coord, min_size=4, max_size=4)


def keypoints_values(k: int) -> st.SearchStrategy[list[float]]:
    """Well-typed keypoints (x, y, v) with extreme coordinates and visibilities (negative ones included)."""
    xy = st.one_of(finite, st.sampled_from([0.0, -1e6, 1e6, 40.0, 1e-300]))
    v = st.sampled_from([0, 1, 2, 0.5, 3, -1, -0.0])
    return st.lists(st.tuples(xy, xy, v), min_size=k, max_size=k).map(lambda t: [c for p in t for c in p])


# ---------------------------------------------------------------------------------------------------
# checking items


def check_item(item: tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]], k: int) -> None:
    inp, target, weight, meta = item
    assert inp.shape == (3, INPUT_WH[1], INPUT_WH[0]) and inp.dtype == torch.float32
    assert torch.isfinite(inp).all()
    assert target.shape == (k, HEATMAP_WH[1], HEATMAP_WH[0]) and target.dtype == torch.float32
    assert torch.isfinite(target).all() and target.min() >= 0 and target.max() <= 1
    assert weight.shape == (k, 1) and torch.isfinite(weight).all() and weight.min() >= 0 and weight.max() <= 1
    for key in ("joints", "joints_vis", "center", "scale"):
        assert np.all(np.isfinite(meta[key])), key
    assert np.all(np.asarray(meta["scale"]) > 0)


def check_records(records: list[PersonRecord], meta: DatasetMeta, method: str) -> None:
    codec = HeatmapCodec(INPUT_WH, HEATMAP_WH, 2.0, method=method)
    train = PoseDataset(records, meta, codec, INPUT_WH, aug=AugConfig(prob_half_body=0.5, num_joints_half_body=2),
                        seed=0)  # fmt: skip
    test = PoseDataset(records, meta, codec, INPUT_WH, seed=0)  # a missing image (file_name 'missing.png') is skipped
    for ds in (train, test):
        for i in range(len(ds)):
            check_item(ds[i], meta.num_joints)


# ---------------------------------------------------------------------------------------------------
# COCO


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("coco")
    (root / "images" / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "sub/b.png"):
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), np.uint8))
    (root / "annotations").mkdir()
    return root


def coco_doc() -> dict[str, Any]:
    def kps(shift: float) -> list[float]:
        out = []
        for j in range(17):
            out += [10.0 + 3 * j + shift, 8.0 + 2.5 * j, 2 if j % 3 else 1]
        return out

    images = [{"id": 7, "file_name": "a.png", "width": IMAGE_WH[0], "height": IMAGE_WH[1]},
              {"id": 9, "file_name": "sub/b.png", "width": IMAGE_WH[0], "height": IMAGE_WH[1]}]  # fmt: skip
    anns = [{"id": 11, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 900.0, "bbox": [5, 4, 60, 50],
             "keypoints": kps(0), "num_keypoints": 17},
            {"id": 12, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 400, "bbox": [20.5, 10, 30, 40],
             "keypoints": kps(5), "num_keypoints": 17},
            {"id": 13, "image_id": 9, "category_id": 1, "iscrowd": 0, "area": 100, "bbox": [0, 0, 79, 59],
             "keypoints": kps(-5), "num_keypoints": 17}]  # fmt: skip
    cat = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO.joint_names),
           "skeleton": [[16, 14], [14, 12]]}  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [cat]}


ANN_FIELDS = ("id", "image_id", "category_id", "iscrowd", "area", "bbox", "keypoints")
IMAGE_FIELDS = ("id", "file_name", "width", "height")
DELETE = object()


@st.composite
def coco_fault(draw) -> tuple[str, int, str, Any]:
    """(table, record index, field, new value or DELETE)."""
    table = draw(st.sampled_from(["annotations", "annotations", "images", "categories"]))
    if table == "annotations":
        idx = draw(st.integers(0, 2))
        key = draw(st.sampled_from(ANN_FIELDS))
        special = {
            "bbox": st.one_of(boxes(), number_list(4)),
            "keypoints": st.one_of(keypoints_values(17), number_list(51)),
            "category_id": st.one_of(st.integers(-2, 5), scalar),
            "image_id": st.one_of(st.sampled_from([7, 9, 8, -1, 0]), scalar),
            "area": st.one_of(st.sampled_from([0, -1, 0.0, 1e-300, 1e300]), scalar),
            "iscrowd": st.one_of(st.sampled_from([0, 1, 2, -1]), scalar),
        }.get(key, scalar)
    elif table == "images":
        idx = draw(st.integers(0, 1))
        key = draw(st.sampled_from(IMAGE_FIELDS))
        special = {
            "file_name": st.one_of(
                st.sampled_from(UNSAFE_NAMES),
                st.sampled_from(["a.png", "./a.png", "sub/../a.png", "missing.png"]),
                scalar,
            ),  # fmt: skip
            "width": st.one_of(st.sampled_from([0, -5, 1, 10**7, 79.0, 80.5]), scalar),
            "height": st.one_of(st.sampled_from([0, -5, 1, 10**7, 59.0]), scalar),
            "id": st.one_of(st.sampled_from([7, 9, 8, 7.0]), scalar),
        }[key]
    else:
        idx = 0
        key = draw(st.sampled_from(["id", "keypoints"]))
        special = st.one_of(scalar, st.lists(st.one_of(st.text(max_size=3), st.integers()), max_size=17),
                            st.just(list(COCO.joint_names)[:16]))  # fmt: skip
    value = draw(st.one_of(special, special, special, st.just(DELETE)))
    return table, idx, key, value


def write_coco(root: Path, doc: Any) -> Path:
    path = root / "annotations" / "person_keypoints_x.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    return path


def load_coco(root: Path, path: Path) -> tuple[list[PersonRecord], Any]:
    kp_file = read_coco_keypoint_file(path)
    return load_coco_records(kp_file, root / "images", INPUT_WH[0] / INPUT_WH[1], 17)


def test_coco_unbroken_document_gives_three_valid_records(coco_root):
    records, stats = load_coco(coco_root, write_coco(coco_root, coco_doc()))
    assert len(records) == 3 and not stats.skipped
    check_records(records, COCO, "official")


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@SETTINGS
@given(fault=coco_fault(), method=st.sampled_from(["official", "dark", "udp"]))
def test_coco_one_broken_field_is_refused_or_skipped_never_crashes(coco_root, fault, method):
    table, idx, key, value = fault
    doc = coco_doc()
    record = doc[table][idx]
    record_id = record.get("id")
    if value is DELETE:
        del record[key]
    else:
        record[key] = value
    path = write_coco(coco_root, doc)
    try:
        records, stats = load_coco(coco_root, path)
    except AnnotationError as e:
        event("refused")
        msg = str(e)
        assert str(path) in msg, msg
        assert f"'{key}'" in msg or (table == "categories" and "keypoints" in msg), msg
        if table == "annotations":
            assert f"annotation id {record_id}" in msg or f"annotations[{idx}]" in msg, msg
        elif table == "images":
            assert f"images[{idx}]" in msg, msg
        return
    event(f"accepted, {len(records)} records")
    # accepted: every annotation is either a record or a counted skip, and every record makes valid items
    assert stats.records + sum(stats.skipped.values()) == stats.annotations == 3
    for rec in records:
        image_root = (coco_root / "images").resolve()
        assert Path(rec.image).resolve().is_relative_to(image_root)
    check_records(records, COCO, method)


@SETTINGS
@given(garbage=st.one_of(st.binary(max_size=40), st.just(b"\xff\xfe{]"), st.just(b"[1, 2]"), st.just(b"null"),
                         st.just(b'{"images": 3, "annotations": [], "categories": []}'),
                         st.just(b'{"images": [], "annotations": {}, "categories": [{"id": 1, "keypoints": ["a"]}]}'),
                         st.just(b'{"images": [5], "annotations": [], "categories": [{"id": 1, "keypoints": ["a"]}]}'),
                         st.just(b'{"images": [], "annotations": [7], "categories": [{"id": 1, "keypoints": ["a"]}]}'),
                         st.just(b"[" * 100000 + b"]" * 100000)))  # fmt: skip
def test_coco_file_that_is_not_a_keypoint_document_is_refused(coco_root, garbage):
    path = coco_root / "annotations" / "person_keypoints_x.json"
    path.write_bytes(garbage)
    with pytest.raises(AnnotationError, match="person_keypoints_x.json"):
        load_coco(coco_root, path)


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_coco_file_names_outside_the_image_folder_are_refused(coco_root, name):
    doc = coco_doc()
    doc["images"][1]["file_name"] = name
    path = write_coco(coco_root, doc)
    with pytest.raises(AnnotationError, match=r"images\[1\] \(id 9\): field 'file_name'"):
        load_coco(coco_root, path)


def test_coco_nan_and_skips_are_named_and_counted(coco_root):
    doc = coco_doc()
    doc["annotations"][1]["keypoints"][4] = float("nan")
    path = write_coco(coco_root, doc)
    with pytest.raises(AnnotationError, match=r"annotation id 12 \(image id 9\): field 'keypoints' holds NaN"):
        load_coco(coco_root, path)
    doc = coco_doc()
    doc["annotations"][0]["category_id"] = 99  # unknown category
    doc["annotations"][1]["image_id"] = 12345  # unknown image
    doc["annotations"][2]["bbox"] = [90, 70, 10, 10]  # entirely outside the 80x60 image
    records, stats = load_coco(coco_root, write_coco(coco_root, doc))
    assert records == [] and dict(stats.skipped) == {"other_category": 1, "unknown_image": 1, "empty_box": 1}


# ---------------------------------------------------------------------------------------------------
# MPII


@pytest.fixture(scope="module")
def mpii_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mpii")
    (root / "images").mkdir()
    rng = np.random.default_rng(1)
    for name in ("p.jpg", "q.jpg"):
        ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (IMAGE_WH[1], IMAGE_WH[0], 3), np.uint8))
        (root / "images" / name).write_bytes(buf.tobytes())
    return root


def mpii_doc() -> list[dict[str, Any]]:
    joints = [[10.0 + 3 * j, 5.0 + 2 * j] for j in range(16)]
    return [{"image": "p.jpg", "center": [40.0, 20.0], "scale": 0.25, "joints": joints, "joints_vis": [1] * 16},
            {"image": "q.jpg", "center": [-1, -1], "scale": 0.3, "joints": joints,
             "joints_vis": [1, 0] * 8}]  # fmt: skip


@st.composite
def mpii_fault(draw) -> tuple[int, str, Any]:
    idx = draw(st.integers(0, 1))
    key = draw(st.sampled_from(["image", "center", "scale", "joints", "joints_vis"]))
    special = {
        "image": st.one_of(st.sampled_from(UNSAFE_NAMES), st.sampled_from(["p.jpg", "none.jpg"]), scalar),
        "center": st.one_of(st.lists(st.one_of(finite, st.just(-1.0)), min_size=2, max_size=2), number_list(2)),
        "scale": st.one_of(st.sampled_from([0, -1, 1e-300, 1e-3, 5e3, 1e300]), st.floats(1e-3, 10), scalar),
        "joints": st.one_of(st.lists(st.lists(finite, min_size=2, max_size=2), min_size=16, max_size=16),
                            number_list(16), st.lists(number_list(2), min_size=16, max_size=16)),
        "joints_vis": st.one_of(st.lists(st.sampled_from([0, 1, 0.0, 1.0, 0.5]), min_size=16, max_size=16),
                                st.lists(st.sampled_from([0, 1, 2, -1, 0.5]), min_size=16, max_size=16),
                                number_list(16)),
    }[key]  # fmt: skip
    value = draw(st.one_of(special, special, special, st.just(DELETE)))
    return idx, key, value


@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@SETTINGS
@given(fault=mpii_fault(), method=st.sampled_from(["official", "dark", "udp"]))
def test_mpii_one_broken_field_is_refused_never_crashes(mpii_root, fault, method):
    idx, key, value = fault
    doc = mpii_doc()
    if value is DELETE:
        del doc[idx][key]
    else:
        doc[idx][key] = value
    path = mpii_root / "train.json"
    path.write_text(json.dumps(doc))
    try:
        records = load_mpii_records(path, mpii_root / "images")
    except AnnotationError as e:
        event("refused")
        msg = str(e)
        assert str(path) in msg and f"record {idx} " in msg and f"'{key}'" in msg, msg
        return
    event("accepted")
    assert len(records) == 2
    check_records(records, MPII, method)


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_mpii_image_names_outside_the_image_folder_are_refused(mpii_root, name):
    doc = mpii_doc()
    doc[1]["image"] = name
    path = mpii_root / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationError, match=r"bad.json: record 1 .*field 'image'"):
        load_mpii_records(path, mpii_root / "images")


def test_mpii_nan_is_caught_at_load(mpii_root):
    doc = mpii_doc()
    doc[0]["joints"][3][1] = float("nan")
    path = mpii_root / "nan.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    with pytest.raises(AnnotationError, match=r"nan.json: record 0 \(image 'p.jpg'\): field 'joints' holds NaN"):
        load_mpii_records(path, mpii_root / "images")


# ---------------------------------------------------------------------------------------------------
# detection files (TEST.COCO_BBOX_FILE)


@SETTINGS
@given(key=st.sampled_from(["image_id", "category_id", "bbox", "score"]),
       value=st.one_of(scalar, boxes(), number_list(4), st.just(DELETE)),
       method=st.sampled_from(["official", "udp"]))  # fmt: skip
def test_detection_file_one_broken_field_is_refused_or_skipped(coco_root, key, value, method):
    kp_file = read_coco_keypoint_file(write_coco(coco_root, coco_doc()))
    dets = [{"image_id": 7, "category_id": 1, "bbox": [5.0, 4.0, 30.0, 40.0], "score": 0.9},
            {"image_id": 9, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}]  # fmt: skip
    if value is DELETE:
        del dets[1][key]
    else:
        dets[1][key] = value
    path = coco_root / "dets.json"
    path.write_text(json.dumps(dets, allow_nan=True))
    try:
        records = load_detection_records(path, kp_file.images, coco_root / "images", INPUT_WH[0] / INPUT_WH[1], 17)
    except AnnotationError as e:
        event("refused")
        assert "dets.json: detection [1]" in str(e) and (f"'{key}'" in str(e) or key in str(e)), str(e)
        return
    event(f"accepted, {len(records)} records")
    assert 1 <= len(records) <= 2
    assert all(math.isfinite(r.score) for r in records)
    check_records(records, COCO, method)
