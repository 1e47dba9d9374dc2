"""The HTTP service's OpenAPI schema fuzzed with schemathesis (v4), over real HTTP against the
in-process hash pipeline: no 5xx for generated inputs, responses as the schema says, and the
service keeps serving afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from conftest import REPO, start_inprocess_pipeline
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from prometheus_client.parser import text_string_to_metric_families
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from test_http import _on

from gnes.http import models as m
from gnes.http.service import HttpService

# Per operation and generation mode; GNES_FUZZ_EXAMPLES raises it for a longer hunt.
EXAMPLES = int(os.environ.get("GNES_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpService]:
    data: Path = tmp_path_factory.mktemp("fuzz")
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-hash.yml"), str(REPO / "yaml/indexer-hash.yml"), shards=2, data_dir=data
    )
    try:
        with _on(pipe) as service:
            yield service
    finally:
        pipe.stack.close()


def test_the_schema_holds_for_generated_requests(fuzzed: HttpService) -> None:
    # Loaded over HTTP from the running service, as a client would see it. Each operation is
    # driven through hypothesis directly: schemathesis 4's pytest plugin (from_fixture) breaks
    # on pytest 9 (it sets Function._nodeid).
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzzed.config.http_port}/openapi.json")
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case: schemathesis.Case) -> None:
                if case.operation.path != "/embed/batch":
                    case.call_and_validate(checks=CHECKS, timeout=20)
                    return
                # schemathesis 4.32 rewrites the response's prefixItems (a [row, vector] pair,
                # valid OpenAPI 3.1) to the old list form of `items`, then rejects its own
                # rewrite as an invalid schema: this response is checked with the model itself.
                got = case.call_and_validate(checks=CHECKS[:-1], timeout=20)
                if got.status_code == 200:
                    m.BatchOut.model_validate(got.json())
                    assert [row for row, _ in got.json()["data"]] == [row for row, _ in case.body["data"]]

            try:
                run()
            except Unsatisfiable:
                # Nothing to get wrong: an operation without parameters or body has no negative input.
                assert mode is GenerationMode.NEGATIVE and not list(operation.iter_parameters()), operation.label
            except (Exception, BaseExceptionGroup) as exc:  # every operation is tried; all are reported
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)


def test_no_5xx_was_answered_and_the_service_still_embeds(fuzzed: HttpService) -> None:
    base = f"http://127.0.0.1:{fuzzed.config.http_port}"
    got = httpx.post(f"{base}/embed", json={"sentences": ["still serving after the fuzz"]}, timeout=20)
    assert got.status_code == 200 and len(got.json()["embeddings"]) == 1
    # The service's own count of what it answered (across the whole fuzz run): no 5xx at all.
    served = sum(
        s.value
        for f in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=20).text)
        for s in f.samples
        if s.name == "gnes_http_requests_total"
    )
    errors = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for f in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=20).text)
        for s in f.samples
        if s.name == "gnes_http_errors_total" and s.labels["status"].startswith("5")
    }
    assert served > 100, f"only {served} requests were served: did the fuzz run?"
    assert errors == {}, errors
