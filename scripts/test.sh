#!/usr/bin/env bash
# The test command: sets up .venv, lints (ruff), type-checks src/ (mypy), checks the import layers (lint-imports)
# and runs the test suite.
#   bash scripts/test.sh          lint + types + fast suite (what CI runs)
#   bash scripts/test.sh slow     the slow tests only (training to AP, long benchmarks)
#   bash scripts/test.sh gpu      the GPU tests only (CUDA graphs, fp16, AMP on CUDA; needs a CUDA device)
#   bash scripts/test.sh network  the tests that download the real model-zoo files (needs the internet)
#   bash scripts/test.sh portability   the backend, fusion and export tests (marker `portability`) as on an
#                                 AVX2-only CPU: oneDNN and ATen capped by ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# tests/serve/test_browser.py drives Debian's Chromium (the test fails, not skips, when it is missing)
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1) \
        || echo "test.sh: could not install chromium (apt); tests/serve/test_browser.py will fail" >&2
fi
# tests/commands/test_predict_streams.py serves real streams on 127.0.0.1: HTTP with Debian's ffmpeg, RTSP with GStreamer's
# RTSP server (Debian's python3-gi); the tests fail, not skip, when these are missing
STREAM_PKGS="ffmpeg python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
if { [ ! -x /usr/bin/ffmpeg ] || ! /usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null; } \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $STREAM_PKGS >/dev/null 2>&1 \
        || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $STREAM_PKGS >/dev/null 2>&1) \
        || echo "test.sh: could not install ffmpeg/GStreamer (apt); tests/commands/test_predict_streams.py will fail" >&2
fi
if [ "${1:-}" = "slow" ] || [ "${1:-}" = "gpu" ] || [ "${1:-}" = "network" ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    exec .venv/bin/python -m pytest -m "$1" "${@:2}"
fi
# The fast suite runs in HRPOSE_TEST_WORKERS pytest-xdist processes (default 2, one per core of the 2-core
# machines we target), each with OMP_NUM_THREADS threads (default 1): 2 x 1 threads keep 2 cores busy while one
# worker waits on a subprocess, a server or the disk. HRPOSE_TEST_WORKERS=0 runs it in one process.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WORKERS=(-n "${HRPOSE_TEST_WORKERS:-2}")
portability() {
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
        .venv/bin/python -m pytest "${WORKERS[@]}" -m "portability and not slow and not gpu" "$@"
}
if [ "${1:-}" = "portability" ]; then
    portability "${@:2}"
    exit
fi
.venv/bin/ruff check src tests tools benchmarks
.venv/bin/mypy
.venv/bin/lint-imports  # the layers contract of pyproject.toml ([tool.importlinter])
.venv/bin/python -m pytest "${WORKERS[@]}" -m "not slow and not gpu and not network" "$@"
# A CPU beyond AVX2 (AVX-512, AMX) also runs the portability tests as an AVX2-only CPU, so what breaks there is
# caught here; on an AVX2-only CPU the run above already was that run.
if grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
    portability "$@"
fi
