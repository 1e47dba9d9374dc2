"""A second real model to compare with MiniLM, as a `get_embed_fn()` plugin: TF-IDF plus truncated SVD
(latent semantic analysis) to 384 dimensions, fitted on the sentences of gensim's lee_background.cor.

Serve it with `gnes model add lsa --package gnes.models.tfidf_svd` (or `--plugin` this file). It needs
scikit-learn and gensim's test data (the `eval` extra). The 300 background documents are split into
sentences so that the SVD has more rows than components.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DIM = 384


def lee_data_dir() -> Path:
    try:
        import gensim.test.utils
    except ImportError as exc:
        raise ImportError(f"the Lee corpus ships in gensim's wheel: install gnes[eval] ({exc})") from exc
    return Path(gensim.test.utils.__file__).parent / "test_data"


def get_embed_fn():  # type: ignore[no-untyped-def]
    try:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
    except ImportError as exc:
        raise ImportError(f"the TF-IDF + SVD model needs scikit-learn: install gnes[eval] ({exc})") from exc
    text = (lee_data_dir() / "lee_background.cor").read_text(encoding="utf-8", errors="replace")
    sentences = [s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.split()) >= 3]
    vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", min_df=1)
    matrix = vectorizer.fit_transform(sentences)
    svd = TruncatedSVD(n_components=DIM, random_state=0, algorithm="randomized", n_iter=4)
    svd.fit(matrix)

    def embed(texts: list[str]) -> np.ndarray:
        vectors = svd.transform(vectorizer.transform(texts)).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # A text of unknown words only maps to zero: it stays zero rather than dividing by zero.
        return vectors / np.where(norms > 0, norms, 1.0)

    embed.dim = DIM  # type: ignore[attr-defined]
    return embed
