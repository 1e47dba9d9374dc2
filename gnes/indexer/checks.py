"""Input checks every write and search path shares.

Every check runs before anything changes state, so a rejected call leaves the index
exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat

import numpy as np

# faiss labels are int64 and use -1 for "no result"; doc ids therefore live in [0, 2**63).
MAX_DOC_ID = 2**63 - 1


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


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors", keep_float16: bool = False) -> np.ndarray:
    """Return a C-contiguous float32 [n, dim] array, or raise naming the expected shape.
    `keep_float16`: float16 vectors stay float16 (for a store and an index that keep them so)."""
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array [n, {dim}], got shape {array.shape}")
    if array.shape[1] != dim:
        raise ValueError(f"expected {what} of dimension {dim}, got {array.shape[1]}")
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got dtype {array.dtype}")
    half = keep_float16 and array.dtype == np.float16
    array = np.ascontiguousarray(array, dtype=None if half else np.float32)
    if len(array) and not (_all_finite_float16(array) if half else _all_finite(array)):
        raise ValueError(f"{what} contain NaN or infinity")
    return array


def _all_finite(array: np.ndarray) -> bool:
    """Every value finite, read once: a row times zeros is NaN exactly where the row holds a
    NaN or an infinity (0 * inf is NaN, 0 * any finite float is 0, so nothing can overflow).
    BLAS does it in one pass with no temporary; np.isfinite(...).all() wrote a bool per value
    first (5.3 ms against 2.3 ms for 10,000 x 784)."""
    with np.errstate(invalid="ignore"):
        return not np.isnan(array @ np.zeros(array.shape[1], dtype=np.float32)).any()


def _all_finite_float16(array: np.ndarray) -> bool:
    """A float16 is NaN or infinite exactly when its 5 exponent bits are all set."""
    return int((array.view(np.uint16) & np.uint16(0x7C00)).max()) < 0x7C00


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
    if all(map(isinstance, items, repeat(str, len(items)))):  # the common case, at C speed
        return items
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
