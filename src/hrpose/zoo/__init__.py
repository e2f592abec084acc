"""Model zoo: the registry of downloadable weights, the cache, and fetching (``hrpose models``).

Cache layout (simple on purpose, so offline users can place files by hand)::

    $HRPOSE_HOME/<kind>/<filename>        a checkpoint, exactly as downloaded (kind: pose | detector | imagenet)
    $HRPOSE_HOME/<kind>/<name>/<member>   a zip entry's extracted member (detector/yolox-tiny-humanart/end2end.onnx)
    $HRPOSE_HOME/<kind>/<filename>.part   a download in progress (resumed with HTTP Range on the next try)
    $HRPOSE_HOME/<kind>/<file>.sha256     the digest recorded after a file was verified (saves re-hashing)
    $HRPOSE_HOME/<kind>/<filename>.lock   taken while a process downloads that file
    $HRPOSE_HOME/trust.json               sha256 of the first verified fetch of files with no published digest

``$HRPOSE_HOME`` defaults to the user cache directory: ``$XDG_CACHE_HOME/hrpose``, else ``~/.cache/hrpose``
(``%LOCALAPPDATA%\\hrpose`` on Windows). ``hrpose models`` prints it with every entry's path.

A file placed by hand is verified like a download (the full SHA-256 where the registry knows it, else the
prefix published in the file name) and refused and removed when it does not match. For a zip entry, either place
the zip itself at ``<kind>/<filename>`` (it is verified and extracted on first use) or its member at
``<kind>/<name>/<member>`` (accepted as is unless the registry records the member's full digest).

Environment:

- ``HRPOSE_HOME``: the cache directory.
- ``HRPOSE_OFFLINE=1``: never touch the network; a missing file is an error naming the path to place it at and
  the URL to get it from.
- ``HRPOSE_MIRROR=<base URL>`` (``https://``, ``http://`` or ``file://``): a mirror, e.g. one written by
  ``hrpose models mirror DIR``. The URL ``<base>/<file name>`` is tried first (for detectors the bare ONNX,
  ``<base>/yolox_tiny_8xb8-300e_humanart-6f3252f9.onnx``), then the registry's sources. When the mirror has a
  ``manifest.json`` every file from it must match its SHA-256 and size there. The config key
  ``HRPOSE.MODEL_MIRROR`` is the same thing for one experiment; when both are set both are tried (config first).
- ``HRPOSE_DOWNLOAD_TIMEOUT`` (seconds, default 30): how long a connect or a read may wait.
  ``HRPOSE_DOWNLOAD_DEADLINE`` (seconds): one source's total time (default 300 s plus the size at 50 kB/s).
- ``SSL_CERT_FILE``: another CA bundle for https (verification is never turned off).
- ``https_proxy`` / ``http_proxy`` / ``no_proxy``: honoured (standard-library ``urllib``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hrpose.errors import UserError
from hrpose.zoo.home import _entry, cache_path, get_entry, hrpose_home, is_offline
from hrpose.zoo.registry import (
    DEFAULT_DETECTOR,
    DEFAULT_POSE_FALLBACK,
    DEFAULT_POSE_MODEL,
    KINDS,
    LAYOUTS,
    REGISTRY,
    ZooEntry,
)

__all__ = [
    "DEFAULT_DETECTOR",
    "DEFAULT_POSE_FALLBACK",
    "DEFAULT_POSE_MODEL",
    "KINDS",
    "LAYOUTS",
    "REGISTRY",
    "ZooEntry",
    "cache_path",
    "cached_path",
    "config_path",
    "entry_for_imagenet_file",
    "fetch",
    "fetch_pose",
    "get_entry",
    "hrpose_home",
    "is_offline",
]


def cached_path(entry_or_name: ZooEntry | str) -> Path | None:
    """The verified file in the cache (for zips: the extracted member), or None when it is not there.

    A file that fails verification raises a UserError (expected vs actual digest) after being removed.
    """
    from hrpose.zoo.download import verified_cached

    return verified_cached(_entry(entry_or_name))


def fetch(entry_or_name: ZooEntry | str, *, progress: bool = True, mirror: str | None = None) -> Path:
    """The entry's file: from the cache, else downloaded, verified (and extracted); UserError when it cannot.

    ``mirror`` is an extra mirror base URL (the ``HRPOSE.MODEL_MIRROR`` config key), tried before
    ``$HRPOSE_MIRROR`` and the registry URLs.
    """
    from hrpose.zoo.download import fetch_entry

    return fetch_entry(_entry(entry_or_name), progress=progress, mirror=mirror)


def fetch_pose(
    entry_or_name: ZooEntry | str, *, progress: bool = True, mirror: str | None = None
) -> tuple[ZooEntry, Path]:
    """(entry, file) of a pose model, like `fetch`; when every source of the default pose model fails, the
    official W32 256x192 (``DEFAULT_POSE_FALLBACK``: same architecture and config) serves instead, said in one
    line. When both fail, one UserError lists the sources of both."""
    import sys

    from hrpose.zoo.download import FetchError

    entry = _entry(entry_or_name)
    try:
        return entry, fetch(entry, progress=progress, mirror=mirror)
    except FetchError as first:
        if entry.name != DEFAULT_POSE_MODEL or DEFAULT_POSE_FALLBACK not in REGISTRY:
            raise
        fallback = REGISTRY[DEFAULT_POSE_FALLBACK]
        print(f"warning: every source of {entry.name} failed: using the official {fallback.filename} "
              f"({fallback.metric.split(' (')[0]}) instead", file=sys.stderr)  # fmt: skip
        try:
            return fallback, fetch(fallback, progress=progress, mirror=mirror)
        except FetchError as second:
            raise FetchError(
                f"could not fetch the default pose model {entry.name!r} nor its fallback {fallback.name!r}: "
                + "; ".join(f"[{i}] {t}" for i, t in enumerate(first.tried + second.tried, 1))
                + f". To place one by hand: {_place(entry)}; or {_place(fallback)}; or set HRPOSE_MIRROR to a "
                "mirror (docs/models.md)",
                entry, first.tried + second.tried,
            ) from None


def _place(entry: ZooEntry) -> str:
    from hrpose.zoo.download import place_hint

    return place_hint(entry)


def config_path(entry_or_name: ZooEntry | str) -> Path:
    """The packaged experiment YAML of a pose entry (a copy of ``experiments/<entry.config>``)."""
    entry = _entry(entry_or_name)
    if entry.config is None:
        raise UserError(f"model {entry.name!r} is a {entry.kind} entry and has no pose config")
    return Path(__file__).resolve().parent / "configs" / entry.config


def entry_for_imagenet_file(path_or_name: str | os.PathLike[str]) -> ZooEntry | None:
    """The ImageNet entry a path such as ``models/pytorch/imagenet/resnet50-19c8e357.pth`` names, or None.

    Matched on the file's base name (the names the official YAMLs put in ``MODEL.PRETRAINED``), or on an entry name.
    """
    text = os.fspath(path_or_name)
    base = Path(text).name
    for entry in REGISTRY.values():
        if entry.kind == "imagenet" and (base == entry.filename or text == entry.name):
            return entry
    return None
