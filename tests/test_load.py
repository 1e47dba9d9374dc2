"""`gnes load`: the input checks and batching on their own, then real loads into two shard processes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gnes.cli.load import (
    LoadError,
    ProgressBar,
    count_lines,
    iter_batches,
    iter_metas,
    open_ids,
    open_vectors,
    read_config,
)
from gnes.cli.parser import build_parser
from gnes.client import IndexClient
from gnes.cluster.local_shards import LocalShards
from gnes.stack.compose import find_free_ports

REPO = Path(__file__).resolve().parents[1]
DIM, ROWS = 32, 3000


# ---------------------------------------------------------------- the pure parts


def test_every_load_flag_has_help() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["load"]  # noqa: SLF001
    undocumented = [a.dest for a in sub._actions if not a.help]  # noqa: SLF001
    assert undocumented == []


def test_npy_vectors_are_memory_mapped_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "v.npy"
    np.save(path, np.ones((5, 4), dtype=np.float16))
    vectors = open_vectors(path)
    assert isinstance(vectors, np.memmap) and vectors.shape == (5, 4) and vectors.dtype == np.float16
    assert open_vectors(path, dim=4, dtype="float16").shape == (5, 4)
    with pytest.raises(LoadError, match="vectors have dim 4, but --dim is 8"):
        open_vectors(path, dim=8)
    with pytest.raises(LoadError, match="holds float16, but --dtype is float32"):
        open_vectors(path, dtype="float32")
    np.save(tmp_path / "ints.npy", np.ones((5, 4), dtype=np.int32))
    with pytest.raises(LoadError, match="expected float16 or float32"):
        open_vectors(tmp_path / "ints.npy")
    np.save(tmp_path / "flat.npy", np.ones(5, dtype=np.float32))
    with pytest.raises(LoadError, match="2-d array"):
        open_vectors(tmp_path / "flat.npy")
    (tmp_path / "fake.npy").write_bytes(b"not numpy")
    with pytest.raises(LoadError, match="not a .npy file"):
        open_vectors(tmp_path / "fake.npy")
    with pytest.raises(LoadError, match="no such file"):
        open_vectors(tmp_path / "missing.npy")


def test_raw_vectors_need_a_dim_that_divides_the_file(tmp_path: Path) -> None:
    path = tmp_path / "v.f16"
    data = np.arange(24, dtype=np.float16).reshape(6, 4)
    data.tofile(path)
    vectors = open_vectors(path, dim=4, dtype="float16")
    assert vectors.shape == (6, 4) and np.array_equal(vectors, data)
    assert open_vectors(path, dim=2).shape == (6, 2)  # 48 bytes are 12 float32, 6 rows of 2
    with pytest.raises(LoadError, match="not a whole number of rows of 5 float16"):
        open_vectors(path, dim=5, dtype="float16")
    with pytest.raises(LoadError, match="needs --dim"):
        open_vectors(path)
    (tmp_path / "empty.f32").write_bytes(b"")
    assert open_vectors(tmp_path / "empty.f32", dim=3).shape == (0, 3)


def test_ids_must_be_integers_one_per_vector(tmp_path: Path) -> None:
    np.save(tmp_path / "ids.npy", np.arange(5, dtype=np.int64))
    assert list(open_ids(tmp_path / "ids.npy", 5)) == [0, 1, 2, 3, 4]
    with pytest.raises(LoadError, match="5 ids for 6 vectors"):
        open_ids(tmp_path / "ids.npy", 6)
    np.save(tmp_path / "f.npy", np.arange(5, dtype=np.float32))
    with pytest.raises(LoadError, match="ids must be integers"):
        open_ids(tmp_path / "f.npy", 5)


def test_meta_lines_are_counted_and_parsed_lazily(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\nnot json\n[1]\n')
    assert count_lines(path) == 4
    metas = iter_metas(path)
    assert next(metas) == {"a": 1} and next(metas) == {"a": 2}  # the bad lines are not read yet
    with pytest.raises(LoadError, match=r"m\.jsonl:3: not JSON"):
        next(metas)
    (tmp_path / "list.jsonl").write_text('{"a": 1}\n[1]\n')
    with pytest.raises(LoadError, match=r"list\.jsonl:2: expected a JSON object, got list"):
        list(iter_metas(tmp_path / "list.jsonl"))
    (tmp_path / "latin1.jsonl").write_bytes(b'{"a": 1}\n{"a": "\xe9"}\n')
    with pytest.raises(LoadError, match=r"latin1\.jsonl:2: not UTF-8"):
        list(iter_metas(tmp_path / "latin1.jsonl"))
    path.write_text('{"a": 1}\n{"a": 2}')  # no newline at the end: still two lines
    assert count_lines(path) == 2
    path.write_text("")
    assert count_lines(path) == 0


def test_batches_widen_float16_one_batch_at_a_time() -> None:
    vectors = np.arange(70, dtype=np.float16).reshape(10, 7)
    ids = np.arange(100, 110, dtype=np.int32)
    metas = iter({"row": i} for i in range(10))
    batches = list(iter_batches(vectors, 4, ids, metas))
    assert [len(b.vectors) for b in batches] == [4, 4, 2]
    assert all(b.vectors.dtype == np.float32 and b.vectors.flags.c_contiguous for b in batches)
    assert all(b.ids is not None and b.ids.dtype == np.int64 for b in batches)
    assert np.array_equal(np.concatenate([b.vectors for b in batches]), vectors.astype(np.float32))
    assert [m["row"] for b in batches for m in b.metas or []] == list(range(10))
    assert batches[2].ids is not None and list(batches[2].ids) == [108, 109]
    only_vectors = list(iter_batches(vectors, 100))
    assert len(only_vectors) == 1 and only_vectors[0].ids is None and only_vectors[0].metas is None
    with pytest.raises(LoadError, match="meta file ended after 3 lines"):
        list(iter_batches(vectors, 4, metas=iter([{}, {}, {}])))


def test_progress_bar_into_a_pipe_writes_whole_lines() -> None:
    out = io.StringIO()
    bar = ProgressBar(1000, stream=out, width=10, log_interval=0.0)
    bar.update(250)
    bar.update(750)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[##........]  25.0%  250/1,000") and "ETA" in lines[0]
    assert lines[-1].startswith("[##########] 100.0%  1,000/1,000") and "ETA" not in lines[-1]
    assert "\r" not in out.getvalue()


def test_index_config_from_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"dim": 8, "metric": "l2"}')
    (tmp_path / "c.yaml").write_text("dim: 8\nmetric: l2\n")
    (tmp_path / "bad.json").write_text("{dim: 8")
    (tmp_path / "list.yml").write_text("- 1\n")
    assert read_config(tmp_path / "c.json") == read_config(tmp_path / "c.yaml") == {"dim": 8, "metric": "l2"}
    with pytest.raises(LoadError, match=r"bad\.json:1: not valid JSON"):
        read_config(tmp_path / "bad.json")
    with pytest.raises(LoadError, match="must be a mapping"):
        read_config(tmp_path / "list.yml")


# ---------------------------------------------------------------- the command, bad input


def gnes_load(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gnes", "load", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """ROWS float16 vectors of DIM as a raw file, their ids (not 0..n) and one meta line each."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((ROWS, DIM)).astype(np.float16)
    paths = {"vectors": tmp_path / "vectors.f16", "ids": tmp_path / "ids.npy", "meta": tmp_path / "meta.jsonl"}
    vectors.tofile(paths["vectors"])
    np.save(paths["ids"], np.arange(ROWS, dtype=np.int64) * 3 + 1000)
    with paths["meta"].open("w") as f:
        for i in range(ROWS):
            f.write(json.dumps({"row": i, "colour": ["red", "green", "blue"][i % 3]}) + "\n")
    paths["config"] = tmp_path / "index.json"
    paths["config"].write_text(json.dumps({"dim": DIM, "metric": "l2", "index_type": "flat"}))
    return paths


def assert_bad_input(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_bad_input_is_refused_before_connecting(inputs: dict[str, Path], tmp_path: Path) -> None:
    # No shard listens on port 9: these must fail on the files alone.
    base = ["--index", "x", "--shards", "127.0.0.1:9", "--dtype", "float16"]
    assert_bad_input(gnes_load(tmp_path / "nope.f16", "--dim", DIM, *base), r"nope\.f16: no such file")
    assert_bad_input(gnes_load(inputs["vectors"], "--dim", 33, *base), "not a whole number of rows of 33 float16")
    np.save(tmp_path / "short_ids.npy", np.arange(ROWS - 1))
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--ids", tmp_path / "short_ids.npy", *base)
    assert_bad_input(result, f"{ROWS - 1} ids for {ROWS} vectors")
    short_meta = tmp_path / "short.jsonl"
    short_meta.write_text("{}\n" * 10)
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--meta", short_meta, *base)
    assert_bad_input(result, f"10 lines for {ROWS} vectors")
    wrong_dim = tmp_path / "wrong.json"
    wrong_dim.write_text(json.dumps({"dim": 16}))
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--create", wrong_dim, *base)
    assert_bad_input(result, f"the index has dim 16, but the vectors have dim {DIM}")
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text(f"dim: {DIM}\nindex_type: ivf_nope\n")
    assert_bad_input(gnes_load(inputs["vectors"], "--dim", DIM, "--create", bad_config, *base), "ivf_nope")
    np.save(tmp_path / "negative_ids.npy", np.arange(ROWS) - 1)
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--ids", tmp_path / "negative_ids.npy", *base)
    assert_bad_input(result, r"ids must not be negative \(found -1\)")
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--index", "x")  # neither --shards nor --discovery
    assert result.returncode == 2 and "one of the arguments --discovery --shards is required" in result.stderr


def test_a_shard_that_does_not_answer_fails_with_a_message(inputs: dict[str, Path]) -> None:
    [port] = find_free_ports(1)
    result = gnes_load(inputs["vectors"], "--dim", DIM, "--index", "x", "--shards", f"127.0.0.1:{port}", "--timeout", 1)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no answer within 1 s from shard 0 (127.0.0.1:{port})" in result.stderr, result.stderr


# ---------------------------------------------------------------- real loads into two shards


@pytest.fixture
def two_shards(tmp_path: Path) -> Iterator[str]:
    """Two `gnes index` shard processes on free loopback ports; yields "host:port,host:port"."""
    with LocalShards(2, tmp_path / "shards", threads=1) as shards:
        yield shards.addresses


@pytest.mark.e2e
def test_load_float16_file_with_ids_and_meta(inputs: dict[str, Path], two_shards: str) -> None:
    result = gnes_load(
        inputs["vectors"],
        *("--dim", DIM, "--dtype", "float16", "--ids", inputs["ids"], "--meta", inputs["meta"]),
        *("--index", "vecs", "--create", inputs["config"], "--shards", two_shards, "--batch_size", 700),
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"loaded {ROWS} vectors in [\d.]+ s \(\d+ vectors/s\)\n", result.stdout), result.stdout
    assert "100.0%" in result.stderr

    vectors = np.fromfile(inputs["vectors"], dtype=np.float16).reshape(ROWS, DIM).astype(np.float32)
    ids = np.load(inputs["ids"])
    with IndexClient(addresses=two_shards) as client:
        assert client.count("vecs") == ROWS
        per_shard = client.count_per_shard("vecs")
        assert sum(per_shard) == ROWS and all(n > 0 for n in per_shard)
        rows = [0, 1, 1234, ROWS - 1]
        found = client.search("vecs", vectors[rows], top_k=3)
        assert list(found.ids[:, 0]) == list(ids[rows])
        for q, row in enumerate(rows):
            meta = found.metas[q][0]
            assert meta["row"] == row and meta["colour"] == ["red", "green", "blue"][row % 3], meta

    # The index exists now: loading more needs no --create; an unknown index does. Shards can
    # also be found through a discovery file, in the format the launcher writes.
    more = inputs["vectors"].with_name("more.npy")
    np.save(more, vectors[:10] + 1)
    discovery = inputs["vectors"].with_name("shards.txt")
    lines = [f"{rank} {address.replace(':', ' ')}" for rank, address in enumerate(two_shards.split(","))]
    discovery.write_text("\n".join(["# gnes discovery num_shards=2", *lines]) + "\n")
    result = gnes_load(more, "--index", "vecs", "--discovery", discovery, "--quiet")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    with IndexClient(addresses=two_shards) as client:
        assert client.count("vecs") == ROWS + 10
    assert_bad_input(gnes_load(more, "--index", "nothing", "--shards", two_shards), "'nothing' does not exist")
    np.save(more, vectors[:10, :16])
    result = gnes_load(more, "--index", "vecs", "--shards", two_shards)
    assert_bad_input(result, "'vecs' has dim 32, the vectors have dim 16")


def test_float16_rows_load_into_a_float16_sqfp16_index(inputs: dict[str, Path], two_shards: str) -> None:
    """float16 from the file to the shards' segment files and faiss codes (no float32 round trip,
    gnes/indexer/vectors.py): every row finds itself at distance 0, before and after more rows."""
    config = inputs["vectors"].with_name("half.json")
    half = {"dim": DIM, "metric": "l2", "faiss_factory": "SQfp16", "store_dtype": "float16"}
    config.write_text(json.dumps(half))
    args = ("--dim", DIM, "--dtype", "float16", "--index", "half", "--shards", two_shards, "--quiet")
    result = gnes_load(inputs["vectors"], *args, "--ids", inputs["ids"], "--create", config, "--batch_size", 1500)
    assert result.returncode == 0, result.stderr
    vectors = np.fromfile(inputs["vectors"], dtype=np.float16).reshape(ROWS, DIM)
    rows = [0, 7, 1234, ROWS - 1]
    with IndexClient(addresses=two_shards) as client:
        assert client.count("half") == ROWS
        found = client.search("half", vectors[rows].astype(np.float32), top_k=2)
        assert list(found.ids[:, 0]) == list(np.load(inputs["ids"])[rows])
        np.testing.assert_allclose(found.scores[:, 0], 0.0, atol=1e-3)
    # A non-finite float16 value: the shard it goes to refuses its whole part with the reason
    # (the other shard's part is stored), and both keep serving.
    bad = vectors[:20].copy()
    bad[19, 3] = np.float16("inf")
    bad_file, bad_ids = inputs["vectors"].with_name("bad.f16"), inputs["vectors"].with_name("bad_ids.npy")
    bad.tofile(bad_file)
    np.save(bad_ids, np.arange(20, dtype=np.int64) + 10**6)
    result = gnes_load(bad_file, *args[:-1], "--ids", bad_ids)
    assert result.returncode != 0 and "NaN or infinity" in result.stderr, result.stderr
    with IndexClient(addresses=two_shards) as client:
        parts = client.placement.split(np.load(bad_ids))
        kept = sum(len(part) for part in parts.values() if 19 not in part.tolist())
        assert client.count("half") == ROWS + kept
        assert list(client.search("half", vectors[rows].astype(np.float32), top_k=1).ids[:, 0]) == list(
            np.load(inputs["ids"])[rows]
        )


@pytest.mark.e2e
def test_an_index_with_train_ratio_is_trained_when_the_load_ends(inputs: dict[str, Path], two_shards: str) -> None:
    config = {"dim": DIM, "metric": "l2", "index_type": "ivf_flat", "nlist": 4, "train_ratio": 0.5}
    inputs["config"].write_text(json.dumps(config))
    result = gnes_load(
        *(inputs["vectors"], "--dim", DIM, "--dtype", "float16", "--index", "ivf", "--create", inputs["config"]),
        *("--shards", two_shards, "--batch_size", 1000, "--wait_trained", 60),
    )
    assert result.returncode == 0, result.stderr
    assert "is not_trained" not in result.stderr and "is training" not in result.stderr, result.stderr
    with IndexClient(addresses=two_shards) as client:
        state = client.state("ivf")
        assert state["state"] == "trained" and state["count"] == ROWS, state


@pytest.mark.e2e
def test_a_meta_line_that_is_not_json_stops_the_load(inputs: dict[str, Path], two_shards: str) -> None:
    lines = inputs["meta"].read_text().splitlines(keepends=True)
    lines[1500] = "{not json\n"
    inputs["meta"].write_text("".join(lines))
    result = gnes_load(
        inputs["vectors"],
        *("--dim", DIM, "--dtype", "float16", "--meta", inputs["meta"], "--max_in_flight", 1),
        *("--index", "broken", "--create", inputs["config"], "--shards", two_shards, "--batch_size", 500),
    )
    assert_bad_input(result, r"meta\.jsonl:1501: not JSON")
    assert "stopped after 1500 of 3000 vectors were loaded" in result.stderr
