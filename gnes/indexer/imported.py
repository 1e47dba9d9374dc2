"""A faiss index built elsewhere, with a map from its faiss ids to document ids, read as the rows of a
logical index: vectors, document ids and (optionally) texts.

Checked at load, each error naming the file: faiss can read the index; its dimension is the model's;
its metric is inner product or L2 (and the one asked for, if any); the map covers every id the index
holds, and gives no two of them the same document id. The vectors are taken out of the index
(`reconstruct`; IVF indexes get a direct map first) and stored by gnes like any other documents, so
the index is persisted, sharded and snapshotted like the others. Maps:
    JSON  [doc_id, ...] (position = faiss id) or {"faiss_id": doc_id, ...}
          or {"faiss_id": {"id": doc_id, "text": "..."}, ...}
    CSV   faiss_id,doc_id[,text] per line; a first line that is not numbers is a header
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vectors import import_faiss

_MAX_DOC_ID = (1 << 63) - 1


@dataclass
class ImportedIndex:
    doc_ids: np.ndarray  # int64 [n]
    vectors: np.ndarray  # float32 [n, dim]
    texts: list[str]
    metric: str
    dim: int


def read_id_map(path: str | Path) -> dict[int, tuple[int, str]]:
    """faiss id -> (doc id, text) from a JSON or CSV file."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"id map {path}: cannot read it: {exc}") from None
    entries: dict[int, tuple[int, str]] = {}
    if path.suffix.lower() == ".json" or raw.lstrip()[:1] in ("[", "{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"id map {path}: not valid JSON: {exc}") from None
        items = enumerate(data) if isinstance(data, list) else data.items() if isinstance(data, dict) else None
        if items is None:
            raise ValueError(f"id map {path}: expected a JSON list or object, got {type(data).__name__}")
        for key, value in items:
            text = ""
            if isinstance(value, dict):
                value, text = value.get("id"), str(value.get("text", ""))
            entries[_int(path, "faiss id", key)] = (_int(path, f"document id of faiss id {key}", value), text)
        return entries
    for line_no, row in enumerate(csv.reader(raw.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if line_no == 1 and not row[0].strip().lstrip("-").isdigit():
            continue  # a header
        if len(row) < 2:
            raise ValueError(f"id map {path}, line {line_no}: expected faiss_id,doc_id[,text], got {row!r}")
        faiss_id = _int(path, f"faiss id on line {line_no}", row[0])
        entries[faiss_id] = (_int(path, f"document id on line {line_no}", row[1]), ",".join(row[2:]))
    return entries


def _int(path: Path, what: str, value: object) -> int:
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 0 or number > _MAX_DOC_ID:
        raise ValueError(f"id map {path}: {what} must be an integer in [0, 2**63), got {value!r}")
    return number


def load_faiss_index(
    faiss_path: str | Path, map_path: str | Path, dim: int | None = None, metric: str = ""
) -> ImportedIndex:
    faiss = import_faiss()
    faiss_path = Path(faiss_path)
    if not faiss_path.is_file():
        raise ValueError(f"faiss index {faiss_path} does not exist")
    try:
        index = faiss.read_index(str(faiss_path))
    except RuntimeError as exc:
        raise ValueError(f"faiss index {faiss_path}: faiss cannot read it: {str(exc).strip()[:200]}") from None
    metrics = {faiss.METRIC_INNER_PRODUCT: "ip", faiss.METRIC_L2: "l2"}
    own = metrics.get(index.metric_type)
    if own is None:
        raise ValueError(f"faiss index {faiss_path}: metric type {index.metric_type} is neither inner product nor L2")
    if metric and metric != own:
        raise ValueError(f"faiss index {faiss_path}: its metric is {own}, not {metric}")
    if dim is not None and index.d != dim:
        raise ValueError(f"faiss index {faiss_path}: {index.d} dimensions, but the model returns {dim}")
    ids, vectors = _rows(faiss, index, faiss_path)
    mapping = read_id_map(map_path)
    missing = [int(i) for i in ids if int(i) not in mapping]
    if missing:
        where = f"id map {map_path} does not cover {len(missing)} of the {len(ids)} ids of {faiss_path}"
        raise ValueError(f"{where} (first: {missing[:5]})")
    doc_ids = np.array([mapping[int(i)][0] for i in ids], dtype=np.int64)
    unique, counts = np.unique(doc_ids, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"id map {map_path} gives document id {int(unique[counts > 1][0])} to several faiss ids")
    texts = [mapping[int(i)][1] for i in ids]
    return ImportedIndex(doc_ids, vectors, texts, own, int(index.d))


def _rows(faiss, index, path: Path) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The faiss ids the index holds and their vectors, in the same order."""
    index = faiss.downcast_index(index)
    n = index.ntotal
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        external = faiss.vector_to_array(index.id_map).astype(np.int64)
        inner, internal = faiss.downcast_index(index.index), np.arange(n, dtype=np.int64)
    else:
        inner, internal = index, np.arange(n, dtype=np.int64)
        ivf = faiss.try_extract_index_ivf(inner)
        if ivf is not None:  # IVF lists hold their own ids
            lists = [ivf.invlists.list_size(no) for no in range(ivf.nlist)]
            found = [faiss.rev_swig_ptr(ivf.invlists.get_ids(no), size).copy() for no, size in enumerate(lists) if size]
            internal = np.concatenate(found).astype(np.int64) if found else np.zeros(0, np.int64)
        external = internal
    ivf = faiss.try_extract_index_ivf(inner)
    try:
        if ivf is None:
            vectors = inner.reconstruct_n(0, n) if n else np.zeros((0, index.d), np.float32)
        else:
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)  # reconstruct by id, whatever the ids
            vectors = np.vstack([inner.reconstruct(int(i)) for i in internal]) if n else np.zeros((0, index.d))
    except RuntimeError as exc:
        raise ValueError(f"faiss index {path}: its vectors cannot be read back: {str(exc).strip()[:200]}") from None
    return external, np.ascontiguousarray(vectors, dtype=np.float32).reshape(n, index.d)
