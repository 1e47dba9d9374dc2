"""An unmodified GNES 0.0.47 client (its own venv, its own generated code) indexes into and
searches gnes: StreamCall with raw_bytes text documents, then a unary Call query."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GNES047 = Path(os.environ.get("GNES047_PYTHON", REPO / ".venv-gnes047/bin/python"))

pytestmark = pytest.mark.compat

if not GNES047.exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{GNES047} is missing: scripts/setup.sh builds it, and CI must run this test")
    pytest.skip(f"the GNES 0.0.47 venv is missing ({GNES047}); run scripts/setup.sh", allow_module_level=True)

TEXTS = [f"line {i}: the original gnes client sends text number {i} as raw bytes" for i in range(120)]

QUERY_SCRIPT = textwrap.dedent(
    """
    import sys
    import grpc
    from gnes.proto import RequestGenerator, gnes_pb2_grpc
    port, top_k = int(sys.argv[1]), 3
    stub = gnes_pb2_grpc.GnesRPCStub(grpc.insecure_channel("127.0.0.1:%d" % port))
    for i, line in enumerate(sys.stdin.read().splitlines()):
        for req in RequestGenerator.query(line.encode(), request_id_start=i, top_k=top_k):
            resp = stub.Call(req)
            best = resp.search.topk_results[0]
            print(resp.request_id, len(resp.search.topk_results), best.doc.doc_id, "%.4f" % best.score.value)
    """
)


def test_gnes_047_cli_indexes_and_its_call_query_finds_the_document(hash_pipeline, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS) + "\n")
    port = str(hash_pipeline.grpc_port)
    index = subprocess.run(
        [
            str(GNES047.parent / "gnes"),
            "client",
            "cli",
            "--txt_file",
            str(corpus),
            "--mode",
            "index",
            "--grpc_port",
            port,
            "--batch_size",
            "25",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert index.returncode == 0, index.stderr
    assert "done" in index.stdout
    counts = [hash_pipeline.shard(i).indexes.get("").count() for i in range(3)]
    assert sum(counts) == len(TEXTS)

    queries = [TEXTS[7], TEXTS[63], TEXTS[119]]
    query = subprocess.run(
        [str(GNES047), "-c", QUERY_SCRIPT, port],
        input="\n".join(queries),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # so `gnes` is the 0.0.47 package
    )
    assert query.returncode == 0, query.stderr
    rows = [line.split() for line in query.stdout.splitlines()]
    assert [int(r[0]) for r in rows] == [0, 1, 2]  # its own request ids come back
    assert all(int(r[1]) == 3 for r in rows)
    assert [int(r[2]) for r in rows] == [7, 63, 119]
