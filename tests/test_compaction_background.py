"""Compaction in the background (gnes/indexer/compaction.py): writes, updates and deletes made
while the live rows are copied all survive the commit, a reopen and a kill -9; a shard answers
queries while it compacts."""

from __future__ import annotations

import json
import subprocess
import sys
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
from tests.compaction_kill import kill_9_while_compacting

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


def _reference_answers(
    config: IndexConfig, expected: dict[int, np.ndarray], tmp_path: Path, queries: np.ndarray
) -> list[list[tuple[int, float]]]:
    """What every search must answer: the same documents written once into a fresh index."""
    fresh = LogicalIndex.create("ref", config, tmp_path / "ref")
    try:
        ids = np.array(sorted(expected))
        fresh.add(ids, np.stack([expected[i] for i in ids.tolist()]))
        return _answers(fresh, queries)
    finally:
        fresh.close()


def _check_reopened(directory: Path, expected: dict[int, np.ndarray], queries: np.ndarray, want: list) -> None:
    reopened = LogicalIndex.open("idx", directory)
    try:
        _check(reopened, expected)
        assert _answers(reopened, queries) == want
    finally:
        reopened.close()


@pytest.mark.parametrize(
    "config",
    [
        IndexConfig(dim=DIM, metric="l2", index_type="flat"),  # rows searched in the segment file
        IndexConfig(dim=DIM, metric="ip", faiss_factory="SQfp16", store_dtype="float16"),  # faiss holds codes
    ],
    ids=["flat-float32-in-place", "sqfp16-float16"],
)
@pytest.mark.parametrize("copy_first", [True, False], ids=["writes-after-the-copy", "writes-racing-the-copy"])
def test_writes_during_a_background_compaction_all_survive(
    tmp_path: Path, config: IndexConfig, copy_first: bool
) -> None:
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
    compaction = index.store.compaction
    assert compaction is not None
    if copy_first:  # else the writes race the thread's walk of the id -> row map and its copy
        compaction.wait(60)
    # While it copies: an update of copied ids (to the tail), deletes of copied ids, a small
    # (LMDB) write over copied ids, new ids in bulk, and an update of ids written meanwhile.
    _put(index, expected, BULK, BULK, 4, dtype)
    _delete(index, expected, np.arange(0, 500))
    _put(index, expected, 600, 10, 5, dtype)
    _put(index, expected, 2 * BULK, BULK, 6, dtype)
    _put(index, expected, 2 * BULK, BULK, 7, dtype)
    _delete(index, expected, np.arange(2 * BULK, 2 * BULK + 100))
    rows_meanwhile = index.store.segment_rows
    for _ in range(10):  # the owner commits it between writes, after the thread copied the tail
        compaction.wait(60)
        index.poll()
        if not index.state()["compacting"]:
            break
    assert not index.state()["compacting"]
    figures = index.last_compaction
    assert figures is not None and figures["segment_rows_before"] == 3 * BULK
    tail = rows_meanwhile - 3 * BULK
    if copy_first:  # the live rows when it began (the first BULK ids' replacements, BULK..2*BULK), the tail
        assert figures["segment_rows"] == 2 * BULK + tail
    else:  # ids written before the walk reached them are left to the tail
        assert BULK + tail <= figures["segment_rows"] <= 2 * BULK + tail
    assert figures["blocked_seconds"] <= figures["seconds"]
    _check(index, expected)
    want = _reference_answers(config, expected, tmp_path, queries)
    assert _answers(index, queries) == want
    index.store.wait_removal()  # the replaced file is removed in a thread
    assert len(list((directory / "store").glob("vectors-*.seg"))) == 1
    # Writes go on into the new file; a second compaction reclaims the tail's dead rows.
    _put(index, expected, 3 * BULK, BULK, 8, dtype)
    index.compact()
    _check(index, expected)
    after = _answers(index, queries)
    index.close()
    _check_reopened(directory, expected, queries, after)


def test_rows_written_during_the_copy_are_copied_in_the_thread_before_the_commit(tmp_path: Path) -> None:
    """What comes in while the live rows are copied (a bulk load, say) is copied by the thread
    too, pass after pass, so that the commit, which blocks the owner, copies only the last rows."""
    config = IndexConfig(dim=DIM, metric="l2", index_type="flat")
    directory = tmp_path / "idx"
    index = LogicalIndex.create("idx", config, directory)
    expected: dict[int, np.ndarray] = {}
    _put(index, expected, 0, BULK, 1, np.float32)
    _put(index, expected, 0, BULK, 2, np.float32)  # BULK dead rows
    index.store.catch_up_rows = 1000
    assert index.start_compact()
    compaction = index.store.compaction
    assert compaction is not None
    compaction.wait(60)
    _put(index, expected, BULK, BULK, 3, np.float32)  # written after the copy: the tail
    _put(index, expected, 0, BULK, 4, np.float32)  # and a replacement of copied ids
    index.poll()  # the thread copies the tail instead of the commit
    assert index.state()["compacting"] and compaction.catch_ups == 1
    compaction.wait(60)
    assert compaction.copied_to == 4 * BULK
    _put(index, expected, 2 * BULK, BULK, 5, np.float32)
    index.poll()  # a second pass for what came in during the first
    assert compaction.catch_ups == 2
    compaction.wait(60)
    _put(index, expected, 3 * BULK, 10, 6, np.float32)  # 10 rows, kept in LMDB: nothing to catch up
    index.poll()  # the commit
    assert not index.state()["compacting"]
    assert index.last_compaction is not None
    assert index.last_compaction["segment_rows"] == BULK + 3 * BULK  # the live rows, then the tail
    _check(index, expected)
    queries = _vectors(5, 9)
    want = _reference_answers(config, expected, tmp_path, queries)
    assert _answers(index, queries) == want
    index.close()
    _check_reopened(directory, expected, queries, want)


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


_FAILING_CHILD = """
import json, resource, signal, sys
from pathlib import Path
import numpy as np
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex

directory, dim, bulk = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
index = LogicalIndex.create("idx", IndexConfig(dim=dim, metric="l2", index_type="flat"), directory)
for seed in (1, 2, 3):  # the third replaces the first: 2 * bulk live rows of 3 * bulk
    ids = np.arange(bulk) if seed != 2 else np.arange(bulk, 2 * bulk)
    index.add(ids, np.random.default_rng(seed).standard_normal((bulk, dim)).astype(np.float32))
query = np.random.default_rng(9).standard_normal((1, dim)).astype(np.float32)
before = [h.doc_id for h in index.search(query, 5)[0]]
# No file may grow past half the new segment file: its copy fails as on a full disk (EFBIG, not ENOSPC).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (bulk * dim * 4, hard))
index.start_compact()
index.store.compaction.wait(60)
index.poll()  # what a shard's loop calls: the failure is logged and kept, the loop goes on
failed = dict(index.last_compaction)
after_failure = [h.doc_id for h in index.search(query, 5)[0]]
files_after_failure = sorted(p.name for p in (directory / "store").glob("vectors-*.seg"))
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
figures = index.compact()
after = [h.doc_id for h in index.search(query, 5)[0]]
index.close()
print(json.dumps({"failed": failed, "before": before, "after_failure": after_failure, "files": files_after_failure,
                  "figures": figures, "after": after}))
"""


def test_a_compaction_that_fails_leaves_the_file_and_the_index_serving(tmp_path: Path) -> None:
    """A copy that cannot be written (the file size limit of its process, as a full disk would)
    fails in the background: the old file stays, the index answers as before, the error is kept
    in `last_compaction`, and a later compaction succeeds."""
    child = subprocess.run(
        [sys.executable, "-c", _FAILING_CHILD, str(tmp_path / "idx"), str(DIM), str(BULK)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert "File too large" in result["failed"]["error"], result["failed"]
    assert result["failed"]["segment_rows"] == 3 * BULK
    assert result["files"] == ["vectors-float32.seg"]  # the new file was removed
    assert result["after_failure"] == result["before"]
    assert result["figures"] == {"segment_rows_before": 3 * BULK, "segment_rows": 2 * BULK}
    assert result["after"] == result["before"]


def test_kill_9_while_compacting_in_the_background_loses_no_acknowledged_write(tmp_path: Path) -> None:
    # After each write: commit a compaction whose copy is done, then start the next copy, which
    # runs while the next write goes on.
    kill_9_while_compacting(tmp_path, "index.poll()\nindex.start_compact()", DIM, BULK)


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
