"""hrpose.engine.train: optimizer/schedule, train_one_epoch, overfitting, train() outputs and exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import DATA, mini_coco
from helpers import TinyPose
from helpers import tiny_batches as _batches
from helpers import tiny_hrnet_cfg_dict as _tiny_cfg_dict
from hrpose.config import load_config
from hrpose.engine import NonFiniteLossError, build_optimizer, build_scheduler, load_checkpoint, train, train_one_epoch
from hrpose.losses import JointsMSELoss

COCO_MINI = DATA / "coco-mini"


# ----------------------------------------------------------------------------------------------------
# optimizer and schedule


def test_optimizers_follow_train_keys():
    model = TinyPose()
    sgd = build_optimizer(model, "sgd", 0.1, momentum=0.8, weight_decay=1e-3, nesterov=True)
    g = sgd.param_groups[0]
    assert isinstance(sgd, torch.optim.SGD)
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.1, 0.8, 1e-3, True)
    adam = build_optimizer(model, "adam", 1e-3, weight_decay=1e-4)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["lr"] == 1e-3 and adam.param_groups[0]["weight_decay"] == 0  # official
    with pytest.raises(ValueError, match="TRAIN.OPTIMIZER.*'rmsprop'"):
        build_optimizer(model, "rmsprop", 1e-3)


def test_lr_schedule_is_the_official_per_epoch_schedule():
    opt = build_optimizer(TinyPose(), "adam", 1.0)
    sched = build_scheduler(opt, [2, 4], 0.1)
    lrs = []
    for _ in range(6):  # epoch e trains with the lr read at its start; the scheduler steps after it
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


# ----------------------------------------------------------------------------------------------------
# train_one_epoch


def test_train_one_epoch_metrics_and_max_iters():
    torch.manual_seed(0)
    model = TinyPose()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m = train_one_epoch(model, _batches(5), JointsMSELoss(True), opt, "cpu", epoch=0, max_iters=3,
                        progress=False, print_freq=0)  # fmt: skip
    assert m["iters"] == 3 and m["samples"] == 6
    assert math.isfinite(m["loss"]) and m["loss"] > 0 and 0.0 <= m["acc"] <= 1.0
    assert m["samples_per_s"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_non_finite_loss_stops_with_epoch_and_step():
    torch.manual_seed(0)
    model = TinyPose()
    batches = _batches(4)
    batches[2][0][0, 0, 0, 0] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots = []

    class Recorder(list):
        def __iter__(self):
            for item in super().__iter__():
                snapshots.append([p.detach().clone() for p in model.parameters()])
                yield item

    with pytest.raises(NonFiniteLossError, match=r"epoch 7, step 2") as info:
        train_one_epoch(model, Recorder(batches), JointsMSELoss(True), opt, "cpu", epoch=7, progress=False)
    assert "nan" in str(info.value)
    # the bad batch never reached the optimizer: weights are those from before step 2
    assert all(torch.equal(a, b) for a, b in zip(snapshots[2], model.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_autocast_on_cpu_trains():
    torch.manual_seed(0)
    model = TinyPose()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = train_one_epoch(model, _batches(3), JointsMSELoss(True), opt, "cpu", epoch=0, amp_dtype=torch.bfloat16,
                            channels_last=True, progress=False, print_freq=0)  # fmt: skip
    for e in range(1, 6):
        last = train_one_epoch(model, _batches(3), JointsMSELoss(True), opt, "cpu", epoch=e,
                               amp_dtype=torch.bfloat16, progress=False, print_freq=0)  # fmt: skip
    assert last["loss"] < first["loss"]


# ----------------------------------------------------------------------------------------------------
# real model, real crops



def _write_cfg(path: Path, d: dict) -> Path:
    path.write_text(yaml.safe_dump(d))
    return path




@pytest.mark.slow
def test_overfit_a_few_real_crops(tmp_path):
    """The tiny pose_hrnet at 64x64 on two real COCO person crops: the loss falls at least 5x."""
    from hrpose.data.dataset import build_dataset
    from hrpose.losses import build_loss
    from hrpose.models import build_model

    torch.manual_seed(0)
    cfg = load_config(_write_cfg(tmp_path / "tiny.yaml", _tiny_cfg_dict(mini_coco(tmp_path, 2))))
    ds = build_dataset(cfg, "test", False)  # no augmentation: the same two crops every step
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(ds, [0, 1]), batch_size=2)))
    model = build_model(cfg, is_train=True)
    criterion = build_loss(cfg)
    with torch.no_grad():
        initial = criterion(model(batch[0]), batch[1], batch[2]).item()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for epoch in range(12):  # at most 60 steps; about 20-25 suffice
        m = train_one_epoch(model, [batch] * 5, criterion, opt, "cpu", epoch=epoch, progress=False, print_freq=0)
        losses.append(m["loss"])
        if initial / m["loss"] >= 5:
            break
    assert initial / losses[-1] >= 5, f"loss went from {initial:.5f} only to {losses}"


def test_train_writes_official_outputs_and_resume_is_exact(tmp_path):
    root = mini_coco(tmp_path, 3)
    base = _tiny_cfg_dict(root)

    # uninterrupted: 2 epochs
    cfg_a = _write_cfg(tmp_path / "run.yaml", base)
    out_a = tmp_path / "a"
    res_a = train(load_config(cfg_a, ["OUTPUT_DIR", str(out_a), "LOG_DIR", str(tmp_path / "log")]), cfg_a)
    assert not torch.are_deterministic_algorithms_enabled()  # HRPOSE.DETERMINISTIC is undone afterwards
    exp_dir = out_a / "coco" / "pose_hrnet" / "run"
    assert res_a["output_dir"] == exp_dir and res_a["epochs"] == 2
    for name in ("checkpoint.pth", "model_best.pth", "final_state.pth"):
        assert (exp_dir / name).is_file(), name
    assert (exp_dir / "results" / "keypoints_train2017_results_0.json").is_file()
    logs = list(exp_dir.glob("run_*_train.log"))
    assert len(logs) == 1 and "Epoch: [1][1/2]" in logs[0].read_text()

    ckpt = load_checkpoint(exp_dir / "checkpoint.pth")  # weights_only=True inside
    assert {"epoch", "model", "state_dict", "best_state_dict", "perf", "optimizer", "scheduler", "rng",
            "config"} <= set(ckpt)  # fmt: skip
    assert ckpt["epoch"] == 2 and ckpt["model"] == "pose_hrnet"
    assert ckpt["scheduler"]["last_epoch"] == 2
    assert ckpt["global_step"] == 4  # 2 epochs x MAX_ITERS_PER_EPOCH 2
    final = torch.load(exp_dir / "final_state.pth", weights_only=True)
    best = torch.load(exp_dir / "model_best.pth", weights_only=True)
    assert set(final) == set(best) and not any(k.startswith("module.") for k in final)
    assert all(torch.equal(final[k], ckpt["state_dict"]["module." + k]) for k in final)  # official layout

    from hrpose.models import build_model
    from hrpose.models.weights import load_weights

    load_weights(build_model(load_config(cfg_a)), exp_dir / "final_state.pth", strict=True)

    # interrupted: 1 epoch, then AUTO_RESUME for the second
    out_b = tmp_path / "b"
    opts_b = ["OUTPUT_DIR", str(out_b), "LOG_DIR", str(tmp_path / "log")]
    res_b1 = train(load_config(cfg_a, [*opts_b, "TRAIN.END_EPOCH", "1"]), cfg_a)
    assert res_b1["epochs"] == 1
    torch.manual_seed(123)  # the resume must not depend on the RNG state it starts from
    res_b2 = train(load_config(cfg_a, opts_b), cfg_a)
    assert res_b2["epochs"] == 1  # only the second epoch ran
    final_b = torch.load(out_b / "coco" / "pose_hrnet" / "run" / "final_state.pth", weights_only=True)
    for k in final:
        assert torch.equal(final[k], final_b[k]), k
    assert res_b2["best_perf"] == res_a["best_perf"]
    assert res_b2["history"][0]["train_loss"] == res_a["history"][1]["train_loss"]


def test_resume_follows_an_edited_lr_step_as_the_official_resume_does(tmp_path):
    """1 epoch with LR_STEP [5]; then END_EPOCH 3 with LR_STEP [1]: the resumed epochs run at LR x 0.1 (the
    checkpoint's stored milestones [5] would have kept LR), and the log says so."""
    cfg = _write_cfg(tmp_path / "run.yaml", _tiny_cfg_dict(mini_coco(tmp_path, 3)))
    opts = ["OUTPUT_DIR", str(tmp_path / "out"), "LOG_DIR", str(tmp_path / "log")]
    train(load_config(cfg, [*opts, "TRAIN.END_EPOCH", "1", "TRAIN.LR_STEP", "[5]"]), cfg)
    exp = tmp_path / "out" / "coco" / "pose_hrnet" / "run"
    lr = load_checkpoint(exp / "checkpoint.pth")["optimizer"]["param_groups"][0]["lr"]
    res = train(load_config(cfg, [*opts, "TRAIN.END_EPOCH", "3", "TRAIN.LR_STEP", "[1]"]), cfg)
    assert res["epochs"] == 2
    ckpt = load_checkpoint(exp / "checkpoint.pth")
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(lr * 0.1)
    assert dict(ckpt["scheduler"]["milestones"]) == {1: 1}
    log = "".join(p.read_text() for p in exp.glob("run_*_train.log"))
    assert "=> resume: TRAIN.LR_STEP [1] / LR_FACTOR 0.1 from the config (the checkpoint had [5])" in log


def test_tensorboard_scalars_and_skeleton_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hrpose.engine.logging import TensorBoardWriter, draw_skeleton_batch

    images = torch.zeros(2, 3, 32, 32)  # normalised zeros = the ImageNet mean colour
    joints = torch.tensor([[[4.0, 4.0], [20.0, 20.0], [8.0, 28.0], [28.0, 8.0]]] * 2).numpy()
    drawn = draw_skeleton_batch(images, joints, skeleton=[(0, 1)])
    assert drawn.shape == (2, 32, 32, 3) and drawn.dtype.name == "uint8"
    background = drawn[0, 0, 31]
    for x, y in joints[0].astype(int):
        assert (drawn[0, y, x] != background).any()  # a joint marker
    assert (drawn[0, 12, 12] != background).any()  # on the limb 0-1
    assert (drawn[0, 2, 28] == background).all()  # far from every joint and limb

    writer = TensorBoardWriter(tmp_path, enabled=True)
    assert writer.active
    torch.manual_seed(0)
    model = TinyPose()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, _batches(2), JointsMSELoss(True), opt, "cpu", epoch=0, progress=False, print_freq=1,
                    writer=writer, skeleton=[(0, 1)], image_every=1)  # fmt: skip
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {"train_loss", "train_acc"} <= set(acc.Tags()["scalars"])
    assert len(acc.Scalars("train_loss")) == 2
    assert "train_pred" in acc.Tags()["images"]
    assert not TensorBoardWriter(tmp_path / "off", enabled=False).active
