"""Reduce the parts of a request into one answer: merge top-k lists, sum index counts.

Parts are grouped by (client, request, parent part path); `num_part` in the envelope is a
stack with one level per map step (the income proxy's batches, the middleman's shards), so
a merged level becomes one part of the level above. The state is bounded twice: each group
has a deadline (then it is answered as partial, never held forever) and at most
`max_pending` groups wait at once (the oldest is answered as partial to make room).
"""

from __future__ import annotations

import heapq
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..proto import array_to_nd, nd_to_array, pb
from .message import BodyType, Packet, as_error

GroupKey = tuple[str, int, tuple[int, ...]]


@dataclass(slots=True)
class _Group:
    expected: int
    deadline: float
    parts: dict[int, Packet] = field(default_factory=dict)


class Reducer:
    def __init__(self, query_timeout: float = 10.0, index_timeout: float = 600.0, max_pending: int = 10000) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.query_timeout = query_timeout
        self.index_timeout = index_timeout
        self.max_pending = max_pending
        self._groups: OrderedDict[GroupKey, _Group] = OrderedDict()
        self._deadlines: list[tuple[float, GroupKey]] = []
        # Groups already answered: a part arriving after its group timed out is dropped
        # instead of opening a new group that would wait, and answer, a second time.
        self._done: OrderedDict[GroupKey, None] = OrderedDict()
        self.partial_answers = 0
        self.late_parts = 0

    @property
    def pending(self) -> int:
        return len(self._groups)

    def add(self, packet: Packet, now: float | None = None) -> list[Packet]:
        """Take one part; return the answers that are now complete (zero or more)."""
        now = time.monotonic() if now is None else now
        out: list[Packet] = []
        while packet is not None:
            env = packet.envelope
            if not env.num_part or (len(env.num_part) == 1 and env.num_part[0] <= 1):
                out.append(packet)
                break
            if env.num_part[-1] <= 1:  # a level of one part: nothing to wait for
                packet = _pop_level(packet)
                continue
            key = (env.client_id, env.request_id, tuple(env.part_ids[:-1]))
            if key in self._done:
                self.late_parts += 1
                break
            group = self._groups.get(key)
            if group is None:
                out.extend(self._make_room())
                group = _Group(env.num_part[-1], now + self._timeout_for(env))
                self._groups[key] = group
                heapq.heappush(self._deadlines, (group.deadline, key))
            part_id = env.part_ids[-1] if env.part_ids else env.part_id
            if part_id in group.parts:  # a resent part already answered: the first answer stands
                self.late_parts += 1
                break
            group.parts[part_id] = packet
            if len(group.parts) < group.expected:
                break
            packet = self._finish(key, partial=False)
        return out

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._groups:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None

    def expire(self, now: float | None = None) -> list[Packet]:
        """Answer, as partial, every group whose deadline has passed."""
        now = time.monotonic() if now is None else now
        out: list[Packet] = []
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, key = heapq.heappop(self._deadlines)
            out.extend(self.add(self._finish(key, partial=True), now))
        return out

    def _timeout_for(self, env: pb.Envelope) -> float:
        if env.timeout:
            return env.timeout / 1000.0
        return self.index_timeout if env.body_type in (BodyType.INDEX, BodyType.TRAIN) else self.query_timeout

    def _make_room(self) -> list[Packet]:
        out: list[Packet] = []
        while len(self._groups) >= self.max_pending:
            oldest = next(iter(self._groups))
            out.extend(self.add(self._finish(oldest, partial=True)))
        return out

    def _finish(self, key: GroupKey, partial: bool) -> Packet:
        group = self._groups.pop(key)
        self._done[key] = None
        while len(self._done) > 4 * self.max_pending:
            self._done.popitem(last=False)
        if partial:
            self.partial_answers += 1
        parts = [group.parts[i] for i in sorted(group.parts)]
        return _pop_level(merge_parts(parts, group.expected))


def _pop_level(packet: Packet) -> Packet:
    env = packet.envelope
    del env.num_part[-1]
    if env.part_ids:
        del env.part_ids[-1]
    env.part_id = env.part_ids[-1] if env.part_ids else 0
    return packet


def merge_parts(parts: list[Packet], expected: int) -> Packet:
    """One packet standing for all parts of a level; missing parts make the answer partial."""
    first = parts[-1]
    missing = expected - len(parts)
    _gather_doc_errors(first, parts)
    if any(not p.envelope.is_response for p in parts):
        return as_error(first, "a request reached the reducer without being answered by a shard")
    responses = [p.response() for p in parts]
    merged = pb.Response(request_id=first.envelope.request_id)
    errors = [r.error for r in responses if r.error]
    body_type = first.envelope.body_type
    if body_type == BodyType.QUERY:
        _merge_search(merged, responses, missing)
    elif body_type == BodyType.INDEX:
        merged.index.num_docs = sum(r.index.num_docs for r in responses)
        merged.index.status = _status(responses, "index")
        if missing:
            errors.append(
                f"{missing} of {expected} parts were not acknowledged in time; their documents may not be stored"
            )
    elif body_type == BodyType.ADMIN:
        merged.admin.status = _status(responses, "admin")
        merged.admin.info_json = json.dumps({"shards": _flatten_infos(r.admin.info_json for r in responses)})
        for response in responses:
            merged.admin.docs.extend(response.admin.docs)
    elif body_type == BodyType.TRAIN:
        merged.train.status = _status(responses, "train")
    elif body_type == BodyType.EMBED:
        _merge_embed(merged, responses, missing)
    else:
        merged.control.status = _status(responses, "control")
    if missing and body_type != BodyType.QUERY:
        errors.append(f"{missing} of {expected} parts did not answer in time")
    if errors:
        merged.error = "; ".join(dict.fromkeys(errors))
        _set_status(merged, pb.Response.ERROR)
    first.body = merged.SerializeToString()
    return first


def _gather_doc_errors(first: Packet, parts: list[Packet]) -> None:
    """The documents refused on the way (an encoder's or a preprocessor's doc_errors) travel in each
    part's envelope; the one envelope that goes on carries them all, each once."""
    seen = {(e.doc_id, e.position, e.reason) for e in first.envelope.doc_errors}
    for part in parts:
        if part is first:
            continue
        for error in part.envelope.doc_errors:
            key = (error.doc_id, error.position, error.reason)
            if key not in seen:
                seen.add(key)
                first.envelope.doc_errors.add().CopyFrom(error)


def _merge_embed(merged: pb.Response, responses: list[pb.Response], missing: int) -> None:
    """The parts' vectors stacked in part order (the parts come sorted by part id); a part
    that failed or is missing makes the whole answer an error: rows would not line up."""
    merged.embed.status = _status(responses, "embed")
    blocks = [nd_to_array(r.embed.embeddings) for r in responses if r.embed.HasField("embeddings")]
    if merged.embed.status == pb.Response.SUCCESS and blocks and not missing:
        array_to_nd(np.concatenate(blocks), merged.embed.embeddings)


def _merge_search(merged: pb.Response, responses: list[pb.Response], missing: int) -> None:
    search = merged.search
    big_is_better = all(r.search.is_big_score_similar for r in responses) if responses else True
    top_k = max((r.search.top_k for r in responses), default=0)
    results = [res for r in responses for res in r.search.topk_results]
    sign = -1.0 if big_is_better else 1.0
    results.sort(key=lambda res: (sign * res.score.value, _result_id(res)))
    # While documents move between shards, two shards may both hold one: it is answered once.
    seen: set[int] = set()
    unique = []
    for res in results:
        doc_id = _result_id(res)
        if doc_id not in seen:
            seen.add(doc_id)
            unique.append(res)
    results = unique
    search.topk_results.extend(results[:top_k] if top_k else results)
    search.top_k = top_k
    search.is_big_score_similar = big_is_better
    search.is_sorted = True
    search.shards_answered = sum(r.search.shards_answered for r in responses)
    search.shards_expected = sum(r.search.shards_expected for r in responses) + missing
    search.partial = missing > 0 or any(r.search.partial for r in responses)
    search.status = _status(responses, "search")


def _result_id(res: pb.Response.QueryResponse.ScoredResult) -> int:
    return res.doc.doc_id if res.WhichOneof("body") == "doc" else res.chunk.doc_id


def _status(responses: list[pb.Response], kind: str) -> int:
    if any(getattr(r, kind).status == pb.Response.ERROR for r in responses):
        return pb.Response.ERROR
    return pb.Response.SUCCESS


def _set_status(response: pb.Response, status: int) -> None:
    kind = response.WhichOneof("body")
    if kind:
        getattr(response, kind).status = status


def _flatten_infos(infos: object) -> list[object]:
    out: list[object] = []
    for text in infos:
        info = json.loads(text) if text else {}
        if isinstance(info, dict) and set(info) == {"shards"}:
            out.extend(info["shards"])
        else:
            out.append(info)
    return out
