"""IndexClient against real shard processes: placement, exact merge, many clients, bad input,
and logical indexes through the gRPC pipeline."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import zmq

from gnes.client import GnesClient, IndexClient, IndexClientError
from gnes.proto import array_to_nd, pb

DIM = 32


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def test_sharded_search_equals_one_exact_index_and_documents_sit_where_the_placement_says(shard_processes) -> None:
    shards = shard_processes(3)
    data = _vectors(3000)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("docs", {"dim": DIM, "metric": "ip", "index_type": "flat"})
        client.add("docs", data[:300], ids=np.arange(300), metas=[{"n": i} for i in range(300)])
        # every shard holds exactly the ids the placement gives it, and about a third of them
        expected = np.bincount(client.placement.owner_index(np.arange(300)), minlength=3).tolist()
        assert client.count_per_shard("docs") == expected and min(expected) > 70
        acked = list(
            client.add_stream("docs", ((data[i : i + 300], np.arange(i, i + 300)) for i in range(300, 3000, 300)))
        )
        assert acked == [300] * 9
        expected = np.bincount(client.placement.owner_index(np.arange(3000)), minlength=3).tolist()
        assert client.count("docs") == 3000 and client.count_per_shard("docs") == expected

        queries = _vectors(20, seed=1)
        result = client.search("docs", queries, top_k=10)
        exact = queries @ data.T
        expected_ids = np.argsort(-exact, axis=1, kind="stable")[:, :10]
        np.testing.assert_array_equal(result.ids, expected_ids)
        np.testing.assert_allclose(result.scores, np.take_along_axis(exact, expected_ids, 1), rtol=1e-5, atol=1e-5)
        own = client.search("docs", data[:5], top_k=1)
        assert [m[0] for m in own.metas] == [{"n": i} for i in range(5)]

        state = client.state("docs")
        assert state["state"] == "trained" and state["count"] == 3000 and len(state["shards"]) == 3


def test_several_clients_at_once_against_the_same_shards(shard_processes) -> None:
    shards = shard_processes(2)
    with IndexClient(addresses=shards.addresses, timeout=30) as admin:
        admin.create_index("shared", {"dim": DIM, "metric": "l2", "index_type": "flat"})
    failures: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            with IndexClient(addresses=shards.addresses, timeout=30) as client:  # one per thread
                ids = np.arange(worker * 1000, worker * 1000 + 400)
                vectors = _vectors(400, seed=10 + worker)
                for start in range(0, 400, 50):
                    client.add("shared", vectors[start : start + 50], ids=ids[start : start + 50])
                    found = client.search("shared", vectors[start : start + 50], top_k=1)
                    assert (found.ids[:, 0] == ids[start : start + 50]).all()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        assert client.count("shared") == 1600


def test_index_lifecycle_delete_update_and_state(shard_processes) -> None:
    shards = shard_processes(2)
    data = _vectors(2000)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("a", {"dim": DIM, "metric": "l2", "index_type": "ivf_flat", "nlist": 8, "train_num": 400})
        client.create_index("b", {"dim": 8, "index_type": "hnsw_flat"})
        client.create_index(
            "a", {"dim": DIM, "metric": "l2", "index_type": "ivf_flat", "nlist": 8, "train_num": 400}, exist_ok=True
        )
        with pytest.raises(IndexClientError, match="already exists"):
            client.create_index("a", {"dim": DIM})
        assert client.list_indexes() == ["a", "b"]
        client.add("a", data[:300], ids=np.arange(300))
        assert client.state("a")["state"] == "not_trained"  # 150 per shard, below train_num
        assert client.search("a", data[:3], top_k=1).ids[:, 0].tolist() == [0, 1, 2]  # searchable meanwhile
        client.add("a", data[300:], ids=np.arange(300, 2000))
        assert client.wait_trained("a", timeout=60)["count"] == 2000
        assert client.delete("a", [5, 6, 99999]) == 2
        client.add("a", data[7:8] + 10, ids=[8])  # update: doc 8 gets a new vector
        assert client.count("a") == 1998
        assert client.get("a", [5, 8])[0] is None
        found = client.search("a", np.stack([data[5], data[7] + 10]), top_k=1, nprobe=8)
        assert found.ids[0, 0] != 5 and found.ids[1, 0] == 8
        client.save("a")
        client.load("a")  # re-open from disk: snapshot plus log
        assert client.count("a") == 1998 and client.state("a")["state"] == "trained"
        client.drop_index("b")
        assert client.list_indexes() == ["a"]


def test_bad_input_gets_an_error_and_the_shard_keeps_serving(shard_processes) -> None:
    shards = shard_processes(1)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("v", {"dim": 4})
        with pytest.raises(IndexClientError, match="dimension 4"):
            client.add("v", np.ones((2, 3), np.float32), ids=[1, 2])
        with pytest.raises(IndexClientError, match="no index named 'nope'"):
            client.search("nope", np.ones((1, 4), np.float32))
        with pytest.raises(IndexClientError, match="NaN"):
            client.add("v", np.full((1, 4), np.nan, np.float32), ids=[1])
        with pytest.raises(ValueError, match="index_type"):
            client.create_index("w", {"dim": 4, "index_type": "hnsw"})
        with pytest.raises(IndexClientError, match="not valid JSON"):
            _raw_filter(client)

        # garbage frames straight at the shard's socket get an answer too
        ctx = zmq.Context()
        raw = ctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"tcp://127.0.0.1:{shards.ports[0]}")
        raw.send_multipart([b"\xff\x00garbage", b"more"])
        raw.send_multipart([b"one frame only"])
        assert raw.poll(10000) and b"malformed" in raw.recv_multipart()[-1]
        assert raw.poll(10000) and b"malformed" in raw.recv_multipart()[-1]
        raw.close()
        ctx.term()

        client.add("v", np.eye(4, dtype=np.float32), ids=[1, 2, 3, 4])
        assert client.count("v") == 4
        assert client.search("v", np.eye(4, dtype=np.float32)[2:3], top_k=1).ids[0, 0] == 3


def _raw_filter(client: IndexClient) -> None:
    """A filter value that is not JSON can only come from a hand-made request."""
    request = pb.Request()
    request.search.index_name = "v"
    request.search.top_k = 1
    request.search.embedding.CopyFrom(array_to_nd(np.ones((1, 4), np.float32)))
    request.search.filter_field = "x"
    request.search.filter_value_json = "{not json"
    client._call_all(lambda _: request)  # noqa: SLF001


def test_logical_indexes_through_the_grpc_pipeline(hash_pipeline) -> None:
    texts = [f"news item {i} about topic {i % 4}" for i in range(60)]
    config = {"dim": 64, "metric": "ip", "index_type": "flat"}
    with GnesClient(port=hash_pipeline.grpc_port) as client:
        created = client.admin(pb.Request.AdminRequest.CREATE, index_name="news", config_json=json.dumps(config))
        assert len(created["shards"]) == 3
        request = pb.Request(request_id=7)
        request.index.index_name = "news"
        for i, text in enumerate(texts):
            request.index.docs.add(doc_id=i, raw_text=text, meta_json=json.dumps({"topic": i % 4}))
        assert client.call(request).index.num_docs == 60

        query = pb.Request(request_id=8)
        query.search.index_name = "news"
        query.search.top_k = 5
        query.search.query.raw_text = texts[13]
        query.search.filter_field, query.search.filter_value_json = "topic", "1"
        response = client.call(query)
        docs = [r.doc for r in response.search.topk_results]
        assert docs[0].doc_id == 13 and len(docs) == 5
        assert all(json.loads(d.meta_json)["topic"] == 1 for d in docs)

        stats = client.admin(pb.Request.AdminRequest.STATS, index_name="news")
        assert sum(s["count"] for s in stats["shards"]) == 60
        listed = client.admin(pb.Request.AdminRequest.LIST)
        assert all("news" in s["indexes"] for s in listed["shards"])
        client.admin(pb.Request.AdminRequest.DROP, index_name="news")
        query.request_id = 9
        assert "no index named 'news'" in client.call(query).error


def test_the_cli_manages_indexes(shard_processes, tmp_path) -> None:
    import subprocess
    import sys

    shards = shard_processes(2)
    config = tmp_path / "ivf.yml"
    config.write_text("dim: 8\nmetric: l2\nindex_type: ivf_flat\nnlist: 4\ntrain_num: 200\n")

    def gnes(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "gnes", "indexes", *args, "--shards", shards.addresses]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    assert gnes("create", "v", "--config", str(config)).returncode == 0
    assert gnes("list").stdout.split() == ["v"]
    with IndexClient(addresses=shards.addresses) as client:
        client.add("v", _vectors(100)[:, :8], ids=np.arange(100))
        per_shard = np.bincount(client.placement.owner_index(np.arange(100)), minlength=2).tolist()
    assert gnes("count", "v").stdout.startswith(f"100 documents; per shard: {per_shard[0]} {per_shard[1]}")
    assert json.loads(gnes("state", "v").stdout)["state"] == "not_trained"
    assert gnes("train", "v").returncode == 0
    bad = gnes("create", "w", "--config", '{"dim": 8, "index_type": "nope"}')
    assert bad.returncode == 1 and "index_type must be one of" in bad.stderr
    assert gnes("drop", "v").returncode == 0 and gnes("list").stdout.strip() == ""
