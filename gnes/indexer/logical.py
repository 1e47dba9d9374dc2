"""One logical index on one shard: durable store + faiss vectors + metadata filter.

Directory layout (one per index, per shard):
    config.json            the IndexConfig, written once at creation
    store/                 LMDB: documents, vectors, change log (the write-ahead log)
    snapshot.json          {"seq": N, "faiss": ..., "slots": ...}: the last complete snapshot
    snap-<N>.faiss/.npz    the faiss index and its slot arrays as of log sequence N
Every file is written to a temporary name, fsynced and renamed, and snapshot.json is
renamed last, so a crash at any point leaves the previous snapshot intact.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_doc_ids, check_strings, check_top_k, check_vectors, last_occurrence
from .chunks import ChunkIndex
from .config import IndexConfig
from .meta_filter import MetaFilter, parse_meta
from .store import IndexStore, PendingPut, fsync_path
from .vectors import TRAINED, VectorIndex

log = logging.getLogger(__name__)
CONFIG_FILE, SNAPSHOT_FILE, STORE_DIR = "config.json", "snapshot.json", "store"
_NO_META: dict[str, Any] = {}  # shared by every document without metadata; never changed
# One write: ids, vectors [n, dim], texts (or None), metadata JSON strings (or None).
Batch = tuple[np.ndarray | Sequence[int], np.ndarray, Sequence[str] | None, Sequence[str] | None]


@dataclass(slots=True)
class Hit:
    doc_id: int
    score: float
    text: str
    meta_json: str = ""
    vector: np.ndarray | None = field(default=None, repr=False)


@dataclass(slots=True)
class PendingAdd:
    """A group of batches begun by `LogicalIndex.begin_many`, to be finished in order."""

    outcomes: list[int | Exception]
    put: PendingPut | None = None  # None: no batch had anything to write
    ids: np.ndarray | None = None
    vectors: np.ndarray | None = None  # for faiss to copy; None when searched in place
    parsed: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ArrayHits:
    """The hits of a query batch as arrays: what `LogicalIndex.search` finds, without a Hit each."""

    scores: np.ndarray  # float32 [q, k]
    ids: np.ndarray  # int64 [q, k]; each row's hits first, then -1
    counts: np.ndarray  # int64 [q]: hits per query
    texts: list[str] | None  # per hit (row order); None: the index holds no text and no metadata
    metas: list[str] | None  # JSON metadata per hit, like texts


class LogicalIndex:
    """Open with `LogicalIndex.create(...)` or `LogicalIndex.open(...)`; `directory=None`
    keeps everything in memory and a temporary directory (tests, benchmarks)."""

    def __init__(self, name: str, config: IndexConfig, directory: Path | None) -> None:
        self.name = name
        self.config = config
        self.directory = directory
        store_path = directory / STORE_DIR if directory is not None else None
        self.store = IndexStore(store_path, config.dim, sync=config.store_sync, dtype=config.store_dtype)
        try:
            self.vectors = VectorIndex(config)
            if self.store.segment_view() is not None:  # float32 rows: a flat index searches them in place
                self.vectors.attach_stored(self._segment_view)
            self.filter = MetaFilter()
            self._snapshot_seq = 0
            self.chunks = ChunkIndex(name, config, directory)  # its chunk vectors, if any
            # What the last open cost: ids re-added from the log after the snapshot, and
            # vectors re-added from the store alone (no snapshot). Tests bound the first.
            self.replayed = self.rebuilt = 0
            # The last compaction's figures (rows before and after, seconds, blocked seconds).
            self.last_compaction: dict[str, Any] | None = None
            self._recover()
        except BaseException:
            self.store.close()
            raise

    @classmethod
    def create(cls, name: str, config: IndexConfig, directory: Path | None) -> LogicalIndex:
        if directory is None:
            return cls(name, config, directory)
        if (directory / CONFIG_FILE).exists():
            raise ValueError(f"index {name!r} already exists in {directory}")
        VectorIndex(config)  # faiss checks the configuration before anything is written
        directory.mkdir(parents=True, exist_ok=True)
        try:
            _write_atomic(directory / CONFIG_FILE, config.to_json().encode())
            return cls(name, config, directory)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)  # a half-created index must not block a restart
            raise

    @classmethod
    def open(cls, name: str, directory: Path) -> LogicalIndex:
        config = IndexConfig.from_json((directory / CONFIG_FILE).read_text())
        return cls(name, config, directory)

    def _segment_view(self) -> np.ndarray:
        view = self.store.segment_view()
        assert view is not None  # attached only for float32 stores
        return view

    # ---- recovery ----------------------------------------------------------------------
    def _recover(self) -> None:
        """Load the last snapshot, then replay every id the log touched after it. Vectors
        searched in the segment file (`vectors.stored`) are never in a snapshot: their
        id -> row map is read back from the store, without reading a vector."""
        snapshot = self._read_snapshot()
        stored = self.vectors.stored is not None
        if snapshot is None:
            if stored:
                for ids, rows in self.store.iter_rows():
                    self._take(ids, rows)
                    self.rebuilt += len(ids)
            else:
                self.vectors.reserve(self.store.count())  # one allocation for all (VectorIndex.reserve)
                # float16 rows go to an SQfp16 index as its codes, as read (VectorIndex.add)
                for ids, vectors in self.store.iter_vectors(stored_dtype=self.vectors.takes_float16):
                    self.vectors.add(ids, vectors)
                    self.rebuilt += len(ids)
            return
        index, arrays, seq = snapshot
        self.vectors.restore(index, arrays)
        self._snapshot_seq = seq
        touched = self.store.touched_since(seq)
        if stored:  # rows written before the snapshot too; the touched ones are redone below
            for ids, rows in self.store.iter_rows():
                in_rows = rows >= 0
                self.vectors.add_rows(ids[in_rows], rows[in_rows])
        if len(touched):
            self.vectors.remove(touched)
            if stored:
                self._take(touched, self.store.rows_of(touched))
            else:
                found_vectors, found = self.store.get_vectors(touched)
                self.vectors.add(touched[found], found_vectors[found])
            self.replayed = len(touched)
            log.info("index %s: replayed %d ids written after snapshot %d", self.name, len(touched), seq)

    def _take(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Put stored ids back in the vector index: segment rows in place, the rest (vectors
        kept in LMDB) read and added to faiss."""
        in_rows = rows >= 0
        if in_rows.any():
            self.vectors.add_rows(ids[in_rows], rows[in_rows])
        if not in_rows.all():
            vectors, found = self.store.get_vectors(ids[~in_rows])
            self.vectors.add(ids[~in_rows][found], vectors[found])

    def _read_snapshot(self) -> tuple[Any, dict[str, np.ndarray], int] | None:
        if self.directory is None or not (self.directory / SNAPSHOT_FILE).exists():
            return None
        info = json.loads((self.directory / SNAPSHOT_FILE).read_text())
        index = self.vectors.faiss.read_index(str(self.directory / info["faiss"]))
        with np.load(self.directory / info["slots"], allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        return index, arrays, int(info["seq"])

    # ---- writes ------------------------------------------------------------------------
    def add(
        self,
        ids: np.ndarray | Sequence[int],
        vectors: np.ndarray,
        texts: Sequence[str] | None = None,
        metas: Sequence[str] | None = None,
    ) -> int:
        """Store or replace documents; durable (fsynced) when this returns. Returns the count."""
        outcome = self.add_many([(ids, vectors, texts, metas)])[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def add_many(self, batches: Sequence[Batch]) -> list[int | Exception]:
        """Group commit: store several batches in one durable transaction (one fsync).

        Each batch is checked on its own: a bad batch gets its exception back and the
        others are still written. The result is the same as adding the batches one after
        the other: an id in a later batch replaces the same id in an earlier one.
        """
        return self.finish_many(self.begin_many(batches))

    def begin_many(self, batches: Sequence[Batch], on_written: Callable[[], None] | None = None) -> PendingAdd:
        """The first half of `add_many`: check the batches and start the disk write. A shard
        begins the next group before finishing this one, so that the disk syncs one group's
        vectors while the CPU checks the next; groups are finished in the order begun.
        `on_written()` is called from the writer thread once the vectors are on disk."""
        outcomes: list[int | Exception] = []
        accepted: list[tuple[np.ndarray, np.ndarray, list[str], list[str], list[dict[str, Any]]]] = []
        for batch in batches:
            try:
                checked = self._check_batch(*batch)
            except (TypeError, ValueError) as exc:
                outcomes.append(exc)
                continue
            outcomes.append(len(checked[0]))
            if len(checked[0]):
                accepted.append(checked)
        if not accepted:
            return PendingAdd(outcomes)
        if len(accepted) == 1:
            id_array, vectors, text_list, meta_list, parsed = accepted[0]
        else:
            id_array = np.concatenate([a[0] for a in accepted])
            vectors = np.concatenate([a[1] for a in accepted])
            text_list = [t for a in accepted for t in a[2]]
            meta_list = [m for a in accepted for m in a[3]]
            parsed = [p for a in accepted for p in a[4]]
            keep = last_occurrence(id_array)
            if len(keep) < len(id_array):
                id_array, vectors = id_array[keep], vectors[keep]
                text_list, meta_list = [text_list[i] for i in keep], [meta_list[i] for i in keep]
                parsed = [parsed[i] for i in keep]
        in_place = self.vectors.stored is not None and self.store.goes_to_segment(len(id_array))
        put = self.store.begin_put(id_array, vectors, text_list, meta_list, on_written)
        return PendingAdd(outcomes, put, id_array, None if in_place else vectors, parsed)

    def finish_many(self, pending: PendingAdd) -> list[int | Exception]:
        """The second half of `add_many`: commit, then make the documents searchable."""
        put, id_array = pending.put, pending.ids
        if put is None or id_array is None:
            return pending.outcomes
        if pending.vectors is None:  # searchable once committed, straight from the segment file: no copy
            _, first = self.store.finish_put(put)
            assert first is not None
            self.vectors.add_rows(id_array, np.arange(first, first + len(id_array), dtype=np.int64))
        else:
            failed: BaseException | None = None
            try:  # faiss adds while the writer thread may still be writing
                self.vectors.add(id_array, pending.vectors)
            except BaseException as exc:  # the write commits anyway: wait for it, then say so
                failed = exc
            try:
                self.store.finish_put(put)
            except BaseException:  # nothing was committed: faiss must show the stored state again
                self._restore_vectors(id_array)
                raise
            if failed is not None:  # committed, but faiss may hold part of it: show the stored state
                self._restore_vectors(id_array)
                raise failed
        self.filter.update(id_array.tolist(), pending.parsed)
        return pending.outcomes

    def written(self, pending: PendingAdd) -> bool:
        """Whether finishing `pending` would not wait for the disk."""
        return pending.put is None or pending.put.written()

    def _restore_vectors(self, ids: np.ndarray) -> None:
        self.vectors.remove(ids)
        if self.vectors.stored is not None:
            self._take(ids, self.store.rows_of(ids))
            return
        stored, found = self.store.get_vectors(ids)
        self.vectors.add(ids[found], stored[found])

    def _check_batch(
        self,
        ids: np.ndarray | Sequence[int],
        vectors: np.ndarray,
        texts: Sequence[str] | None,
        metas: Sequence[str] | None,
    ) -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[dict[str, Any]]]:
        """One batch checked and deduplicated (the last row of an id wins), before any write."""
        id_array = check_doc_ids(np.asarray(ids))
        # float16 vectors for a float16 store stay float16: stored as they came, and given to
        # an SQfp16 index as its codes (gnes/indexer/vectors.py), never converted both ways.
        vectors = check_vectors(vectors, self.config.dim, keep_float16=self.config.store_dtype == "float16")
        if len(vectors) != len(id_array):
            raise ValueError(f"got {len(id_array)} ids but {len(vectors)} vectors")
        text_list = [""] * len(id_array) if texts is None else check_strings(texts, len(id_array), "texts")
        meta_list = [""] * len(id_array) if metas is None else check_strings(metas, len(id_array), "metas")
        parsed = [parse_meta(meta) if meta else _NO_META for meta in meta_list]
        keep = last_occurrence(id_array)
        if len(keep) < len(id_array):
            id_array, vectors = id_array[keep], vectors[keep]
            text_list, meta_list = [text_list[i] for i in keep], [meta_list[i] for i in keep]
            parsed = [parsed[i] for i in keep]
        return id_array, vectors, text_list, meta_list, parsed

    def delete(self, ids: np.ndarray | Sequence[int]) -> int:
        _, existed = self.store.delete(np.asarray(ids))
        self.vectors.remove(existed)
        self.filter.remove(existed.tolist())
        self.chunks.remove_docs(existed)
        return len(existed)

    # ---- reads -------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        top_k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        filter_field: str = "",
        filter_value_json: str = "",
        return_vectors: bool = False,
    ) -> list[list[Hit]]:
        # Not built on `search_arrays`: for one query its array steps (unique with inverse,
        # moving hits first) cost 33 us more than this dict, 20% of a 10,000-vector search.
        scores, ids = self._search_vectors(queries, top_k, nprobe, ef_search, filter_field, filter_value_json)
        found = np.unique(ids[ids >= 0])
        docs = dict(zip(found.tolist(), self.store.get_docs(found), strict=True))
        stored: dict[int, np.ndarray] = {}
        if return_vectors and len(found):
            rows, _ = self.store.get_vectors(found)
            stored = dict(zip(found.tolist(), rows, strict=True))
        results = []
        for row_scores, row_ids in zip(scores.tolist(), ids.tolist(), strict=True):
            hits = []
            for score, doc_id in zip(row_scores, row_ids, strict=True):
                doc = docs.get(doc_id)
                if doc is not None:
                    hits.append(Hit(doc_id, score, doc[0], doc[1], stored.get(doc_id)))
            results.append(hits)
        return results

    def search_arrays(
        self,
        queries: np.ndarray,
        top_k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        filter_field: str = "",
        filter_value_json: str = "",
    ) -> ArrayHits:
        """The hits `search` finds, in the same order with the same scores, as arrays: no
        per-hit object, and for an index of bare vectors no read of the store at all."""
        scores, ids = self._search_vectors(queries, top_k, nprobe, ef_search, filter_field, filter_value_json)
        texts = metas = None
        if self.store.holds_docs():  # else every text and metadata is empty: not read
            valid = ids >= 0
            found, where = np.unique(ids[valid], return_inverse=True)
            docs = self.store.get_docs(found)
            stored = np.fromiter((doc is not None for doc in docs), dtype=bool, count=len(docs))
            if not stored.all():  # as `search`: a hit whose document is gone is left out
                valid[valid] = stored[where]
                where = where[stored[where]]
            ids = np.where(valid, ids, -1)
            texts = [docs[i][0] for i in where.tolist()]  # type: ignore[index]
            metas = [docs[i][1] for i in where.tolist()]  # type: ignore[index]
        scores, ids = _hits_first(scores, ids)
        return ArrayHits(scores, ids, (ids >= 0).sum(axis=1), texts, metas)

    def _search_vectors(
        self,
        queries: np.ndarray,
        top_k: int,
        nprobe: int | None,
        ef_search: int | None,
        filter_field: str,
        filter_value_json: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.config.dim, "queries")
        top_k = check_top_k(top_k)
        if filter_field:
            return self._filtered_search(queries, top_k, nprobe, ef_search, filter_field, filter_value_json)
        return self.vectors.search(queries, top_k, nprobe, ef_search)

    def _filtered_search(
        self, queries: np.ndarray, k: int, nprobe: int | None, ef_search: int | None, field: str, value_json: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss searches only the matching slots; where an approximate index finds fewer
        than k of them (a selective filter, few IVF lists probed), the matching vectors are
        scored exactly instead, so a result holds k hits whenever k documents match."""
        allowed_ids = self.filter.ids(field, value_json, self.store.iter_metas())
        scores, ids = self.vectors.search(queries, k, nprobe, ef_search, allowed_ids=allowed_ids)
        want = min(k, self.vectors.present(allowed_ids))
        if want == 0 or ((ids >= 0).sum(axis=1) >= want).all():
            return scores, ids
        vectors, found = self.store.get_vectors(allowed_ids)
        return _exact_top_k(queries, vectors[found], allowed_ids[found], want, self.config.metric)

    def get(self, ids: Sequence[int] | np.ndarray) -> list[tuple[str, str] | None]:
        return self.store.get_docs(np.asarray(ids, dtype=np.int64))

    def count(self) -> int:
        return len(self.vectors)

    def state(self) -> dict[str, Any]:
        v = self.vectors
        return {
            "name": self.name,
            "state": v.state,
            "count": len(v),
            "train_target": v.train_target,
            "error": v.last_error,
            "config": self.config.to_dict(),
            "chunks": len(self.chunks),  # chunk vectors beside the documents (gnes/indexer/chunks.py)
            # Rows in the segment file, those of replaced or deleted ids included: `compact` reclaims them.
            "segment_rows": self.store.segment_rows,
            "compacting": self.store.compaction is not None,
            "last_compaction": self.last_compaction,
        }

    def compact(self) -> dict[str, int]:
        """Reclaim the segment rows of replaced, deleted and handed-over ids (the store rewrites
        the file with the live rows only) and wait for it; the index answers exactly as before.
        Returns the segment rows before and after (`last_compaction` has its times too)."""
        self.start_compact()
        compaction = self.store.compaction
        if compaction is not None:
            compaction.wait()
            self._finish_compact()
            self.store.wait_removal()  # the replaced file is gone when this returns
        figures = self.last_compaction or {}
        return {key: figures[key] for key in ("segment_rows_before", "segment_rows")}

    def start_compact(self) -> bool:
        """Start a compaction in the background (gnes/indexer/compaction.py): searches and
        writes go on, and `poll` commits it once the copy is done. False if one is under way."""
        if self.store.compaction is not None:
            return False
        rows = self.store.segment_rows
        if self.store.begin_compact() is None:
            self.last_compaction = {"segment_rows_before": rows, "segment_rows": rows}
        return True

    def _finish_compact(self, raise_error: bool = True) -> None:
        """Commit a compaction whose copy is done. A failure (no room on disk for the new file,
        say) happens before the commit, so the old file stays named and whole: `compact` raises
        it; in the background (`poll`, a shard's loop) it is logged and kept in `last_compaction`,
        and the shard goes on serving."""
        compaction = self.store.compaction
        assert compaction is not None
        started = compaction.started
        blocked = time.monotonic()
        rows = self.store.segment_rows
        try:
            before, ids, new_rows = self.store.finish_compact()
        except Exception as exc:
            self.last_compaction = {"segment_rows_before": rows, "segment_rows": rows, "error": str(exc)}
            if raise_error:
                raise
            log.error("index %s: the compaction failed, the segment file is unchanged: %s", self.name, exc)
            return
        if ids is not None and new_rows is not None:
            self.vectors.renumber_stored(ids, new_rows)
        now = time.monotonic()
        self.last_compaction = {
            "segment_rows_before": before,
            "segment_rows": self.store.segment_rows,
            "seconds": round(now - started, 3),
            # How long the owner (a shard's loop) answered nothing: the tail and the commit.
            "blocked_seconds": round(now - blocked, 3),
        }

    # ---- training and snapshots --------------------------------------------------------
    def train_now(self) -> bool:
        return self.vectors.start_training(self.config.train_ratio)

    def wait_training(self, timeout: float | None = None) -> None:
        """Block until a background training has ended and its index is swapped in and saved."""
        self.vectors.wait_training(timeout)
        self.poll()

    def poll(self) -> None:
        """Called often by the owner: swaps in a finished background training, then saves it
        so that a restart does not train again."""
        self.chunks.poll()
        compaction = self.store.compaction
        if compaction is not None and compaction.done and not self.store.catch_up_compaction():
            self._finish_compact(raise_error=False)
        if self.vectors.poll():
            self.save()

    def save(self) -> None:
        """Write a snapshot if anything changed since the last one (trained indexes only:
        until then the store alone rebuilds the exact buffer)."""
        self.chunks.save()
        if self.directory is None or self.store.last_seq == self._snapshot_seq:
            return
        snapshot = self.vectors.snapshot()
        if snapshot is None:
            return
        index, arrays = snapshot
        seq = self.store.last_seq
        faiss_name, slots_name = f"snap-{seq}.faiss", f"snap-{seq}.npz"
        tmp = self.directory / f".{faiss_name}.tmp"
        self.vectors.faiss.write_index(index, str(tmp))
        fsync_path(tmp)
        os.replace(tmp, self.directory / faiss_name)
        tmp = self.directory / f".{slots_name}.tmp"
        with open(tmp, "wb") as out:
            np.savez(out, **arrays)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / slots_name)
        info = {"seq": seq, "faiss": faiss_name, "slots": slots_name, "state": TRAINED}
        _write_atomic(self.directory / SNAPSHOT_FILE, json.dumps(info).encode())
        for old in self.directory.glob("snap-*"):
            if old.name not in (faiss_name, slots_name):
                old.unlink(missing_ok=True)
        self._snapshot_seq = seq
        self.store.prune_log(seq)

    def close(self, save: bool = True) -> None:
        try:
            self.vectors.poll()
            if save:
                self.save()
        finally:
            self.chunks.close(save)
            self.vectors.close()
            self.store.close()

    def drop(self) -> None:
        self.close(save=False)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


def _hits_first(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's hits (id >= 0) moved before its empty places, in their order: faiss leaves
    -1 where it found nothing, and a hit without its document was just marked so."""
    empty = ids < 0
    if not empty.any():
        return scores, ids
    order = np.argsort(empty, axis=1, kind="stable")
    scores = np.where(empty, np.float32(np.nan), scores)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _exact_top_k(
    queries: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    if metric == "ip":
        scores = queries @ vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    else:
        squared = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
        scores = np.sqrt(np.maximum(squared, 0.0))
        order = np.argsort(scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1).astype(np.float32), ids[order]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
