"""The indexer service: one shard. Stores what it is sent, answers every query it gets.

Index batches arrive on the input socket (one shard per batch); queries and admin
requests arrive on a SUB socket subscribed to this shard's own topic at the middleman.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import zmq

from ..config import load_component
from ..indexer.base import BaseIndexer
from ..proto import WireError, doc_text, nd_to_array, pb
from .base import BaseService
from .message import BodyType, Packet, parse_frames
from .proxy import new_shard_topic
from .sockets import SocketSpec, SocketType, open_socket


class IndexerService(BaseService):
    kind = "indexer"
    checks_mode = True

    def __init__(self, config, indexer: BaseIndexer | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(config)
        self.indexer = indexer
        self.topic = new_shard_topic()
        self._last_save = time.monotonic()

    def setup(self) -> None:
        if self.indexer is None:
            if not self.config.yaml_path:
                raise ValueError("the indexer needs --yaml_path, e.g. yaml/indexer-flat-ip.yml")
            self.indexer = load_component(self.config.yaml_path, BaseIndexer)
        data_dir = Path(self.config.dump_path) if self.config.dump_path else None
        self.indexer.start(data_dir)
        self.log.info("shard ready with %d documents (data: %s)", self.indexer.count(), data_dir or "in memory")

    def open_extra_sockets(self, ctx: zmq.Context) -> None:
        if not self.config.port_broadcast:
            self.log.warning("no --port_broadcast: this shard gets queries only through its input socket")
            return
        spec = SocketSpec(SocketType.SUB_CONNECT, self.config.host_broadcast, self.config.port_broadcast)
        self.watch(open_socket(ctx, spec, hwm=self.config.hwm, subscribe=(self.topic,)), self._on_broadcast)

    def _on_broadcast(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                packet = parse_frames(frames[1:])
            except WireError as exc:
                self.errors += 1
                self.log.warning("dropped a malformed broadcast message: %s", exc)
                continue
            self._dispatch(packet)

    def teardown(self) -> None:
        if self.indexer is not None:
            self.indexer.close()

    def next_deadline(self) -> float | None:
        interval = self.config.save_interval
        return self._last_save + interval if interval > 0 else None

    def on_timer(self, now: float) -> None:
        if now >= self._last_save + self.config.save_interval:
            self.indexer.save()
            self._last_save = now

    def status_info(self) -> dict[str, object]:
        return {**super().status_info(), "count": self.indexer.count() if self.indexer else None}

    def handle(self, packet: Packet) -> None:
        env = packet.envelope
        if env.is_response:  # an upstream error on its way to the caller
            self.send_out(packet)
            return
        request = packet.request()
        response = pb.Response(request_id=request.request_id)
        if env.body_type == BodyType.INDEX:
            response.index.num_docs = self._index(request.index)
            response.index.status = pb.Response.SUCCESS
        elif env.body_type == BodyType.QUERY:
            self._search(request.search, response.search)
        elif env.body_type == BodyType.TRAIN:
            # Vectors are stored (and a trained index type trains) as they are indexed;
            # a train request only confirms that this shard is reachable.
            response.train.status = pb.Response.SUCCESS
        elif env.body_type == BodyType.ADMIN:
            self._admin(request.admin, response.admin)
        else:
            response.control.status = pb.Response.READY
            response.control.info_json = json.dumps(self.status_info())
        env.is_response = True
        packet.body = response.SerializeToString()
        self.send_out(packet)

    def _index(self, body: pb.Request.IndexRequest) -> int:
        if not body.HasField("embeddings"):
            raise WireError("the index request reached the indexer without vectors: is an encoder in front?")
        vectors = nd_to_array(body.embeddings)
        if vectors.ndim != 2 or vectors.shape[0] != len(body.docs):
            raise WireError(f"expected one vector per document ({len(body.docs)}), got shape {vectors.shape}")
        ids = np.fromiter((d.doc_id for d in body.docs), dtype=np.uint64, count=len(body.docs))
        texts = [doc_text(d) for d in body.docs]
        metas = [d.meta_json for d in body.docs]
        return self.indexer.add(ids, np.asarray(vectors, dtype=np.float32), texts, metas)

    def _search(self, body: pb.Request.QueryRequest, out: pb.Response.QueryResponse) -> None:
        if not body.HasField("embedding"):
            raise WireError("the query reached the indexer without a vector: is an encoder in front?")
        if body.top_k <= 0:
            raise WireError("top_k must be at least 1")
        query = np.asarray(nd_to_array(body.embedding), dtype=np.float32).reshape(1, -1)
        hits = self.indexer.search(query, int(body.top_k))[0]
        for hit in hits:
            result = out.topk_results.add()
            result.doc.doc_id = hit.doc_id
            result.doc.raw_text = hit.text
            result.doc.doc_type = pb.Document.TEXT
            if hit.meta_json:
                result.doc.meta_json = hit.meta_json
            result.score.value = hit.score
        out.status = pb.Response.SUCCESS
        out.top_k = body.top_k
        out.is_big_score_similar = self.indexer.is_big_score_similar
        out.is_sorted = True
        out.shards_answered = 1
        out.shards_expected = 1

    def _admin(self, body: pb.Request.AdminRequest, out: pb.Response.AdminResponse) -> None:
        command = body.command
        if command == pb.Request.AdminRequest.SAVE:
            self.indexer.save()
            self._last_save = time.monotonic()
        elif command == pb.Request.AdminRequest.DELETE_DOCS:
            self.indexer.delete(np.asarray(body.doc_ids, dtype=np.uint64))
        elif command != pb.Request.AdminRequest.STATS:
            name = pb.Request.AdminRequest.Command.Name(command)
            raise WireError(f"admin command {name} is not supported by this indexer")
        out.status = pb.Response.SUCCESS
        out.info_json = json.dumps({"shard": self.identity, "count": self.indexer.count()})
