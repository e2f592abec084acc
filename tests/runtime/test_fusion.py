"""hrpose.runtime.fusion: oneDNN post-op fusion with pre-packed weights equals the folded model (fp32) and stays
close in bf16; the CPU `torch-bf16` backend runs it."""

from __future__ import annotations

import operator

import numpy as np
import pytest
import torch
from torch import fx, nn

from conftest import ROOT, requires_capability
from helpers import REDUCED, W32, backend_variants
from helpers import fill_module as _fill
from hrpose.config import load_config
from hrpose.export import fold_batchnorm
from hrpose.models import build_model
from hrpose.runtime import make_backend
from hrpose.runtime.fusion import fuse_pointwise
from hrpose.runtime.torch_backend import TorchBackend

pytestmark = pytest.mark.portability  # scripts/test.sh runs these again as an AVX2-only CPU

X = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32))


@pytest.fixture(scope="module")
def hrnet():
    return _fill().fill_(build_model(load_config(W32, REDUCED)), 3).eval()


def _ops(gm: fx.GraphModule) -> list[object]:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


def test_fp32_fusion_is_the_folded_model(hrnet):
    folded = fold_batchnorm(hrnet)
    gm = fuse_pointwise(folded, X[:1])  # packed for batch 1, run at batch 3
    counts = gm.fused_counts
    assert counts["conv+relu"] > 0 and counts["conv+add+relu"] > 0 and counts["conv+add"] > 0 and counts["conv"] > 0
    n_convs = sum(isinstance(m, nn.Conv2d) for m in folded.modules())
    assert sum(counts.values()) == n_convs
    assert not any(isinstance(m, nn.Conv2d) for m in gm.modules())
    with torch.no_grad():
        want = hrnet(X)
        got = gm(X)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))
    packed = [b for name, b in gm.named_buffers() if name.endswith("_w")]
    assert len(packed) == n_convs and all(b.layout == torch._mkldnn for b in packed)  # type: ignore[attr-defined]
    # every relu that followed a conv (directly or after a residual add) is gone into a post-op
    fused_adds = counts["conv+add"] + counts["conv+add+relu"]
    adds_left = sum(t in (operator.add, operator.iadd, torch.add) for t in _ops(gm))
    adds_before = sum(
        n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add)
        for n in fx.symbolic_trace(folded).graph.nodes
    )
    assert adds_left == adds_before - fused_adds


def test_pose_resnet_fusion_leaves_deconvs_alone():
    cfg = load_config(ROOT / "experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml",
                      ["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so folding matters
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    gm = fuse_pointwise(fold_batchnorm(model), X[:1])
    assert any(isinstance(m, nn.ConvTranspose2d) for m in gm.modules())
    with torch.no_grad():
        want, got = model(X), gm(X)
    assert torch.allclose(got, want, atol=1e-4 * float(want.abs().max()))


@requires_capability("bf16")
def test_pose_resnet_bf16_backend_runs_the_deconvs_in_bf16():
    cfg = load_config(ROOT / "experiments/coco/resnet/res50_256x192_d256x3_adam_lr1e-3.yaml",
                      ["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        want = model(X)
    bf16 = make_backend("torch-bf16", model)(X.numpy())  # deconvs and their BatchNorm run in bf16
    assert np.abs(bf16 - want.numpy()).max() < 0.1 * float(want.abs().max())


def test_keep_and_unpacked_weights(hrnet):
    folded = fold_batchnorm(hrnet)
    gm = fuse_pointwise(folded, X[:1], keep=["final_layer"], pack=False)
    assert isinstance(gm.get_submodule("final_layer"), nn.Conv2d)
    assert all(b.layout == torch.strided for b in gm.buffers())
    with torch.no_grad():
        assert torch.allclose(gm(X), hrnet(X), atol=1e-4 * float(hrnet(X).abs().max()))


def test_fp32_fused_backend_equals_eager(hrnet):
    x = X.numpy()
    ref = make_backend("torch", hrnet, fold_bn=False)(x)
    fp32 = backend_variants().make_variant("torch-fp32-fused", hrnet)
    np.testing.assert_allclose(fp32(x), ref, atol=1e-4 * np.abs(ref).max())


@requires_capability("bf16")
def test_cpu_bf16_backend_is_fused_close_and_batch_independent(hrnet):
    x = X.numpy()
    ref = make_backend("torch", hrnet, fold_bn=False)(x)
    bf16 = make_backend("torch-bf16", hrnet)
    assert bf16.name == "torch-bf16" and bf16.fused
    got = bf16(x[:1])
    assert bf16._fused is not None and got.shape == ref[:1].shape
    assert np.abs(bf16(x) - ref).max() < 0.1 * np.abs(ref).max()  # batch 3 on weights packed at batch 1
    np.testing.assert_allclose(bf16(x)[:1], got, atol=1e-6 * np.abs(ref).max() + 1e-3 * np.abs(got).max())


@requires_capability("bf16")
def test_short_bf16_backend_name_on_a_cpu(hrnet):
    assert make_backend("torch-bf16", hrnet).name == "torch-bf16"


def test_short_backend_names_on_a_cpu(hrnet):
    assert make_backend("torch-fast", hrnet).name == "torch-fast"
    with pytest.raises(ValueError, match="float16 is for GPUs"):
        make_backend("torch-fp16", hrnet)
    with pytest.raises(ValueError, match="unknown backend 'torch-int4'"):
        make_backend("torch-int4", hrnet)


def test_fused_refuses_what_it_cannot_do(hrnet):
    with pytest.raises(ValueError, match="not with jit"):
        TorchBackend(hrnet, fused=True, jit=True)
    with pytest.raises(ValueError, match="fold_bn=False"):
        TorchBackend(hrnet, fused=True, fold_bn=False)


def _fused_conv_really_runs(dtype: torch.dtype) -> bool:
    """The fused operators tried here directly, independently of hrpose.runtime.capabilities."""
    try:
        x = torch.ones(1, 4, 5, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.ones(4, 4, 3, 3, dtype=dtype)
        packed = torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1, [1, 4, 5, 5])
        y = torch.ops.mkldnn._convolution_pointwise(x, packed, None, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
        return float(y.float()[0, 0, 2, 2]) == 36.0  # 4 channels x 9 taps of 1 x 1
    except (RuntimeError, AttributeError):
        return False


def test_pointwise_fusion_available_says_what_really_runs():
    from hrpose.runtime.capabilities import probe
    from hrpose.runtime.fusion import pointwise_fusion_available

    assert pointwise_fusion_available(torch.float32) == _fused_conv_really_runs(torch.float32)
    # bf16: only where it runs *and* the CPU (as capped) has bf16 arithmetic; never an emulated path
    assert pointwise_fusion_available(torch.bfloat16) == (
        _fused_conv_really_runs(torch.bfloat16) and probe().bf16_hardware
    )
    if not probe().bf16_hardware:
        assert not pointwise_fusion_available(torch.bfloat16)
    assert not pointwise_fusion_available(torch.float16)
