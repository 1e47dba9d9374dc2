"""How the encoder service fills a request when its encoder takes images or must be trained.

A text encoder that needs no training keeps the service's own path (gnes/service/encoder.py).
Here a document whose image cannot be used is refused on its own: it is taken out of its
INDEX or TRAIN request, named in the envelope's doc_errors (the frontend reports them in
the response, `report_doc_errors`), and the rest of the request goes on, even when that is
nothing. An EMBED or QUERY has to answer for every item, so there one bad item fails it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..image.decode import DEFAULT_MAX_PIXELS, ImageError
from ..image.document import doc_image, doc_name
from ..proto import WireError, array_to_nd, doc_text, pb

DUMP_FILE = "encoder-chain.npz"


def handles(encoder: Any, request: pb.Request) -> bool:
    """Whether the service hands this request to `encode_request` instead of its text path:
    the encoder takes images or has trained stages, and no document comes in chunks (those
    are gnes/encoder/chunks.py's)."""
    if getattr(encoder, "input_kind", "text") == "text" and not getattr(encoder, "trainable", False):
        return False
    kind = request.WhichOneof("body")
    return kind == "search" or not any(doc.chunks for doc in getattr(request, kind).docs)


def dump_file(dump_path: str) -> Path | None:
    """--dump_path is a file, or a folder that gets encoder-chain.npz."""
    if not dump_path:
        return None
    path = Path(dump_path)
    return path / DUMP_FILE if path.is_dir() or dump_path.endswith("/") else path


class TrainedState:
    """Loads a trainable encoder's saved stages at start, and again when another replica
    (sharing the dump path) has saved newer ones."""

    def __init__(self, encoder: Any, dump_path: str, log: logging.Logger) -> None:
        self.encoder = encoder
        self.file = dump_file(dump_path)
        self.log = log
        self._seen = 0.0

    def refresh(self) -> None:
        if self.file is None or not getattr(self.encoder, "trainable", False):
            return
        try:
            mtime = self.file.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._seen:
            self.encoder.load(self.file)
            self._seen = mtime
            self.log.info("loaded the trained encoder stages from %s", self.file)

    def save(self) -> None:
        if self.file is None:
            self.log.warning("the encoder is trained but not saved: no --dump_path")
            return
        self.encoder.save(self.file)
        self._seen = self.file.stat().st_mtime
        self.log.info("saved the trained encoder stages to %s", self.file)


def encode_request(
    encoder: Any,
    request: pb.Request,
    envelope: pb.Envelope,
    state: TrainedState,
    keepalive: Callable[[], None] = lambda: None,
) -> None:
    """Set the vectors of an INDEX, TRAIN, EMBED or QUERY request (vectors the caller gave are
    kept). `keepalive` is called between the encoder's batches: a CNN can take seconds for one."""
    state.refresh()
    max_pixels = getattr(encoder, "max_pixels", None) or DEFAULT_MAX_PIXELS
    kind = request.WhichOneof("body")
    if kind == "search":
        search = request.search
        if not search.HasField("embedding"):
            item = _item(encoder, search.query, "the query", max_pixels)
            array_to_nd(encoder.encode([item]), search.embedding)
            _drop_content(encoder, search.query)
        return
    body = getattr(request, kind)
    if body.HasField("embeddings"):
        return
    training = kind == "train" and getattr(encoder, "trainable", False)
    # A trainable chain learns from its first stage's vectors of the documents.
    encode = encoder.encoder.encode if training else encoder.encode
    parts, errors = _encode_docs(encode, encoder, body.docs, max_pixels, keepalive, fail_fast=kind == "embed")
    if errors and kind == "embed":
        raise WireError(errors[0].reason)
    if errors:
        refused = {e.position for e in errors}
        kept = [_copy(d) for i, d in enumerate(body.docs) if i not in refused]
        del body.docs[:]
        body.docs.extend(kept)
        envelope.doc_errors.extend(errors)
    if not parts:  # every document refused (they are named in doc_errors), or a TRAIN with none
        vectors = np.zeros((0, encoder.dim), np.float32)
    elif training:
        vectors = encoder.fit_vectors(np.concatenate(parts))
        state.save()
    else:
        vectors = np.concatenate(parts)
    array_to_nd(vectors, body.embeddings)
    for doc in body.docs:
        _drop_content(encoder, doc)


def _encode_docs(
    encode: Callable[[list[Any]], np.ndarray],
    encoder: Any,
    docs: Any,
    max_pixels: int,
    keepalive: Callable[[], None],
    fail_fast: bool,
) -> tuple[list[np.ndarray], list[pb.DocError]]:
    """The vectors of the usable documents, a batch at a time (the encoder's batch size, or its
    first stage's), and the refused ones. Images are decoded batch by batch, so a request holds
    at most one batch of decoded pixels; `keepalive()` runs after each batch."""
    size = getattr(getattr(encoder, "encoder", encoder), "batch_size", None) or len(docs) or 1
    parts: list[np.ndarray] = []
    errors: list[pb.DocError] = []
    batch: list[Any] = []
    for i, doc in enumerate(docs):
        try:
            batch.append(_item(encoder, doc, doc_name(i, doc), max_pixels))
        except (ImageError, WireError) as exc:
            errors.append(pb.DocError(doc_id=doc.doc_id, position=i, reason=str(exc)))
            if fail_fast:
                return parts, errors
        if len(batch) == size:
            parts.append(encode(batch))
            batch = []
            keepalive()
    if batch:
        parts.append(encode(batch))
        keepalive()
    return parts, errors


def _item(encoder: Any, doc: pb.Document, name: str, max_pixels: int) -> Any:
    if getattr(encoder, "input_kind", "text") == "image":
        return doc_image(doc, name, max_pixels)
    text = doc_text(doc).strip()
    if not text:
        raise WireError(f"{name} has no text to encode")
    return text


def _drop_content(encoder: Any, doc: pb.Document) -> None:
    """An image's pixels are not stored by the shards (its vector is): they travel no further."""
    if getattr(encoder, "input_kind", "text") == "image" and doc.WhichOneof("raw_data") in ("raw_image", "raw_bytes"):
        doc.ClearField("raw_data")
        if doc.doc_type == pb.Document.UNKNOWN:
            doc.doc_type = pb.Document.IMAGE


def _copy(doc: pb.Document) -> pb.Document:
    copy = pb.Document()
    copy.CopyFrom(doc)
    return copy


def report_doc_errors(response: pb.Response, errors: Any) -> None:
    """Put the documents the encoder refused into the answer: named in doc_errors and in
    `error`, next to the count of those stored. The status stays what the shards said."""
    kind = response.WhichOneof("body")
    if kind in ("index", "train"):
        getattr(response, kind).doc_errors.extend(errors)
    summary = f"{len(errors)} document(s) refused: " + "; ".join(e.reason for e in errors)
    response.error = f"{response.error}; {summary}" if response.error else summary
