"""`gnes eval`: how well each served model's embeddings agree with human judgements of similarity.

The set is Lee, Pincombe and Welsh (2005): 50 news documents and their pairwise similarity as rated
by people (averaged, 0 to 1), shipped in gensim's wheel (lee.cor, similarities0-1.txt). For every
model the 50 documents are embedded through the running deployment (HTTP), and its cosine
similarities are scored against the human ones:
    Pearson   the correlation over the 1,225 pairs of different documents
    nDCG@10   per document, the other 49 ranked by the model, gains the human similarity,
              discounted by log2(rank + 1), over the best possible ranking; the mean of the 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from .tfidf_svd import lee_data_dir

# Documents per request: an encoder is silent while it encodes one message, and a long one on a
# loaded machine can look like a dead encoder to the map proxy (gnes/elastic/link.py).
_PER_REQUEST = 10


def load_lee() -> tuple[list[str], np.ndarray]:
    """The 50 documents and the symmetric 50 x 50 matrix of human similarity."""
    data = lee_data_dir()
    docs = [line.strip() for line in (data / "lee.cor").read_text(encoding="latin-1").splitlines() if line.strip()]
    upper = np.loadtxt(data / "similarities0-1.txt")
    if upper.shape != (len(docs), len(docs)):
        raise ValueError(f"the Lee set has {len(docs)} documents but a {upper.shape} similarity matrix")
    human = np.triu(upper) + np.triu(upper, 1).T  # the file holds the upper triangle
    return docs, human


def score(vectors: np.ndarray, human: np.ndarray, k: int = 10) -> dict[str, float]:
    """Pearson correlation and nDCG@k of the vectors' cosine similarities against `human`."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.where(norms > 0, norms, 1.0)
    model = unit @ unit.T
    n = len(human)
    pairs = np.triu_indices(n, 1)
    pearson = float(np.corrcoef(model[pairs], human[pairs])[0, 1])
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ndcgs = []
    for i in range(n):
        others = np.delete(np.arange(n), i)
        ranked = others[np.argsort(-model[i, others], kind="stable")][:k]
        ideal = np.sort(human[i, others])[::-1][:k]
        ndcgs.append(float(human[i, ranked] @ discount[: len(ranked)] / (ideal @ discount[: len(ideal)])))
    return {"pearson": pearson, f"ndcg@{k}": float(np.mean(ndcgs))}


def table(scores: dict[str, dict[str, float]]) -> str:
    width = max(len("model"), *map(len, scores))
    lines = [f"{'model':<{width}}  pearson  ndcg@10  dim", f"{'-' * width}  -------  -------  ----"]
    for name, s in sorted(scores.items(), key=lambda item: -item[1]["pearson"]):
        lines.append(f"{name:<{width}}  {s['pearson']:7.3f}  {s['ndcg@10']:7.3f}  {int(s['dim']):4d}")
    return "\n".join(lines)


def chart(scores: dict[str, dict[str, float]], path: str | Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file only
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"the chart needs matplotlib: install gnes[eval] ({exc})") from exc
    names = sorted(scores)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(names)), 3.5))
    ax.bar(x - 0.2, [scores[n]["pearson"] for n in names], 0.4, label="Pearson")
    ax.bar(x + 0.2, [scores[n]["ndcg@10"] for n in names], 0.4, label="nDCG@10")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1)
    ax.set_title("Lee et al. 2005: agreement with human similarity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_models(http: Any, models: list[str]) -> dict[str, dict[str, float]]:
    """Embed the Lee documents with each model through the HTTP service (`http`: an httpx.Client)."""
    docs, human = load_lee()
    scores = {}
    for name in models:
        rows = []
        for start in range(0, len(docs), _PER_REQUEST):
            got = http.post(f"/embedwith/{name}", json={"sentences": docs[start : start + _PER_REQUEST]})
            if got.status_code != 200:
                raise RuntimeError(f"model {name!r}: {got.status_code} {got.text[:300]}")
            rows.extend(got.json()["embeddings"])
        vectors = np.array(rows, dtype=np.float32)
        scores[name] = {**score(vectors, human), "dim": float(vectors.shape[1])}
    return scores


def run_eval(args: argparse.Namespace) -> int:
    from .cli import client

    with client(args) as http:
        models = [m for m in args.models.split(",") if m] if args.models else None
        if models is None:
            got = http.get("/models")
            named = sorted(got.json()["models"]) if got.status_code == 200 else []
            models = ["default", *named]
        scores = evaluate_models(http, models)
    if args.chart:
        chart(scores, args.chart)
    if args.json:
        print(json.dumps({"set": "lee2005", "scores": scores}))
    else:
        print(table(scores))
        if args.chart:
            print(f"chart: {args.chart}")
    return 0
