"""Checks at the door: a request the pipeline cannot serve is refused before it is accepted,
with a reason the caller can act on, so nothing half-done is left behind."""

from __future__ import annotations

from ..proto import WireError, pb
from .config import ServiceConfig

_MAX_DOC_ID = (1 << 63) - 1


def check_request(request: pb.Request, config: ServiceConfig) -> None:
    kind = request.WhichOneof("body")
    if kind in ("index", "train"):
        body = getattr(request, kind)
        if kind == "index" and not body.docs:
            raise WireError("the index request has no documents")
        if len(body.docs) > config.max_docs_per_request:
            raise WireError(
                f"the request has {len(body.docs)} documents; the limit is {config.max_docs_per_request} per request"
            )
        needs_text = not body.HasField("embeddings")
        # When the whole request is within the size limit no document can exceed it, so the
        # common case (text documents) skips measuring each one in UTF-8.
        small = request.ByteSize() <= config.max_doc_bytes
        for i, doc in enumerate(body.docs):
            if small and doc.WhichOneof("raw_data") == "raw_text" and doc.doc_id <= _MAX_DOC_ID:
                if needs_text and not doc.raw_text:
                    raise WireError(f"document {i} (doc_id {doc.doc_id}) is empty")
                continue
            _check_doc(i, doc, config.max_doc_bytes, needs_text=needs_text)
    elif kind == "search":
        search = request.search
        if search.top_k <= 0:
            raise WireError("top_k must be at least 1")
        if not search.HasField("embedding"):
            _check_doc(0, search.query, config.max_doc_bytes, needs_text=True, what="the query")


def _check_doc(i: int, doc: pb.Document, limit: int, needs_text: bool, what: str = "") -> None:
    what = what or f"document {i} (doc_id {doc.doc_id})"
    if doc.doc_id > _MAX_DOC_ID:
        raise WireError(f"{what}: doc_id must be below 2**63")
    kind = doc.WhichOneof("raw_data")
    if kind == "raw_text":
        size = len(doc.raw_text.encode("utf-8"))
    elif kind == "raw_bytes":
        size = len(doc.raw_bytes)
    elif kind is None:
        size = sum(len(c.text.encode("utf-8")) for c in doc.chunks)
    else:
        if needs_text:
            raise WireError(f"{what} is {kind}: this pipeline indexes text documents")
        return
    if size > limit:
        raise WireError(f"{what} is {size} bytes; the limit is {limit} bytes")
    if needs_text and size == 0:
        raise WireError(f"{what} is empty")
    if kind == "raw_bytes":
        try:
            doc.raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireError(f"{what}: raw_bytes is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
