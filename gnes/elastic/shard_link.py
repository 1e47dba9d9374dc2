"""A shard's side of the link to the middleman: hello, acknowledgements, the placement in
force (kept on disk), handing documents over when the placement changes, and leaving.

The link is a DEALER whose routing id is the shard's stable id. Sends on it never wait:
an acknowledgement that cannot leave now is kept and sent on the next turn, so a busy
middleman can never make a shard stop reading its requests.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zmq

from ..indexer.chunks import attach_chunks, write_chunks
from ..indexer.index_set import IndexSet
from ..placement import Placement
from ..proto import WireError, array_to_nd, pb
from ..service.message import BodyType, Packet, parse_bundle
from . import link
from .peers import Outbox, dealer_socket

RING_FILE = "ring.json"
SHARD_ID_FILE = "shard_id"
_MOVE_BATCH = 2048
_MOVE_WINDOW = 4
# The pipeline's writes come in bundles: the middleman holds the parts of a stream for a few
# milliseconds and sends each shard one REQ message with all of its parts (gnes/elastic/middleman.py),
# which the shard commits together and answers in one message to the reducer.
# Acknowledgements go back in one ACK message per turn (link.Acks), not one message each. A
# write's ACK leaves at the end of the turn that answered it (the middleman holds the write until
# then, to send it again should this shard die). A query's ACK only lets the middleman forget
# which parts it would answer as missing if this shard died, so it waits for the next message on
# the link: the next write's ACK, the next HELLO (HELLO_INTERVAL_S), or _QUERY_ACKS others. If the
# shard dies meanwhile, those parts get an empty answer too, which the reducer drops as late: the
# real one came first. Sequential queries at 3 shards: 47 -> 41 wake-ups of the stack's processes
# per query (bench/README.md).
_QUERY_ACKS = 64
log = logging.getLogger("gnes.elastic")


def resolve_shard_id(configured: str, dump_path: str) -> str:
    """The stable id: --shard_id, else $TASK_SLOT (Swarm, `gnes stack`, Kubernetes), else one
    kept in the data directory, made up once."""
    if configured:
        return configured
    if os.environ.get("TASK_SLOT"):
        return os.environ["TASK_SLOT"]
    if dump_path:
        path = Path(dump_path) / SHARD_ID_FILE
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        made = uuid.uuid4().hex[:12]
        path.write_text(made)
        return made
    return uuid.uuid4().hex[:12]


class ShardLink:
    def __init__(
        self,
        shard_id: str,
        indexes: Callable[[], IndexSet],
        data_dir: Path | None,
        on_requests: Callable[[list[Packet]], None],
        on_exit: Callable[[str], None],
        leave_timeout: float = 300.0,
    ) -> None:
        self.shard_id = shard_id
        self.leave_timeout = leave_timeout
        self.incarnation = uuid.uuid4().hex[:12]
        self._indexes = indexes
        self._ring_path = data_dir / RING_FILE if data_dir is not None else None
        self._on_requests = on_requests
        self._on_exit = on_exit
        self.epoch, self.members = self._read_ring()
        self.sock: zmq.Socket | None = None
        self._out = Outbox()
        self._acks = link.Acks(_QUERY_ACKS)
        self._next_hello = 0.0
        self._dirty = False  # holds documents it may not own: took a move, or handed some over
        self._stream: Iterator[tuple[str, str, pb.Request]] | None = None
        self._stream_epoch = 0
        self._in_flight: set[int] = set()
        self._seq = 0
        self._leave_deadline: float | None = None
        self.moved_out = self.moved_in = self.purged = 0

    def _read_ring(self) -> tuple[int, tuple[str, ...]]:
        if self._ring_path is None or not self._ring_path.exists():
            return 0, ()
        info = json.loads(self._ring_path.read_text())
        return int(info["epoch"]), tuple(info["members"])

    def open(self, ctx: zmq.Context, host: str, port: int, hwm: int) -> zmq.Socket:
        self.sock = self._out.sock = dealer_socket(ctx, self.shard_id, host, port, hwm)
        return self.sock

    # ---- sending -----------------------------------------------------------------------
    def send(self, frames: list[bytes]) -> None:
        self._queue_acks()  # they go first: the message may be one the middleman acts on (LEAVE)
        self._out.send(frames)

    def flush(self) -> None:
        if self._acks.due:
            self._queue_acks()
        self._out.flush()

    def _queue_acks(self) -> None:
        """Every acknowledgement not yet sent, as one ACK message in the outbox."""
        message = self._acks.take()
        if message:
            self._out.append(message)

    def hello(self) -> None:
        info = {"id": self.shard_id, "incarnation": self.incarnation, "epoch": self.epoch, "members": self.members}
        self.send([link.HELLO, link.pack(info)])

    # ---- receiving ---------------------------------------------------------------------
    def on_readable(self, sock: zmq.Socket) -> None:
        requests: list[Packet] = []
        for _ in range(256):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            kind, rest = frames[0], frames[1:]
            if kind == link.REQ:
                try:
                    requests.extend(parse_bundle(rest))
                except WireError as exc:  # no envelope to answer: dropped, as every service drops one
                    log.warning("shard %s: dropped a malformed request message: %s", self.shard_id, exc)
                continue
            if requests:  # keep the order of requests and control messages
                self._answer(requests)
                requests = []
            self._on_control(kind, rest)
        if requests:
            self._answer(requests)
        self.flush()

    def _answer(self, packets: list[Packet]) -> None:
        self._on_requests(packets)
        for packet in packets:
            self._acks.add(packet.envelope, wait=packet.envelope.body_type != BodyType.INDEX)

    def _on_control(self, kind: bytes, rest: list[bytes]) -> None:
        if kind == link.RING:
            info = link.unpack(rest[0])
            self.apply_ring(int(info["epoch"]), tuple(info["members"]))
        elif kind == link.HANDOVER:
            info = link.unpack(rest[0])
            self._start_handover(int(info["epoch"]), Placement(info["members"]))
        elif kind == link.MOVE:
            self._take(link.unpack(rest[0]), rest[1])
        elif kind == link.MOVED:
            self._in_flight.discard(int(link.unpack(rest[0])["seq"]))
        elif kind == link.GRANTED:
            # The move decides when this shard may go, within --leave_timeout (then it stops
            # with its documents kept: the middleman sees it go and abandons the move).
            self._leave_deadline = time.monotonic() + self.leave_timeout
        elif kind in (link.BYE, link.STAY):
            reason = link.unpack(rest[0]).get("reason", "")
            self._on_exit(f"{kind.decode().lower()}: {reason}")
        else:
            log.warning("shard %s: unknown link message %r", self.shard_id, kind)

    def apply_ring(self, epoch: int, members: tuple[str, ...]) -> None:
        """Take the placement in force: keep it on disk, drop documents this shard does not own."""
        same = (epoch, members) == (self.epoch, self.members)
        self.epoch, self.members = epoch, members
        self._stream = None
        self._in_flight.clear()
        if self._ring_path is not None and not same:
            tmp = self._ring_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"epoch": epoch, "members": list(members)}))
            os.replace(tmp, self._ring_path)
        if same and not self._dirty:
            return
        self._dirty = False
        ring = Placement(members) if members else None
        indexes = self._indexes()
        for name in indexes.names():
            index = indexes.get(name)
            ids = index.store.ids()
            if not len(ids):
                continue
            mine = np.zeros(len(ids), dtype=bool)
            if ring is not None and self.shard_id in ring.members:
                mine = ring.owner_index(ids) == ring.members.index(self.shard_id)
            if not mine.all():
                self.purged += index.delete(ids[~mine])
        log.info("shard %s: placement %d (%s) in force", self.shard_id, epoch, ", ".join(members))

    # ---- handing documents over --------------------------------------------------------
    def _start_handover(self, epoch: int, target: Placement) -> None:
        self._stream = self._batches(target)
        self._stream_epoch = epoch
        self._in_flight.clear()
        self._dirty = True

    def _batches(self, target: Placement) -> Iterator[tuple[str, str, pb.Request]]:
        """(new owner, the index's configuration, a batch of its documents) for all that moves."""
        indexes = self._indexes()
        for name in indexes.names():
            index = indexes.get(name)
            config = index.config.to_json()
            ids = index.store.ids()
            for member, rows in target.split(ids).items():
                if member == self.shard_id:
                    continue
                for start in range(0, len(rows), _MOVE_BATCH):
                    chunk = ids[rows[start : start + _MOVE_BATCH]]
                    request = _move_request(index, name, chunk)
                    if request is not None:
                        yield member, config, request

    def pump(self) -> None:
        """Send the next handover batches, a window at a time; say DONE when all were taken."""
        while self._stream is not None and len(self._in_flight) < _MOVE_WINDOW:
            item = next(self._stream, None)
            if item is None:
                self._stream = None
                break
            member, config, request = item
            self._seq += 1
            self._in_flight.add(self._seq)
            info = {"target": member, "source": self.shard_id, "seq": self._seq, "config": config}
            self.moved_out += len(request.index.docs)
            self.send([link.MOVE, link.pack(info), request.SerializeToString()])
        if self._stream is None and not self._in_flight and self._stream_epoch:
            self.send([link.DONE, link.pack({"epoch": self._stream_epoch})])
            self._stream_epoch = 0

    @property
    def busy(self) -> bool:
        return self._stream is not None or bool(self._in_flight) or bool(self._out)

    def _take(self, info: dict, body: bytes) -> None:
        """Commit documents handed over by another shard, then tell it."""
        request = pb.Request.FromString(body)
        indexes = self._indexes()
        name = request.index.index_name
        if name not in indexes.names():
            from ..indexer.config import IndexConfig

            indexes.create(name, IndexConfig.from_json(info["config"]), exist_ok=True)
        from ..service.indexer import index_batch

        index = indexes.get(name)
        index.add_many([index_batch(request.index)])
        write_chunks(index, request.index)
        self._dirty = True
        self.moved_in += len(request.index.docs)
        self.send([link.MOVED, link.pack({"source": info["source"], "seq": info["seq"]})])

    # ---- leaving -----------------------------------------------------------------------
    def leave(self, now: float) -> bool:
        """Ask to leave; False when there is nothing to hand over and the shard may stop now."""
        if self.shard_id not in self.members:
            return False
        self._leave_deadline = now + 3.0  # no answer from the middleman in time: just stop
        self.send([link.LEAVE, link.pack({"id": self.shard_id})])
        return True

    def leave_expired(self, now: float) -> bool:
        return self._leave_deadline is not None and now >= self._leave_deadline

    def next_deadline(self) -> float:
        can_send = self._stream is not None and len(self._in_flight) < _MOVE_WINDOW
        if can_send or self._out:
            return 0.0
        return min(self._next_hello, self._leave_deadline or self._next_hello)

    def on_timer(self, now: float) -> None:
        if now >= self._next_hello:
            self.hello()
            self._next_hello = now + link.HELLO_INTERVAL_S
        self.pump()
        self.flush()

    def status(self) -> dict[str, object]:
        return {
            "shard_id": self.shard_id,
            "epoch": self.epoch,
            "members": list(self.members),
            "moved_out": self.moved_out,
            "moved_in": self.moved_in,
            "purged": self.purged,
        }


def _move_request(index, name: str, ids: np.ndarray) -> pb.Request | None:  # type: ignore[no-untyped-def]
    docs = index.get(ids)
    vectors, found = index.store.get_vectors(ids)
    keep = [i for i, doc in enumerate(docs) if doc is not None and found[i]]
    if not keep:
        return None
    request = pb.Request()
    request.index.index_name = name
    for i in keep:
        text, meta = docs[i]
        request.index.docs.add(doc_id=int(ids[i]), raw_text=text, meta_json=meta, doc_type=pb.Document.TEXT)
    array_to_nd(vectors[keep], request.index.embeddings)
    attach_chunks(index, request)  # a document moves with its chunks
    return request
