"""Robustness to bad image files inside a dataset, by fault injection.

Each fault (truncated JPEG/PNG, zero-byte file, text file, directory, broken symlink, FIFO, device) is put in
place of one image of a small custom dataset. Default (HRPOSE.SKIP_BAD_IMAGES True): the image is skipped with
a RuntimeWarning naming it, counted (`bad_images` in the process, `index != requested_index` in the meta of
the substituted items across DataLoader workers), and every batch still forms with 0 and 2 workers.
HRPOSE.SKIP_BAD_IMAGES False: the same file is fatal, an `ImageReadError` naming it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import CUSTOM_N_IMAGES as N_IMAGES
from helpers import custom_dataset_cfg, write_custom_dataset
from hrpose.data.dataset import PoseDataset, build_dataset
from hrpose.images import ImageReadError, read_image


def _png(rng: np.random.Generator) -> bytes:
    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


# Each fault replaces the file at `path` with something that is not a readable image.
def _truncated_jpeg(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_png(path: Path) -> None:
    data = _png(np.random.default_rng(3))
    path.write_bytes(data[: len(data) - 20])


def _zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def _not_an_image(path: Path) -> None:
    path.write_text("this is not an image\n" * 20)


def _directory(path: Path) -> None:  # as root chmod 000 does not stop reads; a directory does
    path.unlink()
    path.mkdir()


def _broken_symlink(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.parent / "does_not_exist.jpg")


def _fifo(path: Path) -> None:  # reading it would block forever
    path.unlink()
    os.mkfifo(path)


def _device(path: Path) -> None:  # reading /dev/zero would never end
    path.unlink()
    path.symlink_to("/dev/zero")


def _missing(path: Path) -> None:
    path.unlink()


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated_jpeg": (_truncated_jpeg, "truncated JPEG"),
    "truncated_png": (_truncated_png, "not a decodable image"),
    "zero_byte": (_zero_byte, "zero-byte"),
    "not_an_image": (_not_an_image, "not a decodable image"),
    "directory": (_directory, "not a regular file"),
    "broken_symlink": (_broken_symlink, "broken symbolic link"),
    "fifo": (_fifo, "not a regular file"),
    "device": (_device, "not a regular file"),
    "missing": (_missing, "file not found"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_read_image_names_the_file_and_the_reason(tmp_path, fault):
    img_dir = write_custom_dataset(tmp_path)
    inject, reason = FAULTS[fault]
    path = img_dir / "img_2.jpg"
    inject(path)
    with pytest.raises(ImageReadError, match=rf"img_2\.jpg: {reason}") as info:
        read_image(path)
    assert info.value.path == str(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_bad_image_is_skipped_with_a_warning_and_counted(tmp_path, fault):
    img_dir = write_custom_dataset(tmp_path)
    FAULTS[fault][0](img_dir / "img_2.jpg")
    ds = build_dataset(custom_dataset_cfg(tmp_path), "test", is_train=False)
    with pytest.warns(RuntimeWarning, match=r"skipping unreadable image \(1 so far\).*img_2\.jpg"):
        inp, target, weight, meta = ds[2]
    assert meta["requested_index"] == 2 and meta["index"] == 3  # the next readable record stands in
    assert inp.shape == (3, 64, 48) and torch.isfinite(inp).all()
    assert (
        list(ds.bad_images) == [str(img_dir / "img_2.jpg")]
        and FAULTS[fault][1] in ds.bad_images[str(img_dir / "img_2.jpg")]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known bad image is not read (nor warned about) again
        assert ds[2][3]["index"] == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_skip_bad_images_false_makes_it_fatal(tmp_path, fault):
    img_dir = write_custom_dataset(tmp_path)
    FAULTS[fault][0](img_dir / "img_2.jpg")
    ds = build_dataset(custom_dataset_cfg(tmp_path, skip=False), "train", is_train=True)
    ds[1]  # the good neighbours still load
    with pytest.raises(ImageReadError, match=r"img_2\.jpg"):
        ds[2]


@pytest.mark.timeout(120)
@pytest.mark.filterwarnings("ignore:skipping unreadable image")
@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_batches_still_form_and_substitutions_are_counted(tmp_path, workers):
    img_dir = write_custom_dataset(tmp_path)
    bad = {1: "truncated_jpeg", 3: "directory", 4: "broken_symlink"}
    for i, fault in bad.items():
        FAULTS[fault][0](img_dir / f"img_{i}.jpg")
    ds = build_dataset(custom_dataset_cfg(tmp_path), "train", is_train=True)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=workers)
    batches = list(loader)
    assert [b[0].shape[0] for b in batches] == [4, 2]
    requested = torch.cat([b[3]["requested_index"] for b in batches])
    returned = torch.cat([b[3]["index"] for b in batches])
    assert requested.tolist() == list(range(N_IMAGES))
    substituted = requested[returned != requested].tolist()
    assert sorted(substituted) == sorted(bad)  # the count, visible in the main process with any worker count
    assert set(returned.tolist()) <= {0, 2, 5}
    for inp, target, weight, _meta in batches:
        assert torch.isfinite(inp).all() and torch.isfinite(target).all() and torch.isfinite(weight).all()
    if workers == 0:
        assert len(ds.bad_images) == 3


def test_no_readable_image_at_all_is_a_clear_error(tmp_path):
    img_dir = write_custom_dataset(tmp_path)
    for i in range(N_IMAGES):
        _zero_byte(img_dir / f"img_{i}.jpg")
    ds = build_dataset(custom_dataset_cfg(tmp_path), "test", is_train=False)
    assert isinstance(ds, PoseDataset)
    with pytest.warns(RuntimeWarning), pytest.raises(ImageReadError, match=r"no readable image in the whole dataset"):
        ds[0]


def test_split_without_usable_records_is_a_clear_error(tmp_path):
    write_custom_dataset(tmp_path)
    ann_file = tmp_path / "annotations" / "val.json"
    doc = json.loads(ann_file.read_text())
    for ann in doc["annotations"]:
        ann["iscrowd"] = 1  # every annotation is skipped (counted as crowd)
    ann_file.write_text(json.dumps(doc))
    from hrpose.data import AnnotationError

    with pytest.raises(AnnotationError, match=r"DATASET.TRAIN_SET 'val' under .*: no usable person records"):
        build_dataset(custom_dataset_cfg(tmp_path), "train", is_train=True)
