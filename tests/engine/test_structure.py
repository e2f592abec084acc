"""The explicit engine: train_step / train_one_epoch / build_parts / fit, fakes injected by parameter, and
imports that go one way (train uses evaluate, never the reverse)."""

from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT
from helpers import TINY_RESNET_END_EPOCH as END_EPOCH
from helpers import TinyPose
from helpers import resnet_exp_dir as _exp_dir
from helpers import tiny_batches as _batches
from helpers import tiny_resnet_config as _tiny_config
from hrpose.config import load_config
from hrpose.engine import NonFiniteLossError, load_checkpoint, train, train_one_epoch
from hrpose.engine.train import StepResult, TrainParts, train_step
from hrpose.losses import JointsMSELoss

ENGINE = ROOT / "src" / "hrpose" / "engine"


# ----------------------------------------------------------------------------------------------------
# the step


def _reference_step(model: nn.Module, batch, lr: float) -> tuple[float, list[torch.Tensor]]:
    """What one plain SGD step does, written out: the loss before the step and the weights after it."""
    model = copy.deepcopy(model)
    x, t, w, _ = batch
    loss = JointsMSELoss(True)(model(x).float(), t, w)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    return float(loss.detach()), [p.detach().clone() for p in model.parameters()]


def test_train_step_returns_the_criterion_loss_and_takes_one_optimizer_step():
    torch.manual_seed(0)
    model = TinyPose()
    batch = _batches(1)[0]
    want_loss, want_weights = _reference_step(model, batch, lr=0.5)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, t, w, _ = batch
    res = train_step(model, x, t, w, JointsMSELoss(True), opt)
    assert isinstance(res, StepResult)
    assert res.loss == pytest.approx(want_loss, rel=1e-6) and res.batch == 2
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every weight moved
    for got, want in zip(model.parameters(), want_weights):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)
    assert res.output.shape == (2, 4, 8, 8)
    assert res.acc is not None and 0.0 <= res.acc <= 1.0 and res.acc_count > 0
    assert res.pred is not None and res.pred.shape == (2, 4, 2)


def test_train_step_sums_the_loss_of_every_output_and_can_skip_accuracy():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = TinyPose()
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            y = self.body(x)
            return [y, self.scale * y]

    torch.manual_seed(0)
    model = TwoHeads()
    x, t, w, _ = _batches(1)[0]
    crit = JointsMSELoss(True)
    with torch.no_grad():
        y = model.body(x)
        want = float(crit(y, t, w) + crit(2.0 * y, t, w))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    res = train_step(model, x, t, w, crit, opt, compute_accuracy=False)
    assert res.loss == pytest.approx(want, rel=1e-6)
    assert res.acc is None and res.pred is None and res.acc_count == 0
    assert model.scale.item() != 2.0  # the second output's loss reached its parameter
    torch.testing.assert_close(res.output, 2.0 * y, rtol=1e-5, atol=1e-6)  # the last output is the prediction


def test_train_step_non_finite_loss_raises_before_the_weights_change():
    torch.manual_seed(0)
    model = TinyPose()
    x, t, w, _ = _batches(1)[0]
    x[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteLossError, match=r"at epoch 3, step 9: lower TRAIN.LR"):
        train_step(model, x, t, w, JointsMSELoss(True), opt, epoch=3, step=9)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_train_one_epoch_is_train_step_over_the_batches():
    torch.manual_seed(0)
    a = TinyPose()
    b = copy.deepcopy(a)
    batches = _batches(4)
    crit = JointsMSELoss(True)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    metrics = train_one_epoch(a, batches, crit, opt_a, "cpu", epoch=0, progress=False, print_freq=0)
    losses = [train_step(b, x, t, w, crit, opt_b).loss for x, t, w, _ in batches]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert metrics["iters"] == 4 and metrics["loss"] == pytest.approx(sum(losses) / 4, rel=1e-9)


# ----------------------------------------------------------------------------------------------------
# train(): the parts and the loop, fakes injected by parameter


def test_train_calls_injected_parts_once_per_epoch_with_the_bare_model(tmp_path):
    cfg_file = _tiny_config(tmp_path)
    scores = [0.2, 0.7, 0.4]
    built: list[nn.Module] = []
    epochs: list[dict] = []
    validations: list[dict] = []

    def build_model(cfg, is_train=False):
        from hrpose.models import build_model as real

        assert is_train
        built.append(real(cfg, is_train=is_train))
        return built[-1]

    def fake_epoch(model, loader, criterion, optimizer, device, *, epoch, global_step, **kwargs):
        assert model is built[0] and criterion.__class__.__name__ == "JointsMSELoss"
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)  # a visible "training" step: the checkpoint must hold these weights
        optimizer.step()  # no gradients: changes nothing, but the LR scheduler sees the usual order
        epochs.append({"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "loader": loader})
        return {"loss": 0.5, "acc": 0.25, "samples": 4.0, "iters": 1.0, "seconds": 0.1, "samples_per_s": 40.0,
                "global_step": float(global_step + 1)}  # fmt: skip

    def fake_validate(model, loader, dataset, device, *, step, output_dir, **kwargs):
        assert model is built[0] and Path(output_dir) == _exp_dir(cfg_file)
        validations.append({"step": step, "weights": {k: v.clone() for k, v in model.state_dict().items()}})
        return {"AP": scores[step]}, None  # no perf indicator: train falls back to the table's AP

    result = train(load_config(cfg_file), cfg_file, build_model=build_model, train_one_epoch=fake_epoch,
                   validate=fake_validate)  # fmt: skip
    assert len(built) == 1
    assert [e["epoch"] for e in epochs] == list(range(END_EPOCH)) and [v["step"] for v in validations] == [0, 1, 2]
    assert epochs[0]["loader"] is epochs[1]["loader"]  # one train loader for the run
    assert [e["lr"] for e in epochs] == pytest.approx([1e-3, 1e-3, 1e-4])  # LR_STEP [2]
    assert result["best_perf"] == 0.7 and result["last_perf"] == 0.4 and result["epochs"] == END_EPOCH
    assert [h["perf"] for h in result["history"]] == scores
    exp = _exp_dir(cfg_file)
    ckpt = load_checkpoint(exp / "checkpoint.pth")
    assert ckpt["epoch"] == END_EPOCH and ckpt["best_perf"] == 0.7 and ckpt["global_step"] == END_EPOCH
    best = torch.load(exp / "model_best.pth", weights_only=True)
    for k, v in validations[1]["weights"].items():  # model_best.pth: the weights validated at epoch 1
        assert torch.equal(best[k], v), k
    final = torch.load(exp / "final_state.pth", weights_only=True)
    for k, v in validations[2]["weights"].items():
        assert torch.equal(final[k], v), k


def test_train_parts_names_every_piece_the_loop_uses():
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainParts)}
    assert {"model", "train_model", "criterion", "optimizer", "scheduler", "scaler", "amp_dtype", "train_loader",
            "valid_loader", "valid_dataset", "codec", "device"} <= names  # fmt: skip


# ----------------------------------------------------------------------------------------------------
# imports go one way


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """Every import in `path` as (absolute module, line, inside a function or class)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = "hrpose.engine"
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) not in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
                if not node.module:  # from . import train
                    out += [(f"{base}.{a.name}", node.lineno, id(node) not in top) for a in node.names]
                    continue
            out.append((base, node.lineno, id(node) not in top))
    return out


def test_the_import_reader_sees_relative_and_function_local_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os\nfrom . import train\n\n\ndef f():\n    from .train import x\n    import hrpose.engine.train\n"
    )
    want = [("os", 1, False), ("hrpose.engine.train", 2, False), ("hrpose.engine.train", 6, True),
            ("hrpose.engine.train", 7, True)]  # fmt: skip
    assert sorted(_imports(probe), key=lambda i: i[1]) == want


@pytest.mark.parametrize("module", ["evaluate", "runtime", "checkpoint", "distributed", "logging", "lock"])
def test_engine_modules_below_train_never_import_it(module):
    offending = [(m, line) for m, line, _ in _imports(ENGINE / f"{module}.py") if m.startswith("hrpose.engine.train")]
    assert offending == [], f"engine/{module}.py imports the training loop: {offending}"


def test_runtime_depends_on_no_other_engine_module():
    assert [m for m, _, _ in _imports(ENGINE / "runtime.py") if m.startswith("hrpose")] == []


# lazy on purpose (each says why in a comment): fcntl exists only on POSIX, tensorboard is an optional extra,
# hrpose.models.build_model is looked up at call time because tests replace it
ALLOWED_LOCAL = {("lock.py", "fcntl"), ("logging.py", "torch.utils.tensorboard"), ("evaluate.py", "hrpose.models")}


@pytest.mark.parametrize("module", ["train", "evaluate", "runtime", "checkpoint", "distributed", "logging", "lock"])
def test_engine_imports_are_at_module_level(module):
    local = [(m, line) for m, line, inside in _imports(ENGINE / f"{module}.py")
             if inside and (f"{module}.py", m) not in ALLOWED_LOCAL]  # fmt: skip
    assert local == [], f"engine/{module}.py imports inside functions: {local}"


def test_train_reexports_the_runtime_functions():
    import hrpose.engine
    import hrpose.engine.runtime as runtime

    t = sys.modules["hrpose.engine.train"]  # (hrpose.engine.train is also the name of the function)
    assert t.amp_settings is runtime.amp_settings and t.apply_cudnn_settings is runtime.apply_cudnn_settings
    assert hrpose.engine.seed_everything is runtime.seed_everything
    assert runtime.amp_settings("bf16", torch.device("cpu")) == (torch.bfloat16, False)
