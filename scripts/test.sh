#!/usr/bin/env bash
# The test command: sets up .venv, lints (ruff), type-checks src/ (mypy) and runs the test suite.
#   bash scripts/test.sh          lint + types + fast suite (what CI runs)
#   bash scripts/test.sh slow     the slow tests only (training to AP, long benchmarks)
#   bash scripts/test.sh gpu      the GPU tests only (CUDA graphs, fp16, AMP on CUDA; needs a CUDA device)
#   bash scripts/test.sh network  the tests that download the real model-zoo files (needs the internet)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
if [ "${1:-}" = "slow" ] || [ "${1:-}" = "gpu" ] || [ "${1:-}" = "network" ]; then
    exec .venv/bin/python -m pytest -m "$1" "${@:2}"
fi
.venv/bin/ruff check src tests tools benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -m "not slow and not gpu and not network" "$@"
