"""The scores of `gnes eval` (gnes/models/evaluate.py) on their own; the command against served models
runs in tests/test_models_stack.py."""

from __future__ import annotations

import numpy as np

from gnes.models.evaluate import load_lee, score, table


def test_the_lee_set_is_50_documents_with_a_symmetric_human_matrix() -> None:
    docs, human = load_lee()
    assert len(docs) == 50 and human.shape == (50, 50)
    np.testing.assert_array_equal(human, human.T)
    np.testing.assert_array_equal(np.diag(human), 1.0)
    assert 0 <= human.min() and human.max() <= 1


def test_vectors_that_reproduce_the_ratings_score_one_and_shuffled_ones_do_not() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((30, 12))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    human = unit @ unit.T
    perfect = score(vectors * 5.0, human)  # cosine: the scale of a vector does not matter
    assert abs(perfect["pearson"] - 1) < 1e-9 and abs(perfect["ndcg@10"] - 1) < 1e-9
    shuffled = score(vectors[rng.permutation(30)], human)
    assert shuffled["pearson"] < 0.5 and shuffled["ndcg@10"] < perfect["ndcg@10"]


def test_the_table_ranks_models_by_pearson() -> None:
    text = table({"b": {"pearson": 0.2, "ndcg@10": 0.5, "dim": 8}, "a": {"pearson": 0.6, "ndcg@10": 0.7, "dim": 384}})
    lines = text.splitlines()
    assert lines[0].split() == ["model", "pearson", "ndcg@10", "dim"]
    assert lines[2].split() == ["a", "0.600", "0.700", "384"] and lines[3].split()[0] == "b"
