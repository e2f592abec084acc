"""Splitting `hrpose predict` over several processes or machines, resuming, and merging the results.

- Which share: `--shard I/N` (I = 0..N-1), or torchrun's RANK / WORLD_SIZE. The inputs are expanded and
  sorted the same way in every process, item k goes to shard k % N, and output names are given over the
  whole list, so every process agrees on who does what and where it goes.
- Done: an item is done when its marker `<out>/.hrpose/done/<name>` exists (written after all its outputs).
  `--resume` skips items that are done, so a killed shard is run again and loses nothing.
- Merging: each shard writes `<out>/.hrpose/shard-I-of-N.json` (its items) when it finishes. Under torchrun
  rank 0 merges after a gloo barrier; with `--shard`, the shard that finds all N lists present merges (and
  `--merge` merges explicitly). The merge reads the per-item outputs in input order and writes
  `results.json` (and the tables of `--format`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrpose.errors import UserError

STATE_DIR = ".hrpose"


class ShardError(UserError, ValueError):
    """A bad --shard, RANK/WORLD_SIZE or an incomplete merge."""


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1
    torchrun: bool = False

    @property
    def label(self) -> str:
        return f"shard-{self.index}-of-{self.count}"

    def mine(self, k: int) -> bool:
        return k % self.count == self.index


def parse_shard(spec: str) -> Shard:
    """'I/N' -> Shard(I, N); one clear error otherwise."""
    head, sep, tail = str(spec).partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        i, n = -1, -1
    if not sep or n < 1:
        raise ShardError(f"--shard {spec}: expected I/N with whole numbers, N >= 1 and I = 0..N-1 (e.g. --shard 0/4)")
    if not 0 <= i < n:
        raise ShardError(f"--shard {spec}: I must be 0..{n - 1} (shards count from 0), e.g. --shard 0/{n}")
    return Shard(i, n)


def shard_from_env(env: dict[str, str] | None = None) -> Shard | None:
    """torchrun's RANK/WORLD_SIZE when WORLD_SIZE > 1, else None."""
    env = dict(os.environ) if env is None else env
    if "WORLD_SIZE" not in env:
        return None
    try:
        world, rank = int(env["WORLD_SIZE"]), int(env.get("RANK", "0"))
    except ValueError:
        raise ShardError(
            f"RANK={env.get('RANK')!r} / WORLD_SIZE={env.get('WORLD_SIZE')!r}: expected whole numbers (set by torchrun)"
        ) from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ShardError(f"RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world})")
    return Shard(rank, world, torchrun=True)


def state_dir(out_dir: Path) -> Path:
    return Path(out_dir) / STATE_DIR


def done_marker(out_dir: Path, name: str) -> Path:
    return state_dir(out_dir) / "done" / name


def is_done(out_dir: Path, name: str) -> bool:
    return done_marker(out_dir, name).is_file()


def mark_done(out_dir: Path, name: str) -> None:
    p = done_marker(out_dir, name)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text("done\n")
    os.replace(tmp, p)


def manifest_path(out_dir: Path, shard: Shard) -> Path:
    return state_dir(out_dir) / f"{shard.label}.json"


def write_manifest(out_dir: Path, shard: Shard, items: list[dict[str, Any]]) -> None:
    p = manifest_path(out_dir, shard)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps({"shard": shard.index, "count": shard.count, "items": items}))
    os.replace(tmp, p)


def read_manifests(out_dir: Path, count: int | None = None) -> tuple[int, list[dict[str, Any]], list[int]]:
    """(shard count, all items of the present shard lists sorted by input order, the missing shard indexes)."""
    d = state_dir(out_dir)
    found = sorted(d.glob("shard-*-of-*.json")) if d.is_dir() else []
    if not found:
        raise ShardError(f"{out_dir}: no shard lists in {d}; run the shards (--shard I/N) into this --out first")
    counts = set()
    lists: dict[int, list[dict[str, Any]]] = {}
    for p in found:
        try:
            data = json.loads(p.read_text())
            i, n, items = int(data["shard"]), int(data["count"]), list(data["items"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ShardError(
                f"{p}: not a shard list written by hrpose predict ({e}); delete it and rerun that shard"
            ) from e
        if count is not None and n != count:
            continue
        counts.add(n)
        lists[i] = items
    if len(counts) != 1:
        raise ShardError(f"{d}: shard lists of different shard counts {sorted(counts)}; use a fresh --out per split")
    n = counts.pop()
    missing = [i for i in range(n) if i not in lists]
    items = sorted((it for lst in lists.values() for it in lst), key=lambda it: int(it["k"]))
    return n, items, missing
