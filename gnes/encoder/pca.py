"""PCA: a trainable stage that projects vectors onto their first principal components."""

from __future__ import annotations

import numpy as np

from ..component import Component, check_bool, check_int


class NotTrainedError(ValueError):
    """A trainable stage was asked to transform before it was trained."""


class PCAEncoder(Component):
    """Projects `dim`-d vectors onto their `output_dim` principal components (numpy SVD).

    A stage of an `EncoderChain`, after the encoder that makes the vectors. `fit` learns
    the mean and components from training vectors; `state`/`load_state` are plain float32
    arrays, so the chain saves them as npz, which loads without running code.
    `normalize` L2-normalises the output (inner product is then cosine).
    """

    trainable = True

    def __init__(self, output_dim: int = 256, normalize: bool = True) -> None:
        super().__init__()
        self.output_dim = check_int("output_dim", output_dim, minimum=1)
        self.normalize = check_bool("normalize", normalize)
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None  # [output_dim, input_dim]

    @property
    def trained(self) -> bool:
        return self.components is not None

    def fit(self, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float64)
        n, dim = vectors.shape
        if dim < self.output_dim:
            raise ValueError(f"PCA to {self.output_dim} dimensions needs input of at least that many, got {dim}")
        if n < self.output_dim:
            # Fewer samples than components: the extra components would be arbitrary directions.
            raise ValueError(
                f"PCA to {self.output_dim} dimensions needs at least {self.output_dim} training vectors, got {n}"
            )
        mean = vectors.mean(axis=0)
        # The right singular vectors of the centred data are the principal directions, largest first.
        _, _, vt = np.linalg.svd(vectors - mean, full_matrices=False)
        self.mean = mean.astype(np.float32)
        self.components = np.ascontiguousarray(vt[: self.output_dim], dtype=np.float32)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.components is None or self.mean is None:
            raise NotTrainedError("the PCA is not trained")
        if vectors.shape[1] != self.components.shape[1]:
            raise ValueError(f"the PCA was trained on {self.components.shape[1]}-d vectors, got {vectors.shape[1]}-d")
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.components.T
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, 1e-12)
        return np.ascontiguousarray(out, dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        if self.components is None or self.mean is None:
            raise NotTrainedError("the PCA is not trained: there is nothing to save")
        return {"mean": self.mean, "components": self.components}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        mean, components = state.get("mean"), state.get("components")
        if mean is None or components is None:
            raise ValueError("a PCA state needs 'mean' and 'components'")
        if components.ndim != 2 or components.shape[0] != self.output_dim or mean.shape != (components.shape[1],):
            raise ValueError(
                f"the saved PCA has components {components.shape} and mean {mean.shape}; "
                f"this one projects to {self.output_dim} dimensions"
            )
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.components = np.ascontiguousarray(components, dtype=np.float32)
