"""A deterministic, model-free encoder for tests and benchmarks of everything but the model."""

from __future__ import annotations

import hashlib

import numpy as np

from ..component import check_bool, check_int
from .base import BaseEncoder

# blake2b digests are at most 64 bytes; beyond that an extendable-output hash is used.
_BLAKE2B_MAX = 64
_MAX_DIM = 4096


class HashEncoder(BaseEncoder):
    """Maps each text to the bytes of a hash of its UTF-8, one byte per dimension.

    The same text always gives the same vector and different texts give independent,
    roughly uniform vectors, so they are nearly orthogonal (cosine about ±1/sqrt(dim)).
    There is no semantics at all: "cat" and "cats" are as far apart as any two texts.
    """

    def __init__(self, dim: int = 64, normalize: bool = True) -> None:
        super().__init__()
        self._dim = check_int("dim", dim, minimum=1, maximum=_MAX_DIM)
        self.normalize = check_bool("normalize", normalize)

    @property
    def dim(self) -> int:
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        dim = self._dim
        # One hash call per text is the only Python-level work; everything after it is a
        # single vectorised pass over the whole batch.
        if dim <= _BLAKE2B_MAX:
            blake2b = hashlib.blake2b
            digests = b"".join([blake2b(text.encode(), digest_size=dim).digest() for text in texts])
        else:
            shake = hashlib.shake_128
            digests = b"".join([shake(text.encode()).digest(dim) for text in texts])
        # Bytes read as int8 are centred on -0.5; shift them to zero mean, scale to [-1, 1].
        vectors = np.frombuffer(digests, dtype=np.int8).reshape(len(texts), dim).astype(np.float32)
        vectors += 0.5
        if self.normalize:
            vectors /= np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
        else:
            vectors /= 127.5
        return vectors
