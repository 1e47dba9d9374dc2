"""The encoder contract: a list of texts in, one float32 row per text out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..component import Component


class BaseEncoder(Component):
    """Subclasses implement `dim` and `_encode`; `encode` checks the input and the output.

    Empty strings are rejected rather than encoded: a model returns *some* vector for
    them, which would then match arbitrary queries in the index.
    """

    @property
    def dim(self) -> int:
        """Length of each vector; valid once started."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a C-contiguous float32 array of shape [len(texts), dim]."""
        self._require_started()
        batch = check_texts(texts)
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.ascontiguousarray(self._encode(batch), dtype=np.float32)
        if vectors.shape != (len(batch), self.dim):
            raise RuntimeError(
                f"{type(self).__name__} returned shape {vectors.shape}, expected {(len(batch), self.dim)}"
            )
        return vectors

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Encode a non-empty, already checked batch."""
        raise NotImplementedError


def check_texts(texts: Sequence[str]) -> list[str]:
    """Return `texts` as a list, or raise naming the first bad item."""
    if isinstance(texts, (str, bytes)):
        # A bare string is a sequence of characters: encoding it would silently
        # produce one vector per character.
        raise TypeError("texts must be a list of strings, not a single string")
    batch = list(texts)
    # Whole-batch checks run at C speed; the per-item scan only runs to build the message.
    if set(map(type, batch)) - {str} or "" in batch:
        for position, text in enumerate(batch):
            if not isinstance(text, str):
                raise TypeError(f"text {position} is a {type(text).__name__}, expected str")
            if not text:
                raise ValueError(f"text {position} is empty; empty texts cannot be encoded")
    return batch
