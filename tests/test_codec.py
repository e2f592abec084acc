"""hrpose.codec against the official golden numbers, round trips, flip consistency and degenerate maps."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from yacs.config import CfgNode

from conftest import ROOT, golden_json, golden_npz
from hrpose.codec import (
    HeatmapCodec,
    accuracy,
    build_codec,
    dark_kernel_size,
    flip_back,
    get_max_preds,
    merge_flip,
)
from hrpose.keypoints import COCO, MPII

TARGET_CASES = [c["case"] for c in golden_json("targets.json")["cases"]]
COCO_PAIRS = COCO.flip_pairs


def _decode_golden():
    return golden_npz("decode.npz"), golden_json("decode.json")["flip_pairs"]


# ---------------------------------------------------------------------------------------------- golden: encode
@pytest.mark.parametrize("case", TARGET_CASES)
def test_encode_matches_official_targets(case):
    info = next(c for c in golden_json("targets.json")["cases"] if c["case"] == case)
    z = golden_npz("targets.npz")
    weights = golden_json("targets.json")["coco_joints_weight"] if info["use_different_joints_weight"] else None
    codec = HeatmapCodec(info["image_size_wh"], info["heatmap_size_wh"], info["sigma"], joints_weight=weights)
    target, weight = codec.encode(z[f"case{case}_joints"], z[f"case{case}_joints_vis"])
    assert target.dtype == np.float32 and weight.dtype == np.float32
    assert target.shape == z[f"case{case}_target"].shape
    np.testing.assert_allclose(target, z[f"case{case}_target"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(weight, z[f"case{case}_target_weight"], atol=1e-6, rtol=0)


def test_coco_joints_weight_matches_official():
    np.testing.assert_allclose(
        np.asarray(COCO.joints_weight), golden_json("targets.json")["coco_joints_weight"], atol=1e-6
    )


def test_encode_accepts_2d_joints_and_flat_visibility():
    z = golden_npz("targets.npz")
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    t3, w3 = codec.encode(z["case0_joints"], z["case0_joints_vis"])
    t2, w2 = codec.encode(z["case0_joints"][:, :2], z["case0_joints_vis"][:, 0])
    np.testing.assert_array_equal(t2, t3)
    np.testing.assert_array_equal(w2, w3)


def test_encode_official_edge_quirk_sigma_1_5():
    # sigma 1.5 -> a 10-cell patch whose centre cell is 5; near the left edge int() truncates ul toward zero,
    # so the official peak lands one cell right of the rounded joint (x = 8 -> mu = 2, peak at 3).
    codec = HeatmapCodec((192, 256), (48, 64), 1.5)
    target, weight = codec.encode(np.array([[8.0, 100.0]]), np.array([1.0]))
    peak_y, peak_x = np.unravel_index(np.argmax(target[0]), target[0].shape)
    assert (peak_x, peak_y) == (3, 25)
    assert weight[0, 0] == 1.0


def test_encode_bad_input_raises():
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    with pytest.raises(ValueError, match="joints_vis"):
        codec.encode(np.zeros((17, 2)), np.ones(16))
    with pytest.raises(ValueError, match="joints_crop"):
        codec.encode(np.zeros(17), np.ones(17))
    with pytest.raises(ValueError, match="method"):
        HeatmapCodec((192, 256), (48, 64), 2, method="argmax")
    with pytest.raises(ValueError, match="joints_weight"):
        HeatmapCodec((192, 256), (48, 64), 2, joints_weight=[1.0] * 3).encode(np.zeros((17, 2)), np.ones(17))


# ---------------------------------------------------------------------------------------------- golden: decode
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_get_max_preds_matches_official(kind):
    z, _ = _decode_golden()
    hm = z["heatmaps"] if kind == "numpy" else torch.from_numpy(z["heatmaps"])
    coords, maxvals = get_max_preds(hm)
    assert type(coords) is type(hm)
    np.testing.assert_allclose(np.asarray(coords), z["max_preds"], atol=1e-4)
    np.testing.assert_allclose(np.asarray(maxvals), z["maxvals"], atol=1e-4)
    assert z["maxvals"].min() <= 0  # the fixture holds a non-positive map: it must decode to (0, 0)


@pytest.mark.parametrize("post", [0, 1])
def test_decode_official_matches_get_final_preds(post):
    z, _ = _decode_golden()
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    preds, maxvals = codec.decode(z["heatmaps"], z["center"], z["scale"], post_process=bool(post))
    assert preds.shape == (6, 17, 2) and maxvals.shape == (6, 17, 1)
    np.testing.assert_allclose(preds, z[f"final_preds_post{post}"], atol=1e-4)
    np.testing.assert_allclose(maxvals, z[f"final_maxvals_post{post}"], atol=1e-4)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_flip_back_matches_official(kind):
    z, pairs = _decode_golden()
    src = z["flip_input"].copy()
    inp = src if kind == "numpy" else torch.from_numpy(src)
    out = flip_back(inp, pairs)
    np.testing.assert_allclose(np.asarray(out), z["flip_back"], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(inp), z["flip_input"])  # input untouched


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("shift", [True, False])
def test_merge_flip_matches_official(kind, shift):
    z, pairs = _decode_golden()
    # `flip_input` is the raw model output on the mirrored image, `heatmaps` the output on the image itself
    hm, flipped = z["heatmaps"].copy(), z["flip_input"].copy()
    if kind == "torch":
        hm, flipped = torch.from_numpy(hm), torch.from_numpy(flipped)
    merged = merge_flip(hm, flipped, pairs, shift=shift)
    assert type(merged) is type(hm)
    key = "flip_test_merged_shift" if shift else "flip_test_merged_noshift"
    np.testing.assert_allclose(np.asarray(merged), z[key], atol=1e-4)
    np.testing.assert_array_equal(np.asarray(flipped), z["flip_input"])


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_accuracy_matches_official(kind):
    z, _ = _decode_golden()
    out, tgt = z["heatmaps"], z["acc_target"]
    if kind == "torch":
        out, tgt = torch.from_numpy(out), torch.from_numpy(tgt)
    acc, avg_acc, cnt, pred = accuracy(out, tgt)
    np.testing.assert_allclose(acc, z["acc"], atol=1e-4)
    assert avg_acc == pytest.approx(z["acc_avg_cnt"][0], abs=1e-4)
    assert cnt == int(z["acc_avg_cnt"][1])
    np.testing.assert_allclose(pred, z["max_preds"], atol=1e-4)


def test_accuracy_perfect_and_uncounted():
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    joints = np.array([[100.0, 120.0], [4.0, 4.0]])  # joint 1 lands on heatmap pixel (1, 1): not counted
    target, _ = codec.encode(joints, np.ones(2))
    acc, avg_acc, cnt, _ = accuracy(target[None], target[None])
    assert cnt == 1 and avg_acc == 1.0
    assert acc[1] == 1.0 and acc[2] == -1.0


# ---------------------------------------------------------------------------------------------- round trips
def _random_joints(n, rng, size_wh=(192, 256), margin=16.0):
    return rng.uniform([margin, margin], [size_wh[0] - 1 - margin, size_wh[1] - 1 - margin], size=(n, 2))


def _round_trip_error(method, joints):
    codec = HeatmapCodec((192, 256), (48, 64), 2, method=method)
    target, weight = codec.encode(joints, np.ones(len(joints)))
    assert np.all(weight == 1)
    center, scale = np.array([[96.0, 128.0]]), np.array([[192 / 200.0, 256 / 200.0]])
    preds, maxvals = codec.decode(target[None], center, scale)  # the crop is the whole image: img == crop
    assert np.all(maxvals > 0.5)
    return np.abs(preds[0].astype(np.float64) - joints)


def test_round_trip_official_within_quantisation():
    joints = _random_joints(40, np.random.default_rng(0))
    err = _round_trip_error("official", joints)
    assert err.max() <= 2.0 + 1e-3  # stride 4: the target centre is the rounded heatmap pixel
    assert err.mean() > 0.5  # and the quantisation is really there


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_round_trip_sub_pixel(method):
    joints = _random_joints(40, np.random.default_rng(1))
    err = _round_trip_error(method, joints)
    assert err.max() < 0.1, err.max()
    assert err.mean() < 0.03


def test_udp_flip_is_exact():
    # With UDP's stride a mirrored crop gives exactly the mirrored heatmap: no one-pixel shift needed.
    rng = np.random.default_rng(2)
    joints = _random_joints(17, rng)
    codec = HeatmapCodec((192, 256), (48, 64), 2, method="udp")
    assert codec.shift_heatmap is False
    target, _ = codec.encode(joints, np.ones(17))
    mirrored = joints.copy()
    mirrored[:, 0] = 192 - 1 - mirrored[:, 0]  # the official fliplr_joints convention
    mirrored = mirrored[COCO.flip_index()]
    target_m, _ = codec.encode(mirrored, np.ones(17))
    np.testing.assert_allclose(flip_back(target_m[None], COCO_PAIRS)[0], target, atol=1e-5)
    merged = merge_flip(target[None], target_m[None], COCO_PAIRS, shift=False)
    np.testing.assert_allclose(merged[0], target, atol=1e-5)


@pytest.mark.parametrize("method", ["official", "dark", "udp"])
def test_decode_is_vectorised_consistently(method):
    rng = np.random.default_rng(3)
    hm = rng.random((3, 16, 64, 64)).astype(np.float32) ** 8
    codec = HeatmapCodec((256, 256), (64, 64), 2, method=method)
    centers = rng.uniform(100, 400, size=(3, 2))
    scales = rng.uniform(0.5, 3.0, size=(3, 2))
    batch, scores = codec.decode(hm, centers, scales)
    for i in range(3):
        one, s1 = codec.decode(hm[i : i + 1], centers[i : i + 1], scales[i : i + 1])
        np.testing.assert_allclose(batch[i], one[0], atol=1e-3)
        np.testing.assert_array_equal(scores[i], s1[0])


def test_decode_accepts_torch_and_rejects_bad_shapes():
    codec = HeatmapCodec((192, 256), (48, 64), 2, method="dark")
    z, _ = _decode_golden()
    a, _ = codec.decode(z["heatmaps"], z["center"], z["scale"])
    b, _ = codec.decode(torch.from_numpy(z["heatmaps"]), z["center"], z["scale"])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="heatmaps must be"):
        codec.decode(np.zeros((2, 17, 64, 64), np.float32), np.zeros((2, 2)), np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------- degenerate maps
@pytest.mark.parametrize("method", ["official", "dark", "udp"])
@pytest.mark.parametrize("fill", [0.0, -0.3, 1e-30])
def test_flat_or_negative_maps_decode_finite(method, fill):
    codec = HeatmapCodec((192, 256), (48, 64), 2, method=method)
    hm = np.full((2, 17, 64, 48), fill, dtype=np.float32)
    hm[1, :, 10:20, 10:20] = -1.0  # negative blobs on a flat map
    preds, maxvals = codec.decode(hm, np.array([[100.0, 100.0], [50.0, 60.0]]), np.ones((2, 2)))
    assert np.all(np.isfinite(preds)) and np.all(np.isfinite(maxvals))
    if fill <= 0:
        assert np.all(maxvals <= 0)
        coords_hm, _ = codec.decode_hm(hm)
        np.testing.assert_array_equal(coords_hm, 0.0)
    assert codec.decode(hm[:0], np.zeros((0, 2)), np.ones((0, 2)))[0].shape == (0, 17, 2)


@pytest.mark.parametrize("method", ["dark", "udp"])
def test_single_spike_and_border_peaks_are_finite(method):
    codec = HeatmapCodec((192, 256), (48, 64), 2, method=method)
    hm = np.zeros((1, 4, 64, 48), dtype=np.float32)
    hm[0, 0, 30, 20] = 1.0  # a delta
    hm[0, 1, 0, 0] = 1.0  # corner
    hm[0, 2, 63, 47] = 1.0
    hm[0, 3, 1, 2] = 1.0
    coords, _ = codec.decode_hm(hm)
    assert np.all(np.isfinite(coords))
    # UDP pads the log-map by its edge values, which moves a corner peak half a pixel outward
    np.testing.assert_allclose(coords[0], [[20, 30], [0, 0], [47, 63], [2, 1]], atol=0.5 + 1e-3)


def test_dark_kernel_size():
    assert dark_kernel_size(2) == 11  # the DARK/MMPose kernel for sigma 2
    assert all(dark_kernel_size(s) % 2 == 1 for s in (1, 1.5, 2, 3, 4))


# ---------------------------------------------------------------------------------------------- build_codec
def _cfg(decoder="official", target_type="gaussian", joints_weight=False):
    return CfgNode(
        {
            "MODEL": {"IMAGE_SIZE": [192, 256], "HEATMAP_SIZE": [48, 64], "SIGMA": 2, "TARGET_TYPE": target_type},
            "LOSS": {"USE_DIFFERENT_JOINTS_WEIGHT": joints_weight},
            "HRPOSE": {"DECODER": decoder},
        }
    )


def test_build_codec():
    codec = build_codec(_cfg("dark"))
    assert codec.method == "dark" and codec.joints_weight is None
    np.testing.assert_array_equal(codec.input_size, [192, 256])
    np.testing.assert_array_equal(codec.heatmap_size, [48, 64])
    weighted = build_codec(_cfg(joints_weight=True), meta=MPII)
    _, w = weighted.encode(np.full((16, 2), 100.0), np.ones(16))
    np.testing.assert_allclose(w[:, 0], MPII.joints_weight)
    with pytest.raises(ValueError, match="TARGET_TYPE"):
        build_codec(_cfg(target_type="offset"))
    with pytest.raises(ValueError, match="DECODER"):
        build_codec(_cfg(decoder="soft-argmax"))
    with pytest.raises(ValueError, match="USE_DIFFERENT_JOINTS_WEIGHT"):
        build_codec(_cfg(joints_weight=True), meta=dataclasses.replace(MPII, joints_weight=()))
    with pytest.warns(UserWarning, match="no DatasetMeta"):
        assert build_codec(_cfg(joints_weight=True)).joints_weight is None  # decode-only use


def test_build_codec_from_default_config():
    from hrpose.config import get_default_config

    cfg = get_default_config()
    codec = build_codec(cfg)
    assert codec.method == cfg.HRPOSE.DECODER
    np.testing.assert_array_equal(codec.heatmap_size, cfg.MODEL.HEATMAP_SIZE)


# ---------------------------------------------------------------------------------------------- benchmark
def _benchmark():
    spec = importlib.util.spec_from_file_location("decode_error", ROOT / "benchmarks" / "decode_error.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_dark_cuts_quarter_shift_error():
    bench = _benchmark()
    clean = bench.decode_errors(200, noise=0.0, seed=0)
    assert clean["quarter"] >= 3 * clean["dark"], clean
    assert clean["argmax"] > clean["quarter"] > clean["dark"]
    assert clean["udp"] < 0.1
    noisy = bench.decode_errors(200, noise=0.02, seed=1)
    assert noisy["dark"] < noisy["quarter"], noisy
    assert noisy["udp"] < noisy["quarter"], noisy
