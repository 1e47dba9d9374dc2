"""The gRPC frontend (GNES 0.0.47 wire-compatible): takes requests, sends them into the
pipeline, and matches each answer to its caller.

The pipeline side (sockets, internal request ids, answer matching) is a PipelineSession,
shared with the HTTP service; this module is the gRPC side and the control socket. A unary
call made while --max_pending requests are in flight gets RESOURCE_EXHAUSTED at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator

import grpc
import zmq

from ..auth import TokenStore
from ..auth.grpc_server import TokenInterceptor
from ..metrics.readiness import HealthWatcher
from ..pipeline import PipelineSession
from ..proto import pb, pb_grpc
from .config import ServiceConfig
from .message import answer_control, failed
from .sockets import bind_port

# Requests one StreamCall may have in the pipeline before it stops reading from its caller.
STREAM_WINDOW = 256
_MAX_GRPC_MESSAGE = 256 << 20


class FrontendService(pb_grpc.GnesRPCServicer):
    kind = "frontend"

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.name = config.name or self.kind
        self.client_id = f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger(f"gnes.{self.name}")
        self.session = PipelineSession(config, self.client_id, self.log)
        # --token_file, $GNES_TOKEN_FILE or $GNES_TOKENS; none: open, as before tokens existed.
        self.tokens = TokenStore.from_sources(config.token_file or None)
        self.health = HealthWatcher(self.session)
        self.metrics = _metrics() if config.port_metrics >= 0 else None
        if self.metrics is not None:
            self.session.on_answer = self.metrics.observe_answer  # per-stage latency from the route stamps
        self.metrics_port = 0
        self._metrics_server: object | None = None
        self.grpc_port = config.grpc_port
        self.ctrl_port = 0
        self.served = 0
        self.refused = 0
        self._calls = 0  # unary calls in the pipeline now (what --max_pending bounds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> FrontendService:
        self._thread = threading.Thread(target=self._run_guarded, name=self.client_id, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            self.stop()
            raise RuntimeError(f"frontend failed to start: {self._failure}") from self._failure
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stopping is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # the loop has already ended (a failed start): nothing to stop
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    close = stop

    def __enter__(self) -> FrontendService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> int:
        self._run_guarded(install_signals=True)
        return 1 if self._failure is not None else 0

    def _run_guarded(self, install_signals: bool = False) -> None:
        try:
            asyncio.run(self._serve(install_signals))
        except BaseException as exc:
            self._failure = exc
            self.log.exception("frontend stopped on an error")

    async def _serve(self, install_signals: bool) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._stopping.set)
        cfg = self.config
        # Control requests are read from a plain ZeroMQ socket watched by the event loop
        # (add_reader), like the session's answers (see PipelineSession.open for why).
        ctx = zmq.Context()
        self.session.open(ctx)
        ctrl = ctx.socket(zmq.REP)
        ctrl.setsockopt(zmq.LINGER, 0)
        self.ctrl_port = bind_port(ctrl, cfg.host_ctrl, cfg.port_ctrl)
        options = [
            ("grpc.max_send_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
        interceptors = [TokenInterceptor(self.tokens)] if self.tokens.enabled else []
        server = grpc.aio.server(options=options, interceptors=interceptors)
        pb_grpc.add_GnesRPCServicer_to_server(self, server)
        self.health.add_to(server)  # grpc.health.v1, open to probes without a token
        bound = server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind the gRPC port {cfg.grpc_host}:{cfg.grpc_port}")
        self.grpc_port = bound
        await server.start()
        await self.health.start()
        if self.metrics is not None:
            self._metrics_server, self.metrics_port = self.metrics.serve(cfg.host_ctrl, cfg.port_metrics)
        ctrl_fd = ctrl.getsockopt(zmq.FD)
        self._loop.add_reader(ctrl_fd, self._on_control, ctrl)
        self._on_control(ctrl)  # the descriptor signals changes only: look once at what is there
        self._ready.set()
        self.log.info("frontend ready: gRPC %s:%d, ctrl port %d", cfg.grpc_host, bound, self.ctrl_port)
        self.log.info("tokens: %s", f"{len(self.tokens)} configured" if self.tokens.enabled else "none, calls are open")
        try:
            await self._stopping.wait()
        finally:
            await self.health.stop()
            await server.stop(grace=2.0)
            if self._metrics_server is not None:
                self._metrics_server.shutdown()  # type: ignore[attr-defined]
                self._metrics_server.server_close()  # type: ignore[attr-defined]
            self._loop.remove_reader(ctrl_fd)
            await self.session.close()
            ctrl.close()
            ctx.term()
            self.log.info("frontend stopped")

    def _on_control(self, ctrl: zmq.Socket) -> None:
        while ctrl.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            response, terminate = answer_control(ctrl.recv(zmq.NOBLOCK), self.status_info())
            ctrl.send(response.SerializeToString(), zmq.NOBLOCK)
            if terminate:
                self._stopping.set()

    def status_info(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "grpc_port": self.grpc_port,
            "ctrl_port": self.ctrl_port,
            "served": self.served,
            "in_flight": self.session.in_flight,
            "partial": self.session.reducer.partial_answers,
            "refused": self.refused,
            "metrics_port": self.metrics_port,
        }

    async def submit(self, request: pb.Request) -> asyncio.Future[pb.Response]:
        """Send one request into the pipeline; the future resolves with its answer."""
        if request.WhichOneof("body") == "control":  # answered here: the frontend's own state
            future: asyncio.Future[pb.Response] = self._loop.create_future()
            response = pb.Response(request_id=request.request_id)
            response.control.status = pb.Response.READY
            response.control.info_json = json.dumps(self.status_info())
            future.set_result(response)
            return future
        return await self.session.submit(request)

    # ---- gRPC ------------------------------------------------------------------------
    async def _unary(self, request: pb.Request, context: grpc.aio.ServicerContext) -> pb.Response:
        kind = request.WhichOneof("body") or "none"
        # Callers' calls only: the health watcher's own probes must not take a caller's place.
        if self._calls >= self.config.max_pending:
            # Told at once, so the caller backs off instead of waiting into its timeout.
            self.refused += 1
            self._observe(kind, "RESOURCE_EXHAUSTED")
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._calls} requests are in the pipeline (--max_pending); retry later",
            )
        started = time.perf_counter()
        self._calls += 1
        try:
            future = await self.submit(request)
            response = await future
        except asyncio.CancelledError:
            self.session.forget(request.request_id)
            self._observe(kind, "CANCELLED", time.perf_counter() - started)
            raise
        finally:
            self._calls -= 1
        self.served += 1
        self._observe(kind, _answer_code(response), time.perf_counter() - started)
        return response

    def _observe(self, kind: str, code: str, seconds: float | None = None) -> None:
        if self.metrics is not None:
            self.metrics.observe_grpc(kind, code, seconds)

    Call = _unary
    Index = _unary
    Query = _unary
    Train = _unary

    async def StreamCall(  # noqa: N802 (the gRPC method name)
        self, request_iterator: AsyncIterator[pb.Request], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Response]:
        answers: asyncio.Queue[asyncio.Future[pb.Response] | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    await window.acquire()
                    await answers.put(await self.submit(request))
            finally:
                await answers.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            # Answers are yielded in request order: the 0.0.47 client counts them, ours matches ids.
            while (future := await answers.get()) is not None:
                response = await future
                window.release()
                self.served += 1
                self._observe(response.WhichOneof("body") or "none", _answer_code(response))
                yield response
            await reader
        finally:
            reader.cancel()


def _answer_code(response: pb.Response) -> str:
    """OK, or ERROR where the pipeline answered with a failure (the call itself succeeds)."""
    return "ERROR" if failed(response) else "OK"


def _metrics():  # type: ignore[no-untyped-def]
    try:
        from ..metrics.prom import Metrics
    except ImportError as exc:
        raise ImportError(f"--port_metrics needs prometheus-client: install gnes[metrics] ({exc})") from exc
    return Metrics()
