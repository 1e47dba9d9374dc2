"""Placement by id: fixed virtual slots, each owned by one shard chosen by rendezvous hashing.

A document id maps to one of `NUM_SLOTS` slots through a 64-bit mix, so consecutive ids
spread evenly. Each slot goes to the member whose (member, slot) hash is highest
(rendezvous, or highest-random-weight, hashing). Members are stable names (a Swarm task
slot, a StatefulSet ordinal, a rank), never positions in a list: adding a member moves
only the slots it now wins, about 1/(n+1) of them, and removing one moves only its own.

The pipeline's middleman, IndexClient and `gnes load` all place with this one class.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

NUM_SLOTS = 4096
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a cheap bijection of uint64 whose output bits all depend on every input bit."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64, copy=True)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x & _MASK


def slot_of(ids: np.ndarray | Sequence[int]) -> np.ndarray:
    """The slot (0 .. NUM_SLOTS-1) of every id."""
    return (_mix64(np.asarray(ids, dtype=np.uint64)) % np.uint64(NUM_SLOTS)).astype(np.int64)


def _member_seed(member: str) -> np.uint64:
    # blake2b, not hash(): the same member must win the same slots in every process.
    return np.uint64(int.from_bytes(hashlib.blake2b(member.encode(), digest_size=8).digest(), "little"))


class Placement:
    """The owner of every slot for one set of members. Immutable; cheap to build (one
    vectorised pass over the slots per member)."""

    def __init__(self, members: Iterable[str]) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        if not self.members:
            raise ValueError("a placement needs at least one member")
        slots = np.arange(NUM_SLOTS, dtype=np.uint64)
        weights = np.stack([_mix64(slots ^ _mix64(np.full(1, _member_seed(m)))[0]) for m in self.members])
        # argmax takes the first of equal weights; members are sorted, so ties break the same everywhere.
        self.table: np.ndarray = np.argmax(weights, axis=0).astype(np.int32)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Placement) and other.members == self.members

    def __hash__(self) -> int:
        return hash(self.members)

    def __repr__(self) -> str:
        return f"Placement({list(self.members)})"

    def owner_index(self, ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """For every id, the position of its owner in `self.members`."""
        return self.table[slot_of(ids)]

    def owner(self, doc_id: int) -> str:
        return self.members[int(self.owner_index([doc_id])[0])]

    def split(self, ids: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Member -> the row numbers of `ids` it owns (members owning none are left out);
        rows keep their order, so a later write of an id still follows an earlier one."""
        owners = self.owner_index(ids)
        out: dict[str, np.ndarray] = {}
        for position in np.unique(owners).tolist():
            out[self.members[position]] = np.flatnonzero(owners == position)
        return out

    def moved_fraction(self, other: Placement) -> float:
        """The share of slots whose owner differs between two placements."""
        mine = np.asarray(self.members, dtype=object)[self.table]
        theirs = np.asarray(other.members, dtype=object)[other.table]
        return float(np.mean(mine != theirs))
