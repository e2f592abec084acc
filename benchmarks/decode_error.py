"""How far from the true keypoint does each heatmap decoder land? Mean error in model-input pixels.

Setup: a 256x192 (h x w) input with a 64x48 heatmap (stride 4), sigma 2, like the COCO w32_256x192 models.
Each sample is one keypoint drawn uniformly (sub-pixel) in the input, at least 16 input pixels (4 heatmap
pixels) from the border so every refinement has the neighbours it needs. Its heatmap is the *ideal*
unquantised Gaussian (peak 1) centred on the keypoint's exact heatmap position:
- official / DARK rows: position = x_input / stride (the frame official decoding inverts; this is
  `HeatmapCodec(method="dark").encode`, DARK's unbiased encoding);
- UDP row: position = x_input * (heatmap - 1) / (input - 1), i.e. `HeatmapCodec(method="udp").encode`,
  decoded by the UDP codec (the UDP convention end to end).
Noise model: i.i.d. additive Gaussian noise N(0, noise^2) on every heatmap pixel (peak height 1), no clipping.

Run: `python -m benchmarks.decode_error [--samples 2000] [--seed 0] [--noise 0 0.02 0.05 0.1]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    from hrpose.codec import HeatmapCodec
except ImportError:  # run as a file from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from hrpose.codec import HeatmapCodec

INPUT_WH = (192, 256)
HEATMAP_WH = (48, 64)
SIGMA = 2.0
MARGIN_HM = 4.0


def render(pos_hm: np.ndarray, heatmap_wh: tuple[int, int], sigma: float) -> np.ndarray:
    """pos_hm (N, 2) exact heatmap positions -> (N, 1, H, W) float32 Gaussians of peak 1 on the full grid."""
    w, h = heatmap_wh
    xs = np.arange(w, dtype=np.float64)
    ys = np.arange(h, dtype=np.float64)
    gx = np.exp(-((xs[None] - pos_hm[:, :1]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((ys[None] - pos_hm[:, 1:]) ** 2) / (2 * sigma**2))
    return (gy[:, :, None] * gx[:, None, :])[:, None].astype(np.float32)


def sample_keypoints(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) keypoints in input pixels, uniform, MARGIN_HM heatmap pixels away from every border."""
    stride = np.asarray(INPUT_WH, dtype=np.float64) / np.asarray(HEATMAP_WH, dtype=np.float64)
    lo = MARGIN_HM * stride
    hi = np.asarray(INPUT_WH, dtype=np.float64) - 1 - MARGIN_HM * stride
    return rng.uniform(lo, hi, size=(n, 2))


def decode_errors(n: int, noise: float, seed: int = 0) -> dict[str, float]:
    """Mean Euclidean decode error (input pixels) of argmax, quarter-shift, DARK and UDP on `n` keypoints."""
    rng = np.random.default_rng(seed)
    joints = sample_keypoints(n, rng)
    centers = np.tile(np.asarray(INPUT_WH, dtype=np.float64) / 2, (n, 1))
    scales = np.tile(np.asarray(INPUT_WH, dtype=np.float64) / 200.0, (n, 1))  # the crop is the whole image

    def noisy(maps: np.ndarray) -> np.ndarray:
        return maps + rng.normal(0.0, noise, maps.shape).astype(np.float32) if noise > 0 else maps

    official = HeatmapCodec(INPUT_WH, HEATMAP_WH, SIGMA, method="official")
    dark = HeatmapCodec(INPUT_WH, HEATMAP_WH, SIGMA, method="dark")
    udp = HeatmapCodec(INPUT_WH, HEATMAP_WH, SIGMA, method="udp")
    maps = noisy(render(joints / official.feat_stride, HEATMAP_WH, SIGMA))
    maps_udp = noisy(render(joints / udp.feat_stride, HEATMAP_WH, SIGMA))

    def err(codec: HeatmapCodec, hm: np.ndarray, post: bool = True) -> float:
        preds, _ = codec.decode(hm, centers, scales, post_process=post)
        return float(np.linalg.norm(preds[:, 0].astype(np.float64) - joints, axis=1).mean())

    return {
        "argmax": err(official, maps, post=False),
        "quarter": err(official, maps),
        "dark": err(dark, maps),
        "udp": err(udp, maps_udp),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.02, 0.05, 0.1])
    args = parser.parse_args(argv)
    print(
        f"decode error, mean Euclidean distance in input pixels; {args.samples} keypoints, input {INPUT_WH[1]}x"
        f"{INPUT_WH[0]} (h x w), heatmap {HEATMAP_WH[1]}x{HEATMAP_WH[0]}, sigma {SIGMA}, seed {args.seed}\n"
    )
    print("| noise std | argmax | argmax + quarter shift (official) | DARK | UDP | quarter / DARK |")
    print("| --- | --- | --- | --- | --- | --- |")
    start = time.perf_counter()
    for noise in args.noise:
        e = decode_errors(args.samples, noise, args.seed)
        ratio = e["quarter"] / e["dark"] if e["dark"] > 0 else float("inf")
        print(
            f"| {noise:g} | {e['argmax']:.3f} | {e['quarter']:.3f} | {e['dark']:.3f} | {e['udp']:.3f} | {ratio:.1f}x |"
        )
    print(f"\n({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
