"""Start the stack of compose/gnes-swarm.yml locally, index lee_background.cor, run queries."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gensim

from gnes.client import GnesClient
from gnes.stack.local import LocalStack

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
QUERIES = [
    "bushfires threaten homes near Sydney",
    "Middle East peace talks between Israel and the Palestinians",
    "the cricket match against South Africa",
    "Afghanistan and the Taliban after the September 11 attacks",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--top_k", type=int, default=3)
    parser.add_argument("--grpc_port", type=int, default=8800)
    args = parser.parse_args()
    docs = [line.strip() for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    overrides = {"INDEXER_REPLICAS": str(args.shards), "GRPC_PORT": str(args.grpc_port)}
    print(f"starting gnes: {args.shards} shards, the all-MiniLM-L6-v2 encoder (logs in .gnes-local/logs)")
    stack = LocalStack.from_file(
        REPO / "compose/gnes-swarm.yml", workdir=REPO / ".gnes-local/demo", overrides=overrides, quiet=True
    )
    with stack, GnesClient(port=args.grpc_port, timeout=600) as client:
        started = time.perf_counter()
        summary = client.index(docs, batch_size=50)
        elapsed = time.perf_counter() - started
        print(f"indexed {summary.num_docs} of {len(docs)} documents from {CORPUS.name} in {elapsed:.1f}s")
        if summary.errors:
            print("errors:", *summary.errors, sep="\n  ")
            return 1
        for query in QUERIES:
            started = time.perf_counter()
            hits = client.query(query, top_k=args.top_k)
            ms = (time.perf_counter() - started) * 1000
            print(f"\nquery: {query}   ({ms:.1f} ms)")
            for rank, hit in enumerate(hits, 1):
                print(f"  {rank}. {hit.score:.3f}  [doc {hit.doc_id}] {hit.text[:110]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
