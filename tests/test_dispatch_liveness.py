"""The map proxy's dispatcher takes a silent encoder for dead sooner when it holds no work.

A busy encoder can be silent because its batch is slow (images, long texts, shared cores); taking
it for dead would hand the same slow work to another encoder, again and again. Real sockets on
loopback: a DEALER stand-in for the encoder, the dispatcher's own ROUTER; time is passed to
`check` so that the test need not wait a minute.
"""

from __future__ import annotations

import time

import zmq

from gnes.elastic import link
from gnes.elastic.dispatch import WorkDispatcher
from gnes.elastic.peers import dealer_socket
from gnes.proto import pb
from gnes.service.message import BodyType, Packet
from tests.conftest import free_ports, wait_for


def _packet(request_id: int) -> Packet:
    env = pb.Envelope(client_id="caller", request_id=request_id, body_type=BodyType.INDEX)
    env.part_ids.append(0)
    env.num_part.append(1)
    return Packet(env, pb.Request(request_id=request_id).SerializeToString())


def _start(ctx: zmq.Context) -> tuple[WorkDispatcher, list[zmq.Socket], zmq.Socket]:
    port = free_ports(1)[0]
    dispatcher = WorkDispatcher(lambda: False)
    router, monitor = dispatcher.open(ctx, "127.0.0.1", port, 100)
    worker = dealer_socket(ctx, "encoder-a", "127.0.0.1", port, 100)
    worker.send_multipart([link.HELLO, link.pack({"id": "encoder-a", "incarnation": "1"})])

    def heard() -> bool:
        if router.poll(50):
            dispatcher.on_readable(router)
        return dispatcher.peers.live("encoder-a")

    wait_for(heard, 10, "the encoder's HELLO")
    return dispatcher, [worker, monitor, router], worker


def _close(ctx: zmq.Context, socks: list[zmq.Socket]) -> None:
    for sock in socks:  # every socket, the monitor's too, or the context never ends
        sock.close(0)
    ctx.term()


def test_an_idle_silent_encoder_is_dead_after_the_short_bound() -> None:
    ctx = zmq.Context()
    dispatcher, socks, worker = _start(ctx)
    try:
        now = time.monotonic()
        dispatcher.check(now + link.WORKER_DEAD_AFTER_S / 2)
        assert dispatcher.peers.live("encoder-a")
        dispatcher.check(now + link.WORKER_DEAD_AFTER_S + 1)
        assert not dispatcher.peers.live("encoder-a")
    finally:
        _close(ctx, socks)


def test_a_busy_silent_encoder_keeps_its_work_until_the_long_bound_then_it_is_resent() -> None:
    ctx = zmq.Context()
    dispatcher, socks, worker = _start(ctx)
    try:
        dispatcher.submit(_packet(1))
        assert worker.poll(5000), "the encoder got no work"
        assert worker.recv_multipart()[0] == link.REQ
        now = time.monotonic()
        dispatcher.check(now + link.WORKER_DEAD_AFTER_S + 5)  # slow, not dead: its batch is still its own
        assert dispatcher.peers.live("encoder-a") and dispatcher.resent == 0
        dispatcher.check(now + link.BUSY_WORKER_DEAD_AFTER_S + 1)
        assert not dispatcher.peers.live("encoder-a")
        assert dispatcher.resent == 1 and dispatcher.pending == 1  # waits, first in line, for another encoder
    finally:
        _close(ctx, socks)
