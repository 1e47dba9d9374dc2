"""Where a pipeline socket binds or connects: TCP always, and a Unix domain socket (``ipc://``)
beside it when the processes share one machine.

``GNES_IPC_DIR`` names a folder; the local stack (``gnes stack``) makes one and sets it for its
processes. A socket that binds a port then binds ``tcp://host:port`` and ``ipc://DIR/port``;
a socket that connects to a port on this machine connects to ``ipc://DIR/port`` when that file
is there (its binder is up), and to TCP otherwise. The port number names the file, so a stack
whose ports do not collide has no colliding files, and a peer outside the folder's reach (a
container, another host, a process started without the variable) still reaches every bound
socket by TCP. Why: on loopback, one ZeroMQ round trip between two processes took 90-121 us over
ipc against 131-138 us over TCP, and 40-59 us of the sender's CPU against 62-70 (pyzmq, 2-core
VM); a query crosses 6 such hops and every indexed request as many.

Control ports, direct shard ports and the gRPC/HTTP faces stay TCP: tools and clients reach them.
"""

from __future__ import annotations

import os
from pathlib import Path

IPC_DIR_ENV = "GNES_IPC_DIR"
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "*"})
_MAX_IPC_PATH = 100  # Linux's sun_path holds 108 bytes, its terminating zero included


def ipc_dir() -> Path | None:
    """The folder of this machine's ipc endpoints, or None when ipc is not in use."""
    value = os.environ.get(IPC_DIR_ENV, "").strip()
    return Path(value) if value else None


def ipc_path(port: int) -> Path | None:
    folder = ipc_dir()
    if folder is None or port <= 0:
        return None
    path = folder / str(port)
    if len(str(path)) > _MAX_IPC_PATH:
        raise ValueError(f"{IPC_DIR_ENV}={folder} makes a Unix socket path over {_MAX_IPC_PATH} bytes: {path}")
    return path


def tcp_address(host: str, port: int, bind: bool) -> str:
    if bind and host in ("0.0.0.0", "*"):
        host = "*"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    return f"tcp://{host}:{port}"


def bind_addresses(host: str, port: int) -> list[str]:
    """Every address a socket binding host:port binds: TCP, then ipc when GNES_IPC_DIR is set."""
    addresses = [tcp_address(host, port, bind=True)]
    path = ipc_path(port)
    if path is not None:  # whatever the interface: only peers on this machine see the file
        addresses.append(f"ipc://{path}")
    return addresses


def connect_address(host: str, port: int) -> str:
    """ipc://DIR/port for a bound socket on this machine whose file is there; TCP otherwise."""
    path = ipc_path(port) if host in _LOCAL_HOSTS else None
    if path is not None and path.is_socket():
        return f"ipc://{path}"
    return tcp_address(host, port, bind=False)
