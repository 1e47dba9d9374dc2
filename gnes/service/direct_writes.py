"""Index writes of a shard's direct clients, kept in flight so that the disk never waits.

A bulk load sends requests of thousands of vectors. Written one after the other, the disk
idled while the shard received and checked the next request, and the CPU idled while the
disk synced: `gnes load` reached half the disk's rate. Here a group of requests is *begun*
(checked, its vectors handed to a writer thread that writes and fdatasyncs them) and the
shard goes on with the next one; a group is *finished* (committed to LMDB, made searchable,
acknowledged) once its vectors are durable, always in the order the groups were begun. The
writer thread wakes the shard's poll loop through a pipe. At most `limit` groups are in
flight, which bounds the memory held for them.

Anything else that touches the indexes (a query, an admin request, the pipeline link, a
snapshot) first calls `finish_all()`, so it sees every write that came before it.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from typing import Any

# Groups begun and not yet finished: enough to keep one writing while the next is checked.
DEFAULT_LIMIT = 4


class DirectWrites:
    """Begun groups in order. `begin(run, on_written)` starts one and returns an opaque
    handle with `written()`; `finish(handle)` commits it and sends its answers."""

    def __init__(
        self,
        begin: Callable[[Any, Callable[[], None]], Any],
        written: Callable[[Any], bool],
        finish: Callable[[Any], None],
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        self._begin, self._written, self._finish = begin, written, finish
        self.limit = limit
        self._begun: deque[Any] = deque()
        self.fd, self._wake_fd = os.pipe()  # the read end is watched by the shard's poll loop
        os.set_blocking(self.fd, False)
        os.set_blocking(self._wake_fd, False)

    def add(self, run: Any) -> None:
        self._begun.append(self._begin(run, self._wake))
        while len(self._begun) > self.limit:
            self._finish(self._begun.popleft())  # waits for the oldest one's disk write

    def finish_written(self) -> None:
        """Finish, in order, the leading groups whose vectors are durable; never waits."""
        while self._begun and self._written(self._begun[0]):
            self._finish(self._begun.popleft())

    def finish_all(self) -> None:
        while self._begun:
            self._finish(self._begun.popleft())

    def on_readable(self, _fd: int) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.finish_written()

    def _wake(self) -> None:
        """Called from a writer thread once its vectors are on disk."""
        try:
            os.write(self._wake_fd, b"\0")
        except BlockingIOError:  # the pipe is full of wake-ups already: one is enough
            pass

    def close(self) -> None:
        self.finish_all()
        for fd in (self.fd, self._wake_fd):
            os.close(fd)
