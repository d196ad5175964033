"""The one ranking rule (textmatch.retrieval.ranking) against naive sorts written here."""

import random

import numpy as np
import pytest

from textmatch import TextMatchError
from textmatch.retrieval.ranking import rank_run, ranked, rerank_rows, top_k, top_k_positions


def naive_order(docs):
    """trec_eval: score (as a C float) descending, ties by doc id descending."""
    return sorted(docs, key=lambda d: (float(np.float32(docs[d])), d), reverse=True)


def random_docs(rng, n=40, ties=True):
    ids = [f"d{rng.randint(0, 999)}" for _ in range(n)]
    return {d: float(rng.randint(0, 4)) if ties else rng.uniform(-3, 3) for d in ids}


@pytest.mark.parametrize("seed", range(5))
def test_ranked_and_top_k_match_a_naive_sort(seed):
    rng = random.Random(seed)
    docs = random_docs(rng, ties=seed % 2 == 0)
    want = naive_order(docs)
    assert [d for d, _ in ranked(docs)] == want
    assert rank_run(docs) == want
    for k in (1, 5, len(docs), len(docs) + 3):
        assert [d for d, _ in top_k(docs, k)] == want[:k]
        assert all(docs[d] == s for d, s in top_k(docs, k))


def test_ties_go_to_the_larger_id_in_string_order():
    assert rank_run({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    assert rank_run({"10": 0.5, "9": 0.5}) == ["9", "10"]  # strcmp order, not numeric


def test_scores_are_compared_as_float32():
    # differ only beyond float32 precision: a tie, broken by id
    assert rank_run({"a": 1.0 + 1e-12, "b": 1.0}) == ["b", "a"]
    assert rank_run({"a": 1.0 + 1e-6, "b": 1.0}) == ["a", "b"]  # a real difference


@pytest.mark.parametrize("seed", range(5))
def test_top_k_positions_matches_a_naive_sort(seed):
    rng = np.random.default_rng(seed)
    n = 60
    scores = rng.integers(0, 4, size=n).astype(np.float32)  # many ties, also across the cut
    ids = [f"doc{j}" for j in rng.permutation(n)]
    want = sorted(range(n), key=lambda p: (float(scores[p]), ids[p]), reverse=True)
    for k in (1, 7, 30, n, n + 5):
        assert top_k_positions(scores, ids, k).tolist() == want[:k]
    assert top_k_positions(scores, ids, 0).tolist() == []


def test_rerank_rows_orders_each_row_and_keeps_missing_places_last():
    scores = np.array([[1.0, 2.0, 2.0], [0.5, -np.inf, -np.inf]], dtype=np.float32)
    out, ids = rerank_rows(scores, [["a", "b", "c"], ["x"]])
    assert ids == [["c", "b", "a"], ["x"]]
    assert out[0].tolist() == [2.0, 2.0, 1.0] and out[1, 0] == 0.5 and np.isneginf(out[1, 1:]).all()


def test_nan_is_an_error():
    with pytest.raises(TextMatchError, match="NaN"):
        rank_run({"a": float("nan")})
    with pytest.raises(TextMatchError, match="NaN"):
        top_k_positions(np.array([0.1, np.nan]), ["a", "b"], 1)
