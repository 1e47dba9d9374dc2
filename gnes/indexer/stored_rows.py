"""Vectors searched where the store wrote them: the rows of a float32 segment file.

A flat faiss index is a copy of its vectors in anonymous memory. For the rows of a bulk
write, that copy is redundant: the segment file (gnes/indexer/segment.py) already holds
them, in the page cache and on disk. So a flat index keeps those rows here, as a map of row
number -> doc id over the file's own pages, and scores them with faiss's brute-force kernels
(`knn_L2sqr` / `knn_inner_product`, the ones IndexFlat.search calls) straight on the mapping.
A bulk load then writes each vector once; a restart re-reads only the id -> row map, not the
vectors; and the shard's memory holds the vectors once (as file pages) instead of twice.

Rows of replaced or deleted ids stay in the file: they are dropped from the map and left
out of every search by a bitmap selector, built only while there are such holes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


class StoredRows:
    """Doc ids of segment rows, and the search over them. Owned by one VectorIndex."""

    def __init__(self, faiss: Any, view: Callable[[], np.ndarray], metric: str, dim: int) -> None:
        self.faiss = faiss
        self._view = view  # the committed rows, float32 [rows, dim]: the file's own pages
        self._ip = metric == "ip"
        self.dim = dim
        self._row_ids = np.full(0, -1, dtype=np.int64)  # row -> doc id; -1: not (or no longer) here
        self._id_row: dict[int, int] = {}
        self._end = 0  # one past the highest row ever taken: what a search scans
        self._bitmap: np.ndarray | None = None  # packed live rows, cached until the rows change

    def __len__(self) -> int:
        return len(self._id_row)

    def ids(self) -> np.ndarray:
        return np.fromiter(self._id_row, dtype=np.int64, count=len(self._id_row))

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        get = self._id_row.get
        return np.asarray([r for r in (get(int(i)) for i in ids) if r is not None], dtype=np.int64)

    def renumber(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Every id at a new row (the store compacted the file): the old map is dropped whole."""
        self._row_ids = np.full(0, -1, dtype=np.int64)
        self._id_row, self._end, self._bitmap = {}, 0, None
        self.add(ids, rows)

    def add(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Take committed rows for ids that are in no part of the index (the owner removed them)."""
        if len(ids) == 0:
            return
        end = int(rows.max()) + 1
        if end > len(self._row_ids):
            grown = np.full(max(end, 2 * len(self._row_ids)), -1, dtype=np.int64)
            grown[: len(self._row_ids)] = self._row_ids
            self._row_ids = grown
        self._row_ids[rows] = ids
        self._end = max(self._end, end)
        self._id_row.update(zip(ids.tolist(), rows.tolist(), strict=True))
        self._bitmap = None

    def remove(self, ids: np.ndarray) -> int:
        pop = self._id_row.pop
        rows = [r for r in map(pop, np.asarray(ids).tolist(), [None] * len(ids)) if r is not None]
        if rows:
            self._row_ids[np.asarray(rows, dtype=np.int64)] = -1
            self._bitmap = None
        return len(rows)

    def search(
        self, queries: np.ndarray, k: int, allowed_ids: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(faiss scores [q, k], doc ids [q, k] padded with -1): squared L2 distances or inner
        products, as the flat index's own search gives them; `allowed_ids`: a filter's ids."""
        q = len(queries)
        if not self._id_row or k <= 0:
            return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
        end = self._end
        rows = self._view()[:end]
        selector, keep = self._selector(end, allowed_ids)
        k = min(k, len(self._id_row) if allowed_ids is None else len(allowed_ids))
        if k == 0:
            return np.zeros((q, 0), np.float32), np.zeros((q, 0), np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores = np.empty((q, k), dtype=np.float32)
        found = np.empty((q, k), dtype=np.int64)
        ptr = self.faiss.swig_ptr
        if self._ip:
            self.faiss.knn_inner_product(
                ptr(queries), ptr(rows), self.dim, q, end, k, ptr(scores), ptr(found), selector
            )
        else:
            self.faiss.knn_L2sqr(ptr(queries), ptr(rows), self.dim, q, end, k, ptr(scores), ptr(found), None, selector)
        del keep  # the bitmap the selector points into lives until the search is done
        ids = np.where(found >= 0, self._row_ids[np.maximum(found, 0)], -1)
        return scores, ids

    def _selector(self, end: int, allowed_ids: np.ndarray | None) -> tuple[Any, np.ndarray | None]:
        """A bitmap selector over rows [0, end): the live rows (those a filter allows, with
        one); None when every row is live and nothing is filtered."""
        if allowed_ids is not None:
            live = np.zeros(end, dtype=bool)
            rows = self.rows_of(allowed_ids)
            live[rows[rows < end]] = True
            bitmap = np.packbits(live, bitorder="little")
        else:
            if len(self._id_row) == end:  # rows 0..end-1 all hold a live id: no holes
                return None, None
            if self._bitmap is None:
                self._bitmap = np.packbits(self._row_ids[:end] >= 0, bitorder="little")
            bitmap = self._bitmap
        return self.faiss.IDSelectorBitmap(len(bitmap), self.faiss.swig_ptr(bitmap)), bitmap
