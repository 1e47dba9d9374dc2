"""Compaction in the background (gnes/indexer/compaction.py): writes, updates and deletes made
while the live rows are copied all survive the commit, a reopen and a kill -9; a shard answers
queries while it compacts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gnes.client import IndexClient
from gnes.cluster.local_shards import LocalShards
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex

DIM = 64
BULK = 9000  # 9000 x 64 float16 = 1.1 MiB: a write that goes to the segment file


def _vectors(n: int, seed: int, dtype: Any = np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(dtype)


def _answers(index: LogicalIndex, queries: np.ndarray) -> list[list[tuple[int, float]]]:
    return [[(h.doc_id, round(h.score, 3)) for h in row] for row in index.search(queries, 10)]


def _put(index: LogicalIndex, expected: dict[int, np.ndarray], first: int, n: int, seed: int, dtype: Any) -> None:
    vectors = _vectors(n, seed, dtype)
    index.add(np.arange(first, first + n), vectors)
    expected.update(zip(range(first, first + n), vectors, strict=True))


def _delete(index: LogicalIndex, expected: dict[int, np.ndarray], ids: np.ndarray) -> None:
    index.delete(ids)
    for i in ids.tolist():
        expected.pop(i, None)


def _check(index: LogicalIndex, expected: dict[int, np.ndarray]) -> None:
    ids = np.array(sorted(expected))
    stored, found = index.store.get_vectors(ids)
    assert found.all()
    np.testing.assert_array_equal(stored, np.stack([expected[i] for i in ids.tolist()]).astype(np.float32))
    assert index.count() == len(expected)


def _reference(config: IndexConfig, expected: dict[int, np.ndarray], tmp_path: Path) -> LogicalIndex:
    """The same documents written once into a fresh index: what every search must answer."""
    fresh = LogicalIndex.create("ref", config, tmp_path / "ref")
    ids = np.array(sorted(expected))
    fresh.add(ids, np.stack([expected[i] for i in ids.tolist()]))
    return fresh


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(dim=DIM, metric="l2", index_type="flat"),  # rows searched in the segment file
        IndexConfig(dim=DIM, metric="ip", faiss_factory="SQfp16", store_dtype="float16"),  # faiss holds codes
    ],
    ids=["flat-float32-in-place", "sqfp16-float16"],
)
def test_writes_during_a_background_compaction_all_survive(tmp_path: Path, config: IndexConfig) -> None:
    dtype = np.float16 if config.store_dtype == "float16" else np.float32
    directory = tmp_path / "idx"
    index = LogicalIndex.create("idx", config, directory)
    expected: dict[int, np.ndarray] = {}
    _put(index, expected, 0, BULK, 1, dtype)
    _put(index, expected, BULK, BULK, 2, dtype)
    _put(index, expected, 0, BULK, 3, dtype)  # replaces the first: BULK dead rows
    queries = _vectors(5, 9)
    before = _answers(index, queries)

    assert index.start_compact()
    assert index.state()["compacting"]
    assert not index.start_compact()  # one at a time
    assert _answers(index, queries) == before  # searched meanwhile, from the old file
    # While it copies: an update of copied ids (to the tail), deletes of copied ids, a small
    # (LMDB) write over copied ids, new ids in bulk, and an update of ids written meanwhile.
    _put(index, expected, BULK, BULK, 4, dtype)
    _delete(index, expected, np.arange(0, 500))
    _put(index, expected, 600, 10, 5, dtype)
    _put(index, expected, 2 * BULK, BULK, 6, dtype)
    _put(index, expected, 2 * BULK, BULK, 7, dtype)
    _delete(index, expected, np.arange(2 * BULK, 2 * BULK + 100))
    rows_meanwhile = index.store.segment_rows
    compaction = index.store.compaction
    assert compaction is not None
    compaction.wait(60)
    index.poll()  # the owner commits it between writes
    assert not index.state()["compacting"]
    figures = index.last_compaction
    assert figures is not None and figures["segment_rows_before"] == 3 * BULK
    # The copied live rows (only the first BULK ids' replacements and BULK..2*BULK) and the tail.
    assert figures["segment_rows"] == 2 * BULK + (rows_meanwhile - 3 * BULK)
    assert figures["blocked_seconds"] <= figures["seconds"]
    _check(index, expected)
    reference = _reference(config, expected, tmp_path)
    try:
        want = _answers(reference, queries)
    finally:
        reference.close()
    assert _answers(index, queries) == want
    index.store.wait_removal()  # the replaced file is removed in a thread
    assert len(list((directory / "store").glob("vectors-*.seg"))) == 1
    # Writes go on into the new file; a second compaction reclaims the tail's dead rows.
    _put(index, expected, 3 * BULK, BULK, 8, dtype)
    index.compact()
    _check(index, expected)
    after = _answers(index, queries)
    index.close()
    reopened = LogicalIndex.open("idx", directory)
    try:
        _check(reopened, expected)
        assert _answers(reopened, queries) == after
    finally:
        reopened.close()


def test_a_compaction_under_way_at_close_leaves_the_old_file(tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    config = IndexConfig(dim=DIM, metric="l2", index_type="flat")
    index = LogicalIndex.create("idx", config, directory)
    expected: dict[int, np.ndarray] = {}
    for seed in (1, 2):
        _put(index, expected, 0, BULK, seed, np.float32)
    assert index.start_compact()
    index.close()  # cancelled: the copy is dropped, nothing else changes
    assert [p.name for p in (directory / "store").glob("vectors-*.seg")] == ["vectors-float32.seg"]
    reopened = LogicalIndex.open("idx", directory)
    try:
        _check(reopened, expected)
        assert reopened.store.segment_rows == 2 * BULK
    finally:
        reopened.close()


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from gnes.indexer.config import IndexConfig
    from gnes.indexer.logical import LogicalIndex

    directory, dim, bulk = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    index = LogicalIndex.create("idx", IndexConfig(dim=dim, metric="l2", index_type="flat"), directory)
    ids = np.arange(bulk)
    for version in range(1, 10**6):
        index.add(ids, np.full((bulk, dim), version, dtype=np.float32))  # every write replaces all
        print(version, flush=True)  # acknowledged: durable
        index.poll()  # commits a compaction whose copy is done
        index.start_compact()  # the next copy runs while the next write goes on
    """
)


def test_kill_9_while_compacting_in_the_background_loses_no_acknowledged_write(tmp_path: Path) -> None:
    for attempt, delay in enumerate((0.6, 1.1, 1.7)):
        directory = tmp_path / f"idx{attempt}"
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(directory), str(DIM), str(BULK)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        acknowledged = int(child.stdout.readline())
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.wait(30)
        acknowledged = max([acknowledged, *map(int, rest.split())])
        index = LogicalIndex.open("idx", directory)
        try:
            stored, found = index.store.get_vectors(np.arange(BULK))
            assert found.all()
            version = stored[0, 0]
            assert version in (acknowledged, acknowledged + 1), (version, acknowledged)
            assert (stored == version).all()
            assert len(list((directory / "store").glob("vectors-*.seg"))) == 1
            hits = index.search(np.full((1, DIM), version, dtype=np.float32), 3)
            assert len(hits[0]) == 3 and hits[0][0].score == 0.0
        finally:
            index.close()


@pytest.mark.e2e
def test_a_shard_answers_queries_while_it_compacts(tmp_path: Path) -> None:
    """300,000 x 128-d rows live out of 600,000: the copy takes long enough to be seen. Queries
    sent meanwhile are answered, with the answers of before."""
    dim, n, batch = 128, 300_000, 50_000
    rng = np.random.default_rng(0)
    with LocalShards(1, tmp_path / "shards", threads=1) as shards, IndexClient(addresses=shards.addresses) as client:
        client.create_index("v", {"dim": dim, "metric": "l2", "index_type": "flat"})
        for _ in range(2):  # the second load replaces every vector of the first
            batches = (
                (rng.standard_normal((batch, dim)).astype(np.float32), np.arange(i, i + batch))
                for i in range(0, n, batch)
            )
            assert sum(client.add_stream("v", batches)) == n
        queries = rng.standard_normal((3, dim)).astype(np.float32)
        before = client.search("v", queries, top_k=5)
        done: list[Any] = []
        compacting = threading.Thread(target=lambda: done.append(client_compact(shards.addresses)))
        compacting.start()
        answered_meanwhile = 0
        with IndexClient(addresses=shards.addresses) as probe:
            while compacting.is_alive():
                state = probe.state("v")["shards"][0]
                result = probe.search("v", queries, top_k=5)
                np.testing.assert_array_equal(result.ids, before.ids)
                if state["compacting"] and probe.state("v")["shards"][0]["compacting"]:
                    answered_meanwhile += 1
                time.sleep(0.01)
        compacting.join()
        assert answered_meanwhile >= 1  # answered between two states that said it was compacting
        (figures,) = done[0]
        assert figures["v"]["segment_rows_before"] == 2 * n and figures["v"]["segment_rows"] == n
        assert figures["v"]["blocked_seconds"] < figures["v"]["seconds"]
        np.testing.assert_array_equal(client.search("v", queries, top_k=5).ids, before.ids)


def client_compact(addresses: str) -> list[dict[str, dict[str, Any]]]:
    with IndexClient(addresses=addresses) as client:
        return client.compact("v", interval=0.05)
