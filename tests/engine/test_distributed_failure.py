"""One rank failing early under torchrun (gloo, CPU) stops every rank within seconds, and the failing rank's
`error:` line is what the user sees. Two torchrun launchers on 127.0.0.1 play two nodes (one process each),
each with its own copy of the config, as two machines would have: node 1's copy is bad. Before the fix node 0
waited in init_process_group (or a collective) for gloo's 30-minute timeout, or died with a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import mini_coco
from helpers import free_port, tiny_hrnet_cfg_dict

ROOT = Path(__file__).resolve().parents[2]
PROMPT_S = 90  # far below gloo's 1800 s; startup of two CPU torch processes on a busy 2-core machine included


@pytest.mark.slow
@pytest.mark.parametrize("bad", ["config_key", "dataset_root"])
def test_a_rank_failing_early_stops_every_rank_promptly(tmp_path, bad):
    d = tiny_hrnet_cfg_dict(mini_coco(tmp_path, 3))
    d.update(OUTPUT_DIR=str(tmp_path / "out"), LOG_DIR=str(tmp_path / "log"))
    cfgs = []
    for node in (0, 1):
        nd = json.loads(json.dumps(d))
        if node == 1 and bad == "config_key":
            nd["TRAIN"]["NO_SUCH_KEY"] = 1  # refused before the process group is joined
        if node == 1 and bad == "dataset_root":
            nd["DATASET"]["ROOT"] = str(tmp_path / "missing")  # refused after it, before DDP's first broadcast
        (tmp_path / f"node{node}").mkdir()
        cfgs.append(tmp_path / f"node{node}" / "ddp.yaml")
        cfgs[-1].write_text(yaml.safe_dump(nd))
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
             "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
             "-m", "hrpose.cli", "train", "--cfg", str(cfgs[node]), "TRAIN.END_EPOCH", "1"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        for node in (0, 1)
    ]
    results = []
    try:
        for p in procs:
            left = max(PROMPT_S - (time.monotonic() - start), 1)
            out, err = p.communicate(timeout=left)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)  # the launcher and its worker (own session)
                p.wait()
    assert time.monotonic() - start < PROMPT_S
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 != 0 and rc1 != 0
    lines1 = [x for x in err1.splitlines() if x.startswith("error:")]
    assert len(lines1) == 1 and lines1[0].startswith("error: (rank 1) "), err1[-3000:]
    assert ("NO_SUCH_KEY" if bad == "config_key" else "DATASET.ROOT") in lines1[0]
    # node 0 says nothing of its own: no error line, no traceback of a broken connection
    assert not [x for x in err0.splitlines() if x.startswith("error:")], err0[-3000:]
    assert "rank 0 stopped because rank 1 failed" in err0, err0[-3000:]
    assert "DistNetworkError" not in err0 and 'File "/' + str(ROOT / "src") not in err0, err0[-3000:]
