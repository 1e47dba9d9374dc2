"""Indexing rate and query latency through the whole stack, beside the same work in one process.

Workload (issue 2): rounds of N short text documents (default 5 x 10,000) indexed in requests of
100 through the streaming gRPC call; after the first round, 300 sequential queries (top_k 10)
after 20 warm-up queries. The stack is compose/gnes-swarm.yml run as local processes (3 shards). The baseline
calls the encoder and one shard index directly, in this process. Each stack is paired with its
own baseline, and the two take turns round by round (one round takes a tenth of a second, and a
rate on a shared VM drifts by up to 2x within minutes): the indexing figure is the median of the
rounds' ratios, printed with their range.

The floor of a query: the frontend alone (STATUS over gRPC, measured in each stack run) plus
QUERY_HOPS ZeroMQ hops between processes (one hop measured through a `gnes proxy`). Every
figure's ratio is taken against what was measured in the same run. `--shards 1,3` runs a
stack of each size; `--json` prints one JSON line with every figure instead of the table.

`--transport ipc` (the default, as `gnes stack` runs) lets the stack's processes talk over Unix
domain sockets (gnes/service/endpoints.py), `tcp` over loopback TCP; `tcp,ipc` runs a stack of
each, one after the other. The hop is measured over both, and each stack's floor uses the hop of
its own transport; `p50_of_tcp_floor` also gives the ratio to the TCP floor (the floor as issue 12
first defined it).

    python bench/pipeline.py [--encoders hash,minilm] [--docs 10000] [--rounds 5] [--shards 3]
                             [--transport ipc] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gensim
import numpy as np
import zmq

from gnes.client import GnesClient
from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex
from gnes.proto import pb
from gnes.service.endpoints import IPC_DIR_ENV
from gnes.service.message import BodyType
from gnes.stack.compose import find_free_ports
from gnes.stack.local import LocalStack, free_port_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
CONFIGS = {
    "hash": ("yaml/encoder-hash.yml", "yaml/indexer-hash.yml"),
    "minilm": ("yaml/encoder-minilm.yml", "yaml/indexer-flat-ip.yml"),
}
BATCH, QUERIES, WARMUP, TOP_K = 100, 300, 20, 10
# A query crosses these ZeroMQ hops: frontend -> income proxy -> encoder -> middleman ->
# shards -> outgoing proxy -> frontend.
QUERY_HOPS = 6


def short_documents(n: int) -> list[str]:
    """Real news sentences (Lee corpus), numbered so that every document is distinct."""
    text = CORPUS.read_text(encoding="utf-8", errors="replace")
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4]
    return [f"{sentences[i % len(sentences)]} [{i}]" for i in range(n)]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def wait_settled(stack: LocalStack, shards: int, timeout: float = 60.0) -> None:
    """Until the middleman's placement holds every shard (it answers on its control port)."""
    from gnes.cli.healthcheck import status_info

    spec = next(s for s in stack.specs if s.service == "middleman-proxy")
    deadline = time.monotonic() + timeout
    while True:
        info = status_info(spec.ctrl_host, spec.ctrl_port) or {}
        if len(info.get("members", [])) == shards and not info.get("migrating"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the middleman did not settle on {shards} shards: {info}")
        time.sleep(0.05)


class InProcess:
    """The baseline: the same encoder and one shard's index in this process, no services. It is
    grown round by round beside the stack (same documents, same ids), so both index into an index
    of the same size."""

    def __init__(self, name: str, data: Path) -> None:
        encoder_yaml, indexer_yaml = CONFIGS[name]
        self.encoder = load_component(REPO / encoder_yaml, BaseEncoder)
        self.encoder.__enter__()
        self.index = LogicalIndex.create("bench", load_component(REPO / indexer_yaml, IndexConfig), data / "bench")

    def index_round(self, docs: list[str], start_id: int) -> float:
        started = time.perf_counter()
        for i in range(0, len(docs), BATCH):
            batch = docs[i : i + BATCH]
            ids = np.arange(start_id + i, start_id + i + len(batch), dtype=np.uint64)
            self.index.add(ids, self.encoder.encode(batch), batch)
        return time.perf_counter() - started

    def query(self, text: str) -> None:
        self.index.search(self.encoder.encode([text]), TOP_K)

    def close(self) -> None:
        try:
            self.index.close()
        finally:
            self.encoder.__exit__(None, None, None)


def timed(call: Callable[[str], object], queries: list[str]) -> list[float]:
    for q in queries[:WARMUP]:
        call(q)
    latencies = []
    for q in queries[WARMUP:]:
        t = time.perf_counter()
        call(q)
        latencies.append(time.perf_counter() - t)
    return latencies


def run_pair(
    name: str, docs: list[str], queries: list[str], shards: int, rounds: int, ipc: bool = True
) -> dict[str, object]:
    """A stack of `shards` shards and the in-process baseline, taking turns: `rounds` rounds of
    indexing `docs` (fresh ids each round) by each, the first of each round alternating, and the
    queries after the first round. A rate on this shared VM drifts by up to 2x within minutes;
    paired rounds a second apart see the same machine, so the ratio of each round is the
    figure, and its median the summary."""
    encoder_yaml, indexer_yaml = CONFIGS[name]
    overrides = free_port_overrides()
    overrides.update(
        INDEXER_REPLICAS=str(shards),
        ENCODER_YAML_PATH=str(REPO / encoder_yaml),
        INDEXER_YAML_PATH=str(REPO / indexer_yaml),
    )
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(
            REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True, ipc=ipc
        )
        base = InProcess(name, Path(workdir))
        try:
            with stack, GnesClient(port=int(overrides["GRPC_PORT"]), timeout=600) as client:
                # Timing starts once the empty stack has answered one query and the middleman has
                # settled its placement (writes wait for it): every connection on the way is then
                # up, so the figure is the indexing rate, not start-up.
                client.query(queries[0], top_k=TOP_K)
                wait_settled(stack, shards)

                def stack_round(start_id: int) -> float:
                    started = time.perf_counter()
                    summary = client.index(docs, batch_size=BATCH, start_id=start_id)
                    elapsed = time.perf_counter() - started
                    assert summary.errors == [] and summary.num_docs == len(docs), summary.errors[:3]
                    return elapsed

                stack_s, base_s = [], []
                for r in range(rounds):
                    if r % 2 == 0:
                        base_s.append(base.index_round(docs, r * len(docs)))
                        stack_s.append(stack_round(r * len(docs)))
                    else:
                        stack_s.append(stack_round(r * len(docs)))
                        base_s.append(base.index_round(docs, r * len(docs)))
                    if r == 0:  # queries search the first round's documents: a search's cost grows with the index
                        latencies = timed(lambda q: client.query(q, top_k=TOP_K), queries)
                        base_latencies = timed(base.query, queries)
                        # The frontend answers STATUS itself: gRPC and the frontend, no pipeline at all.
                        status = timed(lambda _q: client.status(), queries)
        finally:
            base.close()
    ratios = [b / s for s, b in zip(stack_s, base_s, strict=True)]
    p50, p99 = percentiles(latencies)
    base_p50, base_p99 = percentiles(base_latencies)
    return {
        "docs_per_s": float(np.median([len(docs) / s for s in stack_s])),
        "inprocess_docs_per_s": float(np.median([len(docs) / s for s in base_s])),
        "index_of_inprocess": float(np.median(ratios)),
        "index_of_inprocess_min": min(ratios),
        "index_of_inprocess_max": max(ratios),
        "p50_ms": p50,
        "p99_ms": p99,
        "inprocess_p50_ms": base_p50,
        "inprocess_p99_ms": base_p99,
        "frontend_p50_ms": percentiles(status)[0],
    }


def zmq_hop_ms(rounds: int = 1000, ipc: bool = False) -> float:
    """Median time of one ZeroMQ hop between gnes processes: a request and its envelope sent
    through one `gnes proxy` process and back (two hops), halved; over Unix sockets with `ipc`."""
    port_in, port_out = find_free_ports(2)
    command = [sys.executable, "-m", "gnes", "proxy", "--proxy_type", "ProxyService"]
    command += ["--socket_in", "PULL_BIND", "--port_in", str(port_in)]
    command += ["--socket_out", "PUSH_CONNECT", "--port_out", str(port_out)]
    folder = tempfile.mkdtemp(prefix="gnes-ipc-", dir="/tmp") if ipc else None
    env = {k: v for k, v in os.environ.items() if k != IPC_DIR_ENV}
    if folder:
        env[IPC_DIR_ENV] = folder
    ctx = zmq.Context()
    out, back = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    proxy = None
    try:
        for sock in (out, back):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 10)
            sock.setsockopt(zmq.RCVHWM, 10)
        back.bind(f"ipc://{folder}/{port_out}" if folder else f"tcp://127.0.0.1:{port_out}")  # before the proxy
        proxy = subprocess.Popen(command, stderr=subprocess.DEVNULL, env=env)
        if folder:
            deadline = time.monotonic() + 60
            while not Path(folder, str(port_in)).is_socket():
                if time.monotonic() > deadline:
                    raise RuntimeError("the proxy did not bind its ipc socket within 60 s")
                time.sleep(0.05)
        out.connect(f"ipc://{folder}/{port_in}" if folder else f"tcp://127.0.0.1:{port_in}")
        request = pb.Request(request_id=1)
        request.search.query.raw_text = "a short query text"
        request.search.top_k = TOP_K
        envelope = pb.Envelope(client_id="bench", request_id=1, body_type=BodyType.QUERY)
        frames = [envelope.SerializeToString(), request.SerializeToString()]
        out.send_multipart(frames)
        if not back.poll(30_000):
            raise RuntimeError("the proxy did not forward the first message within 30 s")
        back.recv_multipart()
        rounds_s = []
        for _ in range(rounds):
            t = time.perf_counter()
            out.send_multipart(frames)
            back.recv_multipart()
            rounds_s.append(time.perf_counter() - t)
    finally:
        out.close()
        back.close()
        ctx.term()
        if proxy is not None:
            proxy.terminate()
            proxy.wait(30)
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    return float(np.median(rounds_s)) * 1000 / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", default="hash,minilm")
    parser.add_argument("--docs", type=int, default=10_000, help="documents per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of indexing, stack and in-process taking turns")
    parser.add_argument("--shards", default="3", help="shard counts, comma-separated: a stack of each")
    parser.add_argument("--transport", default="ipc", help="ipc, tcp or tcp,ipc: how stacks talk")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    say = (lambda *a, **k: None) if args.json else print
    shard_counts = [int(n) for n in args.shards.split(",")]
    docs = short_documents(args.docs)
    rng = np.random.default_rng(0)
    queries = [docs[i] for i in rng.integers(0, len(docs), WARMUP + QUERIES)]
    say(
        f"{args.rounds} rounds of {args.docs} documents in requests of {BATCH}, the stack and the in-process"
        f" baseline taking turns; {QUERIES} queries (top_k {TOP_K}) after {WARMUP} warm-up; stacks:"
        f" {args.shards} shards, local processes on loopback; {os.cpu_count()} cores"
    )
    transports = args.transport.split(",")
    if not set(transports) <= {"ipc", "tcp"}:
        parser.error(f"--transport: ipc, tcp or both, not {args.transport!r}")
    hops = {"tcp": zmq_hop_ms(), "ipc": zmq_hop_ms(ipc=True)}
    result: dict[str, object] = {
        "docs": args.docs,
        "rounds": args.rounds,
        "hop_ms": round(hops["tcp"], 4),
        "hop_ipc_ms": round(hops["ipc"], 4),
        "loadavg_1m": os.getloadavg()[0],
    }
    for name in args.encoders.split(","):
        figures: dict[str, object] = {}
        say(f"\n[{name}]            index docs/s (median)   of in-process: median (min-max)   query p50 / p99 ms")
        for shards in shard_counts:
            for transport in transports:
                pair = run_pair(name, docs, queries, shards, args.rounds, ipc=transport == "ipc")
                hop = hops[transport]
                floor = pair["frontend_p50_ms"] + QUERY_HOPS * hop
                tcp_floor = pair["frontend_p50_ms"] + QUERY_HOPS * hops["tcp"]
                row: dict[str, object] = {k: round(v, 4) for k, v in pair.items()}
                row.update(
                    transport=transport,
                    floor_ms=round(floor, 4),
                    p50_of_floor=round(pair["p50_ms"] / floor, 4),
                    p50_of_tcp_floor=round(pair["p50_ms"] / tcp_floor, 4),
                )
                figures[f"{shards}_shards" + ("" if len(transports) == 1 else f"_{transport}")] = row
                say(
                    f"  in-process            {pair['inprocess_docs_per_s']:12.0f}"
                    f"   {'':33} {pair['inprocess_p50_ms']:7.3f} / {pair['inprocess_p99_ms']:.3f}"
                )
                say(
                    f"  stack, {shards} shard(s), {transport} {pair['docs_per_s']:8.0f}"
                    f"   {row['index_of_inprocess']:.2f} ({row['index_of_inprocess_min']:.2f}-"
                    f"{row['index_of_inprocess_max']:.2f}){'':20} {pair['p50_ms']:7.3f} / {pair['p99_ms']:.3f}"
                    f"   p50 {row['p50_of_floor']:.2f} x the floor ({pair['frontend_p50_ms']:.3f} frontend"
                    f" + {QUERY_HOPS} x {hop:.3f} {transport} hop = {floor:.3f} ms;"
                    f" {row['p50_of_tcp_floor']:.2f} x the TCP floor)"
                )
        result[name] = figures
    say(
        "\none ZeroMQ hop between two gnes processes (through a gnes proxy and back, halved):"
        f" {hops['tcp']:.3f} ms over TCP, {hops['ipc']:.3f} ms over ipc"
    )
    if args.json:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
