"""Process settings shared by training and testing: AMP dtype, cuDNN switches, seeding.

Both :mod:`hrpose.engine.train` and :mod:`hrpose.engine.evaluate` use these; they live here so that the
imports go one way only (``train`` uses ``evaluate``, never the reverse).
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

__all__ = ["amp_settings", "apply_cudnn_settings", "seed_everything"]


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
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
