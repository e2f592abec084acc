"""Where the model zoo's files live (`$HRPOSE_HOME`), whether downloads are allowed, and entries by name: the part
of `hrpose.zoo` its downloader needs too (so that `hrpose.zoo` and `hrpose.zoo.download` do not import each
other)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from hrpose.errors import UserError
from hrpose.zoo.registry import REGISTRY, ZooEntry


def get_entry(name: str) -> ZooEntry:
    """The registry entry called ``name``; a UserError naming the closest names when there is none."""
    entry = REGISTRY.get(name)
    if entry is not None:
        return entry
    close = difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(f"unknown model name {name!r}: {hint}`hrpose models` lists the {len(REGISTRY)} known names")


def _entry(entry_or_name: ZooEntry | str) -> ZooEntry:
    return entry_or_name if isinstance(entry_or_name, ZooEntry) else get_entry(entry_or_name)


def hrpose_home() -> Path:
    """``$HRPOSE_HOME``, else the user cache directory (``$XDG_CACHE_HOME/hrpose`` or ``~/.cache/hrpose``)."""
    env = os.environ.get("HRPOSE_HOME")
    if env:
        return Path(env).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "hrpose"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "hrpose"


def is_offline() -> bool:
    """True when ``HRPOSE_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get("HRPOSE_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_path(entry_or_name: ZooEntry | str) -> Path:
    """Where the usable file of an entry lives in the cache (whether or not it is there): for zips, the member."""
    entry = _entry(entry_or_name)
    kind_dir = hrpose_home() / entry.kind
    if entry.archive_member is not None:
        return kind_dir / entry.name / Path(entry.archive_member).name
    return kind_dir / entry.filename
