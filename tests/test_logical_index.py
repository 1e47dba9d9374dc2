"""The logical index engine (gnes/indexer): real faiss and a real LMDB store, small data.

Every faiss type is checked against numpy brute force for what its scores mean, for
non-blocking training, for updates and deletes by id, for metadata filters, for snapshot
plus log-replay recovery, for input checks that leave the index untouched, and IndexSet.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gnes.indexer import vectors as vectors_module
from gnes.indexer.config import IndexConfig
from gnes.indexer.index_set import IndexSet
from gnes.indexer.logical import CONFIG_FILE, SNAPSHOT_FILE, Hit, LogicalIndex
from gnes.indexer.vectors import ADDING, NOT_TRAINED, TRAINED, TRAINING

DIM = 16
NLIST = 16
ALL_TYPES = ("flat", "ivf_flat", "ivf_pq", "ivf_sq", "hnsw_flat", "hnsw_sq")
TRAINED_TYPES = ("ivf_flat", "ivf_pq", "ivf_sq", "hnsw_sq")
EXACT_TYPES = ("flat", "ivf_flat", "hnsw_flat")  # scores are exact (the vectors are stored as they are)
# search parameters wide enough that the approximate types see (nearly) everything
WIDE: dict[str, Any] = {"nprobe": NLIST, "ef_search": 128}


def config(index_type: str, metric: str = "l2", dim: int = DIM, **extra: Any) -> IndexConfig:
    """Small, fast settings: 4-bit PQ (faiss trains 8-bit PQ codebooks slowly), train_num 1000."""
    values: dict[str, Any] = {
        "dim": dim,
        "metric": metric,
        "index_type": index_type,
        "nlist": NLIST,
        "pq_m": 8,
        "pq_nbits": 4,
        "hnsw_m": 16,
    }
    if index_type in TRAINED_TYPES:
        values["train_num"] = 1000
    values.update(extra)
    return IndexConfig(**values)


def gaussian(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def wait_trained(index: LogicalIndex, timeout: float = 60.0) -> None:
    index.vectors.wait_training(timeout)
    index.poll()
    assert index.state()["state"] == TRAINED, index.state()


def exact_scores(queries: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """[q, n] dot products, or Euclidean (not squared) distances, in float64."""
    q, v = queries.astype(np.float64), vectors.astype(np.float64)
    if metric == "ip":
        return q @ v.T
    return np.sqrt(np.maximum((q**2).sum(1)[:, None] - 2 * q @ v.T + (v**2).sum(1)[None, :], 0.0))


def brute_force(queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: str) -> np.ndarray:
    scores = exact_scores(queries, vectors, metric)
    order = np.argsort(-scores if metric == "ip" else scores, axis=1, kind="stable")[:, :k]
    return ids[order]


def hit_ids(results: list[list[Hit]]) -> list[list[int]]:
    return [[hit.doc_id for hit in hits] for hits in results]


def assert_ranked(hits: list[Hit], metric: str) -> None:
    scores = np.array([hit.score for hit in hits])
    steps = np.diff(scores)
    if metric == "ip":
        assert (steps <= 1e-5).all(), f"ip scores must be sorted descending: {scores}"
    else:
        assert (steps >= -1e-5).all(), f"l2 distances must be sorted ascending: {scores}"


def all_ids_in_faiss(index: LogicalIndex) -> list[int]:
    """Every doc id one query gets back when it asks for all of them (flat and IVF types)."""
    hits = index.search(gaussian(1, 99, index.config.dim), index.count(), nprobe=index.config.nlist)[0]
    return [hit.doc_id for hit in hits]


# ------------------------------------------------------------ 1. what scores mean


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("index_type", ALL_TYPES)
def test_scores_mean_dot_product_or_euclidean_distance(index_type: str, metric: str) -> None:
    n, k = 2000, 10
    data = gaussian(n, seed=1)
    ids = np.arange(n, dtype=np.int64) * 3 + 11  # doc ids are not faiss slots
    row_of = {int(doc_id): row for row, doc_id in enumerate(ids)}
    queries = gaussian(20, seed=2)
    index = LogicalIndex.create("scores", config(index_type, metric), None)
    try:
        index.add(ids, data, texts=[f"doc {i}" for i in ids])
        if index_type in TRAINED_TYPES:
            assert index.state()["state"] in (TRAINING, ADDING)
            wait_trained(index)
        assert index.state()["state"] == TRAINED and index.count() == n

        results = index.search(queries, k, return_vectors=True, **WIDE)
        assert [len(hits) for hits in results] == [k] * len(queries)
        errors, magnitudes = [], []
        for query, hits in zip(queries, results, strict=True):
            assert_ranked(hits, metric)
            rows = [row_of[hit.doc_id] for hit in hits]
            assert len(set(rows)) == k, "a document came back twice"
            for hit, row in zip(hits, rows, strict=True):
                assert hit.text == f"doc {hit.doc_id}"
                assert hit.vector is not None and np.array_equal(hit.vector, data[row])
            expected = exact_scores(query[None], data[rows], metric)[0]
            got = np.array([hit.score for hit in hits])
            if index_type in EXACT_TYPES:
                np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
            errors.extend(np.abs(got - expected))
            magnitudes.extend(np.abs(expected))
        # Quantized types score against a reconstruction: close to the exact value, with
        # the right sign, and (for l2) a distance, not a squared distance (~5 vs ~25 here).
        tolerance = 0.3 if index_type == "ivf_pq" else 0.02
        assert np.mean(errors) < tolerance * np.mean(magnitudes), (np.mean(errors), np.mean(magnitudes))

        truth = brute_force(queries, data, ids, k, metric)
        if index_type in ("flat", "ivf_flat"):  # ivf_flat with nprobe == nlist is exhaustive
            assert hit_ids(results) == truth.tolist()
        else:
            recall = np.mean([len(set(got) & set(want)) / k for got, want in zip(hit_ids(results), truth, strict=True)])
            assert recall >= (0.5 if index_type == "ivf_pq" else 0.9), recall
    finally:
        index.close()


# ------------------------------------------------------------ 2. training does not block


@pytest.mark.parametrize("index_type", ["ivf_pq", "ivf_flat"])
def test_training_runs_in_the_background_and_keeps_every_write(index_type: str) -> None:
    dim, n, extra = 32, 20000, 600
    data = gaussian(n + extra, seed=3, dim=dim)
    cfg = config(index_type, "l2", dim=dim, nlist=256, pq_m=8, train_num=n)
    index = LogicalIndex.create("bg", cfg, None)
    try:
        # Below the target: a searchable, exact buffer.
        index.add(np.arange(5000), data[:5000])
        assert index.state()["state"] == NOT_TRAINED and index.state()["train_target"] == n
        queries = gaussian(5, seed=4, dim=dim)
        assert (
            hit_ids(index.search(queries, 10)) == brute_force(queries, data[:5000], np.arange(5000), 10, "l2").tolist()
        )

        # Crossing the target starts training and returns at once.
        started = time.monotonic()
        index.add(np.arange(5000, n), data[5000:n])
        returned_after = time.monotonic() - started
        assert index.state()["state"] in (TRAINING, ADDING)
        assert index.vectors._thread is not None and index.vectors._thread.is_alive(), (  # noqa: SLF001
            f"add() returned after {returned_after:.2f}s, only once training had finished"
        )

        # Writes while training: new docs, updates of docs being trained on, deletes of both.
        vectors = {i: data[i] for i in range(n)}
        new_ids = np.arange(n, n + extra)
        index.add(new_ids, data[n:])
        vectors.update(zip(new_ids.tolist(), data[n:], strict=True))
        updated = np.array([3, 4, n + 1])
        new_vectors = gaussian(len(updated), seed=5, dim=dim)
        index.add(updated, new_vectors)
        vectors.update(zip(updated.tolist(), new_vectors, strict=True))
        deleted = np.array([10, 11, n + 2])
        assert index.delete(deleted) == 3
        for doc_id in deleted.tolist():
            del vectors[doc_id]
        assert index.state()["state"] in (TRAINING, ADDING), "training finished too fast to test writes during it"

        # Searches during training answer exactly, from the buffer, with those writes.
        alive = np.array(sorted(vectors))
        matrix = np.stack([vectors[i] for i in alive.tolist()])
        truth = brute_force(queries, matrix, alive, 10, "l2")
        assert hit_ids(index.search(queries, 10)) == truth.tolist()
        assert index.search(new_vectors[:1], 1)[0][0].doc_id == 3

        index.vectors.wait_training(120)
        index.poll()
        assert index.state()["state"] == TRAINED and index.count() == len(vectors)
        # Every document is in the trained index exactly once, deleted ones are not.
        everything = all_ids_in_faiss(index)
        assert len(everything) == len(set(everything)) == len(vectors)
        assert set(everything) == set(vectors)
        if index_type == "ivf_flat":
            # A doc's own vector lies in the list it was assigned to: nprobe=1 finds it at distance 0.
            results = index.search(matrix, 1, nprobe=1)
            assert [hits[0].doc_id for hits in results] == alive.tolist()
            assert max(hits[0].score for hits in results) < 1e-3
        else:
            late = np.array([i for i in np.concatenate([new_ids[:50], updated]).tolist() if i in vectors])
            results = index.search(np.stack([vectors[i] for i in late.tolist()]), 10, nprobe=cfg.nlist)
            found = [doc_id in hit_ids([hits])[0] for doc_id, hits in zip(late.tolist(), results, strict=True)]
            assert np.mean(found) >= 0.95, found
    finally:
        index.close()


def test_adds_during_training_do_not_keep_the_callers_array() -> None:
    """The caller may reuse its array once add() returned, also while training runs."""
    data = gaussian(1000, seed=6)
    index = LogicalIndex.create("copy", config("ivf_flat"), None)
    try:
        index.add(np.arange(1000), data)
        assert index.state()["state"] in (TRAINING, ADDING)
        batch = gaussian(10, seed=7)
        original = batch.copy()
        index.add(np.arange(1000, 1010), batch)
        batch[:] = 0.0  # reused by the caller
        wait_trained(index)
        hits = index.search(original, 1, nprobe=NLIST)
        assert [h[0].doc_id for h in hits] == list(range(1000, 1010))
        assert max(h[0].score for h in hits) < 1e-3
    finally:
        index.close()


# ------------------------------------------------------------ 3. train_ratio


def test_train_ratio_waits_for_train_now() -> None:
    data = gaussian(3000, seed=8)
    index = LogicalIndex.create("ratio", config("ivf_flat", train_num=0, train_ratio=0.5), None)
    try:
        assert index.train_now() is False  # nothing to train on yet
        index.add(np.arange(3000), data)  # far beyond the 39 * nlist that faiss needs
        assert index.state()["state"] == NOT_TRAINED and index.vectors._thread is None  # noqa: SLF001
        assert hit_ids(index.search(data[:3], 1)) == [[0], [1], [2]]
        assert index.train_now() is True
        assert index.state()["state"] in (TRAINING, ADDING)
        assert index.train_now() is False  # already running
        wait_trained(index)
        assert index.train_now() is False  # already trained
        assert index.count() == 3000 and sorted(all_ids_in_faiss(index)) == list(range(3000))
    finally:
        index.close()


# ------------------------------------------------------------ 4. update and delete by id


def check_update_and_delete(
    index: LogicalIndex, vectors: dict[int, np.ndarray], update_id: int, delete_ids: list[int]
) -> None:
    index_type = index.config.index_type
    before = index.count()
    old = vectors[update_id]
    new = -old  # far from the old place, but inside the range a scalar quantizer was trained on
    index.add([update_id], new[None], texts=["updated"])
    vectors[update_id] = new
    assert index.count() == before
    assert index.get([update_id])[0] == ("updated", "")
    assert update_id not in hit_ids(index.search(old[None], 10, **WIDE))[0]
    top = index.search(new[None], 1, **WIDE)[0][0]
    assert top.doc_id == update_id and top.score < (2.0 if index_type == "ivf_pq" else 0.05)

    assert index.delete([*delete_ids, 10**9]) == len(delete_ids)  # an unknown id is no error
    for doc_id in delete_ids:
        del vectors[doc_id]
    assert index.count() == before - len(delete_ids) == len(vectors)
    assert index.get(delete_ids) == [None] * len(delete_ids)
    gone = set(delete_ids)
    assert not index.store.get_vectors(delete_ids)[1].any(), "the store still holds a deleted vector"
    for results in (
        index.search(gaussian(20, seed=9), 20, **WIDE),
        index.search(np.stack([vectors[i] for i in sorted(vectors)[:50]]), 5, **WIDE),
    ):
        assert not gone & {doc_id for hits in hit_ids(results) for doc_id in hits}
    if index.vectors.kind != "hnsw":
        everything = all_ids_in_faiss(index)
        assert len(everything) == len(set(everything)) and set(everything) == set(vectors)


@pytest.mark.parametrize("index_type", ALL_TYPES)
def test_update_and_delete_by_id_before_and_after_training(index_type: str) -> None:
    data = gaussian(2000, seed=10)
    vectors = {i: data[i] for i in range(2000)}
    index = LogicalIndex.create("upd", config(index_type), None)
    try:
        index.add(np.arange(500), data[:500])
        vectors_now = {i: vectors[i] for i in range(500)}
        if index_type in TRAINED_TYPES:
            assert index.state()["state"] == NOT_TRAINED
        check_update_and_delete(index, vectors_now, update_id=5, delete_ids=[7, 8, 499])

        index.add(np.arange(500, 2000), data[500:])
        vectors_now.update((i, vectors[i]) for i in range(500, 2000))
        wait_trained(index)
        check_update_and_delete(index, vectors_now, update_id=6, delete_ids=[9, 600, 1999])
        # a trained HNSW keeps dead graph nodes: updating the same id again still works
        check_update_and_delete(index, vectors_now, update_id=6, delete_ids=[5])
        # a deleted id can come back
        index.add([7], data[7][None])
        assert index.search(data[7][None], 1, **WIDE)[0][0].doc_id == 7
        assert index.count() == len(vectors_now) + 1
    finally:
        index.close()


# ------------------------------------------------------------ 5. metadata filters


def filter_metas(n: int, rare: set[int]) -> list[str]:
    metas = []
    for i in range(n):
        tags = ["even" if i % 2 == 0 else "odd"] + (["rare"] if i in rare else [])
        metas.append(json.dumps({"lang": ("en", "fr", "de")[i % 3], "tags": tags, "year": 2000 + i % 10}))
    return metas


@pytest.mark.parametrize("index_type", ["flat", "ivf_pq", "hnsw_sq"])
def test_filtered_search_returns_k_matching_documents(index_type: str) -> None:
    n, k = 5000, 10
    data = gaussian(n, seed=11)
    rare = {3 + 417 * i for i in range(12)}  # 12 of 5000 documents, 3 of them among the first 1000
    metas = filter_metas(n, rare)
    index = LogicalIndex.create("filter", config(index_type, train_num=n, nlist=64), None)
    queries = gaussian(8, seed=12)
    narrow = {"nprobe": 1, "ef_search": 16}

    def search(field: str, value: Any, top_k: int = k, vectors: np.ndarray = queries) -> list[list[Hit]]:
        return index.search(vectors, top_k, filter_field=field, filter_value_json=json.dumps(value), **narrow)

    try:
        index.add(np.arange(1000), data[:1000], metas=metas[:1000])
        if index_type != "flat":
            assert index.state()["state"] == NOT_TRAINED
        early_rare = sorted(i for i in rare if i < 1000)
        assert [sorted(ids) for ids in hit_ids(search("tags", "rare"))] == [early_rare] * len(queries)
        index.add(np.arange(1000, n), data[1000:], metas=metas[1000:])
        wait_trained(index)

        for hits in search("lang", "fr"):
            assert len(hits) == k
            assert all(json.loads(hit.meta_json)["lang"] == "fr" for hit in hits)
            assert_ranked(hits, "l2")
        fr = np.array([i for i in range(n) if i % 3 == 1])
        if index_type == "flat":
            assert hit_ids(search("lang", "fr")) == brute_force(queries, data[fr], fr, k, "l2").tolist()

        # Very selective: faiss (nprobe=1, ef 16) finds few of them, exact scoring fills in.
        rare_ids = np.array(sorted(rare))
        results = search("tags", "rare")
        assert hit_ids(results) == brute_force(queries, data[rare_ids], rare_ids, k, "l2").tolist()
        for query, hits in zip(queries, results, strict=True):
            expected = exact_scores(query[None], data[[hit.doc_id for hit in hits]], "l2")[0]
            np.testing.assert_allclose([hit.score for hit in hits], expected, rtol=1e-4, atol=1e-3)
        assert [sorted(ids) for ids in hit_ids(search("tags", "rare", top_k=50))] == [sorted(rare)] * len(queries)
        assert all(len(hits) == k and all(h.doc_id % 2 == 0 for h in hits) for hits in search("tags", "even"))
        assert all(len(hits) == k and all(h.doc_id % 10 == 3 for h in hits) for hits in search("year", 2003.0))
        assert search("lang", "xx") == [[]] * len(queries)
        assert search("no_such_field", "fr") == [[]] * len(queries)

        # Re-adding changes a document's filter values; deleting removes it.
        moved = 0  # lang "en"
        index.add([moved], -data[moved][None], metas=[json.dumps({"lang": "fr", "tags": ["rare"]})])
        assert search("lang", "fr", 1, -data[moved][None])[0][0].doc_id == moved
        assert moved not in hit_ids(search("lang", "en", 50, -data[moved][None]))[0]
        assert moved not in hit_ids(search("tags", "even", 50, -data[moved][None]))[0]
        removed = sorted(rare)[5]
        index.delete([removed])
        expected_rare = (rare | {moved}) - {removed}
        assert [sorted(ids) for ids in hit_ids(search("tags", "rare", top_k=50))] == [sorted(expected_rare)] * len(
            queries
        )
        assert all(removed not in ids for ids in hit_ids(search("year", 2000 + removed % 10, top_k=50)))
    finally:
        index.close()


# ------------------------------------------------------------ 6. snapshot + log replay


def assert_contents(index: LogicalIndex, expected: dict[int, tuple[np.ndarray, str, str]], ever: list[int]) -> None:
    assert index.count() == len(expected)
    docs = index.get(ever)
    for doc_id, doc in zip(ever, docs, strict=True):
        assert doc == (None if doc_id not in expected else expected[doc_id][1:]), doc_id
    ids = sorted(expected)
    stored, found = index.store.get_vectors(ids)
    assert found.all() and np.array_equal(stored, np.stack([expected[i][0] for i in ids]))
    assert sorted(index.vectors.ids().tolist()) == ids
    results = index.search(stored, 1, nprobe=1, ef_search=64)
    assert [hits[0].doc_id for hits in results] == ids
    # SQ8 clips what lies outside the range it was trained on: small, not zero
    assert max(hits[0].score for hits in results) < (0.1 if index.config.index_type in EXACT_TYPES else 1.0)
    if index.vectors.kind != "hnsw":
        everything = all_ids_in_faiss(index)
        assert len(everything) == len(set(everything)) and sorted(everything) == ids
    lang = index.search(stored[:5], 3, filter_field="lang", filter_value_json='"fr"', nprobe=NLIST, ef_search=64)
    for hits in lang:
        assert hits and all(
            expected[hit.doc_id][2] and json.loads(expected[hit.doc_id][2])["lang"] == "fr" for hit in hits
        )


def write(index: LogicalIndex, expected: dict[int, tuple[np.ndarray, str, str]], ids: np.ndarray, seed: int) -> None:
    vectors = gaussian(len(ids), seed)
    texts = [f"text {doc_id} v{seed}" for doc_id in ids.tolist()]
    metas = [json.dumps({"lang": ("en", "fr")[(doc_id + seed) % 2]}) for doc_id in ids.tolist()]
    index.add(ids, vectors, texts, metas)
    expected.update(zip(ids.tolist(), zip(vectors, texts, metas, strict=True), strict=True))


def delete(index: LogicalIndex, expected: dict[int, tuple[np.ndarray, str, str]], ids: list[int]) -> None:
    index.delete(ids)
    for doc_id in ids:
        expected.pop(doc_id, None)


@pytest.mark.parametrize("index_type", ["flat", "ivf_flat", "hnsw_sq"])
def test_snapshot_plus_log_replay_restores_every_write(index_type: str, tmp_path: Path) -> None:
    directory = tmp_path / "idx"
    cfg = config(index_type)
    expected: dict[int, tuple[np.ndarray, str, str]] = {}
    index = LogicalIndex.create("persist", cfg, directory)
    write(index, expected, np.arange(2000), seed=20)
    wait_trained(index)
    index.save()
    assert (directory / SNAPSHOT_FILE).exists()
    # after the snapshot: new docs, updates of old and new ones, deletes of old and new ones
    write(index, expected, np.arange(2000, 2300), seed=21)
    write(index, expected, np.array([1, 2, 3, 2001, 2002]), seed=22)
    delete(index, expected, [10, 11, 2010, 2011])
    write(index, expected, np.array([10]), seed=23)  # deleted, then back
    ever = list(range(2300))
    assert_contents(index, expected, ever)
    index.close(save=False)  # as if killed: the log has to bring back what the snapshot lacks

    index = LogicalIndex.open("persist", directory)
    try:
        assert index.state()["state"] == TRAINED and index.vectors._thread is None  # noqa: SLF001
        assert index.config.to_dict() == cfg.to_dict()
        assert IndexConfig.from_json((directory / CONFIG_FILE).read_text()).to_dict() == cfg.to_dict()
        assert_contents(index, expected, ever)
        # more writes, then a normal close (snapshot), then once more without
        write(index, expected, np.array([4, 2400]), seed=24)
        delete(index, expected, [12, 2299])
        ever.append(2400)
    finally:
        index.close()
    index = LogicalIndex.open("persist", directory)
    try:
        assert index.state()["state"] == TRAINED
        assert_contents(index, expected, ever)
        delete(index, expected, [13])
        write(index, expected, np.array([13]), seed=25)
    finally:
        index.close(save=False)
    index = LogicalIndex.open("persist", directory)
    try:
        assert index.state()["state"] == TRAINED
        assert_contents(index, expected, ever)
    finally:
        index.close()


def test_untrained_and_interrupted_indexes_reopen_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first training is held until the index is closed, so that the close always interrupts
    # it: on a quick moment, training 1,200 vectors finished before close() and was saved.
    closed = threading.Event()
    train = vectors_module.VectorIndex._train

    def held_train(self, *args: Any) -> None:  # type: ignore[no-untyped-def]
        monkeypatch.setattr(vectors_module.VectorIndex, "_train", train)  # later trainings run at once
        closed.wait(60)
        train(self, *args)

    monkeypatch.setattr(vectors_module.VectorIndex, "_train", held_train)
    expected: dict[int, tuple[np.ndarray, str, str]] = {}
    index = LogicalIndex.create("early", config("ivf_flat"), tmp_path / "early")
    write(index, expected, np.arange(600), seed=30)
    delete(index, expected, [1, 2])
    assert index.state()["state"] == NOT_TRAINED
    index.close(save=False)
    index = LogicalIndex.open("early", tmp_path / "early")
    try:
        assert index.state()["state"] == NOT_TRAINED
        assert_contents(index, expected, list(range(600)))
        write(index, expected, np.arange(600, 1200), seed=31)  # crosses train_num: training starts
        assert index.state()["state"] in (TRAINING, ADDING)
    finally:
        index.close()  # closing while training: nothing is lost, training starts again on open
        closed.set()
    index = LogicalIndex.open("early", tmp_path / "early")
    try:
        assert index.state()["state"] in (TRAINING, ADDING)
        wait_trained(index)
        assert_contents(index, expected, list(range(1200)))
    finally:
        index.close()


# ------------------------------------------------------------ 7. bad input


def test_bad_writes_and_searches_raise_and_change_nothing() -> None:
    index = LogicalIndex.create("bad", config("flat"), None)
    try:
        data = gaussian(100, seed=40)
        index.add(np.arange(100), data, metas=['{"lang": "en"}'] * 100)
        seq, queries = index.store.last_seq, gaussian(3, seed=41)
        before = hit_ids(index.search(queries, 5))
        good = gaussian(2, seed=42)
        nan = good.copy()
        nan[1, 3] = np.nan
        bad_calls = [
            (lambda: index.add([200, 201], gaussian(2, 43, DIM + 1)), "dimension 16, got 17"),
            (lambda: index.add([200, 201], good[0]), "2-D array"),
            (lambda: index.add([200, 201], nan), "NaN"),
            (lambda: index.add([200, -1], good), "must not be negative"),
            (lambda: index.add([200, 201, 202], good), "3 ids but 2 vectors"),
            (lambda: index.add([200, 201], good, texts=["only one"]), "texts"),
            (lambda: index.add([200, 201], good, metas=["{}"]), "metas"),
            (lambda: index.add([200, 201], good, metas=["{}", "[1, 2]"]), "must be a JSON object"),
            (lambda: index.add([200, 201], good, metas=["{}", '"en"']), "must be a JSON object"),
            (lambda: index.add([200, 201], good, metas=["{}", "{lang: en}"]), "not valid JSON"),
            (lambda: index.add([200, 201], good, texts=["ok", "\ud800"]), "surrogate"),
            (lambda: index.add([200.0, 201.0], good), "must be integers"),
            (lambda: index.delete([5, -3]), "must not be negative"),
            (lambda: index.search(gaussian(1, 44, DIM - 1), 5), "dimension 16, got 15"),
            (lambda: index.search(nan, 5), "NaN"),
            (lambda: index.search(queries, 0), "top_k"),
            (lambda: index.search(queries, 5, filter_field="lang", filter_value_json="en"), "filter value"),
            (lambda: index.search(queries, 5, filter_field="lang", filter_value_json=""), "filter value"),
        ]
        for call, message in bad_calls:
            with pytest.raises(ValueError, match=message):
                call()
            assert index.count() == 100 and index.store.last_seq == seq, message
            assert index.get([200, 201]) == [None, None] and index.get([5])[0] is not None, message
        assert hit_ids(index.search(queries, 5)) == before
        # the filter still works after the rejected filter queries
        assert len(index.search(queries, 5, filter_field="lang", filter_value_json='"en"')[0]) == 5
    finally:
        index.close()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dim": 16, "index_type": "ivf_foo"}, "index_type must be one of"),
        ({"dim": 16, "bogus": 1}, "bad index configuration.*bogus"),
        ({"index_type": "flat"}, "bad index configuration.*dim"),
        ({"dim": 0}, "dim must be at least 1"),
        ({"dim": 16, "metric": "cosine"}, "metric must be one of"),
        ({"dim": 16, "index_type": "ivf_pq", "pq_m": 5}, r"pq_m \(5\) must divide dim \(16\)"),
        ({"dim": 16, "index_type": "ivf_flat", "train_num": 100, "train_ratio": 0.5}, "not both"),
        ({"dim": 16, "train_ratio": 1.5}, "train_ratio must be a number in"),
        ({"dim": 16, "faiss_factory": "IDMap,Flat"}, "must not contain IDMap"),
        ({"dim": 16, "sq_type": "SQ3"}, "sq_type must be one of"),
        ([16], "must be a JSON object"),
    ],
)
def test_bad_configs_are_rejected(values: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexConfig.from_dict(values)


def test_configs_that_faiss_rejects_fail_at_create() -> None:
    with pytest.raises(ValueError, match="train_num 10 is too small: 'IVF16,Flat' needs 16"):
        LogicalIndex.create("x", config("ivf_flat", train_num=10), None)
    with pytest.raises(ValueError, match="invalid faiss factory"):
        LogicalIndex.create("x", IndexConfig(dim=16, faiss_factory="NoSuchIndex"), None)
    with pytest.raises(ValueError, match="index configuration is not valid JSON"):
        IndexConfig.from_json("{dim: 16}")
    cfg = config("ivf_pq", "ip", train_num=300, nprobe=4, ef_search=20, store_sync=False)
    assert IndexConfig.from_json(cfg.to_json()).to_dict() == cfg.to_dict()
    assert IndexConfig(dim=16, metric="dot").metric == "ip" and IndexConfig(dim=16, metric="euclidean").metric == "l2"


def test_a_rejected_create_leaves_nothing_on_disk(tmp_path: Path) -> None:
    indexes = IndexSet(tmp_path)
    with pytest.raises(ValueError, match="too small"):
        indexes.create("bad", config("ivf_flat", train_num=10))
    indexes.close()
    assert not (tmp_path / "indexes" / "bad").exists()
    reopened = IndexSet(tmp_path)  # must not fail on the half-created index
    reopened.close()


# ------------------------------------------------------------ 8. IndexSet


def test_index_set_create_list_drop_and_reopen(tmp_path: Path) -> None:
    default = config("flat", "ip")
    indexes = IndexSet(tmp_path, default)
    try:
        assert indexes.names() == ["default"]
        assert indexes.create("docs", config("ivf_flat")) is True
        assert indexes.create("images.v2", config("hnsw_flat")) is True
        assert indexes.create("tmp", config("flat")) is True
        assert indexes.names() == ["default", "docs", "images.v2", "tmp"]
        assert indexes.create("docs", config("ivf_flat"), exist_ok=True) is False
        with pytest.raises(ValueError, match="exists with another configuration"):
            indexes.create("docs", config("ivf_flat", nlist=32), exist_ok=True)
        with pytest.raises(ValueError, match="already exists"):
            indexes.create("docs", config("ivf_flat"))
        for bad in ("../x", "a/b", ".hidden", "-x", "a b", "x" * 65, "é"):
            with pytest.raises(ValueError, match="invalid index name"):
                indexes.create(bad, config("flat"))
        assert not (tmp_path / "x").exists() and not (tmp_path / "indexes" / "a").exists()
        with pytest.raises(ValueError, match="no index named 'nope'"):
            indexes.get("nope")
        with pytest.raises(ValueError, match="no index named"):
            indexes.drop("../x")
        assert indexes.get("") is indexes.get("default")

        data = gaussian(1200, seed=50)
        indexes.get("docs").add(np.arange(1200), data, texts=[f"d{i}" for i in range(1200)])
        indexes.get("images.v2").add(np.arange(50), data[:50])
        indexes.get("tmp").add(np.arange(5), data[:5])
        assert indexes.is_training()
        indexes.get("docs").vectors.wait_training(60)
        indexes.poll()
        assert not indexes.is_training() and indexes.states()["docs"]["state"] == TRAINED

        indexes.drop("tmp")
        assert indexes.names() == ["default", "docs", "images.v2"]
        assert not (tmp_path / "indexes" / "tmp").exists()
        with pytest.raises(ValueError, match="no index named 'tmp'"):
            indexes.get("tmp")
        reloaded = indexes.reload("docs")
        assert reloaded.state()["state"] == TRAINED and reloaded.count() == 1200
    finally:
        indexes.close()

    indexes = IndexSet(tmp_path, default)
    try:
        assert indexes.names() == ["default", "docs", "images.v2"]
        assert indexes.get("docs").state()["state"] == TRAINED
        assert [index.count() for index in map(indexes.get, indexes.names())] == [0, 1200, 50]
        assert indexes.get("docs").search(data[7][None], 1, nprobe=1)[0][0].text == "d7"
        assert indexes.get("images.v2").config.index_type == "hnsw_flat"
        # the same name can be created again after a drop
        assert indexes.create("tmp", config("flat")) is True and indexes.get("tmp").count() == 0
    finally:
        indexes.close()
    with pytest.raises(ValueError, match="exists with another configuration"):
        IndexSet(tmp_path, config("flat", "l2"))


def test_in_memory_index_set() -> None:
    indexes = IndexSet(None)
    try:
        assert indexes.names() == []
        with pytest.raises(ValueError, match="no index named 'default'.*indexes: none"):
            indexes.get("")
        indexes.create("a", config("flat"))
        indexes.get("a").add([1], gaussian(1, seed=60))
        with pytest.raises(ValueError, match="in memory only"):
            indexes.reload("a")
        indexes.drop("a")
        assert indexes.names() == []
    finally:
        indexes.close()


def test_add_many_is_one_commit_that_keeps_good_batches_and_reports_bad_ones(tmp_path: Path) -> None:
    index = LogicalIndex.create("group", config("flat"), tmp_path / "group")
    data = gaussian(30, seed=50)
    try:
        outcomes = index.add_many(
            [
                (np.arange(10), data[:10], [f"first {i}" for i in range(10)], None),
                (np.arange(10, 12), gaussian(2, 51, DIM + 1), None, None),  # wrong dimension
                (np.arange(5, 15), data[10:20], [f"second {i}" for i in range(5, 15)], None),  # replaces 5..9
                (np.arange(20, 22), data[20:22], None, ["{}", "{bad json"]),
                (np.arange(20, 30), data[20:30], None, ['{"n": 1}'] * 10),
            ]
        )
        assert outcomes[0] == 10 and outcomes[2] == 10 and outcomes[4] == 10
        assert isinstance(outcomes[1], ValueError) and "dimension 16, got 17" in str(outcomes[1])
        assert isinstance(outcomes[3], ValueError) and "not valid JSON" in str(outcomes[3])
        assert index.store.last_seq == 1  # the three good batches share one transaction
        assert index.count() == 25
        assert index.get([4, 5, 14]) == [("first 4", ""), ("second 5", ""), ("second 14", "")]
        # A later batch replaces the vector of an id, as two adds one after the other would.
        top = index.search(data[10:11], 1)[0][0]
        assert top.doc_id == 5 and top.text == "second 5"
        assert index.add_many([]) == [] and index.store.last_seq == 1
    finally:
        index.close()
    reopened = LogicalIndex.open("group", tmp_path / "group")
    try:
        assert reopened.count() == 25 and reopened.get([5]) == [("second 5", "")]
    finally:
        reopened.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_every_non_finite_value_is_refused_wherever_it_is(bad: float) -> None:
    """check_vectors finds NaN and infinities in one BLAS pass (a row times zeros); huge finite
    values must not look like overflow."""
    from gnes.indexer.checks import check_vectors

    rng = np.random.default_rng(0)
    huge = np.full((3, 8), np.finfo(np.float32).max, dtype=np.float32)
    assert check_vectors(huge, 8) is not None
    assert check_vectors(np.zeros((0, 8), dtype=np.float32), 8).shape == (0, 8)
    for row, col in [(0, 0), (999, 783), (500, 17)]:
        vectors = rng.standard_normal((1000, 784), dtype=np.float32)
        vectors[row, col] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            check_vectors(vectors, 784)
