"""LocalStack with real ``gnes`` processes: every process started here is stopped (and checked gone)."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
from conftest import gone, wait_for  # noqa: I001 (the tests folder is on sys.path)

from gnes.cli import healthcheck
from gnes.client import GnesClient
from gnes.client.grpc_client import GnesError
from gnes.stack.compose import ProcessSpec, StackError, expand_stack, find_free_port, flag_value
from gnes.stack.local import LocalStack, StackStartError, _fresh_ipc_dir, free_port_overrides
from gnes.supervise import RestartPolicy

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "gnes-swarm.yml"


def assert_gone(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, proc in processes.items():
        assert proc.poll() is not None, f"{name} is still running"
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing left in its process group either


def test_a_process_that_exits_early_fails_the_start_clearly(tmp_path: Path) -> None:
    # An unknown subcommand makes `gnes` exit at once; the start must fail fast, not wait for the timeout.
    spec = ProcessSpec("broken", 1, ("no-such-subcommand",), ctrl_port=find_free_port())
    stack = LocalStack([spec], workdir=tmp_path, quiet=True, start_timeout=60, ready_check=lambda *_: False)
    try:
        with pytest.raises(StackStartError, match=r"broken\.1 exited with code [1-9]\d* before it was ready"):
            stack.start()
    finally:
        stack.stop()
    assert list(stack.processes) == ["broken.1"]
    assert_gone(stack.processes)
    assert (tmp_path / "logs" / "broken.1.log").is_file()


@pytest.mark.e2e
def test_local_stack_with_hash_encoder_starts_and_stops(tmp_path: Path) -> None:
    encoder_yaml, indexer_yaml = REPO / "yaml" / "encoder-hash.yml", REPO / "yaml" / "indexer-hash.yml"
    overrides = free_port_overrides(
        INDEXER_REPLICAS="2", ENCODER_YAML_PATH=str(encoder_yaml), INDEXER_YAML_PATH=str(indexer_yaml)
    )
    specs = expand_stack(COMPOSE, workdir=tmp_path, overrides=overrides)
    stack = LocalStack(specs, workdir=tmp_path, quiet=True, start_timeout=120, stop_grace=15)
    try:
        stack.start()
        processes = stack.processes
        assert sorted(processes) == sorted(
            ["frontend.1", "http.1", "income-proxy.1", "encoder.1", "middleman-proxy.1", "indexer.1", "indexer.2"]
            + ["outgoing-proxy.1"]
        )
        for spec in specs:  # the http service too: its control port answers READY once it serves
            assert processes[spec.name].poll() is None, spec.name
            assert healthcheck.check_ready(spec.ctrl_host, spec.ctrl_port, 5.0), spec.name
        assert stack.endpoints() == {"frontend": f"127.0.0.1:{overrides['GRPC_PORT']}"}
        assert (tmp_path / "volumes" / "gnes_shard_2_data").is_dir()
    finally:
        stack.stop()
    assert_gone(stack.processes)


# -- supervision: restarts, scale, no orphans ----------------------------------------------------------

HASH_YAMLS = {
    "ENCODER_YAML_PATH": str(REPO / "yaml/encoder-hash.yml"),
    "INDEXER_YAML_PATH": str(REPO / "yaml/indexer-hash.yml"),
}
TEXTS = [f"document number {i} about topic {i % 7}" for i in range(30)]


def index_and_find(grpc_port: int, texts: list[str] = TEXTS) -> None:
    """Index `texts` and find one of them again: every service of the pipeline took part."""
    with GnesClient(port=grpc_port, timeout=30) as client:
        summary = client.index(texts, batch_size=10)
        assert summary.errors == [] and summary.num_docs == len(texts)
        assert client.query(texts[3], top_k=1)[0].doc_id == 3


class Lines(io.StringIO):
    """Output that tests can read while the stack writes it from other threads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


@pytest.fixture
def hash_stack(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A running stack of the repository's stack file with the hash encoder and one shard; output in .output."""
    overrides = free_port_overrides(INDEXER_REPLICAS="1", **HASH_YAMLS)
    output = Lines()
    stack = LocalStack.from_file(
        COMPOSE, workdir=tmp_path, overrides=overrides, quiet=True, stop_grace=10, scale_grace=10, output=output
    )
    stack.grpc_port = int(overrides["GRPC_PORT"])  # type: ignore[attr-defined]
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        assert_gone(stack.processes)


def ipc_connections(folder: Path) -> dict[str, int]:
    """Connected Unix sockets per socket file in `folder`, read from /proc/net/unix (the accepted
    end of a connection carries the bound path; state 03 is connected)."""
    counts = {path.name: 0 for path in folder.iterdir() if path.is_socket()}
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 8 and fields[5] == "03" and Path(fields[7]).parent == folder:
            counts[Path(fields[7]).name] = counts.get(Path(fields[7]).name, 0) + 1
    return counts


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_the_stack_connects_its_pipeline_over_unix_sockets_and_removes_them_at_stop(hash_stack) -> None:  # type: ignore[no-untyped-def]
    stack = hash_stack
    folder = stack._ipc_dir
    assert folder is not None and folder.is_dir() and len(str(folder)) < 40
    index_and_find(stack.grpc_port)
    ports = {int(name) for name in ipc_connections(folder)}
    # Every bound pipeline port of the stack file has its file beside its TCP port ...
    pipeline_ports = {flag_port for spec in stack.specs for flag_port in bound_pipeline_ports(spec)}
    assert len(pipeline_ports) >= 6 and ports == pipeline_ports, (ports, pipeline_ports)
    # ... and every one of them has peers connected through it: no hop of the pipeline uses TCP.
    connections = ipc_connections(folder)
    assert all(count >= 1 for count in connections.values()), connections
    # A process outside the stack (no GNES_IPC_DIR) still reaches the bound sockets over TCP: the client's
    # gRPC call above went frontend -> income proxy, and the health checks reach every control port.
    for spec in stack.specs:
        assert healthcheck.check_ready(spec.ctrl_host, spec.ctrl_port, 5.0), spec.name
    stack.stop()
    assert not folder.exists(), "the stack's ipc folder outlives it"


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_binder_killed_with_sigkill_comes_back_on_its_unix_sockets_and_its_peers_reconnect(hash_stack) -> None:  # type: ignore[no-untyped-def]
    """kill -9 leaves the outgoing proxy's socket files behind; its restart binds them again, and the
    shards (PUSH) and the frontend (SUB) that connected over ipc reach it again."""
    stack, output = hash_stack, hash_stack._output
    folder = stack._ipc_dir
    first = stack.processes["outgoing-proxy.1"]
    os.killpg(first.pid, signal.SIGKILL)
    wait_for(lambda: "outgoing-proxy.1 restarted as pid" in output.text(), 30, "the restart")
    spec = next(s for s in stack.specs if s.name == "outgoing-proxy.1")
    wait_for(lambda: healthcheck.check_ready(spec.ctrl_host, spec.ctrl_port, 1.0), 30, "the restarted proxy")
    # Answers may be lost while it is down (callers get a timeout); once it is back they flow again.
    wait_for(lambda: _answers(stack.grpc_port), 30, "an answer through the restarted proxy")
    index_and_find(stack.grpc_port, [f"after the proxy restart {i}" for i in range(10)])
    assert all(count >= 1 for count in ipc_connections(folder).values()), ipc_connections(folder)


def _answers(grpc_port: int) -> bool:
    try:
        with GnesClient(port=grpc_port, timeout=3) as client:
            client.query("is anyone there", top_k=1)
        return True
    except (GnesError, grpc.RpcError):  # an error or a timeout while the connections come back
        return False


def bound_pipeline_ports(spec: ProcessSpec) -> list[int]:
    """The ports a process binds for the pipeline (its --port_in/--port_out with a *_BIND socket, and the
    middleman's --port_broadcast)."""
    argv = spec.argv
    ports = []
    for side in ("in", "out"):
        socket_type = flag_value(argv, f"--socket_{side}") or ""
        port = flag_value(argv, f"--port_{side}")
        if socket_type.endswith("_BIND") and port:
            ports.append(int(port))
    if (flag_value(argv, "--proxy_type") or "") == "ShardProxyService" and flag_value(argv, "--port_broadcast"):
        ports.append(int(flag_value(argv, "--port_broadcast")))  # type: ignore[arg-type]
    return ports


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_service_killed_with_sigkill_is_restarted_on_its_ports_and_the_stack_serves_again(hash_stack) -> None:  # type: ignore[no-untyped-def]
    stack, output = hash_stack, hash_stack._output
    index_and_find(stack.grpc_port)
    encoder = next(spec for spec in stack.specs if spec.name == "encoder.1")
    first = stack.processes["encoder.1"]
    os.killpg(first.pid, signal.SIGKILL)
    # The stack file's policy: on-failure, 5 s delay, 3 attempts in 60 s.
    wait_for(lambda: "encoder.1 restarted as pid" in output.text(), 30, "the restart")
    assert f"encoder.1 (pid {first.pid}) killed by SIGKILL; restart attempt 1 of 3 in 5s" in output.text()
    second = stack.processes["encoder.1"]
    assert second.pid != first.pid and second.poll() is None and gone(first.pid)
    # Same slot, same control port: the health check of the service finds it where it was.
    wait_for(lambda: healthcheck.check_ready(encoder.ctrl_host, encoder.ctrl_port, 1.0), 30, "the restarted encoder")
    index_and_find(stack.grpc_port, [f"after the restart {i}" for i in range(10)])
    assert stack.slots("encoder") == [1]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_scale_the_encoder_up_and_down_while_the_stack_serves(hash_stack) -> None:  # type: ignore[no-untyped-def]
    stack = hash_stack
    assert stack.scale("encoder", 3) == [1, 2, 3]
    procs = stack.processes
    for slot in (2, 3):
        spec = next(s for s in stack.specs if s.name == f"encoder.{slot}")
        assert procs[spec.name].poll() is None
        assert healthcheck.check_ready(spec.ctrl_host, spec.ctrl_port, 5.0)
        assert spec.ctrl_port != next(s for s in stack.specs if s.name == "encoder.1").ctrl_port
    index_and_find(stack.grpc_port)
    removed = [procs["encoder.2"], procs["encoder.3"]]
    assert stack.scale("encoder", 1, stop_grace=20) == [1]
    # Scaled away with SIGTERM, and they exited on their own (not killed after the grace).
    assert [proc.returncode for proc in removed] == [0, 0]
    assert all(gone(proc.pid) for proc in removed)
    assert "did not exit within" not in stack._output.text()
    index_and_find(stack.grpc_port, [f"after the scale-down {i}" for i in range(10)])
    assert stack.scale("encoder", 2) == [1, 2]  # the lowest free slot again, as swarm does
    with pytest.raises(StackError, match="no service"):
        stack.scale("nonesuch", 2)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_gnes_stack_scales_through_its_work_dir_and_kill_9_of_it_leaves_no_service(tmp_path: Path) -> None:
    overrides = free_port_overrides(INDEXER_REPLICAS="2", **HASH_YAMLS)
    env_args = [f"{key}={value}" for key, value in overrides.items()]
    command = [sys.executable, "-m", "gnes", "stack", "-f", str(COMPOSE), "--workdir", str(tmp_path), "--quiet"]
    stack = subprocess.Popen(
        [*command, "--env", *env_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pids: list[int] = []

    def ps() -> dict[str, int]:
        out = subprocess.run(
            [sys.executable, "-m", "gnes", "stack", "ps", "--workdir", str(tmp_path)],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        return {name: int(pid) for name, pid in re.findall(r"(\S+\.\d+) \(pid (\d+)\)", out)}

    try:
        wait_for(lambda: (tmp_path / "stack.json").is_file() or stack.poll() is not None, 90, "stack.json")
        assert stack.poll() is None, stack.stdout.read()  # type: ignore[union-attr]
        assert len(ps()) == 8  # the http service is one of them
        scaled = subprocess.run(
            [sys.executable, "-m", "gnes", "stack", "scale", "encoder=2", "--workdir", str(tmp_path)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert scaled.returncode == 0, scaled.stderr
        assert "encoder: 2 replica(s)" in scaled.stdout
        running = ps()
        pids = list(running.values())
        assert len(pids) == 9 and "encoder.2" in running
        index_and_find(int(overrides["GRPC_PORT"]))
        stack.kill()  # kill -9 the supervisor: no chance to stop anything itself
        stack.wait()
        wait_for(lambda: all(gone(pid) for pid in pids), 5, f"every service of the stack gone ({running})")
        # Its Unix socket folder outlived it; the next stack on this machine removes it.
        left = list(Path("/tmp").glob(f"gnes-ipc-{stack.pid}-*"))
        assert len(left) == 1 and any(p.is_socket() for p in left[0].iterdir()), left
        fresh = _fresh_ipc_dir()
        try:
            assert not left[0].exists(), "a new stack removes the folder of a dead one"
        finally:
            shutil.rmtree(fresh)
    finally:
        stack.kill()
        stack.wait()
        for pid in pids:
            if not gone(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_wait_stops_the_stack_and_fails_once_a_service_has_no_restart_left(tmp_path: Path) -> None:
    specs = expand_stack(COMPOSE, workdir=tmp_path, overrides=free_port_overrides(**HASH_YAMLS))
    proxy = next(spec for spec in specs if spec.name == "income-proxy.1")
    proxy = dataclasses.replace(proxy, restart=RestartPolicy("on-failure", delay=0.2, max_attempts=1, window=60))
    output = Lines()
    stack = LocalStack([proxy], workdir=tmp_path, quiet=True, output=output)
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(stack.wait()), daemon=True)
    try:
        stack.start()
        waiter.start()
        first = stack.processes["income-proxy.1"]
        os.killpg(first.pid, signal.SIGKILL)
        wait_for(lambda: "income-proxy.1 restarted" in output.text(), 30, "the one restart")
        os.killpg(stack.processes["income-proxy.1"].pid, signal.SIGKILL)
        waiter.join(timeout=30)
        assert result == [128 + signal.SIGKILL]
        assert "GIVING UP (all 1 restart attempts used within 60s)" in output.text()
        assert "stopping the stack" in output.text()
    finally:
        stack.stop()  # also ends a wait() still running
        if waiter.is_alive():
            waiter.join(timeout=30)
    assert_gone(stack.processes)
