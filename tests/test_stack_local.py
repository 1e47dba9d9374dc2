"""LocalStack with real ``gnes`` processes: every process started here is stopped (and checked gone)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gnes.stack.compose import ProcessSpec, expand_stack, find_free_port
from gnes.stack.local import LocalStack, StackStartError

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "gnes-swarm.yml"
PORT_VARIABLES = (
    "GRPC_PORT",
    "INCOME_PROXY_IN",
    "INCOME_PROXY_OUT",
    "MIDDLEMAN_PROXY_IN",
    "MIDDLEMAN_PROXY_OUT",
    "MIDDLEMAN_PROXY_BROADCAST",
    "OUTGOING_PROXY_IN",
    "OUTGOING_PROXY_OUT",
)


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
    healthcheck = pytest.importorskip("gnes.cli.healthcheck", reason="the gnes services are not there yet")
    encoder_yaml, indexer_yaml = REPO / "yaml" / "encoder-hash.yml", REPO / "yaml" / "indexer-hash.yml"
    if not (encoder_yaml.is_file() and indexer_yaml.is_file()):
        pytest.skip("yaml/encoder-hash.yml and yaml/indexer-hash.yml are not there yet")

    ports: set[int] = set()
    while len(ports) < len(PORT_VARIABLES):
        ports.add(find_free_port())
    overrides = dict(zip(PORT_VARIABLES, map(str, sorted(ports)), strict=True))
    overrides.update(INDEXER_REPLICAS="2", ENCODER_YAML_PATH=str(encoder_yaml), INDEXER_YAML_PATH=str(indexer_yaml))
    specs = expand_stack(COMPOSE, workdir=tmp_path, overrides=overrides)
    stack = LocalStack(specs, workdir=tmp_path, quiet=True, start_timeout=120, stop_grace=15)
    try:
        stack.start()
        processes = stack.processes
        assert sorted(processes) == sorted(
            ["frontend.1", "income-proxy.1", "encoder.1", "middleman-proxy.1", "indexer.1", "indexer.2"]
            + ["outgoing-proxy.1"]
        )
        for spec in specs:
            assert processes[spec.name].poll() is None, spec.name
            assert healthcheck.check_ready(spec.ctrl_host, spec.ctrl_port, 5.0), spec.name
        assert stack.endpoints() == {"frontend": f"127.0.0.1:{overrides['GRPC_PORT']}"}
        assert (tmp_path / "volumes" / "gnes_shard_2_data").is_dir()
    finally:
        stack.stop()
    assert_gone(stack.processes)
