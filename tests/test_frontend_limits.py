"""The gRPC frontend's guards: EMBED needs only a read token, and a unary call made while
--max_pending requests are in the pipeline is refused at once (RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from test_auth import READ, guarded  # noqa: F401 (guarded: the token-checking frontend fixture)
from test_http import HeldPipeline

from gnes.auth import Role, required_role
from gnes.client import GnesClient
from gnes.proto import nd_to_array, pb
from gnes.service.config import ServiceConfig
from gnes.service.frontend import FrontendService
from gnes.service.message import parse_frames
from tests.conftest import free_ports


def _embed(*texts: str) -> pb.Request:
    request = pb.Request(request_id=1)
    for i, text in enumerate(texts):
        request.embed.docs.add(doc_id=i, raw_text=text)
    return request


def test_embed_needs_only_a_read_token() -> None:
    assert required_role(_embed("x")) == Role.READ


def test_a_read_token_embeds_through_the_guarded_frontend(guarded: int) -> None:  # noqa: F811
    with GnesClient(port=guarded, token=READ, timeout=20) as reader:
        response = reader.call(_embed("a", "b"))
    assert response.embed.status == pb.Response.SUCCESS and not response.error
    assert nd_to_array(response.embed.embeddings).shape[0] == 2


@pytest.fixture
def held_frontend() -> tuple[HeldPipeline, FrontendService]:
    held = HeldPipeline()
    config = ServiceConfig(
        name="limited",
        port_in=held.port_out,
        port_out=held.port_in,
        socket_in="SUB_CONNECT",
        socket_out="PUSH_CONNECT",
        grpc_port=free_ports(1)[0],
        max_pending=2,
        port_metrics=0,
    )
    try:
        with FrontendService(config) as frontend:
            yield held, frontend
    finally:
        held.close()


class _Pipeline(threading.Thread):
    """Answers the frontend's health probes (admin LIST) at once and holds EMBED requests
    until released, so exactly the embeddings occupy --max_pending (the frontend's own probes
    never count against it)."""

    def __init__(self, held: HeldPipeline) -> None:
        super().__init__(daemon=True)
        self.held = held
        self.embeds: list[tuple[pb.Envelope, pb.Request]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self.held.pull.poll(20):
                continue
            packet = parse_frames(self.held.pull.recv_multipart())
            request = packet.request()
            if request.WhichOneof("body") == "embed":
                self.embeds.append((packet.envelope, request))
                continue
            response = pb.Response(request_id=request.request_id)
            response.admin.info_json = json.dumps({"shards": []})
            env = packet.envelope
            env.is_response = True
            self.held.pub.send_multipart(
                [env.client_id.encode(), env.SerializeToString(), response.SerializeToString()]
            )


def test_max_pending_refuses_unary_calls_at_once_and_the_accepted_ones_complete(held_frontend) -> None:  # type: ignore[no-untyped-def]
    held, frontend = held_frontend
    pipeline = _Pipeline(held)
    pipeline.start()
    callers = 12
    start = threading.Barrier(callers)

    def call(i: int) -> tuple[str, float]:
        with GnesClient(port=frontend.grpc_port, timeout=30) as client:
            client.wait_ready(10)
            start.wait(10)
            t0 = time.perf_counter()
            try:
                response = client.call(_embed(f"caller {i}"))
                return ("ok" if response.embed.status == pb.Response.SUCCESS else "error"), time.perf_counter() - t0
            except grpc.RpcError as exc:
                return exc.code().name, time.perf_counter() - t0

    try:
        with ThreadPoolExecutor(callers) as pool:
            results = [pool.submit(call, i) for i in range(callers)]
            # Every call is either held in the pipeline or refused, and none is answered yet.
            deadline = time.monotonic() + 10
            while frontend.refused + len(pipeline.embeds) < callers:
                assert time.monotonic() < deadline, f"{frontend.refused} refused, {len(pipeline.embeds)} held"
                time.sleep(0.01)
            accepted = list(pipeline.embeds)
            assert len(accepted) == 2 and frontend.session.in_flight >= 2
            assert not any(r.done() and r.result()[0] != "RESOURCE_EXHAUSTED" for r in results)
            # ZeroMQ sockets are not thread-safe: the stand-in's thread stops before we answer.
            pipeline.stopping.set()
            pipeline.join(5)
            for env, request in accepted:
                held.answer(env, request)
            outcomes = [r.result(30) for r in results]
    finally:
        pipeline.stopping.set()
        pipeline.join(5)
    codes = Counter(code for code, _ in outcomes)
    assert codes == {"RESOURCE_EXHAUSTED": callers - len(accepted), "ok": len(accepted)}, outcomes
    refused_in = [s for code, s in outcomes if code == "RESOURCE_EXHAUSTED"]
    assert max(refused_in) < 1.0, f"a refusal took {max(refused_in):.3f}s: it waited instead of refusing"
    assert len(pipeline.embeds) == len(accepted), "a refused call reached the pipeline"
    # The same outcomes on the frontend's Prometheus endpoint.
    port = frontend.status_info()["metrics_port"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert f'gnes_grpc_requests_total{{code="RESOURCE_EXHAUSTED",kind="embed"}} {callers - 2}.0' in text, text
    assert 'gnes_grpc_requests_total{code="OK",kind="embed"} 2.0' in text
    assert 'gnes_grpc_request_seconds_count{kind="embed"} 2.0' in text
