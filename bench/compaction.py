"""Queries while a shard compacts its segment file (gnes/indexer/compaction.py).

Workload: one shard process (`LocalShards`), a flat L2 index of `--rows` random `--dim`-d float32
vectors loaded twice (the second load replaces every vector, so half the segment rows are dead),
then `IndexClient.compact`. A thread sends one query (top_k 10) after the other the whole time,
from 2 s before the compaction until 1 s after it.

Printed: the compaction's time and the time the shard answered nothing (its final commit: the
rows written meanwhile and one LMDB transaction); query latency p50 / p99 / max before and during
the compaction, and how many queries were answered during it. Before the copy moved to a thread,
the shard answered nothing for the whole compaction: every query sent meanwhile waited for it,
so the max latency during the compaction is the figure to compare with its duration.

`--load_during N` also loads N new vectors from a second client while the compaction runs: rows
written during the copy, which the compaction must carry into the new file.

    python bench/compaction.py [--rows 200000] [--dim 768] [--load_during 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from gnes.client import IndexClient
from gnes.cluster.local_shards import LocalShards

TOP_K, LOAD_BATCH = 10, 20_000


def load(client: IndexClient, rows: int, dim: int, seed: int, first: int = 0) -> float:
    rng = np.random.default_rng(seed)
    spans = [(i, min(i + LOAD_BATCH, first + rows)) for i in range(first, first + rows, LOAD_BATCH)]
    batches = ((rng.standard_normal((b - a, dim)).astype(np.float32), np.arange(a, b)) for a, b in spans)
    started = time.perf_counter()
    assert sum(client.add_stream("v", batches)) == rows
    return time.perf_counter() - started


def percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"n": 0}
    ms = np.array(latencies) * 1000
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "max_ms": round(float(ms.max()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--load_during", type=int, default=0, help="new vectors loaded during the compaction")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    queries = np.random.default_rng(9).standard_normal((1, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="gnes-compaction-") as tmp:
        with LocalShards(1, Path(tmp), threads=1) as shards, IndexClient(addresses=shards.addresses) as client:
            client.create_index("v", {"dim": args.dim, "metric": "l2", "index_type": "flat"})
            load_s = [load(client, args.rows, args.dim, seed) for seed in (1, 2)]
            samples: list[tuple[float, float]] = []  # (sent at, latency)
            stop = threading.Event()

            def ask() -> None:
                with IndexClient(addresses=shards.addresses) as probe:
                    while not stop.is_set():
                        sent = time.monotonic()
                        probe.search("v", queries, top_k=TOP_K)
                        samples.append((sent, time.monotonic() - sent))

            asker = threading.Thread(target=ask, daemon=True)
            asker.start()
            time.sleep(2.0)
            loader = None
            if args.load_during:

                def load_more() -> None:
                    with IndexClient(addresses=shards.addresses) as writer:
                        load(writer, args.load_during, args.dim, 3, first=args.rows)

                loader = threading.Thread(target=load_more, daemon=True)
            began = time.monotonic()
            if loader is not None:
                loader.start()
            (figures,) = client.compact("v")
            ended = time.monotonic()
            if loader is not None:
                loader.join(600)
            time.sleep(1.0)
            stop.set()
            asker.join(60)
    compaction = figures["v"]
    before = [lat for sent, lat in samples if sent + lat < began]
    during = [lat for sent, lat in samples if sent < ended and sent + lat > began]  # overlapping it
    result = {
        "rows": args.rows,
        "dim": args.dim,
        "load_during": args.load_during,
        "load_rows_per_s": [round(args.rows / s) for s in load_s],
        "segment_rows_before": compaction["segment_rows_before"],
        "segment_rows": compaction["segment_rows"],
        # A shard from before the background copy reports no times: it blocked for the whole call.
        "compaction_s": compaction.get("seconds", round(ended - began, 3)),
        "blocked_s": compaction.get("blocked_seconds", round(ended - began, 3)),
        "call_s": round(ended - began, 3),
        "queries_before": percentiles(before),
        "queries_during": percentiles(during),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.rows} x {args.dim}-d float32 loaded twice into one shard ({result['load_rows_per_s']} rows/s)")
    print(
        f"compaction: {compaction['segment_rows_before']} -> {compaction['segment_rows']} segment rows in"
        f" {result['compaction_s']:.3f} s; the shard answered nothing for {result['blocked_s']:.3f} s"
    )
    for label, figures_ in (("before", result["queries_before"]), ("during", result["queries_during"])):
        print(f"queries {label:6}: {figures_}")


if __name__ == "__main__":
    main()
