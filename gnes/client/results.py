"""Search answers of the shards, merged with numpy into one top-k per query (IndexClient).

A shard answers a batch query with [q, k] arrays of ids and scores (QueryResponse.result_ids,
see proto/gnes.proto), or, where arrays do not apply (return_embeddings, chunk indexes, a
shard that predates them), with one ScoredResult per hit; both become the same `ShardHits`
here, and the merge is the same for both. Python touches a hit only when its text or
metadata is read: for an index of bare vectors, never.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..proto import WireError, nd_to_array, pb


class SearchResult:
    """Ranked hits of a query batch. `scores` float32 [q, k], padded with NaN where fewer than
    k were found; `ids` int64 [q, k], padded with -1; `embeddings` float32 [q, k, d] when asked
    for. `metas` and `texts` (per query, one entry per hit) are built on first use: parsing
    the JSON of every hit costs more than a whole search of a bare-vector index."""

    __slots__ = ("scores", "ids", "embeddings", "_metas", "_texts", "_hit_metas", "_hit_texts")

    def __init__(
        self,
        scores: np.ndarray,
        ids: np.ndarray,
        metas: list[list[dict[str, Any]]] | None = None,
        texts: list[list[str]] | None = None,
        embeddings: np.ndarray | None = None,
        hit_metas: list[str] | None = None,
        hit_texts: list[str] | None = None,
    ) -> None:
        self.scores, self.ids, self.embeddings = scores, ids, embeddings
        self._metas, self._texts = metas, texts
        # Per hit (id >= 0), in row order: JSON metadata and text; None: all empty.
        self._hit_metas, self._hit_texts = hit_metas, hit_texts

    @property
    def metas(self) -> list[list[dict[str, Any]]]:
        if self._metas is None:
            self._metas = _per_query(self.ids, self._hit_metas, meta_of, dict)
        return self._metas

    @property
    def texts(self) -> list[list[str]]:
        if self._texts is None:
            self._texts = _per_query(self.ids, self._hit_texts, str, str)
        return self._texts

    def __repr__(self) -> str:
        return f"SearchResult(ids={self.ids!r}, scores={self.scores!r})"

    @classmethod
    def concatenate(cls, parts: Sequence[SearchResult]) -> SearchResult:
        """Results of consecutive query batches as one."""
        if len(parts) == 1:
            return parts[0]
        embeddings = [p.embeddings for p in parts]
        joined = cls(
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.ids for p in parts]),
            embeddings=None if any(e is None for e in embeddings) else np.concatenate(embeddings),  # type: ignore[arg-type]
        )
        if any(p._metas is not None or p._texts is not None for p in parts):  # given as lists: stay lists
            joined._metas = [m for p in parts for m in p.metas]
            joined._texts = [t for p in parts for t in p.texts]
        else:
            joined._hit_metas = _joined([p._hit_metas for p in parts], [p.ids for p in parts])
            joined._hit_texts = _joined([p._hit_texts for p in parts], [p.ids for p in parts])
        return joined


@dataclass(slots=True)
class ShardHits:
    """One shard's answer to a batch of q queries."""

    ids: np.ndarray  # int64 [q, k]: each row's hits first, then -1
    scores: np.ndarray  # float32 [q, k]
    metas: list[str] | None  # per hit, in row order; None: all empty
    texts: list[str] | None
    embeddings: np.ndarray | None = None  # float32 [hits, d], per hit in row order


def shard_hits(answer: pb.Response.QueryResponse, queries: int) -> ShardHits:
    """The hits of one shard's answer, whichever form it came in; a malformed answer raises WireError."""
    if answer.HasField("result_ids"):
        return _from_arrays(answer, queries)
    return _from_documents(answer, queries)


def _from_arrays(answer: pb.Response.QueryResponse, queries: int) -> ShardHits:
    ids = nd_to_array(answer.result_ids)
    scores = nd_to_array(answer.result_scores)
    if ids.ndim != 2 or ids.shape[0] != queries or ids.dtype.kind not in "iu" or scores.shape != ids.shape:
        raise WireError(
            f"expected result_ids and result_scores of shape [{queries}, k], got {ids.shape} and {scores.shape}"
        )
    ids = ids.astype(np.int64, copy=False)
    hits = int((ids >= 0).sum())
    metas = list(answer.result_metas_json) or None
    texts = list(answer.result_texts) or None
    for what, values in (("result_metas_json", metas), ("result_texts", texts)):
        if values is not None and len(values) != hits:
            raise WireError(f"{what} holds {len(values)} entries for {hits} hits")
    return ShardHits(ids, scores.astype(np.float32, copy=False), metas, texts)


def _from_documents(answer: pb.Response.QueryResponse, queries: int) -> ShardHits:
    results = answer.topk_results
    counts = np.asarray(answer.result_counts, dtype=np.int64)
    if len(counts) != queries or int(counts.sum()) != len(results):
        raise WireError(f"result_counts {counts.tolist()} do not describe {len(results)} hits of {queries} queries")
    width = int(counts.max()) if queries else 0
    rows = np.repeat(np.arange(queries), counts)
    cols = np.arange(len(results)) - np.repeat(np.cumsum(counts) - counts, counts)
    ids = np.full((queries, width), -1, dtype=np.int64)
    scores = np.full((queries, width), np.nan, dtype=np.float32)
    ids[rows, cols] = np.fromiter((r.doc.doc_id for r in results), dtype=np.int64, count=len(results))
    scores[rows, cols] = np.fromiter((r.score.value for r in results), dtype=np.float32, count=len(results))
    metas = [r.doc.meta_json for r in results]
    texts = [r.doc.raw_text for r in results]
    embeddings = None
    vectors = [nd_to_array(r.doc.embedding) if r.doc.HasField("embedding") else None for r in results]
    known = [v for v in vectors if v is not None]
    if known:  # a hit without its vector (none stored) gets zeros, as before
        embeddings = np.zeros((len(results), known[0].size), dtype=np.float32)
        for row, vector in enumerate(vectors):
            if vector is not None:
                embeddings[row] = vector
    return ShardHits(ids, scores, metas if any(metas) else None, texts if any(texts) else None, embeddings)


def merge(parts: Sequence[ShardHits], top_k: int, big_is_better: bool, dim: int, want_embeddings: bool) -> SearchResult:
    """The best `top_k` of every shard's hits per query, by score in the metric's direction;
    ties keep shard order. All of it is numpy over [q, k x shards] arrays."""
    queries = parts[0].ids.shape[0]
    ids = np.concatenate([p.ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    empty = ids < 0
    key = (-scores if big_is_better else scores).astype(np.float64)
    key[empty] = np.inf
    order = np.argsort(key, axis=1, kind="stable")[:, :top_k]
    out_ids = np.full((queries, top_k), -1, dtype=np.int64)
    out_scores = np.full((queries, top_k), np.nan, dtype=np.float32)
    width = order.shape[1]
    chosen_ids = np.take_along_axis(ids, order, axis=1)
    kept = chosen_ids >= 0
    out_ids[:, :width] = chosen_ids
    out_scores[:, :width] = np.where(kept, np.take_along_axis(scores, order, axis=1), np.float32(np.nan))
    need_positions = want_embeddings or any(p.metas is not None or p.texts is not None for p in parts)
    if not need_positions:
        return SearchResult(out_scores, out_ids, embeddings=None)
    # Where each kept hit sits in the shards' per-hit lists, joined end to end.
    positions = np.full(ids.shape, -1, dtype=np.int64)
    column, offset = 0, 0
    for part in parts:
        valid = part.ids >= 0
        block = positions[:, column : column + part.ids.shape[1]]
        block[valid] = offset + np.arange(int(valid.sum()))
        column, offset = column + part.ids.shape[1], offset + int(valid.sum())
    picked = np.take_along_axis(positions, order, axis=1)[kept].tolist()  # row order
    metas = _picked([p.metas for p in parts], parts, picked)
    texts = _picked([p.texts for p in parts], parts, picked)
    embeddings = None
    if want_embeddings:
        embeddings = np.zeros((queries, top_k, dim), dtype=np.float32)
        stored = [
            p.embeddings if p.embeddings is not None else np.zeros((int((p.ids >= 0).sum()), dim), np.float32)
            for p in parts
        ]
        every = np.concatenate(stored) if stored else np.zeros((0, dim), np.float32)
        embeddings[:, :width][kept] = every[picked]
    return SearchResult(out_scores, out_ids, embeddings=embeddings, hit_metas=metas, hit_texts=texts)


def _picked(lists: list[list[str] | None], parts: Sequence[ShardHits], picked: list[int]) -> list[str] | None:
    every = _joined(lists, [p.ids for p in parts])
    return None if every is None else [every[i] for i in picked]


def _joined(lists: Sequence[list[str] | None], ids: Sequence[np.ndarray]) -> list[str] | None:
    """Per-hit lists end to end; a None (all empty) stands for as many empty strings as hits."""
    if all(values is None for values in lists):
        return None
    every: list[str] = []
    for values, block in zip(lists, ids, strict=True):
        every.extend(values if values is not None else [""] * int((block >= 0).sum()))
    return every


def _per_query(ids: np.ndarray, hits: list[str] | None, convert: Any, empty: Any) -> list[list[Any]]:
    counts = (ids >= 0).sum(axis=1).tolist()
    if hits is None:
        return [[empty() for _ in range(count)] for count in counts]
    values = iter(hits)
    return [[convert(next(values)) for _ in range(count)] for count in counts]


def meta_of(meta_json: str) -> dict[str, Any]:
    return json.loads(meta_json) if meta_json else {}
