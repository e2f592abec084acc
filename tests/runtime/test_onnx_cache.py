"""`--backend auto`'s ONNX export cache (`hrpose.runtime.onnx_cache`): a second start does not export; different
weights,
a different file; a corrupt or unloadable file is exported again with a warning; an unwritable folder falls back
to a temporary one without a word."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from helpers import tiny_resnet_config as _tiny_config
from hrpose.config import load_config
from hrpose.models import build_model
from hrpose.runtime import make_backend, onnx_cache
from hrpose.runtime.onnxruntime_backend import OnnxRuntimeBackend

pytestmark = pytest.mark.portability

SIZE = (64, 64)  # (w, h) of the tiny pose_resnet-18 of the training tests (exports in a second or two)


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    return load_config(_tiny_config(tmp_path_factory.mktemp("cfg")))


@pytest.fixture()
def cache(tmp_path, monkeypatch, cfg):
    _CFG[:] = [cfg]
    folder = tmp_path / "cache"
    monkeypatch.setenv("HRPOSE_ONNX_CACHE", str(folder))
    return folder


@pytest.fixture()
def exports(monkeypatch):
    """Counts the exporter's runs (it still runs)."""
    calls: list[str] = []
    real = onnx_cache.export_onnx

    def counting(model, path, *args, **kwargs):
        calls.append(str(path))
        return real(model, path, *args, **kwargs)

    monkeypatch.setattr(onnx_cache, "export_onnx", counting)
    return calls


_CFG: list = []


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(_CFG[0]).eval()
    with torch.no_grad():  # random non-trivial BatchNorm statistics, so the graphs differ in more than init
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model


def _x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((2, 3, SIZE[1], SIZE[0])).astype(np.float32)


def _ref(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(_x())).numpy()


def _onnx_files(folder):
    return sorted(p for p in folder.glob("*.onnx"))


def test_second_start_loads_the_cached_graph_without_exporting(cache, exports):
    model = _model()
    first = make_backend("onnxruntime", model, input_size=SIZE)
    assert len(exports) == 1
    files = _onnx_files(cache)
    assert len(files) == 1 and files[0].name.startswith("PoseResNet-64x64-")
    record = json.loads(files[0].with_name(files[0].name + ".json").read_text())
    assert record["keypoints_equal"] is True and len(record["sha256"]) == 64
    assert not [p for p in cache.iterdir() if ".tmp" in p.name]  # no temporary file left behind

    again = make_backend("onnxruntime", _model(), input_size=SIZE)  # a new model object, same weights: same file
    assert len(exports) == 1, "the second start exported again"
    assert isinstance(again, OnnxRuntimeBackend) and _onnx_files(cache) == files
    ref = _ref(model)
    for backend in (first, again):
        np.testing.assert_allclose(backend(_x()), ref, atol=1e-4 * np.abs(ref).max())


def test_different_weights_or_input_size_get_their_own_file(cache, exports):
    a, b = _model(0), _model(1)
    key_a = onnx_cache.model_key(a, SIZE)
    assert key_a == onnx_cache.model_key(_model(0), SIZE)
    assert key_a != onnx_cache.model_key(b, SIZE)
    assert key_a != onnx_cache.model_key(a, (96, 128))
    with torch.no_grad():  # one number changed in one buffer is another model
        c = _model(0)
        c.final_layer.bias[0] += 1e-6
    assert key_a != onnx_cache.model_key(c, SIZE)

    got_a = make_backend("onnxruntime", a, input_size=SIZE)(_x())
    got_b = make_backend("onnxruntime", b, input_size=SIZE)(_x())
    assert len(exports) == 2 and len(_onnx_files(cache)) == 2
    tol = 1e-4 * np.abs(_ref(a)).max()
    np.testing.assert_allclose(got_a, _ref(a), atol=tol)
    np.testing.assert_allclose(got_b, _ref(b), atol=1e-4 * np.abs(_ref(b)).max())
    assert np.abs(got_a - got_b).max() > 100 * tol  # the second model did not run the first one's graph


@pytest.mark.parametrize("damage", ["truncated", "flipped", "no record", "garbage with a matching record"])
def test_a_corrupt_cached_file_is_exported_again_with_a_warning(cache, exports, caplog, damage):
    model = _model()
    make_backend("onnxruntime", model, input_size=SIZE)
    (path,) = _onnx_files(cache)
    record = path.with_name(path.name + ".json")
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # one weight byte: ONNX Runtime would load it and answer wrong
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "no record":
        record.unlink()
    else:  # the digest matches, the runtime refuses it
        path.write_bytes(b"not an onnx graph")
        rec = json.loads(record.read_text())
        rec["sha256"] = onnx_cache._file_digest(path)
        record.write_text(json.dumps(rec))
    with caplog.at_level(logging.WARNING, logger="hrpose.runtime.onnx_cache"):
        backend = make_backend("onnxruntime", model, input_size=SIZE)
    assert len(exports) == 2, "the damaged file was used instead of exporting again"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(path) in warned[0] and "exporting the model again" in warned[0]
    ref = _ref(model)
    np.testing.assert_allclose(backend(_x()), ref, atol=1e-4 * np.abs(ref).max())
    assert _onnx_files(cache) == [path] and record.is_file()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hrpose.runtime.onnx_cache"):
        make_backend("onnxruntime", model, input_size=SIZE)  # repaired: a plain hit
    assert len(exports) == 2 and not caplog.records


def test_an_unwritable_cache_folder_falls_back_to_a_temporary_one_silently(tmp_path, monkeypatch, exports, caplog, cfg):
    _CFG[:] = [cfg]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HRPOSE_ONNX_CACHE", str(blocker / "cache"))  # cannot be made: its parent is a file
    model = _model()
    with caplog.at_level(logging.DEBUG, logger="hrpose.runtime.onnx_cache"):
        backend = make_backend("onnxruntime", model, input_size=SIZE)
    assert len(exports) == 1 and not exports[0].startswith(str(blocker))
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(said) == 1 and said[0][0] == logging.DEBUG and "temporary folder" in said[0][1]
    ref = _ref(model)
    np.testing.assert_allclose(backend(_x()), ref, atol=1e-4 * np.abs(ref).max())
    make_backend("onnxruntime", model, input_size=SIZE)
    assert len(exports) == 2  # nothing cached, so every start exports (the behaviour before the cache)


def test_export_onnx_cached_copies_the_checked_graph_and_keeps_only_the_newest(cache, exports, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_cache, "MAX_ENTRIES", 2)
    models = [_model(i) for i in range(3)]
    out = tmp_path / "out" / "model.onnx"
    report = onnx_cache.export_onnx_cached(models[0], out, SIZE, dynamic_batch=True)
    assert report.path == out and out.is_file() and report.keypoints_equal and len(exports) == 1
    (cached,) = _onnx_files(cache)
    assert out.read_bytes() == cached.read_bytes()
    out.unlink()
    report = onnx_cache.export_onnx_cached(models[0], out, SIZE, dynamic_batch=True)
    assert len(exports) == 1 and out.read_bytes() == cached.read_bytes()
    writing = cache / ".PoseResNet-64x64-another-process.abc.tmp.onnx"  # a graph another process is writing
    writing.write_bytes(b"partial")
    for m in models[1:]:
        onnx_cache.export_onnx_cached(m, out, SIZE, dynamic_batch=True)
    assert len(exports) == 3
    kept = _onnx_files(cache)
    kept = [p for p in kept if not p.name.startswith(".")]
    assert len(kept) == 2 and cached not in kept  # the least recently used graph went
    assert writing.is_file()  # not counted, not pruned (only a stale one, over an hour old, is removed)
    writing.unlink()
    folder, n, total = onnx_cache.cache_usage()
    assert folder == cache and n == 2 and total == sum(p.stat().st_size for p in cache.iterdir())
