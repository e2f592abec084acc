"""What a pose model's forward pass returns, read one way everywhere (runtime backends, training, export)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def last_stage(out: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """A model's heatmaps: multi-stage models (a list or tuple of outputs) give the last stage's."""
    if isinstance(out, (list, tuple)):
        return out[-1]
    assert isinstance(out, torch.Tensor)
    return out
