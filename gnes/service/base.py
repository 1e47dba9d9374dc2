"""The one service runtime: an input socket, an output socket, a control socket, one loop.

Sockets are created, used and closed by the loop thread alone. A request that fails is
answered with an ERROR response sent downstream, so the caller learns why; a frame that
cannot even be parsed has no caller to answer and is logged and dropped. Either way the
service keeps serving.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable

import zmq

from ..elastic.dispatch import WorkDispatcher
from ..elastic.link import REQ
from ..elastic.worker_link import WorkerLink
from ..proto import WireError
from .config import ServiceConfig
from .message import (
    BodyType,
    Packet,
    answer_control,
    as_error,
    bundle_frames,
    parse_bundle,
    recv_packets,
    send_packet,
    stamp_route,
)
from .sockets import SocketType, bind_port, open_socket

# Messages taken from the input per poll: amortises the poll call under load.
_DRAIN = 256
_MODE_BODY = {"INDEX": BodyType.INDEX, "QUERY": BodyType.QUERY, "TRAIN": BodyType.TRAIN}


class BaseService:
    """Subclasses fill in `handle`; optional hooks: setup, teardown, extra sockets, timers."""

    kind = "service"
    # Encoders and indexers honour --mode; proxies route whatever comes.
    checks_mode = False

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.name = config.name or self.kind
        self.identity = f"{self.name}@{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.log = logging.getLogger(f"gnes.{self.name}")
        self.ctrl_port = 0
        self.handled = 0
        self.errors = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._poller = zmq.Poller()
        self._extra: dict[zmq.Socket, object] = {}
        self.out_sock: zmq.Socket | None = None
        self._out_has_topic = False
        self._dispatcher: WorkDispatcher | None = None  # --socket_out ROUTER_BIND
        self._worker: WorkerLink | None = None  # --socket_in DEALER_CONNECT
        self._leaving = False

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> BaseService:
        """Run the loop in a thread; return once it serves (or raise why it could not)."""
        self._thread = threading.Thread(target=self._run_guarded, name=self.identity, daemon=True)
        self._thread.start()
        while not self._ready.wait(0.05):
            if self._failure is not None or not self._thread.is_alive():
                break
            timeout -= 0.05
            if timeout <= 0:
                where = _stack_of(self._thread)
                self.stop()
                raise TimeoutError(f"{self.name} did not become ready; its thread was at:\n{where}")
        if self._failure is not None:
            raise RuntimeError(f"{self.name} failed to start: {self._failure}") from self._failure
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    close = stop

    def __enter__(self) -> BaseService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run_forever(self) -> int:
        """Serve in this (main) thread until SIGTERM/SIGINT or a TERMINATE control request."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.on_stop_signal())
        self._run_guarded()
        return 1 if self._failure is not None else 0

    def on_stop_signal(self) -> None:
        """SIGTERM or SIGINT: stop; a worker of a dispatching proxy first finishes what it holds
        (LEAVE, then BYE). A service with more to hand over overrides this."""
        if self._worker is None or self._leaving:
            self._stop.set()
        self._leaving = True

    @property
    def is_ready(self) -> bool:
        return self._ready.is_set() and not self._stop.is_set()

    # ---- hooks -----------------------------------------------------------------------
    def setup(self) -> None:
        """Load components. Runs in the loop thread before any socket opens."""

    def open_extra_sockets(self, ctx: zmq.Context) -> None:
        """Open further sockets with `self.watch(sock, handler)`."""

    def teardown(self) -> None:
        """Flush state. Runs in the loop thread after the loop ends, even after a failure."""

    def handle(self, packet: Packet) -> None:
        raise NotImplementedError

    def next_deadline(self) -> float | None:
        """The monotonic time at which `on_timer` must run next, if any."""
        return None

    def on_timer(self, now: float) -> None:
        pass

    def link_info(self) -> dict[str, str]:
        """What this worker tells its dispatching proxy in every HELLO (an encoder: its model)."""
        return {}

    def status_info(self) -> dict[str, object]:
        info: dict[str, object] = {
            "name": self.name,
            "kind": self.kind,
            "identity": self.identity,
            "ctrl_port": self.ctrl_port,
            "handled": self.handled,
            "errors": self.errors,
        }
        if self._dispatcher is not None:
            info.update(self._dispatcher.status())
        return info

    # ---- helpers for subclasses ------------------------------------------------------
    def watch(self, sock: zmq.Socket, handler: object) -> None:
        self._extra[sock] = handler
        self._poller.register(sock, zmq.POLLIN)

    def send_out(self, packet: Packet, topic: bytes | None = None) -> None:
        stamp_route(packet, self.name, self.identity)
        if self._dispatcher is not None:
            self._dispatcher.submit(packet)
            return
        if self.out_sock is None:
            self.log.error("request %d has no way out: --socket_out is NONE", packet.envelope.request_id)
            return
        if self._out_has_topic and topic is None:
            topic = packet.envelope.client_id.encode()
        self.send_blocking(self.out_sock, packet, topic)

    def send_out_all(self, packets: list[Packet]) -> None:
        """Send packets on, as one message where the way out is a plain PUSH socket (the shard's
        answers of one group commit to the reducer: one send and one wake-up instead of one
        each). A PUB (one topic per caller) or a dispatcher takes them one by one."""
        if len(packets) < 2 or self._dispatcher is not None or self.out_sock is None or self._out_has_topic:
            for packet in packets:
                self.send_out(packet)
            return
        for packet in packets:
            stamp_route(packet, self.name, self.identity)
        frames, sock = bundle_frames(packets), self.out_sock
        self._send_waiting(lambda: sock.send_multipart(frames), f"{len(packets)} answers")

    def send_blocking(self, sock: zmq.Socket, packet: Packet, topic: bytes | None = None) -> None:
        self._send_waiting(lambda: send_packet(sock, packet, topic), f"request {packet.envelope.request_id}")

    def _send_waiting(self, send: Callable[[], None], what: str) -> None:
        """Send, waiting while the peer is full or absent: that wait is the backpressure
        that keeps queues bounded. A stop request ends the wait, and that loss is logged."""
        while True:
            try:
                send()
                return
            except zmq.Again:
                if self._stop.is_set():
                    self.log.error("stopping: %s could not be passed on", what)
                    return

    def fail(self, packet: Packet, reason: str) -> None:
        """Answer the packet's caller with an ERROR response, sent downstream."""
        self.errors += 1
        self.send_out(as_error(packet, reason))

    # ---- the loop --------------------------------------------------------------------
    def _run_guarded(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # recorded for start()/run_forever, and logged, never hidden
            self._failure = exc
            self.log.exception("%s stopped on an error", self.name)

    def _loop(self) -> None:
        ctx = zmq.Context()
        socks: list[zmq.Socket] = []
        try:
            self.setup()
            cfg = self.config
            in_spec, out_spec = cfg.in_spec, cfg.out_spec
            in_sock = None
            if in_spec.type is SocketType.DEALER_CONNECT:
                self._worker = WorkerLink(self.name, self.link_info())
                in_sock = self._worker.open(ctx, in_spec.host, in_spec.port, cfg.hwm)
                socks.append(in_sock)
            elif in_spec.type is not SocketType.NONE:
                in_sock = open_socket(ctx, in_spec, hwm=cfg.hwm)
                socks.append(in_sock)
            if out_spec.type is SocketType.ROUTER_BIND:
                self._dispatcher = WorkDispatcher(self._stop.is_set, max_pending=cfg.hwm)
                router, monitor = self._dispatcher.open(ctx, out_spec.host, out_spec.port, cfg.hwm)
                self.watch(router, self._dispatcher.on_readable)
                self.watch(monitor, self._dispatcher.peers.on_monitor)
            elif out_spec.type is not SocketType.NONE:
                self.out_sock = open_socket(ctx, out_spec, hwm=cfg.hwm)
                self.out_sock.setsockopt(zmq.SNDTIMEO, 500)
                socks.append(self.out_sock)
            self._out_has_topic = out_spec.type.zmq_type == zmq.PUB
            in_has_topic = in_spec.type.zmq_type == zmq.SUB
            ctrl = ctx.socket(zmq.REP)
            socks.append(ctrl)
            ctrl.setsockopt(zmq.LINGER, 0)
            self.ctrl_port = bind_port(ctrl, cfg.host_ctrl, cfg.port_ctrl)
            self.open_extra_sockets(ctx)
            socks.extend(self._extra)
            reading = in_sock is not None
            if reading:
                self._poller.register(in_sock, zmq.POLLIN)
            self._poller.register(ctrl, zmq.POLLIN)
            self._ready.set()
            self.log.info(
                "%s ready: in %s, out %s, ctrl port %d", self.name, in_spec.address, out_spec.address, self.ctrl_port
            )
            while not self._stop.is_set():
                if in_sock is not None and self._dispatcher is not None and reading == self._dispatcher.full:
                    # Backpressure: while enough waits for the workers, leave the input unread.
                    reading = not reading
                    (self._poller.register if reading else self._poller.unregister)(in_sock, *([zmq.POLLIN] * reading))
                events = dict(self._poller.poll(self._poll_timeout_ms()))
                if in_sock is not None and in_sock in events:
                    self._drain(in_sock, in_has_topic)
                if ctrl in events:
                    self._on_control(ctrl)
                for sock, handler in self._extra.items():
                    if sock in events:
                        handler(sock)
                now = time.monotonic()
                self._links_on_timer(now)
                deadline = self.next_deadline()
                if deadline is not None and now >= deadline:
                    self.on_timer(now)
        finally:
            try:
                self.teardown()
            finally:
                for sock in socks:
                    sock.close()
                ctx.term()
                self.log.info("%s stopped", self.name)

    def _links_on_timer(self, now: float) -> None:
        """Heartbeats and leaving of a worker; liveness of a dispatcher's workers."""
        if self._dispatcher is not None:
            self._dispatcher.check(now)
        worker = self._worker
        if worker is not None:
            if now >= worker.next_deadline():
                worker.on_timer(now)
            if self._leaving:
                worker.leave(now)
                if worker.dismissed or now >= worker.leave_deadline:
                    self._stop.set()

    def _poll_timeout_ms(self) -> int:
        deadline = self.next_deadline()
        if self._worker is not None:
            deadline = min(deadline or math.inf, self._worker.next_deadline())
        wait = 0.1 if deadline is None else min(0.1, max(0.0, deadline - time.monotonic()))
        return max(0, math.ceil(wait * 1000))  # rounding down would wake just before the deadline

    def _drain(self, sock: zmq.Socket, has_topic: bool) -> None:
        packets: list[Packet] = []
        for _ in range(_DRAIN):
            try:
                if self._worker is not None:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                    if frames[0] != REQ:
                        self._worker.on_control(frames)
                        continue
                    packets.extend(parse_bundle(frames[1:]))
                else:
                    packets.extend(recv_packets(sock, has_topic, zmq.NOBLOCK))
            except zmq.Again:
                break
            except WireError as exc:
                self.errors += 1
                self.log.warning("dropped a malformed message (no caller to answer): %s", exc)
        if not packets:
            return
        self.handled += len(packets)
        if self._worker is None:
            self.handle_all(packets)
            return
        for packet in packets:  # each acknowledged once done: the dispatcher hears from us meanwhile
            self.handle_all([packet])
            self._worker.acknowledge([packet], time.monotonic())

    def handle_all(self, packets: list[Packet]) -> None:
        """Everything one drain of a socket took, in arrival order. A service that gains by
        treating queued messages together (the shard's group commit) overrides this."""
        for packet in packets:
            if self.rejected_by_mode(packet):
                continue
            try:
                self.handle(packet)
            except Exception as exc:
                self.fail(packet, self.reason_for(exc, packet.envelope.request_id))

    def rejected_by_mode(self, packet: Packet) -> bool:
        """Answer, with an error, a request that this service's --mode does not take."""
        env = packet.envelope
        if self.checks_mode and not env.is_response and self.config.mode in _MODE_BODY:
            allowed = (_MODE_BODY[self.config.mode], BodyType.CONTROL, BodyType.ADMIN)
            if env.body_type not in allowed:
                kind = BodyType.Name(env.body_type)
                self.fail(packet, f"{self.name} runs in {self.config.mode} mode and does not take {kind} requests")
                return True
        return False

    def reason_for(self, exc: Exception, request_id: int) -> str:
        """What the caller is told about a failed request: bad input by its message, anything
        else as an internal error, which is also logged with its traceback."""
        if isinstance(exc, (WireError, ValueError)):
            self.log.info("request %d rejected: %s", request_id, exc)
            return f"{self.name}: {exc}"
        self.log.exception("request %d failed", request_id)
        return f"{self.name}: internal error: {type(exc).__name__}: {exc}"

    def _on_control(self, ctrl: zmq.Socket) -> None:
        response, terminate = answer_control(ctrl.recv(), self.status_info())
        ctrl.send(response.SerializeToString())
        if terminate:
            self._stop.set()


def _stack_of(thread: threading.Thread) -> str:
    """Where a thread is now: what a start that hangs reports."""
    import sys
    import traceback

    frame = sys._current_frames().get(thread.ident or -1)
    return "".join(traceback.format_stack(frame)) if frame is not None else "(the thread has ended)"
