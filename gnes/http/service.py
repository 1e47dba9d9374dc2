"""`gnes http`: the HTTP service, run by uvicorn, in front of the same pipeline as the frontend.

It takes answers from the outgoing proxy's PUB socket under its own client id and sends to
the income proxy, through a PipelineSession opened in uvicorn's event loop (the one thread
that uses its sockets). At start it embeds a probe text: the model's dimension must be
--embedding_dim where that is set, or the service stops with an error. Its control socket
(--port_ctrl, see control.py) answers READY from then on, for healthchecks and the stack.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
import zmq
from fastapi import FastAPI

from ..auth import TokenStore
from ..pipeline import PipelineSession
from ..proto import pb
from .batcher import EmbedBatcher
from .config import HttpConfig
from .control import ControlSocket
from .probe import embed_probe


class HttpService:
    kind = "http"

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.name = config.pipeline.name or self.kind
        self.client_id = f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger(f"gnes.{self.name}")
        self.session = PipelineSession(config.pipeline, self.client_id, self.log)
        self.batcher: EmbedBatcher | None = None
        # --token_file, $GNES_TOKEN_FILE or $GNES_TOKENS; none: open (see gnes/auth/tokens.py).
        self.tokens = TokenStore.from_sources(config.pipeline.token_file or None)
        self.model_dim = 0
        self.ctrl_port = 0
        self._failure: BaseException | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------
    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        cfg = self.config
        ctx = zmq.Context()
        pipe = cfg.pipeline
        control = ControlSocket(pipe.host_ctrl, pipe.port_ctrl, self.status_info, self._control_state, self._terminate)
        self.ctrl_port = control.open(ctx)  # first: a control port already taken fails before anything else opens
        self.session.open(ctx)
        self.batcher = EmbedBatcher(
            self.session,
            cfg.max_batch_size,
            cfg.queue_length,
            cfg.batch_wait_ms / 1000.0,
            cfg.max_batches_in_flight,
            log=self.log,
        )
        self.batcher.start()
        probe = asyncio.create_task(self._probe())
        try:
            yield
        finally:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
            await self.batcher.close()
            control.close()
            await self.session.close()
            ctx.term()
            self.log.info("http service stopped")

    async def _probe(self) -> None:
        """Embed one text until the pipeline answers; then check the model's dimension."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.config.probe_timeout_s
        # Short first tries: an answer published before our subscription reached the outgoing
        # proxy is lost (ZeroMQ's slow joiner); later tries wait longer for a loading model.
        wait = 0.5
        while True:
            try:
                rows = await embed_probe(self.batcher, self.session, wait)  # a text, or an image (probe.py)
                break
            except Exception as exc:
                if loop.time() > give_up:
                    return self._fail(RuntimeError(f"the pipeline did not answer the start probe: {exc}"))
                self.log.info("waiting for the pipeline: %s", exc)
                wait = min(2 * wait, 10.0)
        self.model_dim = int(rows.shape[1])
        want = self.config.embedding_dim
        if want and want != self.model_dim:
            return self._fail(RuntimeError(f"the model returns {self.model_dim}-d vectors; --embedding_dim is {want}"))
        self.batcher.dim = self.model_dim
        self.log.info(
            "http service ready: %s:%d, %d-d model, ctrl port %d",
            self.config.http_host,
            self.config.http_port,
            rows.shape[1],
            self.ctrl_port,
        )
        self._ready.set()

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        self.log.error("http service stops: %s", exc)
        self._ready.set()
        if self._server is not None:
            self._server.should_exit = True

    @property
    def ready(self) -> bool:
        return self.model_dim > 0 and self._failure is None

    def _control_state(self) -> int:
        """READY once the pipeline answered the probe and uvicorn listens (its lifespan startup
        runs before the bind, so the probe alone could say READY to a port not yet open)."""
        if self._failure is not None:
            return pb.Response.ERROR
        listening = self._server is None or self._server.started
        return pb.Response.READY if self.ready and listening else pb.Response.PENDING

    def _terminate(self) -> None:
        if self._server is not None:
            self._server.should_exit = True

    def _make_server(self) -> uvicorn.Server:
        from .app import create_app

        cfg = self.config
        config = uvicorn.Config(
            create_app(self), host=cfg.http_host, port=cfg.http_port, log_level="warning", lifespan="on"
        )
        self._server = uvicorn.Server(config)
        return self._server

    def start(self, timeout: float = 60.0) -> HttpService:
        """Serve in a thread; returns once the start probe has answered (or raises)."""
        server = self._make_server()
        self._thread = threading.Thread(target=self._run_thread, args=(server,), name=self.client_id, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            self.stop()
            raise RuntimeError(f"the http service failed to start: {self._failure or 'timed out'}")
        return self

    def _run_thread(self, server: uvicorn.Server) -> None:
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(server.serve())
        except BaseException as exc:
            self._fail(exc)
            self.log.exception("http service stopped on an error")

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    close = stop

    def __enter__(self) -> HttpService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> int:
        """The CLI: uvicorn handles SIGTERM/SIGINT in the main thread."""
        self._make_server().run()
        return 1 if self._failure is not None else 0

    def status_info(self) -> dict[str, Any]:
        b, cfg = self.batcher, self.config
        return {
            "name": self.name,
            "kind": self.kind,
            "http_port": cfg.http_port,
            "ctrl_port": self.ctrl_port,
            "model": cfg.model_name,
            "dim": self.model_dim,
            "ready": self.ready,
            "in_flight": self.session.in_flight,
            "queue_held": b.held if b else 0,
            "queue_waiting": b.queued if b else 0,
            "queue_length": cfg.queue_length,
            "max_batch_size": cfg.max_batch_size,
            "embed_requests": b.embed_requests if b else 0,
            "embedded": b.embedded if b else 0,
            "refused": b.refused if b else 0,
            "cancelled": b.cancelled if b else 0,
        }


def _loop_factory():  # type: ignore[no-untyped-def]
    """uvloop where it is installed (the http extra has it): its event loop costs less CPU per
    request, and on 2 cores every cycle the HTTP side saves goes to the encoder."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
