"""Images through the whole stack beside the same model in one process: images/s, and
Fashion-MNIST precision@10 by label (which must be equal).

Workload: N Fashion-MNIST test images (default 128) sent as PNG bytes in INDEX requests of
32 through the streaming gRPC call, to compose/gnes-swarm.yml run as local processes with
the EfficientNet-Lite0 encoder (yaml/encoder-image.yml) and 2 shards of exact inner-product
search (yaml/indexer-image.yml). Then Q images of the training split (default 30) are
queried one by one, top_k 10, and a hit counts when its label is the query's.

The baseline is the same work in this process: decode the same PNG bytes (gnes/image/decode.py),
encode in batches of 32 with the same model, add to one LogicalIndex; its precision@10 comes
from an exact search over the in-process vectors. It runs before and after the stack, and the
ratio is to the mean of the two (the machine's speed drifts). Target: stack / in-process >= 0.9.

    apt-get install -y dataset-fashion-mnist
    python bench/images.py [--images 128] [--queries 30] [--shards 2] [--json]
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
from gnes.image.decode import decode_image
from gnes.image.samples import encode_png, fashion_mnist, to_rgb
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex
from gnes.proto import pb
from gnes.stack.local import LocalStack, free_port_overrides

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import wait_settled  # noqa: E402 (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]
ENCODER_YAML, INDEXER_YAML = REPO / "yaml/encoder-image.yml", REPO / "yaml/indexer-image.yml"
BATCH, TOP_K = 32, 10


def index_requests(pngs: list[bytes], labels: np.ndarray) -> list[pb.Request]:
    requests = []
    for start in range(0, len(pngs), BATCH):
        request = pb.Request(request_id=start // BATCH + 1)
        for i in range(start, min(start + BATCH, len(pngs))):
            meta = json.dumps({"label": int(labels[i])})
            request.index.docs.add(doc_id=i, raw_bytes=pngs[i], doc_type=pb.Document.IMAGE, meta_json=meta)
        requests.append(request)
    return requests


def precision_at_10(hit_labels: list[list[int]], query_labels: np.ndarray) -> float:
    return float(
        np.mean([np.mean(np.array(hits[:TOP_K]) == q) for hits, q in zip(hit_labels, query_labels, strict=True)])
    )


def run_stack(pngs: list[bytes], labels: np.ndarray, queries: list[bytes], shards: int) -> dict[str, float]:
    overrides = free_port_overrides()
    overrides.update(
        INDEXER_REPLICAS=str(shards), ENCODER_YAML_PATH=str(ENCODER_YAML), INDEXER_YAML_PATH=str(INDEXER_YAML)
    )
    requests = index_requests(pngs, labels)
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True)
        with stack, GnesClient(port=int(overrides["GRPC_PORT"]), timeout=600) as client:
            # Timing starts once the model answered a query and the placement settled.
            warm = pb.Request(request_id=10_000)
            warm.search.query.raw_bytes = queries[0]
            warm.search.top_k = 1
            client.call(warm)
            wait_settled(stack, shards)
            started = time.perf_counter()
            stored = sum(r.index.num_docs for r in client.stream(requests))
            index_s = time.perf_counter() - started
            assert stored == len(pngs), f"the stack stored {stored} of {len(pngs)} images"
            hit_labels = []
            started = time.perf_counter()
            for i, png in enumerate(queries):
                request = pb.Request(request_id=20_000 + i)
                request.search.query.raw_bytes = png
                request.search.top_k = TOP_K
                response = client.call(request)
                assert response.search.status == pb.Response.SUCCESS, response.error
                hit_labels.append([json.loads(r.doc.meta_json)["label"] for r in response.search.topk_results])
            query_s = time.perf_counter() - started
    return {"images_per_s": len(pngs) / index_s, "query_ms": query_s / len(queries) * 1000, "hits": hit_labels}


def run_in_process(pngs: list[bytes], labels: np.ndarray, queries: list[bytes]) -> dict[str, object]:
    encoder = load_component(ENCODER_YAML, BaseEncoder)
    config = load_component(INDEXER_YAML, IndexConfig)
    with tempfile.TemporaryDirectory() as data, encoder:
        encoder.encode([decode_image(pngs[0])])  # warm, as the stack is
        index = LogicalIndex.create("bench", config, Path(data) / "bench")
        try:
            started = time.perf_counter()
            for start in range(0, len(pngs), BATCH):
                batch = [decode_image(p) for p in pngs[start : start + BATCH]]
                ids = np.arange(start, start + len(batch), dtype=np.uint64)
                index.add(ids, encoder.encode(batch))
            index_s = time.perf_counter() - started
            vectors, _ = index.store.get_vectors(np.arange(len(pngs), dtype=np.uint64))
        finally:
            index.close()
        started = time.perf_counter()
        query_vectors = np.concatenate([encoder.encode([decode_image(q)]) for q in queries])
        query_s = time.perf_counter() - started
    # Exact search by inner product, as the shards' flat index does.
    order = np.argsort(-(query_vectors @ np.asarray(vectors).T), axis=1, kind="stable")[:, :TOP_K]
    hits = [[int(labels[j]) for j in row] for row in order]
    return {"images_per_s": len(pngs) / index_s, "query_ms": query_s / len(queries) * 1000, "hits": hits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON line of the figures")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    images, labels = fashion_mnist(args.images, "t10k")
    query_images, query_labels = fashion_mnist(args.queries, "train")
    pngs = [encode_png(to_rgb(g)) for g in images]
    queries = [encode_png(to_rgb(g)) for g in query_images]
    # The in-process baseline runs before and after the stack: the machine's speed drifts
    # (other work shares its cores), and the ratio is to the mean of the two.
    before = run_in_process(pngs, labels, queries)
    stack = run_stack(pngs, labels, queries, args.shards)
    base = run_in_process(pngs, labels, queries)
    assert before["hits"] == base["hits"]
    rates = [round(float(before["images_per_s"]), 2), round(float(base["images_per_s"]), 2)]  # type: ignore[arg-type]
    base["images_per_s"] = (before["images_per_s"] + base["images_per_s"]) / 2  # type: ignore[operator]
    base["query_ms"] = (before["query_ms"] + base["query_ms"]) / 2  # type: ignore[operator]
    p10_stack = precision_at_10(stack["hits"], query_labels)  # type: ignore[arg-type]
    p10_base = precision_at_10(base["hits"], query_labels)  # type: ignore[arg-type]
    ratio = stack["images_per_s"] / base["images_per_s"]  # type: ignore[operator]
    figures = {
        "images": args.images,
        "queries": args.queries,
        "shards": args.shards,
        "cores": os.cpu_count(),
        "stack_images_per_s": round(stack["images_per_s"], 2),  # type: ignore[arg-type]
        "inprocess_images_per_s": round(base["images_per_s"], 2),  # type: ignore[arg-type]
        "inprocess_before_after": rates,
        "ratio": round(ratio, 3),
        "stack_query_ms": round(stack["query_ms"], 1),  # type: ignore[arg-type]
        "inprocess_query_ms": round(base["query_ms"], 1),  # type: ignore[arg-type]
        "p10_stack": round(p10_stack, 4),
        "p10_inprocess": round(p10_base, 4),
        "p10_equal": p10_stack == p10_base,
        "same_hits": stack["hits"] == base["hits"],
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"{args.images} Fashion-MNIST images as PNG in requests of {BATCH}, {args.queries} queries (top_k {TOP_K});"
        f" EfficientNet-Lite0; stack: {args.shards} shards, local processes; {os.cpu_count()} cores"
    )
    print("                      images/s   query ms   precision@10")
    for label, key, p10 in (("stack", "stack", p10_stack), ("in-process", "inprocess", p10_base)):
        rate, query_ms = figures[f"{key}_images_per_s"], figures[f"{key}_query_ms"]
        print(f"  {label:<18}  {rate:8.1f}   {query_ms:8.1f}   {p10:.4f}")
    print(f"  stack / in-process  {ratio:8.2f}   (target >= 0.9)   equal: {figures['p10_equal']}")
    print(f"  in-process before and after the stack: {rates[0]} and {rates[1]} images/s (their mean above)")
    print(f"  every query's top-{TOP_K} labels the same: {figures['same_hits']}")


if __name__ == "__main__":
    main()
