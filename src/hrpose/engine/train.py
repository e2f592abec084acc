"""The training loop, in layers: :func:`train_step` (one batch), :func:`train_one_epoch` (one pass over a
loader), :func:`fit` (epochs, validation, checkpoints, resume, over the :class:`TrainParts` that
:func:`build_parts` makes from a config) and :func:`train` (the official ``tools/train.py``: output folder and
lock, seeding, then the two before, with DDP, AMP, atomic checkpoints and exact resume). Each takes its parts
as arguments; :func:`train` takes replacements for the functions it calls as keyword arguments.

Output layout (official): ``OUTPUT_DIR/<dataset>/<MODEL.NAME>/<cfg name>/`` holds the log file,
``checkpoint.pth`` (written every epoch), ``model_best.pth`` and ``final_state.pth`` (bare state
dicts, loadable by the official code), and ``results/`` from validation. TensorBoard events go to
``LOG_DIR/<dataset>/<MODEL.NAME>/<cfg name>_<time>``. While a run trains, ``train.lock`` in the output
folder holds its PID (see :mod:`hrpose.engine.lock`): a second run into the same folder is refused.

Learning rate: the ``i``-th epoch of a run (0-based, counted from ``TRAIN.BEGIN_EPOCH``) trains with
``LR * LR_FACTOR ** (number of LR_STEP <= i)``: the official schedule as it ran on the PyTorch it was written
for (0.4), where ``scheduler.step()`` at the start of an epoch set that epoch's rate. On PyTorch >= 1.1 the
official code's step-first call decays one epoch early; we step after each epoch instead (a deliberate
deviation, listed in docs/architecture.md). A resume continues the schedule: hrpose's ``checkpoint.pth``
restores the scheduler, an official one (no ``scheduler`` field) places it at the checkpoint's ``epoch``
(:func:`schedule_at`), as the official resume's ``last_epoch=checkpoint['epoch']`` does.
"""

from __future__ import annotations

import json
import math
import os
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from hrpose.codec import accuracy, build_codec
from hrpose.config import check_output_dirs, config_to_dict, experiment_name, output_dirs
from hrpose.data import build_dataset
from hrpose.data.device_targets import DeviceTargetEncoder
from hrpose.data.fastcrop import normalize_on_device
from hrpose.data.grouped import ImageGroupedSampler
from hrpose.data.layout import layout_from_config
from hrpose.diskfull import disk_full_error, is_disk_full
from hrpose.errors import Interrupted, UserError
from hrpose.losses import build_loss
from hrpose.models import build_model
from hrpose.models.outputs import last_stage
from hrpose.models.weights import checkpoint_meta, with_meta
from hrpose.pipeline import InferenceSettings
from hrpose.user_files import error_text

from .checkpoint import (
    CheckpointReadError,
    add_module_prefix,
    capture_rng_state,
    check_resume_fields,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint_atomic,
    strip_module_prefix,
    to_safe,
)
from .distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    report_failure,
    setup_distributed,
    unwrap_model,
    wrap_ddp,
)
from .evaluate import make_eval_loader, validate
from .lock import TrainLock
from .logging import AverageMeter, TensorBoardWriter, close_logger, draw_skeleton_batch, get_logger, setup_logger
from .runtime import amp_settings, apply_cudnn_settings, seed_everything

__all__ = [
    "NonFiniteLossError",
    "build_optimizer",
    "build_scheduler",
    "schedule_at",
    "amp_settings",  # re-exported from .runtime (also apply_cudnn_settings, for hrpose.commands.bench)
    "seed_everything",
    "StepResult",
    "train_step",
    "train_one_epoch",
    "TrainParts",
    "build_parts",
    "RunPaths",
    "fit",
    "train",
]


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """Official ``get_optimizer``: ``'sgd'`` (momentum, WD, Nesterov) or ``'adam'`` (no weight decay).
    ``fused`` (HRPOSE.FUSED_OPTIMIZER, CUDA): PyTorch's fused kernels, the same update rule."""
    key = name.lower()
    extra: dict[str, Any] = {"fused": True} if fused else {}
    if key == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **extra
        )
    if key == "adam":
        # The official code passes only the learning rate to Adam (TRAIN.WD is ignored); kept.
        return torch.optim.Adam(model.parameters(), lr=lr, **extra)
    raise ValueError(f"TRAIN.OPTIMIZER: expected 'adam' or 'sgd', got {name!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float
) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR stepped once per epoch, after the epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma)


def schedule_at(scheduler: torch.optim.lr_scheduler.MultiStepLR, epochs_done: int) -> None:
    """Put ``scheduler`` (and its optimizer's learning rates) where it is after ``epochs_done`` epochs:
    ``last_epoch = epochs_done`` and ``lr = base_lr * gamma ** (number of milestones <= epochs_done)``.

    Used to resume an official ``checkpoint.pth``, which stores no scheduler state; the official resume
    builds its scheduler with ``last_epoch=checkpoint['epoch']`` for the same purpose.
    """
    milestones = sorted(scheduler.milestones.elements())
    factor = scheduler.gamma ** bisect_right(milestones, epochs_done)
    lrs = [float(base) * factor for base in scheduler.base_lrs]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):
        group["lr"] = lr
    state = scheduler.state_dict()
    state.update(last_epoch=int(epochs_done), _last_lr=lrs)
    scheduler.load_state_dict(state)


def _to_device(x: Any, device: torch.device, non_blocking: bool) -> Any:
    return x.to(device, non_blocking=non_blocking) if isinstance(x, torch.Tensor) else x


def _loss_of(criterion: Callable, outputs: Any, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Official multi-output rule: the sum of the loss of every output; losses are computed in float32."""
    if isinstance(outputs, (list, tuple)):
        loss = criterion(outputs[0].float(), target, weight)
        for out in outputs[1:]:
            loss = loss + criterion(out.float(), target, weight)
        return loss
    return criterion(outputs.float(), target, weight)


def _accuracy(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int, np.ndarray]:
    _, avg_acc, cnt, pred = accuracy(output.detach().float().cpu().numpy(), target.detach().float().cpu().numpy())
    return float(avg_acc), int(cnt), np.asarray(pred)


@dataclass(frozen=True)
class StepResult:
    """What one training step gives back: numbers for the meters, tensors for logging and pictures."""

    loss: float  # the batch's loss, averaged over the DDP ranks (the value checked for NaN/inf)
    batch: int  # samples in this process's batch
    output: torch.Tensor  # the last (final) output of the model, as it came out of the forward pass
    acc: float | None = None  # official heatmap accuracy (None when not computed)
    acc_count: int = 0  # joints the accuracy counts
    pred: np.ndarray | None = None  # (B, K, 2) argmax joints in heatmap pixels (with the accuracy)


def train_step(
    model: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    target_weight: torch.Tensor,
    criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    compute_accuracy: bool = True,
    epoch: int = 0,
    step: int = 0,
) -> StepResult:
    """One batch, already on the model's device: forward, loss, backward (through ``scaler`` when given),
    optimizer step.

    The loss is the official multi-output rule (the sum over the model's outputs, in float32); with
    ``amp_dtype`` the forward runs under autocast. A NaN/inf loss (on any rank: every rank checks the
    averaged value, so all stop together) raises :class:`NonFiniteLossError`, naming ``epoch`` and
    ``step``, before the gradients or weights change.
    """
    autocast = (
        torch.autocast(device_type=inputs.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    )
    with autocast:
        outputs = model(inputs)
    loss = _loss_of(criterion, outputs, target, target_weight)
    loss_value = float(all_reduce_mean(loss).item())
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(
            f"non-finite training loss ({loss_value}) at epoch {epoch}, step {step}: "
            "lower TRAIN.LR, check the data, or turn off HRPOSE.AMP"
        )
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    output = last_stage(outputs)  # multi-stage models: the last stage's maps
    if not compute_accuracy:
        return StepResult(loss=loss_value, batch=int(inputs.shape[0]), output=output)
    avg_acc, cnt, pred = _accuracy(output, target)
    return StepResult(loss=loss_value, batch=int(inputs.shape[0]), output=output, acc=avg_acc, acc_count=cnt, pred=pred)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    criterion: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    device: torch.device | str,
    *,
    epoch: int,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    max_iters: int = 0,
    print_freq: int = 20,
    compute_accuracy: bool = True,
    progress: bool = True,
    writer: TensorBoardWriter | None = None,
    global_step: int = 0,
    skeleton: Sequence[tuple[int, int]] = (),
    image_every: int = 0,
    target_encoder: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``, one :func:`train_step` per batch. Returns the epoch's metrics.

    Batches of uint8 inputs with empty targets (HRPOSE.DEVICE_INPUT) are normalised on ``device`` and their
    targets made there from ``meta['joints']`` / ``meta['joints_vis']`` by ``target_encoder``
    (:class:`~hrpose.data.device_targets.DeviceTargetEncoder`: the same values as the workers would send).

    ``loader`` yields ``(input (B,3,H,W), target (B,K,h,w), target_weight (B,K,1), meta)``; each is
    moved to ``device`` once. ``criterion(output, target, target_weight)`` must be mean-reduced (so DDP's
    gradient averaging equals training on the combined batch). With ``amp_dtype`` the forward runs
    under autocast; ``scaler`` (fp16 on CUDA) scales the loss. ``max_iters > 0`` caps the iterations.
    A NaN/inf loss (on any rank) raises :class:`NonFiniteLossError` before the optimizer step.

    Returns ``{'loss', 'acc', 'samples', 'iters', 'seconds', 'samples_per_s', 'global_step'}`` where
    ``loss``/``acc`` are this process's sample-weighted averages.
    """
    device = torch.device(device)
    logger = get_logger()
    model.train()
    losses, acc = AverageMeter(), AverageMeter()
    n_total = len(loader) if hasattr(loader, "__len__") else 0  # type: ignore[arg-type]
    if max_iters > 0:
        n_total = min(n_total, max_iters) if n_total else max_iters
    non_blocking = device.type == "cuda"
    bar = tqdm(total=n_total or None, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True) if progress else None
    samples = 0
    iters = 0
    start = time.perf_counter()
    step_start = start
    try:
        for i, (inputs, target, target_weight, _meta) in enumerate(loader):
            if max_iters > 0 and i >= max_iters:
                break
            inputs = _to_device(inputs, device, non_blocking)
            if inputs.dtype == torch.uint8:
                inputs = normalize_on_device(inputs)
            if target_encoder is not None and target.numel() == 0:
                joints = _to_device(_meta["joints"], device, non_blocking)
                target, target_weight = target_encoder(joints, _to_device(_meta["joints_vis"], device, non_blocking))
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            target = _to_device(target, device, non_blocking)
            target_weight = _to_device(target_weight, device, non_blocking)
            res = train_step(
                model,
                inputs,
                target,
                target_weight,
                criterion,
                optimizer,
                scaler=scaler,
                amp_dtype=amp_dtype,
                compute_accuracy=compute_accuracy,
                epoch=epoch,
                step=i,
            )

            samples += res.batch
            iters += 1
            losses.update(res.loss, res.batch)
            if res.acc is not None:
                acc.update(res.acc, res.acc_count)
            now = time.perf_counter()
            speed = res.batch / max(now - step_start, 1e-9)
            step_start = now
            if bar is not None:
                bar.set_postfix(loss=f"{losses.val:.5f}", acc=f"{acc.val:.3f}", sps=f"{speed:.1f}")
                bar.update(1)
            step = global_step + iters
            if print_freq > 0 and i % print_freq == 0:
                logger.info(
                    f"Epoch: [{epoch}][{i}/{n_total}]\tSpeed {speed:.1f} samples/s\t"
                    f"Loss {losses.val:.5f} ({losses.avg:.5f})\tAccuracy {acc.val:.3f} ({acc.avg:.3f})"
                )
                if writer is not None:
                    writer.scalar("train_loss", losses.val, step)
                    writer.scalar("train_acc", acc.val, step)
            if (
                writer is not None
                and writer.active
                and image_every > 0
                and i % image_every == 0
                and res.pred is not None
            ):
                stride = inputs.shape[-1] / res.output.shape[-1]  # heatmap -> input pixels
                vis = target_weight[..., 0].detach().cpu().numpy() > 0
                writer.images("train_pred", draw_skeleton_batch(inputs, res.pred * stride, vis, skeleton), step)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": losses.avg,
        "acc": acc.avg,
        "samples": float(samples),
        "iters": float(iters),
        "seconds": seconds,
        "samples_per_s": samples / seconds if seconds > 0 else 0.0,
        "global_step": float(global_step + iters),
    }


# ----------------------------------------------------------------------------------------------------
# the full schedule


def _perf_indicator(name_values: Any, perf: float | None, dataset_name: str) -> float:
    """AP for COCO/custom, PCKh ``Mean`` for MPII; the dataset's own indicator when it gives one."""
    if perf is not None:
        return float(perf)
    table = name_values[0] if isinstance(name_values, (list, tuple)) else name_values
    key = "Mean" if dataset_name == "mpii" else "AP"
    return float(table[key])


def _make_loader(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool,
    workers: int,
    pin_memory: bool,
    info: DistInfo,
    drop_last: bool = False,
    seed: int = 0,
    group_by_image: bool = False,
    seeded: bool = False,
) -> tuple[Any, Any]:
    sampler: DistributedSampler | ImageGroupedSampler | None = None
    records = getattr(dataset, "records", None)
    if group_by_image and records is not None:
        # HRPOSE.GROUP_BY_IMAGE: images shuffled per epoch, each image's people in a row (decoded once per batch)
        sampler = ImageGroupedSampler([r.image for r in records], shuffle=shuffle, seed=seed,
                                      num_replicas=info.world_size, rank=info.rank, drop_last=drop_last)  # fmt: skip
    elif info.is_distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    # Seeded runs: the loader's own generator (shuffle order, worker seeds), re-seeded per epoch by fit
    # (epoch_generator_seed), so the training stream does not depend on what else draws from torch's global
    # RNG (validation's loader, a skipped validation) and a resumed run continues it exactly.
    generator = torch.Generator().manual_seed(epoch_generator_seed(seed, 0)) if seeded else None
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory and info.device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
        generator=generator,
    )
    return loader, sampler


def epoch_generator_seed(seed: int, epoch: int) -> int:
    """The training loader's generator seed for ``epoch`` of a run seeded with ``seed`` (HRPOSE.SEED)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


def should_validate(epoch: int, end_epoch: int, validate_from: int = 0, validate_every: int = 1) -> bool:
    """Whether training validates after ``epoch`` (0-based): the last epoch always; otherwise epochs
    ``>= validate_from`` (HRPOSE.VALIDATE_FROM), every ``validate_every``-th (HRPOSE.VALIDATE_EVERY) from there."""
    if epoch >= end_epoch - 1:
        return True
    return epoch >= validate_from and (epoch - validate_from) % max(int(validate_every), 1) == 0


@dataclass
class TrainParts:
    """Everything an epoch loop works with, built from the config by :func:`build_parts`."""

    device: torch.device
    model: nn.Module  # the bare model: its state_dict is what checkpoints and weight files hold
    train_model: nn.Module  # what trains: ``model`` in DDP under torchrun, else ``model`` itself
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    scaler: torch.amp.GradScaler | None  # fp16 on CUDA only
    amp_dtype: torch.dtype | None
    train_dataset: Any
    train_loader: Iterable
    train_sampler: DistributedSampler | ImageGroupedSampler | None  # set_epoch() once per epoch
    valid_dataset: Any
    valid_loader: Iterable
    codec: Any  # decodes validation heatmaps
    target_encoder: Any = None  # HRPOSE.DEVICE_INPUT: makes the training targets on the device


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes: the experiment folder (checkpoints, results), TensorBoard's folder, the log file."""

    output_dir: Path
    tb_log_dir: Path
    log_file: Path | None


def build_parts(
    cfg: Any,
    info: DistInfo,
    *,
    build_model: Callable[..., nn.Module] = build_model,
    build_loss: Callable[[Any], nn.Module] = build_loss,
    build_dataset: Callable[[Any, str, bool], Any] = build_dataset,
    build_codec: Callable[[Any], Any] = build_codec,
) -> TrainParts:
    """The model (on ``info.device``, in DDP when distributed), loss, data loaders, optimizer, LR schedule and
    AMP pieces the official ``tools/train.py`` builds from ``cfg``. The builders can be replaced (tests).

    Seed first (:func:`seed_everything`): the model's initial weights come from the global RNG.
    """
    device = info.device
    hp = cfg.HRPOSE
    model = build_model(cfg, is_train=True)
    model.to(device)
    if bool(hp.CHANNELS_LAST):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train_model = wrap_ddp(model, info, sync_bn=bool(hp.SYNC_BN))
    model = unwrap_model(train_model)  # SyncBN conversion returns a new module
    criterion = build_loss(cfg).to(device)

    train_dataset = build_dataset(cfg, "train", True)
    valid_dataset = build_dataset(cfg, "test", False)
    train_loader, train_sampler = _make_loader(
        train_dataset,
        int(cfg.TRAIN.BATCH_SIZE_PER_GPU),
        shuffle=bool(cfg.TRAIN.SHUFFLE),
        workers=int(cfg.WORKERS),
        pin_memory=bool(cfg.PIN_MEMORY),
        info=info,
        seed=max(int(hp.SEED), 0),
        group_by_image=bool(hp.GROUP_BY_IMAGE),
        seeded=int(hp.SEED) >= 0,
    )
    valid_loader = make_eval_loader(
        valid_dataset,
        int(cfg.TEST.BATCH_SIZE_PER_GPU),
        int(cfg.WORKERS),
        info,
        pin_memory=bool(cfg.PIN_MEMORY) and device.type == "cuda",
    )
    codec = getattr(valid_dataset, "codec", None) or build_codec(cfg)

    optimizer = build_optimizer(
        train_model,
        cfg.TRAIN.OPTIMIZER,
        float(cfg.TRAIN.LR),
        momentum=float(cfg.TRAIN.MOMENTUM),
        weight_decay=float(cfg.TRAIN.WD),
        nesterov=bool(cfg.TRAIN.NESTEROV),
        fused=bool(hp.FUSED_OPTIMIZER) and device.type == "cuda",
    )
    scheduler = build_scheduler(optimizer, cfg.TRAIN.LR_STEP, float(cfg.TRAIN.LR_FACTOR))
    amp_dtype, use_scaler = amp_settings(str(hp.AMP), device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None
    return TrainParts(
        device=device,
        model=model,
        train_model=train_model,
        criterion=criterion,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        amp_dtype=amp_dtype,
        train_dataset=train_dataset,
        train_loader=train_loader,
        train_sampler=train_sampler,
        valid_dataset=valid_dataset,
        valid_loader=valid_loader,
        codec=codec,
        target_encoder=(
            DeviceTargetEncoder(train_dataset.codec)
            if getattr(train_dataset, "sample_format", "float") == "uint8"
            else None
        ),
    )


def train(
    cfg: Any,
    cfg_file: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    validate: Callable[..., tuple[Any, float | None]] = validate,
    train_one_epoch: Callable[..., dict[str, float]] = train_one_epoch,
    build_model: Callable[..., nn.Module] = build_model,
    build_loss: Callable[[Any], nn.Module] = build_loss,
    build_dataset: Callable[[Any, str, bool], Any] = build_dataset,
    build_codec: Callable[[Any], Any] = build_codec,
) -> dict[str, Any]:
    """Official ``tools/train.py``: train ``BEGIN_EPOCH..END_EPOCH``, validate every epoch, checkpoint.

    Under ``torchrun`` this is DDP (one process per device, ``TRAIN.BATCH_SIZE_PER_GPU`` each);
    validation is sharded across ranks and gathered on rank 0, which evaluates, logs and writes every
    file. ``AUTO_RESUME`` continues from ``checkpoint.pth`` (model, optimizer, scheduler, scaler,
    epoch, best perf, RNG state). Returns ``{'best_perf', 'last_perf', 'epochs', 'output_dir',
    'final_state', 'log_file', 'history'}`` (``history``: one dict of train/val metrics per epoch run here).

    The steps: claim the output folder (:func:`_start_run`), seed, :func:`build_parts`, :func:`fit`. The
    keyword arguments after ``device`` replace the functions those steps call (tests inject fakes here).
    """
    info = setup_distributed(device)
    # Process-wide switches train() may change; restored afterwards so that a caller (or a test
    # session) running train() in-process keeps its own settings.
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.enabled,
        torch.get_num_threads(),
    )
    try:
        with ExitStack() as stack:  # holds the output folder's training lock until the end
            paths = _start_run(cfg, cfg_file, info, stack)
            apply_cudnn_settings(cfg)
            hp = cfg.HRPOSE
            if int(hp.TRAIN_THREADS) > 0:
                torch.set_num_threads(int(hp.TRAIN_THREADS))  # restored below
            if int(hp.SEED) >= 0:
                # Different augmentation per rank; DDP broadcasts rank 0's initial weights anyway.
                seed_everything(int(hp.SEED) + info.rank, bool(hp.DETERMINISTIC))
            elif bool(hp.DETERMINISTIC):
                seed_everything(0 + info.rank, True)
            parts = build_parts(
                cfg,
                info,
                build_model=build_model,
                build_loss=build_loss,
                build_dataset=build_dataset,
                build_codec=build_codec,
            )
            try:
                return fit(cfg, parts, paths, info, validate=validate, train_one_epoch=train_one_epoch)
            except OSError as e:
                # a write not translated where it happens (a results file of validation, ...)
                if isinstance(e, UserError) or not is_disk_full(e):
                    raise
                raise disk_full_error(
                    e.filename or paths.output_dir, e, kept="checkpoint.pth of the last finished epoch is kept",
                    fix="free space on that disk or set OUTPUT_DIR to a folder on another disk, then run the same "
                    "command again (AUTO_RESUME continues from the last checkpoint.pth)",
                ) from e  # fmt: skip
    except Exception as e:
        if info.is_distributed:
            # before the process group goes: the other ranks stop now, not at a collective's timeout
            what = str(e).strip() or type(e).__name__
            report_failure(info.rank, error_text(what) if isinstance(e, UserError) else
                           f"{type(e).__name__} (a bug in hrpose: see that rank's traceback)")  # fmt: skip
        raise
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled = saved[2:5]
        if torch.get_num_threads() != saved[5]:
            torch.set_num_threads(saved[5])
        close_logger()
        cleanup_distributed(info)


def _start_run(cfg: Any, cfg_file: str | os.PathLike[str], info: DistInfo, stack: ExitStack) -> RunPaths:
    """The output folders checked and this folder's training lock taken (rank 0; released by ``stack``), then
    the log file opened on every rank. Every rank learns rank 0's outcome, so all stop together."""
    cfg_name = experiment_name(cfg_file)
    final_output_dir, tb_log_dir = output_dirs(cfg, cfg_file, create=False)
    final_output_dir, tb_log_dir = broadcast_object((Path(final_output_dir), Path(tb_log_dir)))
    problem: UserError | None = None
    stale_pid = None
    if info.is_main:
        try:
            stale_pid = _claim_output_dir(final_output_dir, tb_log_dir, stack)
        except UserError as e:
            problem = e
    message = broadcast_object(str(problem) if problem is not None else "")
    if problem is not None:
        raise problem
    if message:
        raise UserError(message)
    logger, log_file = setup_logger(final_output_dir, cfg_name, "train", rank=info.rank)
    logger.info(f"=> device {info.device}, world size {info.world_size}, output {final_output_dir}")
    if stale_pid is not None:
        logger.warning(f"=> took over the training lock of PID {stale_pid}, which is no longer running")
    logger.info(str(cfg))
    return RunPaths(Path(final_output_dir), Path(tb_log_dir), log_file)


@dataclass
class _Progress:
    """Where the schedule stands: what checkpoint.pth records besides the weights and optimizer states."""

    begin_epoch: int  # the next epoch to train
    best_perf: float = 0.0
    best_state: dict[str, torch.Tensor] | None = None
    global_step: int = 0  # TensorBoard step: training iterations so far
    saved_epoch: int | None = None  # the epoch count checkpoint.pth holds (for the Ctrl-C message)


def fit(
    cfg: Any,
    parts: TrainParts,
    paths: RunPaths,
    info: DistInfo,
    *,
    validate: Callable[..., tuple[Any, float | None]] = validate,
    train_one_epoch: Callable[..., dict[str, float]] = train_one_epoch,
) -> dict[str, Any]:
    """The epoch loop of :func:`train`: resume (``AUTO_RESUME``), then per epoch ``train_one_epoch``, the LR
    schedule step, ``validate`` and the checkpoint files (rank 0); ``final_state.pth`` at the end. Ctrl-C
    raises :class:`~hrpose.errors.Interrupted` saying what ``checkpoint.pth`` holds. Returns the
    :func:`train` result."""
    logger = get_logger()
    hp = cfg.HRPOSE
    # the names validate(...) and the loop below use
    device, model, criterion, codec = parts.device, parts.model, parts.criterion, parts.codec
    optimizer, scheduler, scaler, amp_dtype = parts.optimizer, parts.scheduler, parts.scaler, parts.amp_dtype
    valid_loader, valid_dataset = parts.valid_loader, parts.valid_dataset
    final_output_dir = paths.output_dir
    settings = InferenceSettings.from_config(cfg)  # flip test, shift (not for UDP), post-process, read once

    checkpoint_file = Path(final_output_dir) / "checkpoint.pth"
    best_file = Path(final_output_dir) / "model_best.pth"
    progress = _start_or_resume(cfg, parts, info, checkpoint_file, best_file)

    writer = TensorBoardWriter(paths.tb_log_dir, enabled=info.is_main and bool(hp.TENSORBOARD))
    skeleton = tuple(getattr(getattr(parts.train_dataset, "meta", None), "skeleton", ()) or ())
    # saved with model_best/final_state (beside the weights): predict needs no dataset or config then
    weights_meta = checkpoint_meta(cfg, getattr(parts.train_dataset, "meta", None) or layout_from_config(cfg))
    history: list[dict[str, Any]] = []
    last_perf = float("nan")
    end_epoch = int(cfg.TRAIN.END_EPOCH)
    generator = getattr(parts.train_loader, "generator", None)
    try:
        for epoch in range(progress.begin_epoch, end_epoch):
            if isinstance(generator, torch.Generator) and int(hp.SEED) >= 0:
                generator.manual_seed(epoch_generator_seed(int(hp.SEED) + info.rank, epoch))
            if parts.train_sampler is not None:
                parts.train_sampler.set_epoch(epoch)
            if hasattr(parts.train_dataset, "set_epoch"):
                parts.train_dataset.set_epoch(epoch)  # per-epoch augmentation stream (seeded datasets)
            lr = optimizer.param_groups[0]["lr"]
            logger.info(f"=> epoch {epoch}, lr {lr:g}")
            tm = train_one_epoch(
                parts.train_model,
                parts.train_loader,
                criterion,
                optimizer,
                device,
                epoch=epoch,
                scaler=scaler,
                amp_dtype=amp_dtype,
                channels_last=bool(hp.CHANNELS_LAST),
                max_iters=int(hp.MAX_ITERS_PER_EPOCH),
                print_freq=int(cfg.PRINT_FREQ),
                progress=info.is_main,
                writer=writer,
                global_step=progress.global_step,
                skeleton=skeleton,
                image_every=max(int(cfg.PRINT_FREQ), 1) * 10,
                **({"target_encoder": parts.target_encoder} if parts.target_encoder is not None else {}),
            )
            progress.global_step = int(tm["global_step"])
            scheduler.step()
            logger.info(
                f"=> epoch {epoch} done: loss {tm['loss']:.6f}, acc {tm['acc']:.3f}, "
                f"{tm['samples_per_s']:.1f} samples/s, {tm['seconds']:.1f}s"
            )
            perf: float | None = None  # HRPOSE.VALIDATE_FROM / VALIDATE_EVERY: not every epoch is validated
            is_best = False
            if should_validate(epoch, end_epoch, int(hp.VALIDATE_FROM), int(hp.VALIDATE_EVERY)):
                name_values, raw_perf = validate(
                    model,
                    valid_loader,
                    valid_dataset,
                    device,
                    codec=codec,
                    output_dir=final_output_dir,
                    settings=settings,
                    amp_dtype=amp_dtype,
                    channels_last=bool(hp.CHANNELS_LAST),
                    criterion=criterion,
                    arch=str(cfg.MODEL.NAME),
                    progress=info.is_main,
                    writer=writer,
                    step=epoch,
                )
                perf = last_perf = _perf_indicator(name_values, raw_perf, str(cfg.DATASET.DATASET))
                is_best = perf >= progress.best_perf
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if is_best and perf is not None:
                progress.best_perf = perf
                progress.best_state = {k: v.cpu() for k, v in state.items()}
            history.append({"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in tm.items()}, "perf": perf})
            if perf is not None:
                writer.scalar("valid_perf", perf, epoch)
            rng_all = _gather_rng()
            if info.is_main:
                # an epoch not validated keeps the last validated perf (model_best is chosen among validated ones)
                kept = perf if perf is not None else (last_perf if math.isfinite(last_perf) else 0.0)
                ckpt_obj = _checkpoint(cfg, parts, progress, epoch, state, kept, rng_all, weights_meta)
                logger.info(f"=> saving checkpoint to {final_output_dir}")
                save_checkpoint_atomic(ckpt_obj, checkpoint_file)
                progress.saved_epoch = epoch + 1
                # A kill before this write completes leaves checkpoint.pth holding best_state_dict;
                # resume then rewrites a missing model_best.pth from it (see _start_or_resume).
                if is_best and progress.best_state is not None:
                    save_checkpoint_atomic(with_meta(progress.best_state, weights_meta), best_file)
                if perf is None:
                    logger.info(f"=> epoch {epoch}: not validated (HRPOSE.VALIDATE_FROM {int(hp.VALIDATE_FROM)}, "
                                f"VALIDATE_EVERY {int(hp.VALIDATE_EVERY)}), best {progress.best_perf:.4f}")  # fmt: skip
                else:
                    logger.info(f"=> epoch {epoch}: perf {perf:.4f}, best {progress.best_perf:.4f}")
            barrier()
        final_state = Path(final_output_dir) / "final_state.pth"
        if info.is_main:
            logger.info(f"=> saving final model state to {final_state}")
            final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint_atomic(with_meta(final, weights_meta), final_state)
        barrier()
    except KeyboardInterrupt:
        # Ctrl-C: checkpoint.pth is the last complete epoch (atomic writes); say so and how to go on.
        message = _interrupted_message(checkpoint_file, progress.saved_epoch, end_epoch, bool(cfg.AUTO_RESUME))
        if info.is_main:
            logger.warning(f"=> interrupted: {message}")
        writer.close(quiet=True)
        raise Interrupted(message) from None
    except BaseException:
        writer.close(quiet=True)  # the error on its way is the one to report
        raise
    writer.close()
    return {
        "best_perf": progress.best_perf,
        "last_perf": last_perf,
        "epochs": len(history),
        "output_dir": Path(final_output_dir),
        "final_state": final_state,
        "log_file": paths.log_file,
        "history": history,
    }


def _start_or_resume(cfg: Any, parts: TrainParts, info: DistInfo, checkpoint_file: Path, best_file: Path) -> _Progress:
    """A fresh start at ``TRAIN.BEGIN_EPOCH``, or (``AUTO_RESUME`` and ``checkpoint.pth`` there) the checkpoint
    loaded into ``parts`` and the schedule's position read from it."""
    logger = get_logger()
    # TRAIN.BEGIN_EPOCH without a checkpoint only numbers the epochs (and shortens the run): like the official
    # tools/train.py, which builds its scheduler with last_epoch=-1 unless it loads a checkpoint, the schedule
    # starts at the base LR and LR_STEP counts the epochs of this run (e.g. fine-tuning from MODEL.PRETRAINED).
    progress = _Progress(begin_epoch=int(cfg.TRAIN.BEGIN_EPOCH))
    if info.is_main:
        # temp files of writes that a kill interrupted (save_checkpoint_atomic names them .<file>.*.tmp)
        for stale in Path(checkpoint_file.parent).glob(".*.pth.*.tmp"):
            logger.warning(f"=> removing {stale.name}, left by an interrupted checkpoint write")
            stale.unlink(missing_ok=True)
    if not (bool(cfg.AUTO_RESUME) and checkpoint_file.is_file()):
        return progress
    logger.info(f"=> loading checkpoint '{checkpoint_file}'")
    ckpt = _resume_from(checkpoint_file, cfg, info, parts)
    progress.begin_epoch = int(ckpt["epoch"])
    progress.saved_epoch = progress.begin_epoch
    progress.best_perf = float(ckpt.get("best_perf", ckpt.get("perf", 0.0)))
    best_state = ckpt.get("best_state_dict")
    if best_state is not None:
        progress.best_state = dict(strip_module_prefix(best_state))
    progress.global_step = int(ckpt.get("global_step", 0))
    logger.info(f"=> loaded checkpoint '{checkpoint_file}' (epoch {progress.begin_epoch})")
    if info.is_main and progress.best_state is not None and not best_file.is_file():
        # an earlier run was killed while writing model_best.pth: restore it from the checkpoint
        logger.warning(f"=> {best_file} is missing; rewriting it from the checkpoint's best_state_dict")
        save_checkpoint_atomic(progress.best_state, best_file)
    return progress


def _checkpoint(
    cfg: Any,
    parts: TrainParts,
    progress: _Progress,
    epoch: int,
    state: Mapping[str, torch.Tensor],
    perf: float,
    rng_all: list[dict[str, Any]],
    weights_meta: Mapping[str, Any],
) -> dict[str, Any]:
    """``checkpoint.pth`` after ``epoch``: the official fields plus what an exact resume needs."""
    return to_safe(
        {
            "epoch": epoch + 1,
            "model": str(cfg.MODEL.NAME),
            # official layout: the DataParallel model's keys, so tools/train.py resumes it
            "state_dict": add_module_prefix(state),
            "best_state_dict": progress.best_state,
            "perf": perf,
            "best_perf": progress.best_perf,
            "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "rng": rng_all,
            "global_step": progress.global_step,
            "config": config_to_dict(cfg),
            "hrpose_meta": json.dumps(weights_meta),
        }
    )


TRAIN_FILES = ("checkpoint.pth", "model_best.pth", "final_state.pth")


def _claim_output_dir(final_output_dir: Path, tb_log_dir: Path, stack: ExitStack) -> int | None:
    """Before any work (rank 0): the output folders usable, the files training writes not blocked by
    folders or other non-files, and this folder's training lock held (released by ``stack``). Returns the
    PID of a killed run whose stale lock was taken over, else None. Raises a UserError naming the path."""
    check_output_dirs(("OUTPUT_DIR", final_output_dir))
    lock = TrainLock(final_output_dir).acquire()
    stack.callback(lock.release)
    for name in TRAIN_FILES:
        f = final_output_dir / name
        if (f.exists() or f.is_symlink()) and not f.is_file():
            what = "a folder" if f.is_dir() else "not a regular file (or a broken link)"
            raise UserError(f"{f} is {what}; training writes {name} there: move it away or train into another "
                            "OUTPUT_DIR")  # fmt: skip
    check_output_dirs(("LOG_DIR", tb_log_dir))
    return lock.previous_pid


def _interrupted_message(checkpoint_file: Path, saved_epoch: int | None, end_epoch: int, auto_resume: bool) -> str:
    """What an interrupted ``train`` kept and how to go on."""
    if saved_epoch is None:
        return (f"no epoch finished, so no checkpoint was written in {checkpoint_file.parent}; run the same command "
                "to start again")  # fmt: skip
    how = "run the same command to resume" if auto_resume else "run the same command with AUTO_RESUME True to resume"
    return (f"{checkpoint_file.name} in {checkpoint_file.parent} holds epoch {saved_epoch} ({saved_epoch} of "
            f"{end_epoch} epochs done); {how}")  # fmt: skip


def _state_mismatch(expected: Mapping[str, Any], got: Mapping[str, Any]) -> str:
    """How a stored scheduler/scaler state differs in keys or value types from a fresh one ('' if it does not)."""
    if set(got) != set(expected):
        return f"has keys {sorted(map(str, got))}, expected {sorted(expected)}"
    for key, value in expected.items():
        number = (int, float)
        same = isinstance(got[key], type(value)) or (
            isinstance(value, number) and isinstance(got[key], number) and not isinstance(got[key], bool)
        )
        if value is not None and got[key] is not None and not same:
            return f"entry '{key}' is {type(got[key]).__name__}, expected {type(value).__name__}"
    return ""


def _resume_from(checkpoint_file: Path, cfg: Any, info: DistInfo, parts: TrainParts) -> dict[str, Any]:
    """Load ``checkpoint.pth`` into the model, optimizer, scheduler and scaler after checking every field it
    reads; any mismatch is a CheckpointReadError naming the file and the field."""
    ckpt = load_checkpoint(checkpoint_file, map_location=info.device)
    check_resume_fields(ckpt, checkpoint_file, int(cfg.TRAIN.END_EPOCH))
    fix = f"; move {checkpoint_file} away (or set AUTO_RESUME False) to start this training over"
    sched = parts.scheduler
    configured = (sorted(sched.milestones.elements()), sched.gamma) if sched is not None else None
    for field, target in (("state_dict", "model"), ("optimizer", "optimizer"), ("scheduler", "scheduler"),
                          ("scaler", "scaler")):  # fmt: skip
        obj = getattr(parts, target)
        if obj is None or ckpt.get(field) is None:
            if field in ("state_dict", "optimizer"):
                raise CheckpointReadError(f"checkpoint {checkpoint_file}: field '{field}' is missing{fix}")
            continue
        if target in ("scheduler", "scaler"):
            # their load_state_dict takes any mapping as attributes: compare with the state this run would save
            mismatch = _state_mismatch(obj.state_dict(), ckpt[field])
            if mismatch:
                raise CheckpointReadError(f"checkpoint {checkpoint_file}: field '{field}' {mismatch}{fix}")
        value = strip_module_prefix(ckpt[field]) if field == "state_dict" else ckpt[field]
        try:
            obj.load_state_dict(value)
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointReadError(
                f"checkpoint {checkpoint_file}: field '{field}' does not fit this {target} (written by another "
                f"config or model? {first[:300]}){fix}"
            ) from None
    if sched is not None and ckpt.get("scheduler") is None:
        # an official checkpoint.pth (or one from a run without a scheduler): continue the schedule at 'epoch'
        schedule_at(sched, int(ckpt["epoch"]))
    elif sched is not None and configured and (sorted(sched.milestones.elements()), sched.gamma) != configured:
        # TRAIN.LR_STEP / LR_FACTOR edited since the checkpoint (e.g. a schedule lengthened with END_EPOCH): the
        # config decides, as in the official resume, which builds its scheduler from the config at 'epoch'
        stored = sorted(sched.milestones.elements())
        sched.milestones = Counter(configured[0])
        sched.gamma = configured[1]
        schedule_at(sched, int(ckpt["epoch"]))
        if info.rank == 0:
            lr = sched.optimizer.param_groups[0]["lr"]
            get_logger().info(f"=> resume: TRAIN.LR_STEP {configured[0]} / LR_FACTOR {configured[1]} from the "
                              f"config (the checkpoint had {stored}); lr now {lr:g}")
    rng = ckpt.get("rng")
    try:
        if isinstance(rng, (list, tuple)) and info.rank < len(rng):
            restore_rng_state(rng[info.rank])
        elif isinstance(rng, Mapping):
            restore_rng_state(rng)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointReadError(
            f"checkpoint {checkpoint_file}: field 'rng' is not a random state ({str(e)[:200]}){fix}"
        ) from None
    return ckpt


def _gather_rng() -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each rank's stream."""
    return all_gather_objects(capture_rng_state())
