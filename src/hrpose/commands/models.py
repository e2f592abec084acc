"""`hrpose models [list|fetch|path|mirror|verify]`: the model zoo and what of it is in the cache.

    hrpose models                    every entry, with whether it is cached (and the cache folder)
    hrpose models list --json        the same as JSON (one object per entry, with its sources and their checks)
    hrpose models fetch NAME [...]   download, verify (and extract) into the cache; `all` = every entry
                 [--dest PATH]       ... and copy the file there too (e.g. models/pytorch/pose_coco/<official name>)
    hrpose models path NAME          the cached file's path (exit 1, with where to place it, when absent)
    hrpose models mirror DIR [NAME]  write the cached files (all, or NAMEs) to DIR with manifest.json, the layout
                                     HRPOSE_MIRROR serves (python -m http.server, any web server, or file://)
    hrpose models verify [NAME...]   re-hash the cache; names every damaged file (exit 1)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hrpose.zoo.registry import ZooEntry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=("list", "fetch", "path", "mirror", "verify"),
                        help="what to do")  # fmt: skip
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="registry names (see `hrpose models`); for mirror: DIR first")  # fmt: skip
    parser.add_argument("--dest", default="", help="fetch: also copy the file to this path (or into this folder)")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    parser.add_argument("--kind", choices=("pose", "detector", "imagenet"), help="list only this kind")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    parser.add_argument("--mirror", default="", help="mirror base URL tried first (like $HRPOSE_MIRROR)")


def _list(args: argparse.Namespace) -> int:
    from hrpose.zoo import DEFAULT_POSE_FALLBACK, DEFAULT_POSE_MODEL, REGISTRY, cache_path, hrpose_home
    from hrpose.zoo.download import cache_state
    from hrpose.zoo.sources import host_label

    entries = [e for e in REGISTRY.values() if args.kind in (None, e.kind)]
    if args.json:
        from hrpose.zoo.download import read_timeout
        from hrpose.zoo.sources import checks, sources

        srcs = {e.name: sources(e, args.mirror or None, timeout=read_timeout()) for e in entries}
        rows = []
        for e in entries:
            state = cache_state(e)
            rows.append({
                "name": e.name, "kind": e.kind, "input_size": list(e.input_size) if e.input_size else None,
                "metric": e.metric, "layout": e.layout, "channel_order": e.channel_order, "licence": e.licence,
                "url": e.urls[0] if e.urls else None, "sha256": e.sha256, "size": e.size or None,
                "filename": e.filename, "official_path": e.official_path or None, "config": e.config,
                "source": e.source, "path": str(cache_path(e)), "cached": state in ("verified", "present"),
                "integrity": e.integrity,
                "fallback": DEFAULT_POSE_FALLBACK if e.name == DEFAULT_POSE_MODEL else None,
                "sources": [{"url": src.url, "label": src.label, "serves": "zip" if src.archive else "file",
                             "checks": checks(e, src.archive)} for src in srcs.get(e.name, [])],
            })
        print(json.dumps(rows, indent=1))
        return 0
    table = [("NAME", "KIND", "INPUT (HxW)", "METRIC", "LICENCE", "SOURCES", "CACHED")]
    for e in entries:
        state = cache_state(e)
        size = f"{e.input_size[1]}x{e.input_size[0]}" if e.input_size else "-"  # h x w, as in the names
        shown = {"verified": "yes", "present": "yes (unverified)", "zip": "zip (not extracted)"}.get(state, "-")
        hosts = ", ".join(dict.fromkeys(host_label(u).split(" ")[0] for u in e.urls)) or "none known"
        table.append((e.name, e.kind, size, e.metric, e.licence, hosts, shown))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"cache: {hrpose_home()} (set HRPOSE_HOME to move it; docs/models.md explains placing files by hand); "
          "`hrpose models list --json` shows every source and how its bytes are checked")  # fmt: skip
    return 0


def _names(args: argparse.Namespace) -> list[str]:
    from hrpose.errors import UserError
    from hrpose.zoo import REGISTRY

    if not args.names:
        raise UserError(f"`hrpose models {args.action}` needs at least one model NAME (`hrpose models` lists them)")
    if args.action == "fetch" and args.names == ["all"]:  # every entry that has a source
        skipped = [n for n, e in REGISTRY.items() if not e.urls]
        if skipped:
            print(f"skipped (no known download source; see docs/models.md): {', '.join(skipped)}", file=sys.stderr)
        return [n for n, e in REGISTRY.items() if e.urls]
    return list(args.names)


def _copy_to(src: Path, dest_arg: str, entry: ZooEntry, many: bool) -> Path:
    """Copy a fetched file to --dest (a folder when it is one, ends in '/', or several names were given)."""
    from hrpose.errors import UserError

    dest = Path(dest_arg)
    if many or dest_arg.endswith(("/", os.sep)) or dest.is_dir():
        dest = dest / (entry.filename if not entry.is_archive else entry.member_filename)
    if dest.resolve() == src.resolve():
        return dest
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UserError(f"cannot copy {entry.name} to {dest} ({e}); choose another --dest") from None
    return dest


def _mirror(args: argparse.Namespace) -> int:
    """Write the cached files of NAMEs (default: every cached entry) into DIR, with manifest.json."""
    from hrpose.errors import UserError
    from hrpose.zoo import REGISTRY, cached_path, get_entry
    from hrpose.zoo.download import file_digest
    from hrpose.zoo.sources import MANIFEST, MANIFEST_FORMAT

    if not args.names:
        raise UserError("`hrpose models mirror` needs the folder to write: hrpose models mirror DIR [NAME...]")
    out = Path(args.names[0])
    names = args.names[1:]
    entries = [get_entry(n) for n in names] if names else list(REGISTRY.values())
    files: dict[str, dict[str, object]] = {}
    manifest_path = out / MANIFEST
    if manifest_path.is_file():  # add to an existing mirror
        with contextlib.suppress(OSError, ValueError, AttributeError):
            files.update(json.loads(manifest_path.read_text()).get("files", {}))
    missing = []
    for e in entries:
        path = cached_path(e)  # verified (a damaged file is refused here, never mirrored)
        if path is None:
            missing.append(e.name)
            continue
        name = e.member_filename
        out.mkdir(parents=True, exist_ok=True)
        target = _copy_to(path, str(out / name), e, many=False)
        files[name] = {"sha256": file_digest(path), "size": path.stat().st_size, "name": e.name, "kind": e.kind}
        print(f"{e.name}: {target}")
    if names and missing:
        raise UserError(f"not in the cache, so not mirrored: {', '.join(missing)}; run `hrpose models fetch "
                        f"{' '.join(missing)}` first")  # fmt: skip
    if not files:
        raise UserError("the cache holds no model file to mirror: `hrpose models fetch NAME` first")
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, manifest_path)
    print(f"{len(files)} files and {manifest_path} written; serve {out} (e.g. `python -m http.server -d {out}`) and "
          f"set HRPOSE_MIRROR=http://HOST:PORT, or HRPOSE_MIRROR={out.resolve().as_uri()}")  # fmt: skip
    return 0


def _verify(args: argparse.Namespace) -> int:
    """Re-hash every cached file (or NAMEs') against its registry digest / trust record / structure."""
    from hrpose.errors import UserError
    from hrpose.zoo import REGISTRY, cache_path, get_entry, hrpose_home
    from hrpose.zoo.download import _stamp, verified_cached

    entries = [get_entry(n) for n in args.names] if args.names else list(REGISTRY.values())
    ok = bad = 0
    for e in entries:
        target = cache_path(e)
        if target.is_file():
            with contextlib.suppress(OSError):
                _stamp(target).unlink()  # re-hash for real: the stamp only vouches for size and mtime
        try:
            path = verified_cached(e)
        except UserError as err:
            print(f"damaged: {e.name}: {err}", file=sys.stderr)
            bad += 1
            continue
        if path is not None:
            problem = _content_problem(e, path)
            if problem:
                print(f"damaged: {e.name}: {path}: {problem}; run `hrpose models fetch {e.name}`", file=sys.stderr)
                bad += 1
                continue
            print(f"ok: {e.name}: {path}")
            ok += 1
    print(f"{ok} files verified, {bad} damaged in {hrpose_home()}")
    return 1 if bad else 0


def _content_problem(entry: ZooEntry, path: Path) -> str:
    from hrpose.zoo.sources import onnx_structure_problem, torch_file_problem

    if entry.kind == "detector":
        return onnx_structure_problem(path, entry)
    return torch_file_problem(path) if path.suffix == ".pth" else ""


def run(args: argparse.Namespace) -> int:
    from hrpose.errors import UserError
    from hrpose.zoo import DEFAULT_POSE_MODEL, cache_path, cached_path, fetch, fetch_pose, get_entry
    from hrpose.zoo.download import place_hint

    try:
        if args.action == "list":
            return _list(args)
        if args.action == "mirror":
            return _mirror(args)
        if args.action == "verify":
            return _verify(args)
        names = _names(args)
        entries = [get_entry(n) for n in names]  # every name checked before anything is downloaded
        if args.action == "path":
            status = 0
            for e in entries:
                p = cached_path(e)
                if p is None:
                    print(f"error: model {e.name!r} is not in the cache: run `hrpose models fetch {e.name}`, or "
                          f"{place_hint(e)}", file=sys.stderr)
                    print(cache_path(e))
                    status = 1
                else:
                    print(p)
            return status
        failed = 0
        for e in entries:
            try:
                if e.name == DEFAULT_POSE_MODEL:  # its fallback, the official W32, is what predict would use
                    got, p = fetch_pose(e, progress=not args.no_progress, mirror=args.mirror or None)
                else:
                    got, p = e, fetch(e, progress=not args.no_progress, mirror=args.mirror or None)
                if args.dest:
                    p = _copy_to(p, args.dest, got, many=len(entries) > 1)
            except UserError as err:
                print(f"error: {err}", file=sys.stderr)
                failed += 1
            else:
                print(f"{got.name}: {p}")
        return 2 if failed else 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
