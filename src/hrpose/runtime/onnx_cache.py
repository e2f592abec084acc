"""A cache of exported, self-checked ONNX graphs, so `--backend auto` exports a checkpoint once, not at every start.

Layout (under ``$HRPOSE_HOME``, see `hrpose.zoo.hrpose_home`)::

    $HRPOSE_HOME/onnx/<Class>-<W>x<H>-<key>.onnx        the graph `hrpose.export.export_onnx` wrote and checked
    $HRPOSE_HOME/onnx/<Class>-<W>x<H>-<key>.onnx.json   its export report and the SHA-256 of the file's bytes

`key` hashes everything the exported file depends on: the model's class and `repr` (its layers' shapes and
strides), every state_dict entry's name, dtype, shape and bytes, the input size, batch mode and opset, and the
versions of torch, onnx, onnxruntime and hrpose (plus the source of `hrpose.export`). Different weights give a
different file; the same weights find theirs without running the exporter.

A file is written to a temporary name in the cache folder and renamed into place after its digest is recorded,
so a reader never sees half a file. A cached file whose bytes do not match the recorded digest, whose record is
missing or unreadable, or that the runtime refuses to load is exported again (with a warning). When the cache
folder cannot be written (read-only home, full disk), the graph is exported to a temporary folder instead, as
before the cache existed (a debug message only). The newest `MAX_ENTRIES` graphs are kept.
``HRPOSE_ONNX_CACHE=<folder>`` puts the cache elsewhere (the test suite points it at a temporary folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

import hrpose
from hrpose import export
from hrpose.export import ExportReport, export_onnx
from hrpose.zoo import hrpose_home

logger = logging.getLogger(__name__)

T = TypeVar("T")
FORMAT = 1  # bump when the cache layout or the key's recipe changes
MAX_ENTRIES = 8  # newest graphs kept (a w32 graph is ~110 MB)
_STALE_TMP_S = 3600.0  # a temporary file older than this is a killed writer's leftover


def cache_dir() -> Path:
    """``$HRPOSE_ONNX_CACHE`` if set, else ``$HRPOSE_HOME/onnx`` (whether or not it exists)."""
    env = os.environ.get("HRPOSE_ONNX_CACHE")
    return Path(env).expanduser() if env else hrpose_home() / "onnx"


def _versions() -> str:
    import onnx  # optional (the onnx extra): only where a graph is exported
    import onnxruntime

    source = hashlib.sha256(Path(export.__file__).read_bytes()).hexdigest()[:16]
    return f"torch {torch.__version__}; onnx {onnx.__version__}; onnxruntime {onnxruntime.__version__}; " \
           f"hrpose {hrpose.__version__} export.py {source}; format {FORMAT}"  # fmt: skip


def model_key(model: nn.Module, input_size_wh: tuple[int, int], *, dynamic_batch: bool = True, opset: int = 17) -> str:
    """The hex SHA-256 that names `model`'s exported graph in the cache (see the module doc)."""
    h = hashlib.sha256()
    head = (f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}\n{int(input_size_wh[0])}x"
            f"{int(input_size_wh[1])} dynamic_batch={dynamic_batch} opset={opset}\n{_versions()}\n")  # fmt: skip
    h.update(head.encode())
    for name, t in model.state_dict().items():
        h.update(f"{name} {t.dtype} {tuple(t.shape)}\n".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _entry_name(model: nn.Module, input_size_wh: tuple[int, int], key: str) -> str:
    return f"{type(model).__name__}-{int(input_size_wh[0])}x{int(input_size_wh[1])}-{key[:32]}.onnx"


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read_cached(path: Path) -> ExportReport:
    """The report of the cached file at `path`; ValueError/OSError when its bytes do not match the record."""
    rec = json.loads(_record(path).read_text())
    digest = _file_digest(path)
    if digest != rec["sha256"]:
        raise ValueError(f"its SHA-256 is {digest[:12]}..., the record says {str(rec['sha256'])[:12]}...")
    return ExportReport(path, int(rec["opset"]), bool(rec["dynamic_batch"]), float(rec["max_abs_err"]),
                        float(rec["max_abs_ref"]), bool(rec["keypoints_equal"]))  # fmt: skip


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()


def _prune(folder: Path, keep: Path) -> None:
    """Keep the newest `MAX_ENTRIES` graphs (by last use) and drop killed writers' temporary files."""
    now = time.time()
    for tmp in folder.glob(".*.tmp*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > _STALE_TMP_S:
                tmp.unlink()
    entries = []
    for p in folder.glob("*.onnx"):
        if p.name.startswith("."):  # another process's graph being written (pathlib's * matches dotfiles)
            continue
        with contextlib.suppress(OSError):
            entries.append((p.stat().st_mtime, p))
    entries.sort(reverse=True)
    for _, p in entries[MAX_ENTRIES:]:
        if p != keep:
            _remove(p, _record(p))


def _export_into(folder: Path, name: str, model: nn.Module, input_size_wh: tuple[int, int], dynamic_batch: bool,
                 opset: int) -> ExportReport:  # fmt: skip
    """Export `model` to `folder/name`: a temporary name first, the record, then the rename (atomic)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.onnx", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    final = folder / name
    try:
        report = export_onnx(model, tmp, input_size_wh, dynamic_batch=dynamic_batch, opset=opset)
        record = {"sha256": _file_digest(tmp), "opset": report.opset, "dynamic_batch": report.dynamic_batch,
                  "max_abs_err": report.max_abs_err, "max_abs_ref": report.max_abs_ref,
                  "keypoints_equal": report.keypoints_equal, "model": type(model).__name__,
                  "input_size_wh": [int(input_size_wh[0]), int(input_size_wh[1])], "versions": _versions()}  # fmt: skip
        fd, rec_tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.json", dir=folder)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
        os.replace(rec_tmp, _record(final))
        os.replace(tmp, final)
    finally:
        _remove(tmp)
    return dataclasses.replace(report, path=final)


@contextlib.contextmanager
def _uncached(model: nn.Module, input_size_wh: tuple[int, int], dynamic_batch: bool, opset: int
              ) -> Iterator[ExportReport]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hrpose-auto-") as tmp:
        yield export_onnx(model, Path(tmp) / "model.onnx", input_size_wh,
                          dynamic_batch=dynamic_batch, opset=opset)  # fmt: skip


def load_exported(
    model: nn.Module,
    input_size_wh: tuple[int, int],
    load: Callable[[ExportReport], T],
    *,
    dynamic_batch: bool = True,
    opset: int = 17,
) -> T:
    """`load(report)` on `model`'s exported, self-checked ONNX graph: from the cache when it is there (no export),
    else exported (`hrpose.export.export_onnx`, on a copy of `model`) into the cache first. `report.path` is
    only valid during `load` (the runtime reads the graph there). A cached file that fails its digest or that
    `load` refuses is exported again, with a warning; `ExportError` from the exporter propagates."""
    size = (int(input_size_wh[0]), int(input_size_wh[1]))
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as e:
        logger.debug("ONNX export cache %s not usable (%s): exporting to a temporary folder", folder, e)
        with _uncached(model, size, dynamic_batch, opset) as report:
            return load(report)
    key = model_key(model, size, dynamic_batch=dynamic_batch, opset=opset)
    path = folder / _entry_name(model, size, key)
    if path.exists():
        try:
            report = _read_cached(path)
            result = load(report)
        except Exception as e:  # a corrupt or unloadable file: export it again
            logger.warning("cached ONNX graph %s is unusable (%s: %s); exporting the model again", path,
                           type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else "")  # fmt: skip
            _remove(path, _record(path))
        else:
            with contextlib.suppress(OSError):
                os.utime(path)  # last use, for pruning
            logger.debug("ONNX export cache hit: %s", path)
            return result
    try:
        report = _export_into(folder, path.name, model, size, dynamic_batch, opset)
    except OSError as e:  # full disk, permissions changed under us: the old way
        logger.debug("ONNX export cache %s not writable (%s): exporting to a temporary folder", folder, e)
        with _uncached(model, size, dynamic_batch, opset) as report:
            return load(report)
    _prune(folder, keep=path)
    return load(report)


def export_onnx_cached(model: nn.Module, path: str | os.PathLike[str], input_size_wh: tuple[int, int], *,
                       dynamic_batch: bool = False, opset: int = 17) -> ExportReport:  # fmt: skip
    """`hrpose.export.export_onnx` through the cache: the checked graph copied to `path` (exported only when the
    cache does not hold this model's graph). The report names `path`."""
    path = Path(path)

    def copy_out(report: ExportReport) -> ExportReport:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(report.path, tmp)
            os.replace(tmp, path)
        finally:
            _remove(Path(tmp))
        return dataclasses.replace(report, path=path)

    return load_exported(model, input_size_wh, copy_out, dynamic_batch=dynamic_batch, opset=opset)


def cache_usage() -> tuple[Path, int, int]:
    """(the cache folder, number of cached graphs, their total bytes with records)."""
    folder = cache_dir()
    files, total = 0, 0
    if folder.is_dir():
        for p in folder.iterdir():
            with contextlib.suppress(OSError):
                if p.is_file():
                    total += p.stat().st_size
                    files += p.suffix == ".onnx" and not p.name.startswith(".")
    return folder, files, total
