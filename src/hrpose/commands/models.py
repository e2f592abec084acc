"""`hrpose models [list|fetch NAME...|path NAME]`: the model zoo and what of it is in the cache.

    hrpose models                    every entry, with whether it is cached (and the cache folder)
    hrpose models list --json        the same as JSON (one object per entry)
    hrpose models fetch NAME [...]   download, verify (and extract) into the cache; `all` = every entry
    hrpose models path NAME          the cached file's path (exit 1, with where to place it, when absent)
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", default="list", choices=("list", "fetch", "path"), help="what to do")
    parser.add_argument("names", nargs="*", metavar="NAME", help="registry names (see `hrpose models`)")
    parser.add_argument("--json", action="store_true", help="list as JSON")
    parser.add_argument("--kind", choices=("pose", "detector", "imagenet"), help="list only this kind")
    parser.add_argument("--no-progress", action="store_true", help="no download progress bar")
    parser.add_argument("--mirror", default="", help="mirror base URL tried first (like $HRPOSE_MIRROR)")


def _list(args: argparse.Namespace) -> int:
    from hrpose.zoo import REGISTRY, cache_path, hrpose_home
    from hrpose.zoo.download import cache_state

    entries = [e for e in REGISTRY.values() if args.kind in (None, e.kind)]
    if args.json:
        rows = []
        for e in entries:
            state = cache_state(e)
            rows.append({
                "name": e.name, "kind": e.kind, "input_size": list(e.input_size) if e.input_size else None,
                "metric": e.metric, "layout": e.layout, "channel_order": e.channel_order, "licence": e.licence,
                "url": e.urls[0], "sha256": e.sha256, "filename": e.filename, "config": e.config,
                "source": e.source, "path": str(cache_path(e)), "cached": state in ("verified", "present"),
            })
        print(json.dumps(rows, indent=1))
        return 0
    table = [("NAME", "KIND", "INPUT (HxW)", "METRIC", "LICENCE", "CACHED")]
    for e in entries:
        state = cache_state(e)
        size = f"{e.input_size[1]}x{e.input_size[0]}" if e.input_size else "-"  # h x w, as in the names
        shown = {"verified": "yes", "present": "yes (unverified)", "zip": "zip (not extracted)"}.get(state, "-")
        table.append((e.name, e.kind, size, e.metric, e.licence, shown))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(f"cache: {hrpose_home()} (set HRPOSE_HOME to move it; docs/models.md explains placing files by hand)")
    return 0


def _names(args: argparse.Namespace) -> list[str]:
    from hrpose.errors import UserError
    from hrpose.zoo import REGISTRY

    if not args.names:
        raise UserError(f"`hrpose models {args.action}` needs at least one model NAME (`hrpose models` lists them)")
    if args.action == "fetch" and args.names == ["all"]:
        return list(REGISTRY)
    return list(args.names)


def run(args: argparse.Namespace) -> int:
    from hrpose.errors import UserError
    from hrpose.zoo import cache_path, cached_path, fetch, get_entry
    from hrpose.zoo.download import place_hint

    try:
        if args.action == "list":
            return _list(args)
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
                p = fetch(e, progress=not args.no_progress, mirror=args.mirror or None)
            except UserError as err:
                print(f"error: {err}", file=sys.stderr)
                failed += 1
            else:
                print(f"{e.name}: {p}")
        return 2 if failed else 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
