"""float16 vectors for a float16 store and a faiss SQfp16 index: stored as they came and given
to faiss as its codes (no float32 round trip), on write and on a rebuild from the store."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import SNAPSHOT_FILE, LogicalIndex

DIM = 32


def _vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float16)


def _codes(index: LogicalIndex) -> np.ndarray:
    """The SQfp16 index's codes as float16 rows, in slot order."""
    inner = faiss.downcast_index(faiss.downcast_index(index.vectors.main).index)
    return faiss.vector_to_array(inner.codes).view(np.float16).reshape(-1, DIM)


def _reference(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """What plain faiss SQfp16 finds for the same float16 values (given as float32)."""
    ref = faiss.IndexScalarQuantizer(DIM, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_L2)
    ref.add(vectors.astype(np.float32))
    scores, rows = ref.search(queries.astype(np.float32), k)
    return np.sqrt(np.maximum(scores, 0)), rows


def _config(**extra: object) -> IndexConfig:
    return IndexConfig(dim=DIM, metric="l2", faiss_factory="SQfp16", store_dtype="float16", **extra)


@pytest.mark.parametrize("batch", [50, 3000])  # vectors kept in LMDB, and in the segment file
def test_float16_rows_are_the_index_codes_and_search_like_faiss(tmp_path: Path, batch: int) -> None:
    vectors = _vectors(6000, seed=0)
    index = LogicalIndex.create("half", _config(), tmp_path / "half")
    try:
        assert index.vectors.takes_float16
        # Checked and kept as float16 (a float32 store converts them, as before).
        assert index._check_batch(np.arange(3), vectors[:3], None, None)[1].dtype == np.float16
        for start in range(0, len(vectors), batch):
            index.add(np.arange(start, start + batch) + 1000, vectors[start : start + batch])
        # The codes are the very bytes given: nothing was converted on the way in.
        assert _codes(index).tobytes() == vectors.tobytes()
        queries = vectors[[3, 4000, 5999]]
        ref_scores, ref_rows = _reference(vectors, queries, 5)
        hits = index.search(queries.astype(np.float32), 5)
        assert [[h.doc_id for h in row] for row in hits] == (ref_rows + 1000).tolist()
        np.testing.assert_allclose([[h.score for h in row] for row in hits], ref_scores, rtol=1e-5, atol=1e-5)
    finally:
        index.close()


def test_a_rebuild_from_the_store_gives_the_same_codes_and_answers(tmp_path: Path) -> None:
    vectors = _vectors(5000, seed=1)
    index = LogicalIndex.create("half", _config(), tmp_path / "half")
    index.add(np.arange(5000), vectors)
    index.add(np.array([7, 4999]), _vectors(2, seed=2))  # updates: the store keeps the last
    index.delete(np.array([8]))
    queries = vectors[[1, 2500]].astype(np.float32)
    before = [[(h.doc_id, h.score) for h in row] for row in index.search(queries, 10)]
    index.close()
    (tmp_path / "half" / SNAPSHOT_FILE).unlink(missing_ok=True)  # so the reopen rebuilds from the store
    reopened = LogicalIndex.open("half", tmp_path / "half")
    try:
        assert reopened.rebuilt == 4999 and reopened.vectors.takes_float16
        assert [[(h.doc_id, h.score) for h in row] for row in reopened.search(queries, 10)] == before
        stored, found = reopened.store.get_vectors(np.arange(5000))
        assert not found[8] and found.sum() == 4999
        # Every code is a stored row, unconverted (the rebuild reads the float16 rows as they are).
        codes = _codes(reopened)
        assert sorted(map(bytes, codes)) == sorted(map(bytes, stored[found].astype(np.float16)))
    finally:
        reopened.close()


def test_float32_input_and_other_index_types_still_take_float16_stores(tmp_path: Path) -> None:
    data = _vectors(3000, seed=3)
    for name, config in (
        ("sq-f32-input", _config()),
        ("hnsw", IndexConfig(dim=DIM, metric="l2", index_type="hnsw_sq", store_dtype="float16")),
    ):
        index = LogicalIndex.create(name, config, tmp_path / name)
        try:
            given = data.astype(np.float32) if name == "sq-f32-input" else data
            index.add(np.arange(len(data)), given)
            hits = index.search(data[[10, 20]].astype(np.float32), 1)
            assert [row[0].doc_id for row in hits] == [10, 20], name
        finally:
            index.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float16_values_are_refused_and_nothing_is_written(tmp_path: Path, bad: float) -> None:
    index = LogicalIndex.create("half", _config(), tmp_path / "half")
    try:
        index.add(np.arange(10), _vectors(10, seed=4))
        vectors = _vectors(2000, seed=5)
        vectors[1999, DIM - 1] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            index.add(np.arange(100, 2100), vectors)
        assert len(index.vectors) == index.store.count() == 10
        vectors[1999, DIM - 1] = 65504  # the largest finite float16 passes
        index.add(np.arange(100, 2100), vectors)
        assert len(index.vectors) == 2010
    finally:
        index.close()
