"""The wire format: GNES 0.0.47 field numbers kept, generated code current."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

from gnes.proto import WireError, array_to_nd, doc_text, nd_to_array, pb

REPO = Path(__file__).resolve().parents[1]

# From gnes-wire.md: (message, field, number) that must never change.
GNES_047_FIELDS = [
    (pb.NdArray, "data", 1), (pb.NdArray, "shape", 2), (pb.NdArray, "dtype", 3),
    (pb.Chunk, "doc_id", 1), (pb.Chunk, "text", 2), (pb.Chunk, "blob", 3), (pb.Chunk, "raw", 7),
    (pb.Chunk, "offset", 4), (pb.Chunk, "offset_nd", 5), (pb.Chunk, "weight", 6), (pb.Chunk, "embedding", 8),
    (pb.Document, "doc_id", 1), (pb.Document, "chunks", 2), (pb.Document, "doc_type", 3),
    (pb.Document, "meta_info", 4), (pb.Document, "raw_text", 5), (pb.Document, "raw_image", 6),
    (pb.Document, "raw_video", 7), (pb.Document, "raw_bytes", 8), (pb.Document, "weight", 10),
    (pb.Envelope, "client_id", 1), (pb.Envelope, "request_id", 2), (pb.Envelope, "part_id", 3),
    (pb.Envelope, "num_part", 4), (pb.Envelope, "timeout", 5), (pb.Envelope, "routes", 6),
    (pb.Envelope, "gnes_version", 7), (pb.Envelope, "proto_version", 8), (pb.Envelope, "vcs_version", 9),
    (pb.Message, "envelope", 1), (pb.Message, "request", 2), (pb.Message, "response", 3),
    (pb.Request, "request_id", 1), (pb.Request, "train", 2), (pb.Request, "index", 3),
    (pb.Request, "search", 4), (pb.Request, "control", 5),
    (pb.Request.TrainRequest, "docs", 1), (pb.Request.TrainRequest, "flush", 2),
    (pb.Request.IndexRequest, "docs", 1), (pb.Request.QueryRequest, "query", 1),
    (pb.Request.QueryRequest, "top_k", 2), (pb.Request.ControlRequest, "command", 1),
    (pb.Response, "request_id", 1), (pb.Response, "train", 2), (pb.Response, "index", 3),
    (pb.Response, "search", 4), (pb.Response, "control", 5),
    (pb.Response.QueryResponse, "status", 1), (pb.Response.QueryResponse, "top_k", 2),
    (pb.Response.QueryResponse, "topk_results", 3), (pb.Response.QueryResponse, "is_big_score_similar", 4),
    (pb.Response.QueryResponse, "is_sorted", 5), (pb.Response.QueryResponse.ScoredResult, "chunk", 1),
    (pb.Response.QueryResponse.ScoredResult, "doc", 2), (pb.Response.QueryResponse.ScoredResult, "score", 3),
    (pb.Response.QueryResponse.ScoredResult.Score, "value", 1),
    (pb.Response.QueryResponse.ScoredResult.Score, "explained", 2),
]  # fmt: skip


@pytest.mark.parametrize(("message", "field", "number"), GNES_047_FIELDS)
def test_gnes_047_field_numbers_are_kept(message, field, number) -> None:  # type: ignore[no-untyped-def]
    assert message.DESCRIPTOR.fields_by_name[field].number == number


def test_service_keeps_the_gnes_047_methods() -> None:
    service = pb.DESCRIPTOR.services_by_name["GnesRPC"]
    assert pb.DESCRIPTOR.package == "gnes"
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {
        "Train": (False, False), "Index": (False, False), "Query": (False, False),
        "Call": (False, False), "StreamCall": (True, True),
    }  # fmt: skip


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    subprocess.run(["bash", str(REPO / "proto/generate.sh"), str(out)], check=True, capture_output=True)
    for name in ("gnes_pb2.py", "gnes_pb2_grpc.py"):
        assert filecmp.cmp(out / name, REPO / "gnes/proto" / name, shallow=False), f"run proto/generate.sh ({name})"
    shutil.rmtree(out)


def test_arrays_round_trip_and_bad_arrays_are_refused() -> None:
    import numpy as np

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert (nd_to_array(array_to_nd(a)) == a).all()
    nd = array_to_nd(a)
    nd.data = nd.data[:-4]
    with pytest.raises(WireError, match="needs 48 bytes"):
        nd_to_array(nd)
    with pytest.raises(WireError, match="dtype"):
        nd_to_array(pb.NdArray(dtype="not-a-dtype"))
    with pytest.raises(WireError, match="object"):
        nd_to_array(pb.NdArray(dtype="|O"))


def test_doc_text_reads_every_text_form() -> None:
    assert doc_text(pb.Document(raw_text="a")) == "a"
    assert doc_text(pb.Document(raw_bytes="é".encode())) == "é"
    assert doc_text(pb.Document(chunks=[pb.Chunk(text="x"), pb.Chunk(text="y")])) == "x y"
    with pytest.raises(WireError, match="not UTF-8"):
        doc_text(pb.Document(raw_bytes=b"\xff"))
    with pytest.raises(WireError, match="not text"):
        doc_text(pb.Document(raw_image=pb.NdArray()))
