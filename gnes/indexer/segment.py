"""An append-only file of fixed-size vector rows: the bulk of what a shard stores.

Why not LMDB values: a 784-d float32 vector (3,136 bytes) is an LMDB overflow page of its
own, copied into a dirty page, written and then fsynced with the B-tree; one bulk load spent
most of its time there (bench/bulk_load.py). Here a batch of vectors is one `pwrite` straight
from the caller's array and one `fdatasync`, and LMDB keeps only id -> row number.

The file is only trusted up to `committed` rows, a count the LMDB transaction that makes a
write durable stores with the rows' ids: a crash between the two leaves rows past it that no
id refers to, and `open` cuts them off. A row is never rewritten (an update appends a new
row), so a reader never sees a row change under it. Rows of replaced or deleted ids stay as
garbage until the file is compacted (gnes/indexer/compaction.py).

`view()` maps the file once with room to grow (address space only): a flat index searches
its rows right there (gnes/indexer/stored_rows.py), so a bulk load writes each vector once,
into the page cache, instead of also copying it into faiss's memory; first-touch page faults
made that copy cost more than the memcpy itself on this machine (0.5 GB/s against 8 GB/s).
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}
# The first reservation of address space for `view()`; it doubles as the file outgrows it.
_RESERVE_BYTES = 1 << 30
_PROT_READ, _MAP_SHARED = 0x1, 0x01


def _libc_mmap() -> tuple[object, object] | None:
    """libc's mmap/munmap: Python's mmap refuses a length beyond the file's size, which is
    exactly what a mapping that the file grows into needs. None where there is no libc."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        do_map, do_unmap = libc.mmap, libc.munmap
    except (OSError, AttributeError):
        return None
    do_map.restype = ctypes.c_void_p
    do_map.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    do_unmap.restype = ctypes.c_int
    do_unmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return do_map, do_unmap


_LIBC = _libc_mmap()


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
        # (address, length) of every reservation made by `view()`: an outgrown one stays
        # mapped until close, so that an array taken from it never points at freed memory.
        self._reserved: list[tuple[int, int]] = []

    def write(self, vectors: np.ndarray, first: int, sync: bool = True) -> None:
        """Write rows from row `first` on, at or after the committed ones (and `flush` them
        if `sync`).

        They count only once the caller commits a total that covers them with
        `mark_committed`; rows that are never committed are overwritten by a later write.
        Several writes to rows of their own may run at once, each in its own thread.
        """
        if first < self.committed:
            raise ValueError(f"row {first} is committed already ({self.committed} rows)")
        rows = np.ascontiguousarray(vectors, dtype=self.dtype)
        data = memoryview(rows).cast("B")
        offset, done = first * self.row_bytes, 0
        # Through the page cache: O_DIRECT writes (no copy, 0.05 s of CPU instead of 1.27 s
        # for 755 MB) were measured slower end to end, since each LMDB fsync then waited for
        # the direct write in flight (140 ms per commit instead of 20).
        while done < len(data):  # pwrite may write less than asked
            done += os.pwrite(self._fd, data[done:], offset + done)
        if sync:
            self.flush()

    def flush(self) -> None:
        """Make every row written so far durable (when the store syncs at all)."""
        if self.sync:
            os.fdatasync(self._fd)

    def mark_committed(self, rows: int) -> None:
        self.committed = max(self.committed, rows)

    def read(self, rows: np.ndarray, dtype: Any = np.float32, copy: bool = True) -> np.ndarray:
        """float32 (or `dtype`) [len(rows), dim] for committed row numbers: a copy, unless
        `copy` is False and the rows are consecutive in the file's dtype (then a read-only view
        of its pages, valid until `close`)."""
        view = self._rows()
        if len(rows) > 1 and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
            return view[rows[0] : rows[-1] + 1].astype(dtype, copy=copy)  # consecutive rows: no gather
        return np.asarray(view[rows], dtype=dtype)

    def view(self) -> np.ndarray:
        """The committed rows, read-only, in the file's own pages (no copy). Valid until `close`."""
        return self._rows()

    def _rows(self) -> np.ndarray:
        if self.committed == 0:
            return np.zeros((0, self.dim), dtype=self.dtype)
        needed = self.committed * self.row_bytes
        if _LIBC is None:  # no libc: a plain map of what is committed, remade when the file grew
            if self._view is None or len(self._view) < self.committed:
                self._map = mmap.mmap(self._fd, needed, access=mmap.ACCESS_READ)
                self._view = np.frombuffer(self._map, dtype=self.dtype).reshape(self.committed, self.dim)
            return self._view[: self.committed]
        if not self._reserved or self._reserved[-1][1] < needed:
            length = max(_RESERVE_BYTES, 2 * needed)
            address = _LIBC[0](None, length, _PROT_READ, _MAP_SHARED, self._fd, 0)
            if address in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), f"{self.path}: cannot map {length} bytes")
            self._reserved.append((address, length))
        address = self._reserved[-1][0]
        raw = (ctypes.c_char * needed).from_address(address)
        rows = np.frombuffer(raw, dtype=self.dtype).reshape(self.committed, self.dim)
        rows.flags.writeable = False  # the pages are mapped read-only: a write would crash
        return rows

    def close(self) -> None:
        # Arrays handed out by `read` are copies, so dropping the map here is safe.
        self._view = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view is still referenced somewhere: the GC unmaps it later
                pass
            self._map = None
        if _LIBC is not None:
            for address, length in self._reserved:
                _LIBC[1](address, length)
            self._reserved = []
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
