"""The one test-time pipeline: normalised crops -> backend -> heatmaps -> flip merge -> decode -> rescore.

`hrpose test` / validation during training (`hrpose.engine.evaluate.run_inference`, a batch of a data
loader) and `PoseEstimator` / `hrpose predict` (the people of an image) both go through these functions,
with the test-time switches read once from the config into an `InferenceSettings`:

    settings = InferenceSettings.from_config(cfg)                    # TEST.FLIP_TEST, SHIFT_HEATMAP, ...
    heatmaps = infer_heatmaps(backend, crops, flip_pairs, settings)   # (N, K, h, w) float32
    keypoints = decode(codec, heatmaps, centers, scales, settings)  # (N, K, 3): image x, y, joint score
    scores = rescore(keypoints, box_scores, settings.in_vis_thre)   # (N,) person scores

(`predict_crops` is the three in a row.) The backend is any `hrpose.runtime.Backend`, built by
`hrpose.runtime.make_backend` (validation runs the live model, see `model_backend`). The flip merge and its
one-pixel shift live in `hrpose.codec.merge_flip`; rescoring is the official COCO rule of
`hrpose.evaluation.rescoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from hrpose import codec as codec_module  # merge_flip looked up at call time (tests spy on it)
from hrpose.evaluation.rescoring import rescore
from hrpose.runtime import Backend, BackendLike, make_backend

__all__ = [
    "BackendLike",
    "InferenceSettings",
    "TestSettings",
    "decode",
    "flip_heatmaps",
    "infer_heatmaps",
    "model_backend",
    "predict_crops",
    "rescore",
]


@dataclass(frozen=True)
class InferenceSettings:
    """The test-time switches of a config, read once (`from_config`).

    flip_test: average with the mirrored crop (TEST.FLIP_TEST); shift_heatmap: move the flipped-back maps
    one pixel right (TEST.SHIFT_HEATMAP, never for the UDP decoder, whose flip needs no shift);
    post_process: the decoder's sub-pixel refinement (TEST.POST_PROCESS); in_vis_thre: joints scoring
    above it count in the person score (TEST.IN_VIS_THRE).
    """

    flip_test: bool = True
    shift_heatmap: bool = True
    post_process: bool = True
    in_vis_thre: float = 0.2

    @classmethod
    def from_config(cls, cfg: Any, *, flip_test: bool | None = None) -> InferenceSettings:
        """The settings of `cfg` (TEST.* and HRPOSE.DECODER); `flip_test` overrides TEST.FLIP_TEST."""
        decoder = str((cfg.get("HRPOSE", None) or {}).get("DECODER", "official")).lower()
        return cls(
            flip_test=bool(cfg.TEST.FLIP_TEST) if flip_test is None else bool(flip_test),
            shift_heatmap=bool(cfg.TEST.SHIFT_HEATMAP) and decoder != "udp",
            post_process=bool(cfg.TEST.POST_PROCESS),
            in_vis_thre=float(cfg.TEST.IN_VIS_THRE),
        )


def model_backend(model: nn.Module, *, amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> Backend:
    """The model itself as the "torch" backend (no copy, weights untouched; validation during training): eval
    mode and `inference_mode` for each call, its train mode given back after; AMP autocast with `amp_dtype`,
    inputs made channels_last with `channels_last` (the model is expected to be converted already)."""
    return make_backend("torch", model, fold_bn=False, amp_dtype=amp_dtype, channels_last=channels_last)


def infer_heatmaps(
    backend: BackendLike,
    crops: np.ndarray | torch.Tensor,
    flip_pairs: Sequence[Sequence[int]],
    settings: InferenceSettings,
    *,
    one_call: bool = False,
) -> np.ndarray:
    """Normalised crops (N, 3, H, W) (numpy, or a tensor already on the backend's device) -> heatmaps
    (N, K, h, w) float32. With `settings.flip_test` the mirrored crops run too and `codec.merge_flip`
    averages both (`settings.shift_heatmap`: the official one-pixel shift). The mirrored crops are a second
    backend call (the official validation's way; its numbers are the golden ones), or with `one_call` one
    call on crops + mirrors (2N: fewer, larger calls; `PoseEstimator`'s way), equal to float rounding."""
    if not settings.flip_test:
        return np.asarray(backend(crops), dtype=np.float32)
    mirrored: np.ndarray | torch.Tensor
    both: np.ndarray | torch.Tensor
    if isinstance(crops, torch.Tensor):
        mirrored = crops.flip(3)
        both = torch.cat([crops, mirrored]) if one_call else crops
    else:
        mirrored = np.ascontiguousarray(crops[..., ::-1])
        both = np.concatenate([crops, mirrored]) if one_call else crops
    if one_call:
        n = len(crops)
        out = np.asarray(backend(both), dtype=np.float32)
        heatmaps, flipped = out[:n], out[n:]
    else:
        heatmaps = np.asarray(backend(crops), dtype=np.float32)
        flipped = np.asarray(backend(mirrored), dtype=np.float32)
    merged = codec_module.merge_flip(heatmaps, flipped, flip_pairs, shift=settings.shift_heatmap)
    return np.asarray(merged, dtype=np.float32)


def decode(
    codec: Any, heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray, settings: InferenceSettings
) -> np.ndarray:
    """Heatmaps (N, K, h, w) of crops at `centers`/`scales` (N, 2) -> keypoints (N, K, 3) float32: image x, y
    and the joint score (heatmap maximum), by `codec.decode` (`settings.post_process`)."""
    coords, maxvals = codec.decode(heatmaps, centers, scales, post_process=settings.post_process)
    n = len(heatmaps)
    keypoints = np.zeros((n, coords.shape[1], 3), np.float32)
    keypoints[:, :, :2] = coords[:, :, :2]
    keypoints[:, :, 2:3] = np.asarray(maxvals).reshape(n, -1, 1)
    return keypoints


def predict_crops(
    backend: BackendLike,
    crops: np.ndarray | torch.Tensor,
    centers: np.ndarray,
    scales: np.ndarray,
    box_scores: np.ndarray,
    *,
    codec: Any,
    flip_pairs: Sequence[Sequence[int]],
    settings: InferenceSettings,
    one_call: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`infer_heatmaps` -> `decode` -> `rescore`: keypoints (N, K, 3) float32 and person scores (N,) float64."""
    heatmaps = infer_heatmaps(backend, crops, flip_pairs, settings, one_call=one_call)
    keypoints = decode(codec, heatmaps, centers, scales, settings)
    return keypoints, rescore(keypoints, box_scores, settings.in_vis_thre)


# the names before InferenceSettings / infer_heatmaps, kept for one release (other modules and branches use them)
TestSettings = InferenceSettings
flip_heatmaps = infer_heatmaps
