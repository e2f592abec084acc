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
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,onnx,tensorboard]"
