"""An encoder followed by vector stages (a PCA, say), some of which must be trained first."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..component import Component
from .base import BaseEncoder
from .pca import NotTrainedError

_FORMAT = "gnes-encoder-chain-1"


class EncoderChain(BaseEncoder):
    """`stages[0]` is an encoder (its input is the chain's: images for an ImageEncoder); each
    later stage maps vectors to vectors with `transform`, and a trainable one learns with
    `fit` (a TRAIN request) before the chain encodes anything.

    The trained state is saved by `save(path)` as npz (float arrays and one JSON string, read
    back with allow_pickle=False, so loading runs no code) and read by `load(path)`.
    """

    def __init__(self, stages: list[Any]) -> None:
        super().__init__()
        if not isinstance(stages, list) or len(stages) < 2:
            raise ValueError("stages must list an encoder and at least one stage after it")
        if not isinstance(stages[0], BaseEncoder):
            raise TypeError(f"the first stage must be an encoder, got {type(stages[0]).__name__}")
        for i, stage in enumerate(stages[1:], 1):
            if not (isinstance(stage, Component) and hasattr(stage, "transform")):
                raise TypeError(f"stage {i} ({type(stage).__name__}) does not transform vectors")
        self.stages = stages
        self.input_kind = getattr(stages[0], "input_kind", "text")
        self._dim = 0

    @property
    def encoder(self) -> BaseEncoder:
        return self.stages[0]

    @property
    def trainable(self) -> bool:
        return any(getattr(s, "trainable", False) for s in self.stages[1:])

    @property
    def trained(self) -> bool:
        return all(getattr(s, "trained", True) for s in self.stages[1:])

    @property
    def max_pixels(self) -> int | None:
        return getattr(self.encoder, "max_pixels", None)

    @property
    def model_path(self) -> str:
        return str(getattr(self.encoder, "model_path", None) or type(self.encoder).__name__)

    def start(self) -> None:
        if self._started:
            return
        for stage in self.stages:
            stage.start()
        self._dim = int(getattr(self.stages[-1], "output_dim", 0)) or self.encoder.dim
        super().start()

    def close(self) -> None:
        for stage in self.stages:
            stage.close()
        super().close()

    @property
    def dim(self) -> int:
        self._require_started()
        return self._dim

    def encode(self, items: Sequence[Any]) -> np.ndarray:  # type: ignore[override]
        self._require_started()
        if not self.trained:
            raise NotTrainedError(
                f"the encoder chain is not trained: send a TRAIN request with documents first "
                f"(untrained: {', '.join(self._untrained())})"
            )
        vectors = self.encoder.encode(items)
        for stage in self.stages[1:]:
            vectors = stage.transform(vectors)
        return vectors

    def fit(self, items: Sequence[Any]) -> np.ndarray:
        """Train every trainable stage on `items` in turn; return the trained chain's vectors of them."""
        self._require_started()
        return self.fit_vectors(self.encoder.encode(items))

    def fit_vectors(self, vectors: np.ndarray) -> np.ndarray:
        """`fit` given the first stage's vectors of the items."""
        for stage in self.stages[1:]:
            if getattr(stage, "trainable", False):
                stage.fit(vectors)
            vectors = stage.transform(vectors)
        return vectors

    def _untrained(self) -> list[str]:
        return [f"stage {i} {type(s).__name__}" for i, s in enumerate(self.stages) if not getattr(s, "trained", True)]

    def _fingerprint(self) -> dict[str, Any]:
        return {"format": _FORMAT, "stages": [type(s).__name__ for s in self.stages], "input_dim": self.encoder.dim}

    def save(self, path: str | Path) -> None:
        """Write the trained state to `path` (npz) atomically: a reader sees the old file or the new one."""
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(self._fingerprint()))}
        for i, stage in enumerate(self.stages[1:], 1):
            if getattr(stage, "trainable", False):
                for key, value in stage.state().items():
                    arrays[f"{i}.{key}"] = value
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def load(self, path: str | Path) -> None:
        """Read a state written by `save`, refusing one made for another chain."""
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
        meta = json.loads(str(arrays.pop("meta", np.array("{}"))))
        expected = self._fingerprint()
        if meta != expected:
            raise ValueError(f"{path} was saved by a different chain ({meta}); this one is {expected}")
        for i, stage in enumerate(self.stages[1:], 1):
            if getattr(stage, "trainable", False):
                prefix = f"{i}."
                stage.load_state({k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)})
