"""Shared fixtures: free loopback ports, and whole gnes pipelines that always tear down."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class InProcessPipeline:
    """frontend → map proxy → encoder → shard proxy → N indexers → reduce proxy → frontend,
    each a real service with real sockets on loopback, run as threads of this process."""

    grpc_port: int
    ports: dict[str, int]
    services: dict[str, object] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def shard(self, i: int):  # type: ignore[no-untyped-def]
        return self.services[f"indexer{i}"]


def start_inprocess_pipeline(
    encoder_yaml: str,
    indexer_yaml: str,
    shards: int,
    data_dir: Path | None,
    batch_size: int = 0,
    reduce_timeout: float = 10.0,
) -> InProcessPipeline:
    from gnes.client import GnesClient
    from gnes.service.config import ServiceConfig
    from gnes.service.encoder import EncoderService
    from gnes.service.frontend import FrontendService
    from gnes.service.indexer import IndexerService
    from gnes.service.proxy import MapProxyService, ReduceProxyService, ShardProxyService

    names = ["income_in", "income_out", "middle_in", "middle_out", "broadcast", "out_in", "out_out", "grpc"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    pipe = InProcessPipeline(ports["grpc"], ports)
    cfg = ServiceConfig
    specs = [
        (
            "income",
            MapProxyService,
            cfg(
                name="income",
                port_in=ports["income_in"],
                port_out=ports["income_out"],
                socket_in="PULL_BIND",
                socket_out="PUSH_BIND",
                batch_size=batch_size,
            ),
        ),
        (
            "middle",
            ShardProxyService,
            cfg(
                name="middle",
                port_in=ports["middle_in"],
                port_out=ports["middle_out"],
                socket_in="PULL_BIND",
                socket_out="PUSH_BIND",
                port_broadcast=ports["broadcast"],
            ),
        ),
        (
            "outgoing",
            ReduceProxyService,
            cfg(
                name="outgoing",
                port_in=ports["out_in"],
                port_out=ports["out_out"],
                socket_in="PULL_BIND",
                socket_out="PUB_BIND",
                reduce_timeout=reduce_timeout,
            ),
        ),
        (
            "encoder",
            EncoderService,
            cfg(
                name="encoder",
                port_in=ports["income_out"],
                port_out=ports["middle_in"],
                socket_in="PULL_CONNECT",
                socket_out="PUSH_CONNECT",
                yaml_path=encoder_yaml,
            ),
        ),
    ]
    for i in range(shards):
        dump = str(data_dir / f"shard{i}") if data_dir is not None else ""
        specs.append(
            (
                f"indexer{i}",
                IndexerService,
                cfg(
                    name=f"indexer{i}",
                    port_in=ports["middle_out"],
                    port_out=ports["out_in"],
                    socket_in="PULL_CONNECT",
                    socket_out="PUSH_CONNECT",
                    port_broadcast=ports["broadcast"],
                    yaml_path=indexer_yaml,
                    dump_path=dump,
                ),
            )
        )
    specs.append(
        (
            "frontend",
            FrontendService,
            cfg(
                name="frontend",
                port_in=ports["out_out"],
                port_out=ports["income_in"],
                socket_in="SUB_CONNECT",
                socket_out="PUSH_CONNECT",
                grpc_port=ports["grpc"],
                reduce_timeout=reduce_timeout,
            ),
        )
    )
    try:
        for name, kind, config in specs:
            pipe.services[name] = pipe.stack.enter_context(kind(config))
        wait_for_shards(pipe.services["middle"], shards)
        with GnesClient(port=pipe.grpc_port) as client:
            client.wait_ready(10)
    except BaseException:
        pipe.stack.close()
        raise
    return pipe


def wait_for_shards(middleman, shards: int, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while len(middleman.shards) < shards:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(middleman.shards)} of {shards} shards subscribed")
        time.sleep(0.01)


@pytest.fixture
def hash_pipeline(tmp_path: Path) -> Iterator[InProcessPipeline]:
    """Three shards with the hash encoder and exact inner-product search, data in tmp_path."""
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-hash.yml"),
        str(REPO / "yaml/indexer-hash.yml"),
        shards=3,
        data_dir=tmp_path,
        batch_size=16,
    )
    try:
        yield pipe
    finally:
        pipe.stack.close()


STACK_PORT_VARIABLES = (
    "GRPC_PORT",
    "INCOME_PROXY_IN",
    "INCOME_PROXY_OUT",
    "MIDDLEMAN_PROXY_IN",
    "MIDDLEMAN_PROXY_OUT",
    "MIDDLEMAN_PROXY_BROADCAST",
    "OUTGOING_PROXY_IN",
    "OUTGOING_PROXY_OUT",
)


def stack_overrides(**extra: str) -> dict[str, str]:
    """Variables for compose/gnes-swarm.yml that put every port of the stack on a free one."""
    overrides = dict(zip(STACK_PORT_VARIABLES, map(str, free_ports(len(STACK_PORT_VARIABLES))), strict=True))
    overrides.update(extra)
    return overrides


class ShardProcesses:
    """Index shards as real `gnes index` processes reachable on direct ports; restartable."""

    def __init__(self, root: Path, n: int, save_interval: float = 0.0) -> None:
        self.root = root
        self.ports = free_ports(n)
        self.save_interval = save_interval
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, i: int) -> None:
        cmd = [sys.executable, "-m", "gnes", "index", "--socket_in", "NONE", "--socket_out", "NONE"]
        cmd += ["--port_direct", str(self.ports[i]), "--dump_path", str(self.root / f"shard-{i}")]
        cmd += ["--name", f"shard-{i}", "--save_interval", str(self.save_interval)]
        log = open(self.root / f"shard-{i}.log", "ab")  # noqa: SIM115 - kept open for the child
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self.procs[i] = None

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for i, proc in enumerate(self.procs):
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill(i)
        self.procs = [None] * len(self.procs)


@pytest.fixture
def shard_processes(tmp_path: Path) -> Iterator[Callable[..., ShardProcesses]]:
    """Factory: `shard_processes(n, save_interval=0)` starts n shards; all are stopped at the end."""
    started: list[ShardProcesses] = []

    def start(n: int, save_interval: float = 0.0) -> ShardProcesses:
        shards = ShardProcesses(tmp_path / f"shards{len(started)}", n, save_interval)
        shards.root.mkdir(parents=True)
        started.append(shards)
        for i in range(n):
            shards.start(i)
        return shards

    try:
        yield start
    finally:
        for shards in started:
            shards.stop_all()
