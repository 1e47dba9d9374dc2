"""The HTTP service's /metrics carries real samples: batch sizes from the batcher, and
per-stage latency from the route stamps of the answers' envelopes (PipelineSession.on_answer)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import InProcessPipeline
from prometheus_client.parser import text_string_to_metric_families
from test_http import HeldPipeline, _http, _on, _until

from gnes.http.service import HttpService


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_batch_sizes_and_per_stage_latency(hash_pipeline: InProcessPipeline) -> None:
    with _on(hash_pipeline, batch_wait_ms=20.0) as service:
        base = f"http://127.0.0.1:{service.config.http_port}"
        with httpx.Client(base_url=base, timeout=20) as client:
            # Counted from the start: the start probe's own answer may already be in.
            before = _samples(client.get("/metrics").text)
            texts = [f"text number {i}" for i in range(24)]
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda t: client.post("/embed", json={"sentences": [t]}).status_code, texts))
            assert codes == [200] * 24
            assert client.post("/search", json={"text": "text number 3", "top_k": 2}).status_code == 200
            after = _samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    # Every text went through one batch; 24 texts from 8 callers take fewer than 24 batches.
    assert delta("gnes_batch_size_sum") == 24
    assert 1 <= delta("gnes_batch_size_count") < 24
    # Each embedding batch passed the encoder, whose route stamp makes a stage sample; the search too.
    assert delta("gnes_stage_seconds_count", stage="encoder") >= delta("gnes_batch_size_count") + 1
    assert delta("gnes_stage_seconds_sum", stage="encoder") > 0
    assert delta("gnes_pipeline_answers_total", kind="embed", status="ok") == delta("gnes_batch_size_count")
    assert delta("gnes_pipeline_seconds_count", kind="query") >= 1
    # Stages other than the encoder are there too (the proxies stamp their routes as well).
    assert ("gnes_queue_depth", (("queue", "embed"),)) in after  # nothing held once all are answered
    assert after[("gnes_queue_depth", (("queue", "embed"),))] == 0
    stages = {dict(k[1]).get("stage") for k, v in after.items() if k[0] == "gnes_stage_seconds_count" and v > 0}
    assert {"encoder", "income"} <= stages, stages


def test_queue_depth_gauge_counts_the_texts_the_embedding_queue_holds() -> None:
    held = HeldPipeline()
    service = _http(held.port_out, held.port_in, max_batch_size=2, queue_length=6, max_batches_in_flight=1)
    threading.Thread(target=lambda: held.answer(*held.take(10)), daemon=True).start()  # the start probe
    try:
        with service:
            asyncio.run(_hold_and_scrape(service, held))
    finally:
        held.close()


async def _hold_and_scrape(service: HttpService, held: HeldPipeline) -> None:
    base = f"http://127.0.0.1:{service.config.http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=20) as client:
        first = asyncio.create_task(client.post("/embed", json={"sentences": ["a1", "a2"]}))
        env, request = await asyncio.to_thread(held.take)  # in the pipeline, unanswered
        second = asyncio.create_task(client.post("/embed", json={"sentences": ["b1", "b2", "b3"]}))
        await _until(lambda: service.status_info()["queue_held"] == 5)
        # The scrape's STATS request is never answered here: it waits out its 2 s and is left out.
        scraped = _samples((await client.get("/metrics")).text)
        assert scraped[("gnes_queue_depth", (("queue", "embed"),))] == 5
        held.answer(env, request)
        while True:  # the scrape's STATS request comes before the second batch: left unanswered
            env, request = await asyncio.to_thread(held.take)
            if request.WhichOneof("body") == "embed":
                held.answer(env, request)
                break
        assert [(await first).status_code, (await second).status_code] == [200, 200]
