"""`gnes http` over real HTTP: every endpoint against an in-process pipeline (hash encoder),
and its flow control: batching across callers, 429 when the queue is full, 413 or truncation,
and callers that go away giving up their place."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from conftest import REPO, InProcessPipeline, StandInSockets, free_ports

from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.http.config import HttpConfig
from gnes.http.service import HttpService
from gnes.proto import array_to_nd, pb
from gnes.service.config import ServiceConfig
from gnes.service.message import parse_frames


def _http(port_in: int, port_out: int, **flow: object) -> HttpService:
    pipeline = ServiceConfig(
        name="http", port_in=port_in, port_out=port_out, socket_in="SUB_CONNECT", socket_out="PUSH_CONNECT"
    )
    config = HttpConfig(pipeline=pipeline, http_port=free_ports(1)[0], model_name="minilm", **flow)  # type: ignore[arg-type]
    config.probe_timeout_s = 10.0
    return HttpService(config)


def _on(pipe: InProcessPipeline, **flow: object) -> HttpService:
    return _http(pipe.ports["out_out"], pipe.ports["income_in"], **flow)


@pytest.fixture
def hash_encoder() -> BaseEncoder:
    encoder = load_component(str(REPO / "yaml/encoder-hash.yml"), BaseEncoder)
    encoder.start()
    return encoder


@pytest.fixture
def http(hash_pipeline: InProcessPipeline) -> Iterator[tuple[HttpService, httpx.Client]]:
    with _on(hash_pipeline, batch_wait_ms=20.0) as service:
        with httpx.Client(base_url=f"http://127.0.0.1:{service.config.http_port}", timeout=20) as client:
            yield service, client


def test_embed_batch_and_apply_return_the_encoders_vectors(http, hash_encoder) -> None:
    service, client = http
    sentences = ["The sun rises in the east.", "Cats are curious animals.", "Rainbows appear after the rain."]
    want = hash_encoder.encode(sentences)
    got = client.post("/embed", json={"sentences": sentences})
    assert got.status_code == 200, got.text
    np.testing.assert_allclose(np.array(got.json()["embeddings"]), want, rtol=1e-5)
    rows = [[7, sentences[2]], [3, sentences[0]], [5, sentences[1]]]
    got = client.post("/embed/batch", json={"data": rows})
    assert got.status_code == 200, got.text
    assert [row for row, _ in got.json()["data"]] == [7, 3, 5]  # every row, in the order given
    np.testing.assert_allclose(np.array([v for _, v in got.json()["data"]]), want[[2, 0, 1]], rtol=1e-5)
    for model in ("minilm", "default"):
        got = client.post(f"/apply/{model}", json={"title": sentences[1]})
        assert got.status_code == 200 and got.json()["model"] == model
        np.testing.assert_allclose(got.json()["embedding"], want[1], rtol=1e-5)
    got = client.post("/apply/bert-large", json={"title": "x"})
    assert got.status_code == 404 and "bert-large" in got.json()["detail"]
    schema = client.get("/openapi.json").json()
    assert {"/embed", "/embed/batch", "/apply/{model}", "/searchwith/{model}", "/index", "/search"} <= set(
        schema["paths"]
    )
    assert service.status_info()["dim"] == hash_encoder.dim


def test_index_then_search_with_top_k_index_name_and_metadata_filter(http) -> None:
    _, client = http
    docs = [
        {"id": i, "text": f"document {i} about {'cats' if i % 2 else 'dogs'}", "metadata": {"pet": i % 2}}
        for i in range(20)
    ]
    got = client.post("/index", json={"documents": docs})
    assert got.status_code == 200 and got.json() == {"indexed": 20}, got.text
    got = client.post("/search", json={"text": "document 5 about cats", "top_k": 3})
    assert got.status_code == 200, got.text
    hits = got.json()["results"]
    assert len(hits) == 3 and hits[0]["id"] == 5 and hits[0]["text"] == docs[5]["text"]
    assert hits[0]["metadata"] == {"pet": 1} and hits[0]["score"] >= hits[1]["score"]
    got = client.post(
        "/search", json={"text": "document 5 about cats", "top_k": 5, "filter": {"field": "pet", "value": 0}}
    )
    assert got.status_code == 200 and {h["metadata"]["pet"] for h in got.json()["results"]} == {0}
    got = client.post("/searchwith/minilm", json={"title": "document 6 about dogs"})
    assert got.status_code == 200 and got.json()["results"][0]["id"] == 6
    got = client.post("/search", json={"text": "cats", "index": "no-such-index"})
    assert got.status_code == 404 and "no index named 'no-such-index'" in got.json()["detail"], got.text


BAD_INPUT = [
    ("/embed", {"sentences": []}),
    ("/embed", {"sentences": ["ok", ""]}),
    ("/embed", {"sentences": ["ok", "   "]}),
    ("/embed", {"sentences": "not a list"}),
    ("/embed", {"sentences": [1, 2]}),
    ("/embed", {"texts": ["wrong field"]}),
    ("/embed/batch", {"data": [[0, "a"], ["one", "b"]]}),
    ("/embed/batch", {"data": [[0]]}),
    ("/apply/minilm", {"title": ""}),
    ("/index", {"documents": [{"id": -1, "text": "x"}]}),
    ("/index", {"documents": []}),
    ("/search", {"text": "x", "top_k": 0}),
    ("/search", {"text": "x", "filter": {"value": 1}}),
]


def test_bad_input_gets_a_4xx_with_a_reason_and_the_service_keeps_serving(http) -> None:
    _, client = http
    for path, body in BAD_INPUT:
        got = client.post(path, json=body)
        assert 400 <= got.status_code < 500 and got.json()["detail"], (path, body, got.text)
        assert client.post("/embed", json={"sentences": ["still serving"]}).status_code == 200


def test_oversize_text_gets_413_or_is_cut_at_a_character_boundary(hash_pipeline, hash_encoder) -> None:
    long = "é" * 100  # 200 bytes
    with _on(hash_pipeline, max_input_bytes=51) as strict, _on(hash_pipeline, max_input_bytes=51, truncate=True) as cut:
        got = httpx.post(f"http://127.0.0.1:{strict.config.http_port}/embed", json={"sentences": ["ok", long]})
        assert got.status_code == 413 and "200 bytes" in got.json()["detail"]
        got = httpx.post(f"http://127.0.0.1:{cut.config.http_port}/embed", json={"sentences": [long]})
        assert got.status_code == 200
        np.testing.assert_allclose(got.json()["embeddings"][0], hash_encoder.encode(["é" * 25])[0], rtol=1e-5)


def test_a_start_probe_of_the_wrong_dimension_fails_loudly(hash_pipeline) -> None:
    with pytest.raises(RuntimeError, match="--embedding_dim is 7"):
        _on(hash_pipeline, embedding_dim=7).start()


def test_callers_are_batched_into_fewer_embed_requests(http, hash_encoder) -> None:
    service, client = http
    before = service.status_info()["embed_requests"]
    texts = [f"caller {i} says hello" for i in range(32)]
    start = threading.Barrier(32)

    def ask(text: str) -> list[float]:
        start.wait(10)
        got = client.post("/embed", json={"sentences": [text]})
        assert got.status_code == 200, got.text
        return got.json()["embeddings"][0]

    with ThreadPoolExecutor(32) as pool:
        rows = list(pool.map(ask, texts))
    np.testing.assert_allclose(np.array(rows), hash_encoder.encode(texts), rtol=1e-5)
    sent = service.status_info()["embed_requests"] - before
    assert sent < 16, f"32 callers took {sent} EMBED requests"


class HeldPipeline(StandInSockets):
    """A pipeline stand-in on real sockets that answers EMBED requests only when told, so the
    HTTP service's queue can be filled deterministically."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[str]] = []

    def take(self, timeout: float = 5.0) -> tuple[pb.Envelope, pb.Request]:
        assert self.pull.poll(int(timeout * 1000)), "no request reached the pipeline"
        packet = parse_frames(self.pull.recv_multipart())
        request = packet.request()
        self.seen.append([d.raw_text for d in request.embed.docs])
        return packet.envelope, request

    def answer(self, env: pb.Envelope, request: pb.Request, dim: int = 4) -> None:
        response = pb.Response(request_id=request.request_id)
        array_to_nd(np.ones((len(request.embed.docs), dim), np.float32), response.embed.embeddings)
        self.reply(env, response)


def test_a_full_queue_answers_429_at_once_and_a_caller_that_goes_gives_up_its_place() -> None:
    held = HeldPipeline()
    service = _http(held.port_out, held.port_in, max_batch_size=2, queue_length=6, max_batches_in_flight=1)
    threading.Thread(target=lambda: held.answer(*held.take(10)), daemon=True).start()  # the start probe
    url = f"http://127.0.0.1:{service.config.http_port}/embed"
    try:
        with service:
            asyncio.run(_fill_and_cancel(service, held, url))
    finally:
        held.close()


async def _fill_and_cancel(service: HttpService, held: HeldPipeline, url: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        post = lambda *texts: asyncio.create_task(client.post(url, json={"sentences": list(texts)}))  # noqa: E731
        first = post("a1", "a2")  # goes to the pipeline and is held there
        env, request = await asyncio.to_thread(held.take)
        waiting = post("b1", "b2")
        await _until(lambda: service.status_info()["queue_held"] == 4)
        async with httpx.AsyncClient(timeout=20) as other:  # a caller that will go away
            leaving = asyncio.create_task(other.post(url, json={"sentences": ["c1", "c2"]}))
            await _until(lambda: service.status_info()["queue_held"] == 6)
            t0 = time.perf_counter()
            refused = await client.post(url, json={"sentences": ["d1"]})
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert time.perf_counter() - t0 < 0.5 and "full" in refused.json()["detail"]
            leaving.cancel()
        await _until(lambda: service.status_info()["queue_held"] == 4)  # c1, c2 gave up their place
        assert service.status_info()["cancelled"] == 1
        late = post("e1", "e2")  # room again
        await _until(lambda: service.status_info()["queue_held"] == 6)
        held.answer(env, request)
        for _ in range(2):
            held.answer(*await asyncio.to_thread(held.take))
        answers = [await first, await waiting, await late]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert held.seen[1:] == [["a1", "a2"], ["b1", "b2"], ["e1", "e2"]]  # c1, c2 never sent


async def _until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def test_the_control_port_answers_pending_until_the_pipeline_answers_then_ready_and_terminates(
    hash_pipeline: InProcessPipeline,
) -> None:
    from gnes.cli.healthcheck import query_status

    # First no pipeline at all (ports nobody serves): the service runs, but is not ready.
    idle_in, idle_out, ctrl = free_ports(3)
    service = _http(idle_in, idle_out)
    service.config.pipeline.port_ctrl = ctrl
    thread = threading.Thread(target=service._run_thread, args=(service._make_server(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while (answer := query_status("127.0.0.1", ctrl, 0.5)) is None:
            assert time.monotonic() < deadline, "the control port never answered"
        assert answer.control.status == pb.Response.PENDING
        terminated = query_status("127.0.0.1", ctrl, 2.0, terminate=True)
        assert terminated is not None and terminated.control.status == pb.Response.SUCCESS
        thread.join(10)
        assert not thread.is_alive(), "TERMINATE did not stop the service"
    finally:
        service.stop()
    # Then on the pipeline: READY, with the service's own status.
    with _on(hash_pipeline) as service:
        answer = query_status("127.0.0.1", service.ctrl_port, 2.0)
        assert answer is not None and answer.control.status == pb.Response.READY
        info = json.loads(answer.control.info_json)
        assert info["kind"] == "http" and info["ctrl_port"] == service.ctrl_port and info["dim"] > 0
