"""Recall, query rate and build time of each index type, on Fashion-MNIST, through real shards.

Why: the approximate index types trade recall for speed and memory, and how much depends on
the data and on the query-time knobs (nprobe for IVF, ef_search for HNSW). This measures the
trade on real 784-dim data, sharded the way gnes runs it, against exact search. The exact
answer is computed twice, by the gnes "flat" index and by faiss IndexFlatL2 in this process,
so the sharded exact search is itself checked.

Workload: the 60,000 training images are loaded (IndexClient.add_stream, batches of 5,000)
into N shard processes (default 2); then the first 1,000 test images are the queries, top_k 10,
sent in batches of 100. recall@10 = |found ∩ exact| / 10, averaged over the queries.

Two baselines, per type and knob, built before the timing, answering the same batches of 100 with
the same knobs and the shards' BLAS setting in this process:
- `in-proc`: the one faiss index of all the vectors (the factory string gnes builds, trained on as
  many vectors as the shards train on together), the faster of all cores and one thread;
- `sharded`: faiss IndexShards over one such index per shard, each holding the rows the client's
  placement sends that shard and trained on that shard's first train_num, so it does the work the
  shards do (every shard runs every query); the fastest of IndexShards's threads and the
  sub-indexes searched in turn with all cores or one thread.
Each row's `of in-proc` / `of sharded` is gnes's query rate over that baseline's.
`--repeat N` times N passes over the queries on both sides and keeps each side's best: on a
machine shared with other work, one pass's rate can swing by a factor of two.

    apt-get install -y dataset-fashion-mnist
    python bench/recall.py [--shards 2] [--types flat,hnsw_sq,ivf_flat,ivf_sq,ivf_pq] [--queries 1000] [--json]
                           [--knobs default,nprobe=1,ef_search=16] [--repeat 3]

Shards run as local processes through `gnes.cluster.local_shards.LocalShards`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from fashion_mnist import load_fashion_mnist

from gnes.cluster.local_shards import LocalShards

REPO = Path(__file__).resolve().parents[1]
TOP_K, QUERY_BATCH, LOAD_BATCH = 10, 100, 5000
NPROBES = (1, 4, 16, 64)
EF_SEARCHES = (16, 64, 256)
ALL_TYPES = ("flat", "hnsw_sq", "ivf_flat", "ivf_sq", "ivf_pq")


def batches(vectors: np.ndarray, size: int) -> Iterator[tuple[np.ndarray, np.ndarray, None]]:
    """Row i gets id i, so that found ids compare with faiss's row numbers."""
    for start in range(0, len(vectors), size):
        stop = min(start + size, len(vectors))
        yield vectors[start:stop], np.arange(start, stop, dtype=np.int64), None


def exact_neighbours(train: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared L2 distances, ids) of the k nearest train rows, by faiss IndexFlatL2 in this process."""
    import faiss

    index = faiss.IndexFlatL2(train.shape[1])
    index.add(train)
    return index.search(queries, k)


def faiss_index(config: dict[str, Any], vectors: np.ndarray, train_num: int, ids: np.ndarray | None = None) -> Any:
    """The faiss index gnes builds for `config`, in this process, trained on the first
    `train_num` of `vectors` and filled with all of them; untimed. With `ids`, labelled as a
    shard labels it: IVF keeps ids itself, other types go inside faiss's id map."""
    import faiss

    from gnes.indexer.config import IndexConfig
    from gnes.indexer.vectors import BLAS_FROM_QUERIES

    # As a shard sets it before each search: BLAS for batches of 4 queries and more.
    faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES * vectors.shape[1]
    index = faiss.index_factory(vectors.shape[1], IndexConfig.from_dict(config).factory, faiss.METRIC_L2)
    if not index.is_trained:
        index.train(vectors[: min(len(vectors), train_num)])
    if ids is None:
        index.add(vectors)
        return index
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)
    index.add_with_ids(vectors, ids)
    return index


def sharded_indexes(config: dict[str, Any], train: np.ndarray, placement: Any, train_num: int) -> list[Any]:
    """One faiss index per gnes shard, holding the rows `placement` (the client's) sends that
    shard, trained on that shard's first `train_num` of them as a shard trains when they arrive."""
    parts = placement.split(np.arange(len(train), dtype=np.int64)).values()
    return [faiss_index(config, train[rows], train_num, rows.astype(np.int64)) for rows in parts]


def set_knobs(index: Any, knobs: dict[str, int | None]) -> None:
    """nprobe / efSearch as the row asks, faiss's defaults otherwise (nprobe 1, efSearch 16)."""
    import faiss

    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):  # IndexIDMap2 too
        index = faiss.downcast_index(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = knobs.get("nprobe") or 1
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None:
        hnsw.efSearch = knobs.get("ef_search") or 16


def index_shards(subs: list[Any], threaded: bool) -> Any:
    """faiss IndexShards over `subs`; successive_ids=False: the sub-indexes answer the bench's ids."""
    import faiss

    shards = faiss.IndexShards(subs[0].d, threaded, False)
    for sub in subs:
        shards.add_shard(sub)
    return shards


def inprocess_rate(
    candidates: list[tuple[str, Any, int]], queries: np.ndarray, repeat: int = 1
) -> tuple[np.ndarray, float, str]:
    """Like timed_search, for each (label, faiss index, OpenMP threads of this thread) in turn;
    returns the best pass's ids, queries per second and label."""
    import faiss

    best, best_label, best_found = 0.0, "", np.zeros(0)
    for label, index, threads in candidates:
        faiss.omp_set_num_threads(threads)
        index.search(queries[:QUERY_BATCH], TOP_K)  # warm-up
        for _ in range(repeat):
            found = []
            started = time.perf_counter()
            for start in range(0, len(queries), QUERY_BATCH):
                found.append(index.search(queries[start : start + QUERY_BATCH], TOP_K)[1])
            rate = len(queries) / (time.perf_counter() - started)
            if rate > best:
                best, best_label, best_found = rate, label, np.concatenate(found)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return best_found, best, best_label


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    hits = [len(set(f[:k].tolist()) & set(e.tolist())) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits)) / k


def timed_search(
    client: Any, name: str, queries: np.ndarray, repeat: int = 1, **knobs: int | None
) -> tuple[np.ndarray, float]:
    """All queries in batches of QUERY_BATCH, `repeat` times; returns (ids [q, k], the best
    pass's queries per second)."""
    client.search(name, queries[:QUERY_BATCH], top_k=TOP_K, **knobs)  # warm-up
    best = 0.0
    for _ in range(repeat):
        found = []
        started = time.perf_counter()
        for start in range(0, len(queries), QUERY_BATCH):
            found.append(client.search(name, queries[start : start + QUERY_BATCH], top_k=TOP_K, **knobs).ids)
        best = max(best, len(queries) / (time.perf_counter() - started))
    return np.concatenate(found), best


def index_config(index_type: str, args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {"dim": 784, "metric": "l2", "index_type": index_type}
    if index_type.startswith("ivf"):
        config.update(nlist=args.nlist, train_num=args.train_num)
    if index_type == "ivf_pq":
        config.update(pq_m=args.pq_m)
    if index_type.startswith("hnsw"):
        config.update(train_num=args.train_num)
    return config


def build(client: Any, name: str, config: dict[str, Any], train: np.ndarray, timeout: float) -> float:
    """Create, load and wait for training; seconds taken."""
    started = time.perf_counter()
    client.create_index(name, config, exist_ok=False)
    acknowledged = sum(client.add_stream(name, batches(train, LOAD_BATCH), max_in_flight=4))
    if acknowledged != len(train):
        raise RuntimeError(f"{name}: {acknowledged} of {len(train)} vectors acknowledged")
    client.wait_trained(name, timeout)
    elapsed = time.perf_counter() - started
    count = client.count(name)
    if count != len(train):
        raise RuntimeError(f"{name}: count is {count} after loading {len(train)}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2, help="shard processes")
    parser.add_argument("--types", default=",".join(ALL_TYPES), help="index types, comma-separated")
    parser.add_argument("--queries", type=int, default=1000, help="test images used as queries")
    parser.add_argument("--nlist", type=int, default=256, help="IVF lists")
    parser.add_argument("--pq_m", type=int, default=16, help="ivf_pq sub-quantizers (must divide 784)")
    parser.add_argument("--train_num", type=int, default=20000, help="vectors a shard trains on")
    parser.add_argument("--train_timeout", type=float, default=600.0, help="seconds to wait for training")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    parser.add_argument(
        "--repeat", type=int, default=1, help="passes over the queries per row, both sides; the best counts"
    )
    parser.add_argument(
        "--knobs", default="", help="only these rows, e.g. default,nprobe=1,ef_search=16 (quick checks); all if empty"
    )
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print

    from gnes.client import IndexClient

    train, test = load_fashion_mnist()
    queries = np.ascontiguousarray(test[: args.queries])
    started = time.perf_counter()
    exact_d, exact_ids = exact_neighbours(train, queries, TOP_K)
    say(f"faiss IndexFlatL2 in-process: {len(queries)} queries in {time.perf_counter() - started:.2f} s")
    say(f"{len(train)} vectors of dim {train.shape[1]}, {len(queries)} queries, top_k {TOP_K}, {args.shards} shards")
    say(f"{'type':<9} {'knob':<14} {'recall@10':>9} {'queries/s':>10} {'in-proc q/s':>11} {'of in-proc':>10}", end="")
    say(f" {'sharded q/s':>11} {'of sharded':>10} {'in-proc recall':>14} {'sharded recall':>14} {'build s':>8}")
    cores = os.cpu_count() or 1
    thread_counts = sorted({cores, 1}, reverse=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gnes-recall-") as tmp, LocalShards(args.shards, Path(tmp)) as shards:
        with IndexClient(addresses=shards.addresses) as client:
            for index_type in args.types.split(","):
                name = f"fmnist-{index_type.replace('_', '-')}"
                config = index_config(index_type, args)
                build_s = build(client, name, config, train, args.train_timeout)
                local = faiss_index(config, train, args.train_num * args.shards)
                subs = sharded_indexes(config, train, client.placement, args.train_num)
                if sorted(client.count_per_shard(name)) != sorted(sub.ntotal for sub in subs):
                    raise RuntimeError(f"{name}: shards hold {client.count_per_shard(name)}, not the placement's split")
                # An OpenMP thread count is per thread: omp_set_num_threads here does not reach
                # IndexShards's own threads, which run the process default (all cores each;
                # OMP_NUM_THREADS=1 for the bench would also pin the BLAS of `local` to one
                # thread). So the sub-indexes are also searched in turn here, all cores or one.
                single = [(f"{n} thread(s)", local, n) for n in thread_counts]
                sharded = [("threaded", index_shards(subs, threaded=True), cores)]
                sharded += [(f"in turn, {n} thread(s)", index_shards(subs, threaded=False), n) for n in thread_counts]
                runs: list[tuple[str, dict[str, int | None]]] = [("default", {})]
                if index_type.startswith("ivf"):
                    runs += [(f"nprobe={n}", {"nprobe": n}) for n in NPROBES]
                if index_type.startswith("hnsw"):
                    runs += [(f"ef_search={e}", {"ef_search": e}) for e in EF_SEARCHES]
                if args.knobs:
                    runs = [(label, knobs) for label, knobs in runs if label in args.knobs.split(",")]
                for label, knobs in runs:
                    found, qps = timed_search(client, name, queries, args.repeat, **knobs)
                    for index in (local, *subs):
                        set_knobs(index, knobs)
                    local_found, local_qps, _ = inprocess_rate(single, queries, args.repeat)
                    sharded_found, sharded_qps, sharded_how = inprocess_rate(sharded, queries, args.repeat)
                    recall, local_recall = recall_at_k(found, exact_ids), recall_at_k(local_found, exact_ids)
                    sharded_recall = recall_at_k(sharded_found, exact_ids)
                    say(f"{index_type:<9} {label:<14} {recall:>9.4f} {qps:>10.0f} {local_qps:>11.0f}", end="")
                    say(f" {qps / local_qps:>10.2f} {sharded_qps:>11.0f} {qps / sharded_qps:>10.2f}", end="")
                    say(f" {local_recall:>14.4f} {sharded_recall:>14.4f} {build_s:>8.1f}", flush=True)
                    rows.append(
                        {
                            "type": index_type,
                            "knob": label,
                            "recall": round(recall, 4),
                            "qps": round(qps),
                            "inprocess_qps": round(local_qps),
                            "of_inprocess": round(qps / local_qps, 4),
                            "inprocess_recall": round(local_recall, 4),
                            "sharded_qps": round(sharded_qps),
                            "of_sharded": round(qps / sharded_qps, 4),
                            "sharded_recall": round(sharded_recall, 4),
                            "sharded_best": sharded_how,
                            "build_s": round(build_s, 2),
                        }
                    )
                if index_type == "flat":
                    result = client.search(name, queries, top_k=TOP_K)
                    gap = float(np.max(np.abs(result.scores - np.sqrt(np.maximum(exact_d, 0)))))
                    say(f"flat vs faiss IndexFlatL2: largest distance difference {gap:.2e} (scores are L2 distances)")
                del local, subs, single, sharded
                client.drop_index(name)
    if args.json:
        summary = {"shards": args.shards, "queries": len(queries), "repeat": args.repeat, "rows": rows}
        summary["loadavg_1m"], summary["loadavg_5m"] = os.getloadavg()[:2]
        summary["min_of_inprocess"] = min((r["of_inprocess"] for r in rows), default=None)
        summary["min_of_sharded"] = min((r["of_sharded"] for r in rows), default=None)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
