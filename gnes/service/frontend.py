"""The gRPC frontend (GNES 0.0.47 wire-compatible): takes requests, sends them into the
pipeline, and matches each answer to its caller.

Its sockets are opened once, in the one asyncio thread that uses them (GNES 0.0.47 bound
new sockets per call, so concurrent calls failed). Callers' request ids may collide, so
each request gets an internal id; the caller's id is put back on the answer.
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
import zmq.asyncio

from ..proto import WireError, pb, pb_grpc
from .config import ServiceConfig
from .message import BodyType, Packet, answer_control, body_type_of, error_response, parse_frames
from .reducer import Reducer
from .sockets import SocketSpec, SocketType, bind_port, open_socket
from .validate import check_request

# Requests one StreamCall may have in the pipeline before it stops reading from its caller.
STREAM_WINDOW = 256
_MAX_GRPC_MESSAGE = 256 << 20
# Answers read per turn of the event loop.
_DRAIN = 256


class FrontendService(pb_grpc.GnesRPCServicer):
    kind = "frontend"

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.name = config.name or self.kind
        self.client_id = f"{self.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger(f"gnes.{self.name}")
        self.reducer = Reducer(config.reduce_timeout, config.index_timeout, config.max_pending)
        self.grpc_port = config.grpc_port
        self.ctrl_port = 0
        self.served = 0
        self._next_id = 0
        self._waiting: dict[int, tuple[asyncio.Future[pb.Response], int]] = {}
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
        # Answers and control requests are read from plain ZeroMQ sockets watched by the event
        # loop (add_reader), in the loop iteration that sees them arrive. Reading through
        # zmq.asyncio (a poll future, then a recv future, per answer) made the last hop of a
        # query 575 us instead of 250 us (per-hop trace, hash stack, 2-core VM). Sending
        # keeps zmq.asyncio: it sends at once when there is room and waits when there is not.
        ctx = zmq.Context()
        in_spec = SocketSpec(SocketType.parse(cfg.socket_in), cfg.host_in, cfg.port_in)
        out_spec = SocketSpec(SocketType.parse(cfg.socket_out), cfg.host_out, cfg.port_out)
        self._in = open_socket(ctx, in_spec, hwm=cfg.hwm, subscribe=(self.client_id.encode(),))
        self._in_has_topic = in_spec.type.zmq_type == zmq.SUB
        self._out = zmq.asyncio.Socket.from_socket(open_socket(ctx, out_spec, hwm=cfg.hwm))
        ctrl = ctx.socket(zmq.REP)
        ctrl.setsockopt(zmq.LINGER, 0)
        self.ctrl_port = bind_port(ctrl, cfg.host_ctrl, cfg.port_ctrl)
        options = [
            ("grpc.max_send_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", _MAX_GRPC_MESSAGE),
            ("grpc.so_reuseport", 0),
        ]
        server = grpc.aio.server(options=options)
        pb_grpc.add_GnesRPCServicer_to_server(self, server)
        bound = server.add_insecure_port(f"{cfg.grpc_host}:{cfg.grpc_port}")
        if bound == 0:
            raise OSError(f"cannot bind the gRPC port {cfg.grpc_host}:{cfg.grpc_port}")
        self.grpc_port = bound
        await server.start()
        watched = [self._in.getsockopt(zmq.FD), ctrl.getsockopt(zmq.FD)]
        self._loop.add_reader(watched[0], self._on_answers)
        self._loop.add_reader(watched[1], self._on_control, ctrl)
        self._on_answers()  # the descriptor signals changes only: look once at what is there
        self._on_control(ctrl)
        tasks = [asyncio.create_task(self._expire_partials())]
        self._ready.set()
        self.log.info("frontend ready: gRPC %s:%d, ctrl port %d", cfg.grpc_host, bound, self.ctrl_port)
        try:
            await self._stopping.wait()
        finally:
            await server.stop(grace=2.0)
            for fd in watched:
                self._loop.remove_reader(fd)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sock in (self._in, self._out, ctrl):
                sock.close()
            ctx.term()
            self.log.info("frontend stopped")

    # ---- the pipeline side -----------------------------------------------------------
    def _on_answers(self) -> None:
        # The ZeroMQ descriptor only says that something changed: read EVENTS and take what
        # is queued, or an answer that came meanwhile would wait for the next one. After
        # _DRAIN answers the loop gets a turn (gRPC must keep moving) and reading resumes.
        sock = self._in
        for _ in range(_DRAIN):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = sock.recv_multipart(zmq.NOBLOCK)
            try:
                packet = parse_frames(frames[1:] if self._in_has_topic else frames)
            except WireError as exc:
                self.log.warning("dropped a malformed answer: %s", exc)
                continue
            if packet.envelope.client_id == self.client_id:
                for done in self.reducer.add(packet):
                    self._deliver(done)
        self._loop.call_soon(self._on_answers)

    async def _expire_partials(self) -> None:
        """Answer, as partial, requests whose parts did not all come back in time."""
        while True:
            deadline = self.reducer.next_deadline()
            wait = 1.0 if deadline is None else min(0.25, max(0.0, deadline - time.monotonic()))
            await asyncio.sleep(wait)
            for done in self.reducer.expire():
                self._deliver(done)

    def _deliver(self, packet: Packet) -> None:
        entry = self._waiting.pop(packet.envelope.request_id, None)
        if entry is None:  # its caller already gave up (timeout or cancel)
            return
        future, caller_id = entry
        try:
            response = packet.response()
        except WireError as exc:
            response = error_response(caller_id, packet.envelope.body_type, str(exc))
        response.request_id = caller_id
        if not future.done():
            future.set_result(response)

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
            "in_flight": len(self._waiting),
            "partial": self.reducer.partial_answers,
        }

    async def submit(self, request: pb.Request) -> asyncio.Future[pb.Response]:
        """Send one request into the pipeline; the future resolves with its answer."""
        future: asyncio.Future[pb.Response] = self._loop.create_future()
        try:
            body_type = body_type_of(request)
            check_request(request, self.config)
        except WireError as exc:
            future.set_result(error_response(request.request_id, _guess_type(request), str(exc)))
            return future
        if body_type == BodyType.CONTROL:
            response = pb.Response(request_id=request.request_id)
            response.control.status = pb.Response.READY
            response.control.info_json = json.dumps(self.status_info())
            future.set_result(response)
            return future
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        internal_id = self._next_id
        caller_id = request.request_id
        request.request_id = internal_id
        env = pb.Envelope(client_id=self.client_id, request_id=internal_id, body_type=body_type)
        env.num_part.append(1)
        env.part_ids.append(0)
        self._waiting[internal_id] = (future, caller_id)
        # A full pipeline makes this wait, which stops reading from callers: the backpressure.
        await self._out.send_multipart([env.SerializeToString(), request.SerializeToString()])
        wait = (
            self.config.index_timeout if body_type in (BodyType.INDEX, BodyType.TRAIN) else self.config.reduce_timeout
        )
        self._loop.call_later(wait + 5.0, self._expire_waiter, internal_id, body_type, wait + 5.0)
        return future

    def _expire_waiter(self, internal_id: int, body_type: int, waited: float) -> None:
        entry = self._waiting.pop(internal_id, None)
        if entry is not None and not entry[0].done():
            reason = f"no answer from the pipeline within {waited:.0f}s"
            entry[0].set_result(error_response(entry[1], body_type, reason))

    # ---- gRPC ------------------------------------------------------------------------
    async def _unary(self, request: pb.Request, context: grpc.aio.ServicerContext) -> pb.Response:
        future = await self.submit(request)
        try:
            response = await future
        except asyncio.CancelledError:
            self._waiting.pop(request.request_id, None)
            raise
        self.served += 1
        return response

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
                yield response
            await reader
        finally:
            reader.cancel()


def _guess_type(request: pb.Request) -> int:
    try:
        return body_type_of(request)
    except WireError:
        return BodyType.CONTROL
