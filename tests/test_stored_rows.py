"""A flat index searches the rows of bulk writes in the segment file (gnes/indexer/stored_rows.py).

Real LMDB, real files, real faiss. Every search is checked against a plain faiss IndexFlat
holding what should be live, so the in-place rows, the faiss part for small writes, their
merge, the holes left by updates and deletes, filters and a reopen all answer alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex

DIM = 32
BIG = 9_000  # rows of DIM float32: 1.15 MB, a write that goes to the segment file
SMALL = 50  # a write whose vectors stay in LMDB and go to faiss


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)


def expected(live: dict[int, np.ndarray], queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter(live, dtype=np.int64, count=len(live))
    flat = faiss.IndexFlat(DIM, faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)
    flat.add(np.stack([live[i] for i in ids.tolist()]))
    scores, rows = flat.search(queries, k)
    if metric == "l2":
        scores = np.sqrt(np.maximum(scores, 0))
    return scores, ids[rows]


def check_same(index: LogicalIndex, live: dict[int, np.ndarray], queries: np.ndarray, k: int = 10) -> None:
    scores, ids = index.vectors.search(queries, k)
    want_scores, want_ids = expected(live, queries, k, index.config.metric)
    # atol: a self-match is 0 or sqrt of a rounding error (BLAS computes |q|^2 - 2qx + |x|^2)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=5e-3)
    # Ties aside, the same neighbours: compare the id sets row by row.
    for got, want in zip(ids.tolist(), want_ids.tolist(), strict=True):
        assert len(set(got) & set(want)) >= k - 1, (got, want)


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_bulk_rows_are_searched_in_place_with_updates_deletes_and_small_writes(tmp_path: Path, metric: str) -> None:
    index = LogicalIndex.create("rows", IndexConfig(dim=DIM, metric=metric), tmp_path / "rows")
    try:
        first, second = vectors(BIG, 1), vectors(BIG, 2)
        index.add(np.arange(BIG), first)
        index.add(np.arange(BIG, 2 * BIG), second)
        assert index.vectors.stored is not None and len(index.vectors.stored) == 2 * BIG
        assert index.vectors.active.ntotal == 0, "bulk rows must not be copied into faiss"
        live = {i: v for i, v in enumerate(np.concatenate([first, second]))}
        queries = vectors(40, 3)
        check_same(index, live, queries)

        small = vectors(SMALL, 4)  # replaces ids 100..149 through faiss: their rows become holes
        index.add(np.arange(100, 100 + SMALL), small)
        live.update({100 + i: v for i, v in enumerate(small)})
        replaced = vectors(BIG, 5)  # a bulk rewrite of ids that faiss held and of rows in the file
        index.add(np.arange(120, 120 + BIG), replaced)
        live.update({120 + i: v for i, v in enumerate(replaced)})
        index.delete(np.arange(0, 30))
        for i in range(30):
            live.pop(i)
        assert index.count() == len(live)
        check_same(index, live, np.concatenate([queries, small[:5], replaced[:5]]))
        hits = index.search(small[:3], top_k=1)
        assert [h[0].doc_id for h in hits] == [100, 101, 102]
        hits = index.search(replaced[:2], top_k=1)
        assert [h[0].doc_id for h in hits] == [120, 121]
    finally:
        index.close()


def test_filters_reach_stored_rows(tmp_path: Path) -> None:
    index = LogicalIndex.create("f", IndexConfig(dim=DIM, metric="l2"), tmp_path / "f")
    try:
        data = vectors(BIG, 6)
        metas = [json.dumps({"part": i % 3}) for i in range(BIG)]
        index.add(np.arange(BIG), data, metas=metas)
        assert index.vectors.active.ntotal == 0
        hits = index.search(data[:20], top_k=5, filter_field="part", filter_value_json="1")
        for row, found in enumerate(hits):
            assert len(found) == 5 and all(h.doc_id % 3 == 1 for h in found)
            live = {i: data[i] for i in range(1, BIG, 3)}
            _, want = expected(live, data[row : row + 1], 5, "l2")
            assert [h.doc_id for h in found] == want[0].tolist()
    finally:
        index.close()


@pytest.mark.parametrize("with_snapshot", [False, True])
def test_a_reopened_index_maps_its_rows_back_without_copying_them(tmp_path: Path, with_snapshot: bool) -> None:
    config = IndexConfig(dim=DIM, metric="l2")
    index = LogicalIndex.create("re", config, tmp_path / "re")
    first, small, late = vectors(BIG, 7), vectors(SMALL, 8), vectors(BIG, 9)
    index.add(np.arange(BIG), first)
    index.add(np.arange(10, 10 + SMALL), small)  # faiss part
    if with_snapshot:
        index.save()
    index.add(np.arange(5000, 5000 + BIG), late)  # after the snapshot: replayed from the log
    index.delete(np.arange(0, 5))
    index.close(save=False)  # the files as a kill -9 leaves them
    live = {i: first[i] for i in range(5, BIG)}
    live.update({10 + i: v for i, v in enumerate(small)})
    live.update({5000 + i: v for i, v in enumerate(late)})

    reopened = LogicalIndex.open("re", tmp_path / "re")
    try:
        assert reopened.count() == len(live)
        assert reopened.vectors.active.ntotal == SMALL, "only the small write's vectors are in faiss"
        if with_snapshot:
            assert reopened.rebuilt == 0 and reopened.replayed == BIG + 5
        check_same(reopened, live, np.concatenate([vectors(20, 10), small[:5], late[:5]]))
    finally:
        reopened.close()


def test_float16_stores_keep_every_vector_in_faiss(tmp_path: Path) -> None:
    """Half-precision rows cannot be scored in place: the faiss copy stays, and answers."""
    index = LogicalIndex.create("h", IndexConfig(dim=DIM, metric="l2", store_dtype="float16"), tmp_path / "h")
    try:
        data = vectors(BIG, 11)
        index.add(np.arange(BIG), data)
        assert index.vectors.stored is None and index.vectors.active.ntotal == BIG
        assert [h[0].doc_id for h in index.search(data[:3], top_k=1)] == [0, 1, 2]
    finally:
        index.close()
