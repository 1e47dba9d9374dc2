"""The indexer contract, the `Hit` it returns, and the input checks all indexers share.

Every check runs before an indexer changes any state, so a rejected call leaves the
index exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..component import Component

# faiss labels are int64 and use -1 for "no result"; doc ids therefore live in [0, 2**63).
MAX_DOC_ID = 2**63 - 1


@dataclass(slots=True)
class Hit:
    doc_id: int
    score: float
    text: str
    meta_json: str = ""


class BaseIndexer(Component):
    """Stores (doc_id, vector, text, meta_json) and returns the top-k documents per query.

    Scores follow `metric`: "ip" is an inner product (bigger is more similar), "l2" is the
    Euclidean distance (smaller is more similar); `is_big_score_similar` says which.
    """

    def start(self, data_dir: Path | None = None) -> None:
        """Open the index: in memory only when `data_dir` is None, else load or create it there."""
        super().start()

    @property
    def metric(self) -> str:
        raise NotImplementedError

    @property
    def is_big_score_similar(self) -> bool:
        return self.metric == "ip"

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def add(
        self, doc_ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str], metas: Sequence[str] | None = None
    ) -> int:
        """Store the documents, replacing any with the same id; return how many were stored."""
        raise NotImplementedError

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Hit]]:
        """Return, per query row, up to `top_k` hits sorted best first."""
        raise NotImplementedError

    def delete(self, doc_ids: np.ndarray | Sequence[int]) -> int:
        """Remove the documents with these ids; return how many existed."""
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def save(self) -> None:
        """Persist to the data dir; nothing to do when in memory."""
        raise NotImplementedError


def check_doc_ids(doc_ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """Return the ids as a 1-D int64 array, or raise saying what is wrong with them."""
    ids = np.asarray(doc_ids)
    if ids.ndim != 1:
        raise ValueError(f"doc ids must be a 1-D array, got shape {ids.shape}")
    if ids.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"doc ids must be integers, got dtype {ids.dtype}")
    # Compare before casting: a uint64 id >= 2**63 would wrap to a negative int64.
    if ids.dtype.kind == "u":
        if int(ids.max()) > MAX_DOC_ID:
            raise ValueError(f"doc ids must be below 2**63, got {int(ids.max())}")
    elif int(ids.min()) < 0:
        raise ValueError(f"doc ids must not be negative, got {int(ids.min())}")
    return ids.astype(np.int64, copy=False)


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    """Return a C-contiguous float32 [n, dim] array, or raise naming the expected shape."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, {dim}], got shape {array.shape}")
    if array.shape[1] != dim:
        raise ValueError(f"expected {what} of dimension {dim}, got {array.shape[1]}")
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{what} contain NaN or infinity")
    return array


def check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    return int(top_k)


def check_strings(values: Sequence[str], expected: int, what: str) -> list[str]:
    """Return `values` as a list of `expected` strings, or raise naming the first bad item."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    items = list(values)
    if len(items) != expected:
        raise ValueError(f"got {expected} doc ids but {len(items)} {what}")
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"{what} item {position} is a {type(item).__name__}, expected str")
    return items


def last_occurrence(ids: np.ndarray) -> np.ndarray:
    """Positions that keep only the last occurrence of each id, in their original order.

    Re-adding an id replaces it, so within one batch the later row wins, like two adds.
    """
    reversed_ids = ids[::-1]
    _, first_in_reversed = np.unique(reversed_ids, return_index=True)
    return np.sort(len(ids) - 1 - first_in_reversed)
