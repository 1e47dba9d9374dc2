"""The text image (gnes:text, docker/Dockerfile) on a real Docker Swarm: the stack with the all-MiniLM-L6-v2
encoder, as a user deploys it, indexes the Lee corpus and answers queries as the model in this process does.
Run with ``-m swarm`` (scripts/test.sh does); the fixture removes the stack and its volumes even on failure."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gnes.client import GnesClient
from gnes.stack.compose import find_free_ports

REPO = Path(__file__).resolve().parent.parent
SWARM_SH = REPO / "scripts" / "swarm.sh"
STACK = "gnestext"
pytestmark = [pytest.mark.swarm, pytest.mark.timeout(1500)]


def _corpus() -> list[str]:
    import gensim  # the test extra; its test data ships the Lee news corpus

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]


@pytest.fixture(scope="module")
def text_stack(request: pytest.FixtureRequest) -> Iterator[int]:
    if "swarm" not in (request.config.getoption("-m") or ""):
        pytest.skip("deploys to Docker Swarm: run with -m swarm (scripts/test.sh does)")
    port, http_port = find_free_ports(2)
    env = {
        **os.environ,
        "GNES_STACK_NAME": STACK,
        "GNES_IMAGE": "gnes:text",
        "ENCODER_YAML_PATH": "../yaml/encoder-minilm.yml",
        "INDEXER_YAML_PATH": "../yaml/indexer-flat-ip.yml",
        "GRPC_PORT": str(port),
        "HTTP_PORT": str(http_port),
        "INDEXER_REPLICAS": "2",
        "SWARM_WAIT": "300",
    }

    def script(*args: str, timeout: float) -> None:
        result = subprocess.run(["bash", str(SWARM_SH), *args], env=env, text=True, timeout=timeout)
        assert result.returncode == 0, f"scripts/swarm.sh {' '.join(args)} failed"

    try:
        started = time.monotonic()
        script("up", timeout=1200)  # the text image (built once, then cached), deploy, wait until healthy
        print(f"swarm: the text stack deployed and healthy in {time.monotonic() - started:.1f} s")
        yield port
    finally:
        script("down", timeout=180)


def test_the_text_image_serves_minilm_as_this_process_does(text_stack: int) -> None:
    from gnes.config import load_component
    from gnes.encoder.base import BaseEncoder

    docs = _corpus()
    queries = [
        "bushfires burning around Sydney",
        "the Australian cricket team",
        "peace talks in the Middle East",
        "a company cuts jobs",
        "heavy rain and floods",
    ]
    with load_component(REPO / "yaml" / "encoder-minilm.yml", BaseEncoder) as encoder:
        doc_vectors = encoder.encode(docs)
        query_vectors = encoder.encode(queries)
    scores = query_vectors @ doc_vectors.T  # cosine: the vectors are L2-normalised
    with GnesClient(port=text_stack, timeout=120) as client:
        summary = client.index(docs, batch_size=50)
        assert summary.errors == [] and summary.num_docs == len(docs)
        for query, row in zip(queries, scores, strict=True):
            hits = client.query(query, top_k=5)
            expected = np.argsort(-row, kind="stable")[:5]
            # The same model in the image (CPU torch 2.13.0) and here: the same best document (by its
            # text: the corpus repeats a few), the top 3 among the top 5 here, and every score equal
            # to float rounding.
            assert hits[0].text == docs[expected[0]], (query, [h.doc_id for h in hits], expected.tolist())
            assert {h.text for h in hits[:3]} <= {docs[i] for i in expected.tolist()}, query
            np.testing.assert_allclose([h.score for h in hits], row[expected], atol=2e-3)
