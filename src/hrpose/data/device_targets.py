"""Heatmap targets made where the model runs (GPU or CPU) from joint coordinates: the same Gaussians as
``HeatmapCodec.encode`` (codec method ``official``), bit for bit.

With the official encoding every drawn cell's value is ``exp(-(dx^2 + dy^2) / (2 sigma^2))`` for integer
offsets ``dx, dy`` from the patch centre (the centre is the truncated, integer patch corner plus half the
patch), so the encoder precomputes that float32 value for every integer ``dx^2 + dy^2`` the patch can hold
with the same numpy expression the codec uses, and each batch becomes integer arithmetic, a table gather and
a mask on the device. The data workers then only ship joint coordinates (K x 3 numbers instead of a K x h x w
float map per sample).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hrpose.codec import HeatmapCodec


class DeviceTargetEncoder:
    """``codec.encode`` for a batch on any device: ``(joints (B, K, >=2) crop pixels, joints_vis (B, K) or
    (B, K, 3)) -> target (B, K, h, w) float32, target_weight (B, K, 1) float32`` on ``joints``' device."""

    def __init__(self, codec: HeatmapCodec) -> None:
        if codec.method != "official":
            raise ValueError(f"DeviceTargetEncoder: only the 'official' codec is supported, got {codec.method!r}; "
                             "use HeatmapCodec.encode in the data workers for dark/udp")  # fmt: skip
        self.codec = codec
        self.w, self.h = codec.heatmap_w, codec.heatmap_h
        self.tmp_size = codec.sigma * 3
        self.centre = math.floor(2 * self.tmp_size + 1) // 2
        self.patch = math.ceil(2 * self.tmp_size + 1)
        max_d = self.patch + 1
        s = np.arange(2 * max_d * max_d + 1, dtype=np.float32)  # every dx^2 + dy^2 a drawn cell can have
        two_var = np.float32(2 * codec.sigma**2)
        # the codec's own expression: float32 squares summed, negated, divided by float32 2 sigma^2, np.exp
        self._table = torch.from_numpy(np.exp(-(s + np.float32(0)) / two_var).astype(np.float32))
        self._stride = torch.tensor(np.asarray(codec.feat_stride, dtype=np.float64))
        jw = codec.joints_weight
        self._joints_weight = None if jw is None else torch.from_numpy(np.asarray(jw, dtype=np.float32))
        self._cache: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._cache:
            jw = self._joints_weight.to(device) if self._joints_weight is not None else torch.empty(0)
            self._cache[device] = (self._table.to(device), self._stride.to(device), jw.to(device))
        return self._cache[device]

    def __call__(self, joints: torch.Tensor, joints_vis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = joints.device
        table, stride, jw = self._on(device)
        if joints.dim() != 3 or joints.shape[-1] < 2:
            raise ValueError(f"DeviceTargetEncoder: joints must be (B, K, 2 or 3), got {tuple(joints.shape)}")
        vis = joints_vis[..., 0] if joints_vis.dim() == 3 else joints_vis
        b, k = joints.shape[:2]
        pos = joints[..., :2].to(torch.float64) / stride  # (B, K, 2)
        mu = torch.trunc(pos + 0.5)
        ul = torch.trunc(mu - self.tmp_size)
        br = torch.trunc(mu + self.tmp_size + 1)
        off = (ul[..., 0] >= self.w) | (ul[..., 1] >= self.h) | (br[..., 0] < 0) | (br[..., 1] < 0)
        # torch.where, not a masked assignment: no host synchronisation (a CUDA graph can capture it)
        weight = torch.where(off, torch.zeros((), dtype=torch.float32, device=device), vis.to(torch.float32))
        draw = ~off & (weight > 0.5)
        c = (ul + self.centre).to(torch.int64)  # (B, K, 2) integer patch centres
        ul_i, end = ul.to(torch.int64), torch.minimum(br, ul + self.patch).to(torch.int64)
        xs = torch.arange(self.w, device=device, dtype=torch.int64)
        ys = torch.arange(self.h, device=device, dtype=torch.int64)
        in_x = (xs >= ul_i[..., :1]) & (xs < end[..., :1])  # (B, K, W)
        in_y = (ys >= ul_i[..., 1:]) & (ys < end[..., 1:])  # (B, K, H)
        dx2 = (xs - c[..., :1]).square()
        dy2 = (ys - c[..., 1:]).square()
        mask = in_y[..., :, None] & in_x[..., None, :] & draw[..., None, None]
        s = (dy2[..., :, None] + dx2[..., None, :]).clamp_(max=table.numel() - 1)
        target = torch.where(mask, table[s], torch.zeros((), dtype=torch.float32, device=device))
        weight = weight.view(b, k, 1)
        if jw.numel():
            weight = weight * jw.view(1, -1, 1)
        return target, weight
