"""Joint names, flip pairs, skeletons, OKS sigmas and joint weights of the datasets hrpose knows.

`DatasetMeta` is the one object the rest of the code asks about a keypoint layout; COCO and MPII are
built in, custom datasets build theirs from the annotation's category (see `hrpose.data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip
# Per-joint OKS sigmas published with the COCO keypoint benchmark (cocodataset.org/#keypoints-eval).
COCO_SIGMAS = tuple(
    s / 10.0
    for s in (
        0.26,
        0.25,
        0.25,
        0.35,
        0.35,
        0.79,
        0.79,
        0.72,
        0.72,
        0.62,
        0.62,
        1.07,
        1.07,
        0.87,
        0.87,
        0.89,
        0.89,
    )
)
COCO_UPPER_BODY = tuple(range(11))
# Loss weights used when LOSS.USE_DIFFERENT_JOINTS_WEIGHT is on: elbows/knees 1.2, wrists/ankles 1.5.
COCO_JOINTS_WEIGHT = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5, 1.0, 1.0, 1.2, 1.2, 1.5, 1.5)

MPII_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)  # fmt: skip
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
MPII_SKELETON = (
    (0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (7, 12), (12, 11), (11, 10), (7, 13), (13, 14), (14, 15),
)  # fmt: skip
MPII_UPPER_BODY = (7, 8, 9, 10, 11, 12, 13, 14, 15)
MPII_JOINTS_WEIGHT = (1.5, 1.2, 1.0, 1.0, 1.2, 1.5, 1.0, 1.0, 1.0, 1.0, 1.5, 1.2, 1.0, 1.0, 1.2, 1.5)
# MPII has no OKS; these are only used if someone runs OKS NMS on MPII predictions.
MPII_SIGMAS = (0.089, 0.087, 0.107, 0.107, 0.087, 0.089, 0.107, 0.079, 0.079, 0.035,
               0.062, 0.072, 0.079, 0.079, 0.072, 0.062)  # fmt: skip


@dataclass(frozen=True)
class DatasetMeta:
    """What the pipeline needs to know about a keypoint layout (K joints)."""

    name: str
    joint_names: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    skeleton: tuple[tuple[int, int], ...] = ()
    sigmas: tuple[float, ...] = ()
    upper_body_ids: tuple[int, ...] = ()
    joints_weight: tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.joint_names)
        for a, b in (*self.flip_pairs, *self.skeleton):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"{self.name}: joint pair ({a}, {b}) is out of range for {k} joints")
        for attr in ("sigmas", "joints_weight"):
            v = getattr(self, attr)
            if v and len(v) != k:
                raise ValueError(f"{self.name}: {attr} has {len(v)} entries, expected {k} (one per joint)")

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    def flip_index(self) -> np.ndarray:
        """Permutation that maps joint i to its mirror image (identity for unpaired joints)."""
        idx = np.arange(self.num_joints)
        for a, b in self.flip_pairs:
            idx[a], idx[b] = b, a
        return idx

    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas if self.sigmas else [0.1] * self.num_joints, dtype=np.float64)

    def weights_array(self) -> np.ndarray:
        w = self.joints_weight if self.joints_weight else (1.0,) * self.num_joints
        return np.asarray(w, dtype=np.float32).reshape(-1, 1)


COCO = DatasetMeta("coco", COCO_JOINTS, COCO_FLIP_PAIRS, COCO_SKELETON, COCO_SIGMAS, COCO_UPPER_BODY,
                   COCO_JOINTS_WEIGHT)  # fmt: skip
MPII = DatasetMeta("mpii", MPII_JOINTS, MPII_FLIP_PAIRS, MPII_SKELETON, MPII_SIGMAS, MPII_UPPER_BODY,
                   MPII_JOINTS_WEIGHT)  # fmt: skip
BUILTIN: dict[str, DatasetMeta] = {"coco": COCO, "mpii": MPII}


def flip_pairs_from_names(names: tuple[str, ...] | list[str]) -> tuple[tuple[int, int], ...]:
    """Pairs `left_x`/`right_x` (also `l_x`/`r_x`, any case, `-` or `_` or space) by name."""

    def side_key(name: str) -> tuple[str, str] | None:
        n = name.lower().replace("-", "_").replace(" ", "_")
        for side, prefixes in (("L", ("left_", "l_")), ("R", ("right_", "r_"))):
            for p in prefixes:
                if n.startswith(p):
                    return side, n[len(p) :]
            for s in ("_left", "_l") if side == "L" else ("_right", "_r"):
                if n.endswith(s):
                    return side, n[: -len(s)]
        return None

    lefts: dict[str, int] = {}
    rights: dict[str, int] = {}
    for i, name in enumerate(names):
        key = side_key(name)
        if key is not None:
            (lefts if key[0] == "L" else rights)[key[1]] = i
    return tuple(sorted((lefts[k], rights[k]) for k in lefts if k in rights))
