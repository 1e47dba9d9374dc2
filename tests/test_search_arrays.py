"""Array-shaped search answers (QueryRequest.array_results) against real shard processes: the
same hits as the document answers, merged across shards like one faiss index, padded where
fewer than top_k are found, and the document answer wherever arrays do not apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from gnes.client import IndexClient, IndexClientError
from gnes.client.results import shard_hits
from gnes.cluster.local_shards import LocalShards
from gnes.indexer.config import IndexConfig
from gnes.indexer.logical import LogicalIndex
from gnes.proto import WireError, array_to_nd, pb

DIM, N = 16, 1500
TYPES = {
    "flat": {"index_type": "flat"},
    "ivf": {"index_type": "ivf_flat", "nlist": 8, "train_num": 200},
    "hnsw": {"index_type": "hnsw_flat"},
}
KNOBS = {"flat": {}, "ivf": {"nprobe": 3}, "hnsw": {"ef_search": 24}}


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalShards]:
    with LocalShards(3, tmp_path_factory.mktemp("array-shards")) as started:
        yield started


@pytest.fixture(scope="module")
def client(shards: LocalShards) -> Iterator[IndexClient]:
    with IndexClient(addresses=shards.addresses, timeout=60) as opened:
        data = _vectors(N)
        for kind, config in TYPES.items():
            for metric in ("l2", "ip"):
                for described in (False, True):  # bare vectors, or with text and metadata
                    name = f"{kind}-{metric}-{'docs' if described else 'bare'}"
                    opened.create_index(name, {"dim": DIM, "metric": metric, **config})
                    metas = [{"n": i, "even": i % 2 == 0} for i in range(N)] if described else None
                    texts = [f"doc {i}" for i in range(N)] if described else None
                    opened.add(name, data, ids=np.arange(N), metas=metas, texts=texts)
                    opened.wait_trained(name, timeout=60)
        yield opened


def _raw_answers(
    client: IndexClient, name: str, queries: np.ndarray, arrays: bool, in_body: bool = False, **fields: object
) -> list:
    """Every shard's own answer, asked for as arrays or as documents; the vectors go as a frame
    of their own (as IndexClient sends them) or inside the body (as the pipeline carries them)."""
    request = pb.Request()
    request.search.index_name = name
    request.search.top_k = int(fields.pop("top_k", 10))  # type: ignore[call-overload]
    request.search.array_results = arrays
    for key, value in fields.items():
        setattr(request.search, key, value)
    queries = np.ascontiguousarray(queries)
    if in_body:
        array_to_nd(queries, out=request.search.embedding)
        return [response.search for response in client._call_all(lambda _: request)]  # noqa: SLF001
    request.search.embedding.shape[:], request.search.embedding.dtype = queries.shape, queries.dtype.str
    return [response.search for response in client._broadcast(request, queries)]  # noqa: SLF001


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("described", [False, True], ids=["bare", "docs"])
def test_array_answers_hold_the_hits_of_the_document_answers(client, kind, metric, described) -> None:  # type: ignore[no-untyped-def]
    name = f"{kind}-{metric}-{'docs' if described else 'bare'}"
    queries = _vectors(40, seed=5)
    knobs = dict(KNOBS[kind])
    as_arrays = _raw_answers(client, name, queries, True, **knobs)
    as_docs = _raw_answers(client, name, queries, False, **knobs)
    for arrays, docs in zip(as_arrays, as_docs, strict=True):
        assert arrays.HasField("result_ids") and not arrays.topk_results  # arrays indeed
        assert docs.topk_results and not docs.HasField("result_ids")
        a, d = shard_hits(arrays, len(queries)), shard_hits(docs, len(queries))
        np.testing.assert_array_equal(a.ids, d.ids)
        np.testing.assert_array_equal(a.scores, d.scores)  # bit for bit: the same float32
        assert a.metas == d.metas and a.texts == d.texts
        assert list(arrays.result_counts) == list(docs.result_counts) == [10] * len(queries)
        assert (a.metas is None) == (not described)
    # the vectors inside the body, as the pipeline carries them: documents, whatever the flag says
    in_body = _raw_answers(client, name, queries, True, in_body=True, **knobs)
    assert all(answer == docs for answer, docs in zip(in_body, as_docs, strict=True))

    # Through the client: the array answer and the document answer (return_embeddings) agree.
    fast = client.search(name, queries, top_k=10, **knobs)
    slow = client.search(name, queries, top_k=10, return_embeddings=True, **knobs)
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_array_equal(fast.scores, slow.scores)
    assert fast.metas == slow.metas and fast.texts == slow.texts
    if described:
        assert fast.metas[0][0]["n"] == fast.ids[0, 0] and fast.texts[3][2] == f"doc {fast.ids[3, 2]}"
    else:
        assert fast.metas == [[{}] * 10] * len(queries) and fast.texts == [[""] * 10] * len(queries)
    order = np.argsort(-fast.scores if metric == "ip" else fast.scores, axis=1, kind="stable")
    np.testing.assert_array_equal(order, np.tile(np.arange(10), (len(queries), 1)))  # best first


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_three_shards_merge_to_what_one_faiss_index_finds(client, metric) -> None:  # type: ignore[no-untyped-def]
    import faiss

    data, queries = _vectors(N), _vectors(300, seed=9)
    exact = faiss.IndexFlatIP(DIM) if metric == "ip" else faiss.IndexFlatL2(DIM)
    exact.add(data)
    distances, expected = exact.search(queries, 10)
    found = client.search(f"flat-{metric}-bare", queries, top_k=10)
    np.testing.assert_array_equal(found.ids, expected)
    want = distances if metric == "ip" else np.sqrt(np.maximum(distances, 0))  # gnes: L2, not squared
    np.testing.assert_allclose(found.scores, want, rtol=1e-4, atol=1e-4)
    # more queries than one request carries (1,024): the parts are joined in order
    many = np.concatenate([queries] * 4)
    joined = client.search(f"flat-{metric}-docs", many, top_k=3)
    np.testing.assert_array_equal(joined.ids, np.concatenate([expected[:, :3]] * 4))
    assert [m[0]["n"] for m in joined.metas] == np.concatenate([expected[:, 0]] * 4).tolist()


def test_fewer_hits_than_top_k_are_padded_and_filters_and_knobs_apply(client, shards) -> None:  # type: ignore[no-untyped-def]
    client.create_index("few", {"dim": DIM, "metric": "l2", "index_type": "flat"})
    data = _vectors(5, seed=3)
    client.add("few", data, ids=[10, 11, 12, 13, 14], metas=[{"g": i % 2} for i in range(5)])
    for return_embeddings in (False, True):  # arrays, and the document answer
        found = client.search("few", data[:2], top_k=8, return_embeddings=return_embeddings)
        assert found.ids.shape == (2, 8) and (found.ids[:, 5:] == -1).all()
        assert sorted(found.ids[0, :5].tolist()) == [10, 11, 12, 13, 14] and found.ids[1, 0] == 11
        assert np.isnan(found.scores[:, 5:]).all() and not np.isnan(found.scores[:, :5]).any()
        assert [len(m) for m in found.metas] == [5, 5] and found.metas[0][0] == {"g": 0}
        if return_embeddings:
            np.testing.assert_array_equal(found.embeddings[1, 0], data[1])
            assert not found.embeddings[:, 5:].any()
        odd = client.search("few", data[:3], top_k=4, filter={"g": 1}, return_embeddings=return_embeddings)
        assert all(sorted(row) == [11, 13] for row in odd.ids[:, :2].tolist()) and odd.ids[1, 0] == 11
        assert (odd.ids[:, 2:] == -1).all() and [len(m) for m in odd.metas] == [2, 2, 2]
        assert all(m == {"g": 1} for row in odd.metas for m in row)
    # the shards' own arrays: each has at most its share of the 5, padded with -1 explicitly
    answers = _raw_answers(client, "few", data[:2], True, top_k=8)
    held = [int((shard_hits(a, 2).ids[0] >= 0).sum()) for a in answers]
    assert sum(held) == 5 and client.count_per_shard("few") == held
    for answer in answers:
        hits = shard_hits(answer, 2)
        assert list(answer.result_counts) == (hits.ids >= 0).sum(axis=1).tolist()
    client.drop_index("few")


def test_knobs_change_the_array_answer_like_the_document_answer(client) -> None:  # type: ignore[no-untyped-def]
    queries = _vectors(30, seed=11)
    narrow = client.search("ivf-l2-bare", queries, top_k=10, nprobe=1)
    wide = client.search("ivf-l2-bare", queries, top_k=10, nprobe=8)  # all 8 lists: exact
    exact = client.search("flat-l2-bare", queries, top_k=10)
    np.testing.assert_array_equal(wide.ids, exact.ids)
    assert (narrow.ids != exact.ids).any()  # one list of eight misses some neighbours
    filtered = client.search("hnsw-ip-docs", queries, top_k=5, filter={"even": True}, ef_search=64)
    assert (filtered.ids % 2 == 0).all() and all(m["even"] for row in filtered.metas for m in row)


def test_a_chunk_index_answers_with_documents_and_the_client_reads_them(client, shards) -> None:  # type: ignore[no-untyped-def]
    client.create_index("chunked", {"dim": 4, "metric": "ip", "index_type": "flat"})
    request = pb.Request()
    request.index.index_name = "chunked"
    unit = np.eye(4, dtype=np.float32)
    for doc_id in (1, 2):
        doc = request.index.docs.add(doc_id=doc_id, raw_text=f"document {doc_id}", meta_json=json.dumps({"d": doc_id}))
        for offset in range(2):
            chunk = doc.chunks.add(doc_id=doc_id, offset=offset, text=f"d{doc_id}c{offset}", weight=0.5)
            array_to_nd(unit[(doc_id - 1) * 2 + offset], chunk.embedding)
    array_to_nd(np.full((2, 4), 0.5, np.float32), request.index.embeddings)
    sent = client._send(0, request)  # noqa: SLF001 - chunks come from the preprocessor, not from IndexClient.add
    assert next(client._receive({sent: 0}))[1].index.num_docs == 2  # noqa: SLF001
    answer = _raw_answers(client, "chunked", unit[3:4], True, top_k=2)[0]
    assert answer.topk_results and not answer.HasField("result_ids")  # chunks: ranked into documents
    found = client.search("chunked", unit[2:4], top_k=2)
    assert found.ids[:, 0].tolist() == [2, 2] and found.texts[0][0] == "document 2"
    assert found.metas[1][0] == {"d": 2}
    client.drop_index("chunked")


def test_bad_array_requests_get_a_clear_error_and_the_shard_keeps_serving(client, shards) -> None:  # type: ignore[no-untyped-def]
    queries = _vectors(4, seed=2)
    with pytest.raises(IndexClientError, match="no index named 'nope'"):
        client.search("nope", queries)
    with pytest.raises(IndexClientError, match=f"dimension {DIM}, got 3"):
        _raw_answers(client, "flat-l2-bare", queries[:, :3], True)
    with pytest.raises(IndexClientError, match="NaN"):
        _raw_answers(client, "flat-l2-bare", np.full((2, DIM), np.nan, np.float32), True)
    with pytest.raises(IndexClientError, match="top_k"):
        _raw_answers(client, "flat-l2-bare", queries, True, top_k=0)
    # one query (a 1-d vector, as the pipeline sends): the document answer, as before
    single = _raw_answers(client, "flat-l2-bare", queries[0], True, top_k=3)
    assert all(len(a.topk_results) == 3 and not a.HasField("result_ids") for a in single)
    # a request whose array flag sits on a body that is not a valid message at all
    ctx = zmq.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(f"tcp://127.0.0.1:{shards.ports[0]}")
    envelope = pb.Envelope(client_id="raw", request_id=1, body_type=pb.Envelope.QUERY)
    raw.send_multipart([envelope.SerializeToString(), b"\x0a\xff\xff garbage"])
    assert raw.poll(10000)
    answer = pb.Response.FromString(raw.recv_multipart()[-1])
    assert answer.search.status == pb.Response.ERROR and "not a valid gnes Request" in answer.error
    # the vectors as a frame of their own (as IndexClient sends them), but the wrong size, or twice
    request = pb.Request()
    request.search.index_name, request.search.top_k, request.search.array_results = "flat-l2-bare", 2, True
    request.search.embedding.shape[:], request.search.embedding.dtype = [4, DIM], "<f4"
    raw.send_multipart([envelope.SerializeToString(), request.SerializeToString(), queries[:3].tobytes()])
    assert raw.poll(10000)
    assert "needs 256 bytes, got 192" in pb.Response.FromString(raw.recv_multipart()[-1]).error
    array_to_nd(queries, out=request.search.embedding)
    raw.send_multipart([envelope.SerializeToString(), request.SerializeToString(), queries.tobytes()])
    assert raw.poll(10000)
    assert "both in the message and in a frame" in pb.Response.FromString(raw.recv_multipart()[-1]).error
    control = pb.Envelope(client_id="raw", request_id=2, body_type=pb.Envelope.CONTROL)
    raw.send_multipart([control.SerializeToString(), pb.Request().SerializeToString(), b"vectors"])
    assert raw.poll(10000)
    assert "only an index or query request" in raw.recv_multipart()[-1].decode(errors="replace")
    raw.close()
    ctx.term()
    assert client.search("flat-l2-bare", queries, top_k=1).ids.shape == (4, 1)  # still serving


def test_a_malformed_array_answer_is_refused_with_its_reason() -> None:
    answer = pb.Response.QueryResponse()
    array_to_nd(np.zeros((3, 2), np.int64), out=answer.result_ids)
    array_to_nd(np.zeros((3, 1), np.float32), out=answer.result_scores)
    with pytest.raises(WireError, match=r"shape \[3, k\]"):
        shard_hits(answer, 3)
    array_to_nd(np.zeros((3, 2), np.float32), out=answer.result_scores)
    answer.result_texts.extend(["a", "b"])
    with pytest.raises(WireError, match="result_texts holds 2 entries for 6 hits"):
        shard_hits(answer, 3)
    with pytest.raises(WireError, match=r"shape \[2, k\]"):
        shard_hits(answer, 2)


def test_a_logical_index_knows_whether_it_holds_text_or_metadata(tmp_path: Path) -> None:
    config = IndexConfig(dim=DIM, metric="l2", index_type="flat")
    data = _vectors(20, seed=4)
    index = LogicalIndex.create("x", config, tmp_path / "x")
    index.add(np.arange(10), data[:10])
    hits = index.search_arrays(data[:2], 3)
    assert hits.texts is None and hits.metas is None and hits.ids[:, 0].tolist() == [0, 1]
    index.add(np.arange(10, 20), data[10:], metas=[json.dumps({"n": i}) for i in range(10, 20)])
    hits = index.search_arrays(data[10:12], 2)
    assert hits.metas is not None and hits.metas[0] == '{"n": 10}' and hits.texts == [""] * 4
    index.close()
    reopened = LogicalIndex.open("x", tmp_path / "x")  # from the store: one document has metadata
    assert reopened.store.holds_docs()
    assert reopened.search_arrays(data[12:13], 1).metas == ['{"n": 12}']
    reopened.close()
    bare = LogicalIndex.create("y", config, tmp_path / "y")
    bare.add(np.arange(5), data[:5])
    bare.close()
    bare = LogicalIndex.open("y", tmp_path / "y")
    assert not bare.store.holds_docs()
    bare.close()


def test_a_store_from_before_the_content_flag_finds_out_once(tmp_path: Path) -> None:
    data = _vectors(4, seed=6)
    for name, texts, expected in (("old-bare", None, False), ("old-docs", ["a", "", "", ""], True)):
        index = LogicalIndex.create(name, IndexConfig(dim=DIM), tmp_path / name)
        index.add(np.arange(4), data, texts=texts)
        with index.store._env.begin(write=True) as txn:  # noqa: SLF001 - as a store written before the flag
            txn.delete(b"content", db=index.store._meta)  # noqa: SLF001
        index.close()
        reopened = LogicalIndex.open(name, tmp_path / name)
        reopened.add([9], data[:1])  # a bare write says nothing about the documents before it
        assert reopened.store.holds_docs() is expected
        hits = reopened.search_arrays(data[:1], 1)
        assert hits.texts == (["a"] if expected else None)
        reopened.close()
