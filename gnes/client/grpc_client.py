"""A Python client of the gRPC frontend: index text, search it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from ..proto import array_to_nd, pb, pb_grpc

_OPTIONS = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]


class GnesError(RuntimeError):
    """The deployment answered with an error; the message is its reason."""


@dataclass(slots=True)
class SearchHit:
    doc_id: int
    score: float
    text: str
    meta: dict[str, object] | None = None
    # where the index holds chunks: the best chunk of the document (its text, for text chunks)
    chunk: str = ""


@dataclass(slots=True)
class IndexSummary:
    num_docs: int
    requests: int
    errors: list[str]


class GnesClient:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 8800, timeout: float = 120.0, token: str | None = None
    ) -> None:
        self.address = f"{host}:{port}"
        self.timeout = timeout
        # Sent with every call when the frontend checks tokens (gnes/auth); None: no header.
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._channel = grpc.insecure_channel(self.address, options=_OPTIONS)
        self._stub = pb_grpc.GnesRPCStub(self._channel)
        self._request_ids = itertools.count(1)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GnesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def call(self, request: pb.Request) -> pb.Response:
        return self._stub.Call(request, timeout=self.timeout, metadata=self._metadata)

    def index(
        self,
        texts: Iterable[str],
        batch_size: int = 100,
        start_id: int = 0,
        metas: Iterable[dict[str, object] | None] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> IndexSummary:
        """Index texts with ids start_id, start_id+1, ... in one streaming call."""
        summary = IndexSummary(0, 0, [])
        requests = self._index_requests(texts, batch_size, start_id, metas)
        for response in self._stub.StreamCall(requests, timeout=None, metadata=self._metadata):
            summary.requests += 1
            if response.index.status == pb.Response.ERROR:
                summary.errors.append(response.error or "index request failed")
            else:
                summary.num_docs += response.index.num_docs
            if on_batch is not None:
                on_batch(response.index.num_docs)
        return summary

    def stream(self, requests: Iterable[pb.Request]) -> Iterator[pb.Response]:
        return self._stub.StreamCall(iter(requests), timeout=None, metadata=self._metadata)

    def _index_requests(
        self,
        texts: Iterable[str],
        batch_size: int,
        start_id: int,
        metas: Iterable[dict[str, object] | None] | None,
    ) -> Iterator[pb.Request]:
        doc_ids = itertools.count(start_id)
        meta_iter = iter(metas) if metas is not None else itertools.repeat(None)
        text_iter = iter(texts)
        while batch := list(itertools.islice(text_iter, batch_size)):
            request = pb.Request(request_id=next(self._request_ids))
            docs = request.index.docs
            for text in batch:
                doc = docs.add(doc_id=next(doc_ids), raw_text=text, doc_type=pb.Document.TEXT)
                meta = next(meta_iter)
                if meta is not None:
                    doc.meta_json = json.dumps(meta)
            yield request

    def query(self, text: str, top_k: int = 10, chunk_reduce: str = "") -> list[SearchHit]:
        """`chunk_reduce`: max (the default where the index holds chunks), mean, weighted, or doc."""
        request = pb.Request(request_id=next(self._request_ids))
        request.search.query.raw_text = text
        request.search.query.doc_type = pb.Document.TEXT
        request.search.top_k = top_k
        request.search.chunk_reduce = chunk_reduce
        return self._hits(self.call(request))

    def query_vector(self, vector: np.ndarray, top_k: int = 10) -> list[SearchHit]:
        request = pb.Request(request_id=next(self._request_ids))
        array_to_nd(np.asarray(vector, dtype=np.float32).reshape(1, -1), request.search.embedding)
        request.search.top_k = top_k
        return self._hits(self.call(request))

    def status(self) -> dict[str, object]:
        request = pb.Request(request_id=next(self._request_ids))
        request.control.command = pb.Request.ControlRequest.STATUS
        return json.loads(self.call(request).control.info_json or "{}")

    def admin(self, command: int, **fields: object) -> dict[str, object]:
        request = pb.Request(request_id=next(self._request_ids))
        request.admin.command = command
        for key, value in fields.items():
            attr = getattr(request.admin, key)
            if isinstance(value, list | tuple):
                attr.extend(value)
            else:
                setattr(request.admin, key, value)
        response = self.call(request)
        if response.admin.status == pb.Response.ERROR:
            raise GnesError(response.error or "admin request failed")
        return json.loads(response.admin.info_json or "{}")

    @staticmethod
    def _hits(response: pb.Response) -> list[SearchHit]:
        if response.search.status == pb.Response.ERROR:
            raise GnesError(response.error or "query failed")
        hits = []
        for result in response.search.topk_results:
            doc = result.doc
            meta = json.loads(doc.meta_json) if doc.meta_json else None
            text = (
                doc.raw_text if doc.WhichOneof("raw_data") == "raw_text" else doc.raw_bytes.decode("utf-8", "replace")
            )
            chunk = doc.chunks[0].text if doc.chunks else ""
            hits.append(SearchHit(doc.doc_id, result.score.value, text, meta, chunk))
        return hits
