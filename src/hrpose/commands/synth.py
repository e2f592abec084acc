"""`hrpose synth`: write a synthetic COCO-format person-keypoint dataset (see `hrpose.synth`)."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset root (gets annotations/ and images/<split>/)")
    parser.add_argument("--images", type=int, required=True, help="number of images in the main split")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--split", default="train", help="name of the main split (default train)")
    parser.add_argument(
        "--val-images", type=int, default=0, help="also write this many images as split 'val' (held out)"
    )
    parser.add_argument(
        "--image-size", type=int, nargs=2, default=(256, 256), metavar=("W", "H"), help="default 256 256"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes rendering images (default 0: one per CPU core, at most 8); the files do not depend on it",
    )
    parser.add_argument("--max-people", type=int, default=4, help="people per image: 1..N (default 4)")
    parser.add_argument(
        "--area",
        choices=("bbox", "mask"),
        default="bbox",
        help="annotation area (the OKS scale): bbox w*h (default) or the figure's pixel count (stricter)",
    )


MAX_SIDE = 4096
MAX_PEOPLE = 15  # = hrpose.synth.MAX_PEOPLE (its label map is uint8); not imported: cv2 loads slowly


def _check(args: argparse.Namespace) -> list[tuple[str, int]]:
    """Every option checked before anything is written; a UserError naming the option otherwise."""
    from hrpose.config import check_output_dirs
    from hrpose.errors import UserError

    if args.images < 1:
        raise UserError(f"--images must be >= 1 (images in split {args.split!r}), got {args.images}")
    if args.val_images < 0:
        raise UserError(f"--val-images must be >= 0 (0: no held-out split), got {args.val_images}")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed must be an integer from 0 to 2**63-1, got {args.seed}")
    w, h = args.image_size
    if not (32 <= w <= MAX_SIDE and 32 <= h <= MAX_SIDE):
        raise UserError(f"--image-size W H must be from 32 to {MAX_SIDE} pixels each, got {w} {h}")
    if not 0 <= args.workers <= 64:
        raise UserError(f"--workers must be from 0 (one per CPU core) to 64, got {args.workers}")
    if not 1 <= args.max_people <= MAX_PEOPLE:
        raise UserError(f"--max-people must be from 1 to {MAX_PEOPLE}, got {args.max_people}")
    if not args.split or any(c in args.split for c in "/\\\0") or args.split in (".", ".."):
        raise UserError(f"--split must be a plain folder name such as 'train', got {args.split!r}")
    splits = [(args.split, args.images)]
    if args.val_images:
        if args.split == "val":
            raise UserError("--val-images writes split 'val', the same as --split val; choose another --split")
        splits.append(("val", args.val_images))
    check_output_dirs(("--out", args.out))
    return splits


def _workers(requested: int) -> int:
    if requested > 0:
        return requested
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def run(args: argparse.Namespace) -> int:
    from hrpose.synth import write_synthetic_dataset

    splits = _check(args)
    for split, n in splits:
        start = time.perf_counter()
        # The split name is part of every image's seed stream, so 'val' never repeats a 'train' image.
        try:
            path = write_synthetic_dataset(
                args.out,
                n,
                args.seed,
                split=split,
                image_size=tuple(args.image_size),
                max_people=args.max_people,
                area=args.area,
                workers=_workers(args.workers),
            )
        except KeyboardInterrupt:
            from hrpose.errors import Interrupted

            done = [f"'{name}'" for name, _ in splits[: splits.index((split, n))]]
            kept = f"split {', '.join(done)} is complete; " if done else ""
            raise Interrupted(
                f"{kept}split '{split}' in {args.out} is unfinished (its annotation file is written only at the "
                "end); run the same command again to write it"
            ) from None
        doc = json.loads(path.read_text())
        print(
            f"{split}: {len(doc['images'])} images, {len(doc['annotations'])} people -> {path} "
            f"(images in {path.parent.parent / 'images' / split}) in {time.perf_counter() - start:.1f}s"
        )
    return 0
