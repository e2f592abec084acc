"""The keypoint layout (joint names, flip pairs, skeleton, OKS sigmas) a config describes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hrpose.data.custom import meta_from_category
from hrpose.keypoints import BUILTIN, DatasetMeta, flip_pairs_from_names

logger = logging.getLogger(__name__)


def layout_from_config(cfg: Any) -> DatasetMeta:
    """The keypoint layout of a config: COCO/MPII built in; `custom` from its annotation file's category
    (ROOT/annotations/person_keypoints_<TEST_SET>.json or <TEST_SET>.json), else generic joint names
    `joint_<i>` with HRPOSE.FLIP_PAIRS."""
    name = str(cfg.DATASET.DATASET).lower()
    if name in BUILTIN:
        return BUILTIN[name]
    k = int(cfg.MODEL.NUM_JOINTS)
    hr = cfg.get("HRPOSE", {})
    flip = tuple((int(a), int(b)) for a, b in hr.get("FLIP_PAIRS", []) or [])
    sigmas = tuple(float(s) for s in hr.get("OKS_SIGMAS", []) or [])
    root = Path(str(cfg.DATASET.ROOT))
    for ann in (root / "annotations" / f"person_keypoints_{cfg.DATASET.TEST_SET}.json",
                root / "annotations" / f"{cfg.DATASET.TEST_SET}.json"):  # fmt: skip
        if ann.is_file():
            try:
                cats = json.loads(ann.read_text(encoding="utf-8")).get("categories", [])
                if cats:
                    meta = meta_from_category(cats[0], source=str(ann), flip_pairs=flip, sigmas=sigmas)
                    if meta.num_joints == k:
                        return meta
            except (ValueError, OSError, ImportError) as e:
                logger.warning("could not read the joint names from %s: %s", ann, e)
    names = tuple(f"joint_{i}" for i in range(k))
    return DatasetMeta(name or "custom", names, flip or flip_pairs_from_names(names), (), sigmas or (0.1,) * k)
