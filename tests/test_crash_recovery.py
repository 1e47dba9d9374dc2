"""kill -9 a shard at random moments while it indexes: every acknowledged document survives,
nothing is duplicated. Real processes, real LMDB files, real faiss snapshots."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

from gnes.client import IndexClient, IndexClientError

DIM = 16
BATCH = 40


def vector_of(ids: np.ndarray) -> np.ndarray:
    """A distinct vector per id, derived from the id, so the test can check any document."""
    rows = [np.random.default_rng(int(i)).standard_normal(DIM) for i in ids]
    return np.asarray(rows, dtype=np.float32) * 10


ROUNDS = 8
# A dead shard never answers: the client gives up after this long and the batch is unacknowledged.
SILENCE_S = 2.0


@pytest.mark.parametrize(
    "config",
    [
        {"dim": DIM, "metric": "l2", "index_type": "flat"},
        # trains in the background at 300 vectors: kills land before, during and after training
        {"dim": DIM, "metric": "l2", "index_type": "ivf_flat", "nlist": 4, "train_num": 300},
    ],
    ids=["flat", "ivf_flat"],
)
def test_kill_9_at_random_moments_loses_no_acknowledged_document(shard_processes, config: dict) -> None:
    # Snapshots every 0.2 s, so kills also hit a snapshot in progress and restarts replay the log.
    shards = shard_processes(1, save_interval=0.2)
    rng = random.Random(1234)
    acked: set[int] = set()
    attempted: set[int] = set()
    next_id = 0
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("crash", config)

    def kill(killed_at: list[float]) -> None:
        shards.kill(0)
        killed_at.append(time.monotonic())

    for round_no in range(ROUNDS):
        # Every round starts on a shard that has recovered (snapshot plus log replay) and
        # still holds every document acknowledged so far, before the next kill is armed.
        shards.wait_ready()
        with IndexClient(addresses=shards.addresses, timeout=30) as client:
            survivors = [doc["id"] for doc in client.get("crash", sorted(acked)) if doc is not None]
        lost = acked - set(survivors)
        assert not lost, f"round {round_no}: {len(lost)} acknowledged documents lost, e.g. {sorted(lost)[:5]}"

        killed_at: list[float] = []
        round_acked = 0
        silence: IndexClientError | None = None
        failed_at = 0.0
        killer = threading.Timer(rng.uniform(0.3, 1.2), kill, args=(killed_at,))
        with IndexClient(addresses=shards.addresses, timeout=SILENCE_S) as client:
            killer.start()
            try:
                while True:
                    if acked and rng.random() < 0.3:  # re-send some acknowledged ids: an update, not a duplicate
                        ids = np.asarray(rng.sample(sorted(acked), min(BATCH, len(acked))), dtype=np.int64)
                    else:
                        ids = np.arange(next_id, next_id + BATCH, dtype=np.int64)
                        next_id += BATCH
                    attempted.update(ids.tolist())
                    client.add("crash", vector_of(ids), ids=ids, metas=[{"id": int(i)} for i in ids])
                    acked.update(ids.tolist())
                    round_acked += len(ids)
            except IndexClientError as exc:
                silence, failed_at = exc, time.monotonic()  # only the killed shard's silence ends a round
            finally:
                killer.join()
        # The error is the dead shard's silence, not a refused write, and it came after the kill.
        assert "no answer within" in str(silence), f"round {round_no}: a write failed: {silence}"
        assert killed_at and killed_at[0] <= failed_at, f"round {round_no}: a write failed before the kill"
        assert round_acked > 0, f"round {round_no}: {round_acked} documents acknowledged before the kill"
        shards.start(0)

    shards.wait_ready()
    with IndexClient(addresses=shards.addresses, timeout=60) as client:
        if config["index_type"] != "flat":
            client.wait_trained("crash", timeout=120)
        every = np.asarray(sorted(attempted), dtype=np.int64)
        stored = [doc["id"] for doc in client.get("crash", every) if doc is not None]
        # no acknowledged document is lost ...
        missing = acked - set(stored)
        assert not missing, f"{len(missing)} acknowledged documents lost, e.g. {sorted(missing)[:5]}"
        # ... and nothing is there twice: the vector index holds exactly the stored documents
        assert client.count("crash") == len(stored)
        ids = np.asarray(sorted(acked), dtype=np.int64)
        found = client.search("crash", vector_of(ids), top_k=2, nprobe=4)
        assert (found.ids[:, 0] == ids).all()
        # faiss's BLAS path computes |q|^2 + |v|^2 - 2qv: near zero that leaves float32 noise
        # of ~0.02 after the square root; the next nearest document is ~50 away.
        assert np.allclose(found.scores[:, 0], 0.0, atol=0.1)
        assert (found.ids[:, 1] != found.ids[:, 0]).all()
        assert [m[0]["id"] for m in found.metas] == ids.tolist()


def test_a_restart_without_any_snapshot_rebuilds_from_the_log(shard_processes) -> None:
    shards = shard_processes(1)  # save_interval 0: no periodic snapshot; kill -9 prevents the final one
    ids = np.arange(500, dtype=np.int64)
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        client.create_index("a", {"dim": DIM, "metric": "l2", "index_type": "hnsw_flat"})
        client.add("a", vector_of(ids), ids=ids)
        client.delete("a", ids[:100])
        client.add("a", vector_of(ids[100:200]) + 1, ids=ids[100:200])
    shards.kill(0)
    assert not list((shards.root / "shard-0" / "indexes" / "a").glob("snap-*"))
    shards.start(0)
    shards.wait_ready()
    with IndexClient(addresses=shards.addresses, timeout=30) as client:
        assert client.count("a") == 400
        assert client.get("a", [0, 150])[0] is None
        found = client.search("a", vector_of(ids[100:200]) + 1, top_k=1)
        assert (found.ids[:, 0] == ids[100:200]).all()
