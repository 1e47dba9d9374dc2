"""A faiss index built elsewhere and its id map, checked at load (gnes/indexer/imported.py): dimension,
metric, a map that covers every id, each error naming the file. (Searching one through a running
stack is in tests/test_models_stack.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from gnes.indexer.imported import load_faiss_index, read_id_map

RNG = np.random.default_rng(7)
VECTORS = RNG.standard_normal((60, 16)).astype(np.float32)


def _write(tmp_path: Path, index, ids, mapping: object, suffix: str = ".json") -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    faiss_path, map_path = tmp_path / "user.faiss", tmp_path / f"map{suffix}"
    if ids is None:
        index.add(VECTORS)
    else:
        index.add_with_ids(VECTORS, ids)
    faiss.write_index(index, str(faiss_path))
    map_path.write_text(mapping if isinstance(mapping, str) else json.dumps(mapping))
    return faiss_path, map_path


@pytest.mark.parametrize("kind", ["flat", "idmap", "ivf"])
def test_every_vector_comes_back_under_its_document_id(tmp_path: Path, kind: str) -> None:
    ids = np.arange(60, dtype=np.int64) * 11 + 3 if kind == "idmap" else None
    index = faiss.IndexIDMap(faiss.IndexFlatL2(16)) if kind == "idmap" else faiss.IndexFlatIP(16)
    if kind == "ivf":
        index = faiss.index_factory(16, "IVF2,Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(VECTORS)
    faiss_ids = ids if ids is not None else np.arange(60)
    mapping = {str(int(f)): 1000 + int(f) for f in faiss_ids}
    rows = load_faiss_index(*_write(tmp_path, index, ids, mapping), dim=16)
    assert rows.metric == ("l2" if kind == "idmap" else "ip") and rows.dim == 16
    order = np.argsort(rows.doc_ids)
    np.testing.assert_array_equal(rows.doc_ids[order], 1000 + faiss_ids)
    np.testing.assert_array_equal(rows.vectors[order], VECTORS)


def test_a_csv_map_with_a_header_and_texts(tmp_path: Path) -> None:
    lines = "faiss_id,doc_id,text\n" + "".join(f"{i},{500 + i},text {i}, with a comma\n" for i in range(60))
    rows = load_faiss_index(*_write(tmp_path, faiss.IndexFlatIP(16), None, lines, ".csv"))
    assert rows.doc_ids[5] == 505 and rows.texts[5] == "text 5, with a comma"


def test_the_checks_name_the_file(tmp_path: Path) -> None:
    faiss_path, map_path = _write(tmp_path, faiss.IndexFlatIP(16), None, list(range(100, 160)))
    with pytest.raises(ValueError, match=f"{faiss_path}: 16 dimensions, but the model returns 384"):
        load_faiss_index(faiss_path, map_path, dim=384)
    with pytest.raises(ValueError, match=f"{faiss_path}: its metric is ip, not l2"):
        load_faiss_index(faiss_path, map_path, metric="l2")
    map_path.write_text(json.dumps(list(range(100, 150))))
    with pytest.raises(ValueError, match=f"id map {map_path} does not cover 10 of the 60 ids .*first: \\[50, 51"):
        load_faiss_index(faiss_path, map_path)
    map_path.write_text(json.dumps([7] * 60))
    with pytest.raises(ValueError, match="gives document id 7 to several faiss ids"):
        load_faiss_index(faiss_path, map_path)
    map_path.write_text(json.dumps([-1] * 60))
    with pytest.raises(ValueError, match=f"id map {map_path}: document id of faiss id 0 must be an integer"):
        load_faiss_index(faiss_path, map_path)
    broken = tmp_path / "broken.faiss"
    broken.write_bytes(b"not a faiss index")
    with pytest.raises(ValueError, match=f"faiss index {broken}: faiss cannot read it"):
        load_faiss_index(broken, map_path)
    with pytest.raises(ValueError, match="not valid JSON"):
        (tmp_path / "bad.json").write_text("{nope")
        read_id_map(tmp_path / "bad.json")
