"""Checkpoint I/O: every form of weights file loads safely; mismatches fail loudly unless partial."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_hrnet
from hrpose.models.weights import (
    CheckpointError,
    LoadReport,
    load_state_dict_file,
    load_weights,
    save_weights,
)

X = torch.randn(1, 3, 64, 48, generator=torch.Generator().manual_seed(0))


def trained(seed: int = 1, num_joints: int = 17) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = tiny_hrnet(num_joints)
    with torch.no_grad():  # non-default BN statistics so that buffers matter too
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                t.normal_(0, 0.1)
    return model.eval()


def out(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(X)


def assert_same_weights(sd: dict, model: torch.nn.Module) -> None:
    ref = model.state_dict()
    assert list(sd) == list(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, suffix):
    src = trained()
    path = save_weights(src, tmp_path / f"sub/model{suffix}")
    dst = tiny_hrnet()
    assert not torch.equal(out(dst), out(src))
    report = load_weights(dst, path)
    assert isinstance(report, LoadReport) and report.complete
    assert len(report.loaded) == len(src.state_dict())
    assert torch.equal(out(dst), out(src))
    assert_same_weights(load_state_dict_file(path), src)  # official key order kept, also in safetensors


def test_pth_is_a_bare_official_state_dict_of_plain_tensors(tmp_path):
    src = trained()
    path = save_weights(torch.nn.DataParallel(src), tmp_path / "final_state.pth")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(raw, OrderedDict)
    assert all(type(v) is torch.Tensor for v in raw.values())
    assert_same_weights(raw, src)
    assert not list(tmp_path.glob("*.tmp"))


def test_module_prefix_is_removed(tmp_path):
    src = trained()
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, tmp_path / "ddp.pth")
    assert_same_weights(load_state_dict_file(tmp_path / "ddp.pth"), src)
    dst = tiny_hrnet()
    load_weights(dst, tmp_path / "ddp.pth")
    assert torch.equal(out(dst), out(src))


def test_official_training_checkpoint_dict(tmp_path):
    src, best = trained(1), trained(2)
    opt = torch.optim.Adam(src.parameters(), lr=1e-3)
    src.train()
    src(X).mean().backward()
    opt.step()
    src.eval()
    torch.save(
        {
            "epoch": 12,
            "model": "pose_hrnet",
            "state_dict": OrderedDict((f"module.{k}", v) for k, v in src.state_dict().items()),
            "best_state_dict": best.state_dict(),
            "perf": 0.71,
            "optimizer": opt.state_dict(),
        },
        tmp_path / "checkpoint.pth",
    )
    assert_same_weights(load_state_dict_file(tmp_path / "checkpoint.pth"), src)
    assert_same_weights(load_state_dict_file(tmp_path / "checkpoint.pth", key="best_state_dict"), best)
    dst = tiny_hrnet()
    load_weights(dst, tmp_path / "checkpoint.pth", key="best_state_dict")
    assert torch.equal(out(dst), out(best))
    with pytest.raises(CheckpointError, match=r"checkpoint\.pth has no key 'ema'.*best_state_dict"):
        load_state_dict_file(tmp_path / "checkpoint.pth", key="ema")


def test_safetensors_recognised_by_magic_whatever_the_suffix(tmp_path):
    src = trained()
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "weights.bin"))
    got = load_state_dict_file(tmp_path / "weights.bin")
    assert set(got) == set(src.state_dict())
    dst = tiny_hrnet()
    load_weights(dst, got)
    assert torch.equal(out(dst), out(src))


def test_17_joint_checkpoint_into_16_joint_model_lists_mismatches(tmp_path):
    path = save_weights(trained(num_joints=17), tmp_path / "coco.pth")
    model = tiny_hrnet(num_joints=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_weights(model, path)
    msg = str(err.value)
    assert "coco.pth" in msg
    assert "final_layer.weight [17, 8, 1, 1] in checkpoint vs [16, 8, 1, 1] in model" in msg
    assert "final_layer.bias [17] in checkpoint vs [16] in model" in msg
    assert "strict=False" in msg and "MODEL.PRETRAINED" in msg and "--partial" not in msg  # no such flag exists
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing loaded


def test_partial_load_takes_everything_that_fits(tmp_path):
    src = trained(num_joints=17)
    path = save_weights(src, tmp_path / "coco.pth")
    model = tiny_hrnet(num_joints=16)
    report = load_weights(model, path, strict=False)
    assert [k for k, _, _ in report.shape_mismatch] == ["final_layer.weight", "final_layer.bias"]
    assert report.missing == [] and report.unexpected == []
    sd, ref = model.state_dict(), src.state_dict()
    assert all(torch.equal(sd[k], ref[k]) for k in report.loaded)
    assert len(report.loaded) == len(ref) - 2


def test_missing_and_unexpected_keys_are_listed(tmp_path):
    sd = trained().state_dict()
    del sd["stage2.0.branches.1.0.conv1.weight"]
    sd["incre_modules.0.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"(?s)missing.*branches\.1\.0\.conv1\.weight.*not in the model.*incre"):
        load_weights(tiny_hrnet(), sd)
    report = load_weights(tiny_hrnet(), sd, strict=False)
    assert report.missing == ["stage2.0.branches.1.0.conv1.weight"]
    assert report.unexpected == ["incre_modules.0.weight"]


def test_old_checkpoints_without_num_batches_tracked_load_strictly():
    src = trained()
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    dst = tiny_hrnet()
    assert load_weights(dst, sd).complete
    assert torch.equal(out(dst), out(src))


class Payload:
    """An arbitrary object: unpickling it needs code, so it must be refused."""

    def __init__(self) -> None:
        self.note = "not a tensor"


class Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_custom_object_is_refused(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"state_dict": trained().state_dict(), "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match=r"custom\.pth contains pickled Python.*for safety.*Payload") as err:
        load_state_dict_file(path)
    assert "weights_only=False" not in str(err.value)  # never advises the one load that would run the code
    assert "safetensors" in str(err.value) and "trust" in str(err.value)
    with pytest.raises(CheckpointError, match="custom.pth"):
        load_weights(tiny_hrnet(), path)


def test_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        pickle.dump({"w": Exploit(str(marker))}, f, protocol=2)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_state_dict_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, content",
    [("notes.pth", b"hello, I am a text file\n"), ("empty.pt", b""), ("ann.json", b'{"images": []}'),
     ("noise.safetensors", b"\x05\x00\x00\x00\x00\x00\x00\x00{abcdefg")],
)
def test_not_a_checkpoint_is_a_clear_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        load_state_dict_file(tmp_path / name)


@pytest.mark.parametrize("content", [b"garbage\n", b'{"images": []}'])
def test_bytes_that_are_no_pickle_are_not_called_pickled_code(tmp_path, content):
    (tmp_path / "w.pth").write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_file(tmp_path / "w.pth")
    assert "is not a PyTorch checkpoint" in str(e.value) and "pickled Python objects" not in str(e.value)


def test_non_state_dict_contents_are_rejected(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"list\.pth holds a list"):
        load_state_dict_file(tmp_path / "list.pth")
    torch.save({"epoch": 3, "perf": 0.5}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match=r"meta\.pth is a dict but neither.*epoch"):
        load_state_dict_file(tmp_path / "meta.pth")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_state_dict_file(tmp_path / "nope.pth")
