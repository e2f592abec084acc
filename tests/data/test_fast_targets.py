"""The official heatmap targets made by pasting one Gaussian patch per joint (codec._paste_official) equal the
whole-grid formula of the official code bit for bit: a dense re-implementation written here, independent of
the code under test, over random joints (inside, at the edges, off the map, invisible) and several sigmas."""

from __future__ import annotations

import numpy as np
import pytest

from hrpose.codec import HeatmapCodec


def _dense_official(joints, vis, input_wh, heatmap_wh, sigma):
    # the official generate_target, vectorised over the whole grid (float32 like its patch)
    w, h = heatmap_wh
    stride = np.asarray(input_wh, dtype=np.float64) / np.asarray(heatmap_wh, dtype=np.float64)
    tmp = sigma * 3
    k = joints.shape[0]
    target = np.zeros((k, h, w), dtype=np.float32)
    weight = vis.astype(np.float32).reshape(-1, 1)
    size = 2 * tmp + 1
    for j in range(k):
        mu_x = int(joints[j, 0] / stride[0] + 0.5)
        mu_y = int(joints[j, 1] / stride[1] + 0.5)
        ul = [int(mu_x - tmp), int(mu_y - tmp)]
        br = [int(mu_x + tmp + 1), int(mu_y + tmp + 1)]
        if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        if weight[j] <= 0.5:
            continue
        x = np.arange(0, size, 1, np.float32)
        y = x[:, None]
        x0 = y0 = size // 2
        d2 = ((x - x0) ** 2).astype(np.float32)[None, :] + ((y - y0) ** 2).astype(np.float32)
        g = np.exp(-d2 / np.float32(2 * sigma**2))
        g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
        img_x = max(0, ul[0]), min(br[0], w)
        img_y = max(0, ul[1]), min(br[1], h)
        target[j, img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
    return target, weight


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_pasted_patches_equal_the_dense_official_targets_bit_for_bit(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    codec = HeatmapCodec((192, 256), (48, 64), sigma)
    drawn = 0
    for _ in range(200):
        joints = rng.uniform(-60, 260, size=(17, 2))
        joints[:4] = rng.uniform(-3, 3, size=(4, 2)) * [1, 1] + rng.choice([0.0, 191.0, 255.0], size=(4, 2))
        vis = (rng.random(17) > 0.2).astype(np.float64)
        target, weight = codec.encode(joints, vis)
        ref_t, ref_w = _dense_official(joints, vis, (192, 256), (48, 64), sigma)
        assert target.dtype == np.float32 and np.array_equal(target, ref_t)
        assert np.array_equal(weight, ref_w)
        drawn += int((target.reshape(17, -1).max(axis=1) > 0).sum())
    assert drawn > 1000  # most joints were drawn, some partly off the edge


def test_nan_joint_draws_nothing():
    codec = HeatmapCodec((192, 256), (48, 64), 2)
    target, weight = codec.encode(np.array([[np.nan, 10.0], [50.0, 60.0]]), np.ones(2))
    assert not target[0].any() and target[1].max() == 1.0
