"""The indexer service: one shard holding any number of logical indexes.

Requests reach it three ways: index batches on the input socket (one shard per batch),
queries and admin requests on a SUB socket subscribed to this shard's own topic at the
middleman, and anything from direct clients (IndexClient, `gnes load`) on a ROUTER socket
at --port_direct, answered on the same socket. An index request is answered only after
its documents are durable (see gnes/indexer/store.py).
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..config import load_component
from ..elastic.shard_link import ShardLink, resolve_shard_id
from ..indexer.chunk_rank import add_evidence, reduce_mode, search_chunks
from ..indexer.chunks import write_chunks
from ..indexer.config import DEFAULT_INDEX, IndexConfig
from ..indexer.index_set import IndexSet
from ..indexer.logical import Batch, LogicalIndex, PendingAdd
from ..proto import WireError, array_to_nd, doc_text, nd_to_array, pb
from .base import BaseService
from .direct_writes import DirectWrites
from .message import BodyType, Packet, error_response, parse_frames, stamp_route
from .sockets import bind_port

_POLL_TRAINING_S = 0.05
# Group commit bounds: messages taken per drain of the direct socket, documents per commit.
# Grouping pays off for many small requests (one fsync instead of dozens); a request of
# thousands of documents already amortises its fsync, and grouping several of those only
# copied them into one huge transaction: bulk loads of 10,000 x 784-d batches fell from
# 39,600 to 29,900 vectors/s with a 65,536-document bound (bench/bulk_load.py).
_GROUP_MESSAGES = 256
_GROUP_DOCS = 8192
Admin = pb.Request.AdminRequest
# A run of index requests committed together, each with the client it came from (direct) or None.
Run = list[tuple[bytes | None, Packet, pb.Request]]
_DOC_FIELDS = attrgetter("doc_id", "raw_text", "meta_json", "chunks")


@dataclass(slots=True)
class _Begun:
    """A run whose vectors are being written: finished (committed, answered) in order.
    `work` is the index and its begun write, or why nothing of the run was written."""

    run: Run
    checked: list[Batch | Exception]
    work: tuple[LogicalIndex, PendingAdd] | Exception
    chunked: list[bool]  # per request: whether any of its documents carries chunks


class IndexerService(BaseService):
    kind = "indexer"
    checks_mode = True

    def __init__(self, config, indexes: IndexSet | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.indexes = indexes
        self.link: ShardLink | None = None
        self._leaving = False
        self._leave_started: float | None = None
        self._last_save = self._last_poll = time.monotonic()
        self.direct_port = 0
        self.writes: DirectWrites | None = None
        self._router: zmq.Socket | None = None

    def setup(self) -> None:
        if self.indexes is None:
            default = load_component(self.config.yaml_path, IndexConfig) if self.config.yaml_path else None
            data_dir = Path(self.config.dump_path) if self.config.dump_path else None
            self.indexes = IndexSet(data_dir, default)
        self.log.info(
            "shard ready with indexes %s (data: %s)", self.indexes.names(), self.config.dump_path or "in memory"
        )

    def open_extra_sockets(self, ctx: zmq.Context) -> None:
        cfg = self.config
        if cfg.port_broadcast:
            data_dir = Path(cfg.dump_path) if cfg.dump_path else None
            shard_id = resolve_shard_id(cfg.shard_id, cfg.dump_path)
            self.link = ShardLink(
                shard_id,
                lambda: self.indexes,
                data_dir,
                self._on_link_requests,
                self._on_link_exit,
                leave_timeout=cfg.leave_timeout,
            )
            self.watch(self.link.open(ctx, cfg.host_broadcast, cfg.port_broadcast, cfg.hwm), self._on_link_readable)
            self.link.hello()
            self.log.info("shard %s linked to the middleman at %s:%d", shard_id, cfg.host_broadcast, cfg.port_broadcast)
        if cfg.port_direct < 0 and not cfg.port_broadcast and cfg.socket_in.upper() == "NONE":
            raise ValueError("this shard would be unreachable: set --port_broadcast (pipeline) or --port_direct")
        if cfg.port_direct >= 0:
            router = ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.SNDHWM, cfg.hwm)
            router.setsockopt(zmq.RCVHWM, cfg.hwm)
            router.setsockopt(zmq.LINGER, 2000)
            # A client that went away must not block the shard: drop its answers instead.
            router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.direct_port = bind_port(router, cfg.host_direct, cfg.port_direct)
            self.watch(router, self._on_direct)
            self._router = router
            self.writes = DirectWrites(self._begin_run, self._written, self._finish_direct)
            self.watch(self.writes.fd, self.writes.on_readable)  # type: ignore[arg-type]  # a pipe: zmq polls fds too
            self.log.info("direct clients: port %d", self.direct_port)
            if cfg.discovery:
                from ..cluster.discovery import register_shard

                register_shard(cfg.discovery, cfg.rank, _reachable_host(cfg.host_direct), self.direct_port)

    def _on_direct(self, sock: zmq.Socket) -> None:
        clients: list[bytes] = []
        packets: list[Packet] = []
        for _ in range(_GROUP_MESSAGES):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.handled += 1
            client = frames[0].bytes
            try:
                packets.append(_direct_packet(frames[1:]))
                clients.append(client)
            except WireError as exc:
                # A direct client waits for an answer, so even garbage gets one.
                self.errors += 1
                response = error_response(0, BodyType.UNSET, f"{self.name}: malformed message: {exc}")
                sock.send_multipart(
                    [client, pb.Envelope(is_response=True).SerializeToString(), response.SerializeToString()]
                )
        assert self.writes is not None
        for part in _split_runs(clients, packets):
            if isinstance(part, list):
                self.writes.add(part)  # answered once durable, in order (gnes/service/direct_writes.py)
                continue
            client, packet = part
            self.writes.finish_all()  # what came before is visible to this request
            self._send_direct(client, packet, self._answer_one(packet))
        self.writes.finish_written()

    def _send_direct(self, client: bytes | None, packet: Packet, response: pb.Response) -> None:
        assert self._router is not None and client is not None
        packet.envelope.is_response = True
        stamp_route(packet, self.name, self.identity)
        self._router.send_multipart([client, packet.envelope.SerializeToString(), response.SerializeToString()])

    def _finish_direct(self, begun: _Begun) -> None:
        for (client, packet, _), response in zip(begun.run, self._finish_run(begun), strict=True):
            self._send_direct(client, packet, response)

    def _finish_writes(self) -> None:
        """Before anything else reads or writes the indexes: the direct writes in flight."""
        if self.writes is not None:
            self.writes.finish_all()

    def _on_link_readable(self, sock: zmq.Socket) -> None:
        assert self.link is not None
        self._finish_writes()
        self.link.on_readable(sock)

    def _on_link_requests(self, packets: list[Packet]) -> None:
        self._finish_writes()
        self.handled += len(packets)
        self.handle_all(packets)

    def _on_link_exit(self, why: str) -> None:
        self.log.info("shard %s stops (%s)", self.link.shard_id if self.link else "", why)
        self._stop.set()

    def on_stop_signal(self) -> None:
        """SIGTERM: a shard in a placement asks to leave and hands its documents over first;
        a second signal, or no middleman, stops it at once."""
        self.leave()

    def leave(self) -> None:
        """Thread-safe: the loop thread acts on it at its next turn."""
        if self._leaving or self.link is None:
            self._stop.set()
        self._leaving = True

    def teardown(self) -> None:
        try:
            if self.writes is not None:
                self.writes.close()  # acknowledges what is durable; nothing is left half-written
        finally:
            if self.indexes is not None:
                self.indexes.close()

    def next_deadline(self) -> float | None:
        # While an index trains or compacts in the background, look every 50 ms whether it is done;
        # otherwise wake only for periodic saves, and for the link's hello and handover.
        deadlines = []
        if self.link is not None:
            deadlines.append(self.link.next_deadline())
            if self._leaving and self._leave_started is None:
                deadlines.append(0.0)
        if self.config.save_interval > 0:
            deadlines.append(self._last_save + self.config.save_interval)
        if self.indexes is not None and (self.indexes.is_training() or self.indexes.is_compacting()):
            deadlines.append(self._last_poll + _POLL_TRAINING_S)
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> None:
        self._finish_writes()  # a handover or a snapshot sees every write before it
        if self.link is not None:
            if self._leaving and self._leave_started is None:
                self._leave_started = now
                if not self.link.leave(now):
                    self._stop.set()
            elif self._leaving and self.link.leave_expired(now):
                self.log.warning("no answer to the leave request: stopping with the documents kept here")
                self._stop.set()
            self.link.on_timer(now)
        self.indexes.poll()
        self._last_poll = now
        if self.config.save_interval > 0 and now >= self._last_save + self.config.save_interval:
            self.indexes.save()
            self._last_save = now

    def status_info(self) -> dict[str, object]:
        info = super().status_info()
        if self.indexes is not None:
            info["indexes"] = {name: state["count"] for name, state in self.indexes.states().items()}
            info["count"] = sum(info["indexes"].values())  # type: ignore[union-attr]
        info["direct_port"] = self.direct_port
        if self.link is not None:
            info.update(self.link.status())
        return info

    # ---- requests ----------------------------------------------------------------------
    def handle_all(self, packets: list[Packet]) -> None:
        requests: list[Packet] = []
        passing: list[Packet] = []  # upstream errors on their way to their callers
        for packet in packets:
            if packet.envelope.is_response:
                passing.append(packet)
            elif not self.rejected_by_mode(packet):
                requests.append(packet)
        for packet, response in zip(requests, self.answer_all(requests), strict=True):
            packet.envelope.is_response = True
            packet.body = response.SerializeToString()
        self.send_out_all(passing + requests)  # one message to the reducer for all of them

    def answer_all(self, packets: list[Packet]) -> list[pb.Response]:
        """Answer requests in order; a failure is answered with an ERROR response. Consecutive
        index writes to the same index are committed together (group commit: one
        transaction, one fsync) and then each is acknowledged."""
        answers: list[pb.Response] = []
        for part in _split_runs([None] * len(packets), packets):
            if isinstance(part, list):
                answers.extend(self._finish_run(self._begin_run(part, None)))
            else:
                answers.append(self._answer_one(part[1]))
        return answers

    def _answer_one(self, packet: Packet) -> pb.Response:
        try:
            return self._answer(packet)
        except Exception as exc:
            return self._error(packet, exc)

    def _error(self, packet: Packet, exc: Exception) -> pb.Response:
        self.errors += 1
        reason = self.reason_for(exc, packet.envelope.request_id)
        return error_response(packet.envelope.request_id, packet.envelope.body_type, reason)

    def _begin_run(self, run: Run, on_written: Any) -> _Begun:
        """Check a group of index requests and start writing it (see LogicalIndex.begin_many)."""
        checked: list[Batch | Exception] = []
        chunked: list[bool] = []
        for _, packet, request in run:
            try:
                batch, has_chunks = read_index_request(request.index, packet.payload)
                checked.append(batch)
                chunked.append(has_chunks)
            except WireError as exc:
                checked.append(exc)
                chunked.append(False)
        batches = [c for c in checked if not isinstance(c, Exception)]
        try:  # an unknown index too: every request hears why
            index = self.indexes.get(run[0][2].index.index_name)  # one index per run (see _joins)
            return _Begun(run, checked, (index, index.begin_many(batches, on_written)), chunked)
        except Exception as exc:  # nothing of the group was written: every request hears why
            return _Begun(run, checked, exc, chunked)

    @staticmethod
    def _written(begun: _Begun) -> bool:
        return isinstance(begun.work, Exception) or begun.work[0].written(begun.work[1])

    def _finish_run(self, begun: _Begun) -> list[pb.Response]:
        """Commit a begun group; answer each request with its count or error."""
        n = sum(1 for c in begun.checked if not isinstance(c, Exception))
        index: LogicalIndex | None = None
        if isinstance(begun.work, Exception):
            written = iter([begun.work] * n)
        else:
            index, pending = begun.work
            try:
                written = iter(index.finish_many(pending))
            except Exception as exc:  # nothing of the group was committed: every request hears why
                written = iter([exc] * n)
        answers = []
        for (_, packet, request), item, has_chunks in zip(begun.run, begun.checked, begun.chunked, strict=True):
            outcome = item if isinstance(item, Exception) else next(written)
            if not isinstance(outcome, Exception) and index is not None:
                try:
                    write_chunks(index, request.index, has_chunks)
                except (ValueError, WireError) as exc:  # the documents are stored, their chunks not
                    outcome = exc
            if isinstance(outcome, Exception):
                answers.append(self._error(packet, outcome))
                continue
            response = pb.Response(request_id=request.request_id)
            response.index.num_docs = outcome
            response.index.status = pb.Response.SUCCESS
            answers.append(response)
        return answers

    def _answer(self, packet: Packet) -> pb.Response:
        """Any request but a well-formed index request (those are committed in groups)."""
        body_type = packet.envelope.body_type
        request = packet.request()  # raises for the malformed index requests that land here
        response = pb.Response(request_id=request.request_id)
        if body_type == BodyType.QUERY:
            self._search(request.search, response.search, packet.payload)
        elif body_type == BodyType.TRAIN:
            for index in self._targets(request.train.index_name):
                index.train_now()
            response.train.status = pb.Response.SUCCESS
        elif body_type == BodyType.ADMIN:
            self._admin(request.admin, response.admin)
        else:
            response.control.status = pb.Response.READY
            response.control.info_json = json.dumps(self.status_info())
        return response

    def _targets(self, name: str) -> list[LogicalIndex]:
        """TRAIN with no index name trains every index of the shard."""
        if name:
            return [self.indexes.get(name)]
        return [self.indexes.get(n) for n in self.indexes.names()]

    def _search(
        self, body: pb.Request.QueryRequest, out: pb.Response.QueryResponse, payload: memoryview | None = None
    ) -> None:
        """`payload`: the query vectors' bytes where they came as a frame of their own (IndexClient)."""
        if not body.HasField("embedding"):
            raise WireError("the query reached the indexer without a vector: is an encoder in front?")
        if body.top_k <= 0:
            raise WireError("top_k must be at least 1")
        index = self.indexes.get(body.index_name)
        queries = np.asarray(nd_to_array(body.embedding, payload), dtype=np.float32)
        batch = queries.ndim == 2  # a [q, d] batch from a vector client; else one query
        # Chunk vectors ranked into documents where the index holds chunks (gnes/indexer/chunk_rank.py).
        mode = reduce_mode(index, body.chunk_reduce)
        # Arrays only for vectors sent as a frame of their own, which only a direct client does:
        # through the pipeline (a gRPC client may set the flag too) the reducer merges documents.
        if body.array_results and payload is not None and batch and not mode and not body.return_embeddings:
            _array_answer(index, body, queries, out)
            return
        search = partial(search_chunks, index, mode=mode) if mode else index.search
        results = search(
            queries if batch else queries.reshape(1, -1),
            int(body.top_k),
            nprobe=body.nprobe or None,
            ef_search=body.ef_search or None,
            filter_field=body.filter_field,
            filter_value_json=body.filter_value_json,
            return_vectors=body.return_embeddings,
        )
        for hits in results:
            for hit in hits:
                result = out.topk_results.add()
                result.doc.doc_id = hit.doc_id
                result.doc.raw_text = hit.text
                result.doc.doc_type = pb.Document.TEXT
                if hit.meta_json:
                    result.doc.meta_json = hit.meta_json
                if hit.vector is not None:
                    result.doc.embedding.CopyFrom(array_to_nd(hit.vector))
                result.score.value = hit.score
                add_evidence(result, hit, mode)
            if batch:
                out.result_counts.append(len(hits))
        _answer_header(index, body, out)

    def _admin(self, body: pb.Request.AdminRequest, out: pb.Response.AdminResponse) -> None:
        command, name = body.command, body.index_name
        info: dict[str, object] = {"shard": self.identity}
        if command == Admin.LIST:
            info["indexes"] = self.indexes.names()
        elif command == Admin.CREATE:
            if not body.config_json:
                raise WireError("CREATE needs config_json: the index configuration")
            config = IndexConfig.from_json(body.config_json)
            info["created"] = self.indexes.create(name or DEFAULT_INDEX, config, exist_ok=body.exist_ok)
        elif command == Admin.DROP:
            self.indexes.drop(name)
            info["dropped"] = name or DEFAULT_INDEX
        elif command == Admin.STATS:
            states = self.indexes.states()
            if name:
                self.indexes.get(name)  # a clear error for an unknown name
                states = {name: states[name]}
            info["indexes"] = states
            info["count"] = sum(state["count"] for state in states.values())
        elif command == Admin.SAVE:
            for index in self._targets(name):
                index.save()
            self._last_save = time.monotonic()
        elif command == Admin.LOAD:
            info["state"] = self.indexes.reload(name).state()
        elif command == Admin.TRAIN_NOW:
            info["started"] = [index.name for index in self._targets(name) if index.train_now()]
        elif command == Admin.DELETE_DOCS:
            info["deleted"] = self.indexes.get(name).delete(np.asarray(body.doc_ids, dtype=np.uint64))
        elif command == Admin.GET_DOCS:
            self._get_docs(body, out)
        elif command == Admin.RESERVE:
            info["reserved"] = self.indexes.get(name).vectors.reserve(int(body.rows))
        elif command == Admin.COMPACT:  # copied in the background: on_timer commits it (compaction.py)
            info["compacting"] = {index.name: index.start_compact() for index in self._targets(name)}
        else:
            raise WireError(f"unknown admin command {command}")
        out.status = pb.Response.SUCCESS
        out.info_json = json.dumps(info)

    def _get_docs(self, body: pb.Request.AdminRequest, out: pb.Response.AdminResponse) -> None:
        index = self.indexes.get(body.index_name)
        ids = np.asarray(body.doc_ids, dtype=np.int64)
        docs = index.get(ids)
        vectors, found = index.store.get_vectors(ids) if body.return_embeddings else (None, None)
        for row, (doc_id, doc) in enumerate(zip(ids.tolist(), docs, strict=True)):
            if doc is None:
                continue
            item = out.docs.add(doc_id=doc_id, raw_text=doc[0], meta_json=doc[1], doc_type=pb.Document.TEXT)
            if vectors is not None and found[row]:
                item.embedding.CopyFrom(array_to_nd(vectors[row]))


def _array_answer(
    index: LogicalIndex, body: pb.Request.QueryRequest, queries: np.ndarray, out: pb.Response.QueryResponse
) -> None:
    """A vector client's batch answered with [q, k] arrays (see QueryRequest.array_results):
    no ScoredResult per hit, which cost a batch of 100 queries x 10 hits ~15 ms to build here
    and as much again to read at the client."""
    hits = index.search_arrays(
        queries,
        int(body.top_k),
        nprobe=body.nprobe or None,
        ef_search=body.ef_search or None,
        filter_field=body.filter_field,
        filter_value_json=body.filter_value_json,
    )
    array_to_nd(hits.ids, out=out.result_ids)
    array_to_nd(hits.scores.astype(np.float32, copy=False), out=out.result_scores)
    out.result_counts[:] = hits.counts.tolist()
    if hits.texts is not None and hits.metas is not None:
        out.result_texts[:] = hits.texts
        out.result_metas_json[:] = hits.metas
    _answer_header(index, body, out)


def _answer_header(index: LogicalIndex, body: pb.Request.QueryRequest, out: pb.Response.QueryResponse) -> None:
    out.status = pb.Response.SUCCESS
    out.top_k = body.top_k
    out.is_big_score_similar = index.config.metric == "ip"
    out.is_sorted = True
    out.shards_answered = 1
    out.shards_expected = 1


def _index_request(packet: Packet) -> pb.Request | None:
    """The parsed request if the packet is a well-formed index request, else None."""
    if packet.envelope.body_type != BodyType.INDEX:
        return None
    try:
        return packet.request()
    except WireError:
        return None  # answered on its own, with the parse error


def _split_runs(clients: list[bytes] | list[None], packets: list[Packet]) -> list[Run | tuple[bytes | None, Packet]]:
    """Requests in order: runs of consecutive index requests that may commit together, and
    every other request on its own (with its client)."""
    parts: list[Run | tuple[bytes | None, Packet]] = []
    run: Run = []
    for client, packet in zip(clients, packets, strict=True):
        request = _index_request(packet)
        if run and (request is None or not _joins(run, request)):
            parts.append(run)
            run = []
        if request is None:
            parts.append((client, packet))
        else:
            run.append((client, packet, request))
    if run:
        parts.append(run)
    return parts


def _joins(run: Run, request: pb.Request) -> bool:
    """Whether an index request may join the group being formed: same index, and room for all
    of its documents (a request bigger than the bound still goes, alone, into a group of its own)."""
    docs = sum(_doc_count(r.index) for _, _, r in run) + _doc_count(request.index)
    return run[0][2].index.index_name == request.index.index_name and docs <= _GROUP_DOCS


def _direct_packet(frames: list[zmq.Frame]) -> Packet:
    """Envelope and body; a bulk index request's or a query batch's vectors may follow as a
    third frame, used where libzmq received it (faiss and the segment file read it there: no
    copy; a batch of 100 x 784 queries parsed from inside the body cost 0.45 ms)."""
    if len(frames) > 3:
        raise WireError(f"expected 2 frames (envelope, body) or 3 (and the vectors), got {len(frames)}")
    packet = parse_frames([frame.bytes for frame in frames[:2]])
    if len(frames) == 3:
        if packet.envelope.body_type not in (BodyType.INDEX, BodyType.QUERY):
            raise WireError("only an index or query request may carry its vectors as a frame of their own")
        packet.payload = frames[2].buffer
    return packet


def index_batch(body: pb.Request.IndexRequest, payload: memoryview | None = None) -> Batch:
    """The ids, vectors, texts and metadata of an index request, checked against each other;
    `payload`: the vectors' bytes when they came as a frame of their own."""
    return read_index_request(body, payload)[0]


def read_index_request(body: pb.Request.IndexRequest, payload: memoryview | None = None) -> tuple[Batch, bool]:
    """`index_batch`, and whether any document carries chunks (for `write_chunks`)."""
    if not body.HasField("embeddings"):
        raise WireError("the index request reached the indexer without vectors: is an encoder in front?")
    vectors = nd_to_array(body.embeddings, payload)
    if body.HasField("doc_ids"):
        return _bare_batch(body, vectors), False
    docs = body.docs
    if vectors.ndim != 2 or vectors.shape[0] != len(docs):
        raise WireError(f"expected one vector per document ({len(docs)}), got shape {vectors.shape}")
    if not docs:
        return (np.zeros(0, dtype=np.uint64), _float_vectors(vectors), None, None), False
    # Every field the shard needs, read in one pass: each read of a protobuf field costs about
    # half a microsecond, and four passes (ids, texts, metadata, chunks) cost 162 us a request
    # of 100 documents here, against 85 us for this one.
    id_list, texts, metas, chunk_lists = zip(*map(_DOC_FIELDS, docs), strict=True)
    ids = np.array(id_list, dtype=np.uint64)
    # raw_text first, the full rules only where it is empty: WhichOneof per document costs
    # more than the rest of a bulk load's per-document work together.
    text_list = list(texts)
    if not all(text_list):
        text_list = [text or doc_text(d) for text, d in zip(text_list, docs, strict=True)]
    meta_list = list(metas)
    # No text and no metadata anywhere (a bulk load of bare vectors): the index skips them.
    bare = not any(text_list) and not any(meta_list)
    batch = ids, _float_vectors(vectors), None if bare else text_list, None if bare else meta_list
    return batch, any(chunk_lists)


def _float_vectors(vectors: np.ndarray) -> np.ndarray:
    """float16 vectors as they came (a float16 index keeps them so), anything else as float32."""
    return vectors if vectors.dtype == np.float16 else np.asarray(vectors, dtype=np.float32)


def _doc_count(body: pb.Request.IndexRequest) -> int:
    return len(body.docs) or (body.doc_ids.shape[0] if body.HasField("doc_ids") and body.doc_ids.shape else 0)


def _bare_batch(body: pb.Request.IndexRequest, vectors: np.ndarray) -> Batch:
    """Ids as one array and no documents: no per-document work on either side of the wire."""
    if body.docs:
        raise WireError("an index request carries doc_ids or docs, not both")
    ids = nd_to_array(body.doc_ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise WireError(f"doc_ids must be a 1-d integer array, got {ids.dtype} of shape {ids.shape}")
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise WireError(f"expected one vector per id ({len(ids)}), got shape {vectors.shape}")
    return ids, _float_vectors(vectors), None, None


def _reachable_host(bind_host: str) -> str:
    """The name other machines use to reach this shard: loopback stays loopback."""
    if bind_host.startswith("127.") or bind_host == "localhost":
        return bind_host
    return socket.getfqdn()
