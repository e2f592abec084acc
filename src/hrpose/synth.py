"""Synthetic people in the official COCO keypoint layout, for the quick start, tests and benchmarks.

Each image holds 1-4 articulated 17-joint figures (COCO joint order) with human proportions and joint
limits, drawn with OpenCV as tapered capsules over a random background. Labels follow COCO:
`v=2` visible, `v=1` inside the image but hidden (by a nearer figure, by the figure's own parts, or on
the far side of the head), `v=0` outside the image with coordinates `(0, 0)`.

Left and right are decidable the way they are for real people, from the facing direction: a figure
seen from the front shows a face (skin, eyes, nose, mouth) and a V collar, one seen from behind shows a
plain head of hair. Cues tied to one side (say "the left arm is always darker") are deliberately
avoided because horizontal-flip augmentation and flip testing mirror the image and swap the labels,
which would turn such a cue into label noise. Instead the two sides of one figure are coloured with a
clear brightness difference whose sign is random per figure (so a limb can be traced to its shoulder),
and limbs on the far side of a turned figure are darker and drawn behind the torso.

Layout written by `write_synthetic_dataset`::

    OUT/annotations/person_keypoints_<split>.json
    OUT/images/<split>/synth_000001.jpg ...

Everything is a pure function of `(seed, split, image index, image size)`: the same arguments give a
byte-identical annotation file and identical image arrays.
"""

from __future__ import annotations

import colorsys
import functools
import json
import math
import multiprocessing
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from hrpose.diskfull import translate_disk_full
from hrpose.keypoints import COCO
from hrpose.user_files import replace_atomically

# Body parts; a pixel of the label map holds 1 + person * PARTS_PER_PERSON + part (0 = background).
PARTS = (
    "torso", "head", "left_upper_arm", "right_upper_arm", "left_forearm", "right_forearm",
    "left_thigh", "right_thigh", "left_shin", "right_shin", "left_ear", "right_ear",
)  # fmt: skip
(TORSO, HEAD, L_UARM, R_UARM, L_FARM, R_FARM, L_THIGH, R_THIGH, L_SHIN, R_SHIN, L_EAR, R_EAR) = range(len(PARTS))
PARTS_PER_PERSON = 16
MAX_PEOPLE = (255 - 1) // PARTS_PER_PERSON  # the label map is uint8

# COCO joint -> parts of its own figure whose pixels show it (anything else on top hides it).
JOINT_PARTS: tuple[frozenset[int], ...] = tuple(
    frozenset(p)
    for p in (
        *([{HEAD, L_EAR, R_EAR}] * 5),  # the ears are part of the head (they touch the eyes on tiny people)
        {TORSO, L_UARM}, {TORSO, R_UARM}, {L_UARM, L_FARM}, {R_UARM, R_FARM}, {L_FARM}, {R_FARM},
        {TORSO, L_THIGH}, {TORSO, R_THIGH}, {L_THIGH, L_SHIN}, {R_THIGH, R_SHIN}, {L_SHIN}, {R_SHIN},
    )
)  # fmt: skip
JPEG_QUALITY = 90
_SHIFT = 4  # cv2 sub-pixel bits: shapes are placed with 1/16 px precision
_ONE = float(1 << _SHIFT)

_Colour = tuple[float, float, float]
_SKIN = ((60, 90, 140), (80, 120, 175), (105, 150, 205), (140, 180, 225), (45, 65, 100), (120, 165, 215))
_HAIR = ((20, 20, 25), (30, 45, 70), (40, 80, 120), (90, 150, 190), (150, 150, 150), (15, 30, 60))


@dataclass(frozen=True)
class Texture:
    """Fill of a part: `kind` is "solid", "stripes" (period px, angle rad relative to the part axis) or "noise"."""

    kind: str = "solid"
    period: float = 6.0
    angle: float = 0.0
    amplitude: float = 0.0


@dataclass(frozen=True)
class Figure:
    """One person's pose and look. Angles in degrees; `height` is crown-to-ankle in px when standing."""

    height: float
    pelvis: tuple[float, float]
    yaw: float = 0.0  # 0 = facing the camera, 180 = facing away; the person's left is at +x when 0
    roll: float = 0.0  # in-plane rotation of the whole body about the pelvis
    lean: float = 0.0  # torso relative to the legs
    head_tilt: float = 0.0
    arm_abduction: tuple[float, float] = (10.0, 10.0)  # (left, right), 0 = hanging, >0 away from the body
    elbow_flex: tuple[float, float] = (0.0, 0.0)  # signed, relative to the upper arm
    arm_foreshortening: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # l_upper, l_fore, r_...
    hip_abduction: tuple[float, float] = (5.0, 5.0)
    knee_flex: tuple[float, float] = (0.0, 0.0)
    leg_foreshortening: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    stretch_x: float = 1.0  # anisotropic body shape (thin / broad)
    build: float = 1.0  # limb thickness factor
    skin: tuple[float, float, float] = _SKIN[1]  # BGR
    hair: tuple[float, float, float] = _HAIR[0]
    # (left, right) clothing colours; a turned figure's far side takes the darker one
    shirt: tuple[_Colour, _Colour] = ((40, 40, 200), (90, 90, 250))
    pants: tuple[_Colour, _Colour] = ((120, 60, 20), (170, 100, 50))
    shoes: tuple[float, float, float] = (30, 30, 30)
    shirt_texture: Texture = field(default_factory=Texture)
    pants_texture: Texture = field(default_factory=Texture)

    @property
    def facing_camera(self) -> bool:
        return math.cos(math.radians(self.yaw)) > 0


@dataclass(frozen=True)
class _Paint:
    part: int  # -1: decoration drawn on the image only (face details); keeps the label underneath
    shapes: tuple[tuple, ...]
    colour: tuple[float, float, float]
    texture: Texture = Texture()
    axis_angle: float = 0.0  # radians, orientation of the part's long axis (for stripes)


@dataclass
class Scene:
    """A rendered image: `image` (H, W, 3) uint8 BGR, `labels` (H, W) uint8 part map, one entry per figure."""

    image: np.ndarray
    labels: np.ndarray
    figures: list[Figure]
    joints: list[np.ndarray]  # (17, 2) float64 image coordinates per figure, drawing order
    visibility: list[np.ndarray]  # (17,) int 0/1/2 per figure
    masks: list[np.ndarray]  # (H, W) bool: each figure's own pixels, ignoring who covers them


# ---------------------------------------------------------------------------------------------- geometry


def _unit(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([math.cos(a), math.sin(a)])


def figure_joints(fig: Figure) -> tuple[np.ndarray, np.ndarray, list[_Paint]]:
    """Joint positions, which joints the figure's own orientation leaves visible, and its paint list.

    Returns `joints_img` (17, 2) float64, `facing_visible` (17,) bool (False for the face seen from behind
    and the far ear) and the parts back to front.
    """
    H = fig.height
    phi = math.radians(fig.yaw)
    c_yaw, s_yaw = math.cos(phi), math.sin(phi)
    side = 1.0 if c_yaw > 0 else -1.0  # +1: the person's left appears on the image right
    # Body frame before the global roll: e = image-right, u = up, both turned by the lean.
    e = _unit(fig.lean)
    u = np.array([e[1], -e[0]])
    out_l, out_r = side * e, -side * e  # outward direction of each side
    down = -u
    b = fig.build

    P = np.zeros(2)
    neck = P + 0.30 * H * u
    shoulder_line = neck - 0.025 * H * u
    S, Hw = 0.12 * H, 0.075 * H
    ls, rs = shoulder_line + e * S * c_yaw, shoulder_line - e * S * c_yaw
    lh, rh = P + e * Hw * c_yaw, P - e * Hw * c_yaw

    def limb(start: np.ndarray, outward: np.ndarray, angle: float, flex: float, l1: float, l2: float):
        a1, a2 = math.radians(angle), math.radians(angle + flex)
        d1 = math.cos(a1) * down + math.sin(a1) * outward
        d2 = math.cos(a2) * down + math.sin(a2) * outward
        mid = start + l1 * d1
        return mid, mid + l2 * d2, d1, d2

    af, lf = fig.arm_foreshortening, fig.leg_foreshortening
    le, lw, _, lwd = limb(ls, out_l, fig.arm_abduction[0], fig.elbow_flex[0], 0.18 * H * af[0], 0.16 * H * af[1])
    re, rw, _, rwd = limb(rs, out_r, fig.arm_abduction[1], fig.elbow_flex[1], 0.18 * H * af[2], 0.16 * H * af[3])
    lk, la, _, lad = limb(lh, out_l, fig.hip_abduction[0], fig.knee_flex[0], 0.24 * H * lf[0], 0.23 * H * lf[1])
    rk, ra, _, rad = limb(rh, out_r, fig.hip_abduction[1], fig.knee_flex[1], 0.24 * H * lf[2], 0.23 * H * lf[3])

    # Head: a sphere of radius r; points on it at azimuth a (0 = the face, + = the person's left).
    r = 0.075 * H
    th = math.radians(fig.head_tilt)
    e_h = math.cos(th) * e + math.sin(th) * u
    u_h = np.array([e_h[1], -e_h[0]])
    head = neck + (0.04 * H + r) * u_h

    def on_head(azimuth: float, elevation: float, radius: float) -> tuple[np.ndarray, float]:
        ce = math.cos(elevation)
        pos = head + e_h * radius * ce * math.sin(azimuth + phi) + u_h * radius * math.sin(elevation)
        return pos, ce * math.cos(azimuth + phi)  # depth: > 0 towards the camera

    nose, z_nose = on_head(0.0, -0.2, r)
    leye, z_leye = on_head(0.55, 0.2, r)
    reye, z_reye = on_head(-0.55, 0.2, r)
    lear, z_lear = on_head(1.65, 0.0, 1.05 * r)
    rear, z_rear = on_head(-1.65, 0.0, 1.05 * r)

    joints = np.stack([nose, leye, reye, lear, rear, ls, rs, le, re, lw, rw, lh, rh, lk, rk, la, ra])
    facing_visible = np.ones(17, dtype=bool)
    facing_visible[[0, 1, 2]] = [z_nose > 0.2, z_leye > 0.2, z_reye > 0.2]
    facing_visible[[3, 4]] = [z_lear > -0.15, z_rear > -0.15]

    # ---- paints, back to front
    def shade(c: tuple[float, float, float], k: float) -> tuple[float, float, float]:
        return (c[0] * k, c[1] * k, c[2] * k)

    def axis(d: np.ndarray) -> float:
        return math.atan2(d[1], d[0])

    far = 0 if s_yaw > 0.25 else (1 if s_yaw < -0.25 else -1)  # 0: left side is far, 1: right, -1: neither

    def far_darker(pair: tuple[_Colour, _Colour]) -> tuple[_Colour, _Colour]:
        # The far side of a turned figure wears the darker of the two colours (a depth cue that mirrors).
        if far < 0:
            return pair
        dark, bright = sorted(pair, key=sum)
        return (dark, bright) if far == 0 else (bright, dark)

    shirts, pantss = far_darker(fig.shirt), far_darker(fig.pants)
    sides = []
    for k, (sh, el, wr, wd, hp, kn, an, ad, uarm, farm, thigh, shin) in enumerate(
        (
            (ls, le, lw, lwd, lh, lk, la, lad, L_UARM, L_FARM, L_THIGH, L_SHIN),
            (rs, re, rw, rwd, rh, rk, ra, rad, R_UARM, R_FARM, R_THIGH, R_SHIN),
        )
    ):
        dim = 0.85 if k == far else 1.0
        shirt, pants = shade(shirts[k], dim), shade(pantss[k], dim)
        outward = out_l if k == 0 else out_r
        foot0, foot1 = an + 0.035 * H * ad, an + 0.05 * H * ad + 0.05 * H * outward
        hand = wr + 0.045 * H * wd
        leg = [
            _Paint(thigh, (("capsule", hp, kn, 0.055 * H * b, 0.04 * H * b),), pants, fig.pants_texture, axis(kn - hp)),
            _Paint(shin, (("capsule", kn, an, 0.04 * H * b, 0.03 * H * b),), pants, fig.pants_texture, axis(an - kn)),
            _Paint(shin, (("capsule", foot0, foot1, 0.022 * H * b, 0.022 * H * b),), shade(fig.shoes, dim)),
        ]
        arm = [
            _Paint(uarm, (("capsule", sh, el, 0.038 * H * b, 0.03 * H * b),), shirt, fig.shirt_texture, axis(el - sh)),
            _Paint(farm, (("capsule", el, wr, 0.03 * H * b, 0.024 * H * b),), shirt, fig.shirt_texture, axis(wr - el)),
            _Paint(farm, (("circle", hand, 0.028 * H * b),), shade(fig.skin, dim)),
        ]
        sides.append((leg, arm))

    paints: list[_Paint] = []
    for k in range(2):
        if k == far:
            paints += sides[k][0] + sides[k][1]
    ws = max(S * abs(c_yaw), 0.6 * S) + 0.03 * H * b
    wh = max(Hw * abs(c_yaw), 0.65 * Hw) + 0.045 * H * b
    bottom = P - 0.04 * H * u
    torso_poly = np.stack([neck + e * ws, neck - e * ws, bottom - e * wh, bottom + e * wh])
    paints.append(_Paint(TORSO, (("poly", torso_poly), ("capsule", neck, head, 0.03 * H, 0.03 * H)),
                         fig.skin))  # fmt: skip
    # The shirt over the torso polygon; the neck stays skin. Stripes across the body.
    paints.append(_Paint(TORSO, (("poly", torso_poly),), _mix(fig.shirt[0], fig.shirt[1]), fig.shirt_texture,
                         axis(e)))  # fmt: skip
    if fig.facing_camera:  # a V collar marks the front of the body
        collar = np.stack([neck + e * 0.45 * ws, neck - e * 0.45 * ws, neck - 0.06 * H * u])
        paints.append(_Paint(-1, (("poly", collar),), fig.skin))
    for ear, z, part in ((lear, z_lear, L_EAR), (rear, z_rear, R_EAR)):
        if z <= -0.15:
            paints.append(_Paint(part, (("circle", ear, 0.25 * r),), shade(fig.skin, 0.9)))
    paints.append(_Paint(HEAD, (("circle", head, r),), fig.hair))
    if fig.facing_camera:
        face_c = head + e_h * 0.3 * r * s_yaw - u_h * 0.15 * r
        face_ax = (0.8 * r * (1 - 0.35 * abs(s_yaw)), 0.8 * r)
        paints.append(_Paint(-1, (("ellipse", face_c, face_ax, math.degrees(axis(e_h))),), fig.skin))
        eye_r = max(0.12 * r, 0.8)
        for pos, z in ((leye, z_leye), (reye, z_reye)):
            if z > 0.2:
                paints.append(_Paint(-1, (("circle", pos, eye_r),), (25, 20, 20)))
        if z_nose > 0.2:
            paints.append(_Paint(-1, (("circle", nose, max(0.1 * r, 0.7)),), shade(fig.skin, 0.7)))
        mouth, z_mouth = on_head(0.0, -0.55, r)
        if z_mouth > 0.2:
            paints.append(_Paint(-1, (("capsule", mouth - 0.2 * r * e_h, mouth + 0.2 * r * e_h, 0.06 * r,
                                       0.06 * r),), (60, 50, 160)))  # fmt: skip
    for ear, z, part in ((lear, z_lear, L_EAR), (rear, z_rear, R_EAR)):
        if z > -0.15:
            paints.append(_Paint(part, (("circle", ear, 0.25 * r),), shade(fig.skin, 0.9)))
    for k in range(2):
        if k != far:
            paints += sides[k][0]
    for k in range(2):
        if k != far:
            paints += sides[k][1]

    # Global placement: stretch x, roll about the pelvis, move the pelvis into the image.
    ca, sa = math.cos(math.radians(fig.roll)), math.sin(math.radians(fig.roll))
    m = np.array([[ca, -sa], [sa, ca]]) @ np.diag([fig.stretch_x, 1.0])
    t = np.asarray(fig.pelvis, dtype=np.float64)

    def place(p: np.ndarray) -> np.ndarray:
        return p @ m.T + t

    roll = math.radians(fig.roll)
    placed = []
    for pt in paints:
        shapes: list[tuple] = []
        for s in pt.shapes:
            if s[0] == "capsule":
                shapes.append(("capsule", place(s[1]), place(s[2]), s[3], s[4]))
            elif s[0] == "circle":
                shapes.append(("circle", place(s[1]), s[2]))
            elif s[0] == "poly":
                shapes.append(("poly", place(s[1])))
            else:  # ellipse: small, the stretch is ignored
                shapes.append(("ellipse", place(s[1]), s[2], s[3] + fig.roll))
        placed.append(_Paint(pt.part, tuple(shapes), pt.colour, pt.texture, pt.axis_angle + roll))
    return place(joints), facing_visible, placed


def _mix(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, float, float]:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, (a[2] + b[2]) / 2)


# --------------------------------------------------------------------------------------------- rendering


def _fix(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0] * _ONE)), int(round(p[1] * _ONE))


def _draw(mask: np.ndarray, shape: tuple) -> None:
    kind = shape[0]
    if kind == "capsule":
        _, p0, p1, r0, r1 = shape
        d = p1 - p0
        n = math.hypot(d[0], d[1])
        if n > 1e-6:
            nrm = np.array([-d[1], d[0]]) / n
            quad = np.stack([p0 + nrm * r0, p1 + nrm * r1, p1 - nrm * r1, p0 - nrm * r0])
            cv2.fillConvexPoly(mask, np.round(quad * _ONE).astype(np.int32), 255, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, _fix(p0), max(int(round(r0 * _ONE)), 1), 255, -1, cv2.LINE_8, _SHIFT)
        cv2.circle(mask, _fix(p1), max(int(round(r1 * _ONE)), 1), 255, -1, cv2.LINE_8, _SHIFT)
    elif kind == "circle":
        cv2.circle(mask, _fix(shape[1]), max(int(round(shape[2] * _ONE)), 1), 255, -1, cv2.LINE_8, _SHIFT)
    elif kind == "poly":
        cv2.fillConvexPoly(mask, np.round(shape[1] * _ONE).astype(np.int32), 255, cv2.LINE_8, _SHIFT)
    elif kind == "ellipse":
        axes = (max(int(round(shape[2][0] * _ONE)), 1), max(int(round(shape[2][1] * _ONE)), 1))
        cv2.ellipse(mask, _fix(shape[1]), axes, shape[3], 0, 360, 255, -1, cv2.LINE_8, _SHIFT)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")


def _fill(ys: np.ndarray, xs: np.ndarray, paint: _Paint, rng: np.random.Generator) -> np.ndarray:
    """Colours (n, 3) uint8 of the pixels (ys, xs) of one part."""
    col = np.asarray(paint.colour, dtype=np.float32)[None, :]
    tex = paint.texture
    if tex.kind == "stripes":
        a = paint.axis_angle + tex.angle
        phase = (xs * math.cos(a) + ys * math.sin(a)) * (2 * math.pi / tex.period)
        col = col + (tex.amplitude * np.sign(np.sin(phase))).astype(np.float32)[:, None]
    elif tex.kind == "noise":
        col = col + rng.normal(0.0, tex.amplitude, (ys.size, 1)).astype(np.float32)
    elif tex.kind != "solid":
        raise ValueError(f"unknown texture kind {tex.kind!r}")
    return np.broadcast_to(np.clip(col, 0, 255), (ys.size, 3)).astype(np.uint8)


def render_scene(background: np.ndarray, figures: list[Figure], rng: np.random.Generator | None = None) -> Scene:
    """Draw `figures` back to front (later ones in front) over `background` (H, W, 3) uint8 BGR and label them.

    The image is returned before blur/noise/JPEG, so labels and pixels agree exactly.
    """
    if len(figures) > MAX_PEOPLE:
        raise ValueError(f"at most {MAX_PEOPLE} figures per image, got {len(figures)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    image = np.ascontiguousarray(background, dtype=np.uint8).copy()
    h, w = image.shape[:2]
    labels = np.zeros((h, w), dtype=np.uint8)
    scratch = np.zeros((h, w), dtype=np.uint8)
    all_joints, facing, masks = [], [], []
    for person, fig in enumerate(figures):
        joints, fvis, paints = figure_joints(fig)
        own = np.zeros((h, w), dtype=bool)
        for paint in paints:
            for shape in paint.shapes:
                _draw(scratch, shape)
            ys, xs = np.nonzero(scratch)
            if ys.size == 0:
                continue
            scratch[ys, xs] = 0
            image[ys, xs] = _fill(ys, xs, paint, rng)
            if paint.part >= 0:
                labels[ys, xs] = 1 + person * PARTS_PER_PERSON + paint.part
                own[ys, xs] = True
        all_joints.append(joints)
        facing.append(fvis)
        masks.append(own)
    vis = [_visibility(j, f, labels, p) for p, (j, f) in enumerate(zip(all_joints, facing))]
    return Scene(image, labels, list(figures), all_joints, vis, masks)


def _visibility(joints: np.ndarray, facing_visible: np.ndarray, labels: np.ndarray, person: int) -> np.ndarray:
    """(17,) COCO flags: 0 outside the image, 2 if the pixel under the joint shows one of its own parts, else 1."""
    h, w = labels.shape
    x, y = joints[:, 0], joints[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    v = np.where(inside, 1, 0)
    for k in np.flatnonzero(inside & facing_visible):
        lab = int(labels[int(round(y[k])), int(round(x[k]))]) - 1
        if lab >= 0 and lab // PARTS_PER_PERSON == person and lab % PARTS_PER_PERSON in JOINT_PARTS[k]:
            v[k] = 2
    return v


# ------------------------------------------------------------------------------------------------ sampling


def _rand_colour(rng: np.random.Generator, v_lo: float = 0.15, v_hi: float = 0.95) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.2, 1.0), rng.uniform(v_lo, v_hi))
    return (255 * b, 255 * g, 255 * r)


def _side_pair(rng: np.random.Generator) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Left/right clothing colours: one hue, brightness apart by 60-100 (of 255), random which is brighter."""
    hue, sat, val = rng.uniform(), rng.uniform(0.25, 0.9), rng.uniform(0.4, 0.6)
    delta = rng.uniform(0.12, 0.2) * (1 if rng.uniform() < 0.5 else -1)
    out = []
    for v in (val + delta, val - delta):
        r, g, b = colorsys.hsv_to_rgb(hue, sat, v)
        out.append((255 * b, 255 * g, 255 * r))
    return out[0], out[1]


def _texture(rng: np.random.Generator, height: float, p_solid: float, p_stripes: float) -> Texture:
    x = rng.uniform()
    if x < p_solid:
        return Texture()
    if x < p_solid + p_stripes:
        angle = (0.0 if rng.uniform() < 0.5 else math.pi / 2) + rng.uniform(-0.3, 0.3)
        return Texture("stripes", max(3.0, rng.uniform(0.03, 0.07) * height), angle, rng.uniform(12, 30))
    return Texture("noise", amplitude=rng.uniform(8, 22))


def _mixture(rng: np.random.Generator, ranges: tuple[tuple[float, float, float], ...]) -> float:
    """Sample from a mixture of uniform ranges given as (weight, lo, hi)."""
    x, acc = rng.uniform(), 0.0
    for wgt, lo, hi in ranges:
        acc += wgt
        if x < acc:
            return float(rng.uniform(lo, hi))
    return float(rng.uniform(ranges[-1][1], ranges[-1][2]))


def sample_figure(rng: np.random.Generator, height: float, pelvis: tuple[float, float]) -> Figure:
    """A random person within human joint limits, `height` px tall, pelvis at `pelvis` (x, y)."""
    yaw = rng.uniform(-50, 50) + (0.0 if rng.uniform() < 0.6 else 180.0)
    roll = float(np.clip(rng.normal(0, 8), -25, 25)) if rng.uniform() < 0.9 else rng.uniform(-60, 60)

    def arm() -> tuple[float, float]:
        abd = _mixture(rng, ((0.55, -25, 50), (0.3, 40, 120), (0.15, 110, 175)))
        flex = _mixture(rng, ((0.5, 0, 40), (0.5, 40, 150)))
        return abd, flex * (-1 if rng.uniform() < 0.65 else 1)

    def leg() -> tuple[float, float]:
        abd = _mixture(rng, ((0.75, -8, 25), (0.25, 20, 60)))
        flex = _mixture(rng, ((0.7, 0, 20), (0.3, 20, 100)))
        # A bent knee mostly brings the shin back towards the vertical; the shin never points far up.
        towards = -1.0 if abd > 0 else 1.0
        flex *= towards if rng.uniform() < 0.7 else -towards
        return abd, float(np.clip(abd + flex, -70, 110) - abd)

    def fs(n: int, p_short: float, lo: float) -> tuple[float, ...]:
        return tuple(float(rng.uniform(lo, 0.85) if rng.uniform() < p_short else rng.uniform(0.85, 1.0))
                     for _ in range(n))  # fmt: skip

    la, ra, ll, rl = arm(), arm(), leg(), leg()
    afs, lfs = fs(4, 0.3, 0.5), fs(4, 0.2, 0.45)
    skin = tuple(float(np.clip(c + rng.uniform(-12, 12), 0, 255)) for c in _SKIN[int(rng.integers(len(_SKIN)))])
    hair = skin if rng.uniform() < 0.1 else tuple(float(c) for c in _HAIR[int(rng.integers(len(_HAIR)))])
    return Figure(
        height=float(height),
        pelvis=(float(pelvis[0]), float(pelvis[1])),
        yaw=float(yaw),
        roll=float(roll),
        lean=float(np.clip(rng.normal(0, 7), -20, 20)),
        head_tilt=float(rng.uniform(-20, 20)),
        arm_abduction=(la[0], ra[0]),
        elbow_flex=(la[1], ra[1]),
        arm_foreshortening=(afs[0], afs[1], afs[2], afs[3]),
        hip_abduction=(ll[0], rl[0]),
        knee_flex=(ll[1], rl[1]),
        leg_foreshortening=(lfs[0], lfs[1], lfs[2], lfs[3]),
        stretch_x=float(rng.uniform(0.9, 1.1)),
        build=float(rng.uniform(0.8, 1.25)),
        skin=(skin[0], skin[1], skin[2]),
        hair=(hair[0], hair[1], hair[2]),
        shirt=_side_pair(rng),
        pants=_side_pair(rng),
        shoes=_rand_colour(rng, 0.05, 0.4),
        shirt_texture=_texture(rng, height, 0.4, 0.35),
        pants_texture=_texture(rng, height, 0.5, 0.2),
    )


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def random_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a colour gradient, low-frequency noise and random shapes (some limb-like)."""
    if (width, height) not in _GRIDS:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        _GRIDS[(width, height)] = (xx / max(width - 1, 1), yy / max(height - 1, 1))
    xx, yy = _GRIDS[(width, height)]
    a = rng.uniform(0, 2 * math.pi)
    t = xx * math.cos(a) + yy * math.sin(a)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    c0, c1 = np.array(_rand_colour(rng), np.float32), np.array(_rand_colour(rng), np.float32)
    img = c0 + (c1 - c0) * t[..., None]
    gw, gh = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    blobs = rng.uniform(-1, 1, (gh, gw, 3)).astype(np.float32)
    img += cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC) * rng.uniform(10, 45)
    img = np.clip(img, 0, 255).astype(np.uint8)
    size = float(min(width, height))
    for _ in range(int(rng.integers(3, 13))):
        col = _rand_colour(rng)
        kind = int(rng.integers(5))
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        s = int(rng.uniform(0.03, 0.3) * size) + 1
        if kind == 0:
            cv2.rectangle(img, c, (c[0] + s, c[1] + int(rng.uniform(0.3, 2) * s)), col, -1)
        elif kind == 1:
            cv2.circle(img, c, s // 2 + 1, col, -1)
        elif kind == 2:
            cv2.ellipse(img, c, (s, s // 3 + 1), float(rng.uniform(0, 180)), 0, 360, col, -1)
        elif kind == 3:
            pts = (rng.uniform(-1, 1, (int(rng.integers(3, 7)), 2)) * s + c).astype(np.int32)
            cv2.fillPoly(img, [pts], col)
        else:  # limb-like distractor: a thick stroke with round ends
            d = _unit(float(rng.uniform(0, 360))) * s
            cv2.line(img, c, (int(c[0] + d[0]), int(c[1] + d[1])), col, max(2, s // 6), cv2.LINE_AA)
    return img


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soften edges and add sensor noise: (H, W, 3) uint8 -> (H, W, 3) uint8."""
    out = cv2.GaussianBlur(image, (3, 3), rng.uniform(0.3, 0.8)).astype(np.int16)
    out += rng.integers(-6, 7, out.shape, dtype=np.int16)
    return np.clip(out, 0, 255).astype(np.uint8)


def sample_scene(rng: np.random.Generator, width: int, height: int, max_people: int = 4) -> Scene:
    """1..max_people random figures on a random background, some partly out of frame."""
    if not 1 <= max_people <= MAX_PEOPLE:
        raise ValueError(f"max_people must be in 1..{MAX_PEOPLE}, got {max_people}")
    bg = random_background(rng, width, height)
    weights = np.array([0.4, 0.3, 0.2, 0.1, 0.05, 0.05, 0.05][:max_people] + [0.02] * max(0, max_people - 7))
    n = 1 + int(rng.choice(max_people, p=weights / weights.sum()))
    figures: list[Figure] = []
    for _ in range(n):
        for _attempt in range(20):
            person_h = rng.uniform(0.35, 0.95) * height
            if rng.uniform() < 0.25:  # partly out of frame
                pelvis = (rng.uniform(-0.05, 1.05) * width, rng.uniform(0.3, 1.1) * height)
            else:
                pelvis = (rng.uniform(0.12, 0.88) * width, rng.uniform(0.45 * person_h, height - 0.4 * person_h))
            if any(math.dist(pelvis, f.pelvis) < 0.2 * max(person_h, f.height) for f in figures):
                continue  # two people on the same spot is not a useful sample
            fig = sample_figure(rng, person_h, pelvis)
            j = figure_joints(fig)[0]
            inside = (j[:, 0] >= 0) & (j[:, 0] <= width - 1) & (j[:, 1] >= 0) & (j[:, 1] <= height - 1)
            if inside.sum() >= 5:
                figures.append(fig)
                break
    if not figures:  # every placement was rejected (very unlikely): one person in the middle
        figures.append(sample_figure(rng, 0.8 * height, (0.5 * width, 0.55 * height)))
    # Bigger (nearer) people are drawn later, with some shuffling so small people sometimes cover big ones.
    order = np.argsort([f.height * rng.uniform(0.8, 1.25) for f in figures], kind="stable")
    scene = render_scene(bg, [figures[i] for i in order], rng)
    scene.image = _finish(scene.image, rng)
    return scene


# ----------------------------------------------------------------------------------------------- writing


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one image: independent streams per (seed, split, index)."""
    key = zlib.crc32(split.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(key, int(index))))


def coco_category() -> dict:
    """The COCO `person` category: 17 joint names and the 1-based skeleton."""
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO.joint_names),
        "skeleton": [[a + 1, b + 1] for a, b in COCO.skeleton],
    }


AREA_MODES = ("bbox", "mask")


def scene_annotations(scene: Scene, image_id: int, first_ann_id: int, area: str = "bbox") -> list[dict]:
    """COCO person annotations of a scene (figures with at least one labelled joint).

    `bbox` is the tight box of the figure's own pixels inside the image (also where others cover it).
    `area` (the OKS scale) is `"bbox"`: its w*h, as COCO-format keypoint sets without masks do, or
    `"mask"`: the figure's pixel count, which is much stricter for stick-thin limbs (about 0.35 w*h).
    """
    if area not in AREA_MODES:
        raise ValueError(f"area must be one of {AREA_MODES}, got {area!r}")
    anns: list[dict] = []
    for joints, vis, mask in zip(scene.joints, scene.visibility, scene.masks):
        ys, xs = np.nonzero(mask)
        if ys.size == 0 or not (vis > 0).any():
            continue
        kpts = np.zeros((17, 3))
        kpts[:, :2] = np.where((vis > 0)[:, None], joints, 0.0)
        kpts[:, 2] = vis
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        anns.append(
            {
                "id": first_ann_id + len(anns),
                "image_id": image_id,
                "category_id": 1,
                "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
                "area": float(ys.size) if area == "mask" else float((x1 - x0 + 1) * (y1 - y0 + 1)),
                "iscrowd": 0,
                "num_keypoints": int((vis > 0).sum()),
                "keypoints": [round(float(v), 2) if i % 3 != 2 else int(v) for i, v in enumerate(kpts.ravel())],
                "segmentation": [],
            }
        )
    return anns


def _write_image(
    img_dir: Path, seed: int, split: str, size: tuple[int, int], max_people: int, quality: int, area: str, i: int
) -> tuple[dict, list[dict]]:
    """Render, encode and write image `i` of a split; its record and annotations (ids renumbered by the caller)."""
    width, height = size
    image_id = i + 1
    scene = sample_scene(image_rng(seed, split, i), width, height, max_people)
    name = f"synth_{image_id:06d}.jpg"
    ok, buf = cv2.imencode(".jpg", scene.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {img_dir / name}")
    _write_file(img_dir / name, buf.tobytes(), "the images written before it are kept (the annotations come last)")
    record = {"id": image_id, "file_name": name, "width": width, "height": height}
    return record, scene_annotations(scene, image_id, 1, area)


def write_synthetic_dataset(
    out_dir: str | Path,
    images: int,
    seed: int,
    *,
    split: str = "train",
    image_size: tuple[int, int] = (256, 256),
    max_people: int = 4,
    jpeg_quality: int = JPEG_QUALITY,
    area: str = "bbox",
    workers: int = 1,
) -> Path:
    """Write `images` synthetic images and their COCO keypoint annotations; returns the annotation path.

    Files: `out_dir/annotations/person_keypoints_<split>.json` and `out_dir/images/<split>/synth_%06d.jpg`
    (image ids 1..images, annotation ids 1..). `image_size` is (W, H); `area` as in `scene_annotations`.
    `workers` > 1 renders images in that many processes; the files are the same byte for byte.
    """
    if images < 1:
        raise ValueError(f"images must be >= 1, got {images}")
    if area not in AREA_MODES:
        raise ValueError(f"area must be one of {AREA_MODES}, got {area!r}")
    width, height = (int(v) for v in image_size)
    if width < 32 or height < 32:
        raise ValueError(f"image_size must be at least 32x32 (W, H), got {image_size}")
    if not split or any(c in split for c in "/\\") or split in (".", ".."):
        raise ValueError(f"split must be a plain folder name, got {split!r}")
    out = Path(out_dir)
    img_dir = out / "images" / split
    ann_dir = out / "annotations"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    anns: list[dict] = []
    job = functools.partial(_write_image, img_dir, seed, split, (width, height), max_people, int(jpeg_quality), area)
    workers = max(1, min(int(workers), images))
    if workers == 1:
        results: Iterable[tuple[dict, list[dict]]] = map(job, range(images))
        pool = None
    else:  # every image is a pure function of its index, so the files do not depend on the worker count
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(job, range(images), chunksize=max(1, min(32, images // (4 * workers))))
    try:
        for record, image_anns in results:  # in index order, whatever the pool's order of work
            for ann in image_anns:
                ann["id"] = len(anns) + 1
                anns.append(ann)
            records.append(record)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    doc = {
        "info": {
            "description": f"hrpose synthetic people, split {split!r}, seed {seed}",
            "version": "1.0",
        },
        "licenses": [],
        "images": records,
        "annotations": anns,
        "categories": [coco_category()],
    }
    ann_path = ann_dir / f"person_keypoints_{split}.json"
    _write_file(ann_path, json.dumps(doc, separators=(",", ":")).encode("utf-8"), "the images are written")
    return ann_path




def _write_file(path: Path, data: bytes, kept: str) -> None:
    """``data`` to ``path`` through a temporary file (a previous ``path`` stays whole until replaced); a full
    disk is one UserError naming ``path`` (:mod:`hrpose.diskfull`), with no partial file left."""
    with translate_disk_full(path, kept=kept, fix="free space on that disk or choose another --out folder, "
                             "then run the same command again"):  # fmt: skip
        replace_atomically(path, data)
