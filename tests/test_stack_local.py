"""LocalStack with real ``gnes`` processes: every process started here is stopped (and checked gone)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from gnes.cli import healthcheck
from gnes.stack.compose import ProcessSpec, expand_stack, find_free_port
from gnes.stack.local import LocalStack, StackStartError, free_port_overrides

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
