"""A worker's side of gnes.elastic.dispatch: HELLO as a heartbeat, ACK once a message's
result has been passed on, and LEAVE on SIGTERM (keep working until BYE)."""

from __future__ import annotations

import uuid

import zmq

from ..service.message import BodyType, Packet
from . import link
from .peers import Outbox, dealer_socket

# A leaving worker that has had no work and no BYE for this long: the proxy is gone, stop anyway.
_LEAVE_WAIT_S = 3.0
# A query's ACK waits for the next message to the proxy (another ACK, a HELLO, LEAVE) or for this
# many others: each message wakes the proxy, and a sequential query otherwise woke it twice more
# (bench/README.md). Should this worker die meanwhile, the proxy sends those queries once more and
# the reducer drops the second answers (the first came). Half the dispatcher's window of 8, so
# that the waiting ACKs never leave a worker without room for new work.
_QUERY_ACKS = 4


class WorkerLink:
    def __init__(self, name: str, info: dict[str, str] | None = None) -> None:
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.info = info or {}  # told in every HELLO (an encoder's model name: the pool it joins)
        self.sock: zmq.Socket | None = None
        self._out = Outbox()
        self._acks = link.Acks(_QUERY_ACKS)
        self._next_hello = 0.0
        self.leave_deadline: float | None = None
        self.dismissed = False

    def open(self, ctx: zmq.Context, host: str, port: int, hwm: int) -> zmq.Socket:
        self.sock = self._out.sock = dealer_socket(ctx, self.name, host, port, hwm)
        self.hello()
        return self.sock

    def _send(self, frames: list[bytes]) -> None:
        waiting = self._acks.take()  # they go first: LEAVE must find them counted
        if waiting:
            self._out.append(waiting)
        self._out.send(frames)

    def hello(self) -> None:
        self._send([link.HELLO, link.pack({**self.info, "id": self.name, "incarnation": self.name})])

    def acknowledge(self, packets: list[Packet], now: float) -> None:
        if self.leave_deadline is not None:
            self.leave_deadline = now + _LEAVE_WAIT_S  # still busy with what it held
        for packet in packets:
            env = packet.envelope
            # A leaving worker is let go once the proxy holds nothing of it: no ACK waits then.
            wait = env.body_type == BodyType.QUERY and not env.is_response and self.leave_deadline is None
            self._acks.add(env, wait)
        if self._acks.due:
            self._out.send(self._acks.take())

    def on_control(self, frames: list[bytes]) -> None:
        """A frame that is not work: BYE lets this worker go."""
        if frames[0] == link.BYE:
            self.dismissed = True

    def leave(self, now: float) -> None:
        if self.leave_deadline is None:
            self.leave_deadline = now + _LEAVE_WAIT_S
            self._send([link.LEAVE, link.pack({"id": self.name})])

    def next_deadline(self) -> float:
        return min(self._next_hello, self.leave_deadline or self._next_hello)

    def on_timer(self, now: float) -> None:
        # Let go: no more heartbeats (the dispatcher ignores any that crossed its BYE).
        if now >= self._next_hello and not self.dismissed:
            self.hello()
            self._next_hello = now + link.HELLO_INTERVAL_S
