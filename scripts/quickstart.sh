#!/usr/bin/env bash
# The quick start, end to end on a fresh machine (about 8 minutes on 2 CPU cores after set-up; seeded by its config):
#   synthetic people -> train a small HRNet -> test (pycocotools AP) -> predict on an image (picture with skeletons).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
HR=.venv/bin/hrpose
CFG=experiments/synthetic/w16_128x96_synth.yaml
OUT=output/quickstart

$HR summary --cfg "$CFG"
$HR synth --out data/synth --images 1000 --val-images 100 --seed 0
$HR train --cfg "$CFG" OUTPUT_DIR "$OUT"
WEIGHTS=$(ls "$OUT"/coco/*/*/model_best.pth | head -n 1)
$HR test --cfg "$CFG" OUTPUT_DIR "$OUT" TEST.MODEL_FILE "$WEIGHTS" 2>&1 | tee "$OUT/test.txt"
# person boxes for predict: the val split's ground-truth boxes as a detection-results file
.venv/bin/python - <<'PY'
import json
ann = json.load(open("data/synth/annotations/person_keypoints_val.json"))
names = {im["id"]: im["file_name"] for im in ann["images"]}
dets = [{"file_name": names[a["image_id"]], "image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"],
         "score": 1.0} for a in ann["annotations"]]
json.dump(dets, open("output/quickstart/val_boxes.json", "w"))
PY
$HR predict --cfg "$CFG" --weights "$WEIGHTS" --detector file:output/quickstart/val_boxes.json \
    data/synth/images/val/synth_000001.jpg data/synth/images/val/synth_000002.jpg --out "$OUT/predict"
echo "quick start done: results, checkpoints and rendered predictions are under $OUT"
echo "rendered skeletons: $(ls "$OUT"/predict/*.jpg 2>/dev/null | head -n 1)"
grep -m1 "^| pose_hrnet" "$OUT/test.txt" | awk -F'|' '{printf "keypoint AP on the held-out synthetic split: %s\n", $3}'
