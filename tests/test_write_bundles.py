"""Write bundles: the middleman holds the write parts of a stream and sends each shard one
message with all of its parts (gnes/elastic/middleman.py); the shard's link answers a bundle as
one group and acknowledges it in one message (gnes/elastic/shard_link.py). For the link, a real
ROUTER stands for the middleman; for the middleman, the whole pipeline runs in this process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq
from conftest import REPO, start_inprocess_pipeline, wait_for_shards

from gnes.client import GnesClient
from gnes.elastic import link, shard_link
from gnes.elastic.peers import router_socket
from gnes.elastic.shard_link import ShardLink
from gnes.proto import pb
from gnes.service.message import BodyType, Packet
from gnes.service.proxy import ShardProxyService  # first: it imports gnes.elastic.middleman
from gnes.stack.compose import find_free_ports


class Middleman:
    def __init__(self, ctx: zmq.Context, port: int) -> None:
        self.router = router_socket(ctx, "127.0.0.1", port, 100)
        self.next_id = 0

    def send(self, body_type: int, count: int = 1) -> list[int]:
        """One REQ message of `count` parts; their request ids."""
        frames = []
        for _ in range(count):
            self.next_id += 1
            env = pb.Envelope(client_id="c", request_id=self.next_id, body_type=body_type)
            env.num_part.append(1)
            env.part_ids.append(0)
            frames += [env.SerializeToString(), b""]
        self.router.send_multipart([b"s1", link.REQ, *frames])
        return list(range(self.next_id - count + 1, self.next_id + 1))


@pytest.fixture
def pair() -> Iterator[tuple[ShardLink, Middleman, list[list[int]]]]:
    ctx = zmq.Context()
    port = find_free_ports(1)[0]
    middleman = Middleman(ctx, port)
    answered: list[list[int]] = []

    def on_requests(packets: list[Packet]) -> None:
        answered.append([p.envelope.request_id for p in packets])

    shard = ShardLink("s1", lambda: None, None, on_requests, lambda why: None)  # type: ignore[arg-type,return-value]
    shard.open(ctx, "127.0.0.1", port, 100)
    shard.hello()  # the ROUTER learns the shard's routing id
    while middleman.router.poll(5000):
        if middleman.router.recv_multipart()[1] == link.HELLO:
            break
    yield shard, middleman, answered
    shard.sock.close(0)
    middleman.router.close(0)
    ctx.term()


def deliver(shard: ShardLink, count: int) -> None:
    """Let the shard read until `count` more requests have reached it (held or answered)."""
    for _ in range(count):
        assert shard.sock.poll(5000), "a request did not reach the shard"
        shard.on_readable(shard.sock)


def test_a_bundle_is_answered_as_one_group_and_acknowledged_in_one_message(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    writes = middleman.send(BodyType.INDEX, count=5)
    deliver(shard, 1)
    assert answered == [writes], "the parts of one bundle share one commit"
    assert ack_messages(middleman) == [writes]
    lone = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert answered == [writes, lone] and ack_messages(middleman) == [lone]


def test_a_malformed_request_message_is_dropped_and_the_shard_goes_on(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    env = pb.Envelope(client_id="c", request_id=99, body_type=BodyType.INDEX).SerializeToString()
    middleman.router.send_multipart([b"s1", link.REQ, env, b"", env])  # a pair and a half
    middleman.router.send_multipart([b"s1", link.REQ, b"\xff\xfe not an envelope", b""])
    (query,) = middleman.send(BodyType.QUERY)
    while not answered:  # the three messages may come in one read or in several
        deliver(shard, 1)
    assert answered == [[query]]


def ack_messages(middleman: Middleman) -> list[list[int]]:
    """The ACK messages that came, each as the request ids it acknowledges (HELLOs skipped)."""
    got = []
    while middleman.router.poll(200):
        _, kind, *frames = middleman.router.recv_multipart()
        if kind == link.ACK:
            got.append([request_id for _, request_id, _ in link.acked_parts(frames)])
    return got


def test_a_query_is_answered_at_once_and_its_ack_leaves_with_the_next_message(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    (query,) = middleman.send(BodyType.QUERY)
    deliver(shard, 1)
    assert answered == [[query]]
    assert ack_messages(middleman) == [], "its acknowledgement waits for the next message"
    (write,) = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert ack_messages(middleman) == [[write, query]], "one ACK message carries both"
    (second,) = middleman.send(BodyType.QUERY)
    deliver(shard, 1)
    shard.hello()
    assert ack_messages(middleman) == [[second]], "a HELLO takes the waiting ones along, first"


def test_waiting_query_acks_leave_together_once_there_are_enough(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    queries = [middleman.send(BodyType.QUERY)[0] for _ in range(shard_link._QUERY_ACKS)]
    while sum(map(len, answered)) < len(queries):
        assert shard.sock.poll(5000), "a query did not reach the shard"
        shard.on_readable(shard.sock)
    assert ack_messages(middleman) == [queries], "one ACK message, sent once the last came"


INDEXER_YAML = str(REPO / "yaml/indexer-hash.yml")
ENCODER_YAML = str(REPO / "yaml/encoder-hash.yml")
MIDDLEMAN = ShardProxyService.__module__  # gnes.elastic.middleman, where the hold is read


def text_of(i: int) -> str:
    return f"bundled document {i} about subject {i % 11}"


def test_a_stream_of_writes_reaches_each_shard_in_bundles_and_every_document_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every write after the first counts as part of a stream, and a bundle waits 0.3 s for
    # others, however slow this machine is: 40 requests of 50 documents, 3 parts each.
    monkeypatch.setattr(MIDDLEMAN + "._STREAM_GAP_S", 3600.0)
    monkeypatch.setattr(MIDDLEMAN + "._HOLD_S", 0.3)
    pipe = start_inprocess_pipeline(ENCODER_YAML, INDEXER_YAML, shards=3, data_dir=tmp_path)
    try:
        wait_for_shards(pipe.services["middle"], 3)
        with GnesClient(port=pipe.grpc_port, timeout=60) as client:
            summary = client.index([text_of(i) for i in range(2000)], batch_size=50)
            assert summary.errors == [] and summary.num_docs == 2000
            info = pipe.services["middle"].status_info()
            assert info["write_bundles"] < 40 * 3 / 2, f"{info['write_bundles']} bundles for 120 parts"
            stored = [pipe.shard(i).indexes.get("").store.ids() for i in range(3)]
            assert sorted(np.concatenate(stored).tolist()) == list(range(2000)), "each document on one shard, once"
            for doc_id in (0, 777, 1999):
                assert client.query(text_of(doc_id), top_k=1)[0].doc_id == doc_id
    finally:
        pipe.stack.close()


def test_held_writes_go_before_a_query_that_comes_after_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle held for 30 s is sent the moment a query needs the link: the query sees it and the
    writer's call returns, long before the hold would have ended."""
    monkeypatch.setattr(MIDDLEMAN + "._STREAM_GAP_S", 3600.0)
    monkeypatch.setattr(MIDDLEMAN + "._HOLD_S", 30.0)
    pipe = start_inprocess_pipeline(ENCODER_YAML, INDEXER_YAML, shards=1, data_dir=tmp_path)
    try:
        middle = pipe.services["middle"]
        assert isinstance(middle, ShardProxyService)
        wait_for_shards(middle, 1)
        results: list[object] = []
        with GnesClient(port=pipe.grpc_port, timeout=60) as client:
            assert client.index([text_of(i) for i in range(100)], batch_size=100).errors == []  # the stream's first
            writer = threading.Thread(
                target=lambda: results.append(client.index([text_of(100)], start_id=100)), daemon=True
            )
            started = time.monotonic()
            writer.start()
            deadline = started + 20
            while not any(shard.bundle for shard in list(middle.shards.values())):  # held at the middleman
                assert time.monotonic() < deadline, "the write did not reach the middleman"
                time.sleep(0.01)
            assert client.query(text_of(100), top_k=1)[0].doc_id == 100, "the query did not see the held write"
            writer.join(20)
            assert time.monotonic() - started < 20 and results and results[0].errors == []  # type: ignore[attr-defined]
    finally:
        pipe.stack.close()
