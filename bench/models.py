"""Named models on a running stack: the time to add a model until it answers, and query p50 per model,
each beside the same work in this process.

The stack is compose/gnes-swarm.yml as local processes (MiniLM as the default model, 1 shard, the
HTTP service). The added model is the TF-IDF + SVD(384) plugin (gnes/models/tfidf_svd.py), added
live with POST /models: the figure runs from the call until the model has answered an embedding
through the pipeline (its process started and loaded, its encoders heard by the map proxy, its
index created). The baseline is a fresh Python process that loads the same plugin and embeds one
text (import, fit, probe), timed before and after the stack run (mean). Each model then indexes
the 50 Lee documents and answers QUERIES sequential /searchwith/{model} calls (top 10); the
baseline is the same model encoding the query in this process plus an exact search (numpy) over
the same 50 vectors.

    python bench/models.py [--queries 100] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "gnes.models.tfidf_svd"
WARMUP, TOP_K = 5, 10


def p50_ms(samples: list[float]) -> float:
    return float(np.percentile(np.array(samples) * 1000, 50))


def in_process(docs: list[str], queries: list[str]) -> dict[str, float]:
    from gnes.encoder.text import SentenceTransformerEncoder
    from gnes.models.plugin import PluginEncoder

    lsa = PluginEncoder(package=PLUGIN)
    lsa.start()
    result = {}
    minilm = SentenceTransformerEncoder()
    minilm.start()
    for name, encoder in (("default", minilm), ("lsa", lsa)):
        vectors = encoder.encode(docs)
        times = []
        for i, query in enumerate(queries):
            t = time.perf_counter()
            scores = vectors @ encoder.encode([query])[0]
            np.argsort(-scores)[:TOP_K]
            if i >= WARMUP:
                times.append(time.perf_counter() - t)
        result[f"{name}_p50_ms"] = p50_ms(times)
    return result


def load_in_fresh_process() -> float:
    """Seconds for a new Python process to load the plugin and embed one text: what a new encoder
    process does before it can answer, without the stack around it."""
    code = f"from gnes.models.plugin import PluginEncoder as P; e = P(package={PLUGIN!r}); e.start(); e.encode(['x'])"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def on_stack(docs: list[str], queries: list[str]) -> dict[str, float]:
    import httpx

    from gnes.stack.control import ControlServer
    from gnes.stack.local import LocalStack, free_port_overrides

    overrides = free_port_overrides(INDEXER_REPLICAS="1")
    with tempfile.TemporaryDirectory() as workdir:
        stack = LocalStack.from_file(
            REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True, start_timeout=300
        )
        with stack, ControlServer(stack, workdir):
            with httpx.Client(base_url=f"http://127.0.0.1:{overrides['HTTP_PORT']}", timeout=600) as client:
                started = time.perf_counter()
                got = client.post("/models", json={"name": "lsa", "package": PLUGIN})
                add_s = time.perf_counter() - started
                assert got.status_code == 201, got.text
                result = {"add_until_answers_s": add_s, "add_services_ready_s": got.json()["services_ready_s"]}
                for name in ("default", "lsa"):
                    model = "" if name == "default" else name
                    for start in range(0, len(docs), 10):  # short messages: an encoder is silent while it encodes
                        documents = [{"id": i, "text": docs[i]} for i in range(start, min(start + 10, len(docs)))]
                        got = client.post("/index", json={"documents": documents, "model": model})
                        assert got.status_code == 200, got.text
                    times = []
                    for i, query in enumerate(queries):
                        t = time.perf_counter()
                        got = client.post(f"/searchwith/{name}", json={"title": query}, params={"top_k": TOP_K})
                        if i >= WARMUP:
                            times.append(time.perf_counter() - t)
                        assert got.status_code == 200, got.text
                    result[f"{name}_p50_ms"] = p50_ms(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=100, help="sequential queries per model")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    args = parser.parse_args()
    from gnes.models.evaluate import load_lee

    docs, _ = load_lee()
    queries = [doc.split(". ")[0] for doc in docs]
    queries = [queries[i % len(queries)] for i in range(args.queries + WARMUP)]
    base = in_process(docs, queries)
    first = load_in_fresh_process()
    stack = on_stack(docs, queries)
    base["lsa_load_s"] = (first + load_in_fresh_process()) / 2  # before and after: the cache as warm as the stack's
    result = {
        "stack": stack,
        "in_process": base,
        "ratio": {
            "add_until_answers_vs_load": stack["add_until_answers_s"] / base["lsa_load_s"],
            "default_p50": stack["default_p50_ms"] / base["default_p50_ms"],
            "lsa_p50": stack["lsa_p50_ms"] / base["lsa_p50_ms"],
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"add lsa until it answers: {stack['add_until_answers_s']:.2f} s (its services ready after "
        f"{stack['add_services_ready_s']:.2f} s); a fresh process loading it: {base['lsa_load_s']:.2f} s "
        f"(x{result['ratio']['add_until_answers_vs_load']:.2f})"
    )
    for name in ("default", "lsa"):
        print(
            f"query p50 {name}: {stack[f'{name}_p50_ms']:.2f} ms through the stack, "
            f"{base[f'{name}_p50_ms']:.2f} ms in process (x{result['ratio'][f'{name}_p50']:.2f})"
        )


if __name__ == "__main__":
    main()
