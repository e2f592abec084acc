"""The one test-time pipeline (hrpose.pipeline): `hrpose test`/validation and PoseEstimator share it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import DATA
from hrpose.codec import build_codec
from hrpose.engine.evaluate import run_inference
from hrpose.inference import PoseEstimator, WholeImageDetector
from hrpose.keypoints import COCO
from hrpose.models import build_model
from hrpose.pipeline import InferenceSettings, decode, infer_heatmaps, model_backend, predict_crops, rescore
from hrpose.runtime import Backend, make_backend
from hrpose.runtime.torch_backend import TorchBackend

IMAGE = DATA / "samples" / "coco" / "000000000785.jpg"
BOXES = np.array([[277.1, 45.7, 225.1, 333.6, 0.99], [10, 10, 60, 120, 0.5], [300, 200, 100, 100, 0.8]], np.float32)


@pytest.fixture(scope="module")
def tiny(tiny_pose):
    return tiny_pose[1:]  # (config, model)


def _cfg_with(cfg, **test):
    c = cfg.clone()
    c.defrost()
    for k, v in test.items():
        if k == "DECODER":
            c.HRPOSE.DECODER = v
        else:
            c.TEST[k] = v
    return c


def test_settings_from_config_apply_the_udp_rule(tiny):
    cfg, _ = tiny
    s = InferenceSettings.from_config(cfg)
    assert (s.flip_test, s.shift_heatmap, s.post_process, s.in_vis_thre) == (True, True, True, 0.2)
    assert not InferenceSettings.from_config(_cfg_with(cfg, DECODER="udp")).shift_heatmap  # UDP's flip needs no shift
    assert InferenceSettings.from_config(_cfg_with(cfg, DECODER="dark")).shift_heatmap
    assert not InferenceSettings.from_config(_cfg_with(cfg, SHIFT_HEATMAP=False)).shift_heatmap
    assert not InferenceSettings.from_config(_cfg_with(cfg, FLIP_TEST=False)).flip_test
    assert InferenceSettings.from_config(_cfg_with(cfg, FLIP_TEST=False), flip_test=True).flip_test
    s2 = InferenceSettings.from_config(_cfg_with(cfg, POST_PROCESS=False, IN_VIS_THRE=0.5))
    assert (s2.post_process, s2.in_vis_thre) == (False, 0.5)
    with pytest.raises(AttributeError):  # frozen: read once, never changed on the way
        s.flip_test = False  # type: ignore[misc]
    # the estimator built from a UDP config runs the UDP rule too (one place decides it)
    model = build_model(_cfg_with(cfg, DECODER="udp"))
    est = PoseEstimator.from_model(model, _cfg_with(cfg, DECODER="udp"), detector=WholeImageDetector())
    assert est.settings == InferenceSettings.from_config(_cfg_with(cfg, DECODER="udp"))
    assert not est.settings.shift_heatmap


def test_run_inference_and_the_estimator_agree(tiny):
    """The same crops through `hrpose test`'s loop and through PoseEstimator: the same keypoints and scores."""
    cfg, model = tiny
    est = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())
    poses = est(IMAGE, boxes=BOXES)
    image = cv2.imread(str(IMAGE))
    crops, centers, scales = est.crops(image, BOXES)
    meta = {
        "center": torch.from_numpy(centers.astype(np.float64)),
        "scale": torch.from_numpy(scales.astype(np.float64)),
        "score": torch.from_numpy(BOXES[:, 4].astype(np.float64)),
        "image": [str(IMAGE)] * len(BOXES),
        "index": torch.arange(len(BOXES)),
    }
    loader = [(torch.from_numpy(crops), torch.zeros(0), torch.zeros(0), meta)]
    out = run_inference(model, loader, "cpu", est.codec, settings=est.settings, flip_pairs=COCO.flip_pairs)
    got = np.stack([p.keypoints for p in poses])
    # the estimator runs crops + mirrors in one call (2N), validation in two: equal to float rounding
    np.testing.assert_allclose(out.preds, got, rtol=0, atol=1e-4)
    np.testing.assert_allclose(out.preds[:, :, 2], got[:, :, 2], rtol=0, atol=1e-6)
    scores = rescore(out.preds, out.boxes[:, 5], est.settings.in_vis_thre)
    np.testing.assert_allclose(scores, [p.score for p in poses], rtol=1e-5)
    # and the shared functions, called directly, give what the estimator gives
    kpts, s = predict_crops(est.backend, crops, centers, scales, BOXES[:, 4], codec=est.codec,
                            flip_pairs=COCO.flip_pairs, settings=est.settings, one_call=True)  # fmt: skip
    np.testing.assert_array_equal(kpts, got)
    np.testing.assert_array_equal(s, [p.score for p in poses])
    # ... and, in two calls, what validation gives (the same maxima: the same heatmaps)
    kpts2, _ = predict_crops(est.backend, crops, centers, scales, BOXES[:, 4], codec=est.codec,
                             flip_pairs=COCO.flip_pairs, settings=est.settings)  # fmt: skip
    np.testing.assert_array_equal(kpts2[:, :, 2], out.preds[:, :, 2])
    np.testing.assert_allclose(kpts2, out.preds, rtol=0, atol=1e-4)  # float32 vs float64 centers in decode


def test_validation_restores_train_mode_and_leaves_the_model_alone(tiny):
    cfg, base = tiny
    model = build_model(cfg)
    model.load_state_dict(base.state_dict())
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = {k: v.data_ptr() for k, v in model.named_parameters()}
    backend = model_backend(model)
    assert backend.model is model and isinstance(backend, Backend)  # no copy
    crops = np.random.default_rng(0).normal(size=(2, 3, 64, 32)).astype(np.float32)
    settings = InferenceSettings.from_config(cfg)
    hm = infer_heatmaps(backend, torch.from_numpy(crops), COCO.flip_pairs, settings)
    assert model.training  # given back after the call
    for k, v in model.state_dict().items():  # BN statistics untouched (eval mode while running)
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert {k: v.data_ptr() for k, v in model.named_parameters()} == params
    # equals the eval-mode model, flip-merged by hand
    ref = infer_heatmaps(make_backend("torch", base, fold_bn=False), crops, COCO.flip_pairs, settings)
    np.testing.assert_allclose(hm, ref, rtol=0, atol=1e-6)
    assert not base.training
    model.eval()
    infer_heatmaps(backend, crops, COCO.flip_pairs, settings)
    assert not model.training  # an eval model stays so


def test_flip_heatmaps_is_the_codec_merge(tiny):
    cfg, model = tiny
    crops = np.random.default_rng(1).normal(size=(3, 3, 64, 32)).astype(np.float32)
    backend = TorchBackend(model, fold_bn=False, channels_last=False)
    with torch.inference_mode():
        direct = model(torch.from_numpy(crops)).numpy()
        mirrored = model(torch.from_numpy(np.ascontiguousarray(crops[..., ::-1]))).numpy()
    back = mirrored[:, COCO.flip_index(), :, ::-1].copy()
    unflipped = infer_heatmaps(backend, crops, COCO.flip_pairs, InferenceSettings(flip_test=False))
    np.testing.assert_allclose(unflipped, direct,
                               atol=1e-6)  # fmt: skip
    unshifted = infer_heatmaps(backend, crops, COCO.flip_pairs, InferenceSettings(shift_heatmap=False))
    np.testing.assert_allclose(unshifted, (direct + back) / 2, atol=1e-6)
    back[..., 1:] = back[..., :-1].copy()
    shifted = infer_heatmaps(backend, crops, COCO.flip_pairs, InferenceSettings())
    np.testing.assert_allclose(shifted, (direct + back) / 2, atol=1e-6)
    # decode: image coordinates and the maxima as the third column, float32
    codec = build_codec(cfg, COCO)
    centers, scales = np.array([[100.0, 100.0]] * 3), np.array([[1.0, 2.0]] * 3)
    kp = decode(codec, shifted, centers, scales, InferenceSettings())
    coords, maxvals = codec.decode(shifted, centers, scales, post_process=True)
    assert kp.dtype == np.float32 and kp.shape == (3, 17, 3)
    np.testing.assert_array_equal(kp[:, :, :2], coords.astype(np.float32))
    np.testing.assert_array_equal(kp[:, :, 2], maxvals[:, :, 0].astype(np.float32))


def test_rescore_is_the_official_float32_rule():
    preds = np.zeros((2, 3, 3), np.float32)
    preds[0, :, 2] = [0.1, 0.5, 0.9]
    preds[1, :, 2] = [0.0, 0.1, 0.2]
    np.testing.assert_allclose(rescore(preds, np.array([0.5, 1.0]), 0.2), [0.35, 0.0], rtol=1e-6)
    # the sum runs in float32, left to right (the official per-joint loop), not in float64
    s = np.float32(0.5) + np.float32(0.9)
    assert rescore(preds, np.array([1.0, 1.0]), 0.2)[0] == float(s / np.float32(2))


def test_constructor_takes_parts_and_reads_no_file(tiny):
    cfg, _ = tiny
    calls = []

    def network(batch):
        calls.append(batch.shape)
        hm = np.zeros((len(batch), 17, 16, 8), np.float32)
        hm[:, :, 8, 4] = 1.0
        return hm

    codec = build_codec(cfg, COCO)
    est = PoseEstimator(network, codec, COCO, settings=InferenceSettings(flip_test=False), color_rgb=True,
                        detector=WholeImageDetector(), batch_size=2)  # fmt: skip
    assert est.input_size == (32, 64) and est.device == torch.device("cpu") and est.cfg is None
    poses = est(IMAGE, boxes=BOXES)
    assert calls == [(2, 3, 64, 32), (1, 3, 64, 32)] and len(poses) == 3
    np.testing.assert_allclose(poses[0].score, 0.99, rtol=1e-6)
    with pytest.raises(TypeError, match="from_config"):
        PoseEstimator("tiny.yaml", codec, COCO)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="from_config"):  # the call of the old API: config and weights
        PoseEstimator("tiny.yaml", "weights.pth")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs the codec"):
        PoseEstimator(network, codec)
    with pytest.raises(ValueError, match="batch_size"):
        PoseEstimator(network, codec, COCO, batch_size=0)


def test_predict_many_batches_people_across_images(tiny):
    cfg, model = tiny
    base = PoseEstimator.from_model(model, cfg, detector=WholeImageDetector())
    sizes: list[int] = []

    def network(batch):
        sizes.append(len(batch))
        return base.backend(batch)

    est = PoseEstimator(network, base.codec, base.meta, settings=base.settings, color_rgb=base.color_rgb,
                        detector=WholeImageDetector(), batch_size=4)  # fmt: skip
    image = cv2.imread(str(IMAGE))
    images = [image, image[:, ::-1].copy(), image[:300], image]
    boxes = [BOXES[:1], BOXES[1:3], None, BOXES]  # 1 + 2 + 1 (whole image) + 3 people
    one_by_one = [est(im, boxes=b) for im, b in zip(images, boxes)]
    calls_one = len(sizes)
    sizes.clear()
    many = est.predict_many(images, boxes)
    assert sizes == [8, 6]  # 4 + 3 people (crops + mirrors), instead of one call per image
    assert calls_one == 4  # one per image
    assert [len(p) for p in many] == [1, 2, 1, 3]
    for got, want in zip(many, one_by_one):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a.keypoints, b.keypoints, rtol=0, atol=1e-4)
            np.testing.assert_allclose(a.score, b.score, rtol=1e-5)
            np.testing.assert_array_equal(a.box, b.box)
            assert a.box_score == b.box_score
    assert est.predict_many([]) == []
    with pytest.raises(ValueError, match="box lists"):
        est.predict_many(images, boxes[:2])


def _peaked_heatmaps(rng: np.random.Generator, n: int, k: int, hm_wh: tuple[int, int]) -> np.ndarray:
    """Gaussian peaks (sigma 2) at sub-pixel positions away from the border, plus a little noise."""
    w, h = hm_wh
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(4, w - 5, (n, k, 1, 1))
    cy = rng.uniform(4, h - 5, (n, k, 1, 1))
    hm = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 2.0**2))
    return (hm + 0.01 * rng.standard_normal(hm.shape)).astype(np.float32)


@pytest.mark.parametrize("method", ["official", "dark", "udp"])
def test_bench_keypoints_are_the_pipelines_decode_on_the_identity_crop(method):
    """`hrpose bench` compares keypoints decoded by `pipeline.decode` (the identity crop: center = the input's
    middle, scale = its size / PIXEL_STD), so a change to decoding reaches test, predict and bench alike; in
    input pixels they are the codec's crop coordinates (what bench computed before, by its own path)."""
    from hrpose.bench import decode_input_px, identity_crops, keypoints_input_px
    from hrpose.codec import HeatmapCodec

    size, hm_size = (192, 256), (48, 64)
    codec = HeatmapCodec(size, hm_size, 2.0, method=method)
    hm = _peaked_heatmaps(np.random.default_rng(3), 3, 17, hm_size)
    settings = InferenceSettings(flip_test=False)
    centers, scales = identity_crops(3, size)
    np.testing.assert_allclose(centers, [[96.0, 128.0]] * 3)
    np.testing.assert_allclose(scales, [[0.96, 1.28]] * 3)
    got = decode_input_px(hm, size, codec, settings)
    np.testing.assert_array_equal(got, decode(codec, hm, centers, scales, settings))
    np.testing.assert_array_equal(keypoints_input_px(hm, size, codec, settings), got[..., :2])
    # the way bench decoded before (codec.decode_hm + hm_to_crop, in input pixels): the same keypoints
    before = codec.hm_to_crop(codec.decode_hm(hm, post_process=True)[0])
    np.testing.assert_allclose(got[..., :2], before, atol=1e-3)
    np.testing.assert_array_equal(got[..., 2], _max_scores(hm))


def _max_scores(hm: np.ndarray) -> np.ndarray:
    from hrpose.codec import get_max_preds

    return np.asarray(get_max_preds(hm)[1])[..., 0]


def test_bench_keypoints_without_a_codec_are_the_bare_argmax_times_the_stride():
    """Without a codec bench's keypoints are the argmax in input pixels, as its old `keypoints_input_px`
    computed them (get_max_preds times the stride): a one-pixel peak lands on its input pixel."""
    from hrpose.bench import keypoints_input_px
    from hrpose.codec import get_max_preds

    hm = np.zeros((2, 3, 64, 48), np.float32)
    peaks = [[(10, 20), (0, 0), (47, 63)], [(5, 7), (30, 1), (12, 50)]]  # (x, y) in heatmap pixels
    for i, person in enumerate(peaks):
        for j, (x, y) in enumerate(person):
            hm[i, j, y, x] = 1.0
            hm[i, j, y, min(x + 1, 47)] += 0.5 if x < 47 else 0.0  # a neighbour: post-processing would move it
    got = keypoints_input_px(hm, (192, 256))
    np.testing.assert_array_equal(got, np.asarray(peaks, np.float32) * 4)
    old = np.asarray(get_max_preds(hm)[0]) * (192 / 48)  # the old function's body
    np.testing.assert_array_equal(got, old)
    # with the official codec and post-processing the quarter-pixel shift applies (towards the neighbour)
    from hrpose.codec import HeatmapCodec

    shifted = keypoints_input_px(hm, (192, 256), HeatmapCodec((192, 256), (48, 64), 2.0))
    assert shifted[0, 0, 0] == 41.0 and shifted[0, 0, 1] == 80.0
