"""`hrpose predict` over collections split by `--shard I/N` or torchrun: which items are done, the meeting of the
shards and the merge of their per-item outputs into `results.json` and the tables (see `hrpose.inference.shard`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hrpose.commands.predict import _check_write_error, _Summary, strict_json, write_atomic


def _item_done(out_dir: Path, kind: str, name: str) -> bool:
    """Done: its marker (written in --shard/--resume/torchrun runs), or for an image its JSON, which a run of any
    kind writes last, after the drawing."""
    from hrpose.inference import shard as sh

    return sh.is_done(out_dir, name) or (kind == "image" and (out_dir / f"{name}.json").is_file())


def _finish_collection(out_dir: Path, formats: tuple[str, ...], shard: Any, summary: _Summary) -> None:
    """After this shard's items: torchrun ranks meet at a gloo barrier and rank 0 merges; with --shard the
    shard that sees every shard's list merges."""
    from hrpose.inference import shard as sh

    if shard.torchrun:
        import torch.distributed as dist

        started = False
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            started = True
        try:
            dist.barrier()
            failed: BaseException | None = None
            if shard.index == 0:
                try:
                    _merge(out_dir, formats, shard.count)
                except Exception as e:  # a full disk: the other ranks still get past the barrier below
                    failed = e
            dist.barrier()
            if failed is not None:
                raise failed
        finally:
            if started:
                dist.destroy_process_group()
        return
    _, _, missing = sh.read_manifests(out_dir, shard.count)
    if missing:
        print(f"{shard.label} done; results.json is written by the last shard to finish (shards not finished: "
              f"{', '.join(map(str, missing[:10]))}), or run again with --merge", file=sys.stderr)  # fmt: skip
    else:
        _merge(out_dir, formats, shard.count)


def _merge(out_dir: Path, formats: tuple[str, ...], count: int | None) -> int:
    """The per-item outputs of all shards -> results.json (images) and the tables (images, then videos)."""
    from hrpose.inference import shard as sh
    from hrpose.inference.tables import rows_of, write_csv, write_parquet

    n, items, missing = sh.read_manifests(out_dir, count)
    if missing:
        raise sh.ShardError(f"{out_dir}: shards {', '.join(map(str, missing))} of {n} have not finished; run them "
                            f"(--shard I/{n} --resume) and merge again")  # fmt: skip
    not_done = [it for it in items if not it["done"]]
    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    joint_names: list[str] | None = next((it["joint_names"] for it in items if it.get("joint_names")), None)
    images = [it for it in items if it["kind"] == "image" and it["done"]]
    videos = [it for it in items if it["kind"] != "image" and it["done"]]
    for it in images:
        p = out_dir / f"{it['name']}.json"
        try:
            people = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise sh.ShardError(f"{p}: unreadable per-image result ({e}); rerun its shard with --resume") from e
        results.extend(people)
        rows.extend(rows_of(people, it["path"]))
        if people and joint_names is None:
            joint_names = people[0].get("joint_names")
    for it in videos:
        p = out_dir / f"{it['name']}.jsonl"
        try:
            lines = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        except (OSError, ValueError) as e:
            raise sh.ShardError(f"{p}: unreadable per-video result ({e}); rerun its shard with --resume") from e
        for line in lines:
            rows.extend(rows_of(line["people"], line["source"], frame=line["frame"], time=line["time"]))
            if line["people"] and joint_names is None:
                joint_names = line.get("joint_names")
    try:
        write_atomic(out_dir / "results.json", strict_json(results))
        if "csv" in formats or "parquet" in formats:
            names = joint_names or _joint_names_of_rows(rows)
            if "csv" in formats:
                write_csv(out_dir / "results.csv", names, rows)  # replaced only when whole
            if "parquet" in formats:
                write_parquet(out_dir / "results.parquet", names, rows)
    except OSError as e:
        _check_write_error(e, out_dir)
        raise
    note = f"; {len(not_done)} input(s) failed and are not in it" if not_done else ""
    print(f"merged {len(images)} images and {len(videos)} videos of {n} shard(s) into {out_dir / 'results.json'}"
          f"{note}", file=sys.stderr)  # fmt: skip
    return 0


def _joint_names_of_rows(rows: list[list[Any]]) -> list[str]:
    from hrpose.keypoints import COCO_JOINTS

    return list(COCO_JOINTS)
