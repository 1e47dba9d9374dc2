"""The store's vector segment file (gnes/indexer/segment.py) and bounded recovery.

Real LMDB, real files, real faiss. A `kill -9` leaves the files exactly as they were after
the last commit, so closing an index without saving is the same state on disk; the crash
tests with real processes are in tests/test_crash_recovery.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import numpy as np
import pytest

from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import STORE_DIR, LogicalIndex
from gnes.indexer.store import IndexStore, id_keys

DIM = 24
BIG = 12_000  # rows of DIM float32: 1.15 MB, a write large enough for the segment file


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)


def test_replay_after_a_snapshot_touches_only_the_ids_written_after_it(tmp_path: Path) -> None:
    config = IndexConfig(dim=DIM, metric="l2")
    base = vectors(3000, seed=1)
    index = LogicalIndex.create("big", config, tmp_path / "big")
    for start in range(0, 3000, 1000):
        index.add(np.arange(start, start + 1000), base[start : start + 1000])
    index.save()
    updated, new = vectors(40, seed=2), vectors(60, seed=3)
    index.add(np.arange(100, 140), updated)  # replaces ids 100..139
    index.add(np.arange(5000, 5060), new, texts=[f"new {i}" for i in range(60)])
    index.delete(np.arange(0, 10))
    index.close(save=False)  # what a kill -9 leaves: the snapshot, then three logged writes

    reopened = LogicalIndex.open("big", tmp_path / "big")
    try:
        assert reopened.rebuilt == 0, "a snapshot was there: nothing should be rebuilt from the store alone"
        assert reopened.replayed == 40 + 60 + 10, f"replayed {reopened.replayed} ids, expected only the 110 touched"
        assert reopened.count() == 3000 + 60 - 10
        stored, found = reopened.store.get_vectors(np.arange(100, 140))
        assert found.all() and np.array_equal(stored, updated)
        hits = reopened.search(updated[:5], top_k=1)
        assert [h[0].doc_id for h in hits] == list(range(100, 105))
        hits = reopened.search(new[:3], top_k=1)
        assert [(h[0].doc_id, h[0].text) for h in hits] == [(5000, "new 0"), (5001, "new 1"), (5002, "new 2")]
        assert reopened.get(np.arange(0, 10)) == [None] * 10
        assert all(hit.doc_id >= 10 for hits in reopened.search(base[:10], top_k=3) for hit in hits)
    finally:
        reopened.close()


def test_rows_of_a_write_that_never_committed_are_cut_off_at_open(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "s", DIM)
    first = vectors(BIG, seed=4)  # over 1 MiB: its vectors go to the segment file
    store.put(np.arange(BIG), first, [""] * BIG, [""] * BIG)
    segment = tmp_path / "s" / "vectors-float32.seg"
    committed_size = segment.stat().st_size
    assert committed_size == BIG * DIM * 4
    store.close()
    # A crash after the rows were written but before LMDB committed them: rows past the count.
    with segment.open("ab") as f:
        f.write(vectors(7, seed=5).tobytes() + b"torn")
    store = IndexStore(tmp_path / "s", DIM)
    try:
        assert segment.stat().st_size == committed_size
        assert store.count() == BIG and store.segment_rows == BIG
        # A small write keeps its vectors in LMDB: the segment file does not grow.
        second = vectors(50, seed=6)
        store.put(np.arange(5, 55), second, [""] * 50, [""] * 50)
        assert store.count() == BIG and store.segment_rows == BIG
        expected = first.copy()
        expected[5:55] = second
        got, found = store.get_vectors(np.arange(BIG))
        assert found.all() and np.array_equal(got, expected)
        walked = list(store.iter_vectors(batch=5000))
        assert np.array_equal(np.concatenate([i for i, _ in walked]), np.arange(BIG))
        assert np.array_equal(np.concatenate([v for _, v in walked]), expected)
        # A large update appends new rows after the committed ones (the old rows stay as garbage).
        store.put(np.arange(BIG), first[::-1].copy(), [""] * BIG, [""] * BIG)
        assert store.segment_rows == 2 * BIG
        assert np.array_equal(store.get_vectors(np.arange(3))[0], first[::-1][:3])
    finally:
        store.close()


def test_a_large_write_overlaps_the_callers_work_and_is_durable_when_put_returns(tmp_path: Path) -> None:
    store = IndexStore(tmp_path / "s", DIM)
    rows = vectors(20000, seed=7)  # 1.9 MB: written by the store's writer thread
    seen = []
    try:
        store.put(np.arange(20000), rows, [""] * 20000, [""] * 20000, meanwhile=lambda: seen.append(store.count()))
        assert seen == [0], "meanwhile runs before the commit"
        assert store.count() == 20000
        ids, got = next(store.iter_vectors(batch=20000))
        assert np.array_equal(ids, np.arange(20000)) and np.array_equal(got, rows)
    finally:
        store.close()


def test_float16_storage_halves_the_rows_and_reads_back_the_rounded_values(tmp_path: Path) -> None:
    config = IndexConfig(dim=DIM, metric="l2", store_dtype="float16")
    rows = 2 * BIG  # float16 rows are half the size: twice as many for the segment file
    data = np.concatenate([vectors(rows, seed=8), vectors(10, seed=11)])
    index = LogicalIndex.create("half", config, tmp_path / "half")
    index.add(np.arange(rows), data[:rows])
    index.add(np.arange(rows, rows + 10), data[rows:])  # a small write: float16 inline in LMDB
    index.close(save=False)
    assert (tmp_path / "half" / STORE_DIR / "vectors-float16.seg").stat().st_size == rows * DIM * 2
    reopened = LogicalIndex.open("half", tmp_path / "half")
    try:
        assert reopened.rebuilt == rows + 10
        stored, found = reopened.store.get_vectors(np.arange(rows + 10))
        assert found.all() and np.array_equal(stored, data.astype(np.float16).astype(np.float32))
        queries = data[[0, 1, rows, rows + 9]]
        assert [h[0].doc_id for h in reopened.search(queries, top_k=1)] == [0, 1, rows, rows + 9]
    finally:
        reopened.close()
    with pytest.raises(ValueError, match="holds float16 vectors"):
        IndexStore(tmp_path / "half" / STORE_DIR, DIM, dtype="float32")


def test_a_store_of_the_lmdb_only_layout_is_moved_to_a_segment_file_once(tmp_path: Path) -> None:
    """Stores written before segment files kept each vector as an LMDB value."""
    path = tmp_path / "old"
    path.mkdir()
    data = vectors(120, seed=9)
    ids = np.arange(1000, 1120)
    env = lmdb.open(str(path), map_size=64 << 20, max_dbs=4)
    docs, vecs, log = env.open_db(b"docs"), env.open_db(b"vectors"), env.open_db(b"log")
    with env.begin(write=True) as txn:
        for key, row in zip(id_keys(ids), data, strict=True):
            txn.put(key, row.tobytes(), db=vecs)
            txn.put(key, b"\x01" + bytes(4), db=docs)
        txn.put((1).to_bytes(8, "big"), b"P" + ids.astype("<i8").tobytes(), db=log)
    env.close()
    store = IndexStore(path, DIM)
    try:
        assert store.count() == 120 and store.last_seq == 1
        got, found = store.get_vectors(ids)
        assert found.all() and np.array_equal(got, data)
    finally:
        store.close()
    store = IndexStore(path, DIM)  # the second open finds nothing left to move
    try:
        assert store.count() == 120 and os.path.getsize(path / "vectors-float32.seg") == 120 * DIM * 4
    finally:
        store.close()


def test_an_index_request_with_an_id_array_is_checked_like_one_with_documents() -> None:
    from gnes.proto import WireError, array_to_nd, pb
    from gnes.service.indexer import index_batch

    body = pb.Request().index
    array_to_nd(vectors(3, seed=10), out=body.embeddings)
    array_to_nd(np.array([7, 8, 9], dtype=np.int64), out=body.doc_ids)
    ids, rows, texts, metas = index_batch(body)
    assert ids.tolist() == [7, 8, 9] and rows.shape == (3, DIM) and texts is None and metas is None
    array_to_nd(np.array([7, 8], dtype=np.int64), out=body.doc_ids)
    with pytest.raises(WireError, match=r"one vector per id \(2\)"):
        index_batch(body)
    array_to_nd(np.array([7.0, 8.0, 9.0]), out=body.doc_ids)
    with pytest.raises(WireError, match="doc_ids must be a 1-d integer array"):
        index_batch(body)
    array_to_nd(np.array([7, 8, 9], dtype=np.int64), out=body.doc_ids)
    body.docs.add(doc_id=7)
    with pytest.raises(WireError, match="doc_ids or docs, not both"):
        index_batch(body)


def test_vectors_in_a_frame_of_their_own_are_checked_and_the_shard_keeps_serving(shard_processes) -> None:
    import zmq

    from gnes.client import IndexClient
    from gnes.proto import array_to_nd, pb
    from gnes.service.message import BodyType

    shards = shard_processes(1)
    data = vectors(2000, seed=12)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("f", {"dim": DIM, "metric": "l2"})
        assert client.add("f", data, ids=np.arange(2000)).tolist() == list(range(2000))  # the 3-frame path
        ctx = zmq.Context()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"tcp://127.0.0.1:{shards.ports[0]}")

        def send(body_type: int, request: pb.Request, *extra: bytes) -> str:
            envelope = pb.Envelope(client_id="raw", request_id=1, body_type=body_type)
            raw.send_multipart([envelope.SerializeToString(), request.SerializeToString(), *extra])
            assert raw.poll(10000), "no answer"
            return raw.recv_multipart()[-1].decode(errors="replace")

        index = pb.Request()
        index.index.index_name = "f"
        index.index.embeddings.shape[:] = [2, DIM]
        index.index.embeddings.dtype = "<f4"
        array_to_nd(np.array([5000, 5001]), out=index.index.doc_ids)
        assert "needs 192 bytes, got 10" in send(BodyType.INDEX, index, b"0123456789")
        train = pb.Request(train=pb.Request.TrainRequest(index_name="f"))
        assert "only an index or query request" in send(BodyType.TRAIN, train, b"x")
        assert "got 4" in send(BodyType.INDEX, index, b"a", b"b")
        both = pb.Request()
        both.CopyFrom(index)
        array_to_nd(data[:2], out=both.index.embeddings)
        assert "both in the message and in a frame" in send(BodyType.INDEX, both, data[:2].tobytes())
        assert "error" not in send(BodyType.INDEX, index, data[:2].tobytes()).lower()
        raw.close()
        ctx.term()
        assert client.count("f") == 2002
        found = client.search("f", data[[7, 1999]], top_k=1).ids[:, 0].tolist()
        assert found == [7, 1999]
