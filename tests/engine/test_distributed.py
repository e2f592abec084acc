"""DDP on the CPU (gloo, 2 processes): training equals single-process training on the combined batch,
sharded validation gathers to exactly the single-process predictions, and a NaN on one rank stops all."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from torch import nn

from helpers import TinyPose
from helpers import free_port as _free_port
from hrpose.codec import HeatmapCodec
from hrpose.engine import NonFiniteLossError, to_safe, train_one_epoch, validate
from hrpose.engine.distributed import setup_distributed, wrap_ddp
from hrpose.engine.evaluate import make_eval_loader
from hrpose.keypoints import DatasetMeta
from hrpose.losses import JointsMSELoss
from hrpose.pipeline import InferenceSettings

FLIP = InferenceSettings(flip_test=True, shift_heatmap=True)  # validation's flip test with the official shift

K = 4
N_TRAIN = 16
PER_RANK = 2
WORLD = 2


class ToyPoses(torch.utils.data.Dataset):
    """Fixed random samples in the PoseDataset item format; `evaluate` reports what it was given."""

    meta = DatasetMeta("toy", ("left_a", "right_a", "left_b", "right_b"), ((0, 1), (2, 3)))

    def __init__(self, n: int, nan_at: int | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 3, 32, 32, generator=g)
        self.t = torch.rand(n, K, 8, 8, generator=g)
        self.c = torch.rand(n, 2, generator=g).double() * 100 + 50
        self.s = torch.rand(n, 2, generator=g).double() + 0.5
        if nan_at is not None:
            self.x[nan_at, 0, 0, 0] = float("nan")
        self.evaluated: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        meta = {"image": f"img{i}.jpg", "image_id": 1000 + i, "index": i, "center": self.c[i].numpy(),
                "scale": self.s[i].numpy(), "score": 1.0}  # fmt: skip
        return self.x[i], self.t[i], torch.ones(K, 1), meta

    def evaluate(self, preds, output_dir, boxes=None, image_ids=None):
        self.evaluated = {"preds": np.asarray(preds), "boxes": np.asarray(boxes), "ids": np.asarray(image_ids)}
        return {"AP": float(np.asarray(preds)[..., :2].mean())}, float(np.asarray(preds)[..., 2].mean())


def _codec() -> HeatmapCodec:
    return HeatmapCodec((32, 32), (8, 8), 2.0)


def _train_loader(ds, batch_size: int, sampler=None):
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, sampler=sampler)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    info = setup_distributed("cpu")
    try:
        assert info.is_distributed and info.rank == rank and torch.distributed.get_backend() == "gloo"
        torch.manual_seed(0)
        model = TinyPose()
        ddp = wrap_ddp(model, info)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
        ds = ToyPoses(N_TRAIN)
        sampler = torch.utils.data.distributed.DistributedSampler(ds, WORLD, rank, shuffle=False)
        sampler.set_epoch(0)
        m = train_one_epoch(ddp, _train_loader(ds, PER_RANK, sampler), JointsMSELoss(True), opt, info.device,
                            epoch=0, progress=False, print_freq=0)  # fmt: skip
        trained = {k: v.clone() for k, v in model.state_dict().items()}

        # sharded validation on an odd-sized set (uneven shards, no padding)
        val = ToyPoses(7)
        names, perf = validate(model, make_eval_loader(val, 3, 0, info), val, info.device, codec=_codec(),
                               output_dir=out_dir, settings=FLIP)

        # a NaN in rank 1's second batch must stop both ranks at the same step
        bad = ToyPoses(N_TRAIN, nan_at=7)  # rank 1 sees samples 1, 3 | 5, 7 | ...: sample 7 is in its step 1
        sampler_bad = torch.utils.data.distributed.DistributedSampler(bad, WORLD, rank, shuffle=False)
        stopped = ""
        try:
            train_one_epoch(ddp, _train_loader(bad, PER_RANK, sampler_bad), JointsMSELoss(True), opt, info.device,
                            epoch=4, progress=False, print_freq=0)  # fmt: skip
        except NonFiniteLossError as e:
            stopped = str(e)
        result = {"iters": m["iters"], "names": names, "perf": perf, "stopped": stopped}
        if rank == 0:
            result["state_dict"] = trained
            result["evaluated"] = val.evaluated
        torch.save(to_safe(result), Path(out_dir) / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_gloo_two_processes_match_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    got = {k: v.numpy() for k, v in r0["evaluated"].items()}

    # reference: one process, the combined batch (rank 0's and rank 1's samples) per step
    torch.manual_seed(0)
    model = TinyPose()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    ref = train_one_epoch(model, _train_loader(ToyPoses(N_TRAIN), PER_RANK * WORLD), JointsMSELoss(True), opt,
                          "cpu", epoch=0, progress=False, print_freq=0)  # fmt: skip
    assert r0["iters"] == r1["iters"] == ref["iters"] == N_TRAIN // (PER_RANK * WORLD)
    moved = False
    torch.manual_seed(0)
    init = TinyPose()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(r0["state_dict"][k], v, rtol=0, atol=1e-5)
        moved |= not torch.allclose(v, init.state_dict()[k], atol=1e-3)
    assert moved  # training changed the weights, so the comparison is not vacuous

    # validation: gathered, back in dataset order, identical to one process
    val = ToyPoses(7)
    names, perf = validate(r0_model(r0), make_eval_loader(val, 3, 0), val, "cpu", codec=_codec(),
                           output_dir=tmp_path, settings=FLIP)
    np.testing.assert_allclose(got["preds"], val.evaluated["preds"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got["ids"], np.arange(1000, 1007))
    np.testing.assert_allclose(got["boxes"], val.evaluated["boxes"])
    assert r0["names"] == r1["names"] and r0["perf"] == r1["perf"]  # broadcast to every rank
    assert abs(r0["perf"] - perf) < 1e-5

    # NaN on rank 1 only: both ranks stop with the same message
    assert "epoch 4, step 1" in r0["stopped"] and r0["stopped"] == r1["stopped"]


def r0_model(r0: dict) -> nn.Module:
    m = TinyPose()
    m.load_state_dict(r0["state_dict"])
    return m


def test_torchrun_train_two_cpu_processes_and_resume(tmp_path):
    """The whole `hrpose train` under torchrun (gloo): rank 0 writes every file, validation covers the
    full set (gathered shards), and AUTO_RESUME continues the DDP run."""
    import subprocess
    import sys

    import yaml

    from conftest import mini_coco
    from helpers import tiny_hrnet_cfg_dict as _tiny_cfg_dict
    from hrpose.engine import load_checkpoint

    d = _tiny_cfg_dict(mini_coco(tmp_path, 3))
    d.update(OUTPUT_DIR=str(tmp_path / "out"), LOG_DIR=str(tmp_path / "log"))
    d["HRPOSE"]["SYNC_BN"] = True  # CPU: ignored with a warning
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(d))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_free_port()), "-m", "hrpose.cli", "train", "--cfg", str(cfg_file)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([*torchrun, "TRAIN.END_EPOCH", "1"], env=env, capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    exp_dir = tmp_path / "out" / "coco" / "pose_hrnet" / "ddp"
    assert load_checkpoint(exp_dir / "checkpoint.pth")["epoch"] == 1
    assert len(load_checkpoint(exp_dir / "checkpoint.pth")["rng"]) == 2  # one RNG state per rank
    assert first.stdout.count("=> best perf") == 1  # rank 0 only
    second = subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "loaded checkpoint" in second.stdout and "(epoch 1)" in second.stdout
    assert load_checkpoint(exp_dir / "checkpoint.pth")["epoch"] == 2
    n_people = len(json.loads((tmp_path / "out" / "coco" / "pose_hrnet" / "ddp" / "results" /
                               "keypoints_train2017_results_0.json").read_text()))  # fmt: skip
    assert n_people > 0
    logs = sorted(exp_dir.glob("ddp_*_train.log"))
    text = "".join(p.read_text() for p in logs)
    assert "world size 2" in text and "SYNC_BN ignored" in text
    assert (exp_dir / "final_state.pth").is_file() and (exp_dir / "model_best.pth").is_file()
