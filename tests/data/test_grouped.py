"""HRPOSE.GROUP_BY_IMAGE: the image-grouped order (every record once per epoch, seeded, disjoint DDP shares)
and the one-entry decoded-image cache (the same samples bit for bit, each image decoded once per run of its
people)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA
from hrpose.data.grouped import ImageGroupedSampler, image_groups


def _coco_train(**overrides):
    from conftest import ROOT
    from hrpose.config import load_config
    from hrpose.data import build_dataset

    opts = ["DATASET.ROOT", str(DATA / "coco-mini"), "DATASET.TEST_SET", "train2017", "HRPOSE.SEED", "5"]
    for k, v in overrides.items():
        opts += [k, str(v)]
    cfg = load_config(str(ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"), opts)
    return build_dataset(cfg, "train", True)


@pytest.fixture(scope="module")
def coco_images() -> list[str]:
    return [r.image for r in _coco_train().records]


def _runs(order: list[int], images: list[str]) -> int:
    """How many runs of the same image the order has (one per image when grouped)."""
    return sum(1 for k, i in enumerate(order) if k == 0 or images[i] != images[order[k - 1]])


def test_grouped_order_has_every_record_once_and_each_image_in_one_run(coco_images):
    n_images = len(set(coco_images))
    assert n_images < len(coco_images)  # coco-mini has images with several people
    s = ImageGroupedSampler(coco_images, seed=0)
    orders = []
    for epoch in range(4):
        s.set_epoch(epoch)
        order = list(s)
        assert sorted(order) == list(range(len(coco_images)))  # every record exactly once
        assert len(s) == len(order)
        assert _runs(order, coco_images) == n_images  # the people of one image one after another
        orders.append(order)
    assert len({tuple(o) for o in orders}) == 4  # the images are reshuffled every epoch
    # a random order would split most images' people apart: the grouping is what keeps them together
    perm = np.random.default_rng(0).permutation(len(coco_images)).tolist()
    assert _runs(perm, coco_images) > n_images


def test_grouped_order_is_deterministic_for_a_seed(coco_images):
    a, b, c = (ImageGroupedSampler(coco_images, seed=s) for s in (7, 7, 8))
    for s in (a, b, c):
        s.set_epoch(3)
    assert list(a) == list(b)
    assert list(a) != list(c)
    plain = ImageGroupedSampler(coco_images, shuffle=False)
    assert list(plain) == [i for g in image_groups(coco_images) for i in g]


def test_image_groups_keep_record_order_within_an_image():
    assert image_groups(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4], [3]]


@pytest.mark.parametrize("world", [2, 3, 4, 5])
def test_ddp_shares_are_disjoint_equally_long_and_cover_every_record(coco_images, world):
    n = len(coco_images)
    for drop_last in (False, True):
        shares = []
        for rank in range(world):
            s = ImageGroupedSampler(coco_images, seed=1, num_replicas=world, rank=rank, drop_last=drop_last)
            s.set_epoch(2)
            shares.append(list(s))
        lengths = {len(x) for x in shares}
        assert len(lengths) == 1  # the same number of samples, so the same number of batches, on every rank
        flat = [i for x in shares for i in x]
        order = ImageGroupedSampler(coco_images, seed=1)
        order.set_epoch(2)
        full = order.order()
        if drop_last:
            assert len(flat) == (n // world) * world and len(set(flat)) == len(flat)  # disjoint
            assert flat == full[: len(flat)]
        else:
            assert len(flat) == -(-n // world) * world
            assert set(flat) == set(range(n))  # every record on some rank
            assert flat[:n] == full  # the shares are consecutive slices of the one order ...
            assert flat[n:] == full[: len(flat) - n]  # ... padded with its start, as DistributedSampler
            # disjoint apart from the padding
            assert len(set(flat)) == n and len(flat) - n < world


def test_rank_outside_the_world_is_refused():
    with pytest.raises(ValueError, match="rank 2"):
        ImageGroupedSampler(["a"], num_replicas=2, rank=2)


def test_grouped_cached_samples_equal_ungrouped_ones_bit_for_bit(monkeypatch):
    import hrpose.data.dataset as dataset_mod

    for fmt in ({}, {"HRPOSE.DEVICE_INPUT": True}):
        plain = _coco_train(**fmt)
        grouped = _coco_train(**fmt, **{"HRPOSE.GROUP_BY_IMAGE": True})
        assert grouped.cache_last_image and not plain.cache_last_image
        images = [r.image for r in grouped.records]
        sampler = ImageGroupedSampler(images, seed=5)
        sampler.set_epoch(1)
        plain.set_epoch(1)
        grouped.set_epoch(1)
        decoded: list[str] = []
        real_read = dataset_mod.read_image

        def counting_read(path, *args, _seen=decoded, _read=real_read, **kwargs):
            _seen.append(str(path))
            return _read(path, *args, **kwargs)

        monkeypatch.setattr(dataset_mod, "read_image", counting_read)
        got = [(i, grouped[i]) for i in sampler]
        monkeypatch.setattr(dataset_mod, "read_image", real_read)
        assert len(decoded) == len(set(images))  # each image decoded once for all its people
        for i, (inp, target, weight, meta) in got:
            ref_inp, ref_t, ref_w, ref_meta = plain[i]
            assert inp.dtype == ref_inp.dtype and torch.equal(inp, ref_inp), i
            assert torch.equal(target, ref_t) and torch.equal(weight, ref_w), i
            np.testing.assert_array_equal(meta["joints"], ref_meta["joints"])
            assert meta["index"] == ref_meta["index"] == i


def test_train_loader_uses_the_grouped_sampler_per_rank():
    from hrpose.engine.distributed import DistInfo
    from hrpose.engine.train import _make_loader

    ds = _coco_train(**{"HRPOSE.GROUP_BY_IMAGE": True})
    lens = []
    for rank in range(2):
        info = DistInfo(rank=rank, world_size=2, local_rank=rank, device=torch.device("cpu"))
        loader, sampler = _make_loader(ds, 8, shuffle=True, workers=0, pin_memory=False, info=info, seed=4,
                                       group_by_image=True)  # fmt: skip
        assert isinstance(sampler, ImageGroupedSampler) and loader.sampler is sampler
        assert sampler.rank == rank and sampler.num_replicas == 2 and sampler.seed == 4
        lens.append(len(loader))
    assert lens[0] == lens[1]
    single = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    loader, sampler = _make_loader(ds, 8, shuffle=True, workers=0, pin_memory=False, info=single)
    assert sampler is None  # off unless HRPOSE.GROUP_BY_IMAGE


def test_grouped_loader_with_worker_processes_gives_the_ungrouped_samples():
    from hrpose.engine.distributed import DistInfo
    from hrpose.engine.train import _make_loader

    plain = _coco_train(**{"HRPOSE.DEVICE_INPUT": True})
    ds = _coco_train(**{"HRPOSE.DEVICE_INPUT": True, "HRPOSE.GROUP_BY_IMAGE": True})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    loader, sampler = _make_loader(ds, 8, shuffle=True, workers=2, pin_memory=False, info=info, seed=0,
                                   group_by_image=True)  # fmt: skip
    sampler.set_epoch(0)
    seen = []
    for inp, _, _, meta in loader:
        for k, i in enumerate(meta["index"].tolist()):
            assert torch.equal(inp[k], plain[i][0]), i
            seen.append(i)
    assert sorted(seen) == list(range(len(ds)))


# ------------------------------------------------------------------------------ hrpose train with the flag
def _train_run(tmp_path, name, grouped):
    import yaml

    from conftest import mini_coco
    from helpers import tiny_hrnet_config
    from hrpose.config import load_config
    from hrpose.engine import train

    root = tmp_path / "data"
    if not root.exists():
        root.mkdir()
        mini_coco(root, 3)
    (tmp_path / name).mkdir()
    cfg_file = tiny_hrnet_config(tmp_path / name, root / "coco", name)
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["WORKERS"] = 1
    cfg["AUTO_RESUME"] = False
    cfg["HRPOSE"].update({"GROUP_BY_IMAGE": grouped, "MAX_ITERS_PER_EPOCH": 2})
    cfg["TRAIN"]["END_EPOCH"] = 1
    cfg_file.write_text(yaml.safe_dump(cfg))
    result = train(load_config(cfg_file), cfg_file, device="cpu")
    state = torch.load(result["final_state"], map_location="cpu", weights_only=True)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_hrpose_train_with_group_by_image_is_seeded_and_changes_the_order(tmp_path):
    a = _train_run(tmp_path, "a", True)
    b = _train_run(tmp_path, "b", True)
    c = _train_run(tmp_path, "c", False)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the grouped order repeats for a seed
    assert not all(torch.equal(a[k], c[k]) for k in a)  # and it is a different order than the default
