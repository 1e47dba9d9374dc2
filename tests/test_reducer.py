"""The reducer merges shard answers exactly, and its state stays bounded."""

from __future__ import annotations

import random

import pytest

from gnes.proto import pb
from gnes.service.message import BodyType, Packet
from gnes.service.reducer import Reducer


def _query_part(request_id: int, part: int, parts: int, hits: list[tuple[int, float]], top_k: int = 3) -> Packet:
    env = pb.Envelope(client_id="c", request_id=request_id, body_type=BodyType.QUERY, is_response=True)
    env.num_part.extend([1, parts])
    env.part_ids.extend([0, part])
    response = pb.Response(request_id=request_id)
    search = response.search
    search.top_k = top_k
    search.is_big_score_similar = True
    search.shards_answered = 1
    search.shards_expected = 1
    for doc_id, score in hits:
        result = search.topk_results.add()
        result.doc.doc_id = doc_id
        result.score.value = score
    return Packet(env, response.SerializeToString())


def _index_part(request_id: int, part: int, parts: int, num_docs: int) -> Packet:
    env = pb.Envelope(client_id="c", request_id=request_id, body_type=BodyType.INDEX, is_response=True)
    env.num_part.extend([1, parts])
    env.part_ids.extend([0, part])
    response = pb.Response(request_id=request_id)
    response.index.num_docs = num_docs
    return Packet(env, response.SerializeToString())


def test_merges_top_k_of_every_shard_into_the_global_top_k() -> None:
    rng = random.Random(7)
    scores = {doc_id: rng.random() for doc_id in range(30)}
    shards = [list(scores.items())[i::3] for i in range(3)]
    reducer = Reducer()
    out: list[Packet] = []
    for i, shard in enumerate(shards):
        best = sorted(shard, key=lambda h: -h[1])[:5]
        out += reducer.add(_query_part(1, i, 3, best, top_k=5))
    assert len(out) == 1 and reducer.pending == 0
    response = out[0].response()
    expected = sorted(scores, key=lambda d: -scores[d])[:5]
    assert [r.doc.doc_id for r in response.search.topk_results] == expected
    assert response.search.shards_answered == 3 and not response.search.partial
    assert list(out[0].envelope.num_part) == [1] and list(out[0].envelope.part_ids) == [0]


def test_smaller_is_better_scores_sort_ascending() -> None:
    reducer = Reducer()
    parts = [_query_part(1, i, 2, hits) for i, hits in enumerate([[(1, 0.5), (2, 3.0)], [(3, 0.1)]])]
    for p in parts:
        response = pb.Response.FromString(p.body)
        response.search.is_big_score_similar = False
        p.body = response.SerializeToString()
    out = reducer.add(parts[0]) + reducer.add(parts[1])
    assert [r.doc.doc_id for r in out[0].response().search.topk_results] == [3, 1, 2]


def test_a_missing_shard_gives_a_partial_answer_after_the_timeout_never_a_hang() -> None:
    reducer = Reducer(query_timeout=0.5)
    assert reducer.add(_query_part(9, 0, 2, [(1, 0.9)]), now=100.0) == []
    assert reducer.expire(now=100.4) == []
    assert reducer.next_deadline() == pytest.approx(100.5)
    out = reducer.expire(now=100.6)
    assert len(out) == 1
    search = out[0].response().search
    assert search.partial and search.shards_answered == 1 and search.shards_expected == 2
    assert [r.doc.doc_id for r in search.topk_results] == [1]
    # the late part is dropped instead of opening a group that would answer twice
    assert reducer.add(_query_part(9, 1, 2, [(2, 0.8)]), now=101.0) == []
    assert reducer.pending == 0 and reducer.late_parts == 1


def test_pending_requests_are_bounded() -> None:
    reducer = Reducer(max_pending=4)
    answered = []
    for request_id in range(10):
        answered += reducer.add(_query_part(request_id, 0, 2, [(request_id, 1.0)]))
        assert reducer.pending <= 4
    assert [p.envelope.request_id for p in answered] == list(range(6))
    assert all(p.response().search.partial for p in answered)


def test_index_parts_sum_and_a_missing_part_is_an_error() -> None:
    reducer = Reducer(index_timeout=1.0)
    out = reducer.add(_index_part(3, 0, 2, 60), now=0.0) + reducer.add(_index_part(3, 1, 2, 40), now=0.1)
    assert out[0].response().index.num_docs == 100
    assert out[0].response().index.status == pb.Response.SUCCESS
    reducer.add(_index_part(4, 1, 2, 40), now=0.0)
    late = reducer.expire(now=2.0)[0].response()
    assert late.index.status == pb.Response.ERROR and "not acknowledged" in late.error


def test_documents_refused_in_any_part_are_all_reported_once() -> None:
    reducer = Reducer(index_timeout=1.0)
    first, second = _index_part(5, 0, 2, 9), _index_part(5, 1, 2, 8)
    first.envelope.doc_errors.add(doc_id=3, position=3, reason="truncated PNG")
    first.envelope.doc_errors.add(doc_id=7, position=7, reason="empty")
    second.envelope.doc_errors.add(doc_id=12, position=2, reason="not an image")
    second.envelope.doc_errors.add(doc_id=3, position=3, reason="truncated PNG")  # the same, told twice
    out = reducer.add(first, now=0.0) + reducer.add(second, now=0.1)
    errors = sorted((e.doc_id, e.reason) for e in out[0].envelope.doc_errors)
    assert errors == [(3, "truncated PNG"), (7, "empty"), (12, "not an image")]
    assert out[0].response().index.num_docs == 17


def test_nested_levels_reduce_bottom_up() -> None:
    """Two map parts, each fanned out to two shards: four leaves, one answer."""
    reducer = Reducer()
    out = []
    for part in range(2):
        for shard in range(2):
            env = pb.Envelope(client_id="c", request_id=5, body_type=BodyType.INDEX, is_response=True)
            env.num_part.extend([1, 2, 2])
            env.part_ids.extend([0, part, shard])
            response = pb.Response(request_id=5)
            response.index.num_docs = 10
            out += reducer.add(Packet(env, response.SerializeToString()))
    assert len(out) == 1 and out[0].response().index.num_docs == 40
