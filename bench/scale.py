"""A load at scale: millions of generated 768-d float16 vectors into N shards, then restarts.

Why: docs/scaling.md extrapolates from one shard's measured rate and memory to a billion
vectors; this is the run it is checked against. Defaults: 2,000,000 vectors of 768 dims
(standard normal, stored as float16: 3 GB), 2 shard processes, faiss `SQfp16` (exact search
over float16 codes: 1,536 bytes per vector in memory) with `store_dtype: float16` (1,536
bytes per vector on disk), batches of 20,000 sent by `gnes load` (a subprocess), ids 0..n-1.

Measured, in this order:
1. in-process baselines: faiss `SQfp16` add of the first 200,000 rows (one process) and the
   disk (the bytes the shards store, 1 MiB writes, one fdatasync): the limit is the slower;
2. `gnes load` of every row (its own printed rate), and each shard's peak RSS (VmHWM);
3. a batch of 10 queries (rows of the file: each must find itself first);
4. kill -9 of every shard and a restart with no snapshot (rebuilt from the store alone):
   seconds from the start until every shard is ready and until one query is answered again,
   with every row counted;
5. a snapshot (admin SAVE, timed), 10,000 more rows, kill -9 again, and a restart from the
   snapshot plus the log (only those rows replayed): the same two figures.

`--store float32` runs the same with float32 rows (6 GB for the defaults) into a flat index
with `store_dtype: float32`: its bulk rows are searched in the segment file where they were
written (gnes/indexer/stored_rows.py), so a restart maps ids back to rows and reads no vector;
the baseline is then faiss IndexFlatL2.add.

    python bench/scale.py [--rows 2000000] [--dim 768] [--shards 2] [--batch_size 20000] [--store float16] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bulk_load import disk_rate
from recall import REPO

from gnes.cluster.local_shards import LocalShards

_RATE = re.compile(r"loaded (\d+) vectors in ([\d.]+) s \((\d+) vectors/s\)")


def generate(path: Path, rows: int, dim: int, dtype: str, chunk: int = 100_000) -> None:
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            f.write(rng.standard_normal((n, dim), dtype=np.float32).astype(dtype).tobytes())


def faiss_rate(path: Path, dim: int, rows: int, batch: int, dtype: str) -> float:
    import faiss

    vectors = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(rows, dim))
    index = faiss.index_factory(dim, "SQfp16" if dtype == "float16" else "Flat", faiss.METRIC_L2)
    sample = min(rows, 200_000)
    started = time.perf_counter()
    for start in range(0, sample, batch):
        index.add(np.asarray(vectors[start : start + batch], dtype=np.float32))
    return sample / (time.perf_counter() - started)


def peak_rss_mb(pid: int) -> float:
    """The process's resident-set high-water mark (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def answer(client: object, queries: np.ndarray, first_ids: np.ndarray) -> float:
    """Seconds for one batch of queries; each query (a stored row) must find itself first."""
    started = time.perf_counter()
    result = client.search("scale", queries, top_k=10)  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    if not np.array_equal(result.ids[:, 0], first_ids):
        raise RuntimeError(f"queries did not find themselves: {result.ids[:5, 0]} vs {first_ids[:5]}")
    return elapsed


def restart(shards: LocalShards, queries: np.ndarray, first_ids: np.ndarray, rows: int) -> tuple[float, float]:
    """kill -9 every shard, start them again; seconds until every shard is ready (its indexes
    open) and until one query is answered, after which the counts must be whole."""
    from gnes.client import IndexClient

    for i in range(len(shards.ports)):
        shards.kill(i)
    started = time.perf_counter()
    for i in range(len(shards.ports)):
        shards.start(i)
    shards.wait_ready()
    ready = time.perf_counter() - started
    with IndexClient(addresses=shards.addresses, timeout=600) as client:
        answer(client, queries[:1], first_ids[:1])
        answered = time.perf_counter() - started
        count = client.count("scale")
    if count != rows:
        raise RuntimeError(f"{count} vectors after the restart, {rows} were acknowledged")
    return ready, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=20_000)
    parser.add_argument("--store", choices=["float16", "float32"], default="float16", help="the rows' type")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print
    from gnes.client import IndexClient

    rows, dim = args.rows, args.dim
    with tempfile.TemporaryDirectory(prefix="gnes-scale-") as tmp:
        workdir = Path(tmp)
        dtype, width = args.store, np.dtype(args.store).itemsize
        data, ids = workdir / "vectors.raw", workdir / "ids.npy"
        generate(data, rows, dim, dtype)
        np.save(ids, np.arange(rows, dtype=np.int64))
        config = workdir / "index.json"
        kind = {"faiss_factory": "SQfp16"} if dtype == "float16" else {"index_type": "flat"}
        config.write_text(json.dumps({"dim": dim, "metric": "l2", **kind, "store_dtype": dtype}))
        stored = np.memmap(data, dtype=np.dtype(dtype).newbyteorder("<"), mode="r", shape=(rows, dim))
        pick = np.linspace(0, rows - 1, 10).astype(np.int64)
        queries, first_ids = np.asarray(stored[pick], dtype=np.float32), pick
        base = faiss_rate(data, dim, rows, args.batch_size, dtype)
        disk = disk_rate(workdir, rows // args.shards, dim * width)  # what one shard writes
        limit = min(base, disk)
        result: dict[str, object] = {
            "rows": rows,
            "dim": dim,
            "shards": args.shards,
            "store": dtype,
            "loadavg_1m_start": os.getloadavg()[0],
            "faiss_add_per_s": round(base),
            "disk_fdatasync_per_s": round(disk),
            "limit_per_s": round(limit),
        }
        say(f"{rows:,} vectors of {dim} {dtype} into {args.shards} shards ({kind}, store_dtype {dtype})")
        say(f"faiss add, one process: {base:,.0f}/s; disk: {disk:,.0f} rows/s; limit {limit:,.0f}/s")
        with LocalShards(args.shards, workdir / "shards", start_timeout=900) as shards:
            command = [sys.executable, "-m", "gnes", "load", str(data), "--dim", str(dim), "--dtype", dtype]
            command += ["--ids", str(ids), "--index", "scale", "--create", str(config), "--quiet"]
            command += ["--shards", shards.addresses, "--batch_size", str(args.batch_size), "--timeout", "600"]
            done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
            match = _RATE.search(done.stdout)
            if done.returncode != 0 or match is None:
                raise RuntimeError(f"gnes load failed ({done.returncode}): {done.stdout}{done.stderr}")
            rate = float(match.group(3))  # gnes load's own rate (the elapsed time it prints is rounded)
            rss = [peak_rss_mb(p.pid) for p in shards.procs if p is not None]
            with IndexClient(addresses=shards.addresses, timeout=600) as client:
                query_s = answer(client, queries, first_ids)
            result.update(
                load_per_s=round(rate),
                load_of_limit=round(rate / limit, 4),
                load_per_shard_per_s=round(rate / args.shards),
                peak_rss_mb_per_shard=[round(r) for r in rss],
                query_batch_10_s=round(query_s, 4),
            )
            say(f"gnes load: {rate:,.0f} vectors/s ({rate / limit:.2f} of the limit)")
            say(f"peak RSS per shard (MiB): {', '.join(f'{r:,.0f}' for r in rss)}; 10 queries: {query_s:.3f} s")
            rebuilt_s = restart(shards, queries, first_ids, rows)
            say("kill -9, restart with no snapshot (rebuilt from the store): ", end="")
            say(f"ready after {rebuilt_s[0]:.1f} s, answered after {rebuilt_s[1]:.1f} s")
            with IndexClient(addresses=shards.addresses, timeout=600) as client:
                started = time.perf_counter()
                client.save("scale")
                save_s = time.perf_counter() - started
                extra = np.random.default_rng(1).standard_normal((10_000, dim), dtype=np.float32)
                client.add("scale", extra, ids=np.arange(rows, rows + 10_000))
            replay_s = restart(shards, queries, first_ids, rows + 10_000)
            say(f"snapshot: {save_s:.1f} s; kill -9 after 10,000 more, restart from it + the log: ", end="")
            say(f"ready after {replay_s[0]:.1f} s, answered after {replay_s[1]:.1f} s")
            result.update(
                restart_rebuild_ready_s=round(rebuilt_s[0], 2),
                restart_rebuild_answered_s=round(rebuilt_s[1], 2),
                save_s=round(save_s, 2),
                restart_snapshot_replay_ready_s=round(replay_s[0], 2),
                restart_snapshot_replay_answered_s=round(replay_s[1], 2),
                peak_rss_mb_per_shard_after_restarts=[round(peak_rss_mb(p.pid)) for p in shards.procs if p],
                loadavg_1m_end=os.getloadavg()[0],
            )
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
