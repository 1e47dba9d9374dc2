"""The shard's group commit of pipeline writes (gnes/elastic/shard_link.py): index parts of a
stream wait for others to share one commit, are acknowledged only once answered, and never let
anything overtake them. A real ROUTER stands for the middleman."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from gnes.elastic import link, shard_link
from gnes.elastic.peers import router_socket
from gnes.elastic.shard_link import ShardLink
from gnes.proto import pb
from gnes.service.message import BodyType, Packet
from gnes.stack.compose import find_free_ports


class Middleman:
    def __init__(self, ctx: zmq.Context, port: int) -> None:
        self.router = router_socket(ctx, "127.0.0.1", port, 100)
        self.next_id = 0

    def send(self, body_type: int) -> int:
        self.next_id += 1
        env = pb.Envelope(client_id="c", request_id=self.next_id, body_type=body_type)
        env.num_part.append(1)
        env.part_ids.append(0)
        self.router.send_multipart([b"s1", link.REQ, env.SerializeToString(), b""])
        return self.next_id

    def acks(self) -> list[int]:
        """The request ids acknowledged so far (HELLOs skipped)."""
        got = []
        while self.router.poll(200):
            _, kind, *frames = self.router.recv_multipart()
            if kind == link.ACK:
                got.extend(request_id for _, request_id, _ in link.acked_parts(frames))
        return got


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ShardLink, Middleman, list[list[int]]]]:
    # Every write after the first counts as part of a stream, however slow this machine is.
    monkeypatch.setattr(shard_link, "_STREAM_GAP_S", 3600.0)
    monkeypatch.setattr(shard_link, "_HOLD_S", 3600.0)
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


def test_a_lone_write_is_answered_at_once_and_the_next_of_a_stream_waits_for_its_deadline(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    first = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert answered == [[first]]
    assert middleman.acks() == [first]

    second = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert answered == [[first]], "a write in a stream waits for others to share its commit"
    assert middleman.acks() == [], "a held write is not acknowledged"
    assert shard.busy
    third = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert answered == [[first]]

    shard.on_timer(time.monotonic() + 2 * 3600)  # past the wait of the first held write
    assert answered == [[first], [second, third]], "both held writes share one commit"
    assert middleman.acks() == [second, third]
    assert not shard.busy


def hold_one(shard, middleman) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """A write answered at once, then one held behind it: their request ids."""
    first = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    held = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert middleman.acks() == [first], "the held write is not acknowledged yet"
    return first, held


def test_a_query_is_not_held_and_does_not_overtake_a_held_write(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    first, held = hold_one(shard, middleman)
    query = middleman.send(BodyType.QUERY)
    deliver(shard, 1)
    assert answered == [[first], [held, query]]
    assert middleman.acks() == [held, query]


def test_leaving_answers_what_is_held_first(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    first, held = hold_one(shard, middleman)
    shard.leave(0.0)
    shard.flush()
    assert answered == [[first], [held]]
    assert middleman.acks() == [held]


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
    query = middleman.send(BodyType.QUERY)
    deliver(shard, 1)
    assert answered == [[query]], "a query is never held"
    assert ack_messages(middleman) == [], "its acknowledgement waits for the next message"
    write = middleman.send(BodyType.INDEX)
    deliver(shard, 1)
    assert ack_messages(middleman) == [[write, query]], "one ACK message carries both"
    second = middleman.send(BodyType.QUERY)
    deliver(shard, 1)
    shard.hello()
    assert ack_messages(middleman) == [[second]], "a HELLO takes the waiting ones along, first"


def test_waiting_query_acks_leave_together_once_there_are_enough(pair) -> None:  # type: ignore[no-untyped-def]
    shard, middleman, answered = pair
    queries = [middleman.send(BodyType.QUERY) for _ in range(shard_link._QUERY_ACKS)]
    while sum(map(len, answered)) < len(queries):
        assert shard.sock.poll(5000), "a query did not reach the shard"
        shard.on_readable(shard.sock)
    assert ack_messages(middleman) == [queries], "one ACK message, sent once the last came"
