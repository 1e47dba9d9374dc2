"""Helpers for the chunk tests: a preprocessor and its own gRPC frontend put in front of an
in-process pipeline (tests/conftest.py), and queries that name a chunk_reduce mode."""

from __future__ import annotations

import json
from dataclasses import dataclass

from conftest import InProcessPipeline, free_ports

from gnes.client import GnesClient
from gnes.preprocessor.service import PreprocessService
from gnes.proto import pb
from gnes.service.config import ServiceConfig
from gnes.service.frontend import FrontendService


def attach_preprocessor(pipe: InProcessPipeline, yaml_path: str, name: str = "preprocess") -> int:
    """frontend -> preprocessor -> the pipeline's income proxy; returns the new frontend's gRPC
    port. Both services stop with the pipeline."""
    port_in, grpc_port = free_ports(2)
    pre = ServiceConfig(
        name=name,
        socket_in="PULL_BIND",
        port_in=port_in,
        socket_out="PUSH_CONNECT",
        port_out=pipe.ports["income_in"],
        yaml_path=yaml_path,
    )
    front = ServiceConfig(
        name=f"{name}-frontend",
        socket_in="SUB_CONNECT",
        port_in=pipe.ports["out_out"],
        socket_out="PUSH_CONNECT",
        port_out=port_in,
        grpc_port=grpc_port,
    )
    pipe.services[name] = pipe.stack.enter_context(PreprocessService(pre))
    pipe.services[f"{name}-frontend"] = pipe.stack.enter_context(FrontendService(front))
    with GnesClient(port=grpc_port) as client:
        client.wait_ready(10)
    return grpc_port


@dataclass
class ChunkHit:
    doc_id: int
    score: float
    chunk_text: str
    chunk_offset: int
    offset_nd: list[int]
    explained: dict


def query(client: GnesClient, query_doc: pb.Document, top_k: int = 5, mode: str = "") -> list[ChunkHit]:
    request = pb.Request(request_id=1)
    request.search.query.CopyFrom(query_doc)
    request.search.top_k = top_k
    request.search.chunk_reduce = mode
    response = client.call(request)
    assert response.search.status == pb.Response.SUCCESS, response.error
    hits = []
    for result in response.search.topk_results:
        chunk = result.doc.chunks[0] if result.doc.chunks else pb.Chunk()
        explained = json.loads(result.score.explained) if result.score.explained else {}
        hits.append(
            ChunkHit(result.doc.doc_id, result.score.value, chunk.text, chunk.offset, list(chunk.offset_nd), explained)
        )
    return hits


def text_query(client: GnesClient, text: str, top_k: int = 5, mode: str = "") -> list[ChunkHit]:
    return query(client, pb.Document(raw_text=text, doc_type=pb.Document.TEXT), top_k, mode)
