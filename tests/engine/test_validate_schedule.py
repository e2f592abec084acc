"""Training's validation schedule (HRPOSE.VALIDATE_FROM / VALIDATE_EVERY), the seeded training stream's
independence from it, and HRPOSE.TRAIN_THREADS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import mini_coco
from helpers import tiny_hrnet_cfg_dict
from hrpose.config import load_config
from hrpose.engine import load_checkpoint, train
from hrpose.engine.train import should_validate
from hrpose.errors import UserError


def _validated(end: int, start: int = 0, every: int = 1) -> list[int]:
    return [e for e in range(end) if should_validate(e, end, start, every)]


def test_should_validate_keeps_the_last_epoch_and_counts_from_validate_from():
    assert _validated(10) == list(range(10))  # the official default: every epoch
    assert _validated(10, 8) == [8, 9]  # the quick start
    assert _validated(10, 0, 3) == [0, 3, 6, 9]
    assert _validated(10, 5, 2) == [5, 7, 9]
    assert _validated(10, 0, 4) == [0, 4, 8, 9]  # the last epoch although not on the grid
    assert _validated(10, 50) == [9]  # past the end: the last epoch only
    assert _validated(1, 3) == [0]


@pytest.mark.parametrize(("key", "value"), [("VALIDATE_EVERY", 0), ("VALIDATE_FROM", -1), ("TRAIN_THREADS", -2),
                                            ("VALIDATE_EVERY", 1.5)])  # fmt: skip
def test_bad_schedule_keys_are_one_clear_error(tmp_path, key, value):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_hrnet_cfg_dict(tmp_path)))
    with pytest.raises(UserError) as err:
        load_config(cfg_file, [f"HRPOSE.{key}", str(value)])
    assert f"HRPOSE.{key}" in str(err.value) and "int" in str(err.value)  # the key and what it takes


def _cfg(tmp_path: Path, root: Path, name: str, **hrpose: Any) -> Path:
    d = tiny_hrnet_cfg_dict(root, END_EPOCH=4, LR_STEP=[3])
    d["HRPOSE"].update({"DETERMINISTIC": False, "SEED": 0, **hrpose})
    d["OUTPUT_DIR"] = str(tmp_path / name)
    d["LOG_DIR"] = str(tmp_path / name / "log")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_skipped_epochs_are_not_validated_and_model_best_is_among_the_validated(tmp_path):
    root = mini_coco(tmp_path, 3)
    calls: list[int] = []
    perf_of = {0: 0.99, 1: 0.99, 2: 0.7, 3: 0.5}  # epochs 0 and 1 would win, were they validated

    def fake_validate(model: Any, loader: Any, dataset: Any, device: Any, **kw: Any) -> tuple[Any, float]:
        calls.append(int(kw["step"]))
        return {"AP": perf_of[int(kw["step"])]}, perf_of[int(kw["step"])]

    cfg_file = _cfg(tmp_path, root, "run", VALIDATE_FROM=2)
    res = train(load_config(cfg_file), cfg_file, device="cpu", validate=fake_validate)
    assert calls == [2, 3]
    assert res["best_perf"] == 0.7 and res["last_perf"] == 0.5 and res["epochs"] == 4
    assert [h["perf"] for h in res["history"]] == [None, None, 0.7, 0.5]
    exp = Path(res["output_dir"])
    ckpt = load_checkpoint(exp / "checkpoint.pth")
    best = torch.load(exp / "model_best.pth", weights_only=True)
    final = torch.load(exp / "final_state.pth", weights_only=True)
    weights = [k for k, v in final.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert all(torch.equal(best[k], ckpt["best_state_dict"][k]) for k in weights)
    assert not all(torch.equal(best[k], final[k]) for k in weights)  # epoch 2's weights, not the last epoch's
    log = next(exp.glob("run_*_train.log")).read_text()
    assert "epoch 0: not validated" in log and "epoch 1: not validated" in log


def _final_weights(res: dict[str, Any]) -> dict[str, torch.Tensor]:
    state = torch.load(res["final_state"], weights_only=True)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_seeded_training_is_the_same_with_or_without_validation(tmp_path):
    # Validation's loader draws from torch's global RNG; the training loader has its own per-epoch generator,
    # so skipping validation (VALIDATE_FROM) must leave the training stream, and the final weights, unchanged.
    root = mini_coco(tmp_path, 3)
    every = _cfg(tmp_path, root, "every", VALIDATE_FROM=0)
    skip = _cfg(tmp_path, root, "skip", VALIDATE_FROM=3)
    torch.manual_seed(1)
    res_every = train(load_config(every), every, device="cpu")
    torch.manual_seed(2)  # nor on the global RNG state the run starts from (train() seeds it)
    res_skip = train(load_config(skip), skip, device="cpu")
    a, b = _final_weights(res_every), _final_weights(res_skip)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res_every["last_perf"] == res_skip["last_perf"]
    assert [h["train_loss"] for h in res_every["history"]] == [h["train_loss"] for h in res_skip["history"]]


def test_train_threads_applies_while_training_and_is_restored(tmp_path):
    root = mini_coco(tmp_path, 3)
    seen: list[int] = []
    from hrpose.engine.train import train_one_epoch

    def spy(*args: Any, **kw: Any) -> dict[str, float]:
        seen.append(torch.get_num_threads())
        return train_one_epoch(*args, **kw)

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    cfg_file = _cfg(tmp_path, root, "threads", TRAIN_THREADS=want, VALIDATE_FROM=9)
    train(load_config(cfg_file, ["TRAIN.END_EPOCH", "1"]), cfg_file, device="cpu", train_one_epoch=spy)
    assert seen == [want]
    assert torch.get_num_threads() == before
