"""`gnes indexes ACTION`: manage the logical indexes of a set of shards from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_ACTIONS = ("list", "create", "drop", "state", "count", "save", "load", "train", "compact")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("indexes", help="list, create, drop and inspect logical indexes on the shards")
    p.add_argument("action", choices=_ACTIONS, help="what to do")
    p.add_argument("name", nargs="?", default="", help="the index (all actions but list)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--discovery", help="discovery file written by `gnes launch`")
    where.add_argument("--shards", help="shard addresses: host:port,host:port")
    p.add_argument("--config", help="create: the index configuration, a JSON or YAML file (or inline JSON)")
    p.add_argument("--exist_ok", action="store_true", help="create: succeed if the same index exists")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for each answer")
    return p


def _read_config(text: str) -> dict[str, Any]:
    """--config is inline JSON or a JSON/YAML file, read as `gnes load --create` reads it."""
    if text.lstrip().startswith("{"):
        return json.loads(text)
    from .load import read_config  # noqa: PLC0415 - gnes load's reader, imported with the command

    return read_config(Path(text))


def run(args: argparse.Namespace) -> int:
    from ..client import IndexClient, IndexClientError
    from .load import LoadError

    if args.action != "list" and not args.name:
        print(f"gnes indexes {args.action}: give the index name", file=sys.stderr)
        return 2
    try:
        config = _read_config(args.config) if args.action == "create" and args.config else None
        if args.action == "create" and config is None:
            print("gnes indexes create: give --config", file=sys.stderr)
            return 2
        with IndexClient(discovery=args.discovery, addresses=args.shards, timeout=args.timeout) as client:
            if args.action == "list":
                print("\n".join(client.list_indexes()))
            elif args.action == "create":
                client.create_index(args.name, config, exist_ok=args.exist_ok)  # type: ignore[arg-type]
                print(f"created {args.name} on {client.num_shards} shards")
            elif args.action == "drop":
                client.drop_index(args.name)
                print(f"dropped {args.name}")
            elif args.action == "state":
                print(json.dumps(client.state(args.name), indent=2))
            elif args.action == "count":
                per_shard = client.count_per_shard(args.name)
                print(f"{sum(per_shard)} documents; per shard: {' '.join(map(str, per_shard))}")
            elif args.action == "save":
                client.save(args.name)
                print(f"saved {args.name}")
            elif args.action == "compact":
                shards = client.compact(args.name)
                figures = [info for shard in shards for info in shard.values()]
                # A shard that restarted meanwhile has no figures: its compaction was dropped.
                before = sum(info.get("segment_rows_before", 0) for info in figures)
                after = sum(info.get("segment_rows", 0) for info in figures)
                dropped = sum(1 for info in figures if not info)
                if dropped:
                    print(f"{dropped} shard(s) restarted during the compaction: theirs was dropped, files unchanged")
                took = max((info.get("seconds", 0.0) for info in figures), default=0.0)
                blocked = max((info.get("blocked_seconds", 0.0) for info in figures), default=0.0)
                print(
                    f"compacted {args.name}: {before} segment rows -> {after}"
                    f" ({took:.2f} s; the shards answered nothing for at most {blocked:.2f} s)"
                )
            elif args.action == "load":
                client.load(args.name)
                print(f"reloaded {args.name} from disk")
            else:
                client.train(args.name)
                print(f"training of {args.name} started")
    except (IndexClientError, LoadError, ValueError, OSError, TimeoutError) as exc:
        print(f"gnes indexes {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0
