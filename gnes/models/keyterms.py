"""Key terms of texts with KeyBERT, driven by a served model's embed function.

KeyBERT takes the candidate n-grams of each text (scikit-learn's CountVectorizer, English stop words
removed), embeds the text and every candidate with the model, and ranks the candidates by cosine
similarity to the text, with maximal marginal relevance (MMR) so that the terms kept are diverse.
The model is whatever `embed(texts) -> float32 [n, dim]` is given: in the HTTP service, the
pipeline under a model's name, so keyterms use the same model as search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]


def _keybert():  # type: ignore[no-untyped-def]
    try:
        from keybert import KeyBERT
        from keybert.backend import BaseEmbedder
    except ImportError as exc:
        raise ImportError(f"keyterms need keybert: install gnes[keyterms] ({exc})") from exc
    return KeyBERT, BaseEmbedder


def extract_keyterms(
    texts: Sequence[str],
    embed: EmbedFn,
    top_n: int = 5,
    ngram_range: tuple[int, int] = (1, 2),
    diversity: float = 0.5,
) -> list[list[tuple[str, float]]]:
    """The ranked key terms of each text, with their scores (cosine similarity to the text)."""
    texts = list(texts)
    if not texts:
        return []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"text {i} is empty")
    keybert_cls, base = _keybert()

    class _Embedder(base):  # type: ignore[misc, valid-type]
        def embed(self, documents: list[str], verbose: bool = False) -> np.ndarray:
            return np.asarray(embed(list(documents)), dtype=np.float32)

    extractor = keybert_cls(model=_Embedder())
    found = extractor.extract_keywords(
        texts,
        keyphrase_ngram_range=ngram_range,
        stop_words="english",
        top_n=top_n,
        use_mmr=True,
        diversity=diversity,
    )
    if texts and found and isinstance(found[0], tuple):  # KeyBERT flattens the answer for one text
        found = [found]
    return [[(str(term), float(score)) for term, score in terms] for terms in found]
