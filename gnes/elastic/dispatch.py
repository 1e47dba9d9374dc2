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

Workers serve models: a worker's HELLO names its model ("" is the deployment's default one) and
the dispatcher keeps one pool, and one queue, per model. A message goes to a worker of the model
its envelope names (`model_name`); one for a model that no worker has ever served, or whose
workers have all left, is answered at once with an error naming the model, instead of waiting
for a worker that will never come. A model whose workers only died waits FORGET_AFTER_S for them
to come back before its queue is answered the same way.

A worker that has said LEAVE is on its way out, however it goes: let go with BYE, or down (it quit
without BYE, or died) before that. Either way, once no other worker of its model is left, the model
is forgotten at once, so a model removed on purpose is refused at once. A worker that is let go is
remembered by name: a heartbeat it sent before it read its BYE arrives after it, and must not
bring it, and its model, back as a fresh worker (whose closing connection would then read as a
death and keep the model waiting FORGET_AFTER_S).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq

from ..proto import pb
from ..service.message import Packet, as_error
from . import link
from .peers import Peers, receive_from_peers, router_socket, send_to

log = logging.getLogger("gnes.dispatch")

# A model whose workers all died (not left) and none came back for this long is forgotten.
FORGET_AFTER_S = 30.0
# How many workers let go (BYE) are remembered, so that their late messages are ignored.
_LET_GO_KEPT = 4096
_ANY = None  # the queue of answers (errors) that any worker may carry downstream


def _queue_of(env: pb.Envelope) -> str | None:
    """The queue a message waits in: its model's, or _ANY for an answer any worker carries on."""
    return _ANY if env.is_response else env.model_name


@dataclass
class _Worker:
    name: str
    model: str = ""
    leaving: bool = False
    in_flight: OrderedDict[link.PartKey, Packet] = field(default_factory=OrderedDict)


class WorkDispatcher:
    def __init__(self, stopping: Callable[[], bool], window: int = 8, max_pending: int = 1000) -> None:
        self.window = window
        self.max_pending = max_pending
        # One queue per model; _ANY holds error answers, which any worker passes on.
        self.queues: dict[str | None, deque[Packet]] = {}
        self.workers: dict[str, _Worker] = {}
        self.peers = Peers(self._on_down, link.WORKER_DEAD_AFTER_S, self._patience)
        self.resent = 0
        self.unknown_model = 0
        # model -> when its last live worker died (None while one lives)
        self.models: dict[str, float | None] = {}
        # name -> incarnation of the workers let go, oldest first
        self._let_go: OrderedDict[str, str] = OrderedDict()
        self._stopping = stopping
        self.router: zmq.Socket | None = None

    def open(self, ctx: zmq.Context, host: str, port: int, hwm: int) -> tuple[zmq.Socket, zmq.Socket]:
        """The ROUTER and its connection monitor, both to be watched by the service loop."""
        self.router = router_socket(ctx, host, port, hwm)
        return self.router, self.peers.open_monitor(self.router)

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    @property
    def full(self) -> bool:
        """Enough is waiting: the proxy stops reading its input until workers catch up."""
        return self.pending >= self.max_pending

    def submit(self, packet: Packet) -> None:
        model = _queue_of(packet.envelope)
        if model and model not in self.models and self.workers:
            packet, model = self._refuse(packet, model), _ANY
        self.queues.setdefault(model, deque()).append(packet)
        self.pump()

    def _refuse(self, packet: Packet, model: str) -> Packet:
        self.unknown_model += 1
        served = ", ".join(sorted(m or "default" for m in self.models)) or "none"
        log.info("request %d names model %r, which no encoder serves", packet.envelope.request_id, model)
        return as_error(packet, f"no encoder serves the model {model!r} (models served: {served})")

    def pump(self) -> None:
        for model, queue in list(self.queues.items()):
            while queue:
                worker = self._least_busy(model)
                if worker is None:
                    break
                packet = queue.popleft()
                env = packet.envelope
                worker.in_flight[link.part_key(env.client_id, env.request_id, env.part_ids)] = packet
                frames = [link.REQ, env.SerializeToString(), packet.body]
                if not send_to(self.router, worker.name, frames, self._stopping):
                    self.peers.down(self.peers.table[worker.name], "its connection is gone")

    def _least_busy(self, model: str | None) -> _Worker | None:
        best = None
        for worker in self.workers.values():
            if worker.leaving or not self.peers.live(worker.name) or len(worker.in_flight) >= self.window:
                continue
            if model is not _ANY and worker.model != model:
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
        if self._from_let_go(name, hello):
            return
        appeared, restarted = self.peers.heard(name, frame, hello)
        worker = self.workers.get(name)
        if worker is None or restarted:
            if worker is not None:
                self._give_back(worker)
            worker = self.workers[name] = _Worker(name)
        if hello is not None:
            worker.model = str(hello.get("model", ""))
            if not worker.leaving:  # a leaving worker's heartbeat brings no model back
                self.models[worker.model] = None  # it has a live worker (again)
        if appeared and not restarted:
            log.info("worker %s is up (%d workers)", name, sum(self.peers.live(w) for w in self.workers))
        if kind == link.ACK:
            for key in link.acked_parts(frames):
                worker.in_flight.pop(key, None)
        elif kind == link.LEAVE:
            worker.leaving = True
            log.info("worker %s leaves once its %d messages are done", name, len(worker.in_flight))
        elif kind != link.HELLO:
            raise ValueError(f"unknown kind {kind!r}")
        if worker.leaving and not worker.in_flight:
            self._dismiss(worker)

    def _dismiss(self, worker: _Worker) -> None:
        """Let a leaving worker go (BYE) once it holds nothing, and remember it as gone."""
        send_to(self.router, worker.name, [link.BYE, link.pack({"reason": "done"})], self._stopping)
        del self.workers[worker.name]
        peer = self.peers.forget(worker.name)  # its closing connection is no death now
        self._let_go[worker.name] = peer.incarnation if peer is not None else ""
        while len(self._let_go) > _LET_GO_KEPT:
            self._let_go.popitem(last=False)
        self._gone(worker)

    def _from_let_go(self, name: str, hello: dict | None) -> bool:
        """Whether a message comes from a worker already let go: a heartbeat that crossed its BYE,
        to be ignored. A HELLO of another incarnation is a new process under that name."""
        incarnation = self._let_go.get(name)
        if incarnation is None:
            return False
        if hello is None or str(hello.get("incarnation", "")) == incarnation:
            return True
        del self._let_go[name]
        return False

    def _gone(self, worker: _Worker) -> None:
        """A worker was let go or went down: its model is forgotten at once if it was leaving and no
        other live worker of the model is left; it waits FORGET_AFTER_S if the worker died."""
        if any(w.model == worker.model and self.peers.live(w.name) for w in self.workers.values()):
            return  # still served, or others of it still finishing (they decide when they go)
        if worker.leaving:
            self._forget(worker.model, "its encoders have left")
        else:
            self.models[worker.model] = time.monotonic()

    def _patience(self, name: str) -> float:
        """How long a worker may be silent before it is taken for dead: longer while it holds work."""
        worker = self.workers.get(name)
        busy = worker is not None and bool(worker.in_flight)
        return link.BUSY_WORKER_DEAD_AFTER_S if busy else link.WORKER_DEAD_AFTER_S

    def _on_down(self, name: str, why: str) -> None:
        worker = self.workers.pop(name, None)
        if worker is not None:
            log.warning("worker %s is down (%s): %d messages go to the others", name, why, len(worker.in_flight))
            # First in line of its model's queue; refused with the rest if its model goes with it.
            self._give_back(worker)
            self._gone(worker)

    def _give_back(self, worker: _Worker) -> None:
        """What a dead worker held goes first in line of its queue, in its order."""
        self.resent += len(worker.in_flight)
        for packet in reversed(worker.in_flight.values()):
            self.queues.setdefault(_queue_of(packet.envelope), deque()).appendleft(packet)
        worker.in_flight.clear()

    def _forget(self, model: str, why: str) -> None:
        """No encoder serves `model` any more: what waits for it is answered with an error."""
        self.models.pop(model, None)
        waiting = self.queues.pop(model, deque())
        if model and waiting:
            log.warning("model %r is gone (%s): %d waiting messages answered with an error", model, why, len(waiting))
        if model:  # the default model's queue waits for its workers, as it always did
            refused = deque(self._refuse(packet, model) for packet in waiting)
            self.queues.setdefault(_ANY, deque()).extend(refused)
        else:
            self.queues[model] = waiting

    def check(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.peers.check(now)
        for model, died in list(self.models.items()):
            if died is not None and now - died > FORGET_AFTER_S:
                self._forget(model, f"no encoder of it for {FORGET_AFTER_S:g}s")
        self.pump()

    def status(self) -> dict[str, object]:
        live = [w for w in self.workers.values() if self.peers.live(w.name)]
        return {
            "workers": len(live),
            "waiting": self.pending,
            "in_flight": sum(len(w.in_flight) for w in self.workers.values()),
            "resent": self.resent,
            "models": {m or "default": sum(w.model == m for w in live) for m in self.models},
            "unknown_model": self.unknown_model,
        }
