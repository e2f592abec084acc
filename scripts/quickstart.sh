#!/usr/bin/env bash
# The quick start, end to end on a fresh machine (seeded by its config; times: README, docs/benchmarks.md):
#   synthetic people -> train a small HRNet -> test (pycocotools AP) -> predict on an image (picture with skeletons).
# Training runs as two processes of one thread each (torchrun, gloo on 127.0.0.1; batch 8 each = 16 in all): on
# 2 cores that is faster than one process of two threads, whose threads wait on each other at every operation
# (and stall whenever anything else runs). The recipe is fixed at 2 processes, so every machine trains the same.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
HR=.venv/bin/hrpose
CFG=experiments/synthetic/w16_128x96_synth.yaml
OUT=output/quickstart

$HR summary --cfg "$CFG"
$HR synth --out data/synth --images 1000 --val-images 100 --seed 0
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} OMP_NUM_THREADS=1 .venv/bin/torchrun --nnodes 1 --nproc-per-node 2 \
    --master-addr 127.0.0.1 --master-port "$PORT" -m hrpose.cli train --cfg "$CFG" OUTPUT_DIR "$OUT"
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
