"""The default deployment, for real: compose/gnes-swarm.yml run as local processes with the
all-MiniLM-L6-v2 encoder, faiss and LMDB, on real news text (gensim's Lee corpus)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import gensim
import pytest
from conftest import REPO, stack_overrides  # noqa: I001 (the tests folder is on sys.path)

from gnes.client import GnesClient
from gnes.stack.local import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.model]

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee.cor"


def _docs() -> list[str]:
    return [line.strip() for line in LEE.read_text(encoding="latin-1").splitlines() if line.strip()]


def _stack(workdir: Path, overrides: dict[str, str]) -> LocalStack:
    return LocalStack.from_file(REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True)


def test_real_model_stack_finds_documents_survives_a_paused_shard_and_a_restart(tmp_path: Path) -> None:
    docs = _docs()
    assert len(docs) == 50
    overrides = stack_overrides(INDEXER_REPLICAS="2", REDUCE_TIMEOUT="20")
    port = int(overrides["GRPC_PORT"])
    with _stack(tmp_path, overrides) as stack, GnesClient(port=port, timeout=120) as client:
        summary = client.index(docs, batch_size=20)
        assert summary.errors == [] and summary.num_docs == 50
        # a document's own first sentence finds it first
        for doc_id in (0, 17, 42):
            first_sentence = docs[doc_id].split(". ")[0]
            hits = client.query(first_sentence, top_k=5)
            assert hits[0].doc_id == doc_id, (first_sentence, hits[0])
            assert hits[0].text == docs[doc_id]
        # a paused shard: the answer comes from the other shard, marked partial, as soon as the
        # middleman misses the shard's heartbeat (3 s), long before the reduce timeout (20 s)
        shard = stack.processes["indexer.1"]
        os.killpg(shard.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            request_hits = client.call(_query_request(docs[3]))
            waited = time.monotonic() - started
        finally:
            os.killpg(shard.pid, signal.SIGCONT)
        search = request_hits.search
        assert search.partial and search.shards_answered == 1 and search.shards_expected == 2
        assert waited < 8, f"the partial answer took {waited:.1f}s"
        # once the shard is heard again, answers are whole again
        deadline = time.monotonic() + 10
        while client.call(_query_request(docs[3])).search.partial:
            assert time.monotonic() < deadline, "answers stayed partial after the shard came back"
            time.sleep(0.1)
    # every process is gone, and a restart on the same data finds every document again
    assert all(p.poll() is not None for p in stack.processes.values())
    with _stack(tmp_path, stack_overrides(INDEXER_REPLICAS="2")) as stack2:
        port2 = int(stack2.endpoints()["frontend"].rsplit(":", 1)[1])
        with GnesClient(port=port2, timeout=120) as client:
            hits = client.query(docs[42].split(". ")[0], top_k=3)
            assert hits[0].doc_id == 42
            stats = client.admin(3)  # STATS
            assert sum(s["count"] for s in stats["shards"]) == 50


def _query_request(text: str):  # type: ignore[no-untyped-def]
    from gnes.proto import pb

    request = pb.Request(request_id=1)
    request.search.query.raw_text = text
    request.search.top_k = 3
    return request
