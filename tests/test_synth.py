"""Synthetic people: layout, determinism, label consistency, occlusion flags and left/right cues."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO as CocoApi

from hrpose.cli import main
from hrpose.synth import (
    HEAD,
    L_FARM,
    PARTS_PER_PERSON,
    R_FARM,
    Figure,
    image_rng,
    render_scene,
    sample_figure,
    sample_scene,
    write_synthetic_dataset,
)

# The official COCO person category (cocodataset.org annotations), written out independently of hrpose.
COCO_NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
COCO_SKELETON_1BASED = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
L_SHOULDER, R_SHOULDER = 5, 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, 40, seed=3, image_size=(192, 160))
    return out


def _plain(w: int = 256, h: int = 256, value: int = 128) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_official_coco_layout_and_pycocotools(dataset: Path) -> None:
    ann = dataset / "annotations" / "person_keypoints_train.json"
    coco = CocoApi(str(ann))
    assert sorted(coco.getImgIds()) == list(range(1, 41))
    cats = coco.loadCats(coco.getCatIds())
    assert [(c["id"], c["name"]) for c in cats] == [(1, "person")]
    assert cats[0]["keypoints"] == COCO_NAMES
    assert cats[0]["skeleton"] == COCO_SKELETON_1BASED
    ann_ids = coco.getAnnIds()
    assert len(ann_ids) == len(set(ann_ids)) >= 40
    for img in coco.loadImgs(coco.getImgIds()):
        assert img["file_name"] == f"synth_{img['id']:06d}.jpg"
        pixels = cv2.imread(str(dataset / "images" / "train" / img["file_name"]))
        assert pixels is not None and pixels.shape == (160, 192, 3) == (img["height"], img["width"], 3)
    people = np.bincount([a["image_id"] for a in coco.loadAnns(ann_ids)], minlength=41)[1:]
    assert people.min() >= 1 and people.max() <= 4 and (people > 1).any()


def test_annotations_are_consistent(dataset: Path) -> None:
    doc = json.loads((dataset / "annotations" / "person_keypoints_train.json").read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    flags = []
    truncated = 0
    for a in doc["annotations"]:
        w, h = sizes[a["image_id"]]
        k = np.asarray(a["keypoints"], dtype=np.float64)
        assert k.shape == (51,), a["id"]
        k = k.reshape(17, 3)
        v = k[:, 2]
        assert set(np.unique(v)) <= {0, 1, 2}
        assert a["num_keypoints"] == int((v > 0).sum()) > 0
        assert a["iscrowd"] == 0 and a["category_id"] == 1
        x, y, bw, bh = a["bbox"]
        assert bw > 0 and bh > 0 and a["area"] == bw * bh
        assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h, a["id"]
        lab = k[v > 0, :2]
        assert ((lab[:, 0] >= 0) & (lab[:, 0] <= w - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= h - 1)).all()
        assert (lab[:, 0] >= x - 1).all() and (lab[:, 0] <= x + bw).all(), a["id"]
        assert (lab[:, 1] >= y - 1).all() and (lab[:, 1] <= y + bh).all(), a["id"]
        assert (k[v == 0] == 0).all()
        truncated += int((v == 0).any())
        flags.append(v)
    flags_arr = np.stack(flags)
    assert (flags_arr == 2).mean() > 0.5  # mostly visible
    assert (flags_arr == 1).any() and truncated > 0  # but occlusion and people partly out of frame occur


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", 4, seed=11)
    b = write_synthetic_dataset(tmp_path / "b", 4, seed=11)
    c = write_synthetic_dataset(tmp_path / "c", 4, seed=12)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    for i in range(1, 5):
        name = f"images/train/synth_{i:06d}.jpg"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    s1, s2 = (sample_scene(image_rng(11, "train", 2), 128, 128) for _ in range(2))
    np.testing.assert_array_equal(s1.image, s2.image)
    np.testing.assert_array_equal(s1.labels, s2.labels)
    s3 = sample_scene(image_rng(11, "val", 2), 128, 128)
    assert s3.image.shape == s1.image.shape and not np.array_equal(s1.image, s3.image)


def test_worker_processes_write_the_same_bytes_as_one_process(tmp_path: Path) -> None:
    one = write_synthetic_dataset(tmp_path / "one", 7, seed=5, image_size=(96, 96), workers=1)
    two = write_synthetic_dataset(tmp_path / "two", 7, seed=5, image_size=(96, 96), workers=2)
    assert one.read_bytes() == two.read_bytes()  # records and annotation ids in image order
    doc = json.loads(one.read_text())
    assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
    for i in range(1, 8):
        name = f"images/train/synth_{i:06d}.jpg"
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_covered_figure_is_labelled_occluded() -> None:
    big = Figure(height=240, pelvis=(128, 170), arm_abduction=(70, 70))
    small = Figure(height=40, pelvis=(128, 150), arm_abduction=(5, 5))
    scene = render_scene(_plain(), [small, big])  # small is drawn first, so behind
    assert (scene.visibility[0] == 1).all()
    assert (scene.visibility[1] == 2).sum() >= 15
    assert scene.masks[0].sum() > 0  # its area/bbox still come from its own (hidden) pixels
    alone = render_scene(_plain(), [small])
    assert (alone.visibility[0] == 2).all()


def test_face_hidden_from_behind_and_out_of_frame_zero() -> None:
    front = render_scene(_plain(), [Figure(height=200, pelvis=(128, 130), yaw=0)])
    back = render_scene(_plain(), [Figure(height=200, pelvis=(128, 130), yaw=180)])
    assert (front.visibility[0][:5] == 2).all()
    assert (back.visibility[0][:3] == 1).all()  # nose and eyes are behind the head
    cut = render_scene(_plain(), [Figure(height=200, pelvis=(2, 130), yaw=0)])
    v = cut.visibility[0]
    assert (v[[6, 8, 10, 12, 14, 16]] == 0).all()  # the right side (image left) is outside the image
    assert (v[[5, 11]] == 2).all()


def _head_pixels(scene) -> np.ndarray:
    return scene.image[scene.labels == 1 + HEAD]


def test_left_right_cues() -> None:
    """Facing is visible (a face in front, plain hair behind), and it decides which side is left."""
    rng = np.random.default_rng(0)
    signs = []
    for i in range(40):
        fig = sample_figure(rng, 200, (128, 130))
        fig = replace(fig, roll=0.0, lean=0.0, head_tilt=0.0, arm_abduction=(20, 20), elbow_flex=(0, 0))
        scene = render_scene(_plain(value=255), [fig])
        joints, labels = scene.joints[0], scene.labels
        # Left shoulder on the image right when facing the camera, on the image left from behind.
        assert (joints[L_SHOULDER, 0] > joints[R_SHOULDER, 0]) == fig.facing_camera, i
        head = _head_pixels(scene).astype(np.int32)
        n_colours = len({tuple(p) for p in head})
        assert (n_colours >= 3) if fig.facing_camera else (n_colours == 1), (i, n_colours)
        # The two arms of one figure differ clearly (a limb can be traced to its side) ...
        left = scene.image[labels == 1 + L_FARM].astype(np.float64).mean(0)
        right = scene.image[labels == 1 + R_FARM].astype(np.float64).mean(0)
        assert np.abs(left - right).max() > 30, (i, left, right)
        signs.append(np.sign(left.sum() - right.sum()))
    # ... but which side is brighter is random, so the cue survives horizontal flips.
    assert 5 <= signs.count(1.0) <= 35


def test_labels_map_people_in_drawing_order() -> None:
    scene = sample_scene(image_rng(5, "train", 0), 256, 256)
    people = {(int(v) - 1) // PARTS_PER_PERSON for v in np.unique(scene.labels) if v}
    assert people <= set(range(len(scene.figures)))
    for p, (joints, vis) in enumerate(zip(scene.joints, scene.visibility)):
        for k in np.flatnonzero(vis == 2):
            lab = int(scene.labels[int(round(joints[k, 1])), int(round(joints[k, 0]))]) - 1
            assert lab // PARTS_PER_PERSON == p


def test_cli_writes_train_and_heldout_val(tmp_path: Path, capsys) -> None:
    out = tmp_path / "ds"
    assert main(["synth", "--out", str(out), "--images", "3", "--seed", "1", "--val-images", "2"]) == 0
    printed = capsys.readouterr().out
    assert "train: 3 images" in printed and "val: 2 images" in printed
    train = json.loads((out / "annotations" / "person_keypoints_train.json").read_text())
    val = json.loads((out / "annotations" / "person_keypoints_val.json").read_text())
    assert len(train["images"]) == 3 and len(val["images"]) == 2
    first = "synth_000001.jpg"
    assert (out / "images/train" / first).read_bytes() != (out / "images/val" / first).read_bytes()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": 0}, "images must be >= 1"),
        ({"images": 1, "split": "a/b"}, "split must be a plain folder name"),
        ({"images": 1, "image_size": (8, 8)}, "at least 32x32"),
        ({"images": 1, "max_people": 0}, "max_people"),
        ({"images": 1, "area": "segm"}, "area must be one of"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_synthetic_dataset(tmp_path, seed=0, **kwargs)


def test_mask_area_is_the_figure_pixel_count(tmp_path: Path) -> None:
    ann = write_synthetic_dataset(tmp_path, 2, seed=4, area="mask")
    scene = sample_scene(image_rng(4, "train", 0), 256, 256)
    doc = json.loads(ann.read_text())
    first = [a for a in doc["annotations"] if a["image_id"] == 1]
    assert [a["area"] for a in first] == [float(m.sum()) for m in scene.masks]
    assert all(a["area"] < a["bbox"][2] * a["bbox"][3] for a in first)


def test_cli_bad_workers_is_one_error_line(tmp_path: Path, capsys) -> None:
    assert main(["synth", "--out", str(tmp_path / "d"), "--images", "1", "--workers", "-1"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --workers must be from 0") and "-1" in err[0]
    assert not (tmp_path / "d").exists()
