"""Baseline for benchmarks/data_worker.py: the official HRNet training sample, re-implemented by us.

The official ``lib/dataset/JointsDataset.py`` ``__getitem__`` (HRNet/deep-high-resolution-net.pytorch) does,
per person record: a deep copy of the record dict; ``cv2.imread`` (IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION);
``cvtColor`` BGR -> RGB of the whole image (COLOR_RGB); half-body box with probability PROB_HALF_BODY; scale
and rotation drawn from the global numpy / ``random`` generators; a mirror of the whole image (a copy) and
of the joints; ``get_affine_transform`` (three float32 point pairs through ``cv2.getAffineTransform``);
one bilinear ``cv2.warpAffine``; torchvision ``ToTensor`` + ``Normalize``; a per-joint ``affine_transform``
loop; ``generate_target`` (a per-joint Gaussian patch loop). This module does the same work with the
same libraries (torchvision's two transforms written out, since torchvision is not installed here), so
its samples/s is what the official class does on this machine. It is only a benchmark baseline: nothing
in the product imports it.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import cv2
import numpy as np
import torch

from hrpose.data.records import PersonRecord

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _get_dir(src_point: np.ndarray, rot_rad: float) -> list[float]:
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return [src_point[0] * cs - src_point[1] * sn, src_point[0] * sn + src_point[1] * cs]


def _get_3rd_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    direct = a - b
    return b + np.array([-direct[1], direct[0]], dtype=np.float32)


def get_affine_transform(center: np.ndarray, scale: Any, rot: float, output_size: np.ndarray) -> np.ndarray:
    if not isinstance(scale, np.ndarray) and not isinstance(scale, list):
        scale = np.array([scale, scale])
    scale_tmp = scale * 200.0
    src_w = scale_tmp[0]
    dst_w, dst_h = output_size[0], output_size[1]
    rot_rad = np.pi * rot / 180
    src_dir = _get_dir([0, src_w * -0.5], rot_rad)
    dst_dir = np.array([0, dst_w * -0.5], np.float32)
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center
    src[1, :] = center + src_dir
    dst[0, :] = [dst_w * 0.5, dst_h * 0.5]
    dst[1, :] = np.array([dst_w * 0.5, dst_h * 0.5]) + dst_dir
    src[2:, :] = _get_3rd_point(src[0, :], src[1, :])
    dst[2:, :] = _get_3rd_point(dst[0, :], dst[1, :])
    return cv2.getAffineTransform(np.float32(src), np.float32(dst))


def affine_transform(pt: np.ndarray, t: np.ndarray) -> np.ndarray:
    new_pt = np.array([pt[0], pt[1], 1.0]).T
    new_pt = np.dot(t, new_pt)
    return new_pt[:2]


def fliplr_joints(joints: np.ndarray, joints_vis: np.ndarray, width: int, matched_parts: Any) -> tuple:
    joints[:, 0] = width - joints[:, 0] - 1
    for pair in matched_parts:
        joints[pair[0], :], joints[pair[1], :] = joints[pair[1], :], joints[pair[0], :].copy()
        joints_vis[pair[0], :], joints_vis[pair[1], :] = joints_vis[pair[1], :], joints_vis[pair[0], :].copy()
    return joints * joints_vis, joints_vis


class OfficialJointsDataset(torch.utils.data.Dataset):
    """The official COCODataset in training mode over hrpose's records (the w32 256x192 settings by default)."""

    def __init__(
        self,
        records: list[PersonRecord],
        flip_pairs: Any,
        upper_body_ids: Any,
        image_size: tuple[int, int] = (192, 256),
        heatmap_size: tuple[int, int] = (48, 64),
        sigma: float = 2,
        scale_factor: float = 0.35,
        rotation_factor: float = 45,
        flip: bool = True,
        prob_half_body: float = 0.3,
        num_joints_half_body: int = 8,
        color_rgb: bool = True,
    ) -> None:
        self.db = [
            {
                "image": r.image,
                "center": np.asarray(r.center, dtype=np.float32).copy(),
                "scale": np.asarray(r.scale, dtype=np.float32).copy(),
                "joints_3d": np.asarray(r.joints_img, dtype=np.float64).copy(),
                "joints_3d_vis": np.asarray(r.joints_vis, dtype=np.float64).copy(),
                "filename": "",
                "imgnum": 0,
            }
            for r in records
        ]
        self.flip_pairs = [list(p) for p in flip_pairs]
        self.upper_body_ids = list(upper_body_ids)
        self.num_joints = len(records[0].joints_img)
        self.image_size = np.array(image_size)
        self.heatmap_size = np.array(heatmap_size)
        self.aspect_ratio = image_size[0] * 1.0 / image_size[1]
        self.pixel_std = 200
        self.sigma = sigma
        self.scale_factor, self.rotation_factor, self.flip = scale_factor, rotation_factor, flip
        self.prob_half_body, self.num_joints_half_body = prob_half_body, num_joints_half_body
        self.color_rgb = color_rgb

    def __len__(self) -> int:
        return len(self.db)

    def transform(self, pic: np.ndarray) -> torch.Tensor:
        # torchvision ToTensor (uint8 HWC numpy) + Normalize (not in place)
        img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
        t = img.to(dtype=torch.get_default_dtype()).div(255)
        return t.sub(_MEAN).div(_STD)

    def half_body_transform(self, joints: np.ndarray, joints_vis: np.ndarray) -> tuple:
        upper_joints, lower_joints = [], []
        for joint_id in range(self.num_joints):
            if joints_vis[joint_id][0] > 0:
                if joint_id in self.upper_body_ids:
                    upper_joints.append(joints[joint_id])
                else:
                    lower_joints.append(joints[joint_id])
        if np.random.randn() < 0.5 and len(upper_joints) > 2:
            selected = upper_joints
        else:
            selected = lower_joints if len(lower_joints) > 2 else upper_joints
        if len(selected) < 2:
            return None, None
        selected_joints = np.array(selected, dtype=np.float32)
        center = selected_joints.mean(axis=0)[:2]
        left_top = np.amin(selected_joints, axis=0)
        right_bottom = np.amax(selected_joints, axis=0)
        w = right_bottom[0] - left_top[0]
        h = right_bottom[1] - left_top[1]
        if w > self.aspect_ratio * h:
            h = w * 1.0 / self.aspect_ratio
        elif w < self.aspect_ratio * h:
            w = h * self.aspect_ratio
        scale = np.array([w * 1.0 / self.pixel_std, h * 1.0 / self.pixel_std], dtype=np.float32)
        scale = scale * 1.5
        return center, scale

    def generate_target(self, joints: np.ndarray, joints_vis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        target_weight = np.ones((self.num_joints, 1), dtype=np.float32)
        target_weight[:, 0] = joints_vis[:, 0]
        target = np.zeros((self.num_joints, self.heatmap_size[1], self.heatmap_size[0]), dtype=np.float32)
        tmp_size = self.sigma * 3
        for joint_id in range(self.num_joints):
            feat_stride = self.image_size / self.heatmap_size
            mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
            mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= self.heatmap_size[0] or ul[1] >= self.heatmap_size[1] or br[0] < 0 or br[1] < 0:
                target_weight[joint_id] = 0
                continue
            size = 2 * tmp_size + 1
            x = np.arange(0, size, 1, np.float32)
            y = x[:, np.newaxis]
            x0 = y0 = size // 2
            g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * self.sigma**2))
            g_x = max(0, -ul[0]), min(br[0], self.heatmap_size[0]) - ul[0]
            g_y = max(0, -ul[1]), min(br[1], self.heatmap_size[1]) - ul[1]
            img_x = max(0, ul[0]), min(br[0], self.heatmap_size[0])
            img_y = max(0, ul[1]), min(br[1], self.heatmap_size[1])
            if target_weight[joint_id] > 0.5:
                target[joint_id][img_y[0] : img_y[1], img_x[0] : img_x[1]] = g[g_y[0] : g_y[1], g_x[0] : g_x[1]]
        return target, target_weight

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        db_rec = copy.deepcopy(self.db[idx])
        image_file = db_rec["image"]
        data_numpy = cv2.imread(image_file, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if self.color_rgb:
            data_numpy = cv2.cvtColor(data_numpy, cv2.COLOR_BGR2RGB)
        if data_numpy is None:
            raise ValueError(f"Fail to read {image_file}")
        joints = db_rec["joints_3d"]
        joints_vis = db_rec["joints_3d_vis"]
        c = db_rec["center"]
        s = db_rec["scale"]
        score = 1
        r = 0
        if np.sum(joints_vis[:, 0]) > self.num_joints_half_body and np.random.rand() < self.prob_half_body:
            c_half_body, s_half_body = self.half_body_transform(joints, joints_vis)
            if c_half_body is not None and s_half_body is not None:
                c, s = c_half_body, s_half_body
        sf, rf = self.scale_factor, self.rotation_factor
        s = s * np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf)
        r = np.clip(np.random.randn() * rf, -rf * 2, rf * 2) if random.random() <= 0.6 else 0
        if self.flip and random.random() <= 0.5:
            data_numpy = data_numpy[:, ::-1, :]
            joints, joints_vis = fliplr_joints(joints, joints_vis, data_numpy.shape[1], self.flip_pairs)
            c[0] = data_numpy.shape[1] - c[0] - 1
        trans = get_affine_transform(c, s, r, self.image_size)
        input = cv2.warpAffine(
            data_numpy, trans, (int(self.image_size[0]), int(self.image_size[1])), flags=cv2.INTER_LINEAR
        )
        input = self.transform(input)
        for i in range(self.num_joints):
            if joints_vis[i, 0] > 0.0:
                joints[i, 0:2] = affine_transform(joints[i, 0:2], trans)
        target, target_weight = self.generate_target(joints, joints_vis)
        meta = {"image": image_file, "filename": "", "imgnum": 0, "joints": joints, "joints_vis": joints_vis,
                "center": c, "scale": s, "rotation": r, "score": score}  # fmt: skip
        return input, torch.from_numpy(target), torch.from_numpy(target_weight), meta
