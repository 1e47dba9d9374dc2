"""The middleman: places index writes on the shard that owns each document, fans queries out
to every shard, and keeps the shards elastic.

- **Placement by id.** Each index request is split by owner (gnes.placement) and each part
  goes to its one shard, so writing an id again replaces it and a delete finds it.
- **Nothing acknowledged is lost.** A part stays here until its shard acknowledges it. A
  shard that dies gets its unacknowledged parts again, in order, once it is back (writes are
  idempotent by id). A part whose shard stays away longer than --hold_timeout is answered
  with an error naming the shard, so no caller waits past that bound.
- **Partial answers at once.** A query is sent to the live shards only; for a shard that is
  down, or dies while the query is out, the reducer gets an empty part marked partial at once.
- **Join and leave.** A shard that says HELLO with an unknown id joins; one that asks to leave
  (SIGTERM) hands its documents over first. Either way writes pause, every shard streams the
  documents whose owner changes to the new owner, then the new placement is switched in for
  reads and writes together, and the old copies are dropped. Until the switch the old
  placement is in force and queries see both copies, which the reducer merges by id.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from ..placement import Placement
from ..proto import array_to_nd, nd_to_array, pb
from ..service.message import BodyType, Packet, as_error, error_response, stamp_route
from ..service.proxy import ProxyService
from . import link

# Right after start, wait this long for shards to report the placement they last saw.
SETTLE_S = 1.5
# Leave requests that arrive this close together are decided together: when every shard
# asks at once, the whole stack is stopping and nothing should move.
LEAVE_COALESCE_S = 0.5
PartKey = tuple[str, int, tuple[int, ...]]


@dataclass
class _Part:
    env: pb.Envelope
    body: bytes
    since: float


@dataclass
class _Shard:
    id: str
    incarnation: str = ""
    last_seen: float = 0.0
    live: bool = False
    epoch: int = 0
    members: tuple[str, ...] = ()
    fd: int = -1
    left: bool = False  # left by handover: not a joiner again until it restarts
    writes: OrderedDict[PartKey, _Part] = field(default_factory=OrderedDict)
    queries: dict[PartKey, pb.Envelope] = field(default_factory=dict)


@dataclass
class _Migration:
    epoch: int
    target: Placement
    sources: set[str]
    leavers: set[str]
    phase: str = "drain"  # drain: wait for acks of the writes sent; move: shards stream
    done: set[str] = field(default_factory=set)
    started: float = 0.0


class ShardProxyService(ProxyService):
    kind = "shard-proxy"

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.shards: dict[str, _Shard] = {}
        self.ring: Placement | None = None
        self.epoch = 0
        self.migrations = 0
        self.last_migration_s = 0.0
        self._router: zmq.Socket | None = None
        self._first_hello: float | None = None
        self._queued: deque[tuple[float, Packet]] = deque()
        self._migration: _Migration | None = None
        self._leave_asks: dict[str, float] = {}
        self._granted: set[str] = set()
        self._tick = 0.0
        self._fds: dict[int, str] = {}  # connection descriptor -> the shard that spoke on it last

    # ---- sockets -----------------------------------------------------------------------
    def open_extra_sockets(self, ctx: zmq.Context) -> None:
        cfg = self.config
        if not cfg.port_broadcast:
            raise ValueError("ShardProxyService needs --port_broadcast: the port its shards connect to")
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.SNDHWM, cfg.hwm)
        sock.setsockopt(zmq.RCVHWM, 0)  # acks and hellos are small; never make a shard wait on them
        sock.setsockopt(zmq.LINGER, 0)
        # Raise instead of dropping: EAGAIN (the shard is full: wait) or EHOSTUNREACH (gone: hold).
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # A restarted shard reconnects under its old name before the dead connection times out.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
        host = "*" if cfg.host_broadcast in ("0.0.0.0", "*") else cfg.host_broadcast
        sock.bind(f"tcp://{host}:{cfg.port_broadcast}")
        self._router = sock
        self.watch(sock, self._on_shards)
        # A shard killed with -9 closes its connection at once: the monitor tells, long before
        # its heartbeat would be missed. Disconnects name a file descriptor, so each shard's
        # descriptor is remembered from its messages.
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.watch(monitor, self._on_monitor)

    def _on_monitor(self, monitor: zmq.Socket) -> None:
        from zmq.utils.monitor import recv_monitor_message

        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            name = self._fds.pop(fd, None)
            shard = self.shards.get(name) if name is not None else None
            # A restarted shard may already speak on a new connection: only its own one counts.
            if shard is not None and shard.fd == fd:
                self._shard_down(shard, "its connection closed")

    def _to_shard(self, shard: _Shard, frames: list[bytes]) -> bool:
        """Send to one shard, waiting while it is full; False (and the shard marked down) if it is gone."""
        while True:
            try:
                self._router.send_multipart([shard.id.encode(), *frames], zmq.NOBLOCK)
                return True
            except zmq.Again:
                if self._stop.is_set():
                    return False
                self._router.poll(50, zmq.POLLOUT)
            except zmq.ZMQError as exc:
                if exc.errno != zmq.EHOSTUNREACH:
                    raise
                self._shard_down(shard, "its connection is gone")
                return False

    # ---- what shards say ---------------------------------------------------------------
    def _on_shards(self, sock: zmq.Socket) -> None:
        for _ in range(1024):
            try:
                raw = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if len(raw) < 2:
                continue
            frames = [frame.bytes for frame in raw]
            name, kind, rest = frames[0].decode(errors="replace"), frames[1], frames[2:]
            try:
                self._on_shard_message(name, kind, rest)
                if kind == link.HELLO:
                    fd = self.shards[name].fd = int(raw[0].get(zmq.SRCFD))
                    self._fds[fd] = name
            except Exception as exc:  # a bad frame from one shard must not stop the middleman
                self.errors += 1
                self.log.warning("bad %r message from shard %s: %s", kind, name, exc)

    def _on_shard_message(self, name: str, kind: bytes, rest: list[bytes]) -> None:
        now = time.monotonic()
        shard = self.shards.get(name)
        if shard is None:
            shard = self.shards[name] = _Shard(name)
        shard.last_seen = now
        if kind == link.ACK:
            env = pb.Envelope.FromString(rest[0])
            key = link.part_key(env.client_id, env.request_id, env.part_ids)
            if shard.writes.pop(key, None) is None:
                shard.queries.pop(key, None)
        elif kind == link.HELLO:
            self._on_hello(shard, link.unpack(rest[0]), now)
        elif kind == link.LEAVE:
            self._leave_asks.setdefault(name, now)
        elif kind == link.MOVE:
            target = self.shards.get(link.unpack(rest[0])["target"])
            if target is None or not target.live or not self._to_shard(target, [link.MOVE, *rest]):
                self._abort_migration(f"shard {link.unpack(rest[0])['target']} is not there to take documents")
        elif kind == link.MOVED:
            source = self.shards.get(link.unpack(rest[0])["source"])
            if source is not None and source.live:
                self._to_shard(source, [link.MOVED, *rest])
        elif kind == link.DONE:
            m = self._migration
            if m is not None and link.unpack(rest[0]).get("epoch") == m.epoch:
                m.done.add(name)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _on_hello(self, shard: _Shard, info: dict, now: float) -> None:
        incarnation = str(info.get("incarnation", ""))
        came_back = not shard.live or incarnation != shard.incarnation
        if came_back and shard.incarnation and incarnation != shard.incarnation:
            shard.left = False  # a new process: whatever it did before, it starts afresh
            self._granted.discard(shard.id)
            shard.queries.clear()  # those answers died with the old process
        shard.incarnation, shard.live = incarnation, True
        shard.epoch = int(info.get("epoch", 0))
        shard.members = tuple(info.get("members", ()))
        if self._first_hello is None:
            self._first_hello = now
        if came_back:
            self.log.info("shard %s is up (%d unacknowledged writes to send again)", shard.id, len(shard.writes))
            for part in list(shard.writes.values()):
                if not self._to_shard(shard, [link.REQ, part.env.SerializeToString(), part.body]):
                    return
        if self.ring is not None and shard.epoch != self.epoch:
            self._send_ring(shard)

    def _shard_down(self, shard: _Shard, why: str) -> None:
        if not shard.live:
            return
        shard.live = False
        self.log.warning("shard %s is down (%s): %d writes held for it", shard.id, why, len(shard.writes))
        for env in shard.queries.values():
            self._answer_missing(env, shard.id)
        shard.queries.clear()
        if self._migration is not None and shard.id in self._migration.sources | set(self._migration.target.members):
            self._abort_migration(f"shard {shard.id} went down during the move")

    # ---- requests ----------------------------------------------------------------------
    def handle(self, packet: Packet) -> None:
        env = packet.envelope
        if env.is_response:
            self.send_out(packet)  # an upstream error on its way to the caller
        elif env.body_type == BodyType.INDEX:
            if self.ring is None or self._migration is not None:
                self._queue(packet)
            else:
                self._route_write(packet, time.monotonic())
        else:
            self._fan_out(packet)

    def _queue(self, packet: Packet) -> None:
        if len(self._queued) >= self.config.hwm:
            self.fail(packet, f"{self.name}: {len(self._queued)} writes already wait for the shards to settle")
        else:
            self._queued.append((time.monotonic(), packet))

    def _route_write(self, packet: Packet, since: float) -> None:
        request = packet.request()
        body = request.index
        ids = [doc.doc_id for doc in body.docs]
        groups = self.ring.split(ids) if ids else {self.ring.members[0]: np.zeros(0, dtype=np.int64)}
        stamp_route(packet, self.name, self.identity)
        if len(groups) == 1:
            bodies = [(next(iter(groups)), packet.body)]
        else:
            vectors = nd_to_array(body.embeddings) if body.HasField("embeddings") else None
            bodies = []
            for member, rows in groups.items():
                part = pb.Request(request_id=request.request_id)
                part.index.index_name = body.index_name
                part.index.docs.extend(body.docs[r] for r in rows.tolist())
                if vectors is not None:
                    array_to_nd(vectors[rows], part.index.embeddings)
                bodies.append((member, part.SerializeToString()))
        for i, (member, part_body) in enumerate(bodies):
            env = pb.Envelope()
            env.CopyFrom(packet.envelope)
            env.num_part.append(len(bodies))
            env.part_ids.append(i)
            env.part_id = i
            shard = self.shards.get(member)
            if shard is None:
                shard = self.shards[member] = _Shard(member)
            if not shard.live and len(shard.writes) >= self.config.hwm:
                self.send_out(as_error(Packet(env, part_body), f"shard {member} is down and its queue is full"))
                continue
            part = _Part(env, part_body, since)
            shard.writes[link.part_key(env.client_id, env.request_id, env.part_ids)] = part
            if shard.live:
                self._to_shard(shard, [link.REQ, env.SerializeToString(), part_body])

    def _fan_out(self, packet: Packet) -> None:
        members = self.ring.members if self.ring is not None else tuple(sorted(s.id for s in self.shards.values()))
        if not members:
            self.send_out(as_error(packet, "no index shard is connected to the middleman"))
            return
        stamp_route(packet, self.name, self.identity)
        env = packet.envelope
        env.num_part.append(len(members))
        env.part_ids.append(0)
        for i, member in enumerate(members):
            env.part_ids[-1] = i
            env.part_id = i
            shard = self.shards.get(member)
            sent = shard is not None and shard.live
            if sent and self._to_shard(shard, [link.REQ, env.SerializeToString(), packet.body]):
                copy = pb.Envelope()
                copy.CopyFrom(env)
                shard.queries[link.part_key(env.client_id, env.request_id, env.part_ids)] = copy
            else:
                copy = pb.Envelope()
                copy.CopyFrom(env)
                self._answer_missing(copy, member)

    def _answer_missing(self, env: pb.Envelope, member: str) -> None:
        """The part a shard that is down would have sent: empty and partial for a query, an error otherwise."""
        if env.body_type == BodyType.QUERY:
            response = pb.Response(request_id=env.request_id)
            response.search.status = pb.Response.SUCCESS
            response.search.partial = True
            response.search.shards_expected = 1
        else:
            response = error_response(env.request_id, env.body_type, f"shard {member} is down")
        env.is_response = True
        self.send_out(Packet(env, response.SerializeToString()))

    # ---- time: liveness, bounds, settling, membership ---------------------------------
    def next_deadline(self) -> float | None:
        return self._tick + 0.1

    def on_timer(self, now: float) -> None:
        self._tick = now
        for shard in self.shards.values():
            if shard.live and now - shard.last_seen > link.DEAD_AFTER_S:
                self._shard_down(shard, f"silent for {now - shard.last_seen:.1f}s")
        self._expire_held(now)
        if self.ring is None:
            self._settle(now)
            return
        self._decide_leaves(now)
        if self._migration is None:
            self._plan(now)
        else:
            self._advance(now)
        if self._migration is None:
            while self._queued:
                since, packet = self._queued.popleft()
                self._route_write(packet, since)

    def _expire_held(self, now: float) -> None:
        bound = self.config.hold_timeout
        for shard in self.shards.values():
            if shard.live:
                continue
            while shard.writes:
                key, part = next(iter(shard.writes.items()))
                if now - part.since < bound:
                    break
                del shard.writes[key]
                reason = f"shard {shard.id} has been down for {now - part.since:.0f}s: these documents were not stored"
                self.send_out(as_error(Packet(part.env, part.body), reason))
        while self._queued and now - self._queued[0][0] >= bound:
            _, packet = self._queued.popleft()
            self.fail(packet, f"{self.name}: the shards did not settle within {bound:g}s")

    def _settle(self, now: float) -> None:
        """Adopt the newest placement any shard remembers; on a fresh cluster, the shards that are up."""
        live = [s for s in self.shards.values() if s.live]
        if not live or self._first_hello is None:
            return
        newest = max(live, key=lambda s: s.epoch)
        all_back = newest.epoch > 0 and all(self.shards.get(m, _Shard(m)).live for m in newest.members)
        if not all_back and now - self._first_hello < SETTLE_S:
            return
        if newest.epoch > 0:
            self.epoch, self.ring = newest.epoch, Placement(newest.members)
        else:
            self.epoch, self.ring = 1, Placement(s.id for s in live)
        self.log.info("placement %d: shards %s", self.epoch, ", ".join(self.ring.members))
        for shard in live:
            self._send_ring(shard)

    def _send_ring(self, shard: _Shard) -> None:
        info = {"epoch": self.epoch, "members": list(self.ring.members)}
        if self._to_shard(shard, [link.RING, link.pack(info)]):
            shard.epoch, shard.members = self.epoch, self.ring.members

    def _decide_leaves(self, now: float) -> None:
        if not self._leave_asks or now - min(self._leave_asks.values()) < LEAVE_COALESCE_S:
            return
        asks, self._leave_asks = set(self._leave_asks), {}
        members = set(self.ring.members)
        staying = members - asks - self._granted
        for name in sorted(asks):
            shard = self.shards[name]
            if name not in members:
                self._to_shard(shard, [link.BYE, link.pack({"reason": "not a member"})])
            elif not staying:
                # Every shard is leaving at once: the stack is stopping, and nothing should move.
                self._to_shard(shard, [link.STAY, link.pack({"reason": "every shard is stopping"})])
            else:
                self._granted.add(name)
                self._to_shard(shard, [link.GRANTED, link.pack({})])
                self.log.info("shard %s leaves: its documents move to %s", name, ", ".join(sorted(staying)))

    def _plan(self, now: float) -> None:
        members = set(self.ring.members)
        joiners = {s.id for s in self.shards.values() if s.live and not s.left and s.id not in members | self._granted}
        leavers = self._granted & members
        if not joiners and not leavers:
            return
        if not all(self.shards.get(m, _Shard(m)).live for m in members | joiners):
            return  # a shard that is down cannot hand over, nor take, documents: wait for it
        target = Placement((members - leavers) | joiners)
        self._migration = _Migration(self.epoch + 1, target, set(members), leavers, started=now)
        self.log.info(
            "placement %d -> %d: shards %s (%.0f%% of slots move)",
            self.epoch,
            self.epoch + 1,
            ", ".join(target.members),
            100 * self.ring.moved_fraction(target),
        )

    def _advance(self, now: float) -> None:
        m = self._migration
        if m.phase == "drain":
            if any(self.shards[s].writes for s in m.sources):
                return
            m.phase = "move"
            info = link.pack({"epoch": m.epoch, "members": list(m.target.members)})
            for name in sorted(m.sources):
                if not self._to_shard(self.shards[name], [link.HANDOVER, info]):
                    return
        elif m.done >= m.sources:
            self.ring, self.epoch, self._migration = m.target, m.epoch, None
            self.migrations += 1
            self.last_migration_s = now - m.started
            self.log.info("placement %d in force after %.2fs: %s", self.epoch, self.last_migration_s, self.ring.members)
            for shard in self.shards.values():
                if shard.live:
                    self._send_ring(shard)
            for name in sorted(m.leavers):
                self._granted.discard(name)
                self.shards[name].left = True
                self._to_shard(self.shards[name], [link.BYE, link.pack({"reason": "handed over"})])

    def _abort_migration(self, why: str) -> None:
        if self._migration is None:
            return
        self.log.warning("placement %d abandoned: %s", self._migration.epoch, why)
        self._migration = None
        # The current placement again, to every shard: a shard drops copies it does not own.
        for shard in self.shards.values():
            if shard.live:
                self._send_ring(shard)

    def status_info(self) -> dict[str, object]:
        return {
            **super().status_info(),
            "shards": sum(s.live for s in self.shards.values()),
            "members": list(self.ring.members) if self.ring is not None else [],
            "epoch": self.epoch,
            "migrating": self._migration is not None,
            "migrations": self.migrations,
            "last_migration_s": round(self.last_migration_s, 3),
            "held_writes": {s.id: len(s.writes) for s in self.shards.values() if s.writes},
            "queued_writes": len(self._queued),
        }
