"""Handing work to a pool of workers (the encoders) that may grow, shrink or die at any time.

The proxy binds a ROUTER (``--socket_out ROUTER_BIND``); each worker connects a DEALER
(``--socket_in DEALER_CONNECT``) and says HELLO. A message goes to the live worker with the
fewest messages in flight, at most `window` each, so a slow or busy worker gets less and a
new one gets work at once. A message stays here until its worker acknowledges it, which the
worker does once it has passed the result on. When a worker dies, what it had not
acknowledged goes to the others, first in line; downstream, writes are idempotent by id and
the reducer keeps the first answer of a part, so a message done twice is harmless. A worker
asked to stop (SIGTERM) says LEAVE: it gets no more work, finishes what it holds and is let
go (BYE) once that is acknowledged. No message is lost to a worker that dies or leaves.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from ..proto import pb
from ..service.message import Packet
from . import link
from .peers import Peers, receive_from_peers, router_socket, send_to

log = logging.getLogger("gnes.dispatch")


@dataclass
class _Worker:
    name: str
    leaving: bool = False
    in_flight: OrderedDict[link.PartKey, Packet] = field(default_factory=OrderedDict)


class WorkDispatcher:
    def __init__(self, stopping: Callable[[], bool], window: int = 8, max_pending: int = 1000) -> None:
        self.window = window
        self.max_pending = max_pending
        self.pending: deque[Packet] = deque()
        self.workers: dict[str, _Worker] = {}
        self.peers = Peers(self._on_down, link.WORKER_DEAD_AFTER_S)
        self.resent = 0
        self._stopping = stopping
        self.router: zmq.Socket | None = None

    def open(self, ctx: zmq.Context, host: str, port: int, hwm: int) -> tuple[zmq.Socket, zmq.Socket]:
        """The ROUTER and its connection monitor, both to be watched by the service loop."""
        self.router = router_socket(ctx, host, port, hwm)
        return self.router, self.peers.open_monitor(self.router)

    @property
    def full(self) -> bool:
        """Enough is waiting: the proxy stops reading its input until workers catch up."""
        return len(self.pending) >= self.max_pending

    def submit(self, packet: Packet) -> None:
        self.pending.append(packet)
        self.pump()

    def pump(self) -> None:
        while self.pending:
            worker = self._least_busy()
            if worker is None:
                return
            packet = self.pending.popleft()
            env = packet.envelope
            worker.in_flight[link.part_key(env.client_id, env.request_id, env.part_ids)] = packet
            frames = [link.REQ, env.SerializeToString(), packet.body]
            if not send_to(self.router, worker.name, frames, self._stopping):
                self.peers.down(self.peers.table[worker.name], "its connection is gone")

    def _least_busy(self) -> _Worker | None:
        best = None
        for worker in self.workers.values():
            if worker.leaving or not self.peers.live(worker.name) or len(worker.in_flight) >= self.window:
                continue
            if best is None or len(worker.in_flight) < len(best.in_flight):
                best = worker
        return best

    def on_readable(self, sock: zmq.Socket) -> None:
        receive_from_peers(sock, self._on_message, log)
        self.pump()

    def _on_message(self, name: str, kind: bytes, frames: list[bytes], frame: zmq.Frame) -> None:
        body = frames[0]
        hello = link.unpack(body) if kind == link.HELLO else None
        appeared, restarted = self.peers.heard(name, frame, hello)
        worker = self.workers.get(name)
        if worker is None or restarted:
            if worker is not None:
                self._give_back(worker)
            worker = self.workers[name] = _Worker(name)
        if appeared and not restarted:
            log.info("worker %s is up (%d workers)", name, sum(self.peers.live(w) for w in self.workers))
        if kind == link.ACK:
            env = pb.Envelope.FromString(body)
            worker.in_flight.pop(link.part_key(env.client_id, env.request_id, env.part_ids), None)
        elif kind == link.LEAVE:
            worker.leaving = True
            log.info("worker %s leaves once its %d messages are done", name, len(worker.in_flight))
        elif kind != link.HELLO:
            raise ValueError(f"unknown kind {kind!r}")
        if worker.leaving and not worker.in_flight:
            send_to(self.router, name, [link.BYE, link.pack({"reason": "done"})], self._stopping)
            del self.workers[name]

    def _on_down(self, name: str, why: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None:
            log.warning("worker %s is down (%s): %d messages go to the others", name, why, len(worker.in_flight))
            self._give_back(worker)

    def _give_back(self, worker: _Worker) -> None:
        """What a dead worker held goes first in line, in its order."""
        self.resent += len(worker.in_flight)
        self.pending.extendleft(reversed(worker.in_flight.values()))
        worker.in_flight.clear()

    def check(self, now: float | None = None) -> None:
        self.peers.check(time.monotonic() if now is None else now)
        self.pump()

    def status(self) -> dict[str, object]:
        return {
            "workers": sum(self.peers.live(w) for w in self.workers),
            "waiting": len(self.pending),
            "in_flight": sum(len(w.in_flight) for w in self.workers.values()),
            "resent": self.resent,
        }
