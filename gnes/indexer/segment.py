"""An append-only file of fixed-size vector rows: the bulk of what a shard stores.

Why not LMDB values: a 784-d float32 vector (3,136 bytes) is an LMDB overflow page of its
own, copied into a dirty page, written and then fsynced with the B-tree; one bulk load spent
most of its time there (bench/bulk_load.py). Here a batch of vectors is one `pwrite` straight
from the caller's array and one `fdatasync`, and LMDB keeps only id -> row number.

The file is only trusted up to `committed` rows, a count the LMDB transaction that makes a
write durable stores with the rows' ids: a crash between the two leaves rows past it that no
id refers to, and `open` cuts them off. A row is never rewritten (an update appends a new
row), so a reader never sees a row change under it. Rows of replaced or deleted ids stay as
garbage until the file is compacted (not done yet: see `dead_rows`).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


class SegmentFile:
    """Rows of `dim` numbers of `dtype` in one file. Writes come from one thread at a time."""

    def __init__(self, path: Path, dim: int, dtype: str, committed: int, sync: bool = True) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"store_dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.path = path
        self.dim = dim
        self.dtype = DTYPES[dtype]
        self.row_bytes = dim * self.dtype.itemsize
        self.sync = sync
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        size = os.fstat(self._fd).st_size
        if size < committed * self.row_bytes:
            os.close(self._fd)
            raise ValueError(f"{path}: {size} bytes, but the store committed {committed} rows of {self.row_bytes}")
        if size > committed * self.row_bytes:
            os.ftruncate(self._fd, committed * self.row_bytes)  # rows of a write that never committed
        self.committed = committed
        self._map: mmap.mmap | None = None
        self._view: np.ndarray | None = None

    def write(self, vectors: np.ndarray) -> int:
        """Write rows after the committed ones (durably if `sync`); return the first row's number.

        They count only once the caller commits the new total with `mark_committed`; a
        write that is never committed is overwritten by the next one.
        """
        rows = np.ascontiguousarray(vectors, dtype=self.dtype)
        first = self.committed
        data = memoryview(rows).cast("B")
        offset, done = first * self.row_bytes, 0
        while done < len(data):  # pwrite may write less than asked
            done += os.pwrite(self._fd, data[done:], offset + done)
        if self.sync:
            os.fdatasync(self._fd)
        return first

    def mark_committed(self, rows: int) -> None:
        self.committed = rows

    def read(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), dim] for committed row numbers."""
        view = self._rows()
        if len(rows) > 1 and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return view[rows[0] : rows[-1] + 1].astype(np.float32)  # consecutive rows: no gather
        return np.asarray(view[rows], dtype=np.float32)

    def _rows(self) -> np.ndarray:
        """The committed rows as a read-only array over a memory map, remapped when the file grew."""
        if self._view is None or len(self._view) < self.committed:
            if self.committed == 0:
                return np.zeros((0, self.dim), dtype=self.dtype)
            self._map = mmap.mmap(self._fd, self.committed * self.row_bytes, access=mmap.ACCESS_READ)
            self._view = np.frombuffer(self._map, dtype=self.dtype).reshape(self.committed, self.dim)
        return self._view

    def close(self) -> None:
        # Arrays handed out by `read` are copies, so dropping the map here is safe.
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still referenced somewhere: the GC unmaps it later
                pass
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
