"""The preprocessor contract: one document in, its chunks (pb.Chunk) out."""

from __future__ import annotations

from ..component import Component, check_int
from ..proto import pb

# Chunk vectors are stored under doc_id << CHUNK_BITS | offset (gnes/indexer/chunks.py): a
# document holds at most 4096 chunks, and a chunked document's id must be below 2**51.
CHUNK_BITS = 12
MAX_CHUNKS = 1 << CHUNK_BITS


class BasePreprocessor(Component):
    """Subclasses implement `_chunks`; `apply` fills `doc.chunks` and checks the result.

    A document that already carries chunks (a caller that chunked it itself) is left as it
    is. `max_chunks` bounds the chunks of one document: text and image splitters refuse a
    document that would need more (with the document named), frame samplers sample down to it.
    """

    def __init__(self, max_chunks: int = 256, chunks_per_message: int = 64) -> None:
        super().__init__()
        self.max_chunks = check_int("max_chunks", max_chunks, minimum=1, maximum=MAX_CHUNKS)
        # An encoder is silent while it encodes one message, and one silent for 10 s is taken
        # for dead (gnes/elastic/link.py): a request is sent on in parts of at most this many
        # chunks (a document with more goes alone), whatever the income proxy's batch size.
        self.chunks_per_message = check_int("chunks_per_message", chunks_per_message, minimum=1)

    def apply(self, doc: pb.Document) -> int:
        """Add the chunks of `doc` to it; returns how many it has."""
        self._require_started()
        if doc.chunks:
            return len(doc.chunks)
        chunks = self._chunks(doc)
        if not chunks:
            raise ValueError(f"document {doc.doc_id} gave no chunks: it is empty")
        if len(chunks) > self.max_chunks:
            raise ValueError(
                f"document {doc.doc_id} would make {len(chunks)} chunks; the limit is max_chunks={self.max_chunks}"
            )
        for offset, chunk in enumerate(chunks):
            chunk.doc_id = doc.doc_id
            chunk.offset = offset
        doc.chunks.extend(chunks)
        return len(chunks)

    def _chunks(self, doc: pb.Document) -> list[pb.Chunk]:
        raise NotImplementedError
