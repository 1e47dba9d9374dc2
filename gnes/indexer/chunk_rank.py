"""Chunk hits ranked back into documents: max, mean or weighted, at the shard.

A query is searched among the chunk vectors; the documents of the best chunks are the
candidates. `max` scores a document by its best chunk found. `mean` and `weighted` score
every chunk of each candidate exactly (their vectors are read from the store), then take the
mean, or the mean weighted by the chunks' weights (a sentence's share of the words, a crop's
share of the area). Each document is answered once, with its best chunk as the evidence.

All chunks of a document live on one shard, so a shard's document scores are final; the
reducer merging the shards keeps each document once, at its best score (a document copied
to a second shard during a handover has the same chunks, hence the same score there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ..proto import WireError, pb
from .chunks import key_doc, key_offset
from .logical import Hit

REDUCE_MODES = ("max", "mean", "weighted")
DOC_MODE = "doc"  # the documents' own vectors, chunks ignored
# Chunks fetched per query: enough that top_k documents remain once chunks of one document
# are folded together (a document answers with several sentences at once).
_FANOUT, _MIN_CHUNKS = 8, 64


@dataclass(slots=True)
class ChunkEvidence:
    offset: int
    score: float
    text: str
    offset_nd: list[int]
    weight: float
    scored: int  # chunks of the document that were scored


@dataclass(slots=True)
class DocHit(Hit):
    """A document hit of a chunk search: a plain Hit and its best chunk."""

    evidence: ChunkEvidence | None = None


def reduce_mode(index, requested: str) -> str | None:  # type: ignore[no-untyped-def]
    """The mode a query runs in; None: search the documents' vectors (no chunks, or `doc`)."""
    mode = requested or "max"
    if mode not in (*REDUCE_MODES, DOC_MODE):
        raise WireError(f"chunk_reduce must be one of {', '.join((*REDUCE_MODES, DOC_MODE))}; got {requested!r}")
    if mode == DOC_MODE or not len(index.chunks):
        return None
    return mode


def search_chunks(
    index,  # type: ignore[no-untyped-def]
    queries: np.ndarray,
    top_k: int,
    mode: str,
    nprobe: int | None = None,
    ef_search: int | None = None,
    filter_field: str = "",
    filter_value_json: str = "",
    return_vectors: bool = False,
) -> list[list[DocHit]]:
    chunks = index.chunks
    store = chunks.index
    big_is_better = index.config.metric == "ip"
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    allowed = None
    if filter_field:  # the filter is on the documents' metadata: only their chunks are searched
        doc_ids = index.filter.ids(filter_field, filter_value_json, index.store.iter_metas())
        allowed = np.asarray(chunks.keys_of(doc_ids), dtype=np.int64)
    want = max(top_k * _FANOUT, _MIN_CHUNKS)
    scores, keys = store.vectors.search(queries, want, nprobe, ef_search, allowed_ids=allowed)
    results: list[list[DocHit]] = []
    for query, row_scores, row_keys in zip(queries, scores, keys, strict=True):
        ranked = _rank(chunks, query, row_scores, row_keys, mode, big_is_better)[:top_k]
        results.append(_with_documents(index, store, ranked, return_vectors))
    if chunks.docs_with_chunks() < index.count():
        # Documents stored without chunks (indexed around the preprocessor) count as one chunk,
        # their own vector: they compete on the same scale (one model, one metric).
        deeper = min(index.count(), top_k * _FANOUT)  # some of the best by their own vector have chunks
        plain = index.search(queries, deeper, nprobe, ef_search, filter_field, filter_value_json, return_vectors)
        results = [
            _merge(mine, other, chunks, top_k, big_is_better) for mine, other in zip(results, plain, strict=True)
        ]
    return results


def _merge(hits: list[DocHit], plain, chunks, top_k: int, big_is_better: bool) -> list[DocHit]:  # type: ignore[no-untyped-def]
    extra = [DocHit(h.doc_id, h.score, h.text, h.meta_json, h.vector) for h in plain if not chunks.has(h.doc_id)]
    merged = sorted([*hits, *extra], key=lambda h: (-h.score if big_is_better else h.score, h.doc_id))
    return merged[:top_k]


def _rank(chunks, query, scores, keys, mode, big_is_better):  # type: ignore[no-untyped-def]
    """[(doc id, score, best chunk key, best chunk score, chunks scored)], best first."""
    valid = keys >= 0
    scores, keys = scores[valid], keys[valid]
    docs = key_doc(keys)
    _, first = np.unique(docs, return_index=True)
    candidates = docs[np.sort(first)]  # in order of their best chunk found
    ranked = []
    if mode == "max":
        for doc_id in candidates.tolist():
            at = int(np.flatnonzero(docs == doc_id)[0])  # hits come best first
            ranked.append((doc_id, float(scores[at]), int(keys[at]), float(scores[at]), int((docs == doc_id).sum())))
    else:
        for doc_id in candidates.tolist():
            doc_keys = chunks.keys_of([doc_id])
            vectors, found = chunks.index.store.get_vectors(doc_keys)
            doc_keys, vectors = doc_keys[found], vectors[found]
            if not len(doc_keys):
                continue
            exact = _score(query, vectors, chunks.config.metric)
            weights = _weights(chunks, doc_keys) if mode == "weighted" else None
            if weights is not None and weights.sum() > 0:
                value = float((exact * weights).sum() / weights.sum())
            else:
                value = float(exact.mean())
            best = int(np.argmax(exact) if big_is_better else np.argmin(exact))
            ranked.append((doc_id, value, int(doc_keys[best]), float(exact[best]), len(doc_keys)))
    ranked.sort(key=lambda r: (-r[1] if big_is_better else r[1], r[0]))
    return ranked


def _score(query: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if metric == "ip":
        return vectors @ query
    return np.sqrt(np.maximum(((vectors - query) ** 2).sum(axis=1), 0.0))


def _weights(chunks, keys: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    stored = chunks.index.get(keys)
    return np.asarray([json.loads(item[1]).get("weight", 0.0) if item else 0.0 for item in stored], dtype=np.float64)


def _with_documents(index, store, ranked, return_vectors: bool) -> list[DocHit]:  # type: ignore[no-untyped-def]
    """Attach each document's text and metadata, and its best chunk's; a chunk whose document
    is not stored (a write cut short between the two) is left out."""
    if not ranked:
        return []
    ids = np.asarray([r[0] for r in ranked], dtype=np.int64)
    docs = index.store.get_docs(ids)
    best = store.get(np.asarray([r[2] for r in ranked], dtype=np.int64))
    vectors, found = index.store.get_vectors(ids) if return_vectors else (None, None)
    hits = []
    for row, ((doc_id, value, key, key_score, scored), doc, chunk) in enumerate(zip(ranked, docs, best, strict=True)):
        if doc is None:
            continue
        meta = json.loads(chunk[1]) if chunk and chunk[1] else {}
        evidence = ChunkEvidence(
            int(key_offset(np.asarray([key]))[0]),
            key_score,
            chunk[0] if chunk else "",
            list(meta.get("offset_nd", [])),
            float(meta.get("weight", 0.0)),
            scored,
        )
        vector = vectors[row] if vectors is not None and found[row] else None
        hits.append(DocHit(doc_id, value, doc[0], doc[1], vector, evidence))
    return hits


def add_evidence(result: pb.Response.QueryResponse.ScoredResult, hit: object, mode: str | None) -> None:
    """The best chunk of a document hit, in doc.chunks and as JSON in score.explained. A GNES
    0.0.47 client reads doc and score.value as before and ignores both."""
    evidence = getattr(hit, "evidence", None)
    if evidence is None:
        return
    chunk = result.doc.chunks.add(doc_id=result.doc.doc_id, offset=evidence.offset, weight=evidence.weight)
    if evidence.text:
        chunk.text = evidence.text
    chunk.offset_nd.extend(evidence.offset_nd)
    result.score.explained = json.dumps(
        {
            "reduce": mode,
            "chunk": evidence.offset,
            "chunk_score": evidence.score,
            "chunks_scored": evidence.scored,
        }
    )
