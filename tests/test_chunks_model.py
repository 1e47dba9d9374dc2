"""Sentence chunks with the real all-MiniLM-L6-v2 model through a whole in-process pipeline
(preprocessor -> income proxy -> encoder -> middleman -> 2 shards -> reducer): a sentence
deep inside a long document finds it, which the document's own vector (the model reads its
first 256 tokens) cannot; max, mean and weighted answer each document once with its best
sentence; a document that cannot be chunked is refused by name while the rest is stored; a
third shard takes over documents with their chunks; a delete removes a document's chunks."""

from __future__ import annotations

from pathlib import Path

import gensim
import numpy as np
import pytest
from chunk_pipeline import attach_preprocessor, text_query
from conftest import REPO, start_inprocess_pipeline, wait_for, wait_for_shards

from gnes.client import GnesClient
from gnes.config import load_component
from gnes.preprocessor.base import BasePreprocessor
from gnes.proto import pb
from gnes.service.config import ServiceConfig
from gnes.service.indexer import IndexerService

pytestmark = [pytest.mark.model, pytest.mark.e2e]

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee.cor"
LONG_ID = 1000
NEEDLE = "The lighthouse keeper on Lord Howe Island counted 312 humpback whales swimming north on Tuesday."
QUERY = "how many humpback whales did the lighthouse keeper count"
# A short document on whales in general: the best answer for a reader of the first 256 tokens only.
NEAR_ID, NEAR = 1001, "Whale watching boats left Hervey Bay as the humpback migration season began."


def _lee() -> list[str]:
    return [line.strip() for line in LEE.read_text(encoding="latin-1").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    data = tmp_path_factory.mktemp("chunk-shards")
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-minilm.yml"),
        str(REPO / "yaml/indexer-flat-ip.yml"),
        shards=2,
        data_dir=data,
        batch_size=8,
        reduce_timeout=30,
    )
    try:
        port = attach_preprocessor(pipe, str(REPO / "yaml/preprocess-sentences.yml"))
        lee = _lee()
        docs, long_doc = lee[:20], " ".join(lee[40:46]) + " " + NEEDLE
        with GnesClient(port=port, timeout=120) as client:
            summary = client.index(docs, batch_size=10)
            assert summary.errors == [] and summary.num_docs == 20
            summary = client.index([long_doc, NEAR], start_id=LONG_ID)
            assert summary.errors == [] and summary.num_docs == 2
        yield pipe, port, docs, long_doc, data
    finally:
        pipe.stack.close()


def _chunk_counts(pipe) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: len(s.indexes.get("").chunks) for name, s in pipe.services.items() if name.startswith("indexer")}


def test_a_sentence_deep_in_a_long_document_finds_it_where_the_whole_text_cannot(stack) -> None:  # type: ignore[no-untyped-def]
    pipe, port, docs, long_doc, _ = stack
    model = pipe.services["encoder"].encoder._model
    # the needle lies beyond what the model reads of the whole document
    before = long_doc[: long_doc.index(NEEDLE)]
    assert len(model.tokenizer(before)["input_ids"]) > model.max_seq_length == 256
    with GnesClient(port=port, timeout=60) as client:
        chunked = text_query(client, QUERY, top_k=5)
        whole = text_query(client, QUERY, top_k=5, mode="doc")
    assert chunked[0].doc_id == LONG_ID and chunked[0].chunk_text == NEEDLE, chunked[:2]
    assert chunked[0].explained["reduce"] == "max" and chunked[0].explained["chunk"] == chunked[0].chunk_offset
    start, end = chunked[0].offset_nd
    assert long_doc[start:end] == NEEDLE
    # The document's own vector is blind to the needle: the model cuts the text at 256 tokens,
    # so the whole text and the text without the needle encode to the same vector.
    encoder = pipe.services["encoder"].encoder
    assert np.allclose(encoder.encode([long_doc]), encoder.encode([before]), atol=1e-6)
    assert whole[0].doc_id == NEAR_ID and chunked[1].doc_id == NEAR_ID, (whole, chunked)
    whole_score = {hit.doc_id: hit.score for hit in whole}.get(LONG_ID, -1.0)
    assert whole_score < 0.5 * chunked[0].score, (whole_score, chunked[0].score)
    assert all(not hit.chunk_text for hit in whole)  # the documents' own vectors carry no chunk evidence
    # every sentence of the 22 documents is indexed, next to its document, on one of the two shards
    splitter = load_component(REPO / "yaml/preprocess-sentences.yml", BasePreprocessor)
    splitter.start()
    sentences = sum(splitter.apply(pb.Document(doc_id=i, raw_text=t)) for i, t in enumerate([*docs, long_doc, NEAR]))
    assert sum(_chunk_counts(pipe).values()) == sentences > 22 * 3
    with GnesClient(port=port, timeout=60) as client:  # STATS counts them per shard and index
        stats = client.admin(pb.Request.AdminRequest.STATS)
        assert sum(shard["indexes"]["default"]["chunks"] for shard in stats["shards"]) == sentences


def test_every_mode_answers_each_document_once_with_its_best_sentence(stack) -> None:  # type: ignore[no-untyped-def]
    _, port, docs, _, _ = stack
    sentence = docs[17].split(". ")[1]
    with GnesClient(port=port, timeout=60) as client:
        for mode in ("max", "mean", "weighted"):
            hits = text_query(client, sentence, top_k=10, mode=mode)
            ids = [hit.doc_id for hit in hits]
            assert len(ids) == len(set(ids)) == 10, (mode, ids)
            assert all(hit.chunk_text and hit.explained["reduce"] == mode for hit in hits)
            scores = [hit.score for hit in hits]
            assert scores == sorted(scores, reverse=True)
            if mode == "max":
                assert ids[0] == 17 and sentence in hits[0].chunk_text
        # a GNES 0.0.47-style reader: doc id, score and the document's text
        plain = client.query(sentence, top_k=3)
        assert plain[0].doc_id == 17 and plain[0].text == docs[17]


def test_a_document_that_cannot_be_chunked_is_named_and_the_rest_is_stored(stack) -> None:  # type: ignore[no-untyped-def]
    _, port, _, _, _ = stack
    too_many = "Short words here. " * 300  # 300 sentences; the preprocessor's limit is 256 chunks
    request = pb.Request(request_id=7)
    texts = [
        "Quokkas on Rottnest Island are photographed by tourists every single day.",
        too_many,
        "The Antarctic krill harvest grew for the third year in a row.",
    ]
    for offset, text in enumerate(texts):
        request.index.docs.add(doc_id=2000 + offset, raw_text=text, doc_type=pb.Document.TEXT)
    with GnesClient(port=port, timeout=60) as client:
        response = client.call(request)
        assert response.index.num_docs == 2
        assert "document 2001 would make 300 chunks; the limit is max_chunks=256" in response.error
        assert [(e.doc_id, e.position) for e in response.index.doc_errors] == [(2001, 1)]
        assert text_query(client, "tourists photograph quokkas", top_k=1)[0].doc_id == 2000
        assert text_query(client, "krill harvest in Antarctica", top_k=1)[0].doc_id == 2002
        assert 2001 not in [h.doc_id for h in text_query(client, "short words here", top_k=10)]


def test_a_new_shard_takes_documents_with_their_chunks_and_a_delete_removes_them(stack) -> None:  # type: ignore[no-untyped-def]
    pipe, port, _, _, data = stack
    before = sum(_chunk_counts(pipe).values())
    config = ServiceConfig(
        name="indexer-3",
        socket_in="NONE",
        socket_out="PUSH_CONNECT",
        port_out=pipe.ports["out_in"],
        port_broadcast=pipe.ports["broadcast"],
        shard_id="3",
        yaml_path=str(REPO / "yaml/indexer-flat-ip.yml"),
        dump_path=str(data / "shard3"),
    )
    pipe.services["indexer-3"] = pipe.stack.enter_context(IndexerService(config))
    wait_for_shards(pipe.services["middle"], 3, timeout=60)
    # the old owners drop what moved once the new placement is in force on them
    wait_for(lambda: sum(_chunk_counts(pipe).values()) == before, 20, f"{before} chunks in all")
    counts = _chunk_counts(pipe)
    assert counts["indexer-3"] > 0, counts
    for name in counts:  # every chunk sits on the shard that stores its document
        index = pipe.services[name].indexes.get("")
        chunk_docs = np.unique(index.chunks.index.store.ids() >> 12)
        assert all(doc is not None for doc in index.get(chunk_docs)), name
    with GnesClient(port=port, timeout=60) as client:
        assert text_query(client, QUERY, top_k=1)[0].doc_id == LONG_ID
        owner = next(n for n in counts if pipe.services[n].indexes.get("").get([LONG_ID])[0] is not None)
        long_chunks = len(pipe.services[owner].indexes.get("").chunks.keys_of([LONG_ID]))
        assert long_chunks > 10
        client.admin(pb.Request.AdminRequest.DELETE_DOCS, doc_ids=[LONG_ID])
        assert sum(_chunk_counts(pipe).values()) == before - long_chunks
        assert LONG_ID not in [hit.doc_id for hit in text_query(client, QUERY, top_k=5)]
