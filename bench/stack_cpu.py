"""Where the stack's CPU goes: each process's CPU time and wake-ups while it indexes and queries.

The stack is compose/gnes-swarm.yml run as local processes with the hash encoder, as in
bench/pipeline.py. It indexes `--rounds` x 10,000 Lee-corpus sentences in requests of 100 through
the gRPC stream, then sends `--queries` sequential queries. For each process (the bench client
too) it prints the CPU time (user + system, from /proc) per 10,000 documents and per query, and
the voluntary context switches (wake-ups) per query. Wall-clock rates on a shared 2-core VM
drift by up to 2x between runs; the wake-up counts do not, and the CPU split shows which
process a change should target.

    python bench/stack_cpu.py [--shards 3] [--rounds 4] [--queries 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import REPO, short_documents, wait_settled  # noqa: E402

from gnes.client import GnesClient  # noqa: E402
from gnes.stack.local import LocalStack, free_port_overrides  # noqa: E402

DOCS_PER_ROUND, BATCH, TOP_K = 10_000, 100, 10
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def wakeups(pid: int) -> int:
    """Voluntary context switches over all of the process's threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sample(pids: dict[str, int]) -> dict[str, tuple[float, int]]:
    figures = {name: (cpu_seconds(pid), wakeups(pid)) for name, pid in pids.items()}
    figures["client (bench)"] = (own_cpu(), wakeups(os.getpid()))
    return figures


def run(shards: int, rounds: int, queries: int) -> dict[str, object]:
    docs = short_documents(DOCS_PER_ROUND)
    overrides = free_port_overrides()
    overrides.update(
        INDEXER_REPLICAS=str(shards),
        ENCODER_YAML_PATH=str(REPO / "yaml/encoder-hash.yml"),
        INDEXER_YAML_PATH=str(REPO / "yaml/indexer-hash.yml"),
    )
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True)
        with stack, GnesClient(port=int(overrides["GRPC_PORT"]), timeout=600) as client:
            client.query(docs[0], top_k=TOP_K)
            wait_settled(stack, shards)
            pids = {name: proc.pid for name, proc in stack.processes.items()}
            start = sample(pids)
            started = time.perf_counter()
            for r in range(rounds):
                summary = client.index(docs, batch_size=BATCH, start_id=r * DOCS_PER_ROUND)
                if summary.errors or summary.num_docs != len(docs):
                    raise RuntimeError(f"indexing failed: {summary.errors[:3]}")
            index_s = time.perf_counter() - started
            indexed = sample(pids)
            started = time.perf_counter()
            for i in range(queries):
                client.query(docs[(i * 7919) % len(docs)], top_k=TOP_K)
            query_s = time.perf_counter() - started
            queried = sample(pids)
    rows = {}
    for name in start:
        rows[name] = {
            "index_cpu_ms_per_10k": round((indexed[name][0] - start[name][0]) * 1000 / rounds, 1),
            "query_cpu_us": round((queried[name][0] - indexed[name][0]) * 1e6 / queries, 1),
            "query_wakeups": round((queried[name][1] - indexed[name][1]) / queries, 2),
        }
    return {
        "shards": shards,
        "index_wall_ms_per_10k": round(index_s * 1000 / rounds, 1),
        "query_wall_us": round(query_s * 1e6 / queries, 1),
        "processes": rows,
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 10,000 documents")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    result = run(args.shards, args.rounds, args.queries)
    if args.json:
        print(json.dumps(result), flush=True)
        return
    rows: dict[str, dict[str, float]] = result["processes"]  # type: ignore[assignment]
    print(f"{args.shards} shard(s), hash encoder, {args.rounds} x 10,000 documents, {args.queries} queries")
    print(f"{'process':<22} {'index CPU ms/10k':>16} {'query CPU us':>12} {'wake-ups/query':>14}")
    for name, row in rows.items():
        index_ms, query_us, woken = row["index_cpu_ms_per_10k"], row["query_cpu_us"], row["query_wakeups"]
        print(f"{name:<22} {index_ms:>16.1f} {query_us:>12.1f} {woken:>14.2f}")
    total = {key: sum(row[key] for row in rows.values()) for key in next(iter(rows.values()))}
    print(
        f"{'all':<22} {total['index_cpu_ms_per_10k']:>16.1f} {total['query_cpu_us']:>12.1f}"
        f" {total['query_wakeups']:>14.2f}"
    )
    print(
        f"wall: {result['index_wall_ms_per_10k']} ms per 10,000 documents, {result['query_wall_us']} us per query;"
        f" load average {result['loadavg_1m']:.2f}"
    )


if __name__ == "__main__":
    main()
