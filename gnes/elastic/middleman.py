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

import math
import os
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
import zmq

from ..proto import WireError, array_to_nd, nd_to_array, pb
from ..service.message import BodyType, Packet, as_error, error_response, stamp_route
from ..service.proxy import ProxyService
from . import link
from .membership import Membership
from .peers import Peer, Peers, receive_from_peers, router_socket, send_to

# Writes in a stream go to their shards in bundles. A write part that follows the previous write
# within _STREAM_GAP_S waits up to _HOLD_S (GNES_WRITE_HOLD_MS; 0: never) with the others of its
# shard, and all of them leave as one REQ message of [envelope, body] pairs, at most _BUNDLE_PARTS.
# Every message costs its sender, its receiver and their I/O threads a send, a receive and a
# wake-up, and on 2 cores that costs about as much CPU as a shard's handling of a part of 33
# documents: at 3 shards a request of 100 becomes 3 messages to the shards and 3 answers. The
# shard commits a bundle together and answers it in one message to the reducer. A lone write
# goes at once; anything else for a shard (a query, a control message) sends what its bundle
# holds first, so the order on the link is kept. Held parts are already in the shard's
# unacknowledged writes, so a shard that dies meanwhile gets them on its return like the rest.
_HOLD_S = float(os.environ.get("GNES_WRITE_HOLD_MS", "10")) / 1000
_STREAM_GAP_S = 0.02
_BUNDLE_PARTS = 64


@dataclass
class _Part:
    env: pb.Envelope
    body: bytes
    since: float


@dataclass
class _Shard:
    id: str
    peer: Peer
    epoch: int = 0
    members: tuple[str, ...] = ()
    left: bool = False  # left by handover: not a joiner again until it restarts
    writes: OrderedDict[link.PartKey, _Part] = field(default_factory=OrderedDict)
    queries: dict[link.PartKey, pb.Envelope] = field(default_factory=dict)
    bundle: list[bytes] = field(default_factory=list)  # held write parts: envelope, body, ...

    @property
    def live(self) -> bool:
        return self.peer.live


class ShardProxyService(Membership, ProxyService):
    kind = "shard-proxy"

    def __init__(self, config) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.shards: dict[str, _Shard] = {}
        self.peers = Peers(self._on_peer_down)
        self._router: zmq.Socket | None = None
        self._queued: deque[tuple[float, Packet]] = deque()
        self._tick = 0.0
        self._bundle_until = 0.0  # when the held write parts must leave (0: none held)
        self._last_write = -math.inf
        self.bundles = 0  # REQ messages of write parts sent
        self.init_membership()

    # ---- sockets -----------------------------------------------------------------------
    def open_extra_sockets(self, ctx: zmq.Context) -> None:
        cfg = self.config
        if not cfg.port_broadcast:
            raise ValueError("ShardProxyService needs --port_broadcast: the port its shards connect to")
        self._router = router_socket(ctx, cfg.host_broadcast, cfg.port_broadcast, cfg.hwm)
        self.watch(self._router, self._on_shards)
        self.watch(self.peers.open_monitor(self._router), self.peers.on_monitor)

    def _shard(self, name: str) -> _Shard:
        shard = self.shards.get(name)
        if shard is None:
            peer = self.peers.table.get(name)
            if peer is None:
                peer = self.peers.table[name] = Peer(name)
            shard = self.shards[name] = _Shard(name, peer)
        return shard

    def _to_shard(self, shard: _Shard, frames: list[bytes]) -> bool:
        """Send to one shard, waiting while it is full; False (and the shard marked down) if it is gone.
        The write parts held for it go first."""
        return self._send_bundle(shard) and self._send(shard, frames)

    def _send(self, shard: _Shard, frames: list[bytes]) -> bool:
        if send_to(self._router, shard.id, frames, self._stop.is_set):
            return True
        self.peers.down(shard.peer, "its connection is gone")
        return False

    def _send_bundle(self, shard: _Shard) -> bool:
        frames, shard.bundle = shard.bundle, []
        if not frames or not shard.live:  # a shard that is down gets them from shard.writes on its return
            return True
        self.bundles += 1
        return self._send(shard, [link.REQ, *frames])

    def _send_bundles(self) -> None:
        self._bundle_until = 0.0
        for shard in list(self.shards.values()):
            self._send_bundle(shard)

    # ---- what shards say ---------------------------------------------------------------
    def _on_shards(self, sock: zmq.Socket) -> None:
        self.errors += receive_from_peers(sock, self._on_peer_message, self.log)

    def _on_peer_message(self, name: str, kind: bytes, rest: list[bytes], frame: zmq.Frame) -> None:
        hello = link.unpack(rest[0]) if kind == link.HELLO else None
        shard = self._shard(name)
        seen = self.peers.heard(name, frame, hello)
        self._on_shard_message(shard, kind, rest, hello, seen)

    def _on_shard_message(
        self, shard: _Shard, kind: bytes, rest: list[bytes], hello: dict | None, seen: tuple[bool, bool]
    ) -> None:
        if kind == link.ACK:
            for key in link.acked_parts(rest):
                if shard.writes.pop(key, None) is None:
                    shard.queries.pop(key, None)
        elif kind == link.HELLO:
            self._on_hello(shard, hello, *seen)
        elif kind == link.LEAVE:
            self._leave_asks.setdefault(shard.id, time.monotonic())
        elif kind == link.MOVE:
            name = link.unpack(rest[0])["target"]
            target = self.shards.get(name)
            if target is None or not target.live or not self._to_shard(target, [link.MOVE, *rest]):
                self._abort_migration(f"shard {name} is not there to take documents")
        elif kind == link.MOVED:
            source = self.shards.get(link.unpack(rest[0])["source"])
            if source is not None and source.live:
                self._to_shard(source, [link.MOVED, *rest])
        elif kind == link.DONE:
            if self._migration is not None and link.unpack(rest[0]).get("epoch") == self._migration.epoch:
                self._migration.done.add(shard.id)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _on_hello(self, shard: _Shard, info: dict, appeared: bool, restarted: bool) -> None:
        if restarted:
            # a new process: whatever the old one was doing (answering, leaving) died with it
            shard.left = False
            shard.queries.clear()
            self._granted.discard(shard.id)
        shard.epoch = int(info.get("epoch", 0))
        shard.members = tuple(info.get("members", ()))
        now = time.monotonic()
        if self._first_hello is None:
            self._first_hello = now
        if appeared:
            self._last_arrival = now
            self.log.info("shard %s is up (%d unacknowledged writes to send again)", shard.id, len(shard.writes))
            shard.bundle = []  # held parts are among its writes, sent again below
            for part in list(shard.writes.values()):
                if not self._to_shard(shard, [link.REQ, part.env.SerializeToString(), part.body]):
                    return
        if self.ring is not None and shard.epoch != self.epoch:
            self._send_ring(shard)

    def _on_peer_down(self, name: str, why: str) -> None:
        self._shard_down(self._shard(name), why)

    def _shard_down(self, shard: _Shard, why: str) -> None:
        self.log.warning("shard %s is down (%s): %d writes held for it", shard.id, why, len(shard.writes))
        shard.bundle = []  # its held parts stay in shard.writes: sent again when it is back
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
        elif env.body_type == BodyType.EMBED:
            self.send_out(_embed_answer(packet))  # encoded, nothing to store: no shard is involved
        elif env.body_type == BodyType.INDEX or (env.body_type == BodyType.ADMIN and _changes_data(packet)):
            # Writes, deletes and index changes wait while the placement is being settled or
            # changed: a delete during a move could miss the copy on the new owner.
            if self.ring is None or self._migration is not None:
                self._queue(packet)
            else:
                self._write(packet, time.monotonic())
        else:
            self._fan_out(packet)

    def _write(self, packet: Packet, since: float) -> None:
        if packet.envelope.body_type == BodyType.INDEX:
            self._route_write(packet, since)
        else:
            self._fan_out(packet)

    def _queue(self, packet: Packet) -> None:
        if len(self._queued) >= self.config.hwm:
            self.fail(packet, f"{self.name}: {len(self._queued)} writes already wait for the shards to settle")
        else:
            self._queued.append((time.monotonic(), packet))

    def _route_write(self, packet: Packet, since: float) -> None:
        members = self.ring.members
        if len(members) == 1:
            # One shard owns every id: the body goes on as it came, not parsed here (the shard
            # parses it anyway, and answers a malformed one with the reason). Parsing 100 encoded
            # documents for their ids cost 70 us a request.
            stamp_route(packet, self.name, self.identity)
            self._send_write_parts(packet, [(members[0], packet.body)], since)
            return
        request = packet.request()
        body = request.index
        ids = [doc.doc_id for doc in body.docs]
        groups = self.ring.split(ids) if ids else {members[0]: np.zeros(0, dtype=np.int64)}
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
        self._send_write_parts(packet, bodies, since)

    def _send_write_parts(self, packet: Packet, bodies: list[tuple[str, bytes]], since: float) -> None:
        """Each part to its shard, held until that shard acknowledges it."""
        for i, (member, part_body) in enumerate(bodies):
            env = pb.Envelope()
            env.CopyFrom(packet.envelope)
            env.num_part.append(len(bodies))
            env.part_ids.append(i)
            env.part_id = i
            shard = self._shard(member)
            if not shard.live and len(shard.writes) >= self.config.hwm:
                self.send_out(as_error(Packet(env, part_body), f"shard {member} is down and its queue is full"))
                continue
            part = _Part(env, part_body, since)
            shard.writes[link.part_key(env.client_id, env.request_id, env.part_ids)] = part
            if shard.live:
                shard.bundle += (env.SerializeToString(), part_body)
                if len(shard.bundle) >= 2 * _BUNDLE_PARTS:
                    self._send_bundle(shard)
        now = time.monotonic()
        streaming = now - self._last_write <= _STREAM_GAP_S
        self._last_write = now
        if not streaming or _HOLD_S <= 0:
            self._send_bundles()
        elif not self._bundle_until:
            self._bundle_until = now + _HOLD_S

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
            copy = pb.Envelope()  # env is reused for the next shard: each part keeps its own
            copy.CopyFrom(env)
            if sent and self._to_shard(shard, [link.REQ, env.SerializeToString(), packet.body]):
                shard.queries[link.part_key(env.client_id, env.request_id, env.part_ids)] = copy
            else:
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
        return min(self._tick + 0.1, self._bundle_until or math.inf)

    def on_timer(self, now: float) -> None:
        if self._bundle_until and now >= self._bundle_until:
            self._send_bundles()
        if now < self._tick + 0.1:
            return
        self._tick = now
        self.peers.check(now)
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
                self._write(packet, since)

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
            "write_bundles": self.bundles,
        }


_DATA_COMMANDS = frozenset(
    {
        pb.Request.AdminRequest.DELETE_DOCS,
        pb.Request.AdminRequest.CREATE,
        pb.Request.AdminRequest.DROP,
    }
)


def _changes_data(packet: Packet) -> bool:
    try:
        return packet.request().admin.command in _DATA_COMMANDS
    except WireError:  # unreadable: the shards answer it with the reason
        return False


def _embed_answer(packet: Packet) -> Packet:
    """The encoded EMBED request turned into its response: the vectors, one row per document."""
    request = packet.request()
    response = pb.Response(request_id=request.request_id)
    response.embed.status = pb.Response.SUCCESS
    response.embed.embeddings.CopyFrom(request.embed.embeddings)
    packet.envelope.is_response = True
    packet.body = response.SerializeToString()
    return packet
