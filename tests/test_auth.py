"""Tokens (gnes/auth): the store, the gRPC interceptor on a real frontend, the HTTP dependencies."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import grpc
import pytest

from gnes.auth import Role, TokenStore, parse_authorization, required_role
from gnes.proto import pb

READ, ADMIN, WRONG = "r3ad-t0ken-aaaa", "adm1n-t0ken-bbbb", "wr0ng-t0ken-cccc"


def test_store_reads_lines_json_and_env(tmp_path: Path) -> None:
    lines = tmp_path / "tokens.txt"
    lines.write_text(f"# comment\n{READ} read\n\n{ADMIN}  ADMIN  # trailing\n")
    store = TokenStore.from_sources(lines, env={})
    assert (store.role_of(READ), store.role_of(ADMIN), store.role_of(WRONG)) == (Role.READ, Role.ADMIN, None)
    assert store.role_of("") is None and store.role_of(None) is None and store.role_of(READ[:-1]) is None
    as_json = tmp_path / "tokens.json"
    as_json.write_text(json.dumps([{"token": READ, "role": "read"}]))
    env = {"GNES_TOKENS": f"{ADMIN}:admin, x:y:read", "GNES_TOKEN_FILE": str(as_json)}
    store = TokenStore.from_sources(env=env)
    assert (store.role_of(READ), store.role_of(ADMIN), store.role_of("x:y")) == (Role.READ, Role.ADMIN, Role.READ)
    assert TokenStore.from_text(json.dumps({READ: "admin"})).role_of(READ) is Role.ADMIN
    assert not TokenStore.from_sources(env={}).enabled


@pytest.mark.parametrize("text", [f"{READ}\n", f"{READ} read extra\n", f"{READ} superuser\n"])
def test_store_refuses_bad_lines_without_quoting_them(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        TokenStore.from_text(text)
    assert READ not in str(caught.value)


def test_authorization_header_forms() -> None:
    basic = base64.b64encode(f"sloth:{READ}".encode()).decode()
    assert parse_authorization(f"Bearer {READ}") == READ
    assert parse_authorization(f"bearer  {READ} ") == READ
    assert parse_authorization(f"Basic {basic}") == READ
    for bad in (None, "", "Bearer", "Basic !!!", "Basic " + base64.b64encode(b"nopassword").decode(), f"Token {READ}"):
        assert parse_authorization(bad) is None


def test_roles_of_requests() -> None:
    search, index, admin_list, admin_drop = pb.Request(), pb.Request(), pb.Request(), pb.Request()
    search.search.top_k = 1
    index.index.docs.add(doc_id=1, raw_text="x")
    admin_list.admin.command = pb.Request.AdminRequest.LIST
    admin_drop.admin.command = pb.Request.AdminRequest.DROP
    assert [required_role(r) for r in (search, index, admin_list, admin_drop)] == [
        Role.READ,
        Role.ADMIN,
        Role.READ,
        Role.ADMIN,
    ]


# ---- gRPC: a second frontend with tokens in front of the hash pipeline -----------------------------------
@pytest.fixture
def guarded(hash_pipeline, tmp_path: Path):  # type: ignore[no-untyped-def]
    from gnes.service.config import ServiceConfig
    from gnes.service.frontend import FrontendService
    from tests.conftest import free_ports

    token_file = tmp_path / "tokens"
    token_file.write_text(f"{READ} read\n{ADMIN} admin\n")
    ports = hash_pipeline.ports
    config = ServiceConfig(
        name="guarded",
        port_in=ports["out_out"],
        port_out=ports["income_in"],
        socket_in="SUB_CONNECT",
        socket_out="PUSH_CONNECT",
        grpc_port=free_ports(1)[0],
        token_file=str(token_file),
    )
    with FrontendService(config) as frontend:
        yield frontend.grpc_port


def _code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_grpc_tokens(guarded: int, caplog: pytest.LogCaptureFixture) -> None:
    from gnes.client import GnesClient

    caplog.set_level(logging.INFO, logger="gnes.auth")
    with GnesClient(port=guarded, timeout=20) as anonymous, GnesClient(port=guarded, token=WRONG) as wrong:
        assert _code(lambda: anonymous.query("x")) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: wrong.query("x")) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: wrong.index(["x"])) == grpc.StatusCode.UNAUTHENTICATED
    with GnesClient(port=guarded, token=READ, timeout=20) as reader:
        assert reader.query("nothing indexed yet", top_k=3) == []
        assert _code(lambda: reader.index(["a document"], start_id=5)) == grpc.StatusCode.PERMISSION_DENIED
        assert _code(lambda: reader.admin(pb.Request.AdminRequest.DROP, index_name="x")) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        request = pb.Request(request_id=1)
        request.index.docs.add(doc_id=6, raw_text="through the Index method")
        assert _code(lambda: reader._stub.Index(request, metadata=reader._metadata)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert reader.admin(pb.Request.AdminRequest.LIST)["shards"]
    with GnesClient(port=guarded, token=ADMIN, timeout=20) as admin:
        summary = admin.index(["bushfires near sydney", "a quiet day"], start_id=10)
        assert (summary.num_docs, summary.errors) == (2, [])
    with GnesClient(port=guarded, token=READ, timeout=20) as reader:
        assert reader.query("bushfires near sydney", top_k=1)[0].doc_id == 10
    logged = caplog.text
    assert "401" in logged and "403" in logged and "unknown token" in logged
    for token in (READ, ADMIN, WRONG):
        assert token not in logged


def test_grpc_health_is_open_and_follows_the_pipeline(guarded: int, hash_pipeline) -> None:  # type: ignore[no-untyped-def]

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{guarded}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        _wait_health(stub, "", health_pb2.HealthCheckResponse.SERVING, 15)
        hash_pipeline.shard(0).stop()  # a shard gone: the pipeline's LIST answer is an error
        _wait_health(stub, "gnes.GnesRPC", health_pb2.HealthCheckResponse.NOT_SERVING, 30)


def _wait_health(stub, service: str, want: int, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Until the frontend's gRPC health service reports `want` for `service`."""
    from grpc_health.v1 import health_pb2

    status = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
        if status == want:
            return
        time.sleep(0.1)
    assert status == want, f"health of {service!r} stayed {status}, not {want}"
