"""The shard's group commit: index requests queued together are written in one durable
transaction, yet each is answered on its own, in order, as if written one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnes.client import IndexClient
from gnes.indexer.config import IndexConfig
from gnes.indexer.index_set import IndexSet
from gnes.proto import array_to_nd, pb
from gnes.service.config import ServiceConfig
from gnes.service.indexer import IndexerService
from gnes.service.message import BodyType, Packet

DIM = 8


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def _index_packet(request_id: int, ids: range, vectors: np.ndarray | None, index_name: str = "") -> Packet:
    request = pb.Request(request_id=request_id)
    request.index.index_name = index_name
    for doc_id in ids:
        request.index.docs.add(doc_id=doc_id, raw_text=f"doc {doc_id} of request {request_id}")
    if vectors is not None:
        array_to_nd(vectors, request.index.embeddings)
    envelope = pb.Envelope(client_id="test", request_id=request_id, body_type=BodyType.INDEX)
    return Packet(envelope, request.SerializeToString())


def _query_packet(request_id: int, vector: np.ndarray) -> Packet:
    request = pb.Request(request_id=request_id)
    request.search.top_k = 3
    array_to_nd(vector, request.search.embedding)
    envelope = pb.Envelope(client_id="test", request_id=request_id, body_type=BodyType.QUERY)
    return Packet(envelope, request.SerializeToString())


def test_queued_index_requests_share_one_commit_and_get_their_own_answers(tmp_path: Path) -> None:
    indexes = IndexSet(tmp_path, IndexConfig(dim=DIM, metric="l2"))
    shard = IndexerService(ServiceConfig(name="shard"), indexes)
    data = _vectors(40, seed=0)
    try:
        packets = [
            _index_packet(1, range(0, 10), data[0:10]),
            _index_packet(2, range(10, 20), None),  # no vectors: the encoder was skipped
            _index_packet(3, range(5, 15), data[10:20]),  # replaces 5..9 written by request 1
            Packet(pb.Envelope(client_id="test", request_id=4, body_type=BodyType.INDEX), b"\xff\xfe not protobuf"),
            _index_packet(5, range(20, 25), _vectors(5, seed=1)[:, :4]),  # wrong dimension
            _query_packet(6, data[12]),  # request 3 gave doc 7 this vector
            _index_packet(7, range(30, 40), data[30:40]),
            _index_packet(8, range(40, 42), data[:2], index_name="missing"),
        ]
        answers = shard.answer_all(packets)
        assert [a.request_id for a in answers] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert [a.index.num_docs for a in answers[:3]] == [10, 0, 10]
        assert answers[0].index.status == answers[2].index.status == pb.Response.SUCCESS
        assert answers[1].index.status == pb.Response.ERROR and "without vectors" in answers[1].error
        assert answers[3].index.status == pb.Response.ERROR and "not a valid gnes Request" in answers[3].error
        assert answers[4].index.status == pb.Response.ERROR and "dimension 8, got 4" in answers[4].error
        assert answers[5].search.topk_results[0].doc.doc_id == 7
        assert answers[6].index.num_docs == 10 and answers[7].index.status == pb.Response.ERROR
        assert "no index named 'missing'" in answers[7].error

        index = indexes.get("")
        # Requests 1 and 3 were one commit; request 7, after the query, a second one.
        assert index.store.last_seq == 2
        assert index.count() == 25
        assert index.get([7]) == [("doc 7 of request 3", "")]
    finally:
        indexes.close()


def test_many_requests_in_flight_to_a_shard_are_all_acknowledged_and_stored(shard_processes) -> None:
    shards = shard_processes(1)
    data = _vectors(5000, seed=2)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("g", {"dim": DIM, "metric": "l2"})
        batches = ((data[i : i + 50], np.arange(i, i + 50)) for i in range(0, 5000, 50))
        assert list(client.add_stream("g", batches, max_in_flight=64)) == [50] * 100
        assert client.count("g") == 5000
        found = client.search("g", data[[0, 2500, 4999]], top_k=1).ids[:, 0]
        assert found.tolist() == [0, 2500, 4999]
