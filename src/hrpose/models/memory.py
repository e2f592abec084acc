"""How much memory a configured model needs, estimated from its config before anything is allocated.

`estimate_model_bytes(cfg, spec)` adds up the fp32 parameters (from the channel widths and block counts of
`MODEL.EXTRA`) and the activations of one input of `MODEL.IMAGE_SIZE` (feature maps per branch, the stem, the
heatmaps, with a factor for the tensors alive at once; more for training, which keeps them for the backward
pass). `check_model_memory` compares it with the memory this machine has (MemAvailable, within a cgroup
limit if there is one; `HRPOSE_MAX_MODEL_BYTES` overrides) and refuses a config or checkpoint that asks
for more with one `ConfigError` giving the estimate. The estimate is coarse (within a small factor of what
PyTorch allocates): it is there to refuse a model of 100 000 channels or a 4096 x 4096 input before the
allocation, not to budget a normal one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

__all__ = ["ENV_VAR", "available_memory_bytes", "check_model_memory", "estimate_model_bytes"]

ENV_VAR = "HRPOSE_MAX_MODEL_BYTES"
_RESNET_PARAMS = {18: 11.2e6, 34: 21.3e6, 50: 23.5e6, 101: 42.5e6, 152: 58.1e6}  # backbone without the head
_RESNET_OUT = {18: 512, 34: 512, 50: 2048, 101: 2048, 152: 2048}
_LIVE_INFER = 6  # tensors of a feature map's size alive at once in inference (block input, two convs, fuse sum)


def estimate_model_bytes(cfg: Any, spec: Any, training: bool = False) -> tuple[int, int]:
    """(parameter bytes, activation bytes for one input) of the model `spec` describes, fp32."""
    w, h = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    joints = int(cfg.MODEL.NUM_JOINTS)
    area4 = (w / 4) * (h / 4)
    stem = 64 * (w / 2) * (h / 2) * 2 + 64 * area4 * 2 + 256 * area4 * 3
    stages = getattr(spec, "stages", None)
    if stages is not None:  # HRNet: stem + layer1 (4 bottlenecks of 64 -> 256), stages of parallel branches
        params: float = 3 * 64 * 9 + 64 * 64 * 9 + 4 * (256 * 64 * 2 + 64 * 64 * 9)
        acts = stem
        layers = 0
        prev: tuple[int, ...] = (256,)
        for st in stages:
            chans = [int(c) for c in st.num_channels]
            expansion = 4 if str(st.block).upper().startswith("BOTTLENECK") else 1
            wide = [c * expansion for c in chans]
            params += sum(9 * p * c for p, c in zip(prev, chans))  # transitions (3x3)
            per_module = sum(int(b) * 18 * c * c * max(1, expansion) for b, c in zip(st.num_blocks, chans))
            per_module += sum(9 * a * b for a in wide for b in wide)  # fuse layers, all pairs (upper bound)
            params += int(st.num_modules) * per_module
            act_stage = sum(c * area4 / 4**j for j, c in enumerate(wide))
            acts += _LIVE_INFER * act_stage
            layers += int(st.num_modules) * (2 * max(int(b) for b in st.num_blocks) + 2)
            if training:
                acts += (
                    int(st.num_modules)
                    * 3
                    * sum(int(b) * c * area4 / 4**j for j, (b, c) in enumerate(zip(st.num_blocks, wide)))
                )
            prev = tuple(wide)
        params += prev[0] * joints
    else:  # SimpleBaseline: a ResNet backbone + deconvolutions back to stride 4
        depth = int(getattr(spec, "num_layers", 50))
        params = _RESNET_PARAMS.get(depth, 60e6)
        filters = [int(f) for f in getattr(spec, "deconv_filters", (256, 256, 256))]
        kernels = [int(k) for k in getattr(spec, "deconv_kernels", (4,) * len(filters))]
        prev_c = _RESNET_OUT.get(depth, 2048)
        scale = 1 / 32
        acts = stem + _LIVE_INFER * _RESNET_OUT.get(depth, 2048) * area4 / 4
        for f, k in zip(filters, kernels):
            params += prev_c * f * k * k
            scale *= 2
            acts += 3 * f * w * h * scale * scale
            prev_c = f
        params += prev_c * joints
        if training:
            acts *= 4
    acts += 2 * joints * area4  # heatmaps (and their flipped twins)
    return int(params * 4), int(acts * 4)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory_bytes() -> int | None:
    """What this process may still allocate: $HRPOSE_MAX_MODEL_BYTES, else MemAvailable (capped by a cgroup
    limit), else None (unknown: no check)."""
    from hrpose.config import ConfigError

    raw = os.environ.get(ENV_VAR, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 1):
            raise ConfigError(f"{ENV_VAR}={raw[:40]!r}: expected a positive number of bytes, e.g. 8e9")
        return int(value)
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        return None
    limit = _read_int("/sys/fs/cgroup/memory.max")
    usage = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and usage is not None and avail is not None:
        avail = min(avail, max(limit - usage, 0))
    return avail


def check_model_memory(cfg: Any, spec: Any, training: bool = False, batch: int = 1) -> int:
    """Refuse (ConfigError with the estimate) a model that would need more memory than is available for
    its weights and `batch` inputs; returns the estimate in bytes."""
    from hrpose.config import ConfigError

    params, acts = estimate_model_bytes(cfg, spec, training)
    need = params * (4 if training else 1) + acts * max(1, batch)  # training: grads + two Adam moments
    have = available_memory_bytes()
    if have is not None and need > have:
        gib = 2**30
        raise ConfigError(
            f"the model of this config (MODEL.NAME {cfg.MODEL.NAME}, MODEL.IMAGE_SIZE {list(cfg.MODEL.IMAGE_SIZE)}, "
            f"MODEL.EXTRA widths) needs about {need / gib:.1f} GiB ({params / gib:.2f} GiB of weights, "
            f"{acts / gib:.2f} GiB per input{', training' if training else ''}), more than the {have / gib:.1f} GiB "
            f"this machine has free{' (' + ENV_VAR + ')' if os.environ.get(ENV_VAR) else ''}: use smaller "
            "widths or input size, or check that the config (or the checkpoint carrying it) is the right one"
        )
    return need
