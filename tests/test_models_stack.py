"""Named models on a running local stack (compose/gnes-swarm.yml as processes, MiniLM as the default
model, 1 shard, the HTTP service): add the TF-IDF+SVD plugin model live, index and search with it
while the default model keeps answering, keyterms with KeyBERT, instruction pairs refused by a model
that does not take them, the CLI, then remove the model and the default one is unaffected."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import gensim
import httpx
import numpy as np
import pytest
from conftest import REPO, stack_overrides  # noqa: I001

from gnes.cli.main import main as gnes_main
from gnes.stack.control import ControlServer
from gnes.stack.local import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.timeout(600)]

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee.cor"
DOCS = 30


def _docs() -> list[str]:
    return [line.strip() for line in LEE.read_text(encoding="latin-1").splitlines() if line.strip()][:DOCS]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, httpx.Client, str]]:
    workdir = tmp_path_factory.mktemp("models-stack")
    overrides = stack_overrides(INDEXER_REPLICAS="1", EMBEDDING_DIM="384")
    stack = LocalStack.from_file(
        REPO / "compose/gnes-swarm.yml", workdir=workdir, overrides=overrides, quiet=True, start_timeout=300
    )
    url = f"http://127.0.0.1:{overrides['HTTP_PORT']}"
    with stack, ControlServer(stack, workdir):
        with httpx.Client(base_url=url, timeout=120) as client:
            yield stack, client, url
    assert all(p.poll() is not None for p in stack.processes.values()), "a process outlived the stack"


class DefaultModelProbe(threading.Thread):
    """Calls /apply/default in a loop while the test adds and uses a second model."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.ok, self.failures, self.stop = url, 0, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                got = client.post("/apply/default", json={"title": "The sun rises in the east."})
                if got.status_code == 200 and len(got.json()["embedding"]) == 384:
                    self.ok += 1
                else:
                    self.failures.append((got.status_code, got.text))


def test_a_model_added_live_indexes_and_searches_while_the_default_answers(running) -> None:  # type: ignore[no-untyped-def]
    stack, client, url = running
    probe = DefaultModelProbe(url)
    probe.start()
    try:
        got = client.post("/models", json={"name": "lsa", "package": "gnes.models.tfidf_svd"}, timeout=300)
        assert got.status_code == 201, got.text
        info = got.json()
        assert (info["name"], info["dim"], info["index"], info["backend"]) == ("lsa", 384, "lsa", "local")
        assert stack.slots("model-lsa") == [1]
        docs = _docs()
        documents = [{"id": i, "text": text} for i, text in enumerate(docs)]
        got = client.post("/index", json={"documents": documents, "model": "lsa"}, timeout=300)
        assert got.status_code == 200 and got.json()["indexed"] == DOCS, got.text
        for doc_id in (0, 11, 27):
            got = client.post("/searchwith/lsa", json={"title": docs[doc_id]}, params={"top_k": 3})
            assert got.status_code == 200, got.text
            assert got.json()["model"] == "lsa" and got.json()["results"][0]["id"] == doc_id
        # the plugin's vectors, not MiniLM's: unit rows of its 384 dimensions, different from the default's
        lsa = np.array(client.post("/apply/lsa", json={"title": docs[3]}).json()["embedding"])
        own = np.array(client.post("/apply/default", json={"title": docs[3]}).json()["embedding"])
        assert lsa.shape == own.shape == (384,) and abs(np.linalg.norm(lsa) - 1) < 1e-4
        assert abs(float(lsa @ own)) < 0.9
        # the default model's index holds none of these documents
        got = client.post("/searchwith/default", json={"title": docs[0]}, params={"top_k": 3})
        assert got.status_code == 200 and all(hit["text"] != docs[0] for hit in got.json()["results"]), got.text
    finally:
        probe.stop.set()
        probe.join(60)
    assert probe.ok > 0 and not probe.failures, probe.failures[:3]


def test_keyterms_of_five_lee_documents_come_from_the_text_and_are_distinct(running) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = running
    docs = _docs()[:5]
    # single words: fewer candidates to embed on 2 shared cores (bigrams are the service's default)
    got = client.post("/keyterms", json={"sentences": docs, "top_n": 5, "max_ngram": 1}, timeout=300)
    assert got.status_code == 200, got.text
    found = got.json()["keyterms"]
    assert len(found) == 5
    for text, terms in zip(docs, found, strict=True):
        words = set(re.findall(r"\b\w\w+\b", text.lower()))
        names = [t["term"] for t in terms]
        assert len(names) == 5 and len(set(names)) == 5, names
        assert all(set(name.split()) <= words for name in names), (names, text[:80])
        scores = [t["score"] for t in terms]
        assert all(-1 <= s <= 1 for s in scores) and scores[0] == max(scores)


def test_instruction_pairs_to_a_model_that_does_not_take_them_are_refused(running) -> None:  # type: ignore[no-untyped-def]
    _, client, _ = running
    body = {"sentences": [["Represent the news headline:", "Bushfires near Sydney"], "plain text"]}
    got = client.post("/embedwith/default", json=body)
    assert got.status_code == 422 and "does not take [instruction, text] pairs" in got.json()["detail"], got.text
    got = client.post("/embedwith/default", json={"sentences": ["plain text", "another"]})
    assert got.status_code == 200 and np.array(got.json()["embeddings"]).shape == (2, 384), got.text


def test_a_users_faiss_index_gives_the_same_neighbours_through_gnes_as_faiss(running, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import faiss

    _, client, _ = running
    docs = _docs()

    def embed(texts: list[str]) -> np.ndarray:  # the vectors a user would have made with the same model
        got = client.post("/embed", json={"sentences": texts})
        assert got.status_code == 200, got.text
        return np.array(got.json()["embeddings"], dtype=np.float32)

    index = faiss.IndexIDMap(faiss.IndexFlatIP(384))
    faiss_ids = np.arange(len(docs), dtype=np.int64) * 10 + 7
    index.add_with_ids(embed(docs), faiss_ids)
    faiss.write_index(index, str(tmp_path / "user.faiss"))
    doc_of = {int(f): 90_000 + 3 * i for i, f in enumerate(faiss_ids)}
    (tmp_path / "map.csv").write_text("".join(f"{f},{d}\n" for f, d in doc_of.items()))
    body = {"name": "user-news", "faiss_path": str(tmp_path / "user.faiss"), "map_path": str(tmp_path / "map.csv")}
    got = client.post("/indexes/import", json={**body, "model": "default"}, timeout=300)
    assert got.status_code == 201, got.text
    assert (got.json()["count"], got.json()["dim"], got.json()["metric"]) == (len(docs), 384, "ip")
    assert client.post("/indexes/import", json=body).status_code == 409  # it exists now
    for query in ("bushfires near Sydney", docs[4].split(". ")[0], "interest rates and the economy"):
        scores, ids = index.search(embed([query]), 5)
        got = client.post("/searchwith/default", json={"title": query}, params={"top_k": 5, "index": "user-news"})
        assert got.status_code == 200, got.text
        hits = got.json()["results"]
        assert [hit["id"] for hit in hits] == [doc_of[int(f)] for f in ids[0]], query
        np.testing.assert_allclose([hit["score"] for hit in hits], scores[0], atol=1e-4)
    # a map or dimension that does not fit is refused, naming the file
    (tmp_path / "short.csv").write_text("7,1\n")
    bad = {**body, "name": "user-bad", "map_path": str(tmp_path / "short.csv")}
    got = client.post("/indexes/import", json=bad)
    assert got.status_code == 422 and "short.csv does not cover 29 of the 30 ids" in got.text, got.text


def test_gnes_eval_scores_the_served_models_on_lee_2005(running, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    stack, client, url = running
    if not stack.slots("model-lsa"):
        assert client.post("/models", json={"name": "lsa", "package": "gnes.models.tfidf_svd"}).status_code == 201
    png = tmp_path / "models.png"
    assert gnes_main(["eval", "--http", url, "--chart", str(png), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.splitlines()[0])["scores"]
    assert sorted(scores) == ["default", "lsa"]  # every served model
    # MiniLM agrees with the human ratings better than LSA (measured: Pearson 0.66 and 0.44 here)
    assert scores["default"]["pearson"] > scores["lsa"]["pearson"] > 0.2
    assert 0 < scores["lsa"]["ndcg@10"] < scores["default"]["ndcg@10"] <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_cli_lists_and_reports_then_removes_and_the_default_is_unaffected(running, capsys) -> None:  # type: ignore[no-untyped-def]
    stack, client, url = running
    if not stack.slots("model-lsa"):
        assert client.post("/models", json={"name": "lsa", "package": "gnes.models.tfidf_svd"}).status_code == 201

    def cli(*argv: str) -> tuple[int, str]:  # `gnes model --http URL ACTION ...`, parser included
        code = gnes_main(["model", "--http", url, *argv])
        return code, capsys.readouterr().out

    code, out = cli("list")
    assert code == 0 and "lsa: 1 replica(s)" in out, out
    code, out = cli("status", "lsa")
    assert code == 0 and '"answering": true' in out and '"dim": 384' in out, out
    got = client.post("/models", json={"name": "lsa", "package": "gnes.models.tfidf_svd"})
    assert got.status_code == 409, got.text
    code, out = cli("remove", "lsa")
    assert code == 0 and "removed" in out, out
    assert stack.slots("model-lsa") == []
    got = client.post("/apply/lsa", json={"title": "anything"})
    assert got.status_code == 404 and "no encoder serves the model 'lsa'" in got.json()["detail"], got.text
    got = client.post("/apply/default", json={"title": "still here"})
    assert got.status_code == 200 and len(got.json()["embedding"]) == 384, got.text
    got = client.get("/models/lsa")
    assert got.status_code == 404, got.text
