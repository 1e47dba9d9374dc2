"""The durable half of a logical index: documents, vectors and a change log.

Vectors of large writes are rows of an append-only segment file (gnes/indexer/segment.py);
LMDB holds the documents, id -> row number (or the vector itself, for small writes), the
number of committed rows, and the change log. Every write
is one LMDB transaction that stores the documents and row numbers *and* appends a change-log
record (sequence number -> ids touched); the rows were written (and fdatasync'd) to the
segment file just before, while the caller did its own work (`put(meanwhile=...)`). With
`sync=True` both are on disk before `put`/`delete` return, so a caller may acknowledge the
write: this is the write-ahead log. The faiss index is only a cache of the vectors that is
snapshotted now and then; on restart, the ids touched after the snapshot's sequence number
are replayed from here. A `kill -9` at any moment therefore loses nothing that was
acknowledged (rows past the committed count are cut off at open), and replay is idempotent
(an id is re-read from its final state), so nothing is duplicated. Values are a small
self-made format: reading them never runs code (unlike pickle).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from .checks import check_doc_ids, check_strings
from .compaction import Compaction, copy_tail, row_values, untouched
from .segment import DTYPES, SegmentFile

_DOC_VERSION = b"\x01"
_HEADER = 5
_OP_PUT, _OP_DELETE = b"P", b"D"
_MAX_MAP_BYTES = 1 << 40
_CATCH_UP_ROWS, _CATCH_UPS = 16384, 8  # see IndexStore.catch_up_compaction
_COMMIT_GROUP = 16  # begun writes committed together at most (one fdatasync, one transaction)
# The default LMDB map is 64 GiB of address space (the file grows only as pages are used):
# growing the map needs no transaction open in the process, and writes commit in the writer
# thread while searches read, so growth must stay the rare exception (over 64 GiB of LMDB).
_COMMITTED, _DTYPE = b"committed", b"dtype"
# The file name of the segment in use: absent for the first (vectors-<dtype>.seg); a compaction
# writes the live rows to the next generation and names it here in the commit that maps the ids.
_SEGMENT = b"segment"
# Whether any document ever written had text or metadata: b"\x01" yes, b"\x00" no (a store of
# bare vectors); absent in stores written before it was kept (found out by a scan, once).
_CONTENT, _NO, _YES = b"content", b"\x00", b"\x01"
# A write's vectors below this many bytes stay in LMDB, next to their documents: one commit
# and its syncs, where a segment write would add an fdatasync of its own (a pipeline's
# batches of 100 took 1.7 times as long). From here up they go to the segment file, from a
# thread, overlapped with the caller's work.
_SEGMENT_BYTES = 1 << 20
# id -> where its vector is: 8 bytes are a row number of the segment file; b"V" + the row is
# the vector itself (row sizes are even, so the two never have the same length).
_INLINE = b"V"


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError as exc:
        raise ImportError(f"the index store needs lmdb: install gnes[lmdb] ({exc})") from exc
    return lmdb


def encode_doc(text: str, meta_json: str) -> bytes:
    if not text and not meta_json:
        return _EMPTY_DOC
    text_bytes = text.encode()
    return b"".join((_DOC_VERSION, len(text_bytes).to_bytes(4, "big"), text_bytes, meta_json.encode()))


_EMPTY_DOC = _DOC_VERSION + bytes(4)


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


class PendingPut:
    """A write begun by `IndexStore.begin_put`, committed by the store's writer thread."""

    __slots__ = (
        "ids",
        "keys",
        "docs",
        "first",
        "locations",
        "vectors",
        "done",
        "result",
        "error",
        "on_written",
        "order",
        "content",
    )

    def __init__(self, ids: np.ndarray, keys: list[bytes], docs: list[tuple[bytes, bytes]]) -> None:
        self.ids, self.keys, self.docs = ids, keys, docs
        self.first: int | None = None  # the first segment row, for a large write
        self.locations: list[bytes] = []  # inline vectors, for a small one
        self.vectors: np.ndarray | None = None  # the rows to write, until they are written
        self.done = threading.Event()
        self.result: tuple[int, int | None] = (0, None)
        self.error: BaseException | None = None
        self.on_written: Callable[[], None] | None = None
        self.order = 0  # the how-many-th write of rows this is (0: no rows)
        self.content = False  # the first text or metadata the store holds: the commit records it

    def written(self) -> bool:
        """True once the write is committed (or failed): finishing it will not wait."""
        return self.done.is_set()


class IndexStore:
    """doc id -> (text, meta_json) and doc id -> vector (float32 or float16 rows), plus the change log.

    `path=None` keeps the store in a temporary directory removed by `close()`.
    Not thread-safe: one shard's loop thread owns it.
    """

    def __init__(
        self, path: Path | None, dim: int, sync: bool = True, map_size_mb: int = 64 << 10, dtype: str = "float32"
    ) -> None:
        self.dim = dim
        self._sync = sync
        self._temp_dir: Path | None = None
        lmdb = _import_lmdb()
        if dtype not in DTYPES:
            raise ValueError(f"store_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if path is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="gnes-index-"))
            path = self._temp_dir
        path.mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size_mb << 20, sync=sync, max_dbs=5)
        try:  # a store that does not open (wrong dtype, short segment file) leaves nothing open
            self._docs = self._env.open_db(b"docs")
            self._rows = self._env.open_db(b"rows")
            self._log = self._env.open_db(b"log")
            self._meta = self._env.open_db(b"meta")
            with self._env.begin() as txn:
                cursor = txn.cursor(db=self._log)
                self._seq = int.from_bytes(cursor.key(), "big") if cursor.last() else 0
                committed = int.from_bytes(txn.get(_COMMITTED, b"", db=self._meta), "little")
                stored_dtype = bytes(txn.get(_DTYPE, dtype.encode(), db=self._meta)).decode()
                segment_name = bytes(txn.get(_SEGMENT, f"vectors-{dtype}.seg".encode(), db=self._meta)).decode()
            if stored_dtype != dtype:
                raise ValueError(f"{path}: the store holds {stored_dtype} vectors, the configuration asks for {dtype}")
            self._path, self._dtype_name = path, dtype
            seg_path = path / segment_name
            _remove_other_segments(path, dtype, keep=segment_name)  # what a compaction cut short left
            new_file = not seg_path.exists()
            self._segment = SegmentFile(seg_path, dim, dtype, committed, sync=sync)
            self._next_row = committed  # the first row free for a write begun now
            self._pending: deque[PendingPut] = deque()  # begun, not finished: oldest first
            self._queue: queue.SimpleQueue[PendingPut | None] = queue.SimpleQueue()  # for the writer thread
            self._to_commit: queue.SimpleQueue[PendingPut | None] = queue.SimpleQueue()
            self._rows_written = 0  # row writes done by the first writer thread (it alone counts)
            self._writer: threading.Thread | None = None
            self._committer: threading.Thread | None = None
            self._compaction: Compaction | None = None
            self._removal: threading.Thread | None = None  # removes the file a compaction replaced
            # Rows written during a compaction's copy, from which it copies them in its thread
            # again before the commit (which blocks the owner) rather than in the commit.
            self.catch_up_rows = _CATCH_UP_ROWS
            if new_file and sync:
                fsync_path(path)  # the file itself must survive a machine crash, not only its rows
            self._write(lambda txn: txn.put(_DTYPE, dtype.encode(), db=self._meta))
            self._migrate_lmdb_vectors()
            with self._env.begin() as txn:
                self._count = int(txn.stat(self._rows)["entries"])
                content = txn.get(_CONTENT, db=self._meta)
            self._content: bool | None = None if content is None else bytes(content) == _YES
            if content is None and self._count == 0:  # a new store: known to hold no text yet
                self._write(lambda txn: txn.put(_CONTENT, _NO, db=self._meta))
                self._content = False
        except BaseException:
            self.close()
            raise

    def _migrate_lmdb_vectors(self) -> None:
        """Stores written before segment files kept float32 vectors in LMDB: move them once."""
        vecs = self._env.open_db(b"vectors")
        with self._env.begin(buffers=False) as txn:
            items = list(txn.cursor(db=vecs))
        if not items:
            return
        keys = [key for key, _ in items]
        vectors = np.frombuffer(b"".join(value for _, value in items), dtype=np.float32).reshape(len(items), self.dim)
        first = self._segment.committed
        self._segment.write(vectors, first)

        def work(txn: Any) -> None:
            txn.cursor(db=self._rows).putmulti(zip(keys, _row_values(first, len(keys)), strict=True))
            txn.put(_COMMITTED, (first + len(keys)).to_bytes(8, "little"), db=self._meta)
            txn.drop(vecs, delete=True)

        self._write(work)
        self._segment.mark_committed(first + len(keys))

    @property
    def last_seq(self) -> int:
        """The sequence number of the last committed write (0: none since the log was pruned empty)."""
        return self._seq

    @property
    def segment_rows(self) -> int:
        """Rows in the segment file, those of replaced or deleted ids included (until `compact`)."""
        return self._segment.committed

    @property
    def compaction(self) -> Compaction | None:
        """The compaction under way, if any (gnes/indexer/compaction.py)."""
        return self._compaction

    def begin_compact(self) -> Compaction | None:
        """Start rewriting the segment file with only the rows that ids still name, in a thread;
        searches and writes go on meanwhile. None when the file is empty. The owner calls
        `finish_compact` once `done`, between writes (see compaction.py)."""
        self._no_pending()
        if self._compaction is not None:
            return self._compaction
        before = self._segment.committed
        if before == 0:
            return None
        gen = 1 + _segment_generation(self._segment.path.name)
        name = f"vectors-{self._dtype_name}.{gen}.seg"
        job = Compaction(
            self._path / name,
            self.dim,
            self._dtype_name,
            self._sync,
            before,
            self._segment.view(),
            self._segment_ids,
            id_keys,
        )
        self._compaction = job
        return job

    def finish_compact(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """Commit a compaction whose copy is done: (rows before, the ids that moved, their new
        rows), or (rows, None, None) where no row was dead when it began. Crash-safe: the new
        file is complete and synced first, and one LMDB commit maps every id to it and names
        it; a file that commit does not name is removed at the next open. The log is not
        touched: every id keeps its vector, only where it lives changes."""
        self._no_pending()
        job = self._compaction
        if job is None or not job.done:
            raise RuntimeError("no compaction has finished its copy")
        self._compaction = None
        try:
            if job.error is not None:
                raise job.error
            if len(job.ids) == job.before:  # every row was live: the copy is dropped
                job.discard()
                return self._segment.committed, None, None
            keep = untouched(job.by_id, job.touched)
            keys, values = job.keys, job.values
            if not keep.all():  # ids written or deleted meanwhile are looked up again below
                keys, values = list(compress(keys, keep)), list(compress(values, keep))
            ids, rows = job.by_id[keep], job.by_id_rows[keep]
            touched = np.unique(np.concatenate(job.touched)) if job.touched else np.zeros(0, dtype=np.int64)
            tail = self._segment.committed - job.before
            moved, new_rows = job.new_rows(self.rows_of(touched), tail)
            # What was written since the last copy in the thread (all of the tail, if none caught up).
            copy_tail(job.fresh, self._segment.view()[job.copied_to :], len(job.ids) + job.copied_to - job.before)
            job.fresh.flush()
            if self._sync:
                fsync_path(self._path)  # the new file's name survives a machine crash
            ids, rows = np.concatenate([ids, touched[moved]]), np.concatenate([rows, new_rows])
            total = len(job.ids) + tail
            name = job.path.name

            def work(txn: Any) -> None:
                cursor = txn.cursor(db=self._rows)
                cursor.putmulti(zip(keys, values, strict=True))
                cursor.putmulti(zip(id_keys(touched[moved]), row_values(new_rows), strict=True))
                txn.put(_COMMITTED, total.to_bytes(8, "little"), db=self._meta)
                txn.put(_SEGMENT, name.encode(), db=self._meta)

            self._write(work)
        except BaseException:
            job.discard()
            raise
        job.fresh.mark_committed(total)
        old, self._segment = self._segment, job.fresh
        self._next_row = total
        # Removing the old file frees its pages from the page cache: 0.28 s for 1.2 GB here, three
        # quarters of what the commit blocked. Nothing reads it any more (searches map the new file,
        # the copy is done), and a crash before it is gone is cleaned up at the next open.
        self.wait_removal()
        self._removal = threading.Thread(target=_remove_segment, args=(old,), name="gnes-remove-segment")
        self._removal.start()
        return job.before, ids, rows

    def wait_removal(self) -> None:
        """Wait until the segment file a compaction replaced is closed and removed."""
        if self._removal is not None:
            self._removal.join()
            self._removal = None

    def catch_up_compaction(self) -> bool:
        """Where a compaction's copy is done but `catch_up_rows` or more rows were written since
        it last copied, copy those in its thread too (at most `_CATCH_UPS` times: a write rate
        above the copy's would never let it end) and return True; the owner then waits again."""
        job = self._compaction
        if job is None or not job.done or job.error is not None or len(job.ids) == job.before:
            return False
        if self._segment.committed - job.copied_to < self.catch_up_rows or job.catch_ups >= _CATCH_UPS:
            return False
        job.catch_up(self._segment.view())
        return True

    def cancel_compact(self) -> None:
        if self._compaction is not None:
            job, self._compaction = self._compaction, None
            job.cancel()

    def _segment_ids(self) -> tuple[np.ndarray, np.ndarray]:
        """The ids whose vectors are segment rows, and those rows, in row order. Read by a
        compaction's thread in short transactions (`_walk_short`): an id that moves between two
        of them was written or deleted since the compaction began, and it looks those up again."""
        parts = [(ids[rows >= 0], rows[rows >= 0]) for ids, rows in self._walk_short(65536, _rows_or_minus_one)]
        ids = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        rows = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        return ids[order], rows[order]

    def count(self) -> int:
        return self._count

    def goes_to_segment(self, n: int) -> bool:
        """Whether a write of n vectors puts them in the segment file (else next to their documents)."""
        return n * self._segment.row_bytes >= _SEGMENT_BYTES

    def segment_view(self) -> np.ndarray | None:
        """The segment file's committed rows as float32 in its own pages, or None for a
        float16 store (its rows would need converting to be searched)."""
        return self._segment.view() if self._segment.dtype == np.dtype("<f4") else None

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Segment row of each id; -1 where the vector is kept in LMDB or the id is absent."""
        with self._env.begin(buffers=False) as txn:
            values = [txn.get(key, db=self._rows) for key in id_keys(check_doc_ids(ids))]
        return _rows_or_minus_one(values)

    def iter_rows(self, batch: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored (ids, segment rows with -1 for vectors kept in LMDB), in id order;
        no vector is read."""
        return self._walk(batch, _rows_or_minus_one)

    def put(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        metas: Sequence[str],
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int | None]:
        """Store (or replace) the documents durably; return the write's sequence number and
        the first of its segment rows (None when its vectors stay in LMDB). `meanwhile()`
        runs in this thread while the writer thread writes; the write is committed even if
        it raises (its exception is raised after the commit)."""
        pending = self.begin_put(ids, vectors, texts, metas)
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            result = self.finish_put(pending)
        return result

    def begin_put(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        texts: Sequence[str],
        metas: Sequence[str],
        on_written: Callable[[], None] | None = None,
    ) -> PendingPut:
        """Check and encode a write, then hand it to the store's writer thread, which writes
        the vectors of a large write to the segment file (pwrite, fdatasync) and commits the
        LMDB transaction, one write after the other, in the order begun. The caller goes on
        (with the next write, say) and collects the outcome with `finish_put`;
        `on_written()` is called from the writer thread once the write is committed or failed.

        Why one thread does every disk step: an LMDB fsync issued while a segment file's
        fdatasync was in flight waited for the device to drain it, 48 ms per commit instead
        of 11 (10,000 x 784-d rows per write), and the shard waited on it."""
        ids = check_doc_ids(ids)
        text_list = check_strings(texts, len(ids), "texts")
        meta_list = check_strings(metas, len(ids), "metas")
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {vectors.shape}")
        keys = id_keys(ids)
        # Encode everything first: a text that is not valid Unicode fails before any write.
        docs = list(zip(keys, map(encode_doc, text_list, meta_list), strict=True))
        pending = PendingPut(ids, keys, docs)
        pending.on_written = on_written
        pending.content = not self._content and (any(text_list) or any(meta_list))
        if self.goes_to_segment(len(ids)):
            pending.first = self._next_row
            pending.vectors = vectors
            self._next_row += len(ids)
        else:
            rows = np.ascontiguousarray(vectors, dtype=self._segment.dtype).tobytes()
            size = self._segment.row_bytes
            pending.locations = [_INLINE + rows[i * size : (i + 1) * size] for i in range(len(ids))]
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="gnes-store-rows", daemon=True)
            self._committer = threading.Thread(target=self._commit_loop, name="gnes-store-commit", daemon=True)
            self._writer.start()
            self._committer.start()
        self._pending.append(pending)
        self._queue.put(pending)
        return pending

    def finish_put(self, pending: PendingPut) -> tuple[int, int | None]:
        """Wait for a begun write to be committed; the oldest begun first. Raises its error."""
        if not self._pending or self._pending[0] is not pending:
            raise RuntimeError("writes must be finished in the order they were begun")
        pending.done.wait()
        self._pending.popleft()
        if not self._pending:  # the writer is idle: rows taken by writes that failed are free again
            self._next_row = self._segment.committed
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _write_loop(self) -> None:
        """The first writer thread: the rows of each begun write, into the page cache."""
        while True:
            pending = self._queue.get()
            if pending is not None and pending.vectors is not None and pending.first is not None:
                try:
                    self._segment.write(pending.vectors, pending.first, sync=False)
                except BaseException as exc:  # raised by finish_put() in the owner's thread
                    pending.error = exc
                pending.vectors = None
                self._rows_written += 1
                pending.order = self._rows_written
            self._to_commit.put(pending)
            if pending is None:
                return

    def _commit_loop(self) -> None:
        """The second writer thread: one fdatasync, then one LMDB transaction, for every
        write whose rows are written by the time it looks (group commit: the flushes, not the
        bytes, were what a device busy with rows made slow)."""
        synced = 0  # writes whose rows are durable: the first `synced` row writes
        while True:
            group = [self._to_commit.get()]
            while group[-1] is not None and len(group) < _COMMIT_GROUP:
                try:
                    group.append(self._to_commit.get_nowait())
                except queue.Empty:
                    break
            stop = group[-1] is None
            todo = [p for p in group if p is not None and p.error is None]
            try:
                if any(p.order > synced for p in todo):
                    written = self._rows_written  # read before the flush: it covers at least these
                    self._segment.flush()
                    synced = written
                if todo:
                    self._commit_puts(todo)
            except BaseException as exc:  # nothing of the group was committed
                for p in todo:
                    p.error = exc
            for p in group:
                if p is not None:
                    p.done.set()
                    if p.on_written is not None:
                        p.on_written()
            if stop:
                return

    def _commit_puts(self, group: list[PendingPut]) -> None:
        """Commit writes in one transaction, each with a log record (sequence number) of its own."""
        seq, total = self._seq, self._segment.committed
        records = []
        for pending in group:
            seq += 1
            first, n = pending.first, len(pending.ids)
            # An earlier write that failed leaves its rows below a later one's: garbage no id names.
            total = total if first is None else max(total, first + n)
            records.append((pending, seq, pending.locations if first is None else _row_values(first, n)))

        content = any(pending.content for pending in group)

        def work(txn: Any) -> int:
            docs, rows, log = txn.cursor(db=self._docs), txn.cursor(db=self._rows), txn.cursor(db=self._log)
            for pending, number, locations in records:
                docs.putmulti(pending.docs)
                rows.putmulti(zip(pending.keys, locations, strict=True))
                log.put(_seq_key(number), _OP_PUT + pending.ids.astype("<i8").tobytes())
            txn.put(_COMMITTED, total.to_bytes(8, "little"), db=self._meta)
            if content:
                txn.put(_CONTENT, _YES, db=self._meta)
            # The transaction's own view counts the new keys; replaced ones are not new.
            return int(txn.stat(self._rows)["entries"])

        self._count = self._write(work)
        if self._compaction is not None:  # the compaction looks these ids up again (compaction.py)
            self._compaction.touched.extend(pending.ids for pending in group)
        if content:
            self._content = True
        self._segment.mark_committed(total)
        self._seq = seq
        for pending, number, _ in records:
            pending.result = (number, pending.first)

    def _no_pending(self) -> None:
        if self._pending:
            raise RuntimeError("finish the pending writes first")

    def delete(self, ids: np.ndarray) -> tuple[int, np.ndarray]:
        """Delete durably; return (sequence number, the ids that existed)."""
        self._no_pending()
        ids = np.unique(check_doc_ids(ids))
        seq = self._seq + 1

        def work(txn: Any) -> list[int]:
            existed = [
                int(doc_id)
                for doc_id, key in zip(ids.tolist(), id_keys(ids), strict=True)
                if txn.delete(key, db=self._rows)
            ]
            for key in id_keys(ids):
                txn.delete(key, db=self._docs)
            txn.put(_seq_key(seq), _OP_DELETE + ids.astype("<i8").tobytes(), db=self._log)
            return existed

        existed = self._write(work)
        if self._compaction is not None:
            self._compaction.touched.append(ids)
        self._count -= len(existed)
        self._seq = seq
        return seq, np.asarray(existed, dtype=np.int64)

    def get_docs(self, ids: Sequence[int] | np.ndarray) -> list[tuple[str, str] | None]:
        keys = id_keys(check_doc_ids(np.asarray(ids, dtype=np.int64)))
        with self._env.begin(buffers=False) as txn:
            values = [txn.get(key, db=self._docs) for key in keys]
        return [None if value is None else decode_doc(value) for value in values]

    def get_vectors(self, ids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (float32 vectors [n, dim], found mask [n]); rows of missing ids are zero."""
        ids = check_doc_ids(np.asarray(ids, dtype=np.int64))
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        with self._env.begin(buffers=False) as txn:
            values = [txn.get(key, db=self._rows) for key in id_keys(ids)]
        found = np.fromiter((value is not None for value in values), dtype=bool, count=len(values))
        if found.any():
            out[found] = self._vectors_at([v for v in values if v is not None])
        return out, found

    def _vectors_at(self, locations: list[bytes], dtype: Any = np.float32, copy: bool = True) -> np.ndarray:
        """Rows (float32, or `dtype`) for values of the rows database: segment row numbers or
        inline vectors; `copy=False` as SegmentFile.read takes it."""
        inline = np.fromiter((len(v) != 8 for v in locations), dtype=bool, count=len(locations))
        if not inline.any():  # a bulk load's rows: straight from the segment file, no extra copy
            refs = np.frombuffer(b"".join(locations), dtype="<u8").astype(np.int64)
            return self._segment.read(refs, dtype, copy)
        out = np.empty((len(locations), self.dim), dtype=dtype)
        if not inline.all():
            refs = b"".join(v for v in locations if len(v) == 8)
            out[~inline] = self._segment.read(np.frombuffer(refs, dtype="<u8").astype(np.int64), dtype)
        raw = b"".join(v[1:] for v in locations if len(v) != 8)  # some are inline: returned above if none
        out[inline] = np.frombuffer(raw, dtype=self._segment.dtype).reshape(-1, self.dim)
        return out

    def iter_vectors(self, batch: int = 65536, stored_dtype: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every stored (ids, float32 vectors), in id order, `batch` rows at a time. With
        `stored_dtype`, the vectors as the store keeps them (float16 for a float16 store), and
        where they are consecutive rows a read-only view of the file's pages, valid while the
        walk goes on (a rebuild hands them to faiss, which copies them: no copy before)."""
        if not stored_dtype:
            return self._walk(batch, self._vectors_at)
        return self._walk(batch, lambda locations: self._vectors_at(locations, self._segment.dtype, copy=False))

    def _walk(self, batch: int, read: Callable[[list[bytes]], np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, read(values of the rows database)) in id order, `batch` at a time."""
        with self._env.begin(buffers=False) as txn:
            # One iterator for the whole walk: a new one would yield the current row again.
            walk = iter(txn.cursor(db=self._rows))
            while True:
                items = [item for _, item in zip(range(batch), walk, strict=False)]
                if not items:
                    return
                yield _key_ids(items), read([value for _, value in items])

    def _walk_short(
        self, batch: int, read: Callable[[list[bytes]], np.ndarray]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`_walk` in one read transaction per batch: a reader held open keeps LMDB from
        reusing freed pages, and growing the map (`_write`) must find none open. Each batch
        goes on from the id after the last one's."""
        start = b""
        while True:
            with self._env.begin(buffers=False) as txn:
                cursor = txn.cursor(db=self._rows)
                if not (cursor.set_range(start) if start else cursor.first()):
                    return
                items = [item for _, item in zip(range(batch), cursor, strict=False)]
            ids = _key_ids(items)
            yield ids, read([value for _, value in items])
            if len(items) < batch:
                return
            start = (int(ids[-1]) + 1).to_bytes(8, "big")

    def ids(self) -> np.ndarray:
        """Every stored id, in id order (keys only: no vector is read)."""
        with self._env.begin(buffers=True) as txn:
            raw = b"".join(bytes(key) for key in txn.cursor(db=self._rows).iternext(keys=True, values=False))
        return np.frombuffer(raw, dtype=">u8").astype(np.int64)

    def holds_docs(self) -> bool:
        """Whether any document written has text or metadata (deleted since or not): kept in
        the store, so an index of bare vectors knows it without reading its documents."""
        if self._content is None:  # a store from before the flag: look once (stops at the first)
            with self._env.begin(buffers=True) as txn:
                values = txn.cursor(db=self._docs).iternext(keys=False, values=True)
                self._content = any(value != _EMPTY_DOC for value in values)
        return self._content

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
        self._no_pending()
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
        if getattr(self, "_compaction", None) is not None:
            self.cancel_compact()  # the old file stays named: nothing is lost
        if getattr(self, "_removal", None) is not None:
            self.wait_removal()
        writer = getattr(self, "_writer", None)
        if writer is not None:  # what was begun is committed first (nobody waits for it, though)
            self._queue.put(None)
            writer.join()
            if self._committer is not None:
                self._committer.join()
            self._writer = self._committer = None
        if hasattr(self, "_segment"):  # absent when opening failed before it
            self._segment.close()
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def _key_ids(items: list[tuple[bytes, bytes]]) -> np.ndarray:
    """The doc ids of (key, value) items of an id-keyed database (8-byte big-endian keys)."""
    return np.frombuffer(b"".join(key for key, _ in items), dtype=">u8").astype(np.int64)


def _rows_or_minus_one(values: list[bytes | None]) -> np.ndarray:
    """Row numbers from values of the rows database; -1 for inline vectors and absent ids."""
    rows = np.full(len(values), -1, dtype=np.int64)
    refs = [i for i, v in enumerate(values) if v is not None and len(v) == 8]
    if refs:
        rows[refs] = np.frombuffer(b"".join(values[i] for i in refs), dtype="<u8").astype(np.int64)  # type: ignore[misc]
    return rows


def _remove_segment(segment: SegmentFile) -> None:
    segment.close()
    segment.path.unlink(missing_ok=True)


def _segment_generation(name: str) -> int:
    """0 for vectors-<dtype>.seg, N for vectors-<dtype>.N.seg (written by the Nth compaction)."""
    parts = name.split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def _remove_other_segments(path: Path, dtype: str, keep: str) -> None:
    """Segment files of this dtype that the store does not name: a compaction's new file whose
    commit never happened, or the old file of one that committed but did not get to remove it."""
    for other in path.glob(f"vectors-{dtype}*.seg"):
        if other.name != keep:
            other.unlink(missing_ok=True)


def _row_values(first: int, n: int) -> list[bytes]:
    return row_values(np.arange(first, first + n, dtype=np.int64))


def fsync_path(path: Path) -> None:
    """fsync a file, or a directory (so that a file created or renamed in it survives a crash)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
