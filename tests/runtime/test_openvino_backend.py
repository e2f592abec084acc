"""OpenVINO in a process that keeps working: two compiled models dropped first-in first-out must not leave the
thread on an unmapped alternate signal stack (the suite's SIGSEGV in a later `hrpose train` test, see
`hrpose.runtime.openvino_backend.keep_sigaltstack`). Run in a child process: the failure kills the process that
signals."""

from __future__ import annotations

import subprocess
import sys

from hrpose.export import export_onnx
from hrpose.models import build_model

CHILD = r"""
import faulthandler, gc, signal, subprocess, sys
faulthandler.enable()  # as pytest does: Python's own alternate signal stack
from hrpose.runtime.openvino_backend import OpenVinoBackend
import numpy as np
a = OpenVinoBackend(sys.argv[1], threads=1)
b = OpenVinoBackend(sys.argv[1], threads=1)
a(np.zeros((1, 3, 64, 64), np.float32)); b(np.zeros((2, 3, 64, 64), np.float32))
del a
gc.collect()
del b
gc.collect()
signal.signal(signal.SIGCHLD, lambda *_: None)  # CPython installs handlers with SA_ONSTACK, as torch's DataLoader's
subprocess.run(["true"], check=True)  # SIGCHLD arrives
print("alive")
"""


def test_two_openvino_models_dropped_in_creation_order_leave_signals_working(tmp_path):
    from helpers import tiny_resnet_config as _tiny_config
    from hrpose.config import load_config

    model = build_model(load_config(_tiny_config(tmp_path))).eval()
    path = export_onnx(model, tmp_path / "m.onnx", (64, 64), dynamic_batch=True).path
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0 and "alive" in child.stdout, (child.returncode, child.stderr[-2000:])
