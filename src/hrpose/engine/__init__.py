"""Training and evaluation engine: the loop, validation with flip test, checkpoints, DDP/AMP setup.

Public API (docs/architecture.md): :func:`train_step`, :func:`train_one_epoch`, :func:`validate`,
:func:`save_checkpoint_atomic`, :func:`build_parts` / :func:`fit` (what :func:`train` runs), :func:`train`,
:func:`test`. Imports go one way: ``train`` uses ``evaluate``; both use ``runtime`` (AMP, cuDNN, seeding).
The CLI imports this package only when ``train``/``test`` run.
"""

from hrpose.engine.checkpoint import (
    CheckpointSaveError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint_atomic,
    to_safe,
)
from hrpose.engine.distributed import DistInfo, setup_distributed, unwrap_model
from hrpose.engine.evaluate import InferenceOutput, build_codec, run_inference, test, validate
from hrpose.engine.runtime import seed_everything
from hrpose.engine.train import (
    NonFiniteLossError,
    StepResult,
    TrainParts,
    build_optimizer,
    build_parts,
    build_scheduler,
    fit,
    train,
    train_one_epoch,
    train_step,
)

__all__ = [
    "CheckpointSaveError", "DistInfo", "InferenceOutput", "NonFiniteLossError", "StepResult", "TrainParts",
    "build_codec", "build_optimizer", "build_parts", "build_scheduler", "capture_rng_state", "fit",
    "load_checkpoint", "restore_rng_state", "run_inference", "save_checkpoint_atomic", "seed_everything",
    "setup_distributed", "test", "to_safe", "train", "train_one_epoch", "train_step", "unwrap_model", "validate",
]  # fmt: skip
