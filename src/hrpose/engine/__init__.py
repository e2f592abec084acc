"""Training and evaluation engine: the loop, validation with flip test, checkpoints, DDP/AMP setup.

Public API (docs/architecture.md): :func:`train_one_epoch`, :func:`validate`, :func:`save_checkpoint_atomic`,
:func:`train`, :func:`test`. Heavy pieces (datasets, models) are imported only when ``train``/``test`` run.
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
from hrpose.engine.train import (
    NonFiniteLossError,
    build_optimizer,
    build_scheduler,
    seed_everything,
    train,
    train_one_epoch,
)

__all__ = [
    "CheckpointSaveError", "DistInfo", "InferenceOutput", "NonFiniteLossError",
    "build_codec", "build_optimizer", "build_scheduler", "capture_rng_state", "load_checkpoint",
    "restore_rng_state", "run_inference", "save_checkpoint_atomic", "seed_everything", "setup_distributed",
    "test", "to_safe", "train", "train_one_epoch", "unwrap_model", "validate",
]  # fmt: skip
