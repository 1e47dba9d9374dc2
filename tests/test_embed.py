"""EMBED requests: encoded like index documents, answered by the middleman with the vectors
(nothing stored), split into parts by the map proxy and stacked back in order by the reducer."""

from __future__ import annotations

import json

import grpc
import numpy as np
from conftest import REPO

from gnes.config import load_component
from gnes.encoder.base import BaseEncoder
from gnes.proto import array_to_nd, nd_to_array, pb, pb_grpc
from gnes.service.message import BodyType, Packet
from gnes.service.reducer import Reducer


def _embed_part(part: int, parts: int, rows: np.ndarray, error: str = "") -> Packet:
    env = pb.Envelope(client_id="c", request_id=9, body_type=BodyType.EMBED, is_response=True)
    env.num_part.extend([1, parts])
    env.part_ids.extend([0, part])
    response = pb.Response(request_id=9, error=error)
    response.embed.status = pb.Response.ERROR if error else pb.Response.SUCCESS
    array_to_nd(rows, response.embed.embeddings)
    return Packet(env, response.SerializeToString())


def test_reducer_stacks_embed_parts_in_part_order_whatever_order_they_arrive_in() -> None:
    blocks = [np.full((i + 1, 4), float(i), np.float32) for i in range(4)]
    reducer = Reducer()
    out: list[Packet] = []
    for i in (2, 0, 3, 1):
        out += reducer.add(_embed_part(i, 4, blocks[i]))
    assert len(out) == 1
    merged = out[0].response()
    assert merged.embed.status == pb.Response.SUCCESS and not merged.error
    np.testing.assert_array_equal(nd_to_array(merged.embed.embeddings), np.concatenate(blocks))


def test_a_failed_or_missing_embed_part_makes_the_whole_answer_an_error() -> None:
    reducer = Reducer()
    reducer.add(_embed_part(0, 2, np.ones((2, 4), np.float32)))
    out = reducer.add(_embed_part(1, 2, np.ones((0, 4), np.float32), error="encoder failed"))
    merged = out[0].response()
    assert merged.embed.status == pb.Response.ERROR and "encoder failed" in merged.error
    reducer = Reducer(query_timeout=0.01)
    reducer.add(_embed_part(0, 2, np.ones((2, 4), np.float32)), now=0.0)
    merged = reducer.expire(now=1.0)[0].response()
    assert merged.embed.status == pb.Response.ERROR and not merged.embed.HasField("embeddings")


def test_embed_through_the_pipeline_returns_the_encoders_vectors_and_stores_nothing(hash_pipeline) -> None:
    encoder = load_component(str(REPO / "yaml/encoder-hash.yml"), BaseEncoder)
    encoder.start()
    texts = [f"sentence number {i} about topic {i % 7}" for i in range(40)]  # 3 parts of 16
    request = pb.Request(request_id=77)
    for i, text in enumerate(texts):
        request.embed.docs.add(doc_id=i, raw_text=text)
    with grpc.insecure_channel(f"127.0.0.1:{hash_pipeline.grpc_port}") as channel:
        stub = pb_grpc.GnesRPCStub(channel)
        response = stub.Call(request, timeout=10)
        assert response.request_id == 77 and not response.error
        assert response.embed.status == pb.Response.SUCCESS
        np.testing.assert_allclose(nd_to_array(response.embed.embeddings), encoder.encode(texts), rtol=1e-6)
        stats = stub.Call(pb.Request(admin=pb.Request.AdminRequest(command=pb.Request.AdminRequest.STATS)), timeout=10)
        shards = json.loads(stats.admin.info_json)["shards"]
        assert len(shards) == 3 and sum(shard["count"] for shard in shards) == 0
        empty = stub.Call(pb.Request(embed=pb.Request.EmbedRequest()), timeout=10)
        assert empty.embed.status == pb.Response.ERROR and "no documents" in empty.error
