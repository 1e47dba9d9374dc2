"""An encoder's acknowledgements to the map proxy's dispatcher (gnes/elastic/worker_link.py): a
write's leaves at once, a query's waits for the next message, and the dispatcher forgets every
part an ACK names. Real sockets on loopback: the worker's own DEALER, the dispatcher's ROUTER."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import zmq

from gnes.elastic import link, worker_link
from gnes.elastic.dispatch import WorkDispatcher
from gnes.elastic.worker_link import WorkerLink
from gnes.proto import pb
from gnes.service.message import BodyType, Packet
from tests.conftest import free_ports, wait_for


def _packet(request_id: int, body_type: int) -> Packet:
    env = pb.Envelope(client_id="caller", request_id=request_id, body_type=body_type)
    env.part_ids.append(0)
    env.num_part.append(1)
    return Packet(env, pb.Request(request_id=request_id).SerializeToString())


@pytest.fixture
def linked() -> Iterator[tuple[WorkDispatcher, zmq.Socket, WorkerLink, zmq.Socket]]:
    ctx = zmq.Context()
    port = free_ports(1)[0]
    dispatcher = WorkDispatcher(lambda: False)
    router, monitor = dispatcher.open(ctx, "127.0.0.1", port, 100)
    worker = WorkerLink("encoder")
    sock = worker.open(ctx, "127.0.0.1", port, 100)  # says HELLO

    def heard() -> bool:
        if router.poll(50):
            dispatcher.on_readable(router)
        return dispatcher.peers.live(worker.name)

    wait_for(heard, 10, "the worker's HELLO")
    yield dispatcher, router, worker, sock
    for s in (sock, monitor, router):
        s.close(0)
    ctx.term()


def in_flight_after_reading(dispatcher: WorkDispatcher, router: zmq.Socket, worker: WorkerLink) -> set[int] | None:
    """What the dispatcher still holds for the worker once it has read all that came; None
    once it has let the worker go."""
    while router.poll(200):
        dispatcher.on_readable(router)
    held = dispatcher.workers.get(worker.name)
    return None if held is None else {request_id for _, request_id, _ in held.in_flight}


def hand_out(dispatcher: WorkDispatcher, sock: zmq.Socket, packets: list[Packet]) -> None:
    for packet in packets:
        dispatcher.submit(packet)
    for _ in packets:
        assert sock.poll(5000), "the dispatcher did not hand the work out"
        sock.recv_multipart()


def test_a_query_ack_waits_for_the_next_message_and_a_write_ack_does_not(linked) -> None:  # type: ignore[no-untyped-def]
    dispatcher, router, worker, sock = linked
    query, write = _packet(1, BodyType.QUERY), _packet(2, BodyType.INDEX)
    hand_out(dispatcher, sock, [query, write])
    worker.acknowledge([query], 0.0)
    assert in_flight_after_reading(dispatcher, router, worker) == {1, 2}, "the query's ACK waits"
    worker.acknowledge([write], 0.0)
    assert in_flight_after_reading(dispatcher, router, worker) == set(), "one ACK names both"

    later = _packet(3, BodyType.QUERY)
    hand_out(dispatcher, sock, [later])
    worker.acknowledge([later], 0.0)
    worker.hello()
    assert in_flight_after_reading(dispatcher, router, worker) == set(), "a HELLO takes it along"


def test_waiting_query_acks_leave_before_the_dispatchers_window_fills(linked) -> None:  # type: ignore[no-untyped-def]
    dispatcher, router, worker, sock = linked
    queries = [_packet(i, BodyType.QUERY) for i in range(1, worker_link._QUERY_ACKS + 1)]
    hand_out(dispatcher, sock, queries)
    for packet in queries[:-1]:
        worker.acknowledge([packet], 0.0)
    assert len(in_flight_after_reading(dispatcher, router, worker)) == len(queries)
    worker.acknowledge([queries[-1]], 0.0)
    assert in_flight_after_reading(dispatcher, router, worker) == set()


def test_a_leaving_worker_acknowledges_queries_at_once(linked) -> None:  # type: ignore[no-untyped-def]
    dispatcher, router, worker, sock = linked
    waiting, after = _packet(1, BodyType.QUERY), _packet(2, BodyType.QUERY)
    hand_out(dispatcher, sock, [waiting, after])
    worker.acknowledge([waiting], 0.0)
    worker.leave(0.0)  # LEAVE takes the waiting ACK along, first
    assert in_flight_after_reading(dispatcher, router, worker) == {2}
    worker.acknowledge([after], 0.0)
    assert in_flight_after_reading(dispatcher, router, worker) is None, "let go: it holds nothing"
    assert sock.poll(5000) and sock.recv_multipart()[0] == link.BYE
