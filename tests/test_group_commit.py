"""The shard's group commit: index requests queued together are written in one durable
transaction, yet each is answered on its own, in order, as if written one by one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zmq

from gnes.cli.healthcheck import check_ready
from gnes.client import IndexClient
from gnes.indexer.config import IndexConfig
from gnes.indexer.index_set import IndexSet
from gnes.indexer.logical import STORE_DIR
from gnes.proto import array_to_nd, pb
from gnes.service.config import ServiceConfig
from gnes.service.indexer import IndexerService
from gnes.service.message import BodyType, Packet, parse_frames
from gnes.stack.compose import find_free_ports

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


# ---- through the shard's real socket --------------------------------------------------
# A real `gnes index` process; many index requests are sent at once on one DEALER socket to
# its direct ROUTER port before any answer is read. What each commit held is read back from
# the shard's change log: one LMDB record per write transaction, holding the ids it wrote.


@dataclass
class DirectShard:
    proc: subprocess.Popen[bytes]
    port: int
    data: Path

    def commits(self, index_name: str) -> list[np.ndarray]:
        """The ids of each write transaction of the index, in commit order (its change log)."""
        import lmdb

        env = lmdb.open(str(self.data / "indexes" / index_name / STORE_DIR), readonly=True, lock=False, max_dbs=4)
        try:
            with env.begin(db=env.open_db(b"log", create=False)) as txn:
                records = list(txn.cursor())
        finally:
            env.close()
        assert all(value[:1] == b"P" for _, value in records), "only documents were written"
        seqs = [int.from_bytes(key, "big") for key, _ in records]
        assert seqs == list(range(1, len(seqs) + 1)), "the log is whole: no snapshot pruned it"
        return [np.frombuffer(value[1:], dtype="<i8") for _, value in records]


@pytest.fixture
def direct_shard(tmp_path: Path) -> Iterator[DirectShard]:
    """`gnes index` reachable only on its direct port; no periodic snapshot, so its log keeps
    every commit. Killed at the end, whatever happens."""
    port, ctrl = find_free_ports(2)
    data = tmp_path / "shard"
    command = [sys.executable, "-m", "gnes", "index", "--socket_in", "NONE", "--socket_out", "NONE"]
    command += ["--port_direct", str(port), "--host_direct", "127.0.0.1", "--port_ctrl", str(ctrl)]
    command += ["--dump_path", str(data), "--name", "burst-shard"]
    log_path = tmp_path / "shard.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not check_ready("127.0.0.1", ctrl, timeout=0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the shard did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
        yield DirectShard(proc, port, data)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)  # in case a test stopped it
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wire_index(request_id: int, ids: np.ndarray, vectors: np.ndarray, index_name: str) -> list[bytes]:
    """[envelope, body], as IndexClient frames a request (the ROUTER prepends the peer)."""
    request = pb.Request(request_id=request_id)
    request.index.index_name = index_name
    for doc_id in ids.tolist():
        request.index.docs.add(doc_id=doc_id)
    array_to_nd(vectors, request.index.embeddings)
    envelope = pb.Envelope(client_id="burst", request_id=request_id, body_type=BodyType.INDEX)
    return [envelope.SerializeToString(), request.SerializeToString()]


def _send_burst(shard: DirectShard, requests: list[list[bytes]], timeout: float = 60.0) -> list[pb.Response]:
    """Send every request while the shard is stopped (SIGSTOP), so that all are queued at
    its socket when it runs again, before reading any answer; the answers in arrival order."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    try:
        sock.connect(f"tcp://127.0.0.1:{shard.port}")
        os.killpg(shard.proc.pid, signal.SIGSTOP)
        try:
            for frames in requests:
                sock.send_multipart(frames)
            time.sleep(0.5)  # this side's ZeroMQ I/O thread hands the bytes to the kernel
        finally:
            os.killpg(shard.proc.pid, signal.SIGCONT)
        answers = []
        deadline = time.monotonic() + timeout
        while len(answers) < len(requests):
            left = deadline - time.monotonic()
            assert left > 0 and sock.poll(int(left * 1000)), f"only {len(answers)} of {len(requests)} answered"
            packet = parse_frames(sock.recv_multipart())
            assert packet.envelope.is_response and packet.envelope.client_id == "burst"
            answers.append(packet.response())
        return answers
    finally:
        sock.close()
        ctx.term()


def _groups(commits: list[np.ndarray], requests: list[np.ndarray]) -> list[int]:
    """How many consecutive requests each commit held; fails unless the commits are exactly
    the requests, in order, cut into runs of consecutive requests."""
    sizes, position = [], 0
    for number, ids in enumerate(commits):
        held: list[int] = []
        start = position
        while len(held) < len(ids) and position < len(requests):
            held.extend(requests[position].tolist())
            position += 1
        assert sorted(held) == sorted(ids.tolist()), f"commit {number} is not requests {start}..{position - 1}"
        sizes.append(position - start)
    assert position == len(requests), f"only {position} of {len(requests)} requests were committed"
    return sizes


def _create(shard: DirectShard, name: str) -> None:
    with IndexClient(addresses=f"127.0.0.1:{shard.port}", timeout=30) as client:
        client.create_index(name, {"dim": DIM, "metric": "l2"})


def _stored(shard: DirectShard, name: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    """Every id is stored once, with its own vector."""
    with IndexClient(addresses=f"127.0.0.1:{shard.port}", timeout=30) as client:
        assert client.count(name) == len(ids)
        docs = client.get(name, ids, return_embeddings=True)
        assert all(doc is not None for doc in docs), "an acknowledged document is missing"
        assert np.array_equal(np.stack([doc["embedding"] for doc in docs]), vectors)


def test_a_burst_on_the_direct_socket_is_committed_in_groups_and_answered_in_order(direct_shard) -> None:
    _create(direct_shard, "b")
    n, size, bad = 300, 10, 100  # more requests than one drain takes (_GROUP_MESSAGES = 256)
    data = _vectors(n * size, seed=3)
    parts = [np.arange(i * size, (i + 1) * size) for i in range(n)]
    burst = [_wire_index(i + 1, ids, data[ids], "b") for i, ids in enumerate(parts)]
    burst[bad] = _wire_index(bad + 1, parts[bad], data[parts[bad]][:, :4], "b")  # wrong dimension
    answers = _send_burst(direct_shard, burst)

    # every request answered, in order, each with its own count; the bad one with its own error
    assert [a.request_id for a in answers] == list(range(1, n + 1))
    assert answers[bad].index.status == pb.Response.ERROR and "dimension" in answers[bad].error
    good = [a for i, a in enumerate(answers) if i != bad]
    assert all(a.index.status == pb.Response.SUCCESS and a.index.num_docs == size for a in good)
    kept = parts[:bad] + parts[bad + 1 :]
    ids = np.concatenate(kept)
    _stored(direct_shard, "b", ids, data[ids])

    sizes = _groups(direct_shard.commits("b"), kept)
    assert max(sizes) <= 256, f"a commit held more requests than one drain takes: {sizes}"
    assert len(sizes) >= 2, f"{n} requests cannot fit one drain: {sizes}"
    # Grouped: all were queued at once, so a few drains take them all (one commit each
    # here), not one commit per request.
    assert len(sizes) <= n // 10, f"{len(sizes)} commits for {n} queued requests: {sizes}"


@pytest.mark.parametrize(
    "size",
    [
        512,  # 16 requests fill a group exactly
        1000,  # 8 requests fit; the 9th would pass the bound and starts the next group
    ],
)
def test_requests_totalling_more_than_8192_documents_are_split_at_the_bound(direct_shard, size: int) -> None:
    _create(direct_shard, "big")
    n = 20_480 // size  # 2.5 groups' worth
    data = _vectors(n * size, seed=4)
    parts = [np.arange(i * size, (i + 1) * size) for i in range(n)]
    answers = _send_burst(direct_shard, [_wire_index(i + 1, ids, data[ids], "big") for i, ids in enumerate(parts)])
    assert [a.request_id for a in answers] == list(range(1, n + 1))
    assert all(a.index.status == pb.Response.SUCCESS and a.index.num_docs == size for a in answers)
    _stored(direct_shard, "big", np.arange(n * size), data)

    commits = direct_shard.commits("big")
    sizes = _groups(commits, parts)
    docs = [len(ids) for ids in commits]
    assert max(docs) <= 8192, f"a commit exceeded the 8,192-document bound: {docs}"
    assert len(commits) >= 3 and max(sizes) > 1, f"documents per commit: {docs}"


def test_a_group_stops_before_a_request_would_take_it_past_8192_documents(tmp_path: Path) -> None:
    indexes = IndexSet(tmp_path, IndexConfig(dim=DIM, metric="l2"))
    shard = IndexerService(ServiceConfig(name="shard"), indexes)
    data = _vectors(3 * 8191, seed=5)
    try:
        packets = [
            _index_packet(i + 1, range(i * 8191, (i + 1) * 8191), data[i * 8191 : (i + 1) * 8191]) for i in range(3)
        ]
        answers = shard.answer_all(packets)
        assert [a.index.num_docs for a in answers] == [8191] * 3
        assert indexes.get("").count() == 3 * 8191
        assert indexes.get("").store.last_seq == 3, "two requests of 8,191 documents went into one commit"
    finally:
        indexes.close()
