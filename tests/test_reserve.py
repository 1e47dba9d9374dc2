"""Room made before a bulk load: faiss's code array is allocated once for what is coming,
instead of being doubled (a copy of everything held) while the load goes on."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from gnes.client import IndexClient
from gnes.cluster.local_shards import LocalShards
from gnes.indexer.config import IndexConfig
from gnes.indexer.vectors import VectorIndex, _flat_codes

DIM = 16


def _address(index: VectorIndex) -> int:
    """Where the code array is now: it moves exactly when faiss reallocates it."""
    codes = _flat_codes(index.faiss, index.main).codes
    return int(faiss.rev_swig_ptr(codes.data(), 1).__array_interface__["data"][0])


def _add(index: VectorIndex, first: int, n: int) -> None:
    index.add(np.arange(first, first + n), np.random.default_rng(first).standard_normal((n, DIM)).astype(np.float16))


@pytest.mark.parametrize("config", [dict(faiss_factory="SQfp16", store_dtype="float16"), dict(index_type="flat")])
def test_adds_within_the_reserved_room_never_move_the_codes(config: dict[str, str]) -> None:
    index = VectorIndex(IndexConfig(dim=DIM, metric="l2", **config))
    _add(index, 0, 10)
    assert index.reserve(5000) == 5000
    at = _address(index)
    for first in range(10, 5010, 500):
        _add(index, first, 500)
    assert _address(index) == at and index.main.ntotal == 5010
    _add(index, 5010, 20000)  # past the room: faiss grows the array as before
    assert _address(index) != at
    _add(index, 30000, 1)  # every vector stayed where faiss looks: the last one finds itself
    _, ids = index.search(np.random.default_rng(30000).standard_normal((1, DIM)).astype(np.float32), 1)
    assert ids[0, 0] == 30000


def test_without_room_the_codes_move_as_the_index_grows() -> None:
    index = VectorIndex(IndexConfig(dim=DIM, metric="l2", faiss_factory="SQfp16", store_dtype="float16"))
    _add(index, 0, 10)
    at = _address(index)
    _add(index, 10, 5000)
    assert _address(index) != at  # what reserve avoids


def test_index_types_without_one_code_array_reserve_nothing() -> None:
    ivf = VectorIndex(IndexConfig(dim=DIM, metric="l2", index_type="ivf_flat", nlist=4, train_num=100))
    hnsw = VectorIndex(IndexConfig(dim=DIM, metric="l2", index_type="hnsw_sq"))
    assert ivf.reserve(100) == 0 and hnsw.reserve(100) == 0  # untrained: their buffer grows instead
    assert VectorIndex(IndexConfig(dim=DIM, metric="l2", faiss_factory="SQfp16")).reserve(0) == 0


@pytest.mark.e2e
def test_shards_reserve_their_own_share(tmp_path: Path) -> None:
    with LocalShards(2, tmp_path / "shards", threads=1) as shards, IndexClient(addresses=shards.addresses) as client:
        client.create_index("half", {"dim": DIM, "metric": "l2", "faiss_factory": "SQfp16", "store_dtype": "float16"})
        ids = np.arange(3000) * 7 + 11
        reserved = client.reserve("half", len(ids), ids)
        owned = client.placement.split(ids)
        assert reserved == [len(owned[str(shard.rank)]) for shard in client.shards] and sum(reserved) == 3000
        vectors = np.random.default_rng(0).standard_normal((3000, DIM)).astype(np.float16)
        assert sum(client.add_stream("half", [(vectors, ids)])) == 3000
        assert client.count_per_shard("half") == reserved, "each shard got the share it made room for"
        with pytest.raises(ValueError, match="3 rows but 2 ids"):
            client.reserve("half", 3, ids[:2])
        assert list(client.search("half", vectors[:3].astype(np.float32), top_k=1).ids[:, 0]) == list(ids[:3])
        fresh = client.reserve("half", 10_000)  # no ids: an even share with room to spare
        assert all(5000 < n <= 5000 * 1.1 + 1024 for n in fresh), fresh
        client.create_index("ivf", {"dim": DIM, "metric": "l2", "index_type": "ivf_flat", "nlist": 4, "train_num": 100})
        assert client.reserve("ivf", 1000) == [0, 0]
