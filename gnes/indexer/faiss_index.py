"""A faiss vector index keyed by doc id, with a flat buffer for index types that need training."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..component import Component, check_int, check_optional_int, check_str
from .base import check_doc_ids, check_top_k, check_vectors, last_occurrence

_METRICS = ("ip", "l2")
# faiss's k-means warns below 39 training points per centroid; a product quantizer
# trains one k-means with `ksub` centroids per sub-vector.
_POINTS_PER_CENTROID = 39
_FALLBACK_TRAIN_NUM = 256


def import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise ImportError(f"FaissIndexer needs faiss: install gnes[faiss] ({exc})") from exc
    return faiss


class FaissIndexer(Component):
    """Vectors only: `add(ids, vectors)`, `search(queries, k) -> (scores, ids)`, `remove(ids)`.

    The faiss index built from `index_factory` is wrapped in `IndexIDMap2`, so faiss labels
    are doc ids; re-adding an id replaces its vector. Index types that need training
    (e.g. "IVF16,Flat") collect vectors in an exact flat buffer, which is what gets searched
    and saved, until `train_num` have arrived (0: as many as faiss needs, 39 per centroid);
    then the index is trained on all of them and they move in. So at any time exactly
    one of the two holds the vectors. Types faiss cannot remove from (HNSW) are rebuilt from
    their stored vectors on removal: O(n), and exact only for Flat storage.
    For "l2" the scores are Euclidean distances (faiss computes squares). Not thread-safe.
    """

    def __init__(
        self,
        dim: int,
        index_factory: str = "Flat",
        metric: str = "ip",
        train_num: int = 0,
        nprobe: int | None = None,
        ef_search: int | None = None,
    ) -> None:
        super().__init__()
        self._dim = check_int("dim", dim, minimum=1)
        self.index_factory = check_str("index_factory", index_factory)
        if "IDMap" in index_factory:
            raise ValueError("index_factory must not contain IDMap: FaissIndexer adds the id map itself")
        self._metric = check_str("metric", metric, _METRICS)
        self.train_num = check_int("train_num", train_num, minimum=0)
        self.nprobe = check_optional_int("nprobe", nprobe, minimum=1)
        self.ef_search = check_optional_int("ef_search", ef_search, minimum=1)
        self._path: Path | None = None
        self._main: Any = None  # IndexIDMap2 around the factory index
        self._buffer: Any = None  # IndexIDMap2 around a flat index, until the main one is trained
        self._ids: set[int] = set()  # membership test for replace-on-add; faiss has none
        self._removable = True
        self._train_target = 0
        self._dirty = False

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def ntotal(self) -> int:
        self._require_started()
        return len(self._ids)

    @property
    def is_trained(self) -> bool:
        self._require_started()
        return self._buffer is None

    def start(self, path: Path | None = None) -> None:
        if self._started:
            return
        faiss = import_faiss()
        metric_type = faiss.METRIC_INNER_PRODUCT if self._metric == "ip" else faiss.METRIC_L2
        try:
            inner = faiss.index_factory(self._dim, self.index_factory, metric_type)
        except RuntimeError as exc:
            raise ValueError(f"invalid index_factory {self.index_factory!r}: {exc}") from exc
        self._removable = _supports_remove(inner)
        self._train_target = self._check_train_num(faiss, inner)
        main = faiss.IndexIDMap2(inner)
        path = Path(path) if path is not None else None
        if path is not None and path.exists():
            main = self._read(faiss, path, inner, metric_type)
        buffer = None
        if not inner.is_trained:
            if isinstance(faiss.downcast_index(main.index), faiss.IndexFlat):
                # A file saved before training holds the buffer.
                main, buffer = faiss.IndexIDMap2(inner), main
            elif not main.is_trained:
                buffer = faiss.IndexIDMap2(faiss.IndexFlat(self._dim, metric_type))
        self._apply_search_params(faiss, main)
        self._path, self._main, self._buffer = path, main, buffer
        self._ids = set(faiss.vector_to_array(self._active().id_map).tolist())
        self._dirty = False
        super().start()

    def _active(self) -> Any:
        """The index that holds the vectors now: the buffer until trained, then the main one."""
        return self._main if self._buffer is None else self._buffer

    def _check_train_num(self, faiss: Any, inner: Any) -> int:
        if inner.is_trained:
            return 0
        ivf = faiss.try_extract_index_ivf(inner)
        centroids = [ivf.nlist] if ivf is not None else []
        for part in (inner, ivf, getattr(faiss.downcast_index(inner), "storage", None)):
            pq = getattr(faiss.downcast_index(part), "pq", None) if part is not None else None
            if pq is not None:
                centroids.append(pq.ksub)
        if not self.train_num:
            return _POINTS_PER_CENTROID * max(centroids) if centroids else _FALLBACK_TRAIN_NUM
        if centroids and self.train_num < max(centroids):
            raise ValueError(
                f"train_num {self.train_num} is too small: {self.index_factory!r} needs at least {max(centroids)}"
            )
        return self.train_num

    def _read(self, faiss: Any, path: Path, inner: Any, metric_type: int) -> Any:
        loaded = faiss.read_index(str(path))
        if not isinstance(loaded, faiss.IndexIDMap2):
            raise ValueError(f"{path} was not written by FaissIndexer (not an IndexIDMap2)")
        if loaded.d != self._dim:
            raise ValueError(f"{path} holds vectors of dimension {loaded.d}, but dim is {self._dim}")
        if loaded.metric_type != metric_type:
            raise ValueError(f"{path} was built with a different metric than {self._metric!r}")
        stored = faiss.downcast_index(loaded.index)
        is_buffer = not inner.is_trained and isinstance(stored, faiss.IndexFlat)
        if not is_buffer and not isinstance(stored, type(inner)):
            raise ValueError(
                f"{path} holds a {type(stored).__name__}, not what index_factory {self.index_factory!r} builds"
            )
        return loaded

    def _apply_search_params(self, faiss: Any, main: Any) -> None:
        for name, faiss_name, value in (("nprobe", "nprobe", self.nprobe), ("ef_search", "efSearch", self.ef_search)):
            if value is None:
                continue
            try:
                faiss.ParameterSpace().set_index_parameter(main, faiss_name, value)
            except RuntimeError as exc:
                raise ValueError(f"{name} does not apply to index_factory {self.index_factory!r}") from exc

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> int:
        """Add or replace vectors; return how many distinct ids were stored."""
        self._require_started()
        ids = check_doc_ids(ids)
        vectors = check_vectors(vectors, self._dim)
        if len(ids) != len(vectors):
            raise ValueError(f"got {len(ids)} doc ids but {len(vectors)} vectors")
        if len(ids) == 0:
            return 0
        keep = last_occurrence(ids)
        if len(keep) < len(ids):
            ids, vectors = ids[keep], vectors[keep]
        id_list = ids.tolist()
        replaced = [doc_id for doc_id in id_list if doc_id in self._ids]
        if self._buffer is not None and len(self._ids) - len(replaced) + len(ids) >= self._train_target:
            self._train_with(ids, vectors)
        else:
            if replaced:
                self._remove_stored(np.asarray(replaced, dtype=np.int64))
            self._active().add_with_ids(vectors, ids)
        self._ids.update(id_list)
        self._dirty = True
        return len(ids)

    def _train_with(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Train on the buffer plus this batch, then move all of it into the main index."""
        faiss = import_faiss()
        buffered_ids = faiss.vector_to_array(self._buffer.id_map)
        buffered = self._buffer.index.reconstruct_n(0, self._buffer.ntotal)
        kept = ~np.isin(buffered_ids, ids)  # ids in this batch replace buffered ones
        all_ids = np.concatenate([buffered_ids[kept], ids])
        all_vectors = np.ascontiguousarray(np.concatenate([buffered[kept], vectors]))
        # Training is the step that can fail; nothing has changed until it succeeded.
        self._main.train(all_vectors)
        self._main.add_with_ids(all_vectors, all_ids)
        self._buffer = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores float32 [q, k'], ids int64 [q, k']) with k' = min(k, ntotal).

        Rows are sorted best first. An approximate index may find fewer than k' vectors:
        the rest is padded with id -1 and the worst possible score.
        """
        self._require_started()
        queries = check_vectors(queries, self._dim, "queries")
        k = min(check_top_k(k), len(self._ids))
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        scores, labels = self._active().search(queries, k)
        if self._metric == "l2":
            scores = np.sqrt(np.maximum(scores, 0.0))
        return scores, labels

    def remove(self, ids: np.ndarray) -> int:
        """Remove vectors by id; return how many were present."""
        self._require_started()
        present = sorted({doc_id for doc_id in check_doc_ids(ids).tolist() if doc_id in self._ids})
        if present:
            self._remove_stored(np.asarray(present, dtype=np.int64))
            self._ids.difference_update(present)
            self._dirty = True
        return len(present)

    def _remove_stored(self, ids: np.ndarray) -> None:
        if self._buffer is not None:
            self._buffer.remove_ids(ids)
        elif self._removable:
            self._main.remove_ids(ids)
        else:
            self._main = self._rebuilt_without(ids)

    def _rebuilt_without(self, ids: np.ndarray) -> Any:
        faiss = import_faiss()
        all_ids = faiss.vector_to_array(self._main.id_map)
        vectors = self._main.index.reconstruct_n(0, self._main.ntotal)
        kept = ~np.isin(all_ids, ids)
        rebuilt = faiss.clone_index(self._main)  # keeps training and search parameters
        rebuilt.reset()
        rebuilt.add_with_ids(np.ascontiguousarray(vectors[kept]), all_ids[kept])
        return rebuilt

    def save(self) -> None:
        """Write the index to its path atomically; a no-op in memory or when unchanged."""
        if not self._started or self._path is None or not self._dirty:
            return
        faiss = import_faiss()
        path = self._path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self._active(), str(tmp))
            _fsync(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        _fsync(path.parent)  # make the rename itself durable
        self._dirty = False

    def close(self) -> None:
        try:
            self.save()
        finally:
            self._main = self._buffer = None
            self._ids = set()
            super().close()


def _supports_remove(inner: Any) -> bool:
    """Ask faiss rather than keeping a list of index types: removing nothing raises if unsupported."""
    try:
        inner.remove_ids(np.zeros(0, dtype=np.int64))
    except RuntimeError:
        return False
    return True


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
