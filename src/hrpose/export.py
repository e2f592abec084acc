"""ONNX export that checks itself in ONNX Runtime before it reports success.

The exported graph takes `input: (N, 3, H, W)` float32 (normalised crops, as the training pipeline makes
them) and returns `heatmaps: (N, K, H/4, W/4)`. After writing the file, `export_onnx` runs the same seeded
batch through PyTorch and ONNX Runtime and refuses the export (deleting nothing already there: it writes
to a temp file first) unless the heatmaps agree within `rtol` of their scale and the decoded keypoints
are equal. A model with a NaN/inf parameter or buffer, or whose heatmaps are not finite, is refused
(`ExportError`, naming the tensor) before anything is written: NaN compares false with any tolerance,
so the check alone would pass it.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hrpose.errors import UserError

from .codec import get_max_preds


class ExportError(UserError, RuntimeError):
    """The exported graph does not reproduce the PyTorch model."""


@dataclass(frozen=True)
class ExportReport:
    path: Path
    opset: int
    dynamic_batch: bool
    max_abs_err: float
    max_abs_ref: float
    keypoints_equal: bool

    @property
    def rel_err(self) -> float:
        return self.max_abs_err / max(self.max_abs_ref, 1e-12)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Eval-mode copy of `model` with every BatchNorm folded into the conv before it (FX graph fusion).

    The caller's model is left alone: its mode, device and weights are those it had."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval(), inplace=True)


def _export(model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_batch: bool) -> None:
    dynamic_axes = {"input": {0: "batch"}, "heatmaps": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=["input"],
            output_names=["heatmaps"],
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    input_size_wh: tuple[int, int],
    *,
    dynamic_batch: bool = False,
    opset: int = 17,
    rtol: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Export `model` (eval mode, on CPU) to `path` and verify it in ONNX Runtime; see the module doc.

    Works on a copy: the caller's model keeps its device, train/eval mode and weights."""
    import onnx
    import onnxruntime as ort

    path = Path(path)
    model = copy.deepcopy(model).eval().to("cpu")
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            raise ExportError(
                f"{path}: the model's {name} holds NaN/inf values; nothing was exported. The weights are broken "
                "(e.g. a diverged training run): export an earlier checkpoint"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = int(input_size_wh[0]), int(input_size_wh[1])
    g = torch.Generator().manual_seed(seed)
    batch = 2 if dynamic_batch else 1
    example = torch.randn((1, 3, h, w), generator=g)
    check_input = torch.randn((batch, 3, h, w), generator=g)

    fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.inference_mode():
            _export(model, example, tmp, opset, dynamic_batch)
            ref = model(check_input).float().numpy()
        onnx.checker.check_model(str(tmp))
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": check_input.numpy()})[0]
        if not np.isfinite(ref).all():
            raise ExportError(
                f"{path}: the PyTorch model's heatmaps hold NaN/inf for a random input; nothing was exported "
                "(check the weights with `hrpose test`)"
            )
        if not np.isfinite(got).all():
            raise ExportError(f"{path}: ONNX Runtime's heatmaps hold NaN/inf; nothing was exported")
        if got.shape != ref.shape:
            raise ExportError(f"{path}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
        err = float(np.abs(got - ref).max())
        scale = float(np.abs(ref).max())
        kp_ref, _ = get_max_preds(ref)
        kp_got, _ = get_max_preds(got)
        keypoints_equal = bool(np.array_equal(kp_ref, kp_got))
        if err > rtol * max(scale, 1e-12) or not keypoints_equal:
            raise ExportError(
                f"{path}: ONNX Runtime disagrees with PyTorch: max abs error {err:.3g} vs allowed "
                f"{rtol:g} x {scale:.3g}; argmax keypoints equal: {keypoints_equal}. The file was not written."
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return ExportReport(path, opset, dynamic_batch, err, scale, keypoints_equal)
