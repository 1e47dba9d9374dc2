"""Per-model routing in a real in-process pipeline (threads, loopback sockets): the hash encoder as the
default model beside a named plugin model that takes [instruction, text] pairs. Each model's
requests reach only its encoders and its own index; a model that no encoder serves is an error at
once; pairs to a model that does not take them are refused."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import REPO, InProcessPipeline, start_inprocess_pipeline  # noqa: I001
from test_models_plugin import _embed_request, _start_named

from gnes.client import GnesClient
from gnes.proto import nd_to_array, pb
from gnes.service.config import ServiceConfig
from gnes.service.encoder import EncoderService

PAIRS_PLUGIN = """
import hashlib
import numpy as np

DIM = 8
TAKES_PAIRS = True

def get_embed_fn():
    def embed(pairs):
        assert all(isinstance(p, list) and len(p) == 2 for p in pairs), pairs
        rows = [np.frombuffer(hashlib.sha256((i + "|" + t).encode()).digest()[:8], np.uint8) for i, t in pairs]
        out = np.asarray(rows, np.float32) - 127.5
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return embed
"""


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessPipeline, EncoderService]]:
    plugin = tmp_path_factory.mktemp("routing") / "pairs.py"
    plugin.write_text(textwrap.dedent(PAIRS_PLUGIN))
    pipe = start_inprocess_pipeline(
        str(REPO / "yaml/encoder-hash.yml"), str(REPO / "yaml/indexer-hash.yml"), shards=2, data_dir=None
    )
    try:
        named = _start_named(pipe, "pairs", plugin)
        with GnesClient(port=pipe.grpc_port) as client:
            client.admin(pb.Request.AdminRequest.CREATE, index_name="pairs", config_json=json.dumps({"dim": 8}))
        yield pipe, named
    finally:
        pipe.stack.close()


def test_a_model_no_encoder_serves_is_an_error_at_once(two_models) -> None:  # type: ignore[no-untyped-def]
    pipe, _ = two_models
    with GnesClient(port=pipe.grpc_port) as client:
        started = time.monotonic()
        response = client.call(_embed_request("nobody", ["a text"]))
        assert time.monotonic() - started < 5
        assert "no encoder serves the model 'nobody'" in response.error and "pairs" in response.error
        status = pipe.services["income"].status_info()
        assert status["models"] == {"default": 1, "pairs": 1} and status["unknown_model"] >= 1


def test_each_model_indexes_into_its_own_index_and_searches_it(two_models) -> None:  # type: ignore[no-untyped-def]
    pipe, named = two_models
    handled = named.handled
    with GnesClient(port=pipe.grpc_port) as client:
        for model, base in (("pairs", 100), ("", 200)):
            request = pb.Request(model_name=model)
            for i in range(10):
                request.index.docs.add(doc_id=base + i, raw_text=f"document {i} of model {model or 'default'}")
            response = client.call(request)
            assert not response.error and response.index.num_docs == 10, response.error
        query = pb.Request(model_name="pairs")
        query.search.query.raw_text = "document 3 of model pairs"
        query.search.top_k = 3
        hits = client.call(query).search.topk_results
        assert hits[0].doc.doc_id == 103 and all(100 <= h.doc.doc_id < 110 for h in hits)
        default_hits = client.query("document 3 of model default", top_k=3)
        assert default_hits[0].doc_id == 203 and all(200 <= h.doc_id < 210 for h in default_hits)
    assert named.handled - handled == 2  # its own index and search; the default's never reached it


def test_instruction_pairs_reach_a_model_that_takes_them_and_are_refused_by_one_that_does_not(two_models) -> None:  # type: ignore[no-untyped-def]
    pipe, _ = two_models
    with GnesClient(port=pipe.grpc_port) as client:

        def embed(model: str, instruction: str) -> pb.Response:
            request = pb.Request(model_name=model)
            request.embed.docs.add(doc_id=1, raw_text="bushfires near Sydney", instruction=instruction)
            return client.call(request)

        plain, headline = embed("pairs", ""), embed("pairs", "Represent the news headline:")
        assert not plain.error and not headline.error
        a, b = nd_to_array(plain.embed.embeddings), nd_to_array(headline.embed.embeddings)
        assert a.shape == b.shape == (1, 8) and not np.allclose(a, b)  # the instruction was used
        refused = embed("", "Represent the news headline:")
        assert "the model 'default' does not take [instruction, text] pairs" in refused.error


def test_over_http_model_admin_needs_an_admin_token_and_pairs_reach_the_pairs_model(two_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import httpx
    from conftest import free_ports

    from gnes.http.config import HttpConfig
    from gnes.http.service import HttpService

    pipe, _ = two_models
    tokens = tmp_path / "tokens"
    tokens.write_text("reader-token read\nadmin-token admin\n")
    pipeline = ServiceConfig(
        name="http",
        port_in=pipe.ports["out_out"],
        port_out=pipe.ports["income_in"],
        socket_in="SUB_CONNECT",
        socket_out="PUSH_CONNECT",
        token_file=str(tokens),
    )
    config = HttpConfig(pipeline=pipeline, http_port=free_ports(1)[0])
    config.probe_timeout_s = 10.0
    with HttpService(config), httpx.Client(base_url=f"http://127.0.0.1:{config.http_port}", timeout=20) as client:
        read = {"Authorization": "Bearer reader-token"}
        admin = {"Authorization": "Bearer admin-token"}
        body = {"name": "lsa", "package": "gnes.models.tfidf_svd"}
        assert client.post("/models", json=body).status_code == 401
        assert client.post("/models", json=body, headers=read).status_code == 403
        assert client.get("/models", headers=read).status_code == 403
        assert client.delete("/models/lsa", headers=read).status_code == 403
        got = client.post("/models", json=body, headers=admin)  # allowed, but nothing here can start a model
        assert got.status_code == 409 and "no model backend" in got.json()["detail"], got.text
        pairs = {"sentences": [["Represent the news headline:", "Bushfires near Sydney"], "plain text"]}
        got = client.post("/embedwith/pairs", json=pairs, headers=read)
        assert got.status_code == 200 and np.array(got.json()["embeddings"]).shape == (2, 8), got.text
        got = client.post("/embedwith/default", json=pairs, headers=read)
        assert got.status_code == 422 and "does not take [instruction, text] pairs" in got.text, got.text
        got = client.post("/apply/nobody", json={"title": "x"}, headers=read)
        assert got.status_code == 404 and "no encoder serves the model 'nobody'" in got.text, got.text
