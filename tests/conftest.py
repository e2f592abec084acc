"""Shared paths and fixtures. `../shared` beside the repo root holds real data and the golden files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"
DATA = SHARED / "data"


def python_with_sigint(*args: str) -> list[str]:
    """argv for `python ARGS...` whose SIGINT is the default (so Python turns Ctrl-C into KeyboardInterrupt).

    A shell that starts the suite as a background job (`bash .ci/run &`) hands it SIGINT ignored, every child
    inherits that, and Python leaves an inherited SIG_IGN alone (nohup's contract): a Ctrl-C test would then
    test nothing. The `-c` step puts the default back and execs the real command."""
    reset = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    return [sys.executable, "-c", reset, *args]


def golden_json(name: str):
    return json.loads((GOLDEN / name).read_text())


def golden_npz(name: str):
    return np.load(GOLDEN / name, allow_pickle=False)


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        raise FileNotFoundError(f"golden fixtures not found at {GOLDEN}: tests need ../shared beside the repo")
    return GOLDEN


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def mini_coco(tmp_path: Path, n_images: int) -> Path:
    """A COCO-layout dataset in `tmp_path/coco` with coco-mini's first `n_images` images that have keypoints."""
    src = DATA / "coco-mini"
    ann = json.loads((src / "annotations" / "person_keypoints_train2017.json").read_text())
    with_kp = sorted({a["image_id"] for a in ann["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]})
    keep = set(with_kp[:n_images])
    ann["images"] = [im for im in ann["images"] if im["id"] in keep]
    ann["annotations"] = [a for a in ann["annotations"] if a["image_id"] in keep]
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "person_keypoints_train2017.json").write_text(json.dumps(ann))
    (root / "images").mkdir()
    (root / "images" / "train2017").symlink_to(src / "images" / "train2017")
    return root


def install_oracle_model(monkeypatch, reference, targets, targets_mirrored) -> list[tuple[int, bool]]:
    """Make `hrpose.models.build_model` return models whose forward answers each crop with its true heatmaps.

    `reference (N, 3, H, W)`: the test split's crops; `targets[i]` / `targets_mirrored[i]`: heatmaps encoded
    from sample i's ground truth, plain and mirrored. Weights still load strictly; the network is not run.
    Returns the list the forward appends `(sample index, mirrored)` to, so a test can check the flip pass ran.
    """
    import torch

    import hrpose.models

    seen: list[tuple[int, bool]] = []

    def oracle_forward(x):
        out = []
        for crop in x:
            d_plain = (reference - crop).abs().flatten(1).amax(1)
            d_mirror = (reference.flip(3) - crop).abs().flatten(1).amax(1)
            mirrored = bool(d_mirror.min() < d_plain.min())
            d = d_mirror if mirrored else d_plain
            i = int(d.argmin())
            assert float(d[i]) < 1e-5, "the engine fed a crop that matches no test sample"
            seen.append((i, mirrored))
            out.append(torch.as_tensor((targets_mirrored if mirrored else targets)[i]))
        return torch.stack(out)

    original_build = hrpose.models.build_model

    def oracle_build(cfg, is_train=False):
        model = original_build(cfg, is_train=is_train)
        model.forward = oracle_forward
        return model

    monkeypatch.setattr(hrpose.models, "build_model", oracle_build)
    return seen


def pytest_collection_modifyitems(config, items):
    """`network` tests (real model-zoo downloads) run only when asked for by name: `-m network`."""
    if "network" in (config.option.markexpr or ""):
        return
    kept = [i for i in items if i.get_closest_marker("network") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("network") is not None])
        items[:] = kept


def requires_capability(what: str):
    """A skip mark for a test that needs `what` ("bf16", "fusion", "cuda", "cuda-bf16", "avx512", "amx", ...):
    it skips, with the probe's reason, only where `hrpose.runtime.capabilities.probe()` says this machine (as capped by
    ONEDNN_MAX_CPU_ISA / ATEN_CPU_CAPABILITY) lacks it; on a machine that has it the test always runs."""
    from hrpose.runtime.capabilities import probe

    why = probe().missing(what)
    return pytest.mark.skipif(bool(why), reason=f"needs {what}: {why}")


# ---------------------------------------------------------------------------------------------------------
# fixtures shared by several modules (plain helpers: tests/helpers.py)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """(config path, weights path, model): the tiny pose_resnet of `helpers.TINY_YAML` with golden-fill
    weights (seed 5), saved as safetensors; for `hrpose predict --cfg ... --weights ...`."""
    from helpers import TINY_YAML, fill_module
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights

    d = tmp_path_factory.mktemp("model")
    cfg_path = d / "tiny.yaml"
    cfg_path.write_text(TINY_YAML)
    model = build_model(load_config(cfg_path))
    fill_module().fill_(model, 5)
    return str(cfg_path), str(save_weights(model, d / "tiny.safetensors")), model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A folder with tiny.yaml and tiny.safetensors (golden-fill seed 3) and an empty tmp/: what the
    serve tests serve."""
    from helpers import TINY_YAML, fill_module
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights

    d = tmp_path_factory.mktemp("serve")
    (d / "tiny.yaml").write_text(TINY_YAML)
    model = build_model(load_config(d / "tiny.yaml"))
    fill_module().fill_(model, 3)
    save_weights(model, d / "tiny.safetensors")
    (d / "tmp").mkdir()
    return d


@pytest.fixture()
def world(tmp_path, monkeypatch):
    """An offline cache holding the default pose model (tiny, MMPose 1.x layout) and the default detector."""
    import dataclasses
    import hashlib
    from collections import OrderedDict

    import cv2
    import torch

    from helpers import TINY_BGR_YAML, end2end_graph, fill_module
    from hrpose import zoo
    from hrpose.config import load_config
    from hrpose.models import build_model
    from hrpose.models.weights import save_weights

    home = tmp_path / "home"
    monkeypatch.setenv("HRPOSE_HOME", str(home))
    monkeypatch.setenv("HRPOSE_OFFLINE", "1")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(TINY_BGR_YAML)
    model = build_model(load_config(cfg_path))
    fill_module().fill_(model, 5)
    own = save_weights(model, tmp_path / "tiny_own.safetensors")  # our layout, for the reference run

    entry = zoo.get_entry(zoo.DEFAULT_POSE_MODEL)
    head = ("deconv_layers.", "final_layer.")
    sd = model.state_dict()
    state = OrderedDict((("head." if k.startswith(head) else "backbone.") + k, v) for k, v in sd.items())
    cached = home / "pose" / entry.filename
    cached.parent.mkdir(parents=True)
    torch.save({"meta": {"mmengine_version": "0.8.4"}, "state_dict": state}, cached)
    digest = hashlib.sha256(cached.read_bytes()).hexdigest()
    monkeypatch.setitem(zoo.REGISTRY, entry.name,
                        dataclasses.replace(entry, config=str(cfg_path), sha256=digest))  # fmt: skip
    end2end_graph(home / "detector" / zoo.DEFAULT_DETECTOR / "end2end.onnx")

    # the photo: a real one, its top-left corner red so that the test detector's first box scores 0.9
    image = cv2.imread(str(DATA / "samples" / "coco" / "000000000785.jpg"))
    image[:60, :60] = (0, 0, 230)
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), image)
    monkeypatch.chdir(tmp_path)
    return {"home": home, "cfg": cfg_path, "own": own, "photo": photo, "image": image}


@pytest.fixture(scope="session", autouse=True)
def _private_onnx_cache(tmp_path_factory):
    """`--backend auto`'s ONNX export cache (`hrpose.runtime.onnx_cache`) in a folder of this test session, not
    the user's."""
    import os

    old = os.environ.get("HRPOSE_ONNX_CACHE")
    os.environ["HRPOSE_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield
    if old is None:
        os.environ.pop("HRPOSE_ONNX_CACHE", None)
    else:
        os.environ["HRPOSE_ONNX_CACHE"] = old


@pytest.fixture(scope="module")
def tiny_pose(tmp_path_factory):
    """(config path, config, model): the tiny pose_resnet of `helpers.TINY_YAML`, golden-fill seed 3, eval mode."""
    from helpers import TINY_YAML, fill_module
    from hrpose.config import load_config
    from hrpose.models import build_model

    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(TINY_YAML)
    cfg = load_config(path)
    model = build_model(cfg)
    fill_module().fill_(model, 3)
    return path, cfg, model.eval()
