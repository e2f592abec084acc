#!/usr/bin/env bash
# The quick start, end to end on a fresh machine (about 10-15 minutes on 2 CPU cores):
#   synthetic people -> train a small HRNet -> test (pycocotools AP) -> predict on an image (picture with skeletons).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
HR=.venv/bin/hrpose
CFG=experiments/synthetic/w16_128x96_synth.yaml
OUT=output/quickstart

$HR summary --cfg experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml
$HR synth --out data/synth --images 1200 --val-images 150 --seed 0
$HR train --cfg "$CFG" OUTPUT_DIR "$OUT"
WEIGHTS=$(ls "$OUT"/coco/*/*/model_best.pth | head -n 1)
$HR test --cfg "$CFG" OUTPUT_DIR "$OUT" TEST.MODEL_FILE "$WEIGHTS"
$HR predict --cfg "$CFG" --weights "$WEIGHTS" --detector whole data/synth/images/val/synth_000000.jpg --out "$OUT/predict"
echo "quick start done: results, checkpoints and rendered predictions are under $OUT"
