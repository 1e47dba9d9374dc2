"""Who is at the other end of a ROUTER socket, and whether they are still there.

A peer is known by its routing id. It is up from its first HELLO and down when its
connection closes (a kill -9 closes it at once; the socket monitor says so) or when it has
been silent for DEAD_AFTER_S (a frozen or cut-off process only goes quiet). A peer that
comes back under the same name, or a new process under an old name, is reported up again.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..service.endpoints import bind_addresses, connect_address
from . import link


@dataclass
class Peer:
    name: str
    incarnation: str = ""
    live: bool = False
    last_seen: float = 0.0
    fd: int = -1


class Peers:
    def __init__(
        self,
        on_down: Callable[[str, str], None],
        dead_after: float = link.DEAD_AFTER_S,
        patience: Callable[[str], float] | None = None,
    ) -> None:
        self.on_down = on_down
        self.dead_after = dead_after
        # Per peer, the silence taken for death where it differs (a busy worker's is longer).
        self.patience = patience
        self.table: dict[str, Peer] = {}
        self._fds: dict[int, str] = {}

    def open_monitor(self, router: zmq.Socket) -> zmq.Socket:
        return router.get_monitor_socket(zmq.EVENT_DISCONNECTED)

    def on_monitor(self, monitor: zmq.Socket) -> None:
        while True:
            try:
                event = recv_monitor_message(monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            fd = int(event["value"])
            peer = self.table.get(self._fds.pop(fd, ""))
            # A restarted peer may already speak on a new connection: only its own one counts.
            if peer is not None and peer.fd == fd:
                self.down(peer, "its connection closed")

    def heard(self, name: str, frame: zmq.Frame, hello: dict | None = None) -> tuple[bool, bool]:
        """Note a message from `name`. With its HELLO, say whether it (re)appeared, and whether
        it is a new process under a known name (a restart)."""
        peer = self.table.get(name)
        if peer is None:
            peer = self.table[name] = Peer(name)
        peer.last_seen = time.monotonic()
        if hello is None:
            return False, False
        fd = int(frame.get(zmq.SRCFD))
        self._fds[fd] = name
        peer.fd = fd
        incarnation = str(hello.get("incarnation", ""))
        restarted = bool(peer.incarnation) and incarnation != peer.incarnation
        appeared = not peer.live or restarted
        peer.incarnation, peer.live = incarnation, True
        return appeared, restarted

    def forget(self, name: str) -> Peer | None:
        """Drop a peer that was let go: its closing connection or silence is no longer news."""
        return self.table.pop(name, None)

    def down(self, peer: Peer, why: str) -> None:
        if peer.live:
            peer.live = False
            self.on_down(peer.name, why)

    def check(self, now: float) -> None:
        for peer in list(self.table.values()):
            limit = self.dead_after if self.patience is None else self.patience(peer.name)
            if peer.live and now - peer.last_seen > limit:
                self.down(peer, f"silent for {now - peer.last_seen:.1f}s")

    def live(self, name: str) -> bool:
        peer = self.table.get(name)
        return peer is not None and peer.live


def receive_from_peers(
    sock: zmq.Socket, handle: Callable[[str, bytes, list[bytes], zmq.Frame], None], log: logging.Logger
) -> int:
    """Take what peers sent on a ROUTER ([name, kind, frames...]) and hand each message to
    `handle(name, kind, frames, name_frame)`; returns how many failed. A message that cannot be
    handled is logged with its traceback and skipped: one peer's bad frame must not stop the
    service, and a bug must not hide as a one-line warning."""
    failed = 0
    for _ in range(1024):
        try:
            raw = sock.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            break
        if len(raw) < 3:
            continue
        name, kind = raw[0].bytes.decode(errors="replace"), raw[1].bytes
        try:
            handle(name, kind, [frame.bytes for frame in raw[2:]], raw[0])
        except Exception:
            failed += 1
            log.exception("could not handle a %r message from %s", kind, name)
    return failed


def router_socket(ctx: zmq.Context, host: str, port: int, hwm: int) -> zmq.Socket:
    """A ROUTER that raises instead of dropping (EAGAIN: the peer is full; EHOSTUNREACH: it is
    gone) and lets a restarted peer take its name back before the old connection times out."""
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, 0)  # acks and hellos are small; never make a peer wait on them
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    for address in bind_addresses(host, port):
        sock.bind(address)
    return sock


def dealer_socket(ctx: zmq.Context, name: str, host: str, port: int, hwm: int) -> zmq.Socket:
    """The peer's end: its name as routing id; sends never wait (SNDHWM 0), the caller keeps
    what could not leave."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, name.encode())
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.connect(connect_address(host, port))
    return sock


def send_to(router: zmq.Socket, name: str, frames: list[bytes], stopping: Callable[[], bool]) -> bool:
    """Send to one peer, waiting while it is full; False if it is gone (or we are stopping)."""
    while True:
        try:
            router.send_multipart([name.encode(), *frames], zmq.NOBLOCK)
            return True
        except zmq.Again:
            if stopping():
                return False
            router.poll(50, zmq.POLLOUT)
        except zmq.ZMQError as exc:
            if exc.errno != zmq.EHOSTUNREACH:
                raise
            return False


class Outbox:
    """What a DEALER sends without ever waiting: frames that cannot leave now (the peer is
    slow or away) are kept, in order, and leave on the next flush."""

    def __init__(self) -> None:
        self.sock: zmq.Socket | None = None
        self._queue: deque[list[bytes]] = deque()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def append(self, frames: list[bytes]) -> None:
        self._queue.append(frames)

    def send(self, frames: list[bytes]) -> None:
        self._queue.append(frames)
        self.flush()

    def flush(self) -> None:
        while self._queue:
            try:
                self.sock.send_multipart(self._queue[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            self._queue.popleft()
