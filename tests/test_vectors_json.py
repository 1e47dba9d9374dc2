"""The embedding answers' JSON writer: orjson and the plain fallback give the same vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gnes.http import vectors_json


@pytest.mark.parametrize("fast", [True, False])
def test_vectors_round_trip_exactly_as_float32(monkeypatch: pytest.MonkeyPatch, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(vectors_json, "orjson", None)  # the path taken where orjson is not installed
    elif vectors_json.orjson is None:
        pytest.skip("orjson is not installed")
    rows = np.random.default_rng(7).standard_normal((3, 384)).astype(np.float32)
    body = json.loads(vectors_json.dumps({"embeddings": rows, "data": [(4, rows[1])]}))
    assert np.array_equal(np.asarray(body["embeddings"], dtype=np.float32), rows)
    assert body["data"][0][0] == 4
    assert np.array_equal(np.asarray(body["data"][0][1], dtype=np.float32), rows[1])


def test_what_json_cannot_write_is_refused() -> None:
    with pytest.raises(TypeError):
        vectors_json.dumps({"x": object()})


def test_row_numbers_beyond_64_bits_are_written_too() -> None:
    rows = np.ones((1, 4), dtype=np.float32)
    body = json.loads(vectors_json.dumps({"data": [(1 << 70, rows[0])]}))
    assert body["data"][0][0] == 1 << 70 and body["data"][0][1] == [1.0] * 4
