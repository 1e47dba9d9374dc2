"""IndexClient: vectors in, ranked ids and metadata out, straight to the index shards.

As in distributed faiss, coordination is on the client side: the client knows every
shard (a discovery file or a list of addresses), places each document on the shard that
owns its id under gnes.placement, with the shards' ranks as their stable names (the
placement the pipeline uses too: an update or delete finds the one shard that holds the
document, and a shard added later takes over about 1/(n+1) of the ids), sends a query batch to all shards at once and
merges their top-k lists. Many clients may work against the same shards at once.
Messages are protobuf only; nothing is pickled.

A client owns ZeroMQ sockets, so it belongs to the thread that created it.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from ..cluster.discovery import parse_addresses, read_discovery
from ..indexer.checks import check_doc_ids
from ..indexer.config import IndexConfig
from ..placement import Placement
from ..proto import WireError, array_to_nd, nd_to_array, pb
from ..service.message import body_type_of, failed, parse_frames
from .results import SearchResult, merge, meta_of, shard_hits

Admin = pb.Request.AdminRequest
_QUERY_CHUNK = 1024  # queries per request: bounds one message's size
_STAGES = ("not_trained", "training", "adding", "trained")
__all__ = ["IndexClient", "IndexClientError", "SearchResult"]


class IndexClientError(RuntimeError):
    """A shard answered with an error or did not answer in time; the message says which and why."""


class IndexClient:
    def __init__(
        self,
        discovery: str | Path | None = None,
        addresses: str | Sequence[str] | None = None,
        timeout: float = 120.0,
        discovery_timeout: float = 60.0,
    ) -> None:
        if (discovery is None) == (addresses is None):
            raise ValueError("give a discovery file or shard addresses (host:port,...), not both or neither")
        if discovery is not None:
            self.shards = read_discovery(discovery, timeout=discovery_timeout)
        else:
            spec = addresses if isinstance(addresses, str) else ",".join(addresses or ())
            self.shards = parse_addresses(spec)
        if not self.shards:
            raise ValueError("no shards to connect to")
        self.timeout = timeout
        self.placement = Placement(str(shard.rank) for shard in self.shards)
        # placement member -> position in self.shards (the sockets' order)
        self._position = {str(shard.rank): i for i, shard in enumerate(self.shards)}
        self._ctx = zmq.Context()
        self._socks: list[zmq.Socket] = []
        self._poller = zmq.Poller()
        for shard in self.shards:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)  # nothing unanswered is worth waiting for at close
            sock.setsockopt(zmq.SNDHWM, 1000)
            sock.setsockopt(zmq.RCVHWM, 1000)
            sock.connect(shard.endpoint)
            self._socks.append(sock)
            self._poller.register(sock, zmq.POLLIN)
        self._client_id = f"index-client-{uuid.uuid4().hex[:8]}"
        self._request_id = 0
        self._auto_id = secrets.randbits(40) << 20  # ids for callers that give none

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    # ---- transport ---------------------------------------------------------------------
    def _send(
        self, shard: int, request: pb.Request, payload: np.ndarray | None = None, body: bytes | None = None
    ) -> int:
        """Send a request; `payload` (an index request's vectors, an array nobody else holds)
        goes as a frame of its own, straight from its memory (no copy into the message).
        `body`: the request serialized already (a broadcast serializes it once for all shards;
        answers are matched by their envelopes' ids, which differ)."""
        self._request_id = (self._request_id + 1) & 0xFFFFFFFF
        if body is None:
            request.request_id = self._request_id
            body = request.SerializeToString()
        envelope = pb.Envelope(client_id=self._client_id, request_id=self._request_id)
        envelope.body_type = body_type_of(request)
        frames: list[Any] = [envelope.SerializeToString(), body]
        if payload is not None:
            frames.append(payload)
        self._socks[shard].send_multipart(frames, copy=False)  # small frames are copied anyway
        return self._request_id

    def _receive(self, waiting: dict[int, int]) -> Iterator[tuple[int, pb.Response]]:
        """Yield (request id, response) as they arrive, until every id in `waiting`
        (request id -> shard) is answered; raise if a shard fails or is silent too long."""
        deadline = time.monotonic() + self.timeout
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted({self._describe(shard) for shard in waiting.values()})
                raise IndexClientError(f"no answer within {self.timeout:g} s from {', '.join(missing)}")
            for sock, _ in self._poller.poll(int(left * 1000) + 1):
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    packet = parse_frames(frames)
                    rid = packet.envelope.request_id
                    if rid not in waiting:
                        continue  # the late answer of a request that already timed out
                    shard = waiting.pop(rid)
                    response = packet.response()
                    if failed(response):
                        raise IndexClientError(f"{self._describe(shard)}: {response.error or 'failed'}")
                    yield rid, response

    def _broadcast(self, request: pb.Request, payload: np.ndarray) -> list[pb.Response]:
        """Send one request to every shard, serialized once, with `payload` (the query
        vectors) as a frame of its own, sent from the array's memory: copying 300 KB of
        vectors into and out of the protobuf body cost ~1 ms a batch, client and shard
        together. The answers in shard order. The body's request id is the first shard's.
        `payload` must stay unchanged until the answers are in (they come after the shards
        received it)."""
        request.request_id = (self._request_id + 1) & 0xFFFFFFFF
        body = request.SerializeToString()
        return self._answers([self._send(shard, request, payload, body) for shard in range(self.num_shards)])

    def _call_all(self, make: Any) -> list[pb.Response]:
        """Send `make(shard)` to every shard and return the answers in shard order."""
        return self._answers([self._send(shard, make(shard)) for shard in range(self.num_shards)])

    def _answers(self, sent: list[int]) -> list[pb.Response]:
        """The answers to requests sent one to each shard (ids in shard order), in shard order."""
        answers = dict(self._receive(dict(zip(sent, range(self.num_shards), strict=True))))
        return [answers[rid] for rid in sent]

    def _admin(self, command: int, name: str = "", **fields: Any) -> list[dict[str, Any]]:
        def make(_: int) -> pb.Request:
            request = pb.Request()
            request.admin.command = command
            request.admin.index_name = name
            for key, value in fields.items():
                if isinstance(value, list):
                    getattr(request.admin, key).extend(value)
                else:
                    setattr(request.admin, key, value)
            return request

        return [json.loads(r.admin.info_json or "{}") for r in self._call_all(make)]

    def _describe(self, shard: int) -> str:
        address = self.shards[shard]
        return f"shard {address.rank} ({address.host}:{address.port})"

    # ---- indexes -----------------------------------------------------------------------
    def create_index(self, name: str, config: dict[str, Any] | IndexConfig, exist_ok: bool = False) -> None:
        if not isinstance(config, IndexConfig):
            config = IndexConfig.from_dict(config)  # a bad config fails here, before any shard
        self._admin(Admin.CREATE, name, config_json=config.to_json(), exist_ok=exist_ok)

    def drop_index(self, name: str) -> None:
        self._admin(Admin.DROP, name)

    def list_indexes(self) -> list[str]:
        return sorted({n for info in self._admin(Admin.LIST) for n in info["indexes"]})

    def state(self, name: str) -> dict[str, Any]:
        shards = [info["indexes"][name] for info in self._admin(Admin.STATS, name)]
        # The index as a whole is as far along as its least advanced shard.
        overall = min((s["state"] for s in shards), key=_STAGES.index)
        errors = [s["error"] for s in shards if s.get("error")]
        return {"state": overall, "count": sum(s["count"] for s in shards), "errors": errors, "shards": shards}

    def wait_trained(self, name: str, timeout: float = 600.0, interval: float = 0.2) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(name)
            if state["state"] == "trained":
                return state
            if state["errors"]:
                raise IndexClientError(f"index {name!r}: {'; '.join(state['errors'])}")
            if time.monotonic() > deadline:
                raise IndexClientError(f"index {name!r} is still {state['state']} after {timeout:g} s")
            time.sleep(interval)

    def count(self, name: str) -> int:
        return sum(self.count_per_shard(name))

    def count_per_shard(self, name: str) -> list[int]:
        return [info["indexes"][name]["count"] for info in self._admin(Admin.STATS, name)]

    def train(self, name: str) -> None:
        """Start training now (trained types; with train_ratio this is the only trigger)."""
        self._admin(Admin.TRAIN_NOW, name)

    def save(self, name: str = "") -> None:
        """Snapshot now (every index when name is empty). Writes are durable without it."""
        self._admin(Admin.SAVE, name)

    def reserve(self, name: str, rows: int, ids: np.ndarray | None = None) -> list[int]:
        """Before adding `rows` vectors (their `ids` if known): each shard makes room for its
        share at once, instead of growing faiss's code array by doubling it mid-load (a copy of
        everything held, seconds at a million vectors). Per shard, the rows reserved (0 where
        the index type has no such array)."""
        if ids is not None:
            if len(ids) != rows:
                raise ValueError(f"reserve got {rows} rows but {len(ids)} ids")
            owned = self.placement.split(check_doc_ids(ids))
            shares = [len(owned.get(str(shard.rank), ())) for shard in self.shards]
        else:  # fresh ids spread evenly over the slots: a share, and room for the unevenness
            shares = [rows // self.num_shards + rows // (10 * self.num_shards) + 1024] * self.num_shards

        def make(shard: int) -> pb.Request:
            request = pb.Request()
            request.admin.command = Admin.RESERVE
            request.admin.index_name = name
            request.admin.rows = shares[shard]
            return request

        return [json.loads(r.admin.info_json)["reserved"] for r in self._call_all(make)]

    def compact(
        self, name: str = "", timeout: float = 3600.0, interval: float = 0.2
    ) -> list[dict[str, dict[str, Any]]]:
        """Reclaim the segment rows of replaced and deleted vectors (every index when name is
        empty) and wait until every shard has; per shard, index -> its segment rows before and
        after, seconds taken and seconds the shard answered nothing (the final commit); empty
        for a shard that restarted meanwhile (a compaction cut short leaves the old file, whole).
        The shards copy in the background and keep answering meanwhile."""
        started = self._admin(Admin.COMPACT, name)
        names = sorted({index for info in started for index in info["compacting"]})
        deadline = time.monotonic() + timeout
        while True:
            shards = [info["indexes"] for info in self._admin(Admin.STATS, name)]
            missing = sorted({index for shard in shards for index in names if index not in shard})
            if missing:
                raise IndexClientError(f"index {', '.join(missing)} is gone from a shard during its compaction")
            if not any(shard[index]["compacting"] for shard in shards for index in names):
                figures = [{index: shard[index]["last_compaction"] or {} for index in names} for shard in shards]
                failed = [(index, info) for shard in figures for index, info in shard.items() if "error" in info]
                errors = [f"{index}: {info['error']}" for index, info in failed]
                if errors:  # the old segment file is kept whole where a compaction failed
                    raise IndexClientError(f"the compaction failed on a shard: {'; '.join(errors)}")
                return figures
            if time.monotonic() > deadline:
                raise IndexClientError(f"the compaction of {names} did not end within {timeout:.0f} s")
            time.sleep(interval)

    def load(self, name: str) -> None:
        """Re-open the index on every shard from its directory: last snapshot plus log."""
        self._admin(Admin.LOAD, name)

    # ---- documents ---------------------------------------------------------------------
    def add(
        self,
        name: str,
        vectors: np.ndarray,
        ids: np.ndarray | Sequence[int] | None = None,
        metas: Sequence[dict[str, Any] | None] | None = None,
        texts: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Store (or replace) documents; every one is durable when this returns. Returns the ids."""
        ids = self._ids_for(len(vectors), ids)
        for _ in self.add_stream(name, [(vectors, ids, metas, texts)]):
            pass
        return ids

    def add_stream(self, name: str, batches: Iterable[tuple[Any, ...]], max_in_flight: int = 8) -> Iterator[int]:
        """Pipelined add of (vectors, ids | None, metas | None[, texts]) batches, up to
        `max_in_flight` batches awaiting their acknowledgement; yields each batch's count
        once every shard has made its part durable, in the order the batches were given.
        Give ids to refer to the documents later; without them fresh ids are drawn."""
        pending: list[tuple[set[int], int]] = []  # per batch: request ids still open, size
        waiting: dict[int, int] = {}  # request id -> shard
        try:
            yield from self._send_batches(name, batches, max_in_flight, pending, waiting)
        finally:
            # Even when the caller's iterator fails, what was sent is waited for, so each
            # count yielded so far is exactly what is durable.
            while pending:
                yield from self._settle(pending, waiting)

    def _send_batches(
        self,
        name: str,
        batches: Iterable[tuple[Any, ...]],
        max_in_flight: int,
        pending: list[tuple[set[int], int]],
        waiting: dict[int, int],
    ) -> Iterator[int]:
        for batch in batches:
            vectors, ids, metas, texts = (*batch, None, None, None)[:4]
            vectors = np.asarray(vectors)
            ids = self._ids_for(len(vectors), ids)
            open_ids = set()
            for shard, request, payload in self._index_requests(name, vectors, ids, metas, texts):
                rid = self._send(shard, request, payload)
                waiting[rid] = shard
                open_ids.add(rid)
            pending.append((open_ids, len(ids)))
            while len(pending) >= max_in_flight:
                yield from self._settle(pending, waiting)
            while pending and not pending[0][0]:
                yield pending.pop(0)[1]

    def _settle(self, pending: list[tuple[set[int], int]], waiting: dict[int, int]) -> Iterator[int]:
        """Wait for at least one answer, then yield the counts of finished leading batches."""
        if pending[0][0]:
            rid, _ = next(self._receive(waiting))  # pops the answered id from `waiting`
            for open_ids, _ in pending:
                open_ids.discard(rid)
        while pending and not pending[0][0]:
            yield pending.pop(0)[1]

    def _ids_for(self, n: int, ids: np.ndarray | Sequence[int] | None) -> np.ndarray:
        if ids is None:
            ids = np.arange(self._auto_id, self._auto_id + n, dtype=np.int64)
            self._auto_id += n
            return ids
        ids = check_doc_ids(ids)
        if len(ids) != n:
            raise ValueError(f"got {n} vectors but {len(ids)} ids")
        return ids

    def _index_requests(
        self, name: str, vectors: np.ndarray, ids: np.ndarray, metas: Any, texts: Any
    ) -> list[tuple[int, pb.Request, np.ndarray | None]]:
        if vectors.ndim != 2:
            raise ValueError(f"vectors must be a 2-D array [n, dim], got shape {vectors.shape}")
        if metas is not None and len(metas) != len(ids):
            raise ValueError(f"got {len(ids)} vectors but {len(metas)} metadata entries")
        if texts is not None and len(texts) != len(ids):
            raise ValueError(f"got {len(ids)} vectors but {len(texts)} texts")
        # float16 stays float16 on the wire (half the bytes); the shards widen what they receive.
        vectors = np.ascontiguousarray(vectors, dtype=np.float16 if vectors.dtype == np.float16 else np.float32)
        parts = []
        for member, rows in self.placement.split(ids).items():
            shard = self._position[member]
            request = pb.Request()
            body = request.index
            body.index_name = name
            docs = body.docs
            if texts is None and metas is None:  # bare vectors: the ids as one array, no Document each
                # The vectors go as a frame of their own, sent from this array's memory while
                # the caller may already reuse its own: so this array is a copy (the only one).
                rows_vectors = vectors.copy() if len(rows) == len(ids) else vectors[rows]
                body.embeddings.shape[:] = rows_vectors.shape
                body.embeddings.dtype = rows_vectors.dtype.str
                array_to_nd(ids if len(rows) == len(ids) else ids[rows], out=body.doc_ids)
                parts.append((shard, request, rows_vectors))
                continue
            # Straight into the message (CopyFrom would copy the bytes a second time).
            array_to_nd(vectors[rows], out=body.embeddings)
            for row in rows.tolist():
                doc = docs.add(doc_id=int(ids[row]))
                if texts is not None and texts[row]:
                    doc.raw_text = texts[row]
                if metas is not None and metas[row] is not None:
                    doc.meta_json = json.dumps(metas[row])
            parts.append((shard, request, None))
        return parts

    def delete(self, name: str, ids: np.ndarray | Sequence[int]) -> int:
        """Delete by id on every shard (documents indexed through the pipeline may sit anywhere)."""
        id_list = [int(i) for i in np.asarray(ids).tolist()]
        return sum(info["deleted"] for info in self._admin(Admin.DELETE_DOCS, name, doc_ids=id_list))

    def get(self, name: str, ids: np.ndarray | Sequence[int], return_embeddings: bool = False) -> list[dict | None]:
        """Per id: {"id", "text", "meta"[, "embedding"]}, or None where no shard holds it."""
        id_list = [int(i) for i in np.asarray(ids).tolist()]

        def make(_: int) -> pb.Request:
            request = pb.Request()
            request.admin.command = Admin.GET_DOCS
            request.admin.index_name = name
            request.admin.doc_ids.extend(id_list)
            request.admin.return_embeddings = return_embeddings
            return request

        found: dict[int, dict[str, Any]] = {}
        for response in self._call_all(make):
            for doc in response.admin.docs:
                item: dict[str, Any] = {"id": doc.doc_id, "text": doc.raw_text, "meta": meta_of(doc.meta_json)}
                if return_embeddings:
                    item["embedding"] = nd_to_array(doc.embedding)
                found[doc.doc_id] = item
        return [found.get(i) for i in id_list]

    # ---- search ------------------------------------------------------------------------
    def search(
        self,
        name: str,
        queries: np.ndarray,
        top_k: int = 10,
        nprobe: int | None = None,
        ef_search: int | None = None,
        filter: dict[str, Any] | None = None,  # noqa: A002 - the natural name for callers
        return_embeddings: bool = False,
    ) -> SearchResult:
        """The top_k per query of every shard together: ids, scores, and (read lazily) the
        hits' metadata and texts. One request per shard for up to 1,024 queries."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.ndim != 2:
            raise ValueError(f"queries must be a 2-D array [q, dim], got shape {queries.shape}")
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        if filter is not None and len(filter) != 1:
            raise ValueError('filter takes one field: {"field": value}')
        if not len(queries):
            empty = np.zeros((0, top_k))
            return SearchResult(empty.astype(np.float32), empty.astype(np.int64))
        return SearchResult.concatenate(
            [
                self._search_chunk(
                    name, queries[i : i + _QUERY_CHUNK], top_k, nprobe, ef_search, filter, return_embeddings
                )
                for i in range(0, len(queries), _QUERY_CHUNK)
            ]
        )

    def _search_chunk(
        self,
        name: str,
        queries: np.ndarray,
        top_k: int,
        nprobe: int | None,
        ef_search: int | None,
        filter: dict[str, Any] | None,  # noqa: A002
        return_embeddings: bool,
    ) -> SearchResult:
        request = pb.Request()  # the same request to every shard: built once
        body = request.search
        body.index_name = name
        body.top_k = top_k
        body.embedding.shape[:] = queries.shape  # the bytes go as a frame of their own (_broadcast)
        body.embedding.dtype = queries.dtype.str
        body.nprobe = nprobe or 0
        body.ef_search = ef_search or 0
        body.return_embeddings = return_embeddings
        # Arrays of ids and scores rather than a Document per hit; a shard answers with
        # documents where arrays do not apply (return_embeddings, chunk indexes).
        body.array_results = True
        if filter:
            ((field, value),) = filter.items()
            body.filter_field = field
            body.filter_value_json = json.dumps(value)
        responses = self._broadcast(request, queries)
        parts = []
        for shard, response in enumerate(responses):
            try:
                parts.append(shard_hits(response.search, len(queries)))
            except WireError as exc:
                raise IndexClientError(f"{self._describe(shard)}: malformed search answer: {exc}") from exc
        bigger_is_better = responses[0].search.is_big_score_similar
        return merge(parts, top_k, bigger_is_better, queries.shape[1], return_embeddings)

    # ---- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        for sock in self._socks:
            sock.close()
        self._socks = []
        self._ctx.term()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
