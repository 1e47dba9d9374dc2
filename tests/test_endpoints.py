"""Pipeline sockets on one machine (gnes/service/endpoints.py): a bound socket serves TCP and ipc,
a local peer connects over ipc once the file is there and over TCP otherwise."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from gnes.service.endpoints import IPC_DIR_ENV, bind_addresses, connect_address
from gnes.service.sockets import SocketSpec, SocketType, open_socket
from gnes.stack.compose import find_free_ports


@pytest.fixture
def ipc_folder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="gnes-ipc-test-", dir="/tmp") as folder:
        monkeypatch.setenv(IPC_DIR_ENV, folder)
        yield Path(folder)


def connected_unix_sockets(path: Path) -> int:
    """Accepted connections of the Unix socket bound at `path` (/proc/net/unix, state 03)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[5:6] == ["03"] and line.split()[-1] == str(path))


def roundtrip(pull: zmq.Socket, push: zmq.Socket, payload: bytes) -> bytes:
    push.send(payload)
    assert pull.poll(5000), "nothing arrived"
    return pull.recv()


def test_without_the_variable_everything_is_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(IPC_DIR_ENV, raising=False)
    assert bind_addresses("0.0.0.0", 5310) == ["tcp://*:5310"]
    assert connect_address("127.0.0.1", 5310) == "tcp://127.0.0.1:5310"


def test_a_bound_socket_serves_a_local_peer_over_ipc_and_any_peer_over_tcp(
    ipc_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (port,) = find_free_ports(1)
    ctx = zmq.Context()
    try:
        assert connect_address("127.0.0.1", port) == f"tcp://127.0.0.1:{port}", "no file yet: TCP"
        pull = open_socket(ctx, SocketSpec(SocketType.PULL_BIND, "0.0.0.0", port), linger_ms=0)
        assert (ipc_folder / str(port)).is_socket()
        assert connect_address("127.0.0.1", port) == f"ipc://{ipc_folder}/{port}"
        assert connect_address("10.1.2.3", port) == f"tcp://10.1.2.3:{port}", "another host: TCP"
        local = open_socket(ctx, SocketSpec(SocketType.PUSH_CONNECT, "127.0.0.1", port), linger_ms=0)
        assert roundtrip(pull, local, b"over ipc") == b"over ipc"
        assert connected_unix_sockets(ipc_folder / str(port)) == 1, "the local peer did not connect over ipc"
        monkeypatch.delenv(IPC_DIR_ENV)  # a process started without the variable: TCP to the same socket
        remote = open_socket(ctx, SocketSpec(SocketType.PUSH_CONNECT, "127.0.0.1", port), linger_ms=0)
        assert roundtrip(pull, remote, b"over tcp") == b"over tcp"
        for sock in (pull, local, remote):
            sock.close(0)
    finally:
        ctx.term()


def test_a_folder_too_long_for_a_unix_socket_is_refused_at_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IPC_DIR_ENV, "/tmp/" + "x" * 120)
    ctx = zmq.Context()
    try:
        with pytest.raises(OSError, match="Unix socket path over"):
            open_socket(ctx, SocketSpec(SocketType.PULL_BIND, "127.0.0.1", find_free_ports(1)[0]))
    finally:
        ctx.term()
