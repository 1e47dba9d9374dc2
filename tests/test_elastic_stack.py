"""Elastic shards in the local stack (`gnes stack`): real processes, the stack file's own
restart policy, scaling through LocalStack.scale (what `gnes stack scale` calls)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from gnes.cli.healthcheck import status_info
from gnes.client import GnesClient
from gnes.proto import pb
from gnes.stack.local import LocalStack, free_port_overrides

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "compose" / "gnes-swarm.yml"
Admin = pb.Request.AdminRequest

pytestmark = pytest.mark.e2e


def text_of(i: int) -> str:
    return f"stack document {i} about matter {i % 11} and kind {i % 5}"


def start_stack(tmp_path: Path, indexers: int) -> tuple[LocalStack, int]:
    overrides = free_port_overrides(
        INDEXER_REPLICAS=str(indexers),
        ENCODER_YAML_PATH=str(REPO / "yaml" / "encoder-hash.yml"),
        INDEXER_YAML_PATH=str(REPO / "yaml" / "indexer-hash.yml"),
        HOLD_TIMEOUT="30",
    )
    stack = LocalStack.from_file(COMPOSE, workdir=tmp_path, overrides=overrides, quiet=True, start_timeout=120)
    stack.start()
    return stack, int(overrides["GRPC_PORT"])


def middleman(stack: LocalStack) -> dict:
    spec = next(s for s in stack.specs if s.service == "middleman-proxy")
    info = status_info(spec.ctrl_host, spec.ctrl_port, timeout=3)
    assert info is not None, "the middleman does not answer"
    return info


def wait_members(stack: LocalStack, members: list[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        info = middleman(stack)
        if info["members"] == members and not info["migrating"]:
            return info
        assert time.monotonic() < deadline, f"placement {info['members']}, not {members}: {info}"
        time.sleep(0.1)


def count(client: GnesClient) -> int:
    return sum(s["count"] for s in client.admin(Admin.STATS)["shards"])


def check_all_once(client: GnesClient, ids: list[int]) -> None:
    request = pb.Request()
    request.admin.command = Admin.GET_DOCS
    request.admin.doc_ids.extend(ids)
    stored = [d.doc_id for d in client.call(request).admin.docs]
    assert len(stored) == len(set(stored)), "a document is stored twice"
    missing = set(ids) - set(stored)
    assert not missing, f"{len(missing)} acknowledged documents are missing, e.g. {sorted(missing)[:5]}"
    for doc_id in np.random.default_rng(0).choice(ids, size=min(40, len(ids)), replace=False).tolist():
        hits = client.query(text_of(doc_id), top_k=5)
        assert hits[0].doc_id == doc_id and len({h.doc_id for h in hits}) == len(hits)


def test_scale_indexers_2_to_4_to_2_in_the_local_stack_while_indexing(tmp_path: Path) -> None:
    stack, port = start_stack(tmp_path, indexers=2)
    acked: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def write() -> None:
        with GnesClient(port=port, timeout=120) as client:
            start = 0
            while not stop.is_set() and start < 20000:
                summary = client.index([text_of(i) for i in range(start, start + 100)], batch_size=100, start_id=start)
                if summary.errors:
                    errors.append(str(summary.errors))
                    return
                acked.extend(range(start, start + 100))
                start += 100

    writer = threading.Thread(target=write)
    try:
        wait_members(stack, ["1", "2"])
        writer.start()
        time.sleep(1.0)
        assert stack.scale("indexer", 4) == [1, 2, 3, 4]
        wait_members(stack, ["1", "2", "3", "4"])
        time.sleep(0.5)
        stack.scale("indexer", 2, stop_grace=120)  # slots 3 and 4 hand over, then exit
        info = wait_members(stack, ["1", "2"])
        assert info["migrations"] >= 2
        stop.set()
        writer.join(120)
        assert not errors, errors
        assert len(acked) >= 1000
        with GnesClient(port=port, timeout=60) as client:
            assert count(client) == len(acked)
            check_all_once(client, acked)
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(60)
        stack.stop()


def test_kill_9_an_indexer_of_the_local_stack_five_times_while_indexing(tmp_path: Path) -> None:
    """The stack's supervisor restarts the shard; held writes are sent again; nothing
    acknowledged is lost or doubled, and no call waits past the hold bound."""
    stack, port = start_stack(tmp_path, indexers=3)
    acked: list[int] = []
    longest = [0.0]
    stop = threading.Event()

    def write() -> None:
        with GnesClient(port=port, timeout=120) as client:
            start = 0
            while not stop.is_set() and start < 40000:
                began = time.monotonic()
                summary = client.index([text_of(i) for i in range(start, start + 200)], batch_size=200, start_id=start)
                longest[0] = max(longest[0], time.monotonic() - began)
                if not summary.errors:
                    acked.extend(range(start, start + 200))
                start += 200

    writer = threading.Thread(target=write)
    rng = np.random.default_rng(11)
    try:
        wait_members(stack, ["1", "2", "3"])
        writer.start()
        for round_no in range(5):
            before = len(acked)
            deadline = time.monotonic() + 60
            while len(acked) < before + 600 and time.monotonic() < deadline and writer.is_alive():
                time.sleep(0.05)
            assert len(acked) >= before + 600, f"round {round_no}: {len(acked) - before} acknowledged"
            victim = stack.processes[f"indexer.{int(rng.integers(1, 4))}"]
            os.killpg(victim.pid, signal.SIGKILL)
            time.sleep(float(rng.uniform(0.1, 0.5)))
        writer.join(240)
        assert not writer.is_alive(), "the writer did not finish"
        assert longest[0] < 35, f"an index call waited {longest[0]:.1f}s (hold bound 30 s)"
        wait_members(stack, ["1", "2", "3"])
        with GnesClient(port=port, timeout=60) as client:
            deadline = time.monotonic() + 30
            while count(client) < len(acked) and time.monotonic() < deadline:
                time.sleep(0.2)
            check_all_once(client, acked)
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(60)
        stack.stop()


def test_encoders_scale_and_die_while_indexing_and_no_message_is_lost(tmp_path: Path) -> None:
    """3 encoders, kill -9 two of them (the supervisor restarts them), then down to 1
    (SIGTERM: a leaving encoder finishes what it holds): every request is acknowledged."""
    stack, port = start_stack(tmp_path, indexers=2)
    acked: list[int] = []
    errors: list[str] = []
    longest = [0.0]
    stop = threading.Event()

    def write() -> None:
        with GnesClient(port=port, timeout=120) as client:
            start = 0
            while not stop.is_set() and start < 60000:
                began = time.monotonic()
                summary = client.index([text_of(i) for i in range(start, start + 500)], batch_size=500, start_id=start)
                longest[0] = max(longest[0], time.monotonic() - began)
                if summary.errors:
                    errors.append(str(summary.errors))
                else:
                    acked.extend(range(start, start + 500))
                start += 500

    writer = threading.Thread(target=write)
    try:
        wait_members(stack, ["1", "2"])
        stack.scale("encoder", 3)
        writer.start()
        for slot in (2, 1):
            time.sleep(0.3)
            # frozen first, so that it dies holding work it was given (the hash encoder is quick)
            os.killpg(stack.processes[f"encoder.{slot}"].pid, signal.SIGSTOP)
            time.sleep(0.5)
            os.killpg(stack.processes[f"encoder.{slot}"].pid, signal.SIGKILL)
            assert writer.is_alive(), "the writer finished before the encoders were killed: index more"
        stack.scale("encoder", 1, stop_grace=60)
        assert writer.is_alive(), "the writer finished before the encoders were scaled in: index more"
        writer.join(180)
        assert not writer.is_alive(), "the writer did not finish"
        assert not errors, errors[:3]
        assert len(acked) == 60000
        assert longest[0] < 30, f"an index call waited {longest[0]:.1f}s"
        spec = next(s for s in stack.specs if s.service == "income-proxy")
        assert status_info(spec.ctrl_host, spec.ctrl_port)["resent"] > 0, "no message was ever resent"
        with GnesClient(port=port, timeout=60) as client:
            assert count(client) == 60000
            check_all_once(client, acked)
    finally:
        stop.set()
        if writer.is_alive():
            writer.join(60)
        stack.stop()
