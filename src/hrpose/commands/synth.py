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
    parser.add_argument("--max-people", type=int, default=4, help="people per image: 1..N (default 4)")
    parser.add_argument(
        "--area",
        choices=("bbox", "mask"),
        default="bbox",
        help="annotation area (the OKS scale): bbox w*h (default) or the figure's pixel count (stricter)",
    )


def run(args: argparse.Namespace) -> int:
    from hrpose.synth import write_synthetic_dataset

    if args.images < 1:
        raise SystemExit(f"hrpose synth: --images must be >= 1, got {args.images}")
    if args.val_images < 0:
        raise SystemExit(f"hrpose synth: --val-images must be >= 0, got {args.val_images}")
    splits = [(args.split, args.images)]
    if args.val_images:
        if args.split == "val":
            raise SystemExit("hrpose synth: --val-images writes split 'val'; choose another --split")
        splits.append(("val", args.val_images))
    for split, n in splits:
        start = time.perf_counter()
        # The split name is part of every image's seed stream, so 'val' never repeats a 'train' image.
        path = write_synthetic_dataset(
            args.out,
            n,
            args.seed,
            split=split,
            image_size=tuple(args.image_size),
            max_people=args.max_people,
            area=args.area,
        )
        doc = json.loads(path.read_text())
        print(
            f"{split}: {len(doc['images'])} images, {len(doc['annotations'])} people -> {path} "
            f"(images in {path.parent.parent / 'images' / split}) in {time.perf_counter() - start:.1f}s"
        )
    return 0
