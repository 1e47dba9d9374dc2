"""Encoding documents that a preprocessor split into chunks (gnes/preprocessor/).

Every chunk gets its own vector in `chunk.embedding`; the request still carries one row per
document in `embeddings`, so everything downstream of the encoder that knows only documents
keeps working. A text document's row is its own text encoded (what the model reads of it:
the first max_seq_length tokens), a document without text (image, frames) gets the mean of
its chunk vectors, L2-normalised where the chunk vectors are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..indexer.chunks import check_chunk_docs
from ..proto import WireError, array_to_nd, doc_text, nd_to_array, pb
from .base import BaseEncoder

Body = pb.Request.IndexRequest | pb.Request.TrainRequest | pb.Request.EmbedRequest


def has_chunks(body: Body) -> bool:
    return any(doc.chunks for doc in body.docs)


def encode_chunked(encoder: BaseEncoder, body: Body) -> bool:
    """Encode the chunks and documents of `body` if any document has chunks; False leaves the
    request to the plain document path."""
    if body.HasField("embeddings") or not has_chunks(body):
        return False
    check_chunk_docs(body.docs, need_vectors=False)
    takes = getattr(encoder, "input_kind", "text")
    items: list[Any] = []
    for i, doc in enumerate(body.docs):
        for chunk in doc.chunks:
            items.append(_chunk_input(chunk, takes, i, doc.doc_id))
    chunk_vectors = encoder.encode(items)
    row = 0
    doc_vectors = np.zeros((len(body.docs), encoder.dim), dtype=np.float32)
    texts: dict[int, str] = {}
    for i, doc in enumerate(body.docs):
        mine = chunk_vectors[row : row + len(doc.chunks)]
        for chunk, vector in zip(doc.chunks, mine, strict=True):
            array_to_nd(vector, chunk.embedding)
        row += len(doc.chunks)
        text = _own_text(doc) if takes == "text" else ""
        if text:
            texts[i] = text
        elif len(mine):
            doc_vectors[i] = _mean(mine)
        else:
            raise WireError(f"document {i} (doc_id {doc.doc_id}) has neither chunks nor text to encode")
    if texts:
        doc_vectors[list(texts)] = encoder.encode(list(texts.values()))
    array_to_nd(doc_vectors, body.embeddings)
    if takes != "text":
        for doc in body.docs:
            _drop_pixels(doc)
    return True


def _drop_pixels(doc: pb.Document) -> None:
    """Pixels are not stored by the shards (the vectors are): they travel no further."""
    for chunk in doc.chunks:
        if chunk.WhichOneof("content") == "blob":
            chunk.ClearField("blob")
    kind = doc.WhichOneof("raw_data")
    if kind in ("raw_image", "raw_video", "raw_bytes"):
        doc.ClearField(kind)
        if doc.doc_type == pb.Document.UNKNOWN:
            doc.doc_type = pb.Document.VIDEO if kind == "raw_video" else pb.Document.IMAGE


def _chunk_input(chunk: pb.Chunk, takes: str, i: int, doc_id: int) -> Any:
    content = chunk.WhichOneof("content")
    where = f"document {i} (doc_id {doc_id}) chunk {chunk.offset}"
    if takes == "text":
        if content != "text" or not chunk.text.strip():
            raise WireError(f"{where} has no text: this encoder takes text chunks")
        return chunk.text.strip()
    if content != "blob":
        raise WireError(f"{where} is not an image blob: this encoder takes (H, W, 3) uint8 image chunks")
    try:
        return nd_to_array(chunk.blob)
    except WireError as exc:
        raise WireError(f"{where}: {exc}") from None


def _own_text(doc: pb.Document) -> str:
    """The document's own text (raw_text, or raw_bytes as UTF-8); not its chunks joined."""
    if doc.WhichOneof("raw_data") not in ("raw_text", "raw_bytes"):
        return ""
    try:
        return doc_text(doc).strip()
    except WireError:
        return ""


def _mean(vectors: np.ndarray) -> np.ndarray:
    mean = vectors.mean(axis=0)
    norms = np.linalg.norm(vectors, axis=1)
    if np.allclose(norms, 1.0, atol=1e-3):  # normalised chunks: a normalised document
        length = float(np.linalg.norm(mean))
        if length > 0:
            mean = mean / length
    return mean
