"""The stack on a real Docker Swarm on this machine: deploy, index a corpus, scale, kill a shard, recover.

Run with ``-m swarm`` (scripts/test.sh does, after ``scripts/swarm.sh prepare``). Everything goes through
scripts/swarm.sh and the docker CLI against the engine that script starts; the gRPC traffic goes to 127.0.0.1
only. The fixture removes the stack and its volumes even when the test fails. When the test is selected and the
engine cannot start, it fails (it is skipped, with a reason, only when ``-m swarm`` was not asked for).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gnes.client import GnesClient, SearchHit
from gnes.proto import gnes_pb2 as pb
from gnes.stack.compose import find_free_ports

REPO = Path(__file__).resolve().parent.parent
SWARM_SH = REPO / "scripts" / "swarm.sh"
STACK = "gnestest"
pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class Swarm:
    env: dict[str, str]
    grpc_port: int
    http_port: int

    def docker(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr.strip()}"
        return result.stdout

    def script(self, *args: str, timeout: float = 600) -> None:
        result = subprocess.run(["bash", str(SWARM_SH), *args], env=self.env, text=True, timeout=timeout)
        assert result.returncode == 0, f"scripts/swarm.sh {' '.join(args)} failed"

    def task_container(self, service: str, slot: int) -> str:
        """The running container of the task in `slot` of the service ('' when there is none)."""
        for container in self.containers(service):
            labels = json.loads(self.docker("inspect", "-f", "{{json .Config.Labels}}", container))
            # Task names are "<stack>_<service>.<slot>.<task id>".
            if labels.get("com.docker.swarm.task.name", "").split(".")[1:2] == [str(slot)]:
                return container
        return ""

    def containers(self, service: str, *filters: str) -> list[str]:
        args = ["ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}_{service}"]
        for f in filters:
            args += ["--filter", f]
        return self.docker(*args).split()


def _corpus() -> list[str]:
    import gensim  # the test extra; its test data ships the Lee news corpus

    path = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
    docs = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    assert len(docs) == 300
    return docs


def _wait(what: str, check: Callable[[], bool], timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def swarm(request: pytest.FixtureRequest) -> Iterator[Swarm]:
    if "swarm" not in (request.config.getoption("-m") or ""):
        pytest.skip("deploys to Docker Swarm: run with -m swarm (scripts/test.sh does)")
    port, http_port = find_free_ports(2)
    env = {
        **os.environ,
        "DOCKER_HOST": "unix://" + os.environ.get("GNES_DOCKER_RUN", "/run/gnes-docker") + "/docker.sock",
        "GNES_STACK_NAME": STACK,
        "GRPC_PORT": str(port),
        "HTTP_PORT": str(http_port),
        "INDEXER_REPLICAS": "2",
        "SWARM_WAIT": "180",
    }
    swarm = Swarm(env, port, http_port)
    try:
        started = time.monotonic()
        swarm.script("up")  # engine (if needed), image (cached), deploy, wait until healthy and answering
        print(f"swarm: deployed and healthy in {time.monotonic() - started:.1f} s")
        yield swarm
    finally:
        # The engine stays for the next run; the stack, its containers, network, configs and volumes go.
        swarm.script("down", timeout=180)


def _top_hit(client: GnesClient, text: str) -> SearchHit:
    hits = client.query(text, top_k=3)
    assert hits, f"no hit for {text[:60]!r}"
    return hits[0]


def _all_found(client: GnesClient, docs: list[str]) -> list[int]:
    """Doc ids whose own text does not find a document with that text first (the corpus repeats 7 texts)."""
    return [i for i, text in enumerate(docs) if _top_hit(client, text).text != text]


def test_swarm_index_scale_kill_recover(swarm: Swarm) -> None:
    docs = _corpus()
    with GnesClient("127.0.0.1", swarm.grpc_port, timeout=30) as client:
        client.wait_ready(timeout=30)
        summary = client.index(docs, batch_size=25)
        assert summary.errors == [] and summary.num_docs == len(docs)
        # A document's own text finds it first (the hash encoder maps equal texts to equal vectors).
        for doc_id in (0, 1, 57, 150, 299):
            hit = _top_hit(client, docs[doc_id])
            assert hit.text == docs[doc_id] and docs[hit.doc_id] == docs[doc_id], (doc_id, hit)
        assert _all_found(client, docs) == []
        _http_search_finds(swarm, docs[57])

        # Scale out: the third shard joins the middleman's broadcast; queries now merge three answers.
        swarm.docker("service", "scale", "--detach", f"{STACK}_indexer=3")
        _wait("3 healthy indexers", lambda: len(swarm.containers("indexer", "health=healthy")) == 3, 120)
        _wait("queries reach 3 shards", lambda: _shards_answering(client) == 3, 60)
        assert _all_found(client, docs) == []

        # Kill slot 1's container outright (it holds documents; slot 3 is new and empty). Swarm restarts the
        # task (restart policy on-failure) in the same slot, so it mounts the same volume.
        victim = swarm.task_container("indexer", 1)
        swarm.docker("kill", "-s", "KILL", victim)
        started = time.monotonic()

        def replaced() -> bool:
            healthy = set(swarm.containers("indexer", "health=healthy"))
            return len(healthy) == 3 and victim not in healthy and swarm.task_container("indexer", 1) in healthy

        _wait("swarm to restart the killed indexer of slot 1", replaced, 150)
        print(f"swarm: killed indexer back and healthy in {time.monotonic() - started:.1f} s")
        _wait("queries reach 3 shards again", lambda: _shards_answering(client) == 3, 60)
        # Every document is found again: the restarted shard reloaded its part from its volume.
        assert _all_found(client, docs) == []


def _shards_answering(client: GnesClient) -> int:
    """How many shards answered one query (the reducer counts the answers it merged)."""
    request = pb.Request(request_id=time.monotonic_ns() % (1 << 31))
    request.search.query.raw_text = "how many shards answer"
    request.search.query.doc_type = pb.Document.TEXT
    request.search.top_k = 1
    response = client.call(request)
    return (
        int(response.search.shards_answered)
        if response.search.shards_answered == response.search.shards_expected
        else -1
    )


def _middleman(swarm: Swarm) -> dict:
    """The middleman's status, asked inside its container (its control port is not published)."""
    container = swarm.containers("middleman-proxy")[0]
    out = swarm.docker("exec", container, "gnes", "healthcheck", "--host", "127.0.0.1", "--port", "5399")
    return json.loads(out)


def _running_tasks(swarm: Swarm, service: str) -> int:
    """Tasks of the service that Swarm itself counts as running (it counts a task with a healthcheck as
    starting until the check first passes)."""
    out = swarm.docker(
        "service", "ps", f"{STACK}_{service}", "--filter", "desired-state=running", "--format", "{{.CurrentState}}"
    )
    return sum(1 for line in out.splitlines() if line.startswith("Running"))


def _settled(swarm: Swarm, shards: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            info = _middleman(swarm)
        except AssertionError:  # the container is being replaced
            return False
        return len(info["members"]) == shards and info["shards"] == shards and not info["migrating"]

    return check


def test_swarm_shards_killed_and_scaled_while_indexing(swarm: Swarm) -> None:
    """Kill -9 an indexer task 5 times at random moments while 60,000 documents are indexed, and
    scale 2 -> 4 -> 2 meanwhile: every acknowledged document is found exactly once afterwards,
    the count equals the documents indexed, and no call waits past the hold bound."""
    import random

    from conftest import IndexWriter  # the tests folder is on sys.path

    first = 1_000_000  # clear of the corpus of the test above
    swarm.docker("service", "scale", "--detach", f"{STACK}_indexer=2")
    _wait("2 shards in the placement", _settled(swarm, 2), 180)

    def text_of(i: int) -> str:
        return f"swarm document {i} on subject {i % 17} and tag {i % 5}"

    total = 60000  # enough that the writer is still busy when the shards scale back in
    writer = IndexWriter(swarm.grpc_port, text_of, total=total, batch=200, first=first)
    rng = random.Random(5)
    try:
        writer.start()
        for round_no in range(5):
            writer.wait_for(2000, timeout=120)  # every round acknowledges writes before its kill
            slot = rng.choice([1, 2])
            victim = swarm.task_container("indexer", slot)
            if victim:
                swarm.docker("kill", "-s", "KILL", victim)
                print(f"swarm: round {round_no}: killed the indexer of slot {slot}")
            if round_no == 2:
                swarm.docker("service", "scale", "--detach", f"{STACK}_indexer=4")
                _wait("4 shards in the placement", _settled(swarm, 4), 180)
        # Swarm removes the tasks that are not running first when it scales in, and a restarted task
        # counts as starting until its first passing healthcheck (up to 10 s after it answers). A shard
        # removed that way never hands its documents over (its volume belongs to its slot), so the
        # scale-in waits, as an operator must, until every shard is healthy (docs/elastic.md). The
        # writer pauses meanwhile, so that it is still busy when the shards scale in.
        writer.pause()
        _wait("4 healthy indexers", lambda: len(swarm.containers("indexer", "health=healthy")) == 4, 120)
        _wait("4 running indexer tasks", lambda: _running_tasks(swarm, "indexer") == 4, 60)
        _wait("4 shards in the placement", _settled(swarm, 4), 120)
        writer.resume()
        writer.wait_for(1000, timeout=120)
        assert len(writer.acked) < total, "the writer finished before the scale-in"
        print(f"swarm: scaling in with {len(writer.acked)} of {total} documents acknowledged")
        swarm.docker("service", "scale", "--detach", f"{STACK}_indexer=2")  # two shards hand over and go
        _wait("2 shards in the placement", _settled(swarm, 2), 300)
        writer.finish(timeout=300)
        assert not writer.errors, writer.errors[:3]
        assert writer.longest < 40, f"an index call waited {writer.longest:.1f} s"
        with GnesClient("127.0.0.1", swarm.grpc_port, timeout=60) as client:
            _wait("every shard answers", lambda: _shards_answering(client) == 2, 120)
            stats = client.admin(pb.Request.AdminRequest.STATS)
            assert sum(s["count"] for s in stats["shards"]) == 300 + total
            request = pb.Request()
            request.admin.command = pb.Request.AdminRequest.GET_DOCS
            request.admin.doc_ids.extend(writer.acked)
            stored = [d.doc_id for d in client.call(request).admin.docs]
            assert len(stored) == len(set(stored)) == len(writer.acked) == total
            for doc_id in rng.sample(writer.acked, 40):
                hits = client.query(text_of(doc_id), top_k=5)
                assert hits[0].doc_id == doc_id and len({h.doc_id for h in hits}) == len(hits)
            assert _all_found(client, _corpus()) == []  # the corpus moved twice and is all there
    finally:
        writer.close()


def _http_search_finds(swarm: Swarm, text: str) -> None:
    """The HTTP service of the stack, through its published port: /readyz, /embed, /search."""
    import httpx

    base = f"http://127.0.0.1:{swarm.http_port}"
    _wait("the HTTP service to be ready", lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 60)
    embedded = httpx.post(f"{base}/embed", json={"sentences": [text]}, timeout=30)
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["embeddings"][0]) == 64  # the hash encoder of the swarm stack
    found = httpx.post(f"{base}/search", json={"text": text, "top_k": 3}, timeout=30)
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["text"] == text, found.json()


PLUGIN = """
import hashlib
import numpy as np

DIM = 32

def get_embed_fn():
    def embed(texts):
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), np.uint8) for t in texts]
        out = np.asarray(rows, np.float32) - 127.5
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    return embed
"""


def test_swarm_named_model_is_a_service_added_and_removed_live(swarm: Swarm, tmp_path: Path) -> None:
    """The Swarm backend of the model controller (gnes/models/swarm.py), driven from this host through the
    engine's socket: a plugin model becomes a service on the stack's network, answers through the stack's
    HTTP service under its name with its own index while the default model answers, and is removed."""
    import httpx

    from gnes.models.swarm import SwarmBackend

    plugin = tmp_path / "hash32.py"
    plugin.write_text(PLUGIN)
    backend = SwarmBackend(STACK, socket=swarm.env["DOCKER_HOST"].removeprefix("unix://"))
    base = f"http://127.0.0.1:{swarm.http_port}"
    _wait("the HTTP service to be ready", lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 60)
    backend.add("hash32", {"plugin": str(plugin)}, 1)
    try:
        assert backend.list()["hash32"]["replicas"] == 1

        def answers() -> bool:
            got = httpx.post(f"{base}/apply/hash32", json={"title": "probe"}, timeout=30)
            return got.status_code == 200 and len(got.json()["embedding"]) == 32

        _wait("the new model to answer", answers, 180)
        with GnesClient(port=swarm.grpc_port, timeout=60) as client:
            client.admin(pb.Request.AdminRequest.CREATE, index_name="hash32", config_json=json.dumps({"dim": 32}))
        docs = [{"id": 700 + i, "text": f"named model document number {i}"} for i in range(20)]
        got = httpx.post(f"{base}/index", json={"documents": docs, "model": "hash32"}, timeout=60)
        assert got.status_code == 200 and got.json()["indexed"] == 20, got.text
        got = httpx.post(f"{base}/searchwith/hash32", json={"title": docs[7]["text"]}, timeout=30)
        assert got.status_code == 200 and got.json()["results"][0]["id"] == 707, got.text
        got = httpx.post(f"{base}/apply/default", json={"title": "the default model"}, timeout=30)
        assert got.status_code == 200 and len(got.json()["embedding"]) == 64, got.text
    finally:
        backend.remove("hash32")
    assert "hash32" not in backend.list()

    def refused() -> bool:
        got = httpx.post(f"{base}/apply/hash32", json={"title": "probe"}, timeout=30)
        return got.status_code == 404 and "no encoder serves the model" in got.text

    _wait("the removed model to be refused", refused, 120)
    got = httpx.post(f"{base}/apply/default", json={"title": "still answering"}, timeout=30)
    assert got.status_code == 200, got.text
