"""Which documents have `meta[field] == value`: an inverted index per filtered field.

A field's postings are built from the store the first time a query filters on it, then
kept up to date on every write, so a filter costs a dictionary lookup, not a scan.
A list value in a document's metadata matches each of its items ("tags": ["a", "b"]).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np


def canonical(value: Any) -> str:
    """One spelling per JSON value, so 1 and 1.0 or key order do not split postings."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def parse_meta(meta_json: str) -> dict[str, Any]:
    """The metadata of a document: a JSON object, or nothing."""
    if not meta_json:
        return {}
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"metadata is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"metadata must be a JSON object, got {type(meta).__name__}")
    return meta


def _keys(meta: dict[str, Any], field: str) -> list[str]:
    if field not in meta:
        return []
    value = meta[field]
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return [canonical(value)]


class MetaFilter:
    def __init__(self) -> None:
        self._postings: dict[str, dict[str, set[int]]] = {}
        self._doc_keys: dict[str, dict[int, list[str]]] = {}

    def ids(self, field: str, value_json: str, metas: Iterable[tuple[int, str]] | None) -> np.ndarray:
        """Doc ids matching; `metas` (id, meta_json) of every document builds a new field."""
        try:
            value = json.loads(value_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f"filter value is not valid JSON: {exc}") from exc
        if field not in self._postings:
            self._build(field, metas or iter(()))
        found = self._postings[field].get(canonical(value), set())
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def _build(self, field: str, metas: Iterator[tuple[int, str]] | Iterable[tuple[int, str]]) -> None:
        postings: dict[str, set[int]] = {}
        doc_keys: dict[int, list[str]] = {}
        for doc_id, meta_json in metas:
            keys = _keys(parse_meta(meta_json), field)
            if keys:
                doc_keys[doc_id] = keys
                for key in keys:
                    postings.setdefault(key, set()).add(doc_id)
        self._postings[field], self._doc_keys[field] = postings, doc_keys

    def update(self, ids: Iterable[int], metas: Iterable[dict[str, Any]]) -> None:
        """Documents (re)written with these metadata."""
        if not self._postings:
            return
        ids = list(ids)
        self.remove(ids)
        for doc_id, meta in zip(ids, metas, strict=True):
            for field, postings in self._postings.items():
                keys = _keys(meta, field)
                if keys:
                    self._doc_keys[field][doc_id] = keys
                    for key in keys:
                        postings.setdefault(key, set()).add(doc_id)

    def remove(self, ids: Iterable[int]) -> None:
        if not self._postings:
            return
        for doc_id in ids:
            for field, postings in self._postings.items():
                for key in self._doc_keys[field].pop(doc_id, ()):
                    postings[key].discard(doc_id)
