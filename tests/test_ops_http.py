"""ops.py and auth.py over real HTTP (uvicorn on 127.0.0.1) in front of the hash pipeline."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import time

import httpx
import pytest

from gnes.auth import Role, TokenStore
from gnes.metrics.prom import Metrics
from gnes.proto import pb
from gnes.service.message import Packet, stamp_route
from tests.conftest import REPO, free_ports
from tests.ops_app import make_app, serve

READ, ADMIN = "read-tok-1234567", "admin-tok-7654321"


@pytest.fixture
def http(hash_pipeline):  # type: ignore[no-untyped-def]
    tokens = TokenStore({READ: Role.READ, ADMIN: Role.ADMIN})
    with serve(make_app(hash_pipeline.ports, tokens), free_ports(1)[0]) as url:
        yield url


def _wait_ready(client: httpx.Client) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        answer = client.get("/readyz")
        if answer.status_code == 200 or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def _index(hash_pipeline, texts: list[str], start: int = 0) -> None:  # type: ignore[no-untyped-def]
    from gnes.client import GnesClient

    with GnesClient(port=hash_pipeline.grpc_port, timeout=30) as client:
        assert client.index(texts, start_id=start).errors == []


def test_health_auth_and_metrics(http: str, hash_pipeline, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="gnes.auth")
    _index(hash_pipeline, [f"document number {i}" for i in range(30)])
    with httpx.Client(base_url=http, timeout=20) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = _wait_ready(client)
        assert ready.status_code == 200 and ready.json()["ready"] is True
        # no token, a wrong one, then a read token on an admin endpoint
        refused = client.get("/metrics")
        assert refused.status_code == 401 and "Bearer" in refused.headers["www-authenticate"]
        assert client.get("/status", headers={"Authorization": "Bearer nope-nope"}).status_code == 401
        assert client.post("/admin-only", headers={"Authorization": f"Bearer {READ}"}).status_code == 403
        assert client.post("/admin-only", headers={"Authorization": f"Bearer {ADMIN}"}).json() == {"ok": True}
        basic = base64.b64encode(f"anyone:{READ}".encode()).decode()
        assert client.get("/indexes", headers={"Authorization": f"Basic {basic}"}).json() == {"indexes": ["default"]}
        text = client.get("/metrics", headers={"Authorization": f"Bearer {READ}"}).text
    shard_docs = [line for line in text.splitlines() if line.startswith("gnes_shard_documents{")]
    assert len(shard_docs) == 3 and sum(float(line.rsplit(" ", 1)[1]) for line in shard_docs) == 30
    assert 'gnes_http_requests_total{endpoint="/readyz",status="200"}' in text
    assert 'gnes_http_errors_total{endpoint="/metrics",status="401"}' in text
    assert 'gnes_http_errors_total{endpoint="/admin-only",status="403"}' in text
    assert 'gnes_queue_depth{queue="pipeline"}' in text
    logged = caplog.text
    assert "(401)" in logged and "(403)" in logged
    assert READ not in logged and ADMIN not in logged and "nope-nope" not in logged


def test_readyz_says_503_when_a_shard_is_gone(http: str, hash_pipeline) -> None:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=http, timeout=20) as client:
        assert _wait_ready(client).status_code == 200
        hash_pipeline.shard(1).stop()
        deadline = time.monotonic() + 30
        while (answer := client.get("/readyz")).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert answer.status_code == 503 and answer.json()["ready"] is False, answer.text
        assert client.get("/healthz").status_code == 200  # the process itself is still up


def _peers(hash_pipeline) -> str:  # type: ignore[no-untyped-def]
    services = hash_pipeline.services
    return ",".join(f"{name}=127.0.0.1:{services[name].ctrl_port}" for name in sorted(services))


def test_status_shows_every_service(http: str, hash_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _index(hash_pipeline, [f"text {i}" for i in range(12)], start=100)
    monkeypatch.setenv("GNES_STATUS_PEERS", _peers(hash_pipeline))
    monkeypatch.delenv("GNES_STACK_WORKDIR", raising=False)
    with httpx.Client(base_url=http, timeout=20, headers={"Authorization": f"Bearer {READ}"}) as client:
        _wait_ready(client)
        view = client.get("/status").json()
    by_name = {row["name"]: row for row in view["services"]}
    assert set(by_name) == set(hash_pipeline.services)
    assert all(row["ready"] for row in view["services"]), view
    assert by_name["encoder"]["dim"] > 0 and by_name["encoder"]["model"] == "HashEncoder"
    assert sum(by_name[f"indexer{i}"]["count"] for i in range(3)) == 12
    assert view["indexes"] == {"default": 12} and len(view["shards"]) == 3
    assert view["ready"] is True


def test_cli_status_table(hash_pipeline) -> None:  # type: ignore[no-untyped-def]
    _index(hash_pipeline, [f"line {i}" for i in range(7)])
    env = {**os.environ, "GNES_STATUS_PEERS": _peers(hash_pipeline), "PYTHONPATH": str(REPO)}
    env.pop("GNES_STACK_WORKDIR", None)
    argv = [sys.executable, "-m", "gnes", "client", "--grpc_port", str(hash_pipeline.grpc_port), "status"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, cwd=REPO / "tests")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["SERVICE", "KIND", "READY", "ADDRESS"]
    encoder = next(line.split() for line in lines if line.startswith("encoder "))
    assert encoder[1:3] == ["encoder", "yes"] and "HashEncoder" in encoder
    assert "documents per logical index: default 7" in done.stdout
    hash_pipeline.shard(2).stop()
    done = subprocess.run([*argv, "--json"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO / "tests")
    assert done.returncode == 1  # a service is not ready
    assert '"ready": false' in done.stdout


def test_stage_latency_from_route_stamps() -> None:
    metrics = Metrics()
    packet = Packet(pb.Envelope(body_type=pb.Envelope.QUERY, request_id=1), b"", time.time_ns() - 3_000_000)
    stamp_route(packet, "encoder", "encoder@1")
    packet.received_ns = time.time_ns()
    stamp_route(packet, "indexer", "indexer@1")
    metrics.observe_answer(packet.envelope, pb.Response(search=pb.Response.QueryResponse(status=pb.Response.SUCCESS)))
    text = metrics.render()[0].decode()
    assert 'gnes_stage_seconds_count{stage="encoder"} 1.0' in text
    assert 'gnes_stage_seconds_bucket{le="0.0025",stage="encoder"} 0.0' in text  # it took 3 ms
    assert 'gnes_pipeline_seconds_count{kind="query"} 1.0' in text
    assert 'gnes_pipeline_answers_total{kind="query",status="ok"} 1.0' in text


def test_peers_that_do_not_resolve_are_dropped_only_beside_a_stack() -> None:
    from gnes.metrics.deployment import parse_peers

    text = "encoder=tasks.no-such-service.invalid:5399,lo=127.0.0.1:5400"
    # On its own (Swarm): a service whose name does not resolve is down, and listed as such.
    assert [(a.name, a.host) for a in parse_peers(text)] == [
        ("encoder", "tasks.no-such-service.invalid"),
        ("lo", "127.0.0.1"),
    ]
    # Beside a local stack, the stack file's Swarm names are left out; addresses stay.
    assert [(a.name, a.host) for a in parse_peers(text, drop_unresolved=True)] == [("lo", "127.0.0.1")]
