"""Lee 2005: nDCG@10 of whole documents against sentence chunks ranked back into documents,
through the stack, beside the same computation in one process.

Data: gensim's test data (the gensim wheel, in the test extra): lee.cor, 50 news documents,
and similarities0-1.txt, the mean human rating (0 to 1) of every pair. Each document is the
query once (its whole text, which the model reads up to 256 tokens); the other 49 are ranked
and the gain of document j for query i is the human rating of (i, j); nDCG@10 is the mean
over the 50 queries.

The stack: compose/gnes-swarm.yml as local processes with the preprocessor on (sentences,
yaml/preprocess-sentences.yml), the all-MiniLM-L6-v2 encoder and 2 shards of exact inner
product. One index holds both: the documents' own vectors (QueryRequest.chunk_reduce "doc")
and their sentences (max, mean, weighted). The in-process baseline splits with the same
preprocessor, encodes with the same model and ranks every document exactly with numpy; the
ratio stack / in-process is 1.00 where the stack ranks as the exact computation does (mean and
weighted score the chunks of the documents found among the best 8 x top_k chunks only).

    python bench/lee_chunks.py [--shards 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gnes.client import GnesClient
from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.models.evaluate import load_lee
from gnes.preprocessor.base import BasePreprocessor
from gnes.proto import pb
from gnes.stack.local import LocalStack, free_port_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import wait_settled  # noqa: E402 (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]
ENCODER_YAML, INDEXER_YAML = REPO / "yaml/encoder-minilm.yml", REPO / "yaml/indexer-flat-ip.yml"
SPLITTER_YAML = REPO / "yaml/preprocess-sentences.yml"
MODES = ("doc", "max", "mean", "weighted")
K = 10


def ndcg(rankings: list[list[int]], ratings: np.ndarray) -> float:
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    values = []
    for query, ranked in enumerate(rankings):
        others = [j for j in ranked if j != query][:K]
        gains = ratings[query, others]
        ideal = np.sort(np.delete(ratings[query], query))[::-1][:K]
        values.append(float((gains * discounts[: len(gains)]).sum() / (ideal * discounts).sum()))
    return float(np.mean(values))


def run_stack(docs: list[str], shards: int) -> dict[str, object]:
    overrides = free_port_overrides()
    overrides.update(
        INDEXER_REPLICAS=str(shards),
        ENCODER_YAML_PATH=str(ENCODER_YAML),
        INDEXER_YAML_PATH=str(INDEXER_YAML),
        PREPROCESS_REPLICAS="1",
        PREPROCESS_YAML_PATH=str(SPLITTER_YAML),
        PIPELINE_IN_HOST="preprocess",
    )
    overrides["PIPELINE_IN_PORT"] = overrides["PREPROCESS_IN"]
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True)
        with stack, GnesClient(port=int(overrides["GRPC_PORT"]), timeout=600) as client:
            client.query("warm up", top_k=1)
            wait_settled(stack, shards)
            started = time.perf_counter()
            summary = client.index(docs, batch_size=10)
            index_s = time.perf_counter() - started
            assert summary.errors == [] and summary.num_docs == len(docs), summary
            rankings: dict[str, list[list[int]]] = {}
            started = time.perf_counter()
            for mode in MODES:
                rankings[mode] = []
                for i, text in enumerate(docs):
                    request = pb.Request(request_id=1000 + i)
                    request.search.query.raw_text = text
                    request.search.top_k = K + 1
                    request.search.chunk_reduce = mode
                    response = client.call(request)
                    assert response.search.status == pb.Response.SUCCESS, response.error
                    rankings[mode].append([r.doc.doc_id for r in response.search.topk_results])
            query_s = time.perf_counter() - started
    return {
        "rankings": rankings,
        "docs_per_s": len(docs) / index_s,
        "query_ms": query_s / (len(MODES) * len(docs)) * 1e3,
    }


def run_in_process(docs: list[str]) -> dict[str, object]:
    splitter = load_component(SPLITTER_YAML, BasePreprocessor)
    encoder = load_component(ENCODER_YAML, BaseEncoder)
    with splitter, encoder:
        encoder.encode(["warm up"])
        started = time.perf_counter()
        split = [pb.Document(doc_id=i, raw_text=text) for i, text in enumerate(docs)]
        for doc in split:
            splitter.apply(doc)
        owner = np.asarray([i for i, doc in enumerate(split) for _ in doc.chunks])
        weights = np.asarray([c.weight for doc in split for c in doc.chunks])
        chunk_vectors = encoder.encode([c.text for doc in split for c in doc.chunks])
        doc_vectors = encoder.encode(docs)
        index_s = time.perf_counter() - started
        queries = encoder.encode(docs)  # each document's whole text is a query
    rankings: dict[str, list[list[int]]] = {mode: [] for mode in MODES}
    for query in queries:
        chunk_scores = chunk_vectors @ query
        scores = {
            "doc": doc_vectors @ query,
            "max": np.asarray([chunk_scores[owner == d].max() for d in range(len(docs))]),
            "mean": np.asarray([chunk_scores[owner == d].mean() for d in range(len(docs))]),
            "weighted": np.asarray(
                [np.average(chunk_scores[owner == d], weights=weights[owner == d]) for d in range(len(docs))]
            ),
        }
        for mode in MODES:
            rankings[mode].append(np.argsort(-scores[mode], kind="stable")[: K + 1].tolist())
    return {"rankings": rankings, "docs_per_s": len(docs) / index_s, "chunks": len(owner)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line of the figures")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    docs, ratings = load_lee()  # the same reading as `gnes eval` (gnes/models/evaluate.py)
    assert len(docs) == 50, len(docs)
    base = run_in_process(docs)
    stack = run_stack(docs, args.shards)
    figures: dict[str, object] = {"docs": len(docs), "chunks": base["chunks"], "shards": args.shards}
    for mode in MODES:
        ours, theirs = ndcg(stack["rankings"][mode], ratings), ndcg(base["rankings"][mode], ratings)
        figures[f"ndcg10_{mode}"] = round(ours, 4)
        figures[f"ndcg10_{mode}_in_process"] = round(theirs, 4)
        figures[f"ndcg10_{mode}_ratio"] = round(ours / theirs, 4)
    figures["index_docs_per_s"] = round(stack["docs_per_s"], 2)
    figures["index_docs_per_s_in_process"] = round(base["docs_per_s"], 2)
    figures["index_ratio"] = round(stack["docs_per_s"] / base["docs_per_s"], 3)
    figures["query_ms"] = round(stack["query_ms"], 1)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Lee 2005: {len(docs)} documents, {base['chunks']} sentence chunks, {args.shards} shards, nDCG@{K}")
    print(f"{'ranking':<22}{'stack':>8}{'in-process':>12}{'ratio':>8}")
    for mode in MODES:
        label = "whole documents" if mode == "doc" else f"sentences, {mode}"
        print(
            f"{label:<22}{figures[f'ndcg10_{mode}']:>8.4f}{figures[f'ndcg10_{mode}_in_process']:>12.4f}"
            f"{figures[f'ndcg10_{mode}_ratio']:>8.3f}"
        )
    print(
        f"indexing: {figures['index_docs_per_s']} docs/s through the stack, "
        f"{figures['index_docs_per_s_in_process']} in process (ratio {figures['index_ratio']}); "
        f"query {figures['query_ms']} ms"
    )


if __name__ == "__main__":
    main()
