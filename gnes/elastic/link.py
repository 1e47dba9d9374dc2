"""The frames of the link between the middleman (a ROUTER) and its shards (DEALERs).

Every message starts with a kind frame. A shard's routing id is its stable shard id, so the
middleman addresses a shard by name and a restarted shard takes its name back
(ROUTER_HANDOVER). Small control messages carry JSON; requests keep the pipeline's own
[envelope, body] frames, so nothing is converted on the way.

  shard -> middleman                      middleman -> shard
  HELLO {id, incarnation, epoch, members}   REQ envelope body       a pipeline request part
  ACK   envelope...                         RING {epoch, members}   the placement in force
  LEAVE {id}                                HANDOVER {epoch, members}  stream what moves away
  MOVE  {target, index, seq, config} body   MOVE ... (forwarded to the target)
  MOVED {source, seq}                       MOVED ... (forwarded to the source)
  DONE  {epoch}                             GRANTED {}              a LEAVE is granted: wait
                                            BYE / STAY {reason}     leave now, handed over or not
"""

from __future__ import annotations

import json
from typing import Any

from ..proto import pb

HELLO, ACK, LEAVE, MOVE, MOVED, DONE = b"HELLO", b"ACK", b"LEAVE", b"MOVE", b"MOVED", b"DONE"
REQ, RING, HANDOVER, GRANTED, BYE, STAY = b"REQ", b"RING", b"HANDOVER", b"GRANTED", b"BYE", b"STAY"

# A shard says HELLO this often; one not heard for DEAD_AFTER_S is taken for dead. A kill -9
# closes its TCP connection, which the middleman sees at once; a frozen or cut-off shard only
# goes quiet. The margin is wide because a loaded 2-core machine can stall a process for 1 s.
HELLO_INTERVAL_S = 0.25
DEAD_AFTER_S = 3.0
# An encoder says nothing while it encodes one message (a batch of 128 texts with MiniLM takes
# 1 to 2 s here, more on a loaded machine), so it gets a longer silence. Its death by kill -9
# is still seen at once, by its closed connection.
WORKER_DEAD_AFTER_S = 10.0
# An encoder that holds work may be silent because that work is slow: a batch of images, or long
# texts on cores that other processes share, can take longer than 10 s. Taking it for dead then
# would send its messages to another encoder, which is just as slow: the same work done over and
# over. A busy encoder that dies still closes its connection, which is seen at once; silence only
# catches a frozen or cut-off one, and for that a minute's wait is the price of not duplicating work.
BUSY_WORKER_DEAD_AFTER_S = 60.0


def pack(info: dict[str, Any]) -> bytes:
    return json.dumps(info, separators=(",", ":")).encode()


def unpack(frame: bytes) -> dict[str, Any]:
    value = json.loads(frame)
    if not isinstance(value, dict):
        raise ValueError("a link control frame must hold a JSON object")
    return value


PartKey = tuple[str, int, tuple[int, ...]]


def part_key(client_id: str, request_id: int, part_ids: list[int] | tuple[int, ...]) -> PartKey:
    """What identifies one part of one request across the whole pipeline."""
    return client_id, request_id, tuple(part_ids)


def ack_of(env: pb.Envelope) -> bytes:
    """What acknowledges one answered request part: only what identifies the part travels back."""
    return pb.Envelope(client_id=env.client_id, request_id=env.request_id, part_ids=env.part_ids).SerializeToString()


def acked_parts(frames: list[bytes]) -> list[PartKey]:
    """The parts an ACK message (its frames after the kind) acknowledges."""
    keys = []
    for frame in frames:
        env = pb.Envelope.FromString(frame)
        keys.append(part_key(env.client_id, env.request_id, env.part_ids))
    return keys


class Acks:
    """Acknowledgements that leave together, as one ACK message: every message wakes its
    receiver, and on 2 cores a wake-up costs about as much CPU as handling a small part. One
    added with `wait=False` is due at once; those added with `wait=True` ride along with the
    next message, or leave once `limit` of them wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._now: list[bytes] = []
        self._later: list[bytes] = []

    def add(self, env: pb.Envelope, wait: bool) -> None:
        (self._later if wait else self._now).append(ack_of(env))

    @property
    def due(self) -> bool:
        return bool(self._now) or len(self._later) >= self.limit

    def take(self) -> list[bytes]:
        """The ACK message of all that waits, which is then sent ([]: nothing waits)."""
        if not self._now and not self._later:
            return []
        message = [ACK, *self._now, *self._later]
        self._now, self._later = [], []
        return message
