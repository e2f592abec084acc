"""Inference over a dataset with flip test, decoding, dataset evaluation; ``hrpose test``.

:func:`run_inference` turns a loader into image-space predictions ``preds (N, K, 3)`` and the official
``boxes (N, 6)`` (center, scale, area = prod(scale * 200), score) through the test-time pipeline that
``PoseEstimator`` uses too (:mod:`hrpose.pipeline`, switches in a :class:`~hrpose.pipeline.InferenceSettings`);
:func:`validate` adds the dataset's evaluation (COCO AP / MPII PCKh) and is shared by training and
:func:`test`, which runs the backend ``HRPOSE.BACKEND`` names (:func:`_test_model`).

Under DDP each rank runs inference on its own strided shard of the dataset
(:func:`shard_indices`), the shards are gathered on rank 0, which evaluates and writes the results,
and the metrics are broadcast back to every rank.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

import hrpose.models  # build_model looked up at call time: tests replace hrpose.models.build_model
from hrpose.codec import accuracy, build_codec
from hrpose.config import ConfigError, experiment_name, output_dirs
from hrpose.data import build_dataset
from hrpose.errors import MissingFileError, UserError
from hrpose.geometry import PIXEL_STD
from hrpose.models.weights import load_weights
from hrpose.pipeline import InferenceSettings, decode, infer_heatmaps, model_backend
from hrpose.runtime import REGISTRY, Backend, auto_backend, is_backend_name, make_backend
from hrpose.runtime.onnx_cache import export_onnx_cached
from hrpose.runtime.openvino_int8 import Int8Error

from .distributed import (
    DistInfo,
    all_gather_objects,
    broadcast_object,
    cleanup_distributed,
    is_dist,
    setup_distributed,
)
from .logging import AverageMeter, TensorBoardWriter, close_logger, get_logger, name_value_table, setup_logger
from .runtime import amp_settings, apply_cudnn_settings

__all__ = [
    "InferenceOutput",
    "build_codec",
    "flip_pairs_of",
    "predict_heatmaps",
    "run_inference",
    "shard_indices",
    "validate",
    "make_eval_loader",
    "test",
]


def flip_pairs_of(dataset: Any) -> tuple[tuple[int, int], ...]:
    """Flip pairs from ``dataset.meta`` (or an official-style ``dataset.flip_pairs``)."""
    meta = getattr(dataset, "meta", None)
    if meta is not None and hasattr(meta, "flip_pairs"):
        return tuple((int(a), int(b)) for a, b in meta.flip_pairs)
    pairs = getattr(dataset, "flip_pairs", None)
    if pairs is None:
        raise AttributeError(f"{type(dataset).__name__} has neither .meta.flip_pairs nor .flip_pairs")
    return tuple((int(a), int(b)) for a, b in pairs)


def predict_heatmaps(
    model: nn.Module | Backend,
    inputs: torch.Tensor,
    *,
    flip_pairs: Sequence[tuple[int, int]] = (),
    flip_test: bool = False,
    shift_heatmap: bool = True,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Heatmaps ``(B, K, h, w)`` float32 on ``inputs``' device for ``inputs (B, 3, H, W)``, averaged with the
    flipped pass: :func:`hrpose.pipeline.infer_heatmaps` on the model itself (``model_backend``)."""
    backend = model_backend(model, amp_dtype=amp_dtype) if isinstance(model, nn.Module) else model
    settings = InferenceSettings(flip_test=flip_test, shift_heatmap=shift_heatmap)
    return torch.from_numpy(infer_heatmaps(backend, inputs, flip_pairs, settings)).to(inputs.device)


@dataclass
class InferenceOutput:
    """Predictions of one pass over a loader, in loader order.

    ``preds (N, K, 3)``: image x, y and the heatmap maximum; ``boxes (N, 6)``: center x/y, scale w/h,
    area ``prod(scale * 200)``, detection score; ``indices (N,)``: the record each sample came from
    (``meta['index']``); ``image_ids (N,)`` (``meta['image_id']``, -1 when absent); ``image_paths``.
    """

    preds: np.ndarray
    boxes: np.ndarray
    indices: np.ndarray
    image_ids: np.ndarray
    image_paths: list[str] = field(default_factory=list)
    loss: float = float("nan")
    acc: float = float("nan")
    seconds: float = 0.0


def _np(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _meta_ints(meta: Mapping[str, Any], key: str, n: int) -> np.ndarray:
    if key not in meta:
        return np.full(n, -1, np.int64)
    return _np(meta[key]).astype(np.int64).reshape(-1)


def run_inference(
    model: nn.Module | Backend,
    loader: Iterable,
    device: torch.device | str,
    codec: Any,
    *,
    settings: InferenceSettings,
    flip_pairs: Sequence[tuple[int, int]] = (),
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    criterion: Callable | None = None,
    max_iters: int = 0,
    progress: bool = False,
    print_freq: int = 0,
) -> InferenceOutput:
    """The test-time pipeline (:mod:`hrpose.pipeline`: backend, flip test, ``decode``) over ``loader``.

    ``model``: a backend, or a model run as it is (:func:`hrpose.pipeline.model_backend`: no copy, AMP
    ``amp_dtype``, channels_last inputs with ``channels_last``, its train mode given back after each batch).
    ``settings``: the test-time switches (:meth:`InferenceSettings.from_config`).
    ``loader`` yields ``(input, target, target_weight, meta)`` with ``meta['center'|'scale'|'score'|
    'image'|'index']``; ``input`` moves to the backend's device once. With ``criterion`` the (flip-merged)
    heatmaps are also scored against ``target`` on ``device`` (loss and ``codec.accuracy``), as the official
    does.
    """
    device = torch.device(device)
    logger = get_logger()
    backend = model
    if isinstance(model, nn.Module):  # the model itself, no copy (validation during training)
        backend = model_backend(model, amp_dtype=amp_dtype, channels_last=channels_last)
    preds_l: list[np.ndarray] = []
    boxes_l: list[np.ndarray] = []
    idx_l: list[np.ndarray] = []
    ids_l: list[np.ndarray] = []
    paths: list[str] = []
    losses, accs = AverageMeter(), AverageMeter()
    n_total = len(loader) if hasattr(loader, "__len__") else 0  # type: ignore[arg-type]
    if max_iters > 0:
        n_total = min(n_total, max_iters) if n_total else max_iters
    bar = None
    if progress:
        bar = tqdm(total=n_total or None, desc="test", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for i, (inputs, target, target_weight, meta) in enumerate(loader):
                if max_iters > 0 and i >= max_iters:
                    break
                inputs = inputs.to(backend.device, non_blocking=backend.device.type == "cuda")
                heatmaps = infer_heatmaps(backend, inputs, flip_pairs, settings)
                if criterion is not None and isinstance(target, torch.Tensor) and target.numel():
                    t = target.to(device)
                    loss = criterion(torch.from_numpy(heatmaps).to(device), t, target_weight.to(device))
                    losses.update(float(loss.item()), inputs.shape[0])
                    _, avg_acc, cnt, _ = accuracy(heatmaps, t.float().cpu().numpy())
                    accs.update(float(avg_acc), int(cnt))
                centers = _np(meta["center"]).astype(np.float64).reshape(-1, 2)
                scales = _np(meta["scale"]).astype(np.float64).reshape(-1, 2)
                scores = _np(meta["score"]).astype(np.float64).reshape(-1)
                pred = decode(codec, heatmaps, centers, scales, settings)
                b = inputs.shape[0]
                box = np.zeros((b, 6), np.float64)
                box[:, 0:2] = centers
                box[:, 2:4] = scales
                box[:, 4] = np.prod(scales * PIXEL_STD, axis=1)
                box[:, 5] = scores
                preds_l.append(pred)
                boxes_l.append(box)
                idx_l.append(_meta_ints(meta, "index", b))
                ids_l.append(_meta_ints(meta, "image_id", b))
                paths.extend(str(p) for p in meta["image"])
                if bar is not None:
                    bar.update(1)
                if print_freq > 0 and i % print_freq == 0:
                    scored = f"\tLoss {losses.val:.4f} ({losses.avg:.4f})\tAccuracy {accs.val:.3f} ({accs.avg:.3f})"
                    logger.info(f"Test: [{i}/{n_total}]" + (scored if criterion is not None else ""))
    finally:
        if bar is not None:
            bar.close()
    k = preds_l[0].shape[1] if preds_l else 0
    return InferenceOutput(
        preds=np.concatenate(preds_l) if preds_l else np.zeros((0, k, 3), np.float32),
        boxes=np.concatenate(boxes_l) if boxes_l else np.zeros((0, 6), np.float64),
        indices=np.concatenate(idx_l) if idx_l else np.zeros(0, np.int64),
        image_ids=np.concatenate(ids_l) if ids_l else np.zeros(0, np.int64),
        image_paths=paths,
        loss=losses.avg if losses.count else float("nan"),
        acc=accs.avg if accs.count else float("nan"),
        seconds=time.perf_counter() - start,
    )


def _merge_shards(parts: Sequence[InferenceOutput], positions: Sequence[np.ndarray]) -> InferenceOutput:
    """Shards from every rank back in dataset order; ``positions[r]``: dataset positions of shard ``r``."""
    pos = np.concatenate([np.asarray(p)[: len(r.preds)] for p, r in zip(positions, parts)])
    order = np.argsort(pos, kind="stable")
    paths = [s for p in parts for s in p.image_paths]
    n = sum(len(p.preds) for p in parts)
    loss = sum(p.loss * len(p.preds) for p in parts if np.isfinite(p.loss)) / max(n, 1)
    acc = sum(p.acc * len(p.preds) for p in parts if np.isfinite(p.acc)) / max(n, 1)
    return InferenceOutput(
        preds=np.concatenate([p.preds for p in parts])[order],
        boxes=np.concatenate([p.boxes for p in parts])[order],
        indices=np.concatenate([p.indices for p in parts])[order],
        image_ids=np.concatenate([p.image_ids for p in parts])[order],
        image_paths=[paths[i] for i in order],
        loss=float(loss),
        acc=float(acc),
        seconds=max(p.seconds for p in parts),
    )


def _loader_positions(loader: Any) -> np.ndarray:
    """Dataset positions a sequential loader visits: a ``Subset``'s indices, else ``0..len-1``."""
    ds = getattr(loader, "dataset", None)
    if ds is not None and hasattr(ds, "indices"):
        return np.asarray(ds.indices, dtype=np.int64)
    return np.arange(len(ds) if ds is not None else 0, dtype=np.int64)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's strided share of ``range(n)``; shards are disjoint and cover everything (no padding)."""
    return list(range(rank, n, world_size))


def make_eval_loader(
    dataset: Any, batch_size: int, workers: int, info: DistInfo | None = None, pin_memory: bool = False
) -> Any:
    """A sequential loader over ``dataset`` (this rank's shard under DDP)."""
    ds = dataset
    if info is not None and info.is_distributed:
        ds = Subset(dataset, shard_indices(len(dataset), info.rank, info.world_size))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory)


def _evaluate_dataset(dataset: Any, result: InferenceOutput, output_dir: Path) -> tuple[Any, float | None]:
    """``dataset.evaluate(preds, output_dir, boxes, image_ids)``; returns ``(name_values, perf or None)``."""
    ids = result.image_ids if len(result.image_ids) and (result.image_ids >= 0).all() else None
    out = dataset.evaluate(result.preds, str(output_dir), result.boxes, ids)
    if isinstance(out, tuple) and len(out) == 2 and not isinstance(out[0], str):
        return out[0], float(out[1])
    return out, None


def _sync_buffers(model: nn.Module) -> None:
    # DDP broadcasts buffers at each forward, so after training ranks may differ by the last step's
    # BN statistics; evaluate every shard with rank 0's.
    if is_dist():
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def validate(
    model: nn.Module | Backend,
    loader: Iterable,
    dataset: Any,
    device: torch.device | str,
    *,
    codec: Any,
    settings: InferenceSettings,
    output_dir: str | os.PathLike[str],
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    criterion: Callable | None = None,
    arch: str = "",
    progress: bool = False,
    print_freq: int = 0,
    writer: TensorBoardWriter | None = None,
    step: int = 0,
    max_iters: int = 0,
) -> tuple[Any, float | None]:
    """Predict over ``loader`` and evaluate on ``dataset``; returns ``(name_values, perf_indicator)`` on
    every rank (``perf_indicator`` is ``None`` when the dataset does not name one).

    ``model``: the model (run as it is, no copy: validation during training) or a backend (``hrpose test``);
    ``settings``: the test-time switches (:meth:`hrpose.pipeline.InferenceSettings.from_config`).
    ``loader`` covers ``dataset`` (or, under DDP, this rank's shard of it, see :func:`make_eval_loader`).
    The markdown results table is logged.
    """
    logger = get_logger()
    if isinstance(model, nn.Module):
        _sync_buffers(model)
    result = run_inference(
        model,
        loader,
        device,
        codec,
        settings=settings,
        flip_pairs=flip_pairs_of(dataset),
        amp_dtype=amp_dtype,
        channels_last=channels_last,
        criterion=criterion,
        max_iters=max_iters,
        progress=progress,
        print_freq=print_freq,
    )
    parts = all_gather_objects((result, _loader_positions(loader)))
    rank0 = not is_dist() or _rank() == 0
    answer: tuple[Any, float | None] = (None, None)
    if rank0:
        merged = _merge_shards([p[0] for p in parts], [p[1] for p in parts]) if len(parts) > 1 else result
        logger.info(
            f"=> inference on {len(merged.preds)} samples in {merged.seconds:.1f}s"
            + (f", loss {merged.loss:.6f}, acc {merged.acc:.3f}" if np.isfinite(merged.loss) else "")
        )
        name_values, perf = _evaluate_dataset(dataset, merged, Path(output_dir))
        tables = name_values if isinstance(name_values, (list, tuple)) else [name_values]
        for table in tables:
            logger.info("\n" + name_value_table(table, arch))
        if writer is not None:
            if np.isfinite(merged.loss):
                writer.scalar("valid_loss", merged.loss, step)
                writer.scalar("valid_acc", merged.acc, step)
            for table in tables:
                writer.scalars("valid", dict(table), step)
        answer = (name_values, perf)
    return broadcast_object(answer)


def _rank() -> int:
    return dist.get_rank()


# ----------------------------------------------------------------------------------------------------
# hrpose test


def _test_weights_path(cfg: Any, final_output_dir: Path) -> Path:
    path = Path(cfg.TEST.MODEL_FILE) if cfg.TEST.MODEL_FILE else final_output_dir / "final_state.pth"
    if cfg.TEST.MODEL_FILE:
        where = "TEST.MODEL_FILE"
        fix = "give TEST.MODEL_FILE the path of a trained checkpoint (.pth / .safetensors, or .onnx)"
    else:
        where = "no TEST.MODEL_FILE given, so the trained final_state.pth of this config's output folder is used"
        fix = "train first (hrpose train with the same config) or give TEST.MODEL_FILE a checkpoint"
    if not path.exists():
        raise MissingFileError(f"model weights not found: {path} ({where}); {fix}")
    if not path.is_file():
        raise UserError(f"model weights {path} ({where}) is not a regular file; {fix}")
    return path


def _load_test_weights(model: nn.Module, cfg: Any, final_output_dir: Path) -> Path:
    path = _test_weights_path(cfg, final_output_dir)
    get_logger().info(f"=> loading model from {path}")
    report = load_weights(model, path, strict=True)
    if report.layout.startswith("mmpose") and not bool(cfg.DATASET.COLOR_RGB):
        get_logger().warning(f"=> {path} is an MMPose checkpoint, trained on RGB input: set DATASET.COLOR_RGB True")
    return path


def _test_model(cfg: Any, final_output_dir: Path, device: torch.device) -> tuple[Backend, Path]:
    """The backend `hrpose test` runs, by HRPOSE.BACKEND, built by `hrpose.runtime.make_backend`: auto (default:
    `hrpose.runtime.auto_backend`, on a CPU the exported graph in OpenVINO or ONNX Runtime, the eager model where
    the export fails) or a registry name; "torch" runs the model itself on `device`, with HRPOSE.AMP and
    HRPOSE.CHANNELS_LAST.

    For an ONNX engine, TEST.MODEL_FILE may be an exported `.onnx`; a PyTorch checkpoint is exported (and
    checked) to `<output dir>/model.onnx` first.
    """
    backend = str(cfg.HRPOSE.BACKEND)
    if not is_backend_name(backend):
        raise ConfigError(f"HRPOSE.BACKEND {backend!r}: expected one of auto, {', '.join(REGISTRY)}")
    if backend == "openvino-int8" or str(cfg.TEST.MODEL_FILE).lower().endswith(".xml"):
        if backend not in ("auto", "openvino-int8"):
            raise ConfigError(f"HRPOSE.BACKEND {backend} cannot run the OpenVINO IR {cfg.TEST.MODEL_FILE}; use "
                              "HRPOSE.BACKEND openvino-int8 (or auto)")  # fmt: skip
        if not str(cfg.TEST.MODEL_FILE).lower().endswith(".xml"):
            raise Int8Error("HRPOSE.BACKEND openvino-int8 runs an OpenVINO IR: set TEST.MODEL_FILE to the .xml of "
                            f"`hrpose export --format openvino --int8-calib DATA` (got {cfg.TEST.MODEL_FILE!r})")
        path = Path(str(cfg.TEST.MODEL_FILE))
        get_logger().info(f"=> running the OpenVINO IR {path} (int8) on the CPU")
        return make_backend("openvino-int8", path, device, cfg=cfg), path
    auto = backend == "auto"
    if auto:  # the fastest backend with fp32 keypoints here; logged by name
        backend = auto_backend(device=device, weights=str(cfg.TEST.MODEL_FILE) or None)
        get_logger().info(f"=> HRPOSE.BACKEND auto: {backend}")
    onnx_engine = backend.startswith(("onnxruntime", "openvino"))
    if onnx_engine and str(cfg.TEST.MODEL_FILE).endswith(".onnx"):
        path = _test_weights_path(cfg, final_output_dir)
        get_logger().info(f"=> running {path} in {backend}")
        return make_backend(backend, path, device), path
    if backend == "onnxruntime-int8":  # quantising needs calibration crops: `hrpose export --int8-calib` makes one
        raise ConfigError("HRPOSE.BACKEND onnxruntime-int8 runs an int8 .onnx as TEST.MODEL_FILE; make one with "
                          "`hrpose export --int8-calib DATA_ROOT`")  # fmt: skip
    model = hrpose.models.build_model(cfg, is_train=False)
    path = _load_test_weights(model, cfg, final_output_dir)

    def eager() -> Backend:
        model.to(device)
        channels_last = bool(cfg.HRPOSE.CHANNELS_LAST)
        if channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        amp_dtype, _ = amp_settings(str(cfg.HRPOSE.AMP), device)
        return make_backend("torch", model, device, fold_bn=False, amp_dtype=amp_dtype, channels_last=channels_last)

    if not onnx_engine:
        return (eager() if backend == "torch" else make_backend(backend, model, device)), path
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    try:
        report = export_onnx_cached(model, final_output_dir / "model.onnx", size, dynamic_batch=True)
    except Exception as e:
        if not auto:
            raise
        get_logger().info(f"=> HRPOSE.BACKEND auto: ONNX export failed ({str(e).strip().splitlines()[0]}); eager")
        return eager(), path
    runtime = "OpenVINO" if backend.startswith("openvino") else "ONNX Runtime"
    get_logger().info(f"=> exported {report.path} (rel error {report.rel_err:.1e}); running it in {runtime}")
    return make_backend(backend, report.path, device), path


def test(cfg: Any, cfg_file: str | os.PathLike[str], *, device: str | torch.device | None = None) -> dict[str, Any]:
    """Official ``tools/test.py``: load ``TEST.MODEL_FILE`` (else ``final_state.pth`` in the output
    directory), predict over ``DATASET.TEST_SET`` with the ``TEST.*`` flip/post-process switches and
    evaluate. Returns ``{'name_values', 'perf', 'output_dir', 'model_file', 'log_file'}``.
    """
    info = setup_distributed(device)
    try:
        if info.is_main:
            final_output_dir, _ = output_dirs(cfg, cfg_file)
        else:
            final_output_dir, _ = output_dirs(cfg, cfg_file, create=False)
        final_output_dir = Path(broadcast_object(Path(final_output_dir)))
        logger, log_file = setup_logger(final_output_dir, experiment_name(cfg_file), "test", rank=info.rank)
        logger.info(str(cfg))
        apply_cudnn_settings(cfg)

        backend, model_file = _test_model(cfg, final_output_dir, info.device)

        dataset = build_dataset(cfg, "test", False)
        loader = make_eval_loader(
            dataset,
            int(cfg.TEST.BATCH_SIZE_PER_GPU),
            int(cfg.WORKERS),
            info,
            pin_memory=bool(cfg.PIN_MEMORY) and info.device.type == "cuda",
        )
        codec = getattr(dataset, "codec", None) or build_codec(cfg)
        name_values, perf = validate(
            backend,
            loader,
            dataset,
            info.device,
            codec=codec,
            settings=InferenceSettings.from_config(cfg),
            output_dir=final_output_dir,
            arch=str(cfg.MODEL.NAME),
            progress=info.is_main,
            print_freq=int(cfg.PRINT_FREQ),
            max_iters=0,
        )
        return {
            "name_values": name_values,
            "perf": perf,
            "output_dir": final_output_dir,
            "model_file": model_file,
            "log_file": log_file,
        }
    finally:
        close_logger()
        cleanup_distributed(info)

