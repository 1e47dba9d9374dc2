"""The durable half of a logical index: documents, their vectors and a change log, in LMDB.

Every write is one LMDB transaction that stores the documents and vectors *and* appends
a change-log record (sequence number -> ids touched). With `sync=True` the commit is
fsynced before `put`/`delete` return, so a caller may acknowledge the write: this is the
write-ahead log. The faiss index is only a cache of the vectors that is snapshotted now
and then; on restart, the ids touched after the snapshot's sequence number are replayed
from here. A `kill -9` at any moment therefore loses nothing that was acknowledged, and
replay is idempotent (an id is re-read from its final state), so nothing is duplicated.
Values are a small self-made format: reading them never runs code (unlike pickle).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_doc_ids, check_strings

_DOC_VERSION = b"\x01"
_HEADER = 5
_OP_PUT, _OP_DELETE = b"P", b"D"
_MAX_MAP_BYTES = 1 << 40


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(f"the index store needs lmdb: install gnes[lmdb] ({exc})") from exc
    return lmdb


def encode_doc(text: str, meta_json: str) -> bytes:
    text_bytes = text.encode()
    return b"".join((_DOC_VERSION, len(text_bytes).to_bytes(4, "big"), text_bytes, meta_json.encode()))


def decode_doc(value: bytes) -> tuple[str, str]:
    if value[:1] != _DOC_VERSION:
        raise ValueError(f"unknown document format version {value[:1]!r}")
    end = _HEADER + int.from_bytes(value[1:_HEADER], "big")
    return value[_HEADER:end].decode(), value[end:].decode()


def id_keys(ids: np.ndarray) -> list[bytes]:
    """8-byte big-endian keys, so LMDB's byte order is numeric order."""
    raw = ids.astype(">u8").tobytes()
    return [raw[start : start + 8] for start in range(0, len(raw), 8)]


def _seq_key(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


class IndexStore:
    """doc id -> (text, meta_json) and doc id -> float32 vector, plus the change log.

    `path=None` keeps the store in a temporary directory removed by `close()`.
    Not thread-safe: one shard's loop thread owns it.
    """

    def __init__(self, path: Path | None, dim: int, sync: bool = True, map_size_mb: int = 256) -> None:
        self.dim = dim
        self._sync = sync
        self._temp_dir: Path | None = None
        lmdb = _import_lmdb()
        if path is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="gnes-index-"))
            path = self._temp_dir
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size_mb << 20, sync=sync, max_dbs=4)
        self._docs = self._env.open_db(b"docs")
        self._vecs = self._env.open_db(b"vectors")
        self._log = self._env.open_db(b"log")
        with self._env.begin() as txn:
            cursor = txn.cursor(db=self._log)
            self._seq = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
            self._count = int(txn.stat(self._vecs)["entries"])

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed write (0: none since the log was pruned empty)."""
        return self._seq

    def count(self) -> int:
        return self._count

    def put(self, ids: np.ndarray, vectors: np.ndarray, texts: Sequence[str], metas: Sequence[str]) -> int:
        """Store (or replace) the documents durably in one transaction; return its sequence number."""
        ids = check_doc_ids(ids)
        text_list = check_strings(texts, len(ids), "texts")
        meta_list = check_strings(metas, len(ids), "metas")
        keys = id_keys(ids)
        # Encode everything first: a text that is not valid Unicode fails before any write.
        docs = list(zip(keys, map(encode_doc, text_list, meta_list), strict=True))
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        row = self.dim * 4
        raw = vecs.tobytes()
        vec_items = [(key, raw[i * row : (i + 1) * row]) for i, key in enumerate(keys)]
        seq = self._seq + 1

        def work(txn: Any) -> int:
            txn.cursor(db=self._docs).putmulti(docs)
            txn.cursor(db=self._vecs).putmulti(vec_items)
            txn.put(_seq_key(seq), _OP_PUT + ids.astype("<i8").tobytes(), db=self._log)
            # The transaction's own view counts the new keys; replaced ones are not new.
            return int(txn.stat(self._vecs)["entries"])

        self._count = self._write(work)
        self._seq = seq
        return seq

    def delete(self, ids: np.ndarray) -> tuple[int, np.ndarray]:
        """Delete durably; return (sequence number, the ids that existed)."""
        ids = np.unique(check_doc_ids(ids))
        seq = self._seq + 1

        def work(txn: Any) -> list[int]:
            existed = [
                int(doc_id)
                for doc_id, key in zip(ids.tolist(), id_keys(ids), strict=True)
                if txn.delete(key, db=self._vecs)
            ]
            for key in id_keys(ids):
                txn.delete(key, db=self._docs)
            txn.put(_seq_key(seq), _OP_DELETE + ids.astype("<i8").tobytes(), db=self._log)
            return existed

        existed = self._write(work)
        self._count -= len(existed)
        self._seq = seq
        return seq, np.asarray(existed, dtype=np.int64)

    def get_docs(self, ids: Sequence[int] | np.ndarray) -> list[tuple[str, str] | None]:
        keys = id_keys(check_doc_ids(np.asarray(ids, dtype=np.int64)))
        with self._env.begin(buffers=False) as txn:
            values = [txn.get(key, db=self._docs) for key in keys]
        return [None if value is None else decode_doc(value) for value in values]

    def get_vectors(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (vectors [n, dim], found mask [n]); rows of missing ids are zero."""
        ids = check_doc_ids(np.asarray(ids, dtype=np.int64))
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        found = np.zeros(len(ids), dtype=bool)
        with self._env.begin(buffers=True) as txn:
            for row, key in enumerate(id_keys(ids)):
                value = txn.get(key, db=self._vecs)
                if value is not None:
                    out[row] = np.frombuffer(value, dtype=np.float32)
                    found[row] = True
        return out, found

    def iter_vectors(self, batch: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored (ids, vectors), in id order, `batch` rows at a time."""
        with self._env.begin(buffers=True) as txn:
            ids: list[int] = []
            rows: list[np.ndarray] = []
            for key, value in txn.cursor(db=self._vecs):
                ids.append(int.from_bytes(bytes(key), "big"))
                rows.append(np.frombuffer(value, dtype=np.float32).copy())
                if len(ids) == batch:
                    yield np.asarray(ids, dtype=np.int64), np.stack(rows)
                    ids, rows = [], []
            if ids:
                yield np.asarray(ids, dtype=np.int64), np.stack(rows)

    def ids(self) -> np.ndarray:
        """Every stored id, in id order (keys only: no vector is read)."""
        with self._env.begin(buffers=True) as txn:
            raw = b"".join(bytes(key) for key in txn.cursor(db=self._vecs).iternext(keys=True, values=False))
        return np.frombuffer(raw, dtype=">u8").astype(np.int64)

    def iter_metas(self) -> Iterator[tuple[int, str]]:
        with self._env.begin(buffers=False) as txn:
            for key, value in txn.cursor(db=self._docs):
                yield int.from_bytes(key, "big"), decode_doc(value)[1]

    def touched_since(self, seq: int) -> np.ndarray:
        """The distinct ids written or deleted by log records after `seq`."""
        parts = [np.zeros(0, dtype=np.int64)]
        with self._env.begin(buffers=True) as txn:
            cursor = txn.cursor(db=self._log)
            if cursor.set_range(_seq_key(seq + 1)):
                for _, value in cursor:
                    parts.append(np.frombuffer(bytes(value)[1:], dtype="<i8").astype(np.int64))
        return np.unique(np.concatenate(parts))

    def prune_log(self, upto_seq: int) -> None:
        """Drop log records up to `upto_seq`, once a snapshot covers them. The last record
        is kept so that the sequence number survives a restart."""
        upto_seq = min(upto_seq, self._seq - 1)

        def work(txn: Any) -> None:
            cursor = txn.cursor(db=self._log)
            if not cursor.first():
                return
            while cursor.key() and int.from_bytes(cursor.key(), "big") <= upto_seq:
                if not cursor.delete():
                    break

        self._write(work)

    def _write(self, work: Any) -> Any:
        """Run `work(txn)` in a write transaction, growing the map when it is full."""
        lmdb = _import_lmdb()
        while True:
            try:
                with self._env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                # The failed transaction was aborted, so retrying after growing is safe.
                size = self._env.info()["map_size"] * 2
                if size > _MAX_MAP_BYTES:
                    raise
                self._env.set_mapsize(size)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
