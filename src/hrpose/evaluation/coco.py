"""COCO keypoint evaluation: rescoring, per-image OKS NMS, the results file, and pycocotools' COCOeval.

Follows the official pipeline (``COCODataset.evaluate`` in the HRNet code) step by step:

1. rescore every person: mean of its joint scores above ``in_vis_thre`` (0 when none), times the box score;
2. group persons by image and run OKS NMS (or soft OKS NMS) at ``oks_thre`` inside each image;
3. write ``<output_dir>/results/keypoints_<image_set>_results_<rank>.json`` (image_id, category_id,
   flat keypoints, score);
4. run ``COCOeval(gt, dt, 'keypoints')`` with the dataset's OKS sigmas and return the ten summary numbers.

Differences from the official code, all deliberate: image ids come from the caller (the annotation's
``id``; use :func:`image_ids_from_paths` to map file names) instead of being parsed out of the file name,
rescoring and grouping are vectorised over all persons, the results file is written atomically and is
always valid JSON (compact, by orjson: the values ``json`` would write, about 15x faster), and custom joint
counts get their own sigmas in both NMS and COCOeval.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from hrpose.errors import MissingFileError, UserError
from hrpose.evaluation.oks_nms import nms_from_arrays, oks_matrices, resolve_sigmas, soft_nms_from_arrays
from hrpose.evaluation.rescoring import rescore  # the one rescoring rule (also PoseEstimator's)
from hrpose.user_files import replace_atomically

__all__ = [
    "EVALUATORS", "STATS_NAMES", "load_coco", "image_ids_from_paths", "rescore", "group_by_image", "select_poses",
    "build_results", "dumps_results", "write_results_json", "write_results", "coco_keypoint_stats", "evaluate_coco",
    "markdown_table",
]  # fmt: skip

logger = logging.getLogger(__name__)

EVALUATORS = ("pycocotools", "faster-coco-eval")
STATS_NAMES = ("AP", "Ap .5", "AP .75", "AP (M)", "AP (L)", "AR", "AR .5", "AR .75", "AR (M)", "AR (L)")


def load_coco(annotation: str | os.PathLike[str] | COCO) -> COCO:
    """A pycocotools COCO object from an annotation file (its progress prints go to the log)."""
    if isinstance(annotation, COCO):
        return annotation
    path = Path(annotation)
    if not path.is_file():
        raise MissingFileError(f"COCO annotation file not found: {path}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco = COCO(str(path))
    logger.debug(buf.getvalue())
    return coco


def image_ids_from_paths(coco: COCO, paths: Sequence[str | os.PathLike[str]]) -> np.ndarray:
    """Map image paths (or bare file names) to the annotation's image ids by ``file_name``: -> (N,) int64."""
    by_name: dict[str, int] = {}
    for img in coco.imgs.values():
        by_name[os.path.basename(img["file_name"])] = int(img["id"])
    ids = np.empty(len(paths), dtype=np.int64)
    cache: dict[str, int] = {}
    for i, p in enumerate(paths):
        name = os.path.basename(os.fspath(p))
        if name not in cache:
            if name not in by_name:
                raise KeyError(f"image {i} ({p!s}): file name {name!r} is not in the COCO annotation's images")
            cache[name] = by_name[name]
        ids[i] = cache[name]
    return ids


def group_by_image(image_ids: np.ndarray) -> list[np.ndarray]:
    """Indices of each image's persons: images in order of first appearance, persons in input order."""
    ids = np.asarray(image_ids)
    if ids.size == 0:
        return []
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = rank[inverse.reshape(-1)]
    perm = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[perm])) + 1
    return np.split(perm, bounds)


def _check_inputs(preds: np.ndarray, boxes: np.ndarray, image_ids: np.ndarray) -> None:
    if preds.ndim != 3 or preds.shape[2] != 3:
        raise ValueError(f"preds must be (N, K, 3) image x, y, score; got shape {preds.shape}")
    if boxes.ndim != 2 or boxes.shape[1] < 6:
        raise ValueError(f"boxes must be (N, 6) center x, y, scale w, h, area, score; got shape {boxes.shape}")
    if not (len(preds) == len(boxes) == len(image_ids)):
        raise ValueError(
            f"preds ({len(preds)}), boxes ({len(boxes)}) and image_ids ({len(image_ids)}) must have one row per person"
        )


def select_poses(
    preds: np.ndarray,
    boxes: np.ndarray,
    image_ids: np.ndarray,
    *,
    in_vis_thre: float = 0.2,
    oks_thre: float = 0.9,
    soft_nms: bool = False,
    sigmas: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Rescoring and per-image (soft) OKS NMS.

    preds: (N, K, 3) image coords + joint score; boxes: (N, 6) center (2), scale (2), area, score;
    image_ids: (N,) -> (kept person indices (M,) grouped by image in first-appearance order and best
    first inside an image, rescored person scores (N,) float64).
    """
    preds = np.asarray(preds)
    boxes = np.asarray(boxes)
    image_ids = np.asarray(image_ids)
    _check_inputs(preds, boxes, image_ids)
    sig = resolve_sigmas(sigmas, preds.shape[1])
    scores = rescore(preds, boxes[:, 5], in_vis_thre)
    areas = boxes[:, 4].astype(np.float64)
    nms = soft_nms_from_arrays if soft_nms else nms_from_arrays
    kept: list[np.ndarray] = []
    groups = group_by_image(image_ids)
    # every image's OKS matrix, images with the same number of persons computed together
    matrices = oks_matrices(preds, areas, groups, sig)
    for idx, oks_full in zip(groups, matrices):
        if len(idx) == 1:
            kept.append(idx)
            continue
        keep = nms(preds[idx], scores[idx], areas[idx], oks_thre, sig, oks_full=oks_full)
        # the official keeps the whole image when NMS returns nothing (only possible for an empty group)
        kept.append(idx[keep] if keep else idx)
    sel = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return sel, scores


def _result_arrays(
    preds: np.ndarray, image_ids: np.ndarray, scores: np.ndarray, sel: np.ndarray, category_id: int
) -> tuple[np.ndarray, list[float], list[int], int]:
    """(keypoints (M, 3K) float64 C-contiguous, scores, image ids as Python numbers, category) of the selected
    persons; a non-finite keypoint or score is a ValueError naming the person."""
    sel = np.asarray(sel, dtype=np.int64)
    kp = np.ascontiguousarray(np.asarray(preds)[sel].reshape(len(sel), -1), dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)[sel]
    bad = ~(np.isfinite(kp).all(axis=1) & np.isfinite(sc))
    if bad.any():
        j = int(sel[np.flatnonzero(bad)[0]])
        raise ValueError(f"person {j} has a non-finite keypoint or score; COCO results must be finite numbers")
    return kp, sc.tolist(), np.asarray(image_ids)[sel].astype(np.int64).tolist(), int(category_id)


def build_results(
    preds: np.ndarray,
    image_ids: np.ndarray,
    scores: np.ndarray,
    sel: np.ndarray,
    category_id: int = 1,
) -> list[dict[str, Any]]:
    """The COCO results list for the selected persons: preds (N, K, 3), image_ids (N,), scores (N,), sel (M,)."""
    kp, sc, ids, cat = _result_arrays(preds, image_ids, scores, sel, category_id)
    return [{"image_id": i, "category_id": cat, "keypoints": k, "score": s} for i, k, s in zip(ids, kp.tolist(), sc)]


def dumps_results(results: Any) -> bytes:
    """UTF-8 JSON text of a results list: the values ``json.dumps(results, allow_nan=False)`` writes.

    orjson does the work (compact; floats in shortest round-trip form, which ``json.load`` and so
    pycocotools' ``loadRes`` read back to the same doubles). orjson writes NaN and infinities as ``null``;
    when its output has a ``null`` (or it refuses an object) the standard ``json`` module decides instead,
    so a non-finite number raises ``ValueError`` ("Out of range float values are not JSON compliant") and
    is never written, as before.
    """
    try:
        data = orjson.dumps(results)
    except TypeError:  # orjson.JSONEncodeError: non-str keys, 65-bit ints, NumPy scalars...
        data = b""
    if not data or b"null" in data:
        data = json.dumps(results, allow_nan=False).encode("utf-8")
    return data


def write_results_json(results: list[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write the results list atomically (temp file in the same folder, then rename); see :func:`dumps_results`."""
    return _write_atomic(dumps_results(results), path)  # serialised first: a NaN leaves nothing behind


def write_results(
    preds: np.ndarray,
    image_ids: np.ndarray,
    scores: np.ndarray,
    sel: np.ndarray,
    path: str | os.PathLike[str],
    category_id: int = 1,
) -> Path:
    """``write_results_json(build_results(preds, image_ids, scores, sel, category_id), path)``, byte for byte,
    without building the Python lists of keypoints (orjson reads the float64 rows directly)."""
    kp, sc, ids, cat = _result_arrays(preds, image_ids, scores, sel, category_id)  # finite, checked
    records = [{"image_id": i, "category_id": cat, "keypoints": k, "score": s} for i, k, s in zip(ids, kp, sc)]
    return _write_atomic(orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY), path)


def _write_atomic(data: bytes, path: str | os.PathLike[str]) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return replace_atomically(path, data)


def coco_keypoint_stats(
    coco_gt: COCO,
    results: list[dict[str, Any]] | str | os.PathLike[str],
    sigmas: Sequence[float] | np.ndarray | None = None,
    *,
    evaluator: str = "pycocotools",
) -> OrderedDict[str, float]:
    """COCO keypoint evaluation of a results list (or results file): the ten COCO summary numbers.

    ``evaluator``: ``"pycocotools"`` (the default and the reference, as the official code) or
    ``"faster-coco-eval"`` (the ``faster-coco-eval`` package's C++ COCOeval, ``pip install 'hrpose[fast-eval]'``:
    the same ten numbers on the golden cases, to 1e-16, several times faster on COCO-sized sets).
    """
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    if isinstance(results, list):
        dets: list[dict[str, Any]] = results
    else:
        dets = json.loads(Path(results).read_text())
        if not isinstance(dets, list):
            raise ValueError(f"{results}: a COCO results file must hold a JSON list of detections")
    results = dets
    if not results:
        raise ValueError("no person predictions to evaluate (the COCO results list is empty)")
    known = set(coco_gt.getImgIds())
    missing = sorted({int(r["image_id"]) for r in results} - known)
    if missing:
        raise ValueError(f"results name image ids not in the COCO annotation: {missing[:10]}")
    num_joints = len(results[0]["keypoints"]) // 3
    if evaluator == "faster-coco-eval":
        return _faster_coco_eval_stats(coco_gt, results, resolve_sigmas(sigmas, num_joints))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_dt = coco_gt.loadRes([dict(r) for r in results])  # loadRes adds fields: give it copies
        coco_eval = COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.kpt_oks_sigmas = resolve_sigmas(sigmas, num_joints)
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info(buf.getvalue())
    return OrderedDict((name, float(coco_eval.stats[i])) for i, name in enumerate(STATS_NAMES))


def _faster_coco_eval_stats(
    coco_gt: COCO, results: list[dict[str, Any]], sigmas: np.ndarray
) -> OrderedDict[str, float]:
    try:
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster
    except ImportError as e:
        raise UserError(
            "the COCO evaluator 'faster-coco-eval' needs the faster-coco-eval package: "
            "pip install 'hrpose[fast-eval]' (or use the default, pycocotools)"
        ) from e
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        gt = FasterCOCO()
        gt.dataset = coco_gt.dataset  # the same annotations, indexed by faster-coco-eval
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval_faster(gt, dt, "keypoints", kpt_oks_sigmas=sigmas.tolist(), print_function=logger.info)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    logger.info(buf.getvalue())
    return OrderedDict((name, float(ev.stats[i])) for i, name in enumerate(STATS_NAMES))


def _person_category(coco_gt: COCO | None) -> int:
    if coco_gt is None or not coco_gt.cats:
        return 1
    cats = list(coco_gt.cats.values())
    if len(cats) == 1:
        return int(cats[0]["id"])
    for c in cats:
        if c.get("name") == "person":
            return int(c["id"])
    return int(cats[0]["id"])


def evaluate_coco(
    preds: np.ndarray,
    boxes: np.ndarray,
    image_ids: np.ndarray,
    output_dir: str | os.PathLike[str],
    coco_gt: COCO | str | os.PathLike[str] | None,
    image_set: str = "val2017",
    *,
    in_vis_thre: float = 0.2,
    oks_thre: float = 0.9,
    soft_nms: bool = False,
    sigmas: Sequence[float] | np.ndarray | None = None,
    category_id: int | None = None,
    rank: int = 0,
    evaluator: str = "pycocotools",
) -> OrderedDict[str, float]:
    """The whole COCO keypoint evaluation (official ``TEST.IN_VIS_THRE``/``OKS_THRE``/``SOFT_NMS``).

    preds: (N, K, 3) image coords + joint score; boxes: (N, 6) center, scale, area, score;
    image_ids: (N,) COCO image ids. Writes ``output_dir/results/keypoints_<image_set>_results_<rank>.json``
    and returns the ten stats by name; without ground truth (``coco_gt`` None or a ``test`` image set, as
    the official) it only writes the file and returns ``{'Null': 0.0}``. ``evaluator``: see
    :func:`coco_keypoint_stats` (pycocotools by default).
    """
    gt = load_coco(coco_gt) if coco_gt is not None else None
    sel, scores = select_poses(
        preds, boxes, image_ids, in_vis_thre=in_vis_thre, oks_thre=oks_thre, soft_nms=soft_nms, sigmas=sigmas
    )
    cat = _person_category(gt) if category_id is None else category_id
    res_file = Path(output_dir) / "results" / f"keypoints_{image_set}_results_{rank}.json"
    write_results(preds, image_ids, scores, sel, res_file, cat)
    logger.info("=> wrote %d COCO keypoint results to %s", len(sel), res_file)
    if gt is None or "test" in image_set:
        return OrderedDict([("Null", 0.0)])
    return coco_keypoint_stats(gt, build_results(preds, image_ids, scores, sel, cat), sigmas, evaluator=evaluator)


def markdown_table(name_value: Mapping[str, float], arch_name: str) -> str:
    """The official results table: a header row of names, a separator, and one row of values to 3 decimals.

    Arch names longer than 15 characters are cut to 8 characters plus ``...`` as the official does.
    """
    names = list(name_value.keys())
    if len(arch_name) > 15:
        arch_name = arch_name[:8] + "..."
    header = "| Arch " + " ".join(f"| {n}" for n in names) + " |"
    sep = "|---" * (len(names) + 1) + "|"
    row = f"| {arch_name} " + " ".join(f"| {float(v):.3f}" for v in name_value.values()) + " |"
    return "\n".join((header, sep, row))
