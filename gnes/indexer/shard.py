"""One index shard: a faiss vector index and an LMDB document store kept in step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import BaseIndexer, Hit, check_doc_ids, check_strings, check_top_k, check_vectors, last_occurrence
from .doc_store import LmdbDocStore
from .faiss_index import FaissIndexer

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.faiss"
DOCS_DIR = "docs.lmdb"


class ShardIndexer(BaseIndexer):
    """Vectors go to `vector_index`, texts and metas to `doc_store`, both keyed by doc id.

    Writes go to the store first: it is the step that can fail (disk, map size) and its
    transaction fails as a whole, leaving both parts unchanged. Deletes go to the vectors
    first, so a failure can only leave unreachable documents, never hits without text.
    The store commits durably at once, the vectors on save(); after a crash a deleted
    document's vector may come back, so hits whose document is gone are dropped.
    """

    def __init__(self, vector_index: FaissIndexer, doc_store: LmdbDocStore) -> None:
        super().__init__()
        if not isinstance(vector_index, FaissIndexer):
            raise TypeError(f"vector_index must be a FaissIndexer, got {type(vector_index).__name__}")
        if not isinstance(doc_store, LmdbDocStore):
            raise TypeError(f"doc_store must be an LmdbDocStore, got {type(doc_store).__name__}")
        self.vector_index = vector_index
        self.doc_store = doc_store
        self.data_dir: Path | None = None

    @property
    def metric(self) -> str:
        return self.vector_index.metric

    @property
    def dim(self) -> int:
        return self.vector_index.dim

    def start(self, data_dir: Path | None = None) -> None:
        if self._started:
            return
        data_dir = Path(data_dir) if data_dir is not None else None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        self.vector_index.start(data_dir / VECTORS_FILE if data_dir is not None else None)
        try:
            self.doc_store.start(data_dir / DOCS_DIR if data_dir is not None else None)
        except BaseException:
            self.vector_index.close()  # nothing changed, so this writes nothing
            raise
        self.data_dir = data_dir
        vectors, docs = self.vector_index.ntotal, self.doc_store.count()
        if vectors != docs:
            log.warning("shard %s holds %d vectors but %d documents (a crash before save?)", data_dir, vectors, docs)
        super().start()

    def add(
        self, doc_ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str], metas: Sequence[str] | None = None
    ) -> int:
        self._require_started()
        ids = check_doc_ids(doc_ids)
        vectors = check_vectors(vectors, self.dim)
        if len(vectors) != len(ids):
            raise ValueError(f"got {len(ids)} doc ids but {len(vectors)} vectors")
        text_list = check_strings(texts, len(ids), "texts")
        meta_list = [""] * len(ids) if metas is None else check_strings(metas, len(ids), "metas")
        if len(ids) == 0:
            return 0
        keep = last_occurrence(ids)
        if len(keep) < len(ids):
            ids, vectors = ids[keep], vectors[keep]
            text_list = [text_list[i] for i in keep]
            meta_list = [meta_list[i] for i in keep]
        self.doc_store.put_many(ids, text_list, meta_list)
        return self.vector_index.add(ids, vectors)

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Hit]]:
        self._require_started()
        queries = check_vectors(queries, self.dim, "queries")
        scores, labels = self.vector_index.search(queries, check_top_k(top_k))
        found = np.unique(labels[labels >= 0])  # faiss pads missing results with -1
        docs = dict(zip(found.tolist(), self.doc_store.get_many(found), strict=True))
        results: list[list[Hit]] = []
        for row_scores, row_labels in zip(scores.tolist(), labels.tolist(), strict=True):
            hits = []
            for score, doc_id in zip(row_scores, row_labels, strict=True):
                doc = docs.get(doc_id)
                if doc is not None:
                    hits.append(Hit(doc_id, score, doc[0], doc[1]))
            results.append(hits)
        return results

    def delete(self, doc_ids: np.ndarray | Sequence[int]) -> int:
        self._require_started()
        ids = check_doc_ids(doc_ids)
        removed = self.vector_index.remove(ids)
        self.doc_store.delete_many(ids)
        return removed

    def count(self) -> int:
        self._require_started()
        return self.vector_index.ntotal

    def save(self) -> None:
        self.vector_index.save()
        self.doc_store.save()

    def close(self) -> None:
        try:
            self.vector_index.close()
        finally:
            self.doc_store.close()
            super().close()
