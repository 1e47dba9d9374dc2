"""The faiss half of a logical index: searchable at every moment, trained in the background.

faiss labels are *slots*, not doc ids: every add takes fresh slots, and `_slot_ids` maps
a slot back to its doc id. Re-adding (updating) a doc kills its old slot. Index types
that can remove (flat, IVF) drop dead slots at once; those that cannot (HNSW) keep them
and every search excludes them with a bitmap selector. So updates and deletes work for
every type without rebuilding a graph.

Trained types start with an exact flat buffer. Once `train_target` vectors have arrived
(or training is asked for), a thread trains a fresh index on a copy of the buffer and
adds the copy to it (faiss releases the GIL meanwhile), while the buffer keeps taking
adds and answering searches. The owner calls `poll()` from its own thread; when the
thread is done, `poll()` moves the adds that arrived meanwhile into the new index and
swaps it in. Only the owner's thread ever touches the live indexes, so no lock is needed.

A flat index may also hold `stored` rows (gnes/indexer/stored_rows.py): vectors of bulk
writes searched in the store's segment file instead of being copied into faiss. A search
asks both parts and merges their top-k; an id lives in one part at a time.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from .config import IndexConfig
from .stored_rows import StoredRows

log = logging.getLogger(__name__)

NOT_TRAINED, TRAINING, ADDING, TRAINED = "not_trained", "training", "adding", "trained"
_POINTS_PER_CENTROID = 39  # below this faiss's k-means warns
_FALLBACK_TRAIN_NUM = 256


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"the vector index needs faiss: install gnes[faiss] ({exc})") from exc
    return faiss


# faiss 1.15 scores queries one by one while queries x dims < distance_compute_blas_threshold
# (128,000 by default) and with BLAS from there. Measured on 2 cores, 1 thread: one by one wins
# below 4 queries (one 784-d query on 30,000 rows: 3.6 ms against 12.2 with BLAS; one 64-d on
# 10,000: 137 us against 331) and BLAS from 4 up (100 x 784-d on 30,000: 0.074 s against 0.70
# one by one, bench/recall.py).
BLAS_FROM_QUERIES = 4


class VectorIndex:
    """Slot-labelled faiss index with a flat buffer until trained. Not thread-safe: one owner."""

    def __init__(self, config: IndexConfig) -> None:
        self.faiss = faiss = import_faiss()
        self.config = config
        self.metric_type = faiss.METRIC_INNER_PRODUCT if config.metric == "ip" else faiss.METRIC_L2
        if config.uses_gpu and faiss.get_num_gpus() == 0:
            raise ValueError("index_type ivf_gpu needs faiss with a GPU; this machine's faiss has none")
        template = self._new_inner()
        self.kind = _kind_of(faiss, template)
        self.removable = _supports_remove(template)
        # An SQfp16 index's codes are the vectors' float16 bytes: float16 rows go in as codes.
        self.takes_float16 = _float16_codes(faiss, template) and not config.uses_gpu
        self.train_target = self._train_target(template)
        self.main: Any = None if self.train_target else self._wrap(template)
        self.buffer: Any = (
            faiss.IndexIDMap2(faiss.IndexFlat(config.dim, self.metric_type)) if self.train_target else None
        )
        self.state = NOT_TRAINED if self.train_target else TRAINED
        self.last_error = ""
        self._slot_ids = np.full(1024, -1, dtype=np.int64)
        self._alive = np.zeros(1024, dtype=bool)
        self._next_slot = 0
        self._id_slot: dict[int, int] = {}
        self._dead_in_index = 0  # dead slots still inside a non-removable active index
        self._bitmap: np.ndarray | None = None  # packed `_alive`, cached until it changes
        self._thread: threading.Thread | None = None
        self._trained: Any = None
        self._snapshot_next = 0
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.stored: StoredRows | None = None

    def attach_stored(self, view: Any) -> bool:
        """Search bulk rows in place (`view()`: the store's committed float32 rows); only a
        flat index can, since every other type keeps its own encoding of the vectors."""
        if self.kind != "flat" or self.train_target or self.config.uses_gpu:
            return False
        self.stored = StoredRows(self.faiss, view, self.config.metric, self.config.dim)
        return True

    def renumber_stored(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """After the store compacted its segment file: every stored id at its new row."""
        if self.stored is not None:
            self.stored.renumber(ids, rows)

    # ---- building ----------------------------------------------------------------------
    def _new_inner(self) -> Any:
        faiss = self.faiss
        try:
            inner = faiss.index_factory(self.config.dim, self.config.factory, self.metric_type)
        except RuntimeError as exc:
            raise ValueError(f"invalid faiss factory {self.config.factory!r}: {str(exc).strip()[:200]}") from exc
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None and self.config.nprobe:
            ivf.nprobe = self.config.nprobe
        hnsw = getattr(faiss.downcast_index(inner), "hnsw", None)
        if hnsw is not None:
            if self.config.ef_search:
                hnsw.efSearch = self.config.ef_search
            if self.config.ef_construction:
                hnsw.efConstruction = self.config.ef_construction
        if self.config.uses_gpu:
            inner = faiss.index_cpu_to_all_gpus(inner)
        return inner

    def _wrap(self, inner: Any) -> Any:
        """IVF indexes store ids natively (and IndexIDMap cannot remove from them); the
        others need faiss's id map to carry slot labels."""
        return inner if self.kind == "ivf" else self.faiss.IndexIDMap2(inner)

    def _train_target(self, inner: Any) -> int:
        if inner.is_trained:
            return 0
        faiss = self.faiss
        ivf = faiss.try_extract_index_ivf(inner)
        centroids = [ivf.nlist] if ivf is not None else []
        for part in (inner, ivf, getattr(faiss.downcast_index(inner), "storage", None)):
            pq = getattr(faiss.downcast_index(part), "pq", None) if part is not None else None
            if pq is not None:
                centroids.append(pq.ksub)
        needed = max(centroids) if centroids else 1
        if self.config.train_num:
            if self.config.train_num < needed:
                raise ValueError(
                    f"train_num {self.config.train_num} is too small: {self.config.factory!r} needs {needed}"
                )
            return self.config.train_num
        return _POINTS_PER_CENTROID * needed if centroids else _FALLBACK_TRAIN_NUM

    @property
    def active(self) -> Any:
        return self.main if self.buffer is None else self.buffer

    # ---- counts and slots --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._id_slot) + (len(self.stored) if self.stored is not None else 0)

    def ids(self) -> np.ndarray:
        own = np.fromiter(self._id_slot, dtype=np.int64, count=len(self._id_slot))
        return own if self.stored is None else np.concatenate([own, self.stored.ids()])

    def slots_of(self, ids: np.ndarray) -> np.ndarray:
        get = self._id_slot.get
        return np.asarray([s for s in (get(int(i)) for i in ids) if s is not None], dtype=np.int64)

    def present(self, ids: np.ndarray) -> int:
        """How many of these ids the index holds, in either part."""
        stored = len(self.stored.rows_of(ids)) if self.stored is not None and len(self.stored) else 0
        return len(self.slots_of(ids)) + stored

    def _grow(self, needed: int) -> None:
        if needed <= len(self._slot_ids):
            return
        size = max(needed, 2 * len(self._slot_ids))
        self._slot_ids = np.concatenate([self._slot_ids, np.full(size - len(self._slot_ids), -1, dtype=np.int64)])
        self._alive = np.concatenate([self._alive, np.zeros(size - len(self._alive), dtype=bool)])

    # ---- writes ------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace; `ids` must be distinct (the logical index dedups a batch first)."""
        if len(ids) == 0:
            return
        self.remove(ids)
        first = self._next_slot
        slots = np.arange(first, first + len(ids), dtype=np.int64)
        self._grow(first + len(ids))
        self._slot_ids[slots] = ids
        self._alive[slots] = True
        self._next_slot += len(ids)
        self._id_slot.update(zip(ids.tolist(), slots.tolist(), strict=True))
        self._bitmap = None
        if vectors.dtype == np.float16 and self.takes_float16 and self.buffer is None:
            # Copied as they are: converting to float32 and faiss encoding back cost 2.6 times as
            # long (200,000 x 768: 1.11 s against 0.42 s, one thread).
            self.active.add_sa_codes(vectors.view(np.uint8).reshape(len(vectors), -1), slots)
        else:
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self.active.add_with_ids(vectors, slots)
        if self._thread is not None:
            self._pending.append((slots, vectors.copy()))  # the caller may reuse its array
        # With train_ratio the whole data set is not known yet: training waits to be asked for.
        auto = not self.config.train_ratio
        if auto and self.state == NOT_TRAINED and self.buffer is not None and len(self) >= self.train_target:
            self.start_training()

    def add_rows(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Add or replace with committed rows of the store's segment file (see `attach_stored`)."""
        if self.stored is None:
            raise RuntimeError("this index keeps no stored rows")
        self.remove(ids)
        self.stored.add(ids, rows)

    def reserve(self, n: int) -> int:
        """Room for n more vectors in an index that keeps one array of codes (flat, SQ, HNSW's
        storage); how many were reserved (0: nothing to do). faiss grows that array by doubling
        it, which copies every vector held: adding 20,000 x 768 float16 took 17 ms, but 3.1 s for
        the add that crossed 640,000. A bulk loader that says how many it sends first avoids it."""
        codes = None if self.buffer is not None or self.stored is not None else _flat_codes(self.faiss, self.main)
        if codes is None or n <= 0:
            return 0
        held = codes.ntotal * codes.code_size
        codes.codes.resize(held + n * codes.code_size)  # one allocation (and one copy of what is held)
        codes.codes.resize(held)  # the size back; the room stays
        return n

    def remove(self, ids: np.ndarray) -> int:
        removed = self.stored.remove(ids) if self.stored is not None and len(self.stored) else 0
        return removed + self._remove_own(ids)

    def _remove_own(self, ids: np.ndarray) -> int:
        if not self._id_slot:
            return 0
        pop = self._id_slot.pop
        slots = [s for s in map(pop, np.asarray(ids).tolist(), [None] * len(ids)) if s is not None]
        if not slots:
            return 0
        dead = np.asarray(slots, dtype=np.int64)
        self._alive[dead] = False
        self._bitmap = None
        if self.buffer is not None or self.removable:
            self.active.remove_ids(dead)
        else:
            self._dead_in_index += len(dead)
        return len(dead)

    # ---- training ----------------------------------------------------------------------
    def start_training(self, sample_ratio: float = 0.0) -> bool:
        """Train in the background on (a sample of) what the buffer holds; False if not applicable."""
        if self.buffer is None or self._thread is not None or len(self) == 0:
            return False
        slots = self.faiss.vector_to_array(self.buffer.id_map).copy()
        vectors = self.buffer.index.reconstruct_n(0, self.buffer.ntotal)
        self._snapshot_next = self._next_slot
        self._pending = []
        self.state, self.last_error = TRAINING, ""
        self._thread = threading.Thread(
            target=self._train, args=(slots, vectors, sample_ratio), name="gnes-train", daemon=True
        )
        self._thread.start()
        return True

    def _train(self, slots: np.ndarray, vectors: np.ndarray, sample_ratio: float) -> None:
        """Runs in the training thread and touches nothing but its own new index."""
        try:
            sample = vectors
            if 0 < sample_ratio < 1:
                rng = np.random.default_rng(0)
                size = max(int(len(vectors) * sample_ratio), min(len(vectors), self.train_target))
                sample = vectors[np.sort(rng.choice(len(vectors), size=size, replace=False))]
            index = self._wrap(self._new_inner())
            index.train(sample)
            self.state = ADDING
            index.add_with_ids(vectors, slots)
            self._trained = (index, slots)
        except Exception as exc:  # reported through state and the log by poll()
            self._trained = exc

    def poll(self) -> bool:
        """Swap in a finished background index; return True when that happened."""
        if self._thread is None or self._thread.is_alive():
            return False
        self._thread.join()
        self._thread, result = None, self._trained
        self._trained = None
        if isinstance(result, Exception):
            self.state, self.last_error = NOT_TRAINED, f"training failed: {result}"
            log.error("%s", self.last_error)
            self._pending = []
            return False
        result, snapshot_slots = result
        # Slots that died during training are still in the new index.
        dead = snapshot_slots[~self._alive[snapshot_slots]]
        if len(dead):
            if self.removable:
                result.remove_ids(dead)
            else:
                self._dead_in_index += len(dead)
        for slots, vectors in self._pending:
            keep = self._alive[slots]
            if keep.any():
                result.add_with_ids(np.ascontiguousarray(vectors[keep]), slots[keep])
        self._pending = []
        self.main, self.buffer, self.state = result, None, TRAINED
        return True

    @property
    def is_training(self) -> bool:
        """True from the start of a background training until `poll()` has swapped it in."""
        return self._thread is not None

    def wait_training(self, timeout: float | None = None) -> None:
        """Wait for a background training to end; the owner's next `poll()` swaps it in."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ---- search ------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        nprobe: int | None = None,
        ef_search: int | None = None,
        allowed_ids: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores [q, k'], doc ids [q, k'] padded with -1); `allowed_ids`: the ids a filter admits."""
        # Set per search: the threshold is one for the whole process, and is counted in floats.
        self.faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_QUERIES * self.config.dim
        allowed = None if allowed_ids is None else self.slots_of(allowed_ids)
        scores, ids = self._search_own(queries, k, nprobe, ef_search, allowed)
        if self.stored is not None and len(self.stored):
            more_scores, more_ids = self.stored.search(queries, k, allowed_ids)
            scores, ids = _merge(scores, ids, more_scores, more_ids, k, self.config.metric == "ip")
        if self.config.metric == "l2":
            scores = np.sqrt(np.maximum(scores, 0.0))  # faiss returns squared distances
        return scores, ids

    def _search_own(
        self, queries: np.ndarray, k: int, nprobe: int | None, ef_search: int | None, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The faiss part's raw top-k (squared L2 distances or inner products)."""
        k = min(k, len(self._id_slot) if allowed is None else len(allowed))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        faiss = self.faiss
        bitmap = None
        if allowed is not None:
            mask = np.zeros(len(self._alive), dtype=bool)
            mask[allowed] = True
            bitmap = np.packbits(mask & self._alive, bitorder="little")
        elif self._dead_in_index and self.buffer is None:
            if self._bitmap is None:
                self._bitmap = np.packbits(self._alive, bitorder="little")
            bitmap = self._bitmap
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)) if bitmap is not None else None
        params = None
        if self.buffer is None and self.kind == "ivf" and (nprobe or selector):
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe or faiss.extract_index_ivf(self.main).nprobe
        elif self.buffer is None and self.kind == "hnsw" and (ef_search or selector):
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef_search or faiss.downcast_index(self.main.index).hnsw.efSearch
        elif selector is not None:
            params = faiss.SearchParameters()
        if params is not None and selector is not None:
            params.sel = selector
        scores, slots = self.active.search(queries, k, params=params)
        ids = np.where(slots >= 0, self._slot_ids[np.maximum(slots, 0)], -1)
        return scores, ids

    # ---- snapshots ---------------------------------------------------------------------
    def snapshot(self) -> tuple[Any, dict[str, np.ndarray]] | None:
        """(faiss index, slot arrays) to save, or None while only the buffer holds vectors:
        the store can rebuild a buffer exactly, so it is not worth writing."""
        if self.buffer is not None:
            return None
        n = self._next_slot
        return self.main, {"slot_ids": self._slot_ids[:n].copy(), "alive": self._alive[:n].copy()}

    def restore(self, index: Any, arrays: dict[str, np.ndarray]) -> None:
        slot_ids, alive = arrays["slot_ids"].astype(np.int64), arrays["alive"].astype(bool)
        if index.d != self.config.dim or index.metric_type != self.metric_type:
            raise ValueError("the snapshot does not match the index configuration (dimension or metric)")
        if len(slot_ids) != len(alive):
            raise ValueError("the snapshot's slot arrays disagree")
        self.main, self.buffer, self.state = index, None, TRAINED
        n = len(slot_ids)
        self._grow(n)
        self._slot_ids[:n], self._alive[:n] = slot_ids, alive
        self._next_slot = n
        live = np.flatnonzero(alive)
        self._id_slot = dict(zip(slot_ids[live].tolist(), live.tolist(), strict=True))  # 5x a comprehension
        self._dead_in_index = 0
        if not self.removable:
            in_index = self.faiss.vector_to_array(index.id_map)
            self._dead_in_index = int((~alive[in_index]).sum()) if len(in_index) else 0
        self._bitmap = None

    def close(self) -> None:
        # A training thread cannot be interrupted (faiss); it only ever touches its own new
        # index, so it is left to finish or to die with the process. Its result is dropped.
        self._thread = None
        self.main = self.buffer = self._trained = None


def _merge(
    scores: np.ndarray, ids: np.ndarray, more_scores: np.ndarray, more_ids: np.ndarray, k: int, big_is_better: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of two top-k lists per query; padding (-1 ids) sorts last."""
    if scores.shape[1] == 0:
        return more_scores, more_ids
    if more_scores.shape[1] == 0:
        return scores, ids
    all_scores = np.concatenate([scores, more_scores], axis=1)
    all_ids = np.concatenate([ids, more_ids], axis=1)
    key = np.where(all_ids >= 0, -all_scores if big_is_better else all_scores, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(all_scores, order, axis=1), np.take_along_axis(all_ids, order, axis=1)


def _kind_of(faiss: Any, inner: Any) -> str:
    if faiss.try_extract_index_ivf(inner) is not None:
        return "ivf"
    if getattr(faiss.downcast_index(inner), "hnsw", None) is not None:
        return "hnsw"
    return "flat"


def _flat_codes(faiss: Any, index: Any) -> Any:
    """The IndexFlatCodes (one array of codes) inside an id map or an HNSW, or None."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap):
        index = faiss.downcast_index(index.index)
    storage = getattr(index, "storage", None)
    if storage is not None:
        index = faiss.downcast_index(storage)
    return index if isinstance(index, faiss.IndexFlatCodes) else None


def _float16_codes(faiss: Any, inner: Any) -> bool:
    """Whether the index stores each vector as its float16 bytes (faiss SQfp16)."""
    inner = faiss.downcast_index(inner)
    return isinstance(inner, faiss.IndexScalarQuantizer) and inner.sq.qtype == faiss.ScalarQuantizer.QT_fp16


def _supports_remove(inner: Any) -> bool:
    """Ask faiss rather than keeping a list of types: removing nothing raises if unsupported."""
    try:
        inner.remove_ids(np.zeros(0, dtype=np.int64))
    except RuntimeError:
        return False
    return True
