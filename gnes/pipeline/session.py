"""A pipeline session: send requests into the pipeline and match each answer to its caller.

Used by the gRPC frontend and the HTTP service alike. Its sockets are opened once, in the
asyncio thread that uses them (GNES 0.0.47 bound new sockets per call, so concurrent calls
failed). Callers' request ids may collide, so each request gets an internal id; the caller's
id is put back on the answer. Answers come through a Reducer (a request split into parts
is answered once all parts are in, or as partial at its deadline), and a waiter that no
answer reaches is answered with an error, so no caller waits forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import zmq
import zmq.asyncio

from ..encoder.requests import report_doc_errors
from ..proto import WireError, pb
from ..service.config import ServiceConfig
from ..service.message import BodyType, Packet, body_type_of, error_response, parse_bundle
from ..service.reducer import Reducer
from ..service.sockets import SocketSpec, SocketType, open_socket
from ..service.validate import check_request

# Answers read per turn of the event loop.
_DRAIN = 256
# Waited beyond the pipeline's own timeout before a waiter is answered with an error: the
# reducer's partial answer, when there is one, comes first.
_GRACE_S = 5.0


class PipelineSession:
    def __init__(self, config: ServiceConfig, client_id: str, log: logging.Logger | None = None) -> None:
        self.config = config
        self.client_id = client_id
        self.log = log or logging.getLogger(f"gnes.session.{client_id}")
        self.reducer = Reducer(config.reduce_timeout, config.index_timeout, config.max_pending)
        self._next_id = 0
        self._waiting: dict[int, tuple[asyncio.Future[pb.Response], int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in: zmq.Socket | None = None
        self._out: zmq.asyncio.Socket | None = None
        self._in_has_topic = False
        self._expiry: asyncio.Task[None] | None = None
        # Called with each delivered answer and its reduced envelope, whose route stamps the
        # answer itself does not carry (the HTTP service feeds its per-stage histograms).
        self.on_answer: Callable[[pb.Envelope, pb.Response], None] | None = None

    # ---- lifecycle (call both from the event loop's own thread) ------------------------
    def open(self, ctx: zmq.Context) -> None:
        """Open the sockets and start reading answers, in the running loop's thread."""
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        # Answers are read from a plain ZeroMQ socket watched by the event loop (add_reader),
        # in the loop iteration that sees them arrive. Reading through zmq.asyncio (a poll
        # future, then a recv future, per answer) made the last hop of a query 575 us instead
        # of 250 us (per-hop trace, hash stack, 2-core VM). Sending keeps zmq.asyncio: it
        # sends at once when there is room and waits when there is not.
        in_spec = SocketSpec(SocketType.parse(cfg.socket_in), cfg.host_in, cfg.port_in)
        out_spec = SocketSpec(SocketType.parse(cfg.socket_out), cfg.host_out, cfg.port_out)
        self._in = open_socket(ctx, in_spec, hwm=cfg.hwm, subscribe=(self.client_id.encode(),))
        self._in_has_topic = in_spec.type.zmq_type == zmq.SUB
        # The asyncio wrapper is a shadow of the plain socket, which stays the owner: closing only
        # the shadow left the plain object to close the same handle again when collected, by
        # then possibly another socket's (in-process pipelines: "Socket operation on non-socket").
        self._out_owner = open_socket(ctx, out_spec, hwm=cfg.hwm)
        self._out = zmq.asyncio.Socket.from_socket(self._out_owner)
        self._loop.add_reader(self._in.getsockopt(zmq.FD), self._on_answers)
        self._on_answers()  # the descriptor signals changes only: look once at what is there
        self._expiry = asyncio.create_task(self._expire_partials())

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            await asyncio.gather(self._expiry, return_exceptions=True)
        if self._in is not None:
            self._loop.remove_reader(self._in.getsockopt(zmq.FD))
            self._in.close()
        if self._out is not None:
            self._out_owner.close()
        for future, caller_id in self._waiting.values():
            if not future.done():
                future.set_result(error_response(caller_id, BodyType.CONTROL, "the service is stopping"))
        self._waiting.clear()

    # ---- requests ----------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._waiting)

    async def submit(self, request: pb.Request, timeout_s: float | None = None) -> asyncio.Future[pb.Response]:
        """Send one request into the pipeline; the future resolves with its answer. The
        request's id becomes the internal id (pass it to `forget` if the caller goes)."""
        future: asyncio.Future[pb.Response] = self._loop.create_future()
        try:
            body_type = body_type_of(request)
            check_request(request, self.config)
        except WireError as exc:
            future.set_result(error_response(request.request_id, guess_type(request), str(exc)))
            return future
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF
        internal_id = self._next_id
        caller_id = request.request_id
        request.request_id = internal_id
        # model_name: the dispatcher hands the request to that model's encoders (gnes/elastic/dispatch.py).
        env = pb.Envelope(
            client_id=self.client_id, request_id=internal_id, body_type=body_type, model_name=request.model_name
        )
        env.num_part.append(1)
        env.part_ids.append(0)
        self._waiting[internal_id] = (future, caller_id)
        # A full pipeline makes this wait, which stops reading from callers: the backpressure.
        await self._out.send_multipart([env.SerializeToString(), request.SerializeToString()])
        if timeout_s is None:
            slow = body_type in (BodyType.INDEX, BodyType.TRAIN)
            timeout_s = (self.config.index_timeout if slow else self.config.reduce_timeout) + _GRACE_S
        self._loop.call_later(timeout_s, self._expire_waiter, internal_id, body_type, timeout_s)
        return future

    def forget(self, internal_id: int) -> None:
        """The caller has gone: its answer, when it comes, is dropped."""
        self._waiting.pop(internal_id, None)

    # ---- answers -----------------------------------------------------------------------
    def _on_answers(self) -> None:
        # The ZeroMQ descriptor only says that something changed: read EVENTS and take what
        # is queued, or an answer that came meanwhile would wait for the next one. After
        # _DRAIN answers the loop gets a turn (callers must keep moving) and reading resumes.
        sock = self._in
        for _ in range(_DRAIN):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                return
            frames = sock.recv_multipart(zmq.NOBLOCK)
            try:
                packets = parse_bundle(frames[1:] if self._in_has_topic else frames)
            except WireError as exc:
                self.log.warning("dropped a malformed answer: %s", exc)
                continue
            for packet in packets:
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
        if packet.envelope.doc_errors:  # documents the encoder refused while it took the rest
            report_doc_errors(response, packet.envelope.doc_errors)
        if self.on_answer is not None:
            try:
                self.on_answer(packet.envelope, response)
            except Exception:  # a broken observer must not cost the caller its answer
                self.log.exception("the on_answer hook failed")
        if not future.done():
            future.set_result(response)

    def _expire_waiter(self, internal_id: int, body_type: int, waited: float) -> None:
        entry = self._waiting.pop(internal_id, None)
        if entry is not None and not entry[0].done():
            reason = f"no answer from the pipeline within {waited:.0f}s"
            entry[0].set_result(error_response(entry[1], body_type, reason))


def guess_type(request: pb.Request) -> int:
    try:
        return body_type_of(request)
    except WireError:
        return BodyType.CONTROL
