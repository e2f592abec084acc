"""Other projects' checkpoint layouts load into our models strictly and give identical heatmaps.

Each test builds a real model (HRNet-W32 / ResNet-50 from the shipped YAMLs, or a tiny one), writes its
weights under another project's key names into tmp_path (MMPose 1.x `head.*`, MMPose 0.x
`keypoint_head.*`, a torchvision/timm ResNet with `fc.*`, an HRNet ImageNet classifier with its
`incre_modules` / `downsamp_modules` / `final_layer` / `classifier` head and stage 4 fused into all four
branches), loads the file back through `load_weights` / `load_pretrained`, and compares outputs.
The foreign key names were read from those projects' code: mmpose/models/backbones/hrnet.py, resnet.py,
heads/heatmap_heads/heatmap_head.py (1.x), topdown_heatmap_simple_head.py (0.x), HRNet-Image-Classification
lib/models/cls_hrnet.py and timm/models/hrnet.py.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from hrpose.config import load_config
from hrpose.models import build_model
from hrpose.models.hrnet import HighResolutionModule
from hrpose.models.weights import (
    CheckpointError,
    convert_state_dict,
    detect_layout,
    load_pretrained,
    load_weights,
)

ROOT = Path(__file__).resolve().parents[2]
W32 = ROOT / "experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml"
RES50 = ROOT / "experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml"
X = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
HEAD = ("final_layer.", "deconv_layers.")


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every tensor random (BN statistics too), so that a key loaded into the wrong place shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def w32():
    return randomised(build_model(load_config(W32)), 1)


@pytest.fixture(scope="module")
def res50():
    return randomised(build_model(load_config(RES50)), 2)


def heatmaps(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(X)


def mmpose1_checkpoint(sd: dict) -> dict:
    """MMPose 1.x TopdownPoseEstimator: backbone.*, head.* (HeatmapHead), data_preprocessor.*, meta beside it.
    The meta holds NumPy arrays (dataset_meta sigmas) as MMEngine's checkpoints do."""
    state = OrderedDict()
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    for k, v in sd.items():
        state[("head." if k.startswith(HEAD) else "backbone.") + k] = v
    meta = {"mmengine_version": "0.8.4", "dataset_meta": {"dataset_name": "coco",
            "sigmas": np.full(17, 0.05, np.float32), "flip_indices": list(range(17))}}  # fmt: skip
    return {"meta": meta, "state_dict": state}


def mmpose0_checkpoint(sd: dict) -> dict:
    state = OrderedDict((("keypoint_head." if k.startswith(HEAD) else "backbone.") + k, v) for k, v in sd.items())
    return {"meta": {"mmcv_version": "1.3.8", "CLASSES": None}, "state_dict": state}


@pytest.mark.parametrize("arch", ["w32", "res50"])
@pytest.mark.parametrize("layout", ["mmpose1", "mmpose0"])
def test_mmpose_checkpoints_load_strictly_with_identical_heatmaps(arch, layout, request, tmp_path):
    src = request.getfixturevalue(arch)
    make = mmpose1_checkpoint if layout == "mmpose1" else mmpose0_checkpoint
    path = tmp_path / f"{layout}.pth"
    torch.save(make(src.state_dict()), path)
    dst = build_model(load_config(W32 if arch == "w32" else RES50))
    before = heatmaps(dst)
    report = load_weights(dst, path)  # strict
    assert report.complete and report.layout == layout
    after = heatmaps(dst)
    assert not torch.equal(before, after)
    assert torch.equal(after, heatmaps(src))


def test_mmpose_key_names_from_their_code_map_onto_ours(w32, res50):
    """Key names as MMPose's modules spell them (written from their code, not produced by ours)."""
    mmpose_hrnet = [
        "backbone.conv1.weight", "backbone.bn1.running_var", "backbone.bn2.weight",
        "backbone.layer1.0.downsample.0.weight", "backbone.layer1.0.downsample.1.bias", "backbone.layer1.3.bn3.weight",
        "backbone.transition1.0.0.weight", "backbone.transition1.1.0.1.running_mean",
        "backbone.transition3.3.0.0.weight", "backbone.stage2.0.branches.1.3.conv2.weight",
        "backbone.stage3.3.fuse_layers.2.0.1.1.weight", "backbone.stage3.3.fuse_layers.0.2.0.weight",
        "backbone.stage4.2.fuse_layers.0.3.1.running_var", "backbone.stage4.2.fuse_layers.0.1.1.num_batches_tracked",
        "backbone.stage4.1.fuse_layers.3.0.2.1.running_var",
        "backbone.stage4.1.fuse_layers.3.0.0.1.num_batches_tracked",
        "head.final_layer.weight", "head.final_layer.bias", "data_preprocessor.mean",
    ]  # fmt: skip
    mmpose_resnet = [
        "backbone.conv1.weight", "backbone.bn1.bias", "backbone.layer2.0.downsample.0.weight",
        "backbone.layer4.2.conv3.weight", "backbone.layer3.5.bn2.running_mean",
        "head.deconv_layers.0.weight", "head.deconv_layers.1.running_var", "head.deconv_layers.7.weight",
        "head.final_layer.weight", "head.final_layer.bias",
    ]  # fmt: skip
    for names, model, gone in ((mmpose_hrnet, w32, ["data_preprocessor.mean"]), (mmpose_resnet, res50, [])):
        ours = model.state_dict()
        converted, layout, dropped = convert_state_dict(dict.fromkeys(names, torch.zeros(1)))
        assert layout == "mmpose1" and dropped == gone
        assert len(converted) == len(names) - len(gone)
        assert set(converted) <= set(ours), sorted(set(converted) - set(ours))
    legacy = dict.fromkeys(["backbone.layer1.0.conv1.weight", "keypoint_head.deconv_layers.4.weight",
                            "keypoint_head.final_layer.weight"], torch.zeros(1))  # fmt: skip
    converted, layout, _ = convert_state_dict(legacy)
    assert layout == "mmpose0" and set(converted) <= set(res50.state_dict())


def test_torchvision_resnet_initialises_the_backbone_strictly(res50, tmp_path):
    # torchvision / timm resnet50: conv1, bn1, layer1..4 as ours, plus the classifier fc.*
    sd = {k: v for k, v in res50.state_dict().items() if not k.startswith(HEAD)}
    sd["fc.weight"] = torch.randn(1000, 2048)
    sd["fc.bias"] = torch.randn(1000)
    assert detect_layout(sd) == "torchvision"
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(sd, path)
    cfg = load_config(RES50, freeze=False)
    cfg.MODEL.PRETRAINED = str(path)
    dst = build_model(cfg, is_train=True)  # the official init, then MODEL.PRETRAINED
    assert not torch.equal(dst.final_layer.weight, res50.final_layer.weight)  # the head keeps its init
    # the head from the source too -> the very same network
    dst.load_state_dict({k: v for k, v in res50.state_dict().items() if k.startswith(HEAD)}, strict=False)
    assert torch.equal(heatmaps(dst), heatmaps(res50))
    # as pose weights it is refused, with the reason
    with pytest.raises(CheckpointError, match=r"(?s)missing.*final_layer.*ImageNet classification checkpoint"):
        load_weights(build_model(cfg), path)


def hrnet_classifier_state(w32: torch.nn.Module) -> dict:
    """The HRNet-Image-Classification / timm layout of the W32 backbone: stage 4's last module fuses into
    all four branches (multi_scale_output=True there), then incre_modules, downsamp_modules,
    final_layer (Conv 1024->2048 + BN) and classifier (Linear 2048->1000)."""
    sd = {k: v for k, v in w32.state_dict().items() if not k.startswith(HEAD)}
    stage4 = load_config(W32).MODEL.EXTRA.STAGE4
    from hrpose.models.hrnet import StageSpec

    spec = StageSpec.from_cfg(stage4)
    full = HighResolutionModule(spec.out_channels, spec, multi_scale_output=True)
    last = f"stage4.{spec.num_modules - 1}."
    for k, v in full.state_dict().items():
        if k.startswith("fuse_layers.") and not k.startswith("fuse_layers.0."):
            sd[last + k] = torch.randn(v.shape) if v.is_floating_point() else v
    for i, c in enumerate((32, 64, 128, 256)):
        sd[f"incre_modules.{i}.0.conv1.weight"] = torch.randn(c, 32 * 2**i, 1, 1)
        sd[f"incre_modules.{i}.0.bn3.running_var"] = torch.rand(c * 4)
    for i in range(3):
        sd[f"downsamp_modules.{i}.0.weight"] = torch.randn(128 * 2 ** (i + 1), 128 * 2**i, 3, 3)
        sd[f"downsamp_modules.{i}.1.bias"] = torch.randn(128 * 2 ** (i + 1))
    sd["final_layer.0.weight"] = torch.randn(2048, 1024, 1, 1)
    sd["final_layer.1.running_mean"] = torch.randn(2048)
    sd["classifier.weight"] = torch.randn(1000, 2048)
    sd["classifier.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])  # official .pth; timm ships safetensors
def test_hrnet_imagenet_classifier_initialises_the_backbone_strictly(w32, tmp_path, suffix):
    sd = hrnet_classifier_state(w32)
    assert detect_layout(sd) == "hrnet-imagenet"
    path = tmp_path / f"hrnet_w32-36af842e{suffix}"
    if suffix == ".pth":
        torch.save(sd, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    cfg = load_config(W32, freeze=False)  # PRETRAINED_LAYERS: conv1 ... stage4, as the official YAML lists them
    cfg.MODEL.PRETRAINED = str(path)
    dst = build_model(cfg, is_train=True)
    dst.load_state_dict({k: v for k, v in w32.state_dict().items() if k.startswith(HEAD)}, strict=False)
    assert torch.equal(heatmaps(dst), heatmaps(w32))


def test_imagenet_file_of_another_width_is_refused(w32, tmp_path):
    sd = hrnet_classifier_state(w32)
    sd["stage2.0.branches.0.0.conv1.weight"] = torch.randn(48, 48, 3, 3)  # a W48 tensor
    del sd["stage3.0.branches.1.0.bn1.running_mean"]
    path = tmp_path / "hrnet_w48.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"(?s)hrnet_w48.pth.*missing.*stage3.0.branches.1.0.bn1.running_mean"
                       r".*wrong shape.*stage2.0.branches.0.0.conv1.weight"):  # fmt: skip
        load_pretrained(build_model(load_config(W32)), path, ["*"])


def test_mmpose_file_with_a_wrong_head_lists_the_keys(res50, tmp_path):
    ckpt = mmpose1_checkpoint(res50.state_dict())
    ckpt["state_dict"]["head.final_layer.weight"] = torch.randn(133, 256, 1, 1)  # a wholebody head
    path = tmp_path / "wholebody.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"wrong shape.*final_layer.weight \[133, 256, 1, 1\]"):
        load_weights(build_model(load_config(RES50)), path)


def _rename_in_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> int:
    """Rewrite a torch zip checkpoint's data.pkl with a module name changed (as NumPy 1.x pickled it)."""
    import zipfile

    n = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                n = data.count(old)
                data = data.replace(old, new)
            zout.writestr(info, data)
    return n


def test_mmpose_meta_pickled_by_numpy_1_loads_and_code_stays_refused(res50, tmp_path):
    # MMPose's 2022 checkpoints were written under NumPy 1.x: arrays rebuilt by numpy.core.multiarray._reconstruct
    ckpt = mmpose1_checkpoint(res50.state_dict())
    torch.save(ckpt, tmp_path / "new.pth")
    old = tmp_path / "numpy1.pth"
    assert _rename_in_pickle(tmp_path / "new.pth", old, b"numpy._core.multiarray", b"numpy.core.multiarray") >= 1
    dst = build_model(load_config(RES50))
    assert load_weights(dst, old).complete
    assert torch.equal(heatmaps(dst), heatmaps(res50))
    # anything else in the meta is still refused unrun: an object that calls os.system when unpickled
    ckpt["meta"]["hook"] = _Exploit(str(tmp_path / "ran"))
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_weights(build_model(load_config(RES50)), tmp_path / "evil.pth")
    assert not (tmp_path / "ran").exists()


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
