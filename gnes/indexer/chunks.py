"""The chunk vectors of one logical index, and how they are written, moved and deleted.

Storage: a logical index of their own (same configuration: dimension, metric, faiss type)
in `<index dir>/chunks/`, created with the first chunk, so an index without chunks costs
nothing. A chunk is stored under the key `doc_id << 12 | offset`: its document and its
offset are read back from the key, faiss finds chunks by key, and all chunks of a document
are found from the document id alone. Hence a chunked document's id is below 2**51 and it
has at most 4096 chunks (gnes/preprocessor/base.py). The chunk's text (text chunks), its
offset_nd and weight are kept as the stored text and metadata of its key.

Every write of a document replaces its chunks (a document indexed again without chunks has
none left); deleting a document deletes its chunks. Chunks live on the shard that owns
their document: they travel inside it (Document.chunks) through the middleman, and a
handover carries them with it (`attach_chunks` / `write_chunks`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..preprocessor.base import CHUNK_BITS, MAX_CHUNKS
from ..proto import WireError, array_to_nd, nd_to_array, pb
from .config import IndexConfig

log = logging.getLogger(__name__)
CHUNKS_DIR = "chunks"
MAX_CHUNKED_DOC_ID = (1 << (63 - CHUNK_BITS)) - 1
_OFFSET_MASK = MAX_CHUNKS - 1


def chunk_keys(doc_id: int, count: int) -> np.ndarray:
    return (np.int64(doc_id) << CHUNK_BITS) + np.arange(count, dtype=np.int64)


def key_doc(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) >> CHUNK_BITS


def key_offset(keys: np.ndarray) -> np.ndarray:
    return np.asarray(keys, dtype=np.int64) & _OFFSET_MASK


class ChunkIndex:
    """Owned by a LogicalIndex (its `chunks`); `index` is None until a chunk is written."""

    def __init__(self, name: str, config: IndexConfig, directory: Path | None) -> None:
        self.name = f"{name}/{CHUNKS_DIR}"
        self.config = config
        self.directory = directory / CHUNKS_DIR if directory is not None else None
        self.index: Any = None  # a LogicalIndex
        self._counts: dict[int, int] = {}  # doc id -> 1 + its highest chunk offset
        if self.directory is not None and self.directory.exists():
            from .logical import CONFIG_FILE, LogicalIndex

            if (self.directory / CONFIG_FILE).exists():
                self.index = LogicalIndex.open(self.name, self.directory)
                self._recount(self.index.store.ids())

    def _recount(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        docs, offsets = key_doc(keys), key_offset(keys)
        order = np.argsort(docs, kind="stable")
        docs, offsets = docs[order], offsets[order]
        starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        highest = np.maximum.reduceat(offsets, starts)
        self._counts.update(zip(docs[starts].tolist(), (highest + 1).tolist(), strict=True))

    def _open(self) -> Any:
        if self.index is None:
            from .logical import LogicalIndex

            self.index = LogicalIndex.create(self.name, self.config, self.directory)
        return self.index

    def __len__(self) -> int:
        return 0 if self.index is None else self.index.count()

    def docs_with_chunks(self) -> int:
        return len(self._counts)

    def has(self, doc_id: int) -> bool:
        return doc_id in self._counts

    def keys_of(self, doc_ids: np.ndarray | list[int]) -> np.ndarray:
        parts = [chunk_keys(d, self._counts[d]) for d in np.asarray(doc_ids).tolist() if d in self._counts]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    # ---- writes ------------------------------------------------------------------------
    def replace(self, doc_ids: list[int], chunks: list[list[pb.Chunk]]) -> int:
        """The chunks of each document become exactly `chunks[i]`; returns the chunks written."""
        self.remove_docs(doc_ids)
        keys: list[int] = []
        vectors: list[np.ndarray] = []
        texts: list[str] = []
        metas: list[str] = []
        counts: dict[int, int] = {}
        for doc_id, doc_chunks in zip(doc_ids, chunks, strict=True):
            for chunk in doc_chunks:
                keys.append((doc_id << CHUNK_BITS) | chunk.offset)
                vectors.append(nd_to_array(chunk.embedding).reshape(-1))
                texts.append(chunk.text if chunk.WhichOneof("content") == "text" else "")
                metas.append(json.dumps({"offset_nd": list(chunk.offset_nd), "weight": chunk.weight}))
                counts[doc_id] = max(counts.get(doc_id, 0), chunk.offset + 1)
        if not keys:
            return 0
        self._open().add(np.asarray(keys, dtype=np.int64), np.stack(vectors), texts, metas)
        self._counts.update(counts)
        return len(keys)

    def remove_docs(self, doc_ids: np.ndarray | list[int]) -> int:
        if not self._counts:
            return 0
        keys = self.keys_of(doc_ids)
        if not len(keys):
            return 0
        removed = self.index.delete(keys)
        for doc_id in np.asarray(doc_ids).tolist():
            self._counts.pop(doc_id, None)
        return removed

    # ---- the owner's lifecycle ---------------------------------------------------------
    def poll(self) -> None:
        if self.index is not None:
            self.index.poll()

    def save(self) -> None:
        if self.index is not None:
            self.index.save()

    def close(self, save: bool = True) -> None:
        if self.index is not None:
            self.index.close(save=save)
            self.index = None
        self._counts.clear()


def check_chunk_docs(docs: Sequence[pb.Document], need_vectors: bool = True) -> None:
    """Refuse chunks that cannot be stored, naming the document. The encoder checks before it
    encodes, so a pipeline's request is refused before anything is written; the shard checks
    again for direct clients (their documents are stored, their chunks refused)."""
    for i, doc in enumerate(docs):
        if not doc.chunks:
            continue
        where = f"document {i} (doc_id {doc.doc_id})"
        if doc.doc_id > MAX_CHUNKED_DOC_ID:
            raise WireError(f"{where}: a document with chunks needs a doc_id below 2**{63 - CHUNK_BITS}")
        if len(doc.chunks) > MAX_CHUNKS:
            raise WireError(f"{where} has {len(doc.chunks)} chunks; at most {MAX_CHUNKS} are stored")
        for chunk in doc.chunks:
            if chunk.offset >= MAX_CHUNKS:
                raise WireError(f"{where}: chunk offset {chunk.offset} is not below {MAX_CHUNKS}")
            if need_vectors and not chunk.HasField("embedding"):
                raise WireError(f"{where}: chunk {chunk.offset} reached the indexer without a vector")


def write_chunks(index: Any, body: pb.Request.IndexRequest, has_chunks: bool | None = None) -> int:
    """After the documents of `body` were stored in `index`: store their chunks (replacing any
    they had). Cheap for documents without chunks in an index that never had any; free when the
    caller already knows that none of them has chunks (`has_chunks` False)."""
    chunks: ChunkIndex = index.chunks
    # One pass over the documents: a bulk load of bare documents pays ~1 us per document here.
    chunked = [doc for doc in body.docs if doc.chunks] if has_chunks or has_chunks is None else []
    if not chunked and not chunks.docs_with_chunks():
        return 0
    if chunked:
        check_chunk_docs(chunked)
    return chunks.replace([doc.doc_id for doc in body.docs], [list(doc.chunks) for doc in body.docs])


def attach_chunks(index: Any, request: pb.Request) -> None:
    """A handover batch: add to each document its stored chunks (vector, text, offsets, weight)."""
    chunks: ChunkIndex = index.chunks
    if not chunks.docs_with_chunks():
        return
    for doc in request.index.docs:
        keys = chunks.keys_of([doc.doc_id])
        if not len(keys):
            continue
        vectors, found = chunks.index.store.get_vectors(keys)
        stored = chunks.index.get(keys)
        for key, vector, ok, item in zip(keys.tolist(), vectors, found, stored, strict=True):
            if not ok or item is None:
                continue
            text, meta_json = item
            meta = json.loads(meta_json) if meta_json else {}
            chunk = doc.chunks.add(doc_id=doc.doc_id, offset=key & _OFFSET_MASK, weight=meta.get("weight", 0.0))
            if text:
                chunk.text = text
            chunk.offset_nd.extend(meta.get("offset_nd", []))
            array_to_nd(np.asarray(vector, dtype=np.float32), chunk.embedding)
