"""Segment compaction in the background: the shard keeps answering while the live rows are copied.

A compaction rewrites the segment file with only the rows that ids still name. Copying them is
the long part (400,000 x 768-d float32 rows took 5.3 s here, bench/README.md), and a shard that
did it in its loop thread answered nothing meanwhile: every query to it waited, and so did its
callers. Here the copy runs in a thread of its own, in three steps:

1. `begin` (the owner's thread, no write pending): note the committed row count `before` and a
   view of those rows, and start recording the ids that writes and deletes touch from now on.
2. The thread: read the id -> row map (its own LMDB read transaction), keep the ids whose rows are
   below `before`, copy their rows, in row order, into a new segment file, and flush it.
3. `finish` (the owner's thread again, no write pending, the copy done): every id touched since
   step 1 is looked up afresh. Its row, if it still has one, was appended after `before`: the rows
   from `before` to the end (the tail, what came in during the copy) are copied after the others.
   One LMDB commit maps every id to its new row and names the new file, then the old file goes.

Searches and writes go on against the old file until step 3, which blocks the shard for the tail
and the commit only. A crash at any point leaves either the old file named (the new one is
removed at the next open) or the new one complete and named: gnes/indexer/store.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .segment import SegmentFile

_COPY_ROWS = 65536  # rows copied at a time: a gather copy of bounded size


class Compaction:
    """One compaction of a store's segment file; made and finished by `IndexStore`."""

    def __init__(
        self,
        path: Path,
        dim: int,
        dtype: str,
        sync: bool,
        before: int,
        old_rows: np.ndarray,
        walk: Callable[[], tuple[np.ndarray, np.ndarray]],
        keys_of: Callable[[np.ndarray], list[bytes]],
    ) -> None:
        self.path = path
        self.before = before  # committed rows when it began: the ones the thread copies from
        self.started = time.monotonic()
        self.touched: list[np.ndarray] = []  # ids written or deleted since it began (any thread)
        self.ids = np.zeros(0, dtype=np.int64)  # the ids copied, in their new row order
        # The same ids in id order with their new rows, and as LMDB keys and values: made here
        # so that the owner's commit only puts them (a third of its time for 200,000 ids).
        self.by_id = self.by_id_rows = np.zeros(0, dtype=np.int64)
        self.keys: list[bytes] = []
        self.values: list[bytes] = []
        self.error: BaseException | None = None
        # Old rows before this one are in the new file: `before` once the copy is done, further
        # after each catch-up with the rows written meanwhile (`catch_up`).
        self.copied_to = before
        self.catch_ups = 0
        self.fresh = SegmentFile(path, dim, dtype, 0, sync=sync)
        self._old_rows = old_rows  # the old file's first `before` rows, in its own pages
        self._walk = walk
        self._keys_of = keys_of
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="gnes-compaction", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def catch_up(self, old_rows: np.ndarray) -> None:
        """Copy, in a thread again, the rows written since the last copy (`old_rows`: the old
        file's committed rows, as the owner sees them now), so that the final commit, which
        blocks the owner, copies only what comes in after this. Once the copy is `done`."""
        if not self.done or self.error is not None:
            raise RuntimeError("a compaction catches up only after a copy that succeeded")
        self.catch_ups += 1
        self._thread = threading.Thread(target=self._catch_up, args=(old_rows,), name="gnes-compaction", daemon=True)
        self._thread.start()

    def _catch_up(self, old_rows: np.ndarray) -> None:
        try:
            first, end = self.copied_to, len(old_rows)
            copy_tail(self.fresh, old_rows[first:end], len(self.ids) + first - self.before)
            self.copied_to = end
        except BaseException as exc:  # raised in the owner's thread by `finish`
            self.error = exc

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def cancel(self) -> None:
        """Stop copying and remove the new file (the old one stays named and in use)."""
        self._cancelled = True
        self._thread.join()
        self.discard()

    def discard(self) -> None:
        self.fresh.close()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        try:
            ids, rows = self._walk()
            keep = rows < self.before  # rows appended since `begin` belong to the tail
            ids, rows = ids[keep], rows[keep]
            if len(ids) == self.before:  # no row is dead: nothing to copy (`finish` drops the file)
                self.ids = ids
                return
            for start in range(0, len(rows), _COPY_ROWS):
                if self._cancelled:
                    return
                self.fresh.write(self._old_rows[rows[start : start + _COPY_ROWS]], start, sync=False)
            self.fresh.flush()
            order = np.argsort(ids, kind="stable")
            self.by_id, self.by_id_rows = ids[order], order.astype(np.int64)
            self.keys, self.values = self._keys_of(self.by_id), row_values(self.by_id_rows)
            self.ids = ids
        except BaseException as exc:  # raised in the owner's thread by `finish`
            self.error = exc
        finally:
            self._old_rows = np.zeros(0)  # the old file's pages: not held past the copy

    def new_rows(self, current: np.ndarray, tail_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """For the touched ids' current rows (-1: none, or a vector kept in LMDB): which of them
        move, and their rows in the new file (the tail follows the copied rows)."""
        moved = current >= 0
        if (current[moved] < self.before).any():  # a write since `begin` appends; never below
            raise RuntimeError("a row written during the compaction lies below where it began")
        if (current[moved] >= self.before + tail_rows).any():
            raise RuntimeError("a row written during the compaction lies past the committed rows")
        return moved, len(self.ids) + current[moved] - self.before


def copy_tail(fresh: SegmentFile, old_rows: np.ndarray, first: int) -> None:
    """The rows written while the copy ran, after the copied ones."""
    for start in range(0, len(old_rows), _COPY_ROWS):
        fresh.write(old_rows[start : start + _COPY_ROWS], first + start, sync=False)


def row_values(rows: np.ndarray) -> list[bytes]:
    """Values of the store's id -> row map: 8-byte little-endian row numbers."""
    raw = rows.astype("<u8").tobytes()
    return [raw[start : start + 8] for start in range(0, len(raw), 8)]


def untouched(ids: np.ndarray, touched: list[Any]) -> np.ndarray:
    """Mask of `ids` that no write or delete recorded in `touched` names."""
    if not touched:
        return np.ones(len(ids), dtype=bool)
    return ~np.isin(ids, np.concatenate(touched))
