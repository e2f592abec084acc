"""`export_onnx` and `fold_batchnorm` work on a copy: the caller's model keeps its mode, device and weights."""

from __future__ import annotations

import torch
from torch import nn

from hrpose.export import export_onnx, fold_batchnorm


class TinyPose(nn.Module):
    """(N, 3, H, W) -> (N, 5, H/4, W/4), with BatchNorm (running stats) and Dropout (train-mode behaviour)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        )  # fmt: skip
        self.drop = nn.Dropout(0.5)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.stem(x)))


def _trained_tiny() -> TinyPose:
    torch.manual_seed(0)
    model = TinyPose()
    with torch.no_grad():  # non-trivial running statistics, as after training
        model(torch.randn(4, 3, 32, 32) * 2 + 1)
    return model.train()


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, int], dict[str, bool], dict[str, str]]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ids = {k: id(v) for k, v in [*model.named_parameters(), *model.named_buffers()]}
    modes = {name: m.training for name, m in model.named_modules()}
    devices = {k: str(v.device) for k, v in model.state_dict().items()}
    return state, ids, modes, devices


def _assert_untouched(model: nn.Module, before) -> None:
    state, ids, modes, devices = _snapshot(model)
    assert modes == before[2] and all(modes.values())  # still in train mode, every submodule
    assert ids == before[1]  # the same parameter and buffer objects
    assert devices == before[3]
    assert state.keys() == before[0].keys()
    for k, v in state.items():
        assert torch.equal(v, before[0][k]), k
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_export_onnx_leaves_the_callers_model_alone(tmp_path):
    model = _trained_tiny()
    before = _snapshot(model)
    report = export_onnx(model, tmp_path / "tiny.onnx", (32, 32), dynamic_batch=True)
    assert report.path.is_file() and report.keypoints_equal
    _assert_untouched(model, before)
    # the exported graph is the eval-mode model (no dropout, running statistics)
    import onnxruntime as ort

    x = torch.randn(2, 3, 32, 32)
    got = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    assert abs(got[0] - ref).max() <= 1e-4 * abs(ref).max()


def test_fold_batchnorm_leaves_the_callers_model_alone():
    model = _trained_tiny()
    before = _snapshot(model)
    folded = fold_batchnorm(model)
    _assert_untouched(model, before)
    assert not folded.training and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(folded(x), model.eval()(x), atol=1e-5)
