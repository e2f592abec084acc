"""The faster training sample (fastcrop, device targets, PoseDataset sample formats) against the official way
and the golden targets: every pixel and every target value must be the same."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA, golden_json, golden_npz
from hrpose.codec import HeatmapCodec
from hrpose.data.augment import to_input_tensor
from hrpose.data.device_targets import DeviceTargetEncoder
from hrpose.data.fastcrop import (
    bgr_to_rgb,
    normalize_lut,
    normalize_on_device,
    reduced_factor,
    scale_for_reduced,
    warp_crop,
)
from hrpose.geometry import get_affine_transform

IMAGES = sorted((DATA / "coco-mini" / "images" / "train2017").glob("*.jpg"))


def _official_crop(image: np.ndarray, trans: np.ndarray, size: tuple[int, int], flip: bool) -> np.ndarray:
    # the official order: mirror the whole image (a copy), then one bilinear warp
    src = np.ascontiguousarray(image[:, ::-1]) if flip else image
    return cv2.warpAffine(src, trans, size, flags=cv2.INTER_LINEAR)


def test_warp_crop_equals_mirroring_the_whole_image():
    rng = np.random.default_rng(7)
    cases = 0
    for path in IMAGES[:12]:
        image = cv2.imread(str(path))
        h, w = image.shape[:2]
        for _ in range(25):
            center = np.array([rng.uniform(-0.2 * w, 1.2 * w), rng.uniform(-0.2 * h, 1.2 * h)])
            s = rng.uniform(0.05, 4.0)
            trans = get_affine_transform(center, np.array([s, s * 4 / 3]), float(rng.uniform(-90, 90)), (192, 256))
            flip = bool(rng.random() < 0.6)
            np.testing.assert_array_equal(warp_crop(image, trans, (192, 256), flip=flip),
                                          _official_crop(image, trans, (192, 256), flip))  # fmt: skip
            cases += 1
    assert cases == 300


def test_warp_crop_box_outside_the_image_is_black_like_official():
    image = cv2.imread(str(IMAGES[0]))
    trans = get_affine_transform(np.array([5000.0, -4000.0]), np.array([1.0, 4 / 3]), 0.0, (96, 128))
    got = warp_crop(image, trans, (96, 128), flip=True)
    np.testing.assert_array_equal(got, _official_crop(image, trans, (96, 128), True))
    assert not got.any()


def test_colour_swap_on_the_crop_and_lut_normalisation_are_bit_identical():
    image = cv2.imread(str(IMAGES[1]))
    rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    trans = get_affine_transform(np.array([200.0, 220.0]), np.array([1.1, 1.1 * 4 / 3]), 17.0, (192, 256))
    crop = bgr_to_rgb(warp_crop(image, trans, (192, 256), flip=True))
    ref = _official_crop(rgb, trans, (192, 256), True)
    np.testing.assert_array_equal(crop, ref)
    expected = to_input_tensor(ref)
    assert torch.equal(normalize_lut(crop), expected)
    batch = torch.from_numpy(crop).permute(2, 0, 1).unsqueeze(0).contiguous()
    assert torch.equal(normalize_on_device(batch)[0], expected)
    # every grey level, every channel
    ramp = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)
    assert torch.equal(normalize_lut(ramp), to_input_tensor(ramp))


@pytest.mark.parametrize("case", [c["case"] for c in golden_json("targets.json")["cases"]])
def test_device_targets_equal_the_golden_targets(case):
    info = next(c for c in golden_json("targets.json")["cases"] if c["case"] == case)
    z = golden_npz("targets.npz")
    weights = golden_json("targets.json")["coco_joints_weight"] if info["use_different_joints_weight"] else None
    codec = HeatmapCodec(info["image_size_wh"], info["heatmap_size_wh"], info["sigma"], joints_weight=weights)
    joints = torch.from_numpy(np.asarray(z[f"case{case}_joints"], dtype=np.float64))[None]
    vis = torch.from_numpy(np.asarray(z[f"case{case}_joints_vis"], dtype=np.float64))[None]
    target, weight = DeviceTargetEncoder(codec)(joints, vis)
    np.testing.assert_allclose(target[0].numpy(), z[f"case{case}_target"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(weight[0].numpy(), z[f"case{case}_target_weight"], atol=1e-6, rtol=0)
    ref_t, ref_w = codec.encode(z[f"case{case}_joints"], z[f"case{case}_joints_vis"])
    assert np.array_equal(target[0].numpy(), ref_t) and np.array_equal(weight[0].numpy(), ref_w)


@pytest.mark.parametrize("sigma", [2.0, 3.0, 1.5])
def test_device_targets_equal_codec_encode_exactly_on_random_batches(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    codec = HeatmapCodec((192, 256), (48, 64), sigma)
    joints = rng.uniform(-40, 300, size=(32, 17, 3))
    vis = (rng.random((32, 17)) < 0.8).astype(np.float64)
    vis3 = np.repeat(vis[..., None], 3, axis=2)
    target, weight = DeviceTargetEncoder(codec)(torch.from_numpy(joints), torch.from_numpy(vis3))
    for b in range(32):
        ref_t, ref_w = codec.encode(joints[b], vis3[b])
        assert np.array_equal(target[b].numpy(), ref_t), b
        assert np.array_equal(weight[b].numpy(), ref_w), b


def test_device_targets_refuse_other_codecs():
    with pytest.raises(ValueError, match="official"):
        DeviceTargetEncoder(HeatmapCodec((192, 256), (48, 64), 2, method="dark"))


def test_reduced_decoding_matrix_maps_pixel_centres_exactly():
    trans = get_affine_transform(np.array([300.0, 200.0]), np.array([3.0, 4.0]), 10.0, (192, 256))
    assert reduced_factor(trans) == 2  # 600 image pixels over 192 crop pixels: 3.1 per crop pixel
    assert reduced_factor(get_affine_transform(np.array([300.0, 200.0]), np.array([0.5, 0.67]), 0.0, (192, 256))) == 1
    m = scale_for_reduced(trans, 2)
    # reduced pixel i covers full pixels 2i and 2i + 1: its centre is full 2i + 0.5
    for xr, yr in [(0.0, 0.0), (10.0, 7.0), (123.0, 45.0)]:
        full = np.array([2 * xr + 0.5, 2 * yr + 0.5, 1.0])
        np.testing.assert_allclose(m @ np.array([xr, yr, 1.0]), trans @ full, atol=1e-9)


# ------------------------------------------------------------------------------------ PoseDataset formats
def _coco_train(**overrides):
    from conftest import ROOT
    from hrpose.config import load_config
    from hrpose.data import build_dataset

    opts = ["DATASET.ROOT", str(DATA / "coco-mini"), "DATASET.TEST_SET", "train2017", "HRPOSE.SEED", "3"]
    for k, v in overrides.items():
        opts += [k, str(v)]
    cfg = load_config(str(ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"), opts)
    return build_dataset(cfg, "train", True)


def test_dataset_items_equal_the_official_order_of_operations():
    from hrpose.data.augment import plan

    ds = _coco_train()
    flips = 0
    for i in range(0, len(ds), 3):
        inp, target, weight, meta = ds[i]
        params = ds.sample_params(i)
        flips += params.flip
        # the official order: RGB image, whole-image mirror, warp, ToTensor + Normalize, codec targets
        rgb = cv2.cvtColor(cv2.imread(ds.records[i].image, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
        res = plan(ds.records[i], params, rgb.shape[1], input_size_wh=ds.input_size_wh,
                   flip_pairs=ds.meta.flip_pairs, upper_body_ids=ds.meta.upper_body_ids)  # fmt: skip
        crop = _official_crop(rgb, res.trans, ds.input_size_wh, params.flip)
        assert torch.equal(inp, to_input_tensor(crop)), i
        ref_t, ref_w = ds.codec.encode(res.joints_crop, res.joints_vis)
        assert np.array_equal(target.numpy(), ref_t) and np.array_equal(weight.numpy(), ref_w)
        np.testing.assert_array_equal(meta["joints"], res.joints_crop)
    assert flips > 3


def test_device_input_format_gives_the_same_batch_after_the_device_step():
    exact = _coco_train()
    dev = _coco_train(**{"HRPOSE.DEVICE_INPUT": True})
    assert dev.sample_format == "uint8" and exact.sample_format == "float"
    enc = DeviceTargetEncoder(dev.codec)
    for i in range(0, len(dev), 5):
        inp, target, weight, _ = exact[i]
        u8, t_empty, w_empty, meta = dev[i]
        assert u8.dtype == torch.uint8 and t_empty.numel() == 0 and w_empty.numel() == 0
        assert torch.equal(normalize_on_device(u8[None])[0], inp)
        t, w = enc(torch.from_numpy(meta["joints"])[None], torch.from_numpy(meta["joints_vis"])[None])
        assert torch.equal(t[0], target) and torch.equal(w[0], weight)


def test_reduced_decoding_is_opt_in_and_close():
    full = _coco_train(**{"HRPOSE.DEVICE_INPUT": True})
    red = _coco_train(**{"HRPOSE.DEVICE_INPUT": True, "HRPOSE.REDUCED_DECODE": True})
    assert not full.reduced_decode and red.reduced_decode
    diffs = []
    for i in range(len(full)):
        a, _, _, ma = full[i]
        b, _, _, mb = red[i]
        np.testing.assert_allclose(ma["joints"], mb["joints"], atol=1e-6)
        diffs.append(np.abs(a.numpy().astype(int) - b.numpy().astype(int)).mean())
    assert max(diffs) > 0  # some boxes were decoded at a reduced size
    assert np.mean(diffs) < 2.0  # and the pixels stay close (grey levels)


def test_train_one_epoch_device_input_gives_the_same_losses():
    from torch import nn

    from hrpose.engine.train import train_one_epoch
    from hrpose.losses import JointsMSELoss

    losses = []
    for fmt in ("float", "uint8"):
        ds = _coco_train(**({"HRPOSE.DEVICE_INPUT": True} if fmt == "uint8" else {}))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 17, 4, stride=4))
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(16)), batch_size=8)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        enc = DeviceTargetEncoder(ds.codec) if fmt == "uint8" else None
        m = train_one_epoch(model, loader, JointsMSELoss(True), opt, "cpu", epoch=0, progress=False, print_freq=0,
                            target_encoder=enc)  # fmt: skip
        losses.append(m["loss"])
    assert losses[0] == losses[1]


# ------------------------------------------------------------------------------ seeded, device-input training
def _seeded_run(tmp_path, name, device_input, workers):
    import yaml

    from conftest import mini_coco
    from helpers import tiny_hrnet_config
    from hrpose.config import load_config
    from hrpose.engine import train

    root = tmp_path / "data"
    if not root.exists():
        root.mkdir()
        mini_coco(root, 3)
    cfg_file = tiny_hrnet_config(tmp_path / name, root / "coco", name)
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["WORKERS"] = workers
    cfg["AUTO_RESUME"] = False
    cfg["HRPOSE"].update({"DEVICE_INPUT": device_input, "MAX_ITERS_PER_EPOCH": 2})
    cfg["TRAIN"]["END_EPOCH"] = 2
    cfg_file.write_text(yaml.safe_dump(cfg))
    result = train(load_config(cfg_file), cfg_file, device="cpu")
    state = torch.load(result["final_state"], map_location="cpu", weights_only=True)
    return result["best_perf"], {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_seeded_training_repeats_exactly_and_device_input_changes_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    perf_a, a = _seeded_run(tmp_path, "a", True, 1)
    perf_b, b = _seeded_run(tmp_path, "b", True, 1)
    perf_c, c = _seeded_run(tmp_path, "c", False, 0)
    assert perf_a == perf_b == perf_c  # the same AP, exactly
    assert a.keys() == b.keys() == c.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # a seeded run repeats bit for bit (one worker process)
        assert torch.equal(a[k], c[k]), k  # device-made inputs/targets: the same training, bit for bit
