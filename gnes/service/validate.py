"""Checks at the door: a request the pipeline cannot serve is refused before it is accepted,
with a reason the caller can act on, so nothing half-done is left behind."""

from __future__ import annotations

from operator import attrgetter

from ..image.decode import looks_like_image
from ..preprocessor.video import looks_like_video
from ..proto import WireError, pb
from .config import ServiceConfig

_MAX_DOC_ID = (1 << 63) - 1
_TEXT_AND_ID = attrgetter("raw_text", "doc_id")

_MEDIA = (pb.Document.IMAGE, pb.Document.VIDEO)


def check_request(request: pb.Request, config: ServiceConfig) -> None:
    kind = request.WhichOneof("body")
    if kind in ("index", "train", "embed"):
        body = getattr(request, kind)
        if kind != "train" and not body.docs:
            raise WireError(f"the {kind} request has no documents")
        if len(body.docs) > config.max_docs_per_request:
            raise WireError(
                f"the request has {len(body.docs)} documents; the limit is {config.max_docs_per_request} per request"
            )
        needs_text = not body.HasField("embeddings")
        # No document of a request within the size limit can exceed it: then the documents'
        # sizes need not be measured in UTF-8, which was most of this check's cost.
        measure = request.ByteSize() > config.max_doc_bytes
        limit = config.max_doc_bytes
        # A document with text passes on its text and id alone; only the others (no text, bytes,
        # media, or over a limit) take the full rules, which also name what is wrong. One
        # WhichOneof and several field reads per document cost 188 us a request of 100.
        for i, (text, doc_id) in enumerate(map(_TEXT_AND_ID, body.docs)):
            if text and doc_id <= _MAX_DOC_ID and (len(text.encode("utf-8")) if measure else len(text)) <= limit:
                continue
            _check_doc(i, body.docs[i], limit, needs_text, measure)
    elif kind == "search":
        search = request.search
        if search.top_k <= 0:
            raise WireError("top_k must be at least 1")
        if not search.HasField("embedding"):
            _check_doc(0, search.query, config.max_doc_bytes, needs_text=True, measure=True, what="the query")


def _check_doc(i: int, doc: pb.Document, limit: int, needs_text: bool, measure: bool, what: str = "") -> None:
    kind = doc.WhichOneof("raw_data")
    if doc.doc_id > _MAX_DOC_ID:
        raise WireError(f"{_name(i, doc, what)}: doc_id must be below 2**63")
    if kind == "raw_text":
        # Without measuring, the length in characters: zero exactly when the UTF-8 is empty.
        size = len(doc.raw_text.encode("utf-8")) if measure else len(doc.raw_text)
    elif kind == "raw_bytes":
        size = len(doc.raw_bytes)
    elif kind in ("raw_image", "raw_video"):
        # its shape and dtype are the image encoder's (or a frame preprocessor's) to check
        size = len(getattr(doc, kind).data)
    elif kind is None:
        size = sum(len(c.text.encode("utf-8")) for c in doc.chunks)
    else:
        if needs_text:
            raise WireError(f"{_name(i, doc, what)} is {kind}: this pipeline indexes text documents")
        return
    if size > limit:
        raise WireError(f"{_name(i, doc, what)} is {size} bytes; the limit is {limit} bytes")
    if needs_text and size == 0:
        raise WireError(f"{_name(i, doc, what)} is empty")
    if kind == "raw_bytes":
        try:
            doc.raw_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            # Image or video bytes (declared, or known by their first bytes) are the image encoder's
            # or a frame preprocessor's: each refuses a corrupt one on its own while the rest goes on.
            if doc.doc_type in _MEDIA or looks_like_image(doc.raw_bytes) or looks_like_video(doc.raw_bytes):
                return
            reason = f"raw_bytes is not UTF-8 text ({exc.reason} at byte {exc.start})"
            raise WireError(f"{_name(i, doc, what)}: {reason}") from None


def _name(i: int, doc: pb.Document, what: str) -> str:
    """How an error names the document; built only when there is an error to report."""
    return what or f"document {i} (doc_id {doc.doc_id})"
