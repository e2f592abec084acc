"""`DatasetMeta` for custom COCO-format keypoint datasets (any joint count), from the category + config."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hrpose.data.records import AnnotationError, short_repr
from hrpose.keypoints import COCO, DatasetMeta, flip_pairs_from_names

logger = logging.getLogger(__name__)

# Joint-name fragments that mark the upper body when HRPOSE.UPPER_BODY_IDS is not given (half-body aug).
_UPPER_WORDS = ("nose", "eye", "ear", "mouth", "lip", "chin", "face", "head", "neck", "thorax", "chest",
                "shoulder", "elbow", "wrist", "hand", "finger", "thumb")  # fmt: skip


def upper_body_from_names(names: Sequence[str]) -> tuple[int, ...]:
    """Indices of joints whose name mentions a head/arm/torso-top part."""
    return tuple(i for i, n in enumerate(names) if any(w in n.lower() for w in _UPPER_WORDS))


def meta_from_category(
    category: dict[str, Any],
    *,
    source: str,
    flip_pairs: Sequence[Sequence[int]] = (),
    sigmas: Sequence[float] = (),
    upper_body_ids: Sequence[int] = (),
) -> DatasetMeta:
    """Build the keypoint layout of a COCO-format category.

    Joint names: the category's `keypoints`; skeleton: its `skeleton`, 1-based in COCO files -> 0-based.
    flip_pairs: given (HRPOSE.FLIP_PAIRS) or paired from left/right names. sigmas: given (HRPOSE.OKS_SIGMAS),
    else COCO's when there are 17 joints, else uniform 0.1 (with a warning: OKS-based AP is then only
    indicative). upper_body_ids: given (HRPOSE.UPPER_BODY_IDS) or from the names.
    """
    where = f"{source}: category {category.get('name', '?')!r}"
    raw_names = category.get("keypoints") or ()
    if not isinstance(raw_names, (list, tuple)) or not all(isinstance(n, str) for n in raw_names):
        raise AnnotationError(f"{where}: field 'keypoints' must be a list of joint-name strings")
    names = tuple(raw_names)
    if not names:
        raise AnnotationError(f"{where}: has no 'keypoints' (joint names)")
    k = len(names)
    skeleton_raw = category.get("skeleton") or ()
    if not isinstance(skeleton_raw, (list, tuple)):
        raise AnnotationError(f"{where}: field 'skeleton' must be a list of [joint, joint] pairs")
    skeleton = []
    for pair in skeleton_raw:
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(type(j) is int and 1 <= j <= k for j in pair)):  # fmt: skip
            raise AnnotationError(f"{where}: field 'skeleton': edge {short_repr(pair)} is not a pair of 1-based "
                                  f"joint indices in 1..{k}")  # fmt: skip
        skeleton.append((pair[0] - 1, pair[1] - 1))
    pairs = tuple((int(a), int(b)) for a, b in flip_pairs) if flip_pairs else flip_pairs_from_names(names)
    if sigmas:
        sig = tuple(float(s) for s in sigmas)
        if len(sig) != k:
            raise ValueError(f"{source}: HRPOSE.OKS_SIGMAS has {len(sig)} values, expected {k} (one per joint)")
    elif k == COCO.num_joints:
        sig = COCO.sigmas
    else:
        logger.warning("%s: %d joints and no HRPOSE.OKS_SIGMAS: using a uniform OKS sigma of 0.1", source, k)
        sig = (0.1,) * k
    upper = tuple(int(i) for i in upper_body_ids) if upper_body_ids else upper_body_from_names(names)
    if any(not 0 <= i < k for i in upper):
        raise ValueError(f"{source}: HRPOSE.UPPER_BODY_IDS {list(upper)} out of range for {k} joints")
    weights = COCO.joints_weight if names == COCO.joint_names else ()
    name = str(category.get("name") or "custom")
    return DatasetMeta(name, names, pairs, tuple(skeleton), sig, upper, weights)
