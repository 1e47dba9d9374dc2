"""Bulk-load rate into sharded flat indexes, beside faiss IndexFlatL2.add in one process.

Why: `gnes load` is for loading millions of precomputed vectors; this shows what the network,
the protobuf messages and the shards' bookkeeping cost on top of faiss's own add, which for
a flat index is little more than a memory copy, so the ratio is an upper bound on overhead.

Data: the 60,000 Fashion-MNIST training images (784 dims), repeated --repeat times with a
small offset so that every vector differs, written to a temporary .npy file (float32) and a
raw float16 file. Each gnes run loads a fresh flat L2 index into N shard processes (default 2):

- `gnes load` as a subprocess (what a user runs; its own printed rate, excluding start-up),
  float32 .npy and float16 raw;
- the same with `store_sync: false` in the index configuration (no fsync per write);
- IndexClient.add_stream called in this process with the same batches;
- faiss IndexFlatL2.add in this process, batch by batch from the same memory-mapped file;
- the disk: the bytes the shards store for these vectors (float32 rows, as the store keeps
  them) written to a temporary file in the shards' directory in 1 MiB writes and fdatasync'd
  at the end, like `dd conv=fdatasync`.

The limit is the slower of faiss and the disk; every gnes rate is also given as a ratio to it.

    python bench/bulk_load.py [--shards 2] [--repeat 2] [--batch_size 10000] [--max_in_flight 8] [--warm_gib 4] [--json]
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
from fashion_mnist import load_fashion_mnist
from recall import REPO

from gnes.cluster.local_shards import LocalShards

_RATE = re.compile(r"loaded (\d+) vectors in ([\d.]+) s \((\d+) vectors/s\)")


def write_inputs(workdir: Path, repeat: int) -> tuple[Path, Path, int, int]:
    """The data as float32 .npy and float16 raw files; returns (npy, f16, rows, dim)."""
    train, _ = load_fashion_mnist()
    rows, dim = len(train) * repeat, train.shape[1]
    npy = workdir / "vectors.npy"
    out = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, dim))
    for r in range(repeat):
        out[r * len(train) : (r + 1) * len(train)] = train + np.float32(r * 1e-3)
    out.flush()
    f16 = workdir / "vectors.f16"
    with f16.open("wb") as f:
        for start in range(0, rows, 10000):
            f.write(np.asarray(out[start : start + 10000], dtype=np.float16).tobytes())
    del out
    return npy, f16, rows, dim


def warm_memory(gib: float) -> float:
    """Touch `gib` GiB of fresh memory once and free it; the rate of that first touch, MB/s.

    Why: a micro-VM's host backs guest memory lazily, so the first write to any page since
    the VM booted is slow (this 2-core VM: about 430 MB/s, 6 GiB in 14 s), and later writes to
    pages the guest has freed and reuses are not. Both faiss's add (fresh anonymous memory)
    and a shard's pwrite (fresh page-cache pages: 376 MB took 0.69 s of kernel time before and
    0.09 s after) pay it, in whatever order they first come, so without this the figures
    measure the hypervisor. A server that has run a while has its memory backed."""
    chunk = 256 << 20
    started = time.perf_counter()
    held = [np.ones(chunk, dtype=np.uint8) for _ in range(int(gib * (1 << 30)) // chunk)]
    seconds = time.perf_counter() - started
    touched = len(held) * chunk
    del held
    return touched / 1e6 / max(seconds, 1e-9)


def faiss_rate(npy: Path, batch_size: int) -> float:
    import faiss

    vectors = np.load(npy, mmap_mode="r")
    index = faiss.IndexFlatL2(vectors.shape[1])
    started = time.perf_counter()
    for start in range(0, len(vectors), batch_size):
        index.add(np.ascontiguousarray(vectors[start : start + batch_size]))
    elapsed = time.perf_counter() - started
    assert index.ntotal == len(vectors)
    return len(vectors) / elapsed


def disk_rate(workdir: Path, rows: int, row_bytes: int) -> float:
    """Rows per second the disk takes, written in 1 MiB blocks and fdatasync'd once at the end."""
    block = np.random.default_rng(0).bytes(1 << 20)
    total = rows * row_bytes
    path = workdir / "disk-rate.tmp"
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        started = time.perf_counter()
        written = 0
        while written < total:
            written += os.write(descriptor, block[: min(len(block), total - written)])
        os.fdatasync(descriptor)
        elapsed = time.perf_counter() - started
    finally:
        os.close(descriptor)
        path.unlink()
    return rows / elapsed


def gnes_load_rate(shards: LocalShards, name: str, config: Path, args: argparse.Namespace, *files: str) -> float:
    cmd = [sys.executable, "-m", "gnes", "load", *files, "--index", name, "--create", str(config), "--quiet"]
    cmd += ["--shards", shards.addresses, "--batch_size", str(args.batch_size)]
    cmd += ["--max_in_flight", str(args.max_in_flight)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    match = _RATE.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise RuntimeError(f"gnes load failed ({result.returncode}): {result.stdout}{result.stderr}")
    return float(match.group(3))  # its own rate: the elapsed time it prints is rounded to 10 ms


def add_stream_rate(client: object, name: str, npy: Path, dim: int, args: argparse.Namespace) -> float:
    vectors = np.load(npy, mmap_mode="r")
    client.create_index(name, {"dim": dim, "metric": "l2", "index_type": "flat"})  # type: ignore[attr-defined]
    batches = (
        (np.ascontiguousarray(vectors[s : s + args.batch_size]), None, None)
        for s in range(0, len(vectors), args.batch_size)
    )
    started = time.perf_counter()
    loaded = sum(client.add_stream(name, batches, max_in_flight=args.max_in_flight))  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - started
    assert loaded == len(vectors), (loaded, len(vectors))
    return loaded / elapsed


def report(label: str, rate: float, base: float, limit: float, quiet: bool) -> None:
    if not quiet:
        print(f"{label:<38} {rate:>12,.0f} vectors/s   {rate / base:.4f} of faiss   {rate / limit:.4f} of the limit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2, help="shard processes")
    parser.add_argument("--repeat", type=int, default=2, help="copies of the 60,000 training images")
    parser.add_argument("--batch_size", type=int, default=10000, help="vectors per request")
    parser.add_argument("--max_in_flight", type=int, default=8, help="requests in flight")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    parser.add_argument("--warm_gib", type=float, default=4.0, help="fresh memory touched once first (0: none)")
    args = parser.parse_args()
    quiet = args.json
    warm = warm_memory(args.warm_gib) if args.warm_gib > 0 else None

    from gnes.client import IndexClient

    with tempfile.TemporaryDirectory(prefix="gnes-bulk-") as tmp:
        workdir = Path(tmp)
        npy, f16, rows, dim = write_inputs(workdir, args.repeat)
        config = workdir / "flat.json"
        config.write_text(json.dumps({"dim": dim, "metric": "l2", "index_type": "flat"}))
        no_sync = workdir / "flat-nosync.json"
        no_sync.write_text(json.dumps({"dim": dim, "metric": "l2", "index_type": "flat", "store_sync": False}))
        base = faiss_rate(npy, args.batch_size)
        disk = disk_rate(workdir, rows, dim * 4)
        limit = min(base, disk)
        result: dict[str, object] = {
            "rows": rows,
            "dim": dim,
            "shards": args.shards,
            "batch_size": args.batch_size,
            "faiss_add_per_s": round(base),
            "disk_fdatasync_per_s": round(disk),
            "limit_per_s": round(limit),
            "loadavg_1m": os.getloadavg()[0],
            "warm_gib": args.warm_gib,
            "warm_mb_per_s": None if warm is None else round(warm),
        }
        if not quiet:
            print(f"{rows} vectors of dim {dim}, batches of {args.batch_size}, {args.shards} shards")
            if warm is not None:
                print(f"{args.warm_gib:g} GiB of fresh memory touched first, at {warm:,.0f} MB/s")
            print(f"{'faiss IndexFlatL2.add, one process':<38} {base:>12,.0f} vectors/s")
            print(f"{'disk, float32 rows, fdatasync':<38} {disk:>12,.0f} vectors/s ({disk * dim * 4 / 1e6:,.0f} MB/s)")
            print(f"{'limit (the slower of the two)':<38} {limit:>12,.0f} vectors/s")
        rates: dict[str, float] = {}
        with LocalShards(args.shards, workdir) as shards, IndexClient(addresses=shards.addresses) as client:
            loads = [
                ("f32", "gnes load, float32 .npy", config, [str(npy)]),
                ("f16", "gnes load, float16 raw", config, [str(f16), "--dim", str(dim), "--dtype", "float16"]),
                ("nosync", "gnes load, float32, store_sync false", no_sync, [str(npy)]),
            ]
            for name, label, config_path, files in loads:
                rates[name] = gnes_load_rate(shards, name, config_path, args, *files)
                report(label, rates[name], base, limit, quiet)
            rates["stream"] = add_stream_rate(client, "stream", npy, dim, args)
            report("IndexClient.add_stream, float32", rates["stream"], base, limit, quiet)
            for name in ("f32", "f16", "nosync", "stream"):
                count = client.count(name)
                assert count == rows, (name, count, rows)
                client.drop_index(name)
        for name, rate in rates.items():
            result[f"{name}_per_s"] = round(rate)
            result[f"{name}_of_limit"] = round(rate / limit, 4)
            result[f"{name}_of_faiss"] = round(rate / base, 4)
        if quiet:
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
