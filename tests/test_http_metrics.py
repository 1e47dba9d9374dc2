"""The HTTP service's /metrics carries real samples: batch sizes from the batcher, and
per-stage latency from the route stamps of the answers' envelopes (PipelineSession.on_answer)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
from conftest import InProcessPipeline
from prometheus_client.parser import text_string_to_metric_families
from test_http import _on


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
    stages = {dict(k[1]).get("stage") for k, v in after.items() if k[0] == "gnes_stage_seconds_count" and v > 0}
    assert {"encoder", "income"} <= stages, stages
