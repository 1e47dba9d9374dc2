"""Dynamic batching with a bounded queue, in front of the pipeline's EMBED requests.

Texts from many callers are gathered into one EMBED request, up to `max_batch` texts or until
the oldest has waited `wait_s`; the answer's rows are split back to the callers. The queue
counts texts from acceptance until they are answered (waiting here or in the pipeline), so a
slow encoder fills it and callers are refused at once (QueueFull) instead of piling up work
that would time out anyway. A caller that goes away before its batch is sent gives up its
place (`cancel`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..pipeline import PipelineSession
from ..proto import nd_to_array, pb


class QueueFull(Exception):
    def __init__(self, held: int, capacity: int) -> None:
        super().__init__(f"the embedding queue is full ({held} of {capacity} texts); retry later")


class PipelineError(Exception):
    """The pipeline answered with an error (or an answer that does not fit the request)."""


@dataclass(eq=False)
class _Item:
    texts: list[str]
    future: asyncio.Future[np.ndarray]
    since: float = field(default_factory=time.monotonic)


class EmbedBatcher:
    def __init__(
        self,
        session: PipelineSession,
        max_batch: int,
        queue_length: int,
        wait_s: float,
        max_in_flight: int,
        dim: int = 0,
        log: logging.Logger | None = None,
    ) -> None:
        self.session = session
        self.max_batch = max_batch
        self.capacity = queue_length
        self.wait_s = wait_s
        self.dim = dim  # 0 until known: the first answer (or the start probe) sets it
        self.log = log or logging.getLogger("gnes.http.batcher")
        self.held = 0  # texts accepted and not yet answered
        self.embed_requests = 0
        self.embedded = 0
        self.refused = 0
        self.cancelled = 0
        self._queue: deque[_Item] = deque()
        self._queued_texts = 0  # kept with the queue: the gathering loop reads it on every wake-up
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        # Called with the size of each batch sent on (the app's batch-size histogram).
        self.on_batch: Callable[[int], None] | None = None

    # ---- callers -----------------------------------------------------------------------
    def offer(self, texts: list[str]) -> asyncio.Future[np.ndarray]:
        """Queue the texts; the future resolves with their rows. Raises QueueFull at once."""
        if self.held + len(texts) > self.capacity:
            self.refused += 1
            raise QueueFull(self.held, self.capacity)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(texts, future))
        self._queued_texts += len(texts)
        self.held += len(texts)
        self._arrived.set()
        return future

    def cancel(self, future: asyncio.Future[np.ndarray]) -> None:
        """The caller has gone: unsent texts leave the queue; sent ones are answered and dropped."""
        for item in self._queue:
            if item.future is future:
                self._queue.remove(item)
                self._queued_texts -= len(item.texts)
                self.held -= len(item.texts)
                self.cancelled += 1
                break
        future.cancel()

    @property
    def queued(self) -> int:
        return self._queued_texts

    # ---- the loop ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(PipelineError("the service is stopping"))
        self._queue.clear()
        self._queued_texts = 0

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            # Gather callers until the batch is full or the oldest has waited long enough.
            while self._queue and self.queued < self.max_batch:
                left = self._queue[0].since + self.wait_s - time.monotonic()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:  # every caller went away meanwhile
                self._slots.release()
                continue
            task = asyncio.create_task(self._send(batch))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        size = 0
        # The first item always goes, even beyond max_batch: the map proxy splits it further.
        while self._queue and (not batch or size + len(self._queue[0].texts) <= self.max_batch):
            item = self._queue.popleft()
            self._queued_texts -= len(item.texts)
            batch.append(item)
            size += len(item.texts)
        return batch

    async def _send(self, batch: list[_Item]) -> None:
        texts = [t for item in batch for t in item.texts]
        if self.on_batch is not None:
            try:
                self.on_batch(len(texts))
            except Exception:  # a broken observer must not fail the batch
                self.log.exception("the on_batch hook failed")
        try:
            rows = await self.embed_now(texts)
            start = 0
            for item in batch:
                if not item.future.done():
                    item.future.set_result(rows[start : start + len(item.texts)])
                start += len(item.texts)
        except Exception as exc:  # every caller of the batch is told why
            self.log.warning("a batch of %d texts failed: %s", len(texts), exc)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc if isinstance(exc, PipelineError) else PipelineError(str(exc)))
        finally:
            self.held -= len(texts)
            self._slots.release()

    async def embed_now(self, texts: list[str], timeout_s: float | None = None) -> np.ndarray:
        """One EMBED request for `texts`, straight to the pipeline; rows checked against `dim`."""
        request = pb.Request()
        for i, text in enumerate(texts):
            request.embed.docs.add(doc_id=i, raw_text=text)
        self.embed_requests += 1
        future = await self.session.submit(request, timeout_s)
        try:
            response = await future
        except asyncio.CancelledError:
            self.session.forget(request.request_id)
            raise
        if response.error or response.WhichOneof("body") != "embed" or response.embed.status != pb.Response.SUCCESS:
            raise PipelineError(response.error or "the pipeline did not return embeddings")
        rows = nd_to_array(response.embed.embeddings)
        if rows.ndim != 2 or rows.shape[0] != len(texts):
            raise PipelineError(f"the pipeline returned {rows.shape} vectors for {len(texts)} texts")
        if self.dim and rows.shape[1] != self.dim:
            raise PipelineError(f"the model returns {rows.shape[1]}-d vectors; this service is set to {self.dim}")
        self.embedded += len(texts)
        return rows
