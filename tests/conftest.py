"""Shared fixtures: free loopback ports, and whole gnes pipelines that always tear down."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gnes.cluster.local_shards import LocalShards
from gnes.stack.compose import find_free_ports
from gnes.stack.local import free_port_overrides

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1."""
    return find_free_ports(n)


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
    hold_timeout: float = 30.0,
    encoder_dump: str = "",
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

    def spec(name: str, kind: type, port_in: str, port_out: str, sockets: str, **extra: object) -> tuple:
        """(name, service class, config) with the ports looked up by name; sockets: "IN OUT"."""
        socket_in, socket_out = sockets.split()
        config = ServiceConfig(
            name=name,
            port_in=ports[port_in],
            port_out=ports[port_out],
            socket_in=socket_in,
            socket_out=socket_out,
            **extra,  # type: ignore[arg-type]
        )
        return name, kind, config

    broadcast = ports["broadcast"]
    specs = [
        spec("income", MapProxyService, "income_in", "income_out", "PULL_BIND ROUTER_BIND", batch_size=batch_size),
        # The middleman's own answers (a shard that is down, a write held too long) go straight to the reducer.
        spec(
            "middle",
            ShardProxyService,
            "middle_in",
            "out_in",
            "PULL_BIND PUSH_CONNECT",
            port_broadcast=broadcast,
            hold_timeout=hold_timeout,
        ),
        spec("outgoing", ReduceProxyService, "out_in", "out_out", "PULL_BIND PUB_BIND", reduce_timeout=reduce_timeout),
        spec(
            "encoder",
            EncoderService,
            "income_out",
            "middle_in",
            "DEALER_CONNECT PUSH_CONNECT",
            yaml_path=encoder_yaml,
            dump_path=encoder_dump,
        ),
    ]
    for i in range(shards):
        dump = str(data_dir / f"shard{i}") if data_dir is not None else ""
        specs.append(
            spec(
                f"indexer{i}",
                IndexerService,
                "middle_out",
                "out_in",
                "NONE PUSH_CONNECT",
                port_broadcast=broadcast,
                shard_id=str(i + 1),
                yaml_path=indexer_yaml,
                dump_path=dump,
            )
        )
    specs.append(
        spec(
            "frontend",
            FrontendService,
            "out_out",
            "income_in",
            "SUB_CONNECT PUSH_CONNECT",
            grpc_port=ports["grpc"],
            reduce_timeout=reduce_timeout,
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
    """Until the middleman's placement holds `shards` members and no move is under way."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        info = middleman.status_info()
        if len(info["members"]) == shards and not info["migrating"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the middleman's placement is {info['members']}, not {shards} shards")
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


def stack_overrides(**extra: str) -> dict[str, str]:
    """Variables for compose/gnes-swarm.yml that put every port of the stack on a free one."""
    return free_port_overrides(**extra)


@pytest.fixture
def shard_processes(tmp_path: Path) -> Iterator[Callable[..., LocalShards]]:
    """Factory: `shard_processes(n, save_interval=0)` starts n shard processes and waits until
    they answer; all are stopped at the end."""
    started: list[LocalShards] = []

    def start(n: int, save_interval: float = 0.0) -> LocalShards:
        shards = LocalShards(n, tmp_path / f"shards{len(started)}", save_interval=save_interval)
        started.append(shards)
        return shards.__enter__()

    try:
        yield start
    finally:
        for shards in started:
            shards.stop()


class IndexWriter:
    """Indexes documents first..first+total-1 (text from `text_of`) through the gRPC frontend in
    a thread, `batch` per request, and records which ids were acknowledged, the errors, and the
    longest call. `until_error` stops at the first error (where none is allowed)."""

    def __init__(
        self,
        port: int,
        text_of: Callable[[int], str],
        total: int,
        batch: int,
        until_error: bool = False,
        first: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        import threading

        self.port, self.text_of, self.total, self.batch, self.until_error = port, text_of, total, batch, until_error
        self.first, self.host = first, host
        self.acked: list[int] = []
        self.errors: list[str] = []
        self.longest = 0.0
        self.stop = threading.Event()
        self.running = threading.Event()  # cleared by pause(): the next request waits for resume()
        self.running.set()
        self.thread = threading.Thread(target=self._run, name="index-writer", daemon=True)

    def _run(self) -> None:
        import time

        from gnes.client import GnesClient

        with GnesClient(self.host, self.port, timeout=120) as client:
            for start in range(self.first, self.first + self.total, self.batch):
                self.running.wait()
                if self.stop.is_set():
                    return
                texts = [self.text_of(i) for i in range(start, min(start + self.batch, self.first + self.total))]
                began = time.monotonic()
                summary = client.index(texts, batch_size=len(texts), start_id=start)
                self.longest = max(self.longest, time.monotonic() - began)
                if summary.errors:
                    self.errors.append(f"documents {start}..: {summary.errors}")
                    if self.until_error:
                        return
                else:
                    self.acked.extend(range(start, start + len(texts)))

    def start(self) -> IndexWriter:
        self.thread.start()
        return self

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Until `more` further documents are acknowledged, or all of them (or fail, naming the count)."""
        import time

        target, deadline = min(len(self.acked) + more, self.total), time.monotonic() + timeout
        while len(self.acked) < target and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= target, f"only {len(self.acked)} acknowledged, waiting for {target}"

    def pause(self) -> None:
        """No request after the one under way, until resume()."""
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def finish(self, timeout: float = 240.0) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the writer did not finish in time"

    def close(self) -> None:
        self.stop.set()
        self.running.set()
        self.thread.join(60)


class StandInSockets:
    """The two ends of a pipeline on real sockets, for a service under test (its --port_out
    PUSHes into `pull`; it SUBscribes to `pub` at its --port_in): tests answer by hand."""

    def __init__(self) -> None:
        import zmq

        self.port_in, self.port_out = free_ports(2)  # the service's port_out, its port_in
        self.ctx = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.bind(f"tcp://127.0.0.1:{self.port_in}")
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.bind(f"tcp://127.0.0.1:{self.port_out}")
        for sock in (self.pull, self.pub):
            sock.setsockopt(zmq.LINGER, 0)

    def reply(self, env, response) -> None:  # type: ignore[no-untyped-def]
        """Send `response` back as the answer to the request of envelope `env`."""
        env.is_response = True
        self.pub.send_multipart([env.client_id.encode(), env.SerializeToString(), response.SerializeToString()])

    def close(self) -> None:
        self.pull.close()
        self.pub.close()
        self.ctx.term()


def gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for a reaper that may never come counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Until `predicate()` holds; an AssertionError naming `what` after `timeout` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)
