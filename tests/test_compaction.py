"""Segment compaction: the rows of replaced and deleted ids are reclaimed, every id keeps its
vector and every search its answer, through reopening, a kill -9 in the middle, and the shards'
admin command."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gnes.cli.main import main as gnes_main
from gnes.client import IndexClient
from gnes.cluster.local_shards import LocalShards
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import SNAPSHOT_FILE, LogicalIndex
from tests.compaction_kill import kill_9_while_compacting

DIM = 64
BULK = 9000  # 9000 x 64 float16 = 1.1 MiB: a write that goes to the segment file, float16 or float32


def _vectors(n: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(dtype)


def _answers(index: LogicalIndex, queries: np.ndarray) -> list[list[tuple[int, float]]]:
    return [[(h.doc_id, round(h.score, 4)) for h in row] for row in index.search(queries, 10)]


def _segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in (directory / "store").glob("vectors-*.seg"))


def _fill(index: LogicalIndex, dtype: Any = np.float32) -> dict[int, np.ndarray]:
    """Three bulk writes, one of them replacing the first's ids, a small write, and deletes:
    what each id should hold afterwards."""
    expected: dict[int, np.ndarray] = {}
    for first, seed in ((0, 1), (BULK, 2), (0, 3)):  # the third replaces ids 0..BULK-1
        vectors = _vectors(BULK, seed, dtype)
        ids = np.arange(first, first + BULK)
        index.add(ids, vectors)
        expected.update(zip(ids.tolist(), vectors, strict=True))
    small = _vectors(10, 4, dtype)
    index.add(np.arange(2 * BULK, 2 * BULK + 10), small)  # kept in LMDB, not the segment file
    expected.update(zip(range(2 * BULK, 2 * BULK + 10), small, strict=True))
    gone = np.arange(BULK, BULK + 1000)
    index.delete(gone)
    for i in gone.tolist():
        del expected[i]
    return expected


def _check_vectors(index: LogicalIndex, expected: dict[int, np.ndarray]) -> None:
    ids = np.array(sorted(expected))
    stored, found = index.store.get_vectors(ids)
    assert found.all()
    np.testing.assert_array_equal(stored, np.stack([expected[i] for i in ids.tolist()]).astype(np.float32))


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(dim=DIM, metric="l2", index_type="flat"),  # rows searched in the segment file
        IndexConfig(dim=DIM, metric="ip", faiss_factory="SQfp16", store_dtype="float16"),  # faiss holds codes
    ],
    ids=["flat-float32-in-place", "sqfp16-float16"],
)
def test_compaction_reclaims_dead_rows_and_changes_no_answer(tmp_path: Path, config: IndexConfig) -> None:
    dtype = np.float16 if config.store_dtype == "float16" else np.float32
    directory = tmp_path / "idx"
    index = LogicalIndex.create("idx", config, directory)
    expected = _fill(index, dtype)
    queries = _vectors(5, 9)
    before = _answers(index, queries)
    assert index.state()["segment_rows"] == 3 * BULK
    size_before = (directory / "store" / _segment_files(directory)[0]).stat().st_size

    assert index.compact() == {"segment_rows_before": 3 * BULK, "segment_rows": BULK - 1000 + BULK}
    assert _answers(index, queries) == before
    _check_vectors(index, expected)
    files = _segment_files(directory)
    assert len(files) == 1 and files[0].endswith(".1.seg")  # the old file is gone
    assert (directory / "store" / files[0]).stat().st_size == size_before * (2 * BULK - 1000) // (3 * BULK)
    assert index.compact() == {"segment_rows_before": 2 * BULK - 1000, "segment_rows": 2 * BULK - 1000}

    # Writes go on after it, updates and deletes included, and land in the new file.
    more = _vectors(BULK, 5, dtype)
    index.add(np.arange(3 * BULK, 4 * BULK), more)
    expected.update(zip(range(3 * BULK, 4 * BULK), more, strict=True))
    index.delete(np.array([0, 3 * BULK]))
    del expected[0], expected[3 * BULK]
    after_writes = _answers(index, queries)
    index.close()

    for keep_snapshot in (True, False):
        if not keep_snapshot:
            (directory / SNAPSHOT_FILE).unlink(missing_ok=True)
        reopened = LogicalIndex.open("idx", directory)
        try:
            assert _answers(reopened, queries) == after_writes, keep_snapshot
            _check_vectors(reopened, expected)
            assert len(reopened.vectors) == len(expected)
        finally:
            reopened.close(save=keep_snapshot)


def test_a_compaction_cut_short_leaves_the_store_as_it_was_or_as_it_became(tmp_path: Path) -> None:
    """Either side of the commit that names the new file: the file the store does not name is
    removed at the next open, and nothing else changes."""
    directory = tmp_path / "idx"
    index = LogicalIndex.create("idx", IndexConfig(dim=DIM, metric="l2", index_type="flat"), directory)
    expected = _fill(index)
    queries = _vectors(3, 7)
    before = _answers(index, queries)
    index.close(save=False)
    # Before the commit: the new file was written, the store still names the old one.
    (directory / "store" / "vectors-float32.1.seg").write_bytes(os.urandom(DIM * 4 * 100))
    reopened = LogicalIndex.open("idx", directory)
    assert _segment_files(directory) == ["vectors-float32.seg"]
    assert _answers(reopened, queries) == before
    reopened.compact()
    reopened.close(save=False)
    # After the commit: the old file was not yet removed.
    (directory / "store" / "vectors-float32.seg").write_bytes(os.urandom(DIM * 4 * 100))
    reopened = LogicalIndex.open("idx", directory)
    try:
        assert _segment_files(directory) == ["vectors-float32.1.seg"]
        assert _answers(reopened, queries) == before
        _check_vectors(reopened, expected)
    finally:
        reopened.close()


def test_kill_9_during_compactions_loses_no_acknowledged_write(tmp_path: Path) -> None:
    kill_9_while_compacting(tmp_path, "index.compact()", DIM, BULK)


@pytest.mark.e2e
def test_shards_compact_on_the_admin_command_and_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with LocalShards(2, tmp_path / "shards", threads=1) as shards, IndexClient(addresses=shards.addresses) as client:
        client.create_index("v", {"dim": DIM, "metric": "l2", "index_type": "flat"})
        ids = np.arange(4 * BULK)
        for seed in (1, 2):  # the second load replaces every vector of the first
            batches = ((_vectors(2 * BULK, seed + i), ids[i * 2 * BULK : (i + 1) * 2 * BULK]) for i in range(2))
            assert sum(client.add_stream("v", batches)) == 4 * BULK
        queries = _vectors(4, 3)
        before = client.search("v", queries, top_k=5)
        rows = [shard["segment_rows"] for shard in client.state("v")["shards"]]
        assert sum(rows) == 8 * BULK
        assert gnes_main(["indexes", "compact", "v", "--shards", shards.addresses]) == 0
        assert f"compacted v: {8 * BULK} segment rows -> {4 * BULK}" in capsys.readouterr().out
        after = client.search("v", queries, top_k=5)
        np.testing.assert_array_equal(after.ids, before.ids)
        # L2 distances come from |q|^2 + |x|^2 - 2 q.x in float32, then a square root: a row at
        # distance 0 read from another place in memory may round to 1e-5 in the square (0.004 after
        # the root, seen once), so the squares are compared, to that rounding.
        np.testing.assert_allclose(after.scores**2, before.scores**2, rtol=1e-5, atol=1e-4)
        assert client.count("v") == 4 * BULK
        assert sum(shard["segment_rows"] for shard in client.state("v")["shards"]) == 4 * BULK
        with pytest.raises(Exception, match="no index"):
            client.compact("missing")
