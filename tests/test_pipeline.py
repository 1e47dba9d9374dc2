"""The whole pipeline with real services on loopback (threads of this process), hash encoder."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import zmq

from gnes.client import GnesClient, GnesError
from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex
from gnes.proto import array_to_nd, pb
from tests.conftest import wait_for

REPO = Path(__file__).resolve().parents[1]

TEXTS = [f"document number {i} about topic {i % 7} and colour {i % 5}" for i in range(200)]


def _index(client: GnesClient, texts: list[str] = TEXTS) -> None:
    summary = client.index(texts, batch_size=50)
    assert summary.errors == [] and summary.num_docs == len(texts)


def test_each_document_lands_on_exactly_one_shard_and_is_found(hash_pipeline) -> None:
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        _index(client)
        counts = [hash_pipeline.shard(i).indexes.get("").count() for i in range(3)]
        assert sum(counts) == len(TEXTS) and all(c > 0 for c in counts)
        for doc_id in (0, 77, 199):
            hits = client.query(TEXTS[doc_id], top_k=5)
            assert hits[0].doc_id == doc_id and hits[0].text == TEXTS[doc_id]
            assert hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_sharded_results_equal_one_unsharded_exact_index(hash_pipeline, tmp_path: Path) -> None:
    encoder = load_component(REPO / "yaml/encoder-hash.yml", BaseEncoder)
    config = load_component(REPO / "yaml/indexer-hash.yml", IndexConfig)
    with encoder, GnesClient(port=hash_pipeline.grpc_port) as client:
        single = LogicalIndex.create("single", config, tmp_path / "single")
        try:
            single.add(np.arange(len(TEXTS), dtype=np.uint64), encoder.encode(TEXTS), TEXTS)
            _index(client)
            for query in ["topic 3 colour 2", "document number 12", "something else entirely", TEXTS[150]]:
                expected = single.search(encoder.encode([query]), 10)[0]
                got = client.query(query, top_k=10)
                assert [h.doc_id for h in got] == [h.doc_id for h in expected]
                assert [h.score for h in got] == pytest.approx([h.score for h in expected], abs=1e-6)
        finally:
            single.close()


def _error_of(client: GnesClient, request: pb.Request) -> str:
    response = client.call(request)
    kind = response.WhichOneof("body")
    assert kind is not None and getattr(response, kind).status == pb.Response.ERROR, response
    assert response.error
    return response.error


def test_bad_requests_get_a_reason_and_the_service_keeps_serving(hash_pipeline) -> None:
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        _index(client, TEXTS[:40])
        r = pb.Request(request_id=1)
        r.index.SetInParent()
        assert "no documents" in _error_of(client, r)
        r = pb.Request(request_id=2)
        r.index.docs.add(doc_id=1000, raw_text="")
        assert "is empty" in _error_of(client, r)
        r = pb.Request(request_id=3)
        r.index.docs.add(doc_id=1001, raw_text="x" * ((1 << 20) + 1))
        assert "the limit is" in _error_of(client, r)
        r = pb.Request(request_id=4)
        r.index.docs.add(doc_id=1002, raw_bytes=b"\xff\xfe\xfa")
        assert "not UTF-8" in _error_of(client, r)
        r = pb.Request(request_id=5)
        assert "no body" in _error_of(client, r)
        r = pb.Request(request_id=6)
        r.search.query.raw_text = "hello"
        assert "top_k" in _error_of(client, r)
        r = pb.Request(request_id=7)  # a query vector of the wrong dimension reaches every shard
        r.search.top_k = 3
        array_to_nd(np.ones((1, 12), np.float32), r.search.embedding)
        assert "dimension" in _error_of(client, r)
        r = pb.Request(request_id=8)  # whitespace passes the door but not the encoder
        r.index.docs.add(doc_id=1003, raw_text="   ")
        assert "no text" in _error_of(client, r)
        r = pb.Request(request_id=9)  # the second document of a small request is checked as well
        r.index.docs.add(doc_id=1004, raw_text="fine")
        r.index.docs.add(doc_id=1 << 63, raw_text="an id faiss cannot hold")
        assert "doc_id must be below 2**63" in _error_of(client, r)
        with pytest.raises(GnesError):
            client.query("   ", top_k=3)
        # nothing accepted was lost, and the pipeline still answers
        assert sum(hash_pipeline.shard(i).indexes.get("").count() for i in range(3)) == 40
        assert client.query(TEXTS[5], top_k=1)[0].doc_id == 5


def test_garbage_frames_are_dropped_and_every_service_keeps_serving(hash_pipeline) -> None:
    ctx = zmq.Context()
    try:
        for port in ("income_in", "middle_in", "out_in"):
            sock = ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 1000)
            sock.connect(f"tcp://127.0.0.1:{hash_pipeline.ports[port]}")
            sock.send(b"\x00garbage")
            sock.send_multipart([b"not an envelope", b"nor a body"])
            sock.send_multipart([b"a", b"b", b"c"])
            env = pb.Envelope(client_id="x", request_id=1, body_type=pb.Envelope.INDEX)
            sock.send_multipart([env.SerializeToString(), b"\xff\xff\xff not a request"])
            sock.close()
    finally:
        ctx.term()
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        _index(client, TEXTS[:30])
        assert client.query(TEXTS[3], top_k=1)[0].doc_id == 3
    assert hash_pipeline.services["income"].errors >= 3


def test_concurrent_clients_each_get_their_own_answer(hash_pipeline) -> None:
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        _index(client)
    workers = 8
    start = threading.Barrier(workers)  # every client is connected before any asks: they overlap

    def ask(worker: int) -> list[tuple[int, int, int]]:
        """(asked, got, request id of the answer) per query of this worker."""
        answers = []
        with GnesClient(port=hash_pipeline.grpc_port) as own:
            start.wait(timeout=30)
            for doc_id in range(worker, len(TEXTS), workers):
                request = pb.Request(request_id=7)  # the same id from every caller
                request.search.query.raw_text = TEXTS[doc_id]
                request.search.top_k = 1
                response = own.call(request)
                answers.append((doc_id, response.search.topk_results[0].doc.doc_id, response.request_id))
        return answers

    # .result() re-raises a worker's exception here, so a crashing worker fails the test.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(ask, w) for w in range(workers)]
        results = [f.result(timeout=120) for f in futures]
    for worker, answers in enumerate(results):
        asked = list(range(worker, len(TEXTS), workers))
        assert [a[0] for a in answers] == asked, f"worker {worker} did not ask every query"
        assert [(a[1], a[2]) for a in answers] == [(doc_id, 7) for doc_id in asked], f"worker {worker}"
    assert sum(len(a) for a in results) == len(TEXTS)


def test_stream_call_keeps_many_requests_in_flight_and_matches_ids(hash_pipeline) -> None:
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        _index(client)
        requests = []
        for i in range(300):
            r = pb.Request(request_id=10_000 + i)
            r.search.query.raw_text = TEXTS[i % 200]
            r.search.top_k = 1
            requests.append(r)
        answers = list(client.stream(requests))
        assert [a.request_id for a in answers] == [r.request_id for r in requests]
        assert [a.search.topk_results[0].doc.doc_id for a in answers] == [i % 200 for i in range(300)]
        frontend = hash_pipeline.services["frontend"]
        # Nothing is left behind; the frontend's own health probe may be in flight for a moment.
        wait_for(lambda: json.loads(json.dumps(frontend.status_info()))["in_flight"] == 0, 5, "no request in flight")
