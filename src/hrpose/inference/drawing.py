"""Skeleton drawing: joints coloured by body side (from joint names), limbs by the side of both ends.

Colours are BGR (OpenCV). Left joints/limbs are orange, right ones blue, centre ones (nose, pelvis,
a limb joining left and right) green, the convention of most pose visualisers. Only joints with
score >= `kpt_thr` are drawn, and a limb only when both its ends are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from hrpose.inference.estimator import PersonPose

LEFT = (0, 128, 255)  # orange
RIGHT = (255, 128, 0)  # blue
CENTER = (0, 200, 0)  # green
BOX = (0, 255, 255)  # yellow


def joint_side(name: str) -> str:
    """'left', 'right' or 'center' from a joint name (left_*, l_*, *_left, *_l and the right spellings)."""
    n = name.lower().replace("-", "_").replace(" ", "_")
    if n.startswith(("left_", "l_")) or n.endswith(("_left", "_l")) or n == "left":
        return "left"
    if n.startswith(("right_", "r_")) or n.endswith(("_right", "_r")) or n == "right":
        return "right"
    return "center"


def side_colors(joint_names: Sequence[str]) -> list[tuple[int, int, int]]:
    table = {"left": LEFT, "right": RIGHT, "center": CENTER}
    return [table[joint_side(n)] for n in joint_names]


def limb_color(a: int, b: int, joint_names: Sequence[str]) -> tuple[int, int, int]:
    sa, sb = joint_side(joint_names[a]), joint_side(joint_names[b])
    if sa == sb == "left":
        return LEFT
    if sa == sb == "right":
        return RIGHT
    if {sa, sb} == {"left", "center"}:
        return LEFT
    if {sa, sb} == {"right", "center"}:
        return RIGHT
    return CENTER


def draw_poses(
    image_bgr: np.ndarray,
    poses: Sequence[PersonPose],
    joint_names: Sequence[str],
    skeleton: Sequence[tuple[int, int]],
    *,
    kpt_thr: float = 0.3,
    draw_boxes: bool = True,
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """A copy of `image_bgr` (H, W, 3) with each person's box, limbs and joints drawn (and track id)."""
    canvas = np.ascontiguousarray(image_bgr.copy())
    h, w = canvas.shape[:2]
    base = max(1, round(max(h, w) / 400))
    radius = radius or base + 2
    thickness = thickness or base + 1
    colors = side_colors(joint_names)
    limb_colors = [limb_color(a, b, joint_names) for a, b in skeleton]
    for pose in poses:
        kpts = np.asarray(pose.keypoints, dtype=np.float64)
        ok = (kpts[:, 2] >= kpt_thr) & np.isfinite(kpts[:, :2]).all(axis=1)
        pts = np.round(kpts[:, :2]).astype(np.int64)
        if draw_boxes:
            x, y, bw, bh = (int(round(v)) for v in pose.box[:4])
            cv2.rectangle(canvas, (x, y), (x + bw, y + bh), BOX, max(1, thickness - 1), cv2.LINE_AA)
            label = f"{pose.score:.2f}" if pose.track_id is None else f"#{pose.track_id} {pose.score:.2f}"
            cv2.putText(canvas, label, (x, max(12, y - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * base, BOX,
                        max(1, base), cv2.LINE_AA)  # fmt: skip
        for (a, b), color in zip(skeleton, limb_colors):
            if ok[a] and ok[b]:
                cv2.line(canvas, tuple(map(int, pts[a])), tuple(map(int, pts[b])), color, thickness, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(canvas, tuple(map(int, pts[j])), radius, colors[j], -1, cv2.LINE_AA)
    return canvas
