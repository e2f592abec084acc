"""The training loop: :func:`train_one_epoch` (a plain function) and :func:`train` (the official
``tools/train.py`` schedule, with DDP, AMP, atomic checkpoints and exact resume).

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hrpose.errors import Interrupted, UserError

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
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    setup_distributed,
    unwrap_model,
    wrap_ddp,
)
from .logging import AverageMeter, TensorBoardWriter, close_logger, draw_skeleton_batch, get_logger, setup_logger

__all__ = [
    "NonFiniteLossError",
    "build_optimizer",
    "build_scheduler",
    "schedule_at",
    "amp_settings",
    "seed_everything",
    "train_one_epoch",
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
) -> torch.optim.Optimizer:
    """Official ``get_optimizer``: ``'sgd'`` (momentum, WD, Nesterov) or ``'adam'`` (no weight decay)."""
    key = name.lower()
    if key == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    if key == "adam":
        # The official code passes only the learning rate to Adam (TRAIN.WD is ignored); kept.
        return torch.optim.Adam(model.parameters(), lr=lr)
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


def amp_settings(amp: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use GradScaler)`` for ``HRPOSE.AMP`` on ``device``."""
    key = (amp or "").lower()
    if key in ("", "none", "false", "off"):
        return None, False
    if key == "bf16":
        return torch.bfloat16, False
    if key == "fp16":
        return torch.float16, device.type == "cuda"
    raise ValueError(f"HRPOSE.AMP: expected '', 'bf16' or 'fp16', got {amp!r}")


def apply_cudnn_settings(cfg: Any) -> None:
    """The config's CUDNN.BENCHMARK / DETERMINISTIC / ENABLED, as the official train and test scripts set them."""
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN.BENCHMARK)
    torch.backends.cudnn.deterministic = bool(cfg.CUDNN.DETERMINISTIC)
    torch.backends.cudnn.enabled = bool(cfg.CUDNN.ENABLED)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; optionally switch torch to deterministic algorithms."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


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


def _last(outputs: Any) -> torch.Tensor:
    return outputs[-1] if isinstance(outputs, (list, tuple)) else outputs


def _accuracy(output: torch.Tensor, target: torch.Tensor) -> tuple[float, int, np.ndarray]:
    from hrpose.codec import accuracy

    _, avg_acc, cnt, pred = accuracy(output.detach().float().cpu().numpy(), target.detach().float().cpu().numpy())
    return float(avg_acc), int(cnt), np.asarray(pred)


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
) -> dict[str, float]:
    """One pass over ``loader``: forward, loss, backward, step. Returns the epoch's metrics.

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
    autocast = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total or None, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
    samples = 0
    iters = 0
    start = time.perf_counter()
    step_start = start
    try:
        for i, (inputs, target, target_weight, _meta) in enumerate(loader):
            if max_iters > 0 and i >= max_iters:
                break
            inputs = _to_device(inputs, device, non_blocking)
            if channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            target = _to_device(target, device, non_blocking)
            target_weight = _to_device(target_weight, device, non_blocking)
            with autocast:
                outputs = model(inputs)
            loss = _loss_of(criterion, outputs, target, target_weight)
            # Every rank checks the same (averaged) value, so all of them stop together.
            loss_value = float(all_reduce_mean(loss).item())
            if not math.isfinite(loss_value):
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss_value}) at epoch {epoch}, step {i}: "
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

            batch = int(inputs.shape[0])
            samples += batch
            iters += 1
            losses.update(loss_value, batch)
            output = _last(outputs)
            pred = None
            if compute_accuracy:
                avg_acc, cnt, pred = _accuracy(output, target)
                acc.update(avg_acc, cnt)
            now = time.perf_counter()
            speed = batch / max(now - step_start, 1e-9)
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
            if writer is not None and writer.active and image_every > 0 and i % image_every == 0 and pred is not None:
                stride = inputs.shape[-1] / output.shape[-1]  # heatmap -> input pixels
                vis = target_weight[..., 0].detach().cpu().numpy() > 0
                writer.images("train_pred", draw_skeleton_batch(inputs, pred * stride, vis, skeleton), step)
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
) -> tuple[Any, Any]:
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    sampler: DistributedSampler | None = None
    if info.is_distributed:
        sampler = DistributedSampler(
            dataset, num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory and info.device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
    )
    return loader, sampler


def train(cfg: Any, cfg_file: str | os.PathLike[str], *, device: str | torch.device | None = None) -> dict[str, Any]:
    """Official ``tools/train.py``: train ``BEGIN_EPOCH..END_EPOCH``, validate every epoch, checkpoint.

    Under ``torchrun`` this is DDP (one process per device, ``TRAIN.BATCH_SIZE_PER_GPU`` each);
    validation is sharded across ranks and gathered on rank 0, which evaluates, logs and writes every
    file. ``AUTO_RESUME`` continues from ``checkpoint.pth`` (model, optimizer, scheduler, scaler,
    epoch, best perf, RNG state). Returns ``{'best_perf', 'last_perf', 'epochs', 'output_dir',
    'final_state', 'history'}`` (``history``: one dict of train/val metrics per epoch run here).
    """
    from hrpose.codec import build_codec
    from hrpose.config import config_to_dict, experiment_name, output_dirs
    from hrpose.data import build_dataset
    from hrpose.losses import build_loss
    from hrpose.models import build_model

    from .evaluate import validate

    info = setup_distributed(device)
    # Process-wide switches train() may change; restored afterwards so that a caller (or a test
    # session) running train() in-process keeps its own settings.
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.enabled,
    )
    try:
        with ExitStack() as stack:  # holds the output folder's training lock until the end
            return _train(
                cfg,
                cfg_file,
                info,
                stack=stack,
                build_model=build_model,
                build_loss=build_loss,
                build_dataset=build_dataset,
                build_codec=build_codec,
                validate=validate,
                output_dirs=output_dirs,
                experiment_name=experiment_name,
                config_to_dict=config_to_dict,
            )
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.enabled = saved[2:]
        close_logger()
        cleanup_distributed(info)


TRAIN_FILES = ("checkpoint.pth", "model_best.pth", "final_state.pth")


def _claim_output_dir(final_output_dir: Path, tb_log_dir: Path, stack: ExitStack) -> int | None:
    """Before any work (rank 0): the output folders usable, the files training writes not blocked by
    folders or other non-files, and this folder's training lock held (released by ``stack``). Returns the
    PID of a killed run whose stale lock was taken over, else None. Raises a UserError naming the path."""
    from hrpose.config import check_output_dirs

    from .lock import TrainLock

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


def _resume_from(checkpoint_file: Path, cfg: Any, info: DistInfo, parts: dict[str, Any]) -> dict[str, Any]:
    """Load ``checkpoint.pth`` into the model, optimizer, scheduler and scaler after checking every field it
    reads; any mismatch is a CheckpointReadError naming the file and the field."""
    ckpt = load_checkpoint(checkpoint_file, map_location=info.device)
    check_resume_fields(ckpt, checkpoint_file, int(cfg.TRAIN.END_EPOCH))
    fix = f"; move {checkpoint_file} away (or set AUTO_RESUME False) to start this training over"
    for field, target in (("state_dict", "model"), ("optimizer", "optimizer"), ("scheduler", "scheduler"),
                          ("scaler", "scaler")):  # fmt: skip
        obj = parts[target]
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
    if parts["scheduler"] is not None and ckpt.get("scheduler") is None:
        # an official checkpoint.pth (or one from a run without a scheduler): continue the schedule at 'epoch'
        schedule_at(parts["scheduler"], int(ckpt["epoch"]))
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


def _train(cfg: Any, cfg_file: str | os.PathLike[str], info: DistInfo, stack: ExitStack, **fn: Any) -> dict[str, Any]:
    from .evaluate import make_eval_loader

    device = info.device
    cfg_name = fn["experiment_name"](cfg_file)
    final_output_dir, tb_log_dir = fn["output_dirs"](cfg, cfg_file, create=False)
    final_output_dir, tb_log_dir = broadcast_object((Path(final_output_dir), Path(tb_log_dir)))
    # Rank 0 checks the folders and takes the lock; every rank learns the outcome, so all stop together.
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
    logger.info(f"=> device {device}, world size {info.world_size}, output {final_output_dir}")
    if stale_pid is not None:
        logger.warning(f"=> took over the training lock of PID {stale_pid}, which is no longer running")
    logger.info(str(cfg))

    apply_cudnn_settings(cfg)
    hp = cfg.HRPOSE
    if int(hp.SEED) >= 0:
        # Different augmentation per rank; DDP broadcasts rank 0's initial weights anyway.
        seed_everything(int(hp.SEED) + info.rank, bool(hp.DETERMINISTIC))
    elif bool(hp.DETERMINISTIC):
        seed_everything(0 + info.rank, True)

    model = fn["build_model"](cfg, is_train=True)
    model.to(device)
    if bool(hp.CHANNELS_LAST):
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    train_model = wrap_ddp(model, info, sync_bn=bool(hp.SYNC_BN))
    model = unwrap_model(train_model)  # SyncBN conversion returns a new module
    criterion = fn["build_loss"](cfg).to(device)

    train_dataset = fn["build_dataset"](cfg, "train", True)
    valid_dataset = fn["build_dataset"](cfg, "test", False)
    seed = max(int(hp.SEED), 0)
    train_loader, train_sampler = _make_loader(
        train_dataset,
        int(cfg.TRAIN.BATCH_SIZE_PER_GPU),
        shuffle=bool(cfg.TRAIN.SHUFFLE),
        workers=int(cfg.WORKERS),
        pin_memory=bool(cfg.PIN_MEMORY),
        info=info,
        seed=seed,
    )
    valid_loader = make_eval_loader(
        valid_dataset,
        int(cfg.TEST.BATCH_SIZE_PER_GPU),
        int(cfg.WORKERS),
        info,
        pin_memory=bool(cfg.PIN_MEMORY) and device.type == "cuda",
    )
    codec = getattr(valid_dataset, "codec", None) or fn["build_codec"](cfg)
    from hrpose.pipeline import TestSettings

    settings = TestSettings.from_config(cfg)  # flip test, shift (not for UDP), post-process, read once

    optimizer = build_optimizer(
        train_model,
        cfg.TRAIN.OPTIMIZER,
        float(cfg.TRAIN.LR),
        momentum=float(cfg.TRAIN.MOMENTUM),
        weight_decay=float(cfg.TRAIN.WD),
        nesterov=bool(cfg.TRAIN.NESTEROV),
    )
    scheduler = build_scheduler(optimizer, cfg.TRAIN.LR_STEP, float(cfg.TRAIN.LR_FACTOR))
    amp_dtype, use_scaler = amp_settings(str(hp.AMP), device)
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    # TRAIN.BEGIN_EPOCH without a checkpoint only numbers the epochs (and shortens the run): like the official
    # tools/train.py, which builds its scheduler with last_epoch=-1 unless it loads a checkpoint, the schedule
    # starts at the base LR and LR_STEP counts the epochs of this run (e.g. fine-tuning from MODEL.PRETRAINED).
    begin_epoch = int(cfg.TRAIN.BEGIN_EPOCH)
    best_perf = 0.0
    best_state: dict[str, torch.Tensor] | None = None
    global_step = 0  # TensorBoard step: training iterations so far
    checkpoint_file = Path(final_output_dir) / "checkpoint.pth"
    best_file = Path(final_output_dir) / "model_best.pth"
    if info.is_main:
        # temp files of writes that a kill interrupted (save_checkpoint_atomic names them .<file>.*.tmp)
        for stale in Path(final_output_dir).glob(".*.pth.*.tmp"):
            logger.warning(f"=> removing {stale.name}, left by an interrupted checkpoint write")
            stale.unlink(missing_ok=True)
    saved_epoch: int | None = None  # the epoch count checkpoint.pth holds (for the Ctrl-C message)
    if bool(cfg.AUTO_RESUME) and checkpoint_file.is_file():
        logger.info(f"=> loading checkpoint '{checkpoint_file}'")
        parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        ckpt = _resume_from(checkpoint_file, cfg, info, parts)
        begin_epoch = int(ckpt["epoch"])
        saved_epoch = begin_epoch
        best_perf = float(ckpt.get("best_perf", ckpt.get("perf", 0.0)))
        best_state = ckpt.get("best_state_dict")
        if best_state is not None:
            best_state = dict(strip_module_prefix(best_state))
        global_step = int(ckpt.get("global_step", 0))
        logger.info(f"=> loaded checkpoint '{checkpoint_file}' (epoch {begin_epoch})")
        if info.is_main and best_state is not None and not best_file.is_file():
            # an earlier run was killed while writing model_best.pth: restore it from the checkpoint
            logger.warning(f"=> {best_file} is missing; rewriting it from the checkpoint's best_state_dict")
            save_checkpoint_atomic(best_state, best_file)

    writer = TensorBoardWriter(tb_log_dir, enabled=info.is_main and bool(hp.TENSORBOARD))
    skeleton = tuple(getattr(getattr(train_dataset, "meta", None), "skeleton", ()) or ())
    from hrpose.models.weights import checkpoint_meta, with_meta

    # saved with model_best/final_state (beside the weights): predict needs no dataset or config then
    weights_meta = checkpoint_meta(cfg, getattr(train_dataset, "meta", None))
    history: list[dict[str, Any]] = []
    last_perf = float("nan")
    end_epoch = int(cfg.TRAIN.END_EPOCH)
    try:
        for epoch in range(begin_epoch, end_epoch):
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)
            if hasattr(train_dataset, "set_epoch"):
                train_dataset.set_epoch(epoch)  # per-epoch augmentation stream (seeded datasets)
            lr = optimizer.param_groups[0]["lr"]
            logger.info(f"=> epoch {epoch}, lr {lr:g}")
            tm = train_one_epoch(
                train_model,
                train_loader,
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
                global_step=global_step,
                skeleton=skeleton,
                image_every=max(int(cfg.PRINT_FREQ), 1) * 10,
            )
            global_step = int(tm["global_step"])
            scheduler.step()
            logger.info(
                f"=> epoch {epoch} done: loss {tm['loss']:.6f}, acc {tm['acc']:.3f}, "
                f"{tm['samples_per_s']:.1f} samples/s, {tm['seconds']:.1f}s"
            )
            name_values, perf = fn["validate"](
                model,
                valid_loader,
                valid_dataset,
                device,
                codec=codec,
                settings=settings,
                output_dir=final_output_dir,
                amp_dtype=amp_dtype,
                channels_last=bool(hp.CHANNELS_LAST),
                criterion=criterion,
                arch=str(cfg.MODEL.NAME),
                progress=info.is_main,
                writer=writer,
                step=epoch,
            )
            perf = _perf_indicator(name_values, perf, str(cfg.DATASET.DATASET))
            last_perf = perf
            is_best = perf >= best_perf
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if is_best:
                best_perf = perf
                best_state = {k: v.cpu() for k, v in state.items()}
            history.append({"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in tm.items()}, "perf": perf})
            writer.scalar("valid_perf", perf, epoch)
            rng_all = _gather_rng()
            if info.is_main:
                ckpt_obj = to_safe(
                    {
                        "epoch": epoch + 1,
                        "model": str(cfg.MODEL.NAME),
                        # official layout: the DataParallel model's keys, so tools/train.py resumes it
                        "state_dict": add_module_prefix(state),
                        "best_state_dict": best_state,
                        "perf": perf,
                        "best_perf": best_perf,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "rng": rng_all,
                        "global_step": global_step,
                        "config": fn["config_to_dict"](cfg),
                        "hrpose_meta": json.dumps(weights_meta),
                    }
                )
                logger.info(f"=> saving checkpoint to {final_output_dir}")
                save_checkpoint_atomic(ckpt_obj, checkpoint_file)
                saved_epoch = epoch + 1
                # A kill before this write completes leaves checkpoint.pth holding best_state_dict;
                # resume then rewrites a missing model_best.pth from it (see above).
                if is_best and best_state is not None:
                    save_checkpoint_atomic(with_meta(best_state, weights_meta), best_file)
                logger.info(f"=> epoch {epoch}: perf {perf:.4f}, best {best_perf:.4f}")
            barrier()
        final_state = Path(final_output_dir) / "final_state.pth"
        if info.is_main:
            logger.info(f"=> saving final model state to {final_state}")
            final = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint_atomic(with_meta(final, weights_meta), final_state)
        barrier()
    except KeyboardInterrupt:
        # Ctrl-C: checkpoint.pth is the last complete epoch (atomic writes); say so and how to go on.
        message = _interrupted_message(checkpoint_file, saved_epoch, end_epoch, bool(cfg.AUTO_RESUME))
        if info.is_main:
            logger.warning(f"=> interrupted: {message}")
        raise Interrupted(message) from None
    finally:
        writer.close()
    return {
        "best_perf": best_perf,
        "last_perf": last_perf,
        "epochs": len(history),
        "output_dir": Path(final_output_dir),
        "final_state": final_state,
        "log_file": log_file,
        "history": history,
    }


def _gather_rng() -> list[dict[str, Any]]:
    """Every rank's RNG state (rank order), so a resumed DDP run continues each rank's stream."""
    from .distributed import all_gather_objects

    return all_gather_objects(capture_rng_state())
