"""textmatch.retrieval.fusion against naive loops written here, on small hand-made and random runs."""

from __future__ import annotations

import math
import random

import pytest

from textmatch.errors import TextMatchError
from textmatch.retrieval.fusion import normalize_scores, reciprocal_rank_fusion, weighted_fusion


# ---------------------------------------------------------------- naive references
def naive_ranks(docs):
    """1-based ranks: score descending, ties by doc id descending (trec_eval)."""
    order = sorted(docs, key=lambda d: (docs[d], d), reverse=True)
    return {d: i + 1 for i, d in enumerate(order)}


def naive_rrf(runs, k=60, weights=None):
    weights = weights or [1.0] * len(runs)
    out = {}
    for run, w in zip(runs, weights):
        for qid, docs in run.items():
            out.setdefault(qid, {})
            ranks = naive_ranks(docs)
            for d in docs:
                out[qid][d] = out[qid].get(d, 0.0) + w / (k + ranks[d])
    return out


def naive_minmax(docs):
    lo, hi = min(docs.values()), max(docs.values())
    return {d: (s - lo) / (hi - lo) if hi > lo else 1.0 for d, s in docs.items()}


def naive_zscore(docs):
    n = len(docs)
    mean = sum(docs.values()) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in docs.values()) / n)
    return {d: (s - mean) / std if std > 0 else 0.0 for d, s in docs.items()}


def naive_weighted(runs, weights, normalization):
    norm = {"minmax": naive_minmax, "zscore": naive_zscore, "none": dict}[normalization]
    qids = set().union(*runs)
    out = {}
    for q in qids:
        docs = set().union(*(run.get(q, {}) for run in runs))
        out[q] = {d: 0.0 for d in docs}
        for run, w in zip(runs, weights):
            if not run.get(q):
                continue
            n = norm(run[q])
            floor = min(n.values())
            for d in docs:
                out[q][d] += w * n.get(d, floor)
    return out


def random_run(rng, n_queries=6, n_docs=25, max_len=12, ties=False):
    run = {}
    for q in range(n_queries):
        if rng.random() < 0.15:
            continue  # some queries missing from this run
        docs = rng.sample(range(n_docs), rng.randint(1, max_len))
        run[f"q{q}"] = {
            f"d{d}": float(rng.randint(0, 3)) if ties else rng.uniform(-5, 20)
            for d in docs
        }
    return run


def assert_run_close(got, want):
    assert set(got) == set(want)
    for q in want:
        assert set(got[q]) == set(want[q]), q
        for d in want[q]:
            assert got[q][d] == pytest.approx(want[q][d], abs=1e-12), (q, d)


def assert_best_first(run):
    for docs in run.values():
        items = list(docs.items())
        assert items == sorted(items, key=lambda x: (x[1], x[0]), reverse=True)


# ---------------------------------------------------------------- RRF
def test_rrf_small_by_hand():
    a = {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}
    b = {"q": {"y": 0.9, "w": 0.5}}
    fused = reciprocal_rank_fusion([a, b], k=60)
    assert fused["q"]["x"] == pytest.approx(1 / 61)
    assert fused["q"]["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["q"]["z"] == pytest.approx(1 / 63)
    assert fused["q"]["w"] == pytest.approx(1 / 62)
    assert list(fused["q"]) == ["y", "x", "w", "z"]  # best first


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("ties", [False, True])
def test_rrf_random_matches_naive(seed, ties):
    rng = random.Random(seed)
    runs = [random_run(rng, ties=ties) for _ in range(rng.randint(1, 4))]
    k = rng.choice([0, 1, 60])
    weights = [rng.uniform(0.1, 2) for _ in runs] if seed % 2 else None
    fused = reciprocal_rank_fusion(runs, k=k, weights=weights)
    assert_run_close(fused, naive_rrf(runs, k=k, weights=weights))
    assert_best_first(fused)


def test_rrf_ties_broken_by_doc_id_and_inputs_untouched():
    run = {"q": {"b": 1.0, "a": 1.0, "c": 0.0}}
    snapshot = {"q": dict(run["q"])}
    fused = reciprocal_rank_fusion([run], k=0)
    assert fused["q"] == {"b": 1.0, "a": 0.5, "c": 1 / 3}
    assert list(fused["q"]) == ["b", "a", "c"]
    assert run == snapshot


def test_rrf_errors():
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion([])
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion({"q": {"d": 1.0}})  # a run, not a list of runs
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion([{"q": {"d": 1.0}}], weights=[1.0, 2.0])
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion([{"q": {"d": 1.0}}], k=-1)
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion([{"q": {"d": float("nan")}}])
    with pytest.raises(TextMatchError):
        reciprocal_rank_fusion([{"q": {"d": "high"}}])


# ---------------------------------------------------------------- normalization
@pytest.mark.parametrize("seed", range(5))
def test_normalize_random_matches_naive(seed):
    rng = random.Random(seed)
    run = random_run(rng, ties=seed % 2 == 1)
    run["const"] = {"a": 2.0, "b": 2.0}
    assert_run_close(
        normalize_scores(run, "minmax"), {q: naive_minmax(d) for q, d in run.items()}
    )
    assert_run_close(
        normalize_scores(run, "zscore"), {q: naive_zscore(d) for q, d in run.items()}
    )
    assert_run_close(normalize_scores(run, "none"), run)
    for q, docs in normalize_scores(run, "minmax").items():
        assert min(docs.values()) >= 0 and max(docs.values()) == 1.0
        if q != "const" and len(set(run[q].values())) > 1:
            assert min(docs.values()) == 0.0


def test_normalize_edge_cases():
    assert normalize_scores({"q": {}, "r": {"a": 5.0}}) == {"q": {}, "r": {"a": 1.0}}
    assert normalize_scores({"r": {"a": 5.0}}, "zscore") == {"r": {"a": 0.0}}
    with pytest.raises(TextMatchError):
        normalize_scores({"q": {"a": 1.0}}, "softmax")


# ---------------------------------------------------------------- weighted fusion
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("normalization", ["minmax", "zscore", "none"])
def test_weighted_random_matches_naive(seed, normalization):
    rng = random.Random(100 + seed)
    runs = [random_run(rng, ties=seed % 3 == 0) for _ in range(rng.randint(1, 4))]
    weights = [rng.uniform(-0.5, 2) for _ in runs]
    fused = weighted_fusion(runs, weights, normalization=normalization)
    assert_run_close(fused, naive_weighted(runs, weights, normalization))
    assert_best_first(fused)


def test_weighted_missing_doc_gets_zero_after_minmax():
    bm25 = {"q": {"a": 10.0, "b": 5.0, "c": 0.0}}
    dense = {"q": {"b": 0.9, "d": 0.7, "e": 0.5}}
    fused = weighted_fusion([bm25, dense], [0.5, 0.5])
    assert fused["q"]["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 0.0)
    assert fused["q"]["b"] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert fused["q"]["d"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.5)
    assert next(iter(fused["q"])) == "b"
    # a query only one run has: the other run contributes nothing
    assert weighted_fusion([bm25, {"other": {"a": 1.0}}], [1, 1])["q"] == {
        "a": 1.0,
        "b": 0.5,
        "c": 0.0,
    }


def test_weighted_errors_and_default_weights():
    run = {"q": {"a": 1.0, "b": 0.0}}
    assert weighted_fusion([run, run]) == {"q": {"a": 2.0, "b": 0.0}}
    with pytest.raises(TextMatchError):
        weighted_fusion([run], [1.0], normalization="rank")
    with pytest.raises(TextMatchError):
        weighted_fusion([run, run], [1.0])
    with pytest.raises(TextMatchError):
        weighted_fusion([run], [float("inf")])


# ---------------------------------------------------------------- agreement with the evaluator
def test_fused_order_agrees_with_the_evaluator():
    """Ties in a fused run are ordered as rank_run (the evaluator) orders them."""
    from textmatch.retrieval.metrics import rank_run

    rng = random.Random(7)
    runs = [random_run(rng, ties=True), random_run(rng, ties=True)]
    for fused in (reciprocal_rank_fusion(runs), weighted_fusion(runs, [0.5, 0.5])):
        assert {q: list(d) for q, d in fused.items()} == {q: rank_run(d) for q, d in fused.items()}


def test_fusion_end_to_end():
    """RRF of a lexical and a dense run agrees with the naive fusion."""
    lexical = {"q1": {"a": 5.0, "b": 1.0}, "q2": {"c": 2.0, "a": 1.0}}
    dense = {"q1": {"a": 0.1, "b": 0.9, "c": 0.3}, "q2": {"a": 0.8, "b": 0.2, "c": 0.1}}
    fused = reciprocal_rank_fusion([lexical, dense])
    assert_run_close(fused, naive_rrf([lexical, dense]))
    assert list(fused["q1"]) == ["b", "a", "c"]  # b: 1/62 + 1/61 > a: 1/61 + 1/63
