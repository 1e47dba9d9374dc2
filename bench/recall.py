"""Recall, query rate and build time of each index type, on Fashion-MNIST, through real shards.

Why: the approximate index types trade recall for speed and memory, and how much depends on
the data and on the query-time knobs (nprobe for IVF, ef_search for HNSW). This measures the
trade on real 784-dim data, sharded the way gnes runs it, against exact search. The exact
answer is computed twice, by the gnes "flat" index and by faiss IndexFlatL2 in this process,
so the sharded exact search is itself checked.

Workload: the 60,000 training images are loaded (IndexClient.add_stream, batches of 5,000)
into N shard processes (default 2); then the first 1,000 test images are the queries, top_k 10,
sent in batches of 100. recall@10 = |found ∩ exact| / 10, averaged over the queries.

Baseline, per type and knob: the same faiss index (the factory string gnes builds, trained
on as many vectors as the shards train on together) in this process, built before the
timing, answering the same batches of 100 with the same knobs and the shards' BLAS setting
(the faster of all cores and one thread); each row's `of in-process` is gnes's query rate over that one's.
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


def inprocess_index(config: dict[str, Any], train: np.ndarray, shards: int) -> Any:
    """The faiss index gnes builds for `config`, in this process: trained, filled, untimed."""
    import faiss

    from gnes.indexer.config import IndexConfig

    faiss.cvar.distance_compute_blas_threshold = 16  # as the shards set it (gnes/indexer/vectors.py)
    index = faiss.index_factory(train.shape[1], IndexConfig.from_dict(config).factory, faiss.METRIC_L2)
    if not index.is_trained:
        index.train(train[: min(len(train), config["train_num"] * shards)])
    index.add(train)
    return index


def inprocess_rate(
    index: Any, queries: np.ndarray, knobs: dict[str, int | None], repeat: int = 1
) -> tuple[np.ndarray, float]:
    """Like timed_search, on the in-process index with the same knobs (faiss defaults otherwise)."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    hnsw = getattr(faiss.downcast_index(index), "hnsw", None)
    if ivf is not None:
        ivf.nprobe = knobs.get("nprobe") or 1
    if hnsw is not None:
        hnsw.efSearch = knobs.get("ef_search") or 16
    # With all cores (as the shards together have them) and with one: OpenMP threads that
    # share a busy machine can be slower than one thread, so the faster is the baseline.
    best = 0.0
    for threads in sorted({os.cpu_count() or 1, 1}, reverse=True):
        faiss.omp_set_num_threads(threads)
        index.search(queries[:QUERY_BATCH], TOP_K)  # warm-up
        for _ in range(repeat):
            found = []
            started = time.perf_counter()
            for start in range(0, len(queries), QUERY_BATCH):
                found.append(index.search(queries[start : start + QUERY_BATCH], TOP_K)[1])
            best = max(best, len(queries) / (time.perf_counter() - started))
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return np.concatenate(found), best


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
    say(f" {'in-proc recall':>14} {'build s':>8}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gnes-recall-") as tmp, LocalShards(args.shards, Path(tmp)) as shards:
        with IndexClient(addresses=shards.addresses) as client:
            for index_type in args.types.split(","):
                name = f"fmnist-{index_type.replace('_', '-')}"
                config = index_config(index_type, args)
                build_s = build(client, name, config, train, args.train_timeout)
                local = inprocess_index({"train_num": args.train_num, **config}, train, args.shards)
                runs: list[tuple[str, dict[str, int | None]]] = [("default", {})]
                if index_type.startswith("ivf"):
                    runs += [(f"nprobe={n}", {"nprobe": n}) for n in NPROBES]
                if index_type.startswith("hnsw"):
                    runs += [(f"ef_search={e}", {"ef_search": e}) for e in EF_SEARCHES]
                if args.knobs:
                    runs = [(label, knobs) for label, knobs in runs if label in args.knobs.split(",")]
                for label, knobs in runs:
                    found, qps = timed_search(client, name, queries, args.repeat, **knobs)
                    local_found, local_qps = inprocess_rate(local, queries, knobs, args.repeat)
                    recall, local_recall = recall_at_k(found, exact_ids), recall_at_k(local_found, exact_ids)
                    say(f"{index_type:<9} {label:<14} {recall:>9.4f} {qps:>10.0f} {local_qps:>11.0f}", end="")
                    say(f" {qps / local_qps:>10.2f} {local_recall:>14.4f} {build_s:>8.1f}", flush=True)
                    rows.append(
                        {
                            "type": index_type,
                            "knob": label,
                            "recall": round(recall, 4),
                            "qps": round(qps),
                            "inprocess_qps": round(local_qps),
                            "of_inprocess": round(qps / local_qps, 4),
                            "inprocess_recall": round(local_recall, 4),
                            "build_s": round(build_s, 2),
                        }
                    )
                if index_type == "flat":
                    result = client.search(name, queries, top_k=TOP_K)
                    gap = float(np.max(np.abs(result.scores - np.sqrt(np.maximum(exact_d, 0)))))
                    say(f"flat vs faiss IndexFlatL2: largest distance difference {gap:.2e} (scores are L2 distances)")
                del local
                client.drop_index(name)
    if args.json:
        summary = {"shards": args.shards, "queries": len(queries), "repeat": args.repeat, "rows": rows}
        summary["loadavg_1m"], summary["loadavg_5m"] = os.getloadavg()[:2]
        summary["min_of_inprocess"] = min((r["of_inprocess"] for r in rows), default=None)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
