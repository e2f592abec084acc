"""Where a zoo file can come from, in order, and how each source's bytes are checked.

A *source* is one URL that serves either the entry's file itself or (detectors) the zip holding it. Sources are
tried in order: ``HRPOSE.MODEL_MIRROR`` (config), ``$HRPOSE_MIRROR``, then the registry's URLs (the publisher
first, then public mirrors of the same bytes). Every source's bytes must pass the entry's checks:

- the full SHA-256 where one is published, else the 8-hex prefix in the file name, and the size where known;
- a mirror written by ``hrpose models mirror`` carries ``manifest.json`` (SHA-256 and size of every file): a file
  from that mirror must match its manifest line as well;
- files with no published digest (the detectors' ONNX, most Hugging Face copies of the official files): the SHA-256
  of the first verified fetch is recorded in ``$HRPOSE_HOME/trust.json`` (trust on first use) and every later
  fetch, from any source, must match it; ONNX files must also have the expected graph structure.

TLS certificates are always verified (the standard library's default context; ``SSL_CERT_FILE`` names another CA
bundle). Nothing here turns verification off.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrpose.errors import UserError
from hrpose.zoo.home import hrpose_home
from hrpose.zoo.net import DownloadError, _resolve
from hrpose.zoo.registry import ZooEntry

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "hrpose-mirror/1"
MAX_MANIFEST_BYTES = 1 << 20
TRUST_FILE = "trust.json"
ONNX_OPSETS = (7, 21)  # the default-domain opsets ONNX Runtime runs and MMDeploy exported with (11)


@dataclass(frozen=True)
class Source:
    """One place to get an entry from."""

    url: str
    label: str  # who serves it, e.g. "download.openmmlab.com" or "HRPOSE_MIRROR"
    archive: bool  # True: the URL serves the zip that holds the entry's file; False: the file itself
    manifest: dict[str, Any] | None = None  # a mirror's manifest line for this file (sha256, size)
    manifest_error: str = ""  # why this mirror's manifest could not be used (the source then fails)

    def describe(self) -> str:
        return f"{self.label} <{self.url}>"


def host_label(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        return "file mirror"
    host = parsed.hostname or url
    if host == "huggingface.co":
        parts = [p for p in parsed.path.split("/") if p]
        repo = "/".join(parts[1:3] if parts[:1] == ["datasets"] else parts[:2])
        return f"huggingface.co ({repo})"
    return host


def checks(entry: ZooEntry, archive: bool) -> str:
    """In words: how the bytes one source delivers for ``entry`` are checked."""
    if archive:
        return "zip CRC-32 of the member; " + entry.integrity
    return entry.integrity


# ----------------------------------------------------------------------------------------------------
# mirrors and their manifests

_manifests: dict[str, tuple[dict[str, Any] | None, str]] = {}


def mirror_bases(mirror: str | None) -> list[tuple[str, str]]:
    """(setting, base URL) of the configured mirrors, config key first; UserError for a malformed one."""
    out: list[tuple[str, str]] = []
    for setting, base in (("HRPOSE.MODEL_MIRROR", mirror), ("HRPOSE_MIRROR", os.environ.get("HRPOSE_MIRROR"))):
        base = (base or "").strip()
        if not base:
            continue
        if not base.startswith(("http://", "https://", "file://")):
            raise UserError(
                f"{setting} must be a base URL starting with https://, http:// or file://, got {base!r}; "
                "the file URL is <base>/<file name>"
            )
        base = base.rstrip("/")
        if all(b != base for _, b in out):
            out.append((setting, base))
    return out


def load_manifest(base: str, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """A mirror's manifest.json: (files, "") when read; (None, "") when the mirror has none; (None, why) when bad.

    Read once per process and base URL."""
    if base in _manifests:
        return _manifests[base]
    url = base + "/" + MANIFEST
    result: tuple[dict[str, Any] | None, str]
    try:
        _resolve(url, timeout)  # a resolver that hangs must not hang us
        req = urllib.request.Request(url, headers={"User-Agent": "hrpose (model zoo mirror manifest)"})
        with urllib.request.build_opener().open(req, timeout=timeout) as resp:
            raw = resp.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError(f"over {MAX_MANIFEST_BYTES} bytes")
        doc = json.loads(raw)
        files = doc.get("files") if isinstance(doc, dict) else None
        if doc.get("format") != MANIFEST_FORMAT or not isinstance(files, dict):
            raise ValueError(f"expected an object with \"format\": {MANIFEST_FORMAT!r} and \"files\"")
        result = (files, "")
    except urllib.error.HTTPError as e:
        e.close()
        result = (None, "") if e.code == 404 else (None, f"its {MANIFEST} answered HTTP {e.code}")
    except urllib.error.URLError as e:
        if isinstance(e.reason, FileNotFoundError) or "No such file" in str(e.reason):
            result = (None, "")
        else:
            result = (None, f"its {MANIFEST} could not be read ({e.reason})")
    except DownloadError as e:
        result = (None, f"its {MANIFEST} could not be read ({e})")
    except (OSError, ValueError) as e:
        result = (None, f"its {MANIFEST} is not a valid hrpose mirror manifest ({e})")
    _manifests[base] = result
    return result


def clear_manifest_cache() -> None:
    _manifests.clear()


def sources(entry: ZooEntry, mirror: str | None = None, *, timeout: float = 30.0) -> list[Source]:
    """Every source of ``entry`` in the order they are tried."""
    out: list[Source] = []
    for setting, base in mirror_bases(mirror):
        name = entry.member_filename  # a mirror serves the file itself (for detectors: the bare ONNX)
        files, why = load_manifest(base, timeout)
        line: dict[str, Any] | None = None
        if files is not None:
            got = files.get(name)
            if isinstance(got, dict) and isinstance(got.get("sha256"), str) and isinstance(got.get("size"), int):
                line = got
            else:
                why = f"{name} is not listed in its {MANIFEST}"
        out.append(Source(base + "/" + name, setting, archive=False, manifest=line, manifest_error=why))
    for url in entry.urls:
        if all(s.url != url for s in out):
            out.append(Source(url, host_label(url), archive=entry.is_archive and url.endswith(".zip")))
    return out


# ----------------------------------------------------------------------------------------------------
# trust on first use


def _trust_path() -> Path:
    return hrpose_home() / TRUST_FILE


def _trust_key(entry: ZooEntry) -> str:
    return f"{entry.kind}/{entry.member_filename}"


def _read_trust() -> dict[str, Any]:
    try:
        doc = json.loads(_trust_path().read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def trusted(entry: ZooEntry) -> dict[str, Any] | None:
    """The record of the first verified fetch of ``entry`` ({"sha256", "size", "source", "time"}), if any."""
    rec = _read_trust().get(_trust_key(entry))
    if isinstance(rec, dict) and isinstance(rec.get("sha256"), str) and len(rec["sha256"]) == 64:
        return rec
    return None


def record_trust(entry: ZooEntry, sha256: str, size: int, source: str) -> None:
    """Record the digest of the first verified fetch; never overwrites an existing record."""
    if trusted(entry) is not None:
        return
    doc = _read_trust()
    doc[_trust_key(entry)] = {"sha256": sha256, "size": size, "source": source,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    path = _trust_path()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):  # a read-only cache: nothing recorded, the file is still checked
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# content checks that need no digest


def onnx_structure_problem(path: Path, entry: ZooEntry) -> str:
    """'' when ``path`` is an ONNX graph shaped like the entry's detector; else what is wrong (one phrase).

    Expected (MMDeploy end2end): one image input of rank 4 with 3 channels, an output ``dets`` of rank 3 whose
    last dimension is 5 (``labels`` optional), a default-domain opset in ONNX_OPSETS. Parsing is protobuf only
    (no code runs)."""
    try:
        import onnx
    except ImportError:
        return "" if _ort_structure_ok(path) else "not a loadable ONNX graph (onnxruntime refused it)"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not an ONNX model"
        return f"not an ONNX model ({type(e).__name__})"
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not ONNX_OPSETS[0] <= opset <= ONNX_OPSETS[1]:
        return f"ONNX opset {opset} outside {ONNX_OPSETS[0]}..{ONNX_OPSETS[1]}"

    def dims(v: Any) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]

    if len(inputs) != 1:
        return f"the graph has {len(inputs)} inputs, expected 1 image input"
    d_in = dims(inputs[0])
    if len(d_in) != 4 or (isinstance(d_in[1], int) and d_in[1] != 3):
        return f"the graph input has shape {d_in}, expected (1, 3, H, W)"
    outs = {o.name: dims(o) for o in graph.output}
    if entry.layout == "onnx-end2end":
        dets = outs.get("dets")
        if dets is None:
            return f"the graph outputs {sorted(outs)} lack 'dets' (MMDeploy end2end)"
        if len(dets) != 3 or (isinstance(dets[2], int) and dets[2] != 5):
            return f"the graph output dets has shape {dets}, expected (1, N, 5)"
    elif not outs:
        return "the graph has no outputs"
    return ""


def _ort_structure_ok(path: Path) -> bool:
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001
        return False
    return len(sess.get_inputs()) == 1 and len(sess.get_inputs()[0].shape) == 4 and bool(sess.get_outputs())


def torch_file_problem(path: Path) -> str:
    """'' when ``path`` starts like a PyTorch checkpoint (zip container, or a legacy pickle stream) or a
    safetensors file; else what it looks like. Reads the first bytes only (nothing is unpickled here)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"unreadable ({e})"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return ""
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte header length, then JSON
        return ""
    low = head.lower().lstrip()
    if low.startswith((b"<!doctype", b"<html", b"<head", b"<?xml", b"<body")):
        return "an HTML page instead of the file"
    return f"not a PyTorch checkpoint (starts with {head[:8]!r})"
