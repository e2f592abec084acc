"""Untrusted files, by fault injection: weights and checkpoints that carry code, configs that carry code.

A malicious pickle's `__reduce__` asks the unpickler to call `os.system("touch MARKER")`. Every hrpose entry
point that reads weights or checkpoints must refuse it with a clear error and the marker must NOT appear. A
control test shows the payload is live: unpickled the unsafe way (in a child process) it does create the
marker. YAML configs with `!!python/...` tags, and `.py` "configs", are refused without running anything.
Finally a static check over src/ (AST, so strings and comments do not count): no eval/exec/compile, no
pickle.load(s)/Unpickler, no yaml.load without SafeLoader, no torch.load without weights_only=True, no
np.load(allow_pickle=True), no os.system / shell=True.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from hrpose.config import ConfigError, get_default_config, load_config
from hrpose.engine import load_checkpoint
from hrpose.models.weights import CheckpointError, load_pretrained, load_state_dict_file, load_weights

SRC = ROOT / "src" / "hrpose"


class Payload:
    """Unpickling this runs `os.system(command)`."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _touch(marker: Path) -> str:
    return f"touch {marker}"


def write_malicious(path: Path, marker: Path, form: str) -> Path:
    """A weights-looking file whose unpickling would create `marker`, in several container forms."""
    evil = Payload(_touch(marker))
    if form == "torch_zip":  # what torch.save writes: a zip with data.pkl
        torch.save({"state_dict": {"w": torch.ones(2)}, "extra": evil}, path)
    elif form == "bare_state_dict":
        torch.save({"conv.weight": torch.ones(2), "conv.bias": evil}, path)
    elif form == "raw_pickle":  # the legacy, non-zip format
        path.write_bytes(pickle.dumps({"state_dict": {"w": evil}}, protocol=2))
    elif form == "named_safetensors":  # a pickle in disguise: .safetensors suffix
        buf = io.BytesIO()
        torch.save({"w": evil}, buf)
        path.write_bytes(buf.getvalue())
    else:
        raise ValueError(form)
    assert not marker.exists()
    return path


FORMS = ["torch_zip", "bare_state_dict", "raw_pickle", "named_safetensors"]


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1))


def test_the_payload_is_live_when_unpickled_unsafely(tmp_path):
    """Control: the same file loaded with weights_only=False (in a child process) does run the code."""
    marker = tmp_path / "PWNED"
    path = write_malicious(tmp_path / "evil.pth", marker, "torch_zip")
    code = f"import torch; torch.load({str(path)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert marker.exists()


@pytest.mark.parametrize("form", FORMS)
def test_weights_loaders_refuse_code_and_run_nothing(tmp_path, form):
    marker = tmp_path / "PWNED"
    suffix = ".safetensors" if form == "named_safetensors" else ".pth"
    path = write_malicious(tmp_path / f"evil{suffix}", marker, form)
    with pytest.raises(CheckpointError, match="evil"):
        load_state_dict_file(path)
    with pytest.raises(CheckpointError, match="evil"):
        load_weights(_model(), path)
    with pytest.raises(CheckpointError, match="evil"):
        load_pretrained(_model(), path)
    with pytest.raises(RuntimeError, match=r"evil.*weights_only=True"):
        load_checkpoint(path)
    assert not marker.exists()


def test_refusal_message_says_why_and_how_to_convert(tmp_path):
    marker = tmp_path / "PWNED"
    path = write_malicious(tmp_path / "evil.pth", marker, "torch_zip")
    with pytest.raises(CheckpointError) as info:
        load_state_dict_file(path)
    msg = str(info.value)
    assert "pickled Python objects or code" in msg and "weights_only=True" in msg and "could run that code" in msg
    assert "weights_only=False" not in msg and ".safetensors" in msg  # never advises unsafe loading
    assert "posix.system" in msg or "os.system" in msg  # the offending global is named
    assert not marker.exists()


def test_hrpose_train_auto_resume_refuses_a_malicious_checkpoint(tmp_path):
    """A planted output/.../checkpoint.pth with code: `train` stops before training and runs nothing."""
    from helpers import resnet_exp_dir, tiny_resnet_config
    from hrpose.engine import train

    cfg_file = tiny_resnet_config(tmp_path)
    exp_dir = resnet_exp_dir(cfg_file)
    exp_dir.mkdir(parents=True)
    marker = tmp_path / "PWNED"
    write_malicious(exp_dir / "checkpoint.pth", marker, "torch_zip")
    with pytest.raises(RuntimeError, match=r"checkpoint.pth with torch.load\(weights_only=True\)"):
        train(load_config(cfg_file), cfg_file)
    assert not marker.exists()
    assert not (exp_dir / "final_state.pth").exists()


def test_inference_refuses_malicious_weights(tmp_path):
    from hrpose.inference import PoseEstimator

    marker = tmp_path / "PWNED"
    path = write_malicious(tmp_path / "evil.pth", marker, "bare_state_dict")
    cfg = load_config(ROOT / "experiments" / "synthetic" / "w16_128x96_synth.yaml", freeze=False)
    with pytest.raises(CheckpointError, match="evil.pth"):
        PoseEstimator.from_config(cfg, path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"\x00" * 64,
        b"PK\x03\x04 not really a zip",
        struct.pack("<Q", 2**60) + b"{}",  # safetensors header longer than the file
        struct.pack("<Q", 5) + b"{nope",  # safetensors header that is not JSON
        b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01cbuiltins\neval\nq\x02X\x04\x00\x00\x001+1q\x03\x85q\x04Rq\x05s.",
    ],
)
def test_corrupt_or_hand_made_weights_are_refused_with_checkpoint_error(tmp_path, content):
    for suffix in (".pth", ".safetensors"):
        path = tmp_path / f"bad{suffix}"
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=f"bad{suffix}"):
            load_state_dict_file(path)


def test_truncated_torch_checkpoint_is_refused(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"epoch": 1, "state_dict": {"w": torch.ones(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_state_dict_file(path)
    with pytest.raises(RuntimeError, match="cut.pth.*truncated"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------------------------------
# configs are data


@pytest.mark.parametrize(
    "yaml_text",
    [
        'GPUS: !!python/object/apply:os.system ["touch {marker}"]\n',
        "TRAIN:\n  LR: !!python/object/apply:os.system\n    args: ['touch {marker}']\n",
        "MODEL: !!python/object/new:os.system ['touch {marker}']\n",
        "PRINT_FREQ: !!python/name:os.system\n",
        "!!python/object/apply:os.system ['touch {marker}']\n",
    ],
)
def test_yaml_with_python_tags_is_refused_by_the_config_loader(tmp_path, yaml_text):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml_text.format(marker=marker))
    expected = r"evil.yaml is not valid YAML for hrpose: the tag !!python/\S+ is not allowed.*plain data"
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    assert not marker.exists()


def test_python_config_file_is_not_executed(tmp_path):
    """yacs would exec a .py config; hrpose reads every config file as YAML data."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.py"
    path.write_text(f"import os\nos.system('touch {marker}')\n")
    with pytest.raises(ConfigError, match="evil.py"):
        load_config(path)
    assert not marker.exists()


def test_hrpose_train_cli_refuses_a_malicious_config(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.yaml"
    path.write_text(f'GPUS: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = subprocess.run([sys.executable, "-m", "hrpose.cli", "train", "--cfg", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert proc.returncode != 0
    assert "!!python/object/apply:os.system is not allowed" in proc.stderr + proc.stdout
    assert not marker.exists()


def test_config_values_are_never_evaluated(tmp_path):
    """A string that looks like code stays a string (KEY VALUE overrides are literals only)."""
    marker = tmp_path / "PWNED"
    code = f"__import__('os').system('touch {marker}')"
    path = tmp_path / "ok.yaml"
    path.write_text(json.dumps({"DATASET": {"ROOT": code}}))
    cfg = load_config(path, ["DATASET.TEST_SET", code])
    assert cfg.DATASET.TEST_SET == code and cfg.DATASET.ROOT.endswith(code)
    assert not marker.exists()
    assert get_default_config().DATASET.TEST_SET != code


# ---------------------------------------------------------------------------------------------------
# static check: no code-running loaders anywhere in src/


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str = "<src>") -> list[str]:
    """Calls that could run code from data: 'file:line: what'."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        short = name.rsplit(".", 1)[-1]
        problem = ""
        if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "__import__"):
            problem = f"{name}()"
        elif name.startswith(("pickle.", "cPickle.", "dill.", "joblib.")) and short in ("load", "loads", "Unpickler"):
            problem = f"{name}()"
        elif name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
            problem = f"{name}()"
        elif name == "yaml.load":
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or "Safe" not in _dotted(loader):
                problem = "yaml.load() without SafeLoader"
        elif name == "torch.load" and not _is_const(_kw(node, "weights_only"), True):
            problem = "torch.load() without weights_only=True"
        elif (
            name in ("np.load", "numpy.load")
            and not _is_const(_kw(node, "allow_pickle"), False)
            and _kw(node, "allow_pickle") is not None
        ):
            problem = f"{name}(allow_pickle=...)"
        elif name in ("os.system", "os.popen"):
            problem = f"{name}()"
        elif name.startswith("subprocess.") and _is_const(_kw(node, "shell"), True):
            problem = f"{name}(shell=True)"
        if problem:
            found.append(f"{filename}:{node.lineno}: {problem}")
    return found


def test_static_check_catches_each_pattern():
    bad = """
import pickle, yaml, torch, numpy as np, os, subprocess
eval("1")
exec("x = 1")
pickle.load(f)
pickle.loads(b)
yaml.load(s)
yaml.load(s, Loader=yaml.FullLoader)
yaml.unsafe_load(s)
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
os.system("ls")
subprocess.run("ls", shell=True)
"""
    assert len(unsafe_calls(bad)) == 12
    good = """
model.eval()
yaml.safe_load(s)
yaml.load(s, Loader=yaml.SafeLoader)
torch.load(p, map_location="cpu", weights_only=True)
np.load(p)
np.load(p, allow_pickle=False)
subprocess.run(["ls"])
msg = "torch.load(p, weights_only=False) is what you would run if you trusted it"
"""
    assert unsafe_calls(good) == []


def test_src_never_evaluates_or_unpickles_data():
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 20
    found = [hit for f in files for hit in unsafe_calls(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], "code-running loaders in src/:\n" + "\n".join(found)
