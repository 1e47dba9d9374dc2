"""The placement half of the middleman: which shards are members, and how the placement
changes when shards join or leave (see gnes/elastic/middleman.py for the whole story).

A change goes in three steps. Drain: new writes wait, and the writes already sent are
acknowledged. Move: every member streams the documents whose owner changes to their new
owner (through the middleman, which forwards MOVE and MOVED). Switch: once every member
says DONE, the new placement is in force for reads and writes together, every shard is
told (and drops what it no longer owns), and leavers get BYE. A shard that goes down in
the middle abandons the change; the current placement is sent again, so copies made so
far are dropped, and the change is tried again when everyone is back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..placement import Placement
from . import link

# Right after start, wait at most this long for shards to report the placement they last saw,
# and at least until no new shard has arrived for SETTLE_QUIET_S. Writes wait meanwhile.
SETTLE_S = 1.5
SETTLE_QUIET_S = 0.4
# Leave requests that arrive this close together are decided together: when every shard
# asks at once, the whole stack is stopping and nothing should move.
LEAVE_COALESCE_S = 0.5
JOIN_COALESCE_S = 0.5


@dataclass
class Migration:
    epoch: int
    target: Placement
    sources: set[str]
    leavers: set[str]
    phase: str = "drain"  # drain: wait for acks of the writes sent; move: shards stream
    done: set[str] = field(default_factory=set)
    started: float = 0.0


class Membership:
    """Mixed into ShardProxyService, which provides shards, peers, log, _to_shard."""

    def init_membership(self) -> None:
        self.ring: Placement | None = None
        self.epoch = 0
        self.migrations = 0
        self.last_migration_s = 0.0
        self._first_hello: float | None = None
        self._last_arrival = 0.0
        self._migration: Migration | None = None
        self._leave_asks: dict[str, float] = {}
        self._granted: set[str] = set()
        self._joiners_seen: set[str] = set()
        self._joiners_since = 0.0

    def _settle(self, now: float) -> None:
        """Adopt the newest placement any shard remembers; on a fresh cluster, the shards that are up."""
        live = [s for s in self.shards.values() if s.live]
        if not live or self._first_hello is None:
            return
        newest = max(live, key=lambda s: s.epoch)
        all_back = newest.epoch > 0 and all(self.peers.live(m) for m in newest.members)
        # Shards started together say their first HELLO within moments of each other: settle once
        # none has arrived for SETTLE_QUIET_S (a later one joins; that costs nothing while empty).
        quiet = now - self._last_arrival >= SETTLE_QUIET_S
        if not all_back and not quiet and now - self._first_hello < SETTLE_S:
            return
        if newest.epoch > 0:
            self.epoch, self.ring = newest.epoch, Placement(newest.members)
        else:
            self.epoch, self.ring = 1, Placement(s.id for s in live)
        self.log.info("placement %d: shards %s", self.epoch, ", ".join(self.ring.members))
        for shard in live:
            self._send_ring(shard)

    def _send_ring(self, shard) -> None:  # type: ignore[no-untyped-def]
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
        if joiners != self._joiners_seen:
            # Shards started together (a scale to n+2) arrive a few ms apart: wait until no new
            # one has come for a moment, so that they join in one move and nothing moves twice.
            self._joiners_seen, self._joiners_since = joiners, now
        if joiners and now - self._joiners_since < JOIN_COALESCE_S:
            return
        if not all(self.peers.live(m) for m in members | joiners):
            return  # a shard that is down cannot hand over, nor take, documents: wait for it
        target = Placement((members - leavers) | joiners)
        self._migration = Migration(self.epoch + 1, target, set(members), leavers, started=now)
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
