import numpy as np
import pytest

from conftest import golden_json
from hrpose import geometry


@pytest.mark.parametrize("case", range(len(golden_json("transforms.json")["get_affine_transform"])))
def test_affine_transform_matches_official(case):
    c = golden_json("transforms.json")["get_affine_transform"][case]
    m = geometry.get_affine_transform(
        np.array(c["center"]), np.array(c["scale"]), c["rot"], c["output_size_wh"], np.array(c["shift"]), bool(c["inv"])
    )
    np.testing.assert_allclose(m, np.array(c["matrix"]), atol=1e-4, rtol=0)
    np.testing.assert_allclose(geometry.affine_transform(np.array(c["points"]), m), c["mapped_points"], atol=1e-4)


def test_transform_preds_matches_official():
    for c in golden_json("transforms.json")["transform_preds"]:
        got = geometry.transform_preds(np.array(c["coords"]), c["center"], c["scale"], c["heatmap_size_wh"])
        np.testing.assert_allclose(got, np.array(c["result"])[..., :2], atol=1e-4)
        batch = geometry.transform_preds_batch(
            np.array(c["coords"])[None], [c["center"]], [c["scale"]], c["heatmap_size_wh"]
        )
        np.testing.assert_allclose(batch[0], got, atol=1e-4)


def test_crop_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        center = rng.uniform(50, 500, 2)
        scale = rng.uniform(0.5, 3, 2)
        rot = float(rng.uniform(-40, 40))
        size = (192, 256)
        fwd = geometry.get_affine_transform(center, scale, rot, size)
        inv = geometry.get_affine_transform(center, scale, rot, size, inv=True)
        pts_img = rng.uniform(0, 600, (17, 2))
        pts_crop = geometry.affine_transform(pts_img, fwd)
        np.testing.assert_allclose(geometry.affine_transform(pts_crop, inv), pts_img, atol=1e-2)


def test_box_center_scale_round_trip():
    center, scale = geometry.box_to_center_scale([10, 20, 60, 80], aspect_ratio=0.75)
    np.testing.assert_allclose(center, [40, 60])
    np.testing.assert_allclose(scale, [80 * 0.75 / 200 * 1.25, 80 / 200 * 1.25], rtol=1e-6)
    box = geometry.center_scale_to_box(center, scale)
    np.testing.assert_allclose(box, [40 - 30, 20, 60, 80], atol=1e-4)
