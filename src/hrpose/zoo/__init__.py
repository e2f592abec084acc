"""Model zoo: the registry of downloadable weights, the cache, and fetching (``hrpose models``).

Cache layout (simple on purpose, so offline users can place files by hand)::

    $HRPOSE_HOME/<kind>/<filename>        a checkpoint, exactly as downloaded (kind: pose | detector | imagenet)
    $HRPOSE_HOME/<kind>/<name>/<member>   a zip entry's extracted member (detector/yolox-tiny-humanart/end2end.onnx)
    $HRPOSE_HOME/<kind>/<filename>.part   a download in progress (resumed with HTTP Range on the next try)
    $HRPOSE_HOME/<kind>/<file>.sha256     the digest recorded after a file was verified (saves re-hashing)
    $HRPOSE_HOME/<kind>/<filename>.lock   taken while a process downloads that file

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
- ``HRPOSE_MIRROR=<base URL>``: a directory of mirrored files. For every entry the URL ``<base>/<filename>`` is
  tried first (the registry file name, e.g. ``<base>/yolox_tiny_8xb8-300e_humanart-6f3252f9.zip``), then the
  registry's own URLs. It replaces the whole URL up to the file name, whatever the original host. The config key
  ``HRPOSE.MODEL_MIRROR`` is the same thing for one experiment; when both are set both are tried (config first).
- ``https_proxy`` / ``http_proxy`` / ``no_proxy``: honoured (standard-library ``urllib``).
"""

from __future__ import annotations

import os
from pathlib import Path

from hrpose.errors import UserError
from hrpose.zoo.home import _entry, cache_path, get_entry, hrpose_home, is_offline
from hrpose.zoo.registry import (
    DEFAULT_DETECTOR,
    DEFAULT_POSE_MODEL,
    KINDS,
    LAYOUTS,
    REGISTRY,
    ZooEntry,
)

__all__ = [
    "DEFAULT_DETECTOR",
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
