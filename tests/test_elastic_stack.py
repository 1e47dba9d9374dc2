"""Elastic shards in the local stack (`gnes stack`): real processes, the stack file's own
restart policy, scaling through LocalStack.scale (what `gnes stack scale` calls)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import IndexWriter  # noqa: I001 (the tests folder is on sys.path)

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
    writer = IndexWriter(port, text_of, total=40000, batch=100, until_error=True)
    try:
        wait_members(stack, ["1", "2"])
        writer.start().wait_for(500)
        assert stack.scale("indexer", 4) == [1, 2, 3, 4]
        wait_members(stack, ["1", "2", "3", "4"])
        writer.wait_for(500)
        stack.scale("indexer", 2, stop_grace=120)  # slots 3 and 4 hand over, then exit
        info = wait_members(stack, ["1", "2"])
        assert info["migrations"] >= 2
        writer.wait_for(200)
        writer.close()
        assert not writer.errors, writer.errors
        with GnesClient(port=port, timeout=60) as client:
            assert count(client) == len(writer.acked)
            check_all_once(client, writer.acked)
    finally:
        writer.close()
        stack.stop()


def test_kill_9_an_indexer_of_the_local_stack_five_times_while_indexing(tmp_path: Path) -> None:
    """The stack's supervisor restarts the shard; held writes are sent again; nothing
    acknowledged is lost or doubled, and no call waits past the hold bound."""
    stack, port = start_stack(tmp_path, indexers=3)
    writer = IndexWriter(port, text_of, total=40000, batch=200)
    rng = np.random.default_rng(11)
    try:
        wait_members(stack, ["1", "2", "3"])
        writer.start()
        for _ in range(5):
            writer.wait_for(600)  # every round acknowledges writes before its kill
            victim = stack.processes[f"indexer.{int(rng.integers(1, 4))}"]
            os.killpg(victim.pid, signal.SIGKILL)
            time.sleep(float(rng.uniform(0.1, 0.5)))
        writer.finish()
        assert writer.longest < 35, f"an index call waited {writer.longest:.1f}s (hold bound 30 s)"
        wait_members(stack, ["1", "2", "3"])
        with GnesClient(port=port, timeout=60) as client:
            deadline = time.monotonic() + 30
            while count(client) < len(writer.acked) and time.monotonic() < deadline:
                time.sleep(0.2)
            check_all_once(client, writer.acked)
    finally:
        writer.close()
        stack.stop()


def test_encoders_scale_and_die_while_indexing_and_no_message_is_lost(tmp_path: Path) -> None:
    """3 encoders, kill -9 two of them (the supervisor restarts them), then down to 1
    (SIGTERM: a leaving encoder finishes what it holds): every request is acknowledged."""
    stack, port = start_stack(tmp_path, indexers=2)
    writer = IndexWriter(port, text_of, total=60000, batch=500)
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
            assert writer.thread.is_alive(), "the writer finished before the encoders were killed: index more"
        stack.scale("encoder", 1, stop_grace=60)
        assert writer.thread.is_alive(), "the writer finished before the encoders were scaled in: index more"
        writer.finish()
        assert not writer.errors, writer.errors[:3]
        assert len(writer.acked) == 60000
        assert writer.longest < 30, f"an index call waited {writer.longest:.1f}s"
        spec = next(s for s in stack.specs if s.service == "income-proxy")
        assert status_info(spec.ctrl_host, spec.ctrl_port)["resent"] > 0, "no message was ever resent"
        with GnesClient(port=port, timeout=60) as client:
            assert count(client) == 60000
            check_all_once(client, writer.acked)
    finally:
        writer.close()
        stack.stop()
