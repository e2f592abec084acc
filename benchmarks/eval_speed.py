"""Evaluation speed at COCO val scale: hrpose's vectorised stages against a port of the official loops.

Simulates COCO val2017 person keypoint evaluation: 6,352 ground-truth people spread over ~5,000 images
and ~100k person detections (jittered copies of the people plus low-score false positives), with
realistic keypoints and scores, then times each stage both ways in one run:

* decode   - heatmaps -> image coords (argmax, quarter-pixel shift, crop inverse) on a subset of random
             heatmaps: ``hrpose.codec.HeatmapCodec.decode`` vs the official per-person/per-joint loops;
* rescore  - mean visible joint score x box score;
* nms      - per-image grouping + rescoring + greedy OKS NMS (``TEST.OKS_THRE`` 0.9);
* soft_nms - per-image grouping + rescoring + soft OKS NMS;
* write    - building and writing ``keypoints_val2017_results_0.json`` (ours: ``write_results``, what
             ``evaluate_coco`` calls: orjson from the float64 rows; the baseline: the official list of
             dicts and ``json.dump(..., sort_keys=True, indent=4)``).

Each stage checks that both ways agree before reporting, and prints a markdown table of persons/s and
the speed-up; "total time" sums these stages. ``--ap`` adds, outside the total, the AP step itself on
simulated ground truth: pycocotools' COCOeval (the default, what the official code runs) against the
optional ``faster-coco-eval`` evaluator, same ten stats required. Usage::

    OMP_NUM_THREADS=2 python benchmarks/eval_speed.py          # full scale (about a minute or two)
    OMP_NUM_THREADS=2 python benchmarks/eval_speed.py --ap     # ... and the AP step both ways
    OMP_NUM_THREADS=2 python benchmarks/eval_speed.py --quick  # a small run
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hrpose.evaluation.coco import (
    build_results,
    coco_keypoint_stats,
    group_by_image,
    rescore,
    select_poses,
    write_results,
)
from hrpose.geometry import affine_transform, get_affine_transform
from hrpose.keypoints import COCO_SIGMAS

NUM_JOINTS = 17
IN_VIS_THRE = 0.2
OKS_THRE = 0.9

# =====================================================================================================
# BASELINE: a straightforward port of the official HRNet evaluation loops (lib/core/inference.py
# get_final_preds, lib/nms/nms.py oks_iou/oks_nms/soft_oks_nms, lib/dataset/coco.py evaluate and
# _write_coco_keypoint_results): per-person and per-joint Python loops, kept only as the reference the
# vectorised code is timed and checked against.
# =====================================================================================================


def baseline_get_max_preds(batch_heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, k, _, w = batch_heatmaps.shape
    flat = batch_heatmaps.reshape((n, k, -1))
    idx = np.argmax(flat, 2).reshape((n, k, 1))
    maxvals = np.amax(flat, 2).reshape((n, k, 1))
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = np.floor(preds[:, :, 1] / w)
    preds *= np.tile(np.greater(maxvals, 0.0), (1, 1, 2)).astype(np.float32)
    return preds, maxvals


def baseline_transform_preds(coords: np.ndarray, center: np.ndarray, scale: np.ndarray, size_wh: list[int]):
    target = np.zeros(coords.shape)
    trans = get_affine_transform(center, scale, 0, size_wh, inv=True)
    for p in range(coords.shape[0]):
        target[p, 0:2] = affine_transform(coords[p, 0:2], trans)
    return target


def baseline_decode(heatmaps: np.ndarray, centers: np.ndarray, scales: np.ndarray):
    coords, maxvals = baseline_get_max_preds(heatmaps)
    h, w = heatmaps.shape[2], heatmaps.shape[3]
    for n in range(coords.shape[0]):
        for p in range(coords.shape[1]):
            hm = heatmaps[n][p]
            px = int(math.floor(coords[n][p][0] + 0.5))
            py = int(math.floor(coords[n][p][1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                coords[n][p] += np.sign(diff) * 0.25
    preds = coords.copy()
    for i in range(coords.shape[0]):
        preds[i] = baseline_transform_preds(coords[i], centers[i], scales[i], [w, h])
    return preds, maxvals


def baseline_oks_iou(g, d, a_g, a_d, sigmas=None, in_vis_thre=None):
    if not isinstance(sigmas, np.ndarray):
        sigmas = np.asarray(COCO_SIGMAS)
    variances = (sigmas * 2) ** 2
    xg, yg, vg = g[0::3], g[1::3], g[2::3]
    ious = np.zeros(d.shape[0])
    for n_d in range(d.shape[0]):
        xd, yd, vd = d[n_d, 0::3], d[n_d, 1::3], d[n_d, 2::3]
        dx = xd - xg
        dy = yd - yg
        e = (dx**2 + dy**2) / variances / ((a_g + a_d[n_d]) / 2 + np.spacing(1)) / 2
        if in_vis_thre is not None:
            ind = list(vg > in_vis_thre) and list(vd > in_vis_thre)
            e = e[ind]
        ious[n_d] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
    return ious


def _baseline_unpack(kpts_db):
    scores = np.array([kpts_db[i]["score"] for i in range(len(kpts_db))])
    kpts = np.array([kpts_db[i]["keypoints"].flatten() for i in range(len(kpts_db))])
    areas = np.array([kpts_db[i]["area"] for i in range(len(kpts_db))])
    return scores, kpts, areas


def baseline_oks_nms(kpts_db, thresh, sigmas=None, in_vis_thre=None):
    if len(kpts_db) == 0:
        return []
    scores, kpts, areas = _baseline_unpack(kpts_db)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        oks_ovr = baseline_oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, in_vis_thre)
        inds = np.where(oks_ovr <= thresh)[0]
        order = order[inds + 1]
    return keep


def baseline_soft_oks_nms(kpts_db, thresh, sigmas=None, in_vis_thre=None):
    if len(kpts_db) == 0:
        return []
    scores, kpts, areas = _baseline_unpack(kpts_db)
    order = scores.argsort()[::-1]
    scores = scores[order]
    max_dets = 20
    keep = np.zeros(max_dets, dtype=np.intp)
    keep_cnt = 0
    while order.size > 0 and keep_cnt < max_dets:
        i = order[0]
        oks_ovr = baseline_oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]], sigmas, in_vis_thre)
        order = order[1:]
        scores = scores[1:] * np.exp(-(oks_ovr**2) / thresh)
        tmp = scores.argsort()[::-1]
        order = order[tmp]
        scores = scores[tmp]
        keep[keep_cnt] = i
        keep_cnt += 1
    return keep[:keep_cnt]


def baseline_group(preds: np.ndarray, boxes: np.ndarray, image_ids: np.ndarray) -> dict[int, list[dict]]:
    kpts: dict[int, list[dict]] = defaultdict(list)
    for idx, kpt in enumerate(preds):
        kpts[int(image_ids[idx])].append(
            {
                "keypoints": kpt,
                "center": boxes[idx][0:2],
                "scale": boxes[idx][2:4],
                "area": boxes[idx][4],
                "score": boxes[idx][5],
                "image": int(image_ids[idx]),
            }
        )
    return kpts


def baseline_rescore(kpts: dict[int, list[dict]], num_joints: int, in_vis_thre: float) -> None:
    for img in kpts:
        for n_p in kpts[img]:
            box_score = n_p["score"]
            kpt_score: Any = 0  # int 0 + a float32 joint score stays float32, as in the official
            valid_num = 0
            for n_jt in range(num_joints):
                t_s = n_p["keypoints"][n_jt][2]
                if t_s > in_vis_thre:
                    kpt_score = kpt_score + t_s
                    valid_num = valid_num + 1
            if valid_num != 0:
                kpt_score = kpt_score / valid_num
            n_p["score"] = kpt_score * box_score


def baseline_nms(kpts: dict[int, list[dict]], oks_thre: float, soft: bool) -> list[list[dict]]:
    out = []
    for img in kpts:
        img_kpts = kpts[img]
        keep = (baseline_soft_oks_nms if soft else baseline_oks_nms)(img_kpts, oks_thre)
        out.append(img_kpts if len(keep) == 0 else [img_kpts[k] for k in keep])
    return out


def baseline_write(keypoints: list[list[dict]], num_joints: int, res_file: str) -> list[dict]:
    results: list[dict] = []
    for img_kpts in keypoints:
        if len(img_kpts) == 0:
            continue
        _key_points = np.array([img_kpts[k]["keypoints"] for k in range(len(img_kpts))])
        key_points = np.zeros((_key_points.shape[0], num_joints * 3), dtype=np.float64)
        for ipt in range(num_joints):
            key_points[:, ipt * 3 + 0] = _key_points[:, ipt, 0]
            key_points[:, ipt * 3 + 1] = _key_points[:, ipt, 1]
            key_points[:, ipt * 3 + 2] = _key_points[:, ipt, 2]
        results.extend(
            {
                "image_id": img_kpts[k]["image"],
                "category_id": 1,
                "keypoints": list(key_points[k]),
                "score": img_kpts[k]["score"],
                "center": list(img_kpts[k]["center"]),
                "scale": list(img_kpts[k]["scale"]),
            }
            for k in range(len(img_kpts))
        )
    with open(res_file, "w") as f:
        json.dump(results, f, sort_keys=True, indent=4)
    return results


# =====================================================================================================
# Simulated COCO-scale predictions
# =====================================================================================================

# A standing person in a unit box (x right, y down), COCO joint order.
_TEMPLATE = np.array(
    [
        [0.50, 0.10], [0.54, 0.08], [0.46, 0.08], [0.58, 0.10], [0.42, 0.10], [0.65, 0.25], [0.35, 0.25],
        [0.72, 0.40], [0.28, 0.40], [0.75, 0.52], [0.25, 0.52], [0.60, 0.55], [0.40, 0.55], [0.60, 0.75],
        [0.40, 0.75], [0.60, 0.95], [0.40, 0.95],
    ]
)  # fmt: skip


def simulate(num_images: int, num_people: int, num_dets: int, seed: int = 0) -> dict[str, np.ndarray]:
    """preds (N, 17, 3) float32, boxes (N, 6) float64 (center, scale, area, score), image_ids (N,) int64, and
    the people themselves as ``gt_xy`` (P, 17, 2), ``gt_image_ids`` (P,) (for :func:`ground_truth`)."""
    rng = np.random.default_rng(seed)
    person_img = rng.integers(0, num_images, num_people)
    size = rng.uniform(30, 400, num_people)  # person height in pixels
    tl = rng.uniform(0, 600, (num_people, 2))
    pose = tl[:, None, :] + (_TEMPLATE[None] + rng.normal(0, 0.04, (num_people, NUM_JOINTS, 2))) * size[:, None, None]
    n_true = int(num_dets * 0.6)
    src = rng.integers(0, num_people, n_true)  # several detections per person (jittered boxes)
    # near-duplicates (overlapping boxes of one person) up to loosely placed ones
    spread = rng.uniform(0.003, 0.06, (n_true, 1, 1))
    jitter = rng.normal(0, 1.0, (n_true, NUM_JOINTS, 2)) * spread * size[src, None, None]
    true_xy = pose[src] + jitter
    n_fp = num_dets - n_true  # false positives anywhere in the image
    fp_size = rng.uniform(20, 300, n_fp)
    fp_xy = rng.uniform(0, 600, (n_fp, 1, 2)) + rng.uniform(0, 1, (n_fp, NUM_JOINTS, 2)) * fp_size[:, None, None]
    xy = np.concatenate([true_xy, fp_xy])
    kscore = np.concatenate(
        [rng.beta(5, 2, (n_true, NUM_JOINTS)), rng.beta(1.5, 5, (n_fp, NUM_JOINTS))]
    )  # fmt: skip
    box_score = np.concatenate([rng.uniform(0.5, 1.0, n_true), rng.uniform(0.0, 0.5, n_fp)])
    img = np.concatenate([person_img[src], rng.integers(0, num_images, n_fp)])
    lo, hi = xy.min(axis=1), xy.max(axis=1)
    center = (lo + hi) / 2
    wh = (hi - lo) * 1.25
    scale = wh / 200.0
    area = wh[:, 0] * wh[:, 1]
    perm = rng.permutation(len(xy))  # detection files come in no particular order
    preds = np.concatenate([xy, kscore[..., None]], axis=2).astype(np.float32)[perm]
    boxes = np.concatenate([center, scale, area[:, None], box_score[:, None]], axis=1)[perm]
    return {
        "preds": preds,
        "boxes": boxes,
        "image_ids": (img[perm] + 1).astype(np.int64),
        "gt_xy": pose,
        "gt_image_ids": (person_img + 1).astype(np.int64),
    }


def ground_truth(data: dict[str, np.ndarray], num_images: int) -> Any:
    """A pycocotools COCO of the simulated people (all joints visible), for the AP step."""
    from pycocotools.coco import COCO

    from hrpose.keypoints import COCO as COCO_META

    anns = []
    for i, (xy, img) in enumerate(zip(data["gt_xy"], data["gt_image_ids"])):
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        w, h = float(hi[0] - lo[0]), float(hi[1] - lo[1])
        kp = np.concatenate([xy, np.full((NUM_JOINTS, 1), 2.0)], axis=1).reshape(-1)
        anns.append({"id": i + 1, "image_id": int(img), "category_id": 1, "iscrowd": 0, "area": w * h * 0.6,
                     "bbox": [float(lo[0]), float(lo[1]), w, h], "num_keypoints": NUM_JOINTS,
                     "keypoints": kp.tolist()})  # fmt: skip
    coco = COCO()
    coco.dataset = {
        "images": [
            {"id": i + 1, "width": 1100, "height": 1100, "file_name": f"{i + 1}.jpg"} for i in range(num_images)
        ],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_META.joint_names), "skeleton": []}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def random_heatmaps(n: int, k: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """(n, k, h, w) float32: one Gaussian peak per map (sigma 2) plus small noise, some maps all negative."""
    rng = np.random.default_rng(seed)
    ys, xs = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    hm = rng.normal(0, 0.01, (n, k, h, w)).astype(np.float32)
    mx = rng.uniform(0, w - 1, (n, k, 1, 1)).astype(np.float32)
    my = rng.uniform(0, h - 1, (n, k, 1, 1)).astype(np.float32)
    amp = rng.uniform(0.1, 1.0, (n, k, 1, 1)).astype(np.float32)
    hm += amp * np.exp(-((xs - mx) ** 2 + (ys - my) ** 2) / (2 * 2.0**2))
    hm[rng.random((n, k)) < 0.02] = -0.05  # no response at all: decodes to (0, 0)
    return hm


# =====================================================================================================
# Timing
# =====================================================================================================


def _time(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def same_results(ours: list[dict], base: list[dict]) -> bool:
    """Same written records (image id, keypoints, score), in the same order."""
    if len(ours) != len(base):
        return False
    for a, b in zip(ours, base):
        if a["image_id"] != b["image_id"] or a["score"] != b["score"] or a["keypoints"] != list(b["keypoints"]):
            return False
    return True


def run(quick: bool = False, seed: int = 0, decode_people: int | None = None, ap: bool = False) -> list[dict[str, Any]]:
    num_images, num_people, num_dets = (500, 635, 10_000) if quick else (5_000, 6_352, 100_000)
    n_dec = decode_people if decode_people is not None else (128 if quick else 512)
    data = simulate(num_images, num_people, num_dets, seed)
    preds, boxes, ids = data["preds"], data["boxes"], data["image_ids"]
    n = len(preds)
    rows: list[dict[str, Any]] = []

    def add(stage: str, persons: int, t_base: float, t_ours: float, agree: bool, in_total: bool = True) -> None:
        rows.append({"stage": stage, "persons": persons, "baseline_s": t_base, "ours_s": t_ours, "agree": agree,
                     "in_total": in_total})  # fmt: skip

    # decode (the codec is another module; skip the stage when it is not there)
    if importlib.util.find_spec("hrpose.codec") is not None and n_dec > 0:
        from hrpose.codec import HeatmapCodec

        hms = random_heatmaps(n_dec, NUM_JOINTS, 64, 48, seed)
        centers, scales = boxes[:n_dec, 0:2], boxes[:n_dec, 2:4]
        codec = HeatmapCodec((192, 256), (48, 64), 2.0)
        tb, (pb, vb) = _time(lambda: baseline_decode(hms, centers, scales))
        to, (po, vo) = _time(lambda: codec.decode(hms, centers, scales, post_process=True), repeat=3)
        agree = bool(np.allclose(po, pb, atol=1e-3) and np.array_equal(vo, vb))
        add("decode (17x64x48 heatmaps)", n_dec, tb, to, agree)

    # rescore
    kdb_base = baseline_group(preds, boxes, ids)
    tb, _ = _time(lambda: baseline_rescore(kdb_base, NUM_JOINTS, IN_VIS_THRE))
    to, scores = _time(lambda: rescore(preds, boxes[:, 5], IN_VIS_THRE), repeat=3)
    base_scores = np.array([p["score"] for g in kdb_base.values() for p in g])
    agree = bool(np.array_equal(base_scores, scores[np.concatenate(group_by_image(ids))]))
    add("rescore", n, tb, to, agree)

    # greedy and soft OKS NMS (grouping by image included on both sides)
    results: dict[bool, tuple[list[list[dict]], np.ndarray, np.ndarray]] = {}
    for soft in (False, True):

        def base_nms(soft: bool = soft) -> list[list[dict]]:
            groups = baseline_group(preds, boxes, ids)
            baseline_rescore(groups, NUM_JOINTS, IN_VIS_THRE)
            return baseline_nms(groups, OKS_THRE, soft)

        def our_nms(soft: bool = soft) -> tuple[np.ndarray, np.ndarray]:
            return select_poses(preds, boxes, ids, in_vis_thre=IN_VIS_THRE, oks_thre=OKS_THRE, soft_nms=soft)

        tb, kept_base = _time(base_nms)
        to, (sel, sc) = _time(our_nms)
        results[soft] = (kept_base, sel, sc)
        base_scores_kept = np.array([p["score"] for g in kept_base for p in g])
        base_images_kept = np.array([p["image"] for g in kept_base for p in g])
        agree = len(base_scores_kept) == len(sel) and bool(
            np.array_equal(base_scores_kept, sc[sel]) and np.array_equal(base_images_kept, ids[sel])
        )
        add(f"group + rescore + {'soft ' if soft else ''}OKS NMS", n, tb, to, agree)

    # results file
    kept_base, sel, sc = results[False]
    with tempfile.TemporaryDirectory() as td:
        tb, res_base = _time(lambda: baseline_write(kept_base, NUM_JOINTS, os.path.join(td, "base.json")))

        to, _ = _time(lambda: write_results(preds, ids, sc, sel, Path(td) / "ours.json"))
        on_disk = json.loads((Path(td) / "ours.json").read_text())  # what pycocotools' loadRes reads
    add("write results json", len(sel), tb, to, same_results(on_disk, res_base))
    if ap:  # the AP step: pycocotools (default, official) vs faster-coco-eval, on the kept persons
        gt = ground_truth(data, num_images)
        results_list = build_results(preds, ids, sc, sel)
        tb, st_ref = _time(lambda: coco_keypoint_stats(gt, results_list))
        to, st_fast = _time(lambda: coco_keypoint_stats(gt, results_list, evaluator="faster-coco-eval"))
        agree = all(abs(st_ref[k] - st_fast[k]) <= 1e-12 for k in st_ref)
        add("AP step: pycocotools -> faster-coco-eval (not in total)", len(sel), tb, to, agree, in_total=False)
        print("AP step stats (pycocotools):", {k: round(v, 4) for k, v in st_ref.items()})
    print(f"{n:,} detections over {len(np.unique(ids)):,} images; {len(sel):,} kept by OKS NMS")
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| stage | persons | baseline persons/s | ours persons/s | speed-up | same output |",
        "|---|---:|---:|---:|---:|---|",
    ]
    tot_b = tot_o = 0.0
    for r in rows:
        if r.get("in_total", True):
            tot_b += r["baseline_s"]
            tot_o += r["ours_s"]
        lines.append(
            f"| {r['stage']} | {r['persons']:,} | {r['persons'] / r['baseline_s']:,.0f} | "
            f"{r['persons'] / r['ours_s']:,.0f} | {r['baseline_s'] / r['ours_s']:.1f}x | "
            f"{'yes' if r['agree'] else 'NO'} |"
        )
    lines.append(f"| total time | | {tot_b:.2f} s | {tot_o:.2f} s | {tot_b / tot_o:.1f}x | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k detections over 500 images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--decode-people", type=int, default=None, help="people in the decode subset")
    parser.add_argument("--ap", action="store_true", help="also time the AP step: pycocotools vs faster-coco-eval")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args.quick, args.seed, args.decode_people, args.ap)
    print(markdown(rows))
    print(
        f"\n(wall time {time.perf_counter() - t0:.1f} s; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
    )
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
