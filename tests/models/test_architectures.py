"""pose_hrnet / pose_resnet against the official architectures (keys, shapes, order, params) and outputs."""

from __future__ import annotations

import copy
import importlib.util

import numpy as np
import pytest
import torch
from yacs.config import CfgNode

from conftest import GOLDEN, golden_json, golden_npz
from helpers import tiny_hrnet
from hrpose.models import MODELS, build_model
from hrpose.models.weights import CheckpointError, save_weights

ARCHS = golden_json("architectures.json")
EXPERIMENTS = golden_json("experiments.json")
OUTPUTS = golden_json("model_outputs.json")


def _fill_module():
    spec = importlib.util.spec_from_file_location("golden_fill", GOLDEN / "fill.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cfg_for(experiment: str, **model_overrides) -> CfgNode:
    """The fully merged official config of one experiment (MODEL.* overridable)."""
    cfg = CfgNode(copy.deepcopy(EXPERIMENTS[experiment]))
    for k, v in model_overrides.items():
        cfg.MODEL[k] = v
    return cfg


def short(a: dict) -> str:
    return a["experiment"].removeprefix("experiments/").removesuffix(".yaml")


def test_every_registered_model_is_covered_by_the_golden_architectures():
    assert {a["model"] for a in ARCHS} == set(MODELS)


@pytest.mark.parametrize("arch", ARCHS, ids=short)
def test_state_dict_keys_shapes_order_and_params_equal_official(arch):
    cfg = cfg_for(arch["experiment"])
    with torch.device("meta"):  # shapes only: the 68M-parameter models build in milliseconds
        model = build_model(cfg)
        out = model.eval()(torch.empty(1, 3, *reversed(arch["image_size_wh"])))
    got = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert got == arch["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == arch["params"]
    assert list(out.shape) == arch["output_shape"]


@pytest.mark.parametrize("case", OUTPUTS, ids=lambda c: c["key"])
def test_outputs_match_official(case):
    fill = _fill_module()
    model = build_model(cfg_for(case["experiment"]))
    fill.fill_(model, case["seed"])
    x = fill.golden_input(case["batch"], *case["input_hw"], case["seed"])
    with torch.inference_mode():
        got = model.eval()(x).numpy()
    expected = golden_npz("model_outputs.npz")[case["key"]]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_unknown_model_name_is_a_clear_error():
    cfg = cfg_for(ARCHS[0]["experiment"], NAME="pose_vit")
    with pytest.raises(ValueError, match="pose_vit.*pose_hrnet"):
        build_model(cfg)


def test_bad_stage_spec_is_a_clear_error():
    cfg = cfg_for(ARCHS[0]["experiment"])
    cfg.MODEL.EXTRA.STAGE3.NUM_CHANNELS = [32, 64]
    with pytest.raises(ValueError, match="NUM_BRANCHES=3.*NUM_CHANNELS"):
        build_model(cfg)


def _resnet_cfg(**overrides) -> CfgNode:
    return cfg_for("experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml", **overrides)


def _hrnet_cfg(**overrides) -> CfgNode:
    return cfg_for("experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml", **overrides)


def test_training_init_from_scratch_is_official_normal():
    model = build_model(_hrnet_cfg(PRETRAINED=""), is_train=True)
    w = model.stage3[0].branches[1][0].conv1.weight.detach()
    assert abs(float(w.std()) - 0.001) < 0.0002
    assert torch.all(model.final_layer.bias == 0)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)
    # without is_train the builder keeps PyTorch's default init (like the official test path)
    assert float(build_model(_hrnet_cfg()).conv1.weight.detach().std()) > 0.01


def test_resnet_loads_imagenet_backbone_and_ignores_classifier(tmp_path):
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(_resnet_cfg()).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    imagenet = {
        k: torch.randn(s, generator=g) if k.endswith(("weight", "bias", "running_mean", "running_var"))
        else torch.zeros(s, dtype=torch.long)
        for k, s in shapes.items()
        if k.startswith(("conv1", "bn1", "layer"))
    }
    imagenet["fc.weight"] = torch.randn(1000, 2048, generator=g)
    imagenet["fc.bias"] = torch.randn(1000, generator=g)
    path = save_weights(imagenet, tmp_path / "resnet50.pth")
    model = build_model(_resnet_cfg(PRETRAINED=str(path)), is_train=True)
    sd = model.state_dict()
    assert torch.equal(sd["layer3.5.conv2.weight"], imagenet["layer3.5.conv2.weight"])
    assert torch.equal(sd["bn1.running_var"], imagenet["bn1.running_var"])
    assert abs(float(sd["deconv_layers.0.weight"].std()) - 0.001) < 0.0002
    assert "fc.weight" not in sd


def test_hrnet_pretrained_honours_pretrained_layers(tmp_path):
    cfg = _hrnet_cfg()
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
    imagenet = {k: torch.full(s, 0.5) for k, s in shapes.items()}  # the whole backbone (strictly required)
    imagenet["final_layer.weight"] = torch.full((2048, 256, 1, 1), 0.5)  # the ImageNet head: not a pose head
    imagenet["incre_modules.0.0.conv1.weight"] = torch.full((32, 32, 1, 1), 0.5)
    imagenet["classifier.weight"] = torch.full((1000, 2048), 0.5)
    path = save_weights(imagenet, tmp_path / "hrnet_w32.pth")

    cfg.MODEL.PRETRAINED = str(path)
    cfg.MODEL.EXTRA.PRETRAINED_LAYERS = ["conv1", "stage2"]
    model = build_model(cfg, is_train=True)
    assert torch.all(model.conv1.weight == 0.5)
    assert torch.all(model.stage2[0].branches[0][0].conv1.weight == 0.5)
    assert not torch.any(model.layer1[0].conv1.weight == 0.5)  # layer1 not listed
    assert not torch.any(model.final_layer.weight == 0.5)

    cfg.MODEL.EXTRA.PRETRAINED_LAYERS = ["*"]
    model = build_model(cfg, is_train=True)
    assert torch.all(model.layer1[0].conv1.weight == 0.5)
    assert model.final_layer.weight.shape == (17, 32, 1, 1)  # wrong-shaped ImageNet head skipped


def test_missing_pretrained_file_names_the_path_and_the_way_out():
    with pytest.raises(FileNotFoundError, match=r"nowhere/resnet50\.pth.*MODEL\.PRETRAINED ''"):
        build_model(_resnet_cfg(PRETRAINED="nowhere/resnet50.pth"), is_train=True)


def test_pretrained_file_that_fits_nothing_is_refused(tmp_path):
    path = save_weights({"something.else": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="no weights"):
        build_model(_resnet_cfg(PRETRAINED=str(path)), is_train=True)


def test_tiny_hrnet_trains_and_follows_the_input_device_and_dtype():
    model = tiny_hrnet(final_conv_kernel=3).train()
    x = torch.randn(2, 3, 64, 48)
    out = model(x)
    assert out.shape == (2, 17, 16, 12)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.inference_mode():
        assert model.double().eval()(x.double()).dtype == torch.float64


def test_pretrained_directory_means_none(tmp_path):
    # load_config joins DATA_DIR to an empty MODEL.PRETRAINED, giving a directory: train from scratch.
    model = build_model(_resnet_cfg(PRETRAINED=str(tmp_path) + "/"), is_train=True)
    assert abs(float(model.layer1[0].conv1.weight.detach().std()) - 0.001) < 0.0002


def test_stage1_sets_layer1_blocks_and_width_and_its_absence_is_the_official_layer1():
    official = build_model(_hrnet_cfg())
    assert len(official.layer1) == 4 and official.layer1[0].conv1.out_channels == 64
    cfg = _hrnet_cfg()
    cfg.MODEL.EXTRA.STAGE1 = CfgNode({"NUM_BLOCKS": [1], "NUM_CHANNELS": [32]})
    small = build_model(cfg)
    assert len(small.layer1) == 1
    assert small.layer1[0].conv3.out_channels == 128  # Bottleneck: 32 * expansion 4
    assert small.transition1[0][0].in_channels == 128 and small.transition1[1][0][0].in_channels == 128
    out = small.eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 17, 16, 16)
    # keys after layer1 keep the official names, so such a model still saves and loads like any other
    assert [k for k in small.state_dict() if not k.startswith("layer1.")] == [
        k for k in official.state_dict() if not k.startswith("layer1.")
    ]


@pytest.mark.parametrize(
    ("stage1", "message"),
    [
        ({"NUM_BLOCKS": [0]}, "STAGE1.NUM_BLOCKS needs one entry >= 1"),
        ({"NUM_BRANCHES": 2, "NUM_BLOCKS": [1, 1], "NUM_CHANNELS": [64, 64]}, "STAGE1 is one module of one branch"),
        ({"BLOCK": "WIDE"}, "unknown HRNet block 'WIDE'"),
    ],
)
def test_bad_stage1_is_a_clear_error(stage1, message):
    cfg = _hrnet_cfg()
    cfg.MODEL.EXTRA.STAGE1 = CfgNode(stage1)
    with pytest.raises(ValueError, match=message):
        build_model(cfg)
