"""Every model in `hrpose.models.MODELS`, built from a tiny config: forward, backward, save/load round trip.

No golden files: the checks are the model contract every registered architecture must keep, so a model
added to `MODELS` is covered as soon as it has an entry in `TINY_EXTRA` (the test fails until it does).
Contract: `build_model(cfg)` maps (N, 3, H, W) float32 crops, H x W = MODEL.IMAGE_SIZE[::-1], to
(N, MODEL.NUM_JOINTS, H/4, W/4) heatmaps (MODEL.HEATMAP_SIZE[::-1]).
"""

from __future__ import annotations

import pytest
import torch

from helpers import tiny_hrnet_extra
from hrpose.config import get_default_config, merge_dict
from hrpose.models import MODELS, build_model
from hrpose.models.weights import load_weights, save_weights

# MODEL.EXTRA of a tiny instance of each registered architecture (few channels, one block per stage)
TINY_EXTRA = {
    "pose_hrnet": tiny_hrnet_extra(4),
    "pose_resnet": {"NUM_LAYERS": 18, "DECONV_WITH_BIAS": False, "NUM_DECONV_LAYERS": 3,
                    "NUM_DECONV_FILTERS": [8, 8, 8], "NUM_DECONV_KERNELS": [4, 4, 4], "FINAL_CONV_KERNEL": 1},
}  # fmt: skip
JOINTS = 5  # not the default 17: the head must follow MODEL.NUM_JOINTS
IMAGE_WH = (32, 64)  # not square: width and height must not be swapped


def tiny_cfg(name: str):
    cfg = get_default_config()
    merge_dict(cfg, {"MODEL": {"NAME": name, "NUM_JOINTS": JOINTS, "IMAGE_SIZE": list(IMAGE_WH),
                               "HEATMAP_SIZE": [IMAGE_WH[0] // 4, IMAGE_WH[1] // 4], "PRETRAINED": "",
                               "EXTRA": TINY_EXTRA[name]}})  # fmt: skip
    return cfg


def test_every_registered_model_has_a_tiny_config():
    missing = sorted(set(MODELS) - set(TINY_EXTRA))
    assert not missing, f"add a tiny MODEL.EXTRA for {missing} to TINY_EXTRA in {__file__}"
    assert not set(TINY_EXTRA) - set(MODELS), "TINY_EXTRA names a model that is not in MODELS"


def test_config_names_every_model():
    """The config layer checks MODEL.NAME against `hrpose.config.MODEL_NAMES` (it sits below the model code):
    the same names as `MODELS`."""
    from hrpose.config import MODEL_NAMES

    assert set(MODEL_NAMES) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_tiny_model_forward_backward_and_state_dict_round_trip(name, tmp_path):
    if name not in TINY_EXTRA:
        pytest.fail(f"no tiny config for {name}: add it to TINY_EXTRA")
    cfg = tiny_cfg(name)
    torch.manual_seed(0)
    model = build_model(cfg, is_train=True).train()  # the training init (N(0, 0.001), no MODEL.PRETRAINED)
    x = torch.randn(2, 3, IMAGE_WH[1], IMAGE_WH[0])
    out = model(x)
    assert out.shape == (2, JOINTS, IMAGE_WH[1] // 4, IMAGE_WH[0] // 4)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"

    # a train-mode step moved the BatchNorm statistics; the round trip must carry them (and every weight)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.eval()
    with torch.inference_mode():
        want = model(x)
    path = save_weights(model, tmp_path / f"{name}.safetensors")
    torch.manual_seed(1)
    fresh = build_model(cfg).eval()
    with torch.inference_mode():
        assert not torch.allclose(fresh(x), want)  # so the comparison below means something
    load_weights(fresh, path)
    with torch.inference_mode():
        got = fresh(x)
    assert torch.equal(got, want)
    assert fresh.state_dict().keys() == model.state_dict().keys()
