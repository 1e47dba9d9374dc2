"""ZeroMQ sockets as the command line names them: PULL_BIND, PUSH_CONNECT, ..."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import zmq

from .endpoints import bind_addresses, connect_address, tcp_address

# A bound on queued messages per socket: a slow consumer pushes back on its producer
# instead of letting memory grow without limit.
DEFAULT_HWM = 1000
# Pending outgoing messages get this long to leave at close; then they are dropped, so a
# service with a vanished peer still exits promptly.
DEFAULT_LINGER_MS = 2000


class SocketType(enum.Enum):
    PULL_BIND = (zmq.PULL, True)
    PULL_CONNECT = (zmq.PULL, False)
    PUSH_BIND = (zmq.PUSH, True)
    PUSH_CONNECT = (zmq.PUSH, False)
    PUB_BIND = (zmq.PUB, True)
    PUB_CONNECT = (zmq.PUB, False)
    SUB_BIND = (zmq.SUB, True)
    SUB_CONNECT = (zmq.SUB, False)
    PAIR_BIND = (zmq.PAIR, True)
    PAIR_CONNECT = (zmq.PAIR, False)
    # A proxy handing work to a pool of workers that may come, go or die (gnes.elastic.dispatch),
    # and the workers' end: every message is acknowledged, and resent if its worker dies.
    ROUTER_BIND = (zmq.ROUTER, True)
    DEALER_CONNECT = (zmq.DEALER, False)
    # No socket: a shard that clients reach only on its direct port (gnes launch).
    NONE = (-1, False)

    @property
    def zmq_type(self) -> int:
        return self.value[0]

    @property
    def is_bind(self) -> bool:
        return self.value[1]

    @classmethod
    def parse(cls, text: str) -> SocketType:
        try:
            return cls[text.upper()]
        except KeyError:
            names = ", ".join(cls.__members__)
            raise ValueError(f"unknown socket type {text!r}; choose one of {names}") from None


@dataclass(frozen=True, slots=True)
class SocketSpec:
    type: SocketType
    host: str
    port: int

    @property
    def address(self) -> str:
        """The TCP address (a bound socket may also bind ipc: see endpoints.py)."""
        return tcp_address(self.host, self.port, self.type.is_bind)


def open_socket(
    ctx: zmq.Context,
    spec: SocketSpec,
    hwm: int = DEFAULT_HWM,
    linger_ms: int = DEFAULT_LINGER_MS,
    subscribe: tuple[bytes, ...] = (b"",),
) -> zmq.Socket:
    """Open, configure and bind/connect one socket. Call it in the thread that will use it."""
    sock = ctx.socket(spec.type.zmq_type)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    # Detect dead peers within seconds so PUSH stops routing to them and XPUB forgets them.
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    if spec.type.zmq_type == zmq.SUB:
        for topic in subscribe:
            sock.setsockopt(zmq.SUBSCRIBE, topic)
    address = spec.address
    try:
        if spec.type.is_bind:
            for address in bind_addresses(spec.host, spec.port):
                sock.bind(address)
        else:
            address = connect_address(spec.host, spec.port)
            sock.connect(address)
    except (zmq.ZMQError, ValueError) as exc:
        sock.close(0)
        verb = "bind" if spec.type.is_bind else "connect"
        raise OSError(f"cannot {verb} {spec.type.name} socket at {address}: {exc}") from exc
    return sock


def bind_port(sock: zmq.Socket, host: str, port: int) -> int:
    """Bind to host:port, or to a free port when port is 0; return the port bound."""
    host = "*" if host in ("0.0.0.0", "*") else host
    if port:
        sock.bind(f"tcp://{host}:{port}")
        return port
    return sock.bind_to_random_port(f"tcp://{host}")
