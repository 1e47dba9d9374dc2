"""The optional preprocess service of compose/gnes-swarm.yml, run as local processes: off by
default (tests/test_stack_compose.py), on with PREPROCESS_REPLICAS=1 and the entry points sent
to it, where every sentence of a document is indexed as its own chunk."""

from __future__ import annotations

from pathlib import Path

import pytest
from chunk_pipeline import text_query
from conftest import REPO, stack_overrides

from gnes.cli.main import main
from gnes.client import GnesClient
from gnes.stack.local import LocalStack

pytestmark = pytest.mark.e2e


def test_the_stack_file_puts_a_preprocessor_before_the_encoders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    overrides = stack_overrides(
        ENCODER_YAML_PATH=str(REPO / "yaml/encoder-hash.yml"),
        INDEXER_YAML_PATH=str(REPO / "yaml/indexer-hash.yml"),
        INDEXER_REPLICAS="2",
        PREPROCESS_REPLICAS="1",
        PIPELINE_IN_HOST="preprocess",
    )
    overrides["PIPELINE_IN_PORT"] = overrides["PREPROCESS_IN"]
    sentences = [f"Sentence number {i} talks about topic {i * 7} in plain words." for i in range(40)]
    needle = "The submarine cable between Perth and Jakarta was repaired by divers."
    stack = LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=tmp_path, overrides=overrides, quiet=True)
    with stack, GnesClient(port=int(overrides["GRPC_PORT"]), timeout=60) as client:
        assert "preprocess.1" in stack.processes
        summary = client.index([" ".join([*sentences[:30], needle, *sentences[30:]]), "A short note."], start_id=5)
        assert summary.errors == [] and summary.num_docs == 2
        hit = text_query(client, needle, top_k=2)[0]
        assert (hit.doc_id, hit.chunk_offset, hit.chunk_text) == (5, 30, needle)
        assert client.query(needle, top_k=1)[0].chunk == needle
        assert client.query(needle, top_k=1, chunk_reduce="doc")[0].chunk == ""  # the documents' own vectors
        assert main(["client", "--grpc_port", overrides["GRPC_PORT"], "query", needle, "--top_k", "1"]) == 0
        assert f"best chunk: {needle}" in capsys.readouterr().out
