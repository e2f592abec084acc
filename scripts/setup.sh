#!/usr/bin/env bash
# Creates .venv (if missing) and installs hrpose with everything the tests, the quick start and the
# ONNX backend need. Safe to re-run. torch is pinned to 2.13.0: the CPU wheel on these machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "torch==2.13.0" 2> >(grep -v "^WARNING: Location" >&2)
# opencv-python-headless and the contrib build both provide `cv2`; only the contrib one may be present.
if .venv/bin/python -m pip show -q opencv-python-headless >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y opencv-python-headless opencv-contrib-python-headless
fi
# (the filter drops this machine's pip notices about absent local index folders; pip's exit status is kept)
.venv/bin/python -m pip install -q -e ".[dev,onnx,tensorboard,openvino,int8,serve,fast-data]" 2> >(grep -v "^WARNING: Location" >&2)
