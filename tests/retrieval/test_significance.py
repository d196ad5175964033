"""`textmatch.retrieval.significance`: each function against a naive implementation written here."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

import textmatch.retrieval.significance as sig
from textmatch import TextMatchError
from textmatch.retrieval.metrics import evaluate_retrieval
from textmatch.retrieval.significance import (
    bootstrap_ci,
    compare_runs,
    holm_bonferroni,
    metric_with_ci,
    paired_test,
)


def _scores(n: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated per-query metric vectors in [0, 1], B shifted by ``shift`` on average."""
    rng = np.random.default_rng(seed)
    a = rng.beta(2, 3, size=n)
    b = np.clip(a + shift + rng.normal(0, 0.1, size=n), 0, 1)
    return a, b


# --------------------------------------------------------------------------- naive references


def naive_bootstrap_means(values, n_resamples, seed):
    rng = np.random.default_rng(seed)
    n = len(values)
    out = []
    for _ in range(n_resamples):
        idx = rng.integers(0, n, size=n)
        out.append(sum(values[i] for i in idx) / n)
    return np.array(out)


def naive_randomization_p(a, b, n_resamples, seed):
    rng = np.random.default_rng(seed)
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    observed = abs(sum(d) / n)
    count = 0
    for _ in range(n_resamples):
        flips = rng.integers(0, 2, size=n)
        stat = abs(sum(di * (1 - 2 * int(f)) for di, f in zip(d, flips)) / n)
        count += stat >= observed - 1e-12
    return (count + 1) / (n_resamples + 1)


def exact_randomization_p(a, b):
    """All 2^n sign flips: the exact p-value the Monte-Carlo test estimates."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    observed = abs(sum(d) / n)
    count = 0
    for signs in itertools.product((1, -1), repeat=n):
        count += abs(sum(s * di for s, di in zip(signs, d)) / n) >= observed - 1e-12
    return count / 2**n


def naive_holm(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# --------------------------------------------------------------------------- bootstrap_ci


def test_bootstrap_ci_equals_a_naive_loop_with_the_same_seed():
    values = _scores(25, seed=1)[0]
    means = naive_bootstrap_means(list(values), 2000, seed=7)
    mean, low, high = bootstrap_ci(values, n_resamples=2000, confidence=0.9, seed=7)
    assert mean == pytest.approx(float(np.mean(values)), abs=1e-15)
    assert low == pytest.approx(float(np.quantile(means, 0.05)), abs=1e-12)
    assert high == pytest.approx(float(np.quantile(means, 0.95)), abs=1e-12)


def test_bootstrap_ci_does_not_depend_on_the_chunk_size(monkeypatch):
    values = _scores(30, seed=2)[0]
    whole = bootstrap_ci(values, n_resamples=3001, seed=3)
    monkeypatch.setattr(sig, "_CHUNK_ELEMENTS", 7 * 30)  # 7 resamples per chunk, last one partial
    assert bootstrap_ci(values, n_resamples=3001, seed=3) == whole
    monkeypatch.setattr(sig, "_CHUNK_ELEMENTS", 1)  # fewer elements than one resample: one row at a time
    assert bootstrap_ci(values, n_resamples=3001, seed=3) == pytest.approx(whole, abs=1e-12)


def test_bootstrap_ci_contains_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 80, 320, 1280):
        values = rng.beta(2, 3, size=n)
        mean, low, high = bootstrap_ci(values, n_resamples=2000)
        assert low < mean < high
        widths.append(high - low)
    assert widths == sorted(widths, reverse=True)
    # width ~ 2 * 1.96 * sd / sqrt(n); beta(2, 3) has sd = 0.2
    assert widths[-1] == pytest.approx(2 * 1.96 * 0.2 / math.sqrt(1280), rel=0.15)
    # higher confidence, wider interval
    _, lo90, hi90 = bootstrap_ci(values, n_resamples=2000, confidence=0.9)
    _, lo99, hi99 = bootstrap_ci(values, n_resamples=2000, confidence=0.99)
    assert lo99 < lo90 and hi90 < hi99


def test_bootstrap_ci_coverage_is_near_nominal():
    # 200 samples of size 40 from a known distribution: the 90% interval covers the true mean
    # in about 90% of them (binomial sd 2.1%; percentile intervals run slightly narrow).
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        _, low, high = bootstrap_ci(rng.beta(2, 3, size=40), n_resamples=500, confidence=0.9, seed=None)
        covered += low <= 0.4 <= high
    assert 0.80 <= covered / 200 <= 0.97


def test_bootstrap_ci_degenerate_inputs():
    assert bootstrap_ci([0.3]) == (0.3, 0.3, 0.3)
    mean, low, high = bootstrap_ci([0.5] * 10, n_resamples=50)
    assert mean == low == high == 0.5


# --------------------------------------------------------------------------- paired_test


def test_randomization_equals_a_naive_loop_with_the_same_seed():
    a, b = _scores(15, seed=3, shift=-0.05)
    res = paired_test(a, b, n_resamples=3000, seed=11)
    assert res["p_value"] == pytest.approx(naive_randomization_p(list(a), list(b), 3000, 11), abs=1e-15)


@pytest.mark.parametrize("shift", [0.0, -0.03, -0.08])
def test_randomization_is_close_to_the_exact_enumeration(shift):
    a, b = _scores(12, seed=4, shift=shift)
    exact = exact_randomization_p(list(a), list(b))  # 4096 sign vectors
    res = paired_test(a, b, method="randomization", n_resamples=20000, seed=0)
    # Monte-Carlo standard error <= sqrt(0.25 / 20000) = 0.0035
    assert res["p_value"] == pytest.approx(exact, abs=0.015)
    assert res["method"] == "randomization" and res["n"] == 12 and res["n_resamples"] == 20000


def test_bootstrap_test_equals_a_naive_loop():
    a, b = _scores(20, seed=6, shift=-0.04)
    d = list(a - b)
    delta = sum(d) / len(d)
    means = naive_bootstrap_means([x - delta for x in d], 2000, seed=9)
    want = (int(np.sum(np.abs(means) >= abs(delta) - 1e-12)) + 1) / 2001
    res = paired_test(a, b, method="bootstrap", n_resamples=2000, seed=9)
    assert res["p_value"] == pytest.approx(want, abs=1e-15)
    # and the bootstrap test agrees roughly with the randomization one on the same data
    rand = paired_test(a, b, n_resamples=5000)
    assert abs(res["p_value"] - rand["p_value"]) < 0.05


def test_ttest_against_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy (optional reference for the t-test) is not installed")
    for seed, n, shift in [(0, 5, 0.0), (1, 30, -0.02), (2, 300, -0.01), (3, 3000, 0.003), (4, 2, 0.1)]:
        a, b = _scores(n, seed=seed, shift=shift)
        ref = stats.ttest_rel(a, b)
        res = paired_test(a, b, method="ttest")
        assert res["statistic"] == pytest.approx(float(ref.statistic), rel=1e-10)
        assert res["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)
        assert res["df"] == n - 1


@pytest.mark.parametrize(
    "d, df, p_of_t",
    [
        # closed-form two-sided tails of Student's t for df = 1, 2, 3
        ([1.0, 3.0], 1, lambda t: 1 - 2 / math.pi * math.atan(abs(t))),
        ([0.5, 1.0, -0.25], 2, lambda t: 1 - abs(t) / math.sqrt(2 + t * t)),
        (
            [1.0, 2.0, 3.0, 4.0],
            3,
            lambda t: 1
            - 2 / math.pi * (abs(t) / math.sqrt(3) / (1 + t * t / 3) + math.atan(abs(t) / math.sqrt(3))),
        ),
    ],
)
def test_ttest_against_hand_computed_values(d, df, p_of_t):
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    res = paired_test(d, [0.0] * n, method="ttest")
    assert res["df"] == df
    assert res["statistic"] == pytest.approx(t, rel=1e-12)
    assert res["p_value"] == pytest.approx(p_of_t(t), rel=1e-10)
    if df == 3:  # d = 1..4: t = 2.5 / (sqrt(5/3) / 2) = sqrt(15)
        assert t == pytest.approx(math.sqrt(15))


def test_ttest_constant_differences():
    res = paired_test([0.5, 0.75, 1.0], [0.25, 0.5, 0.75], method="ttest")  # d = 0.25 exactly, sd = 0
    assert res["p_value"] == 0.0 and res["statistic"] == math.inf
    # (0.2 - 0.1, 0.4 - 0.3, ... differ in the last bits: a huge finite t, p ~ 0)
    assert paired_test([0.2, 0.4, 0.6], [0.1, 0.3, 0.5], method="ttest")["p_value"] < 1e-20
    res = paired_test([0.2, 0.4], [0.2, 0.4], method="ttest")
    assert res["p_value"] == 1.0 and res["statistic"] == 0.0


@pytest.mark.parametrize("method", ["randomization", "bootstrap", "ttest"])
def test_identical_runs_give_p_one(method):
    a = _scores(40, seed=7)[0]
    res = paired_test(a, a.copy(), method=method, n_resamples=500)
    assert res["p_value"] == 1.0 and res["delta"] == 0.0
    assert res["mean_a"] == res["mean_b"]


@pytest.mark.parametrize("method", ["randomization", "bootstrap", "ttest"])
def test_clearly_better_run_gives_small_p(method):
    a, b = _scores(100, seed=8, shift=-0.1)  # A better on almost every query
    res = paired_test(a, b, method=method, n_resamples=2000)
    assert res["delta"] > 0.05
    assert res["delta"] == pytest.approx(res["mean_a"] - res["mean_b"], abs=1e-12)
    assert res["p_value"] < 0.01
    if method != "ttest":
        assert res["p_value"] == pytest.approx(1 / 2001)  # no resample as extreme: the +1 floor
    # the direction of the comparison does not change a two-sided p-value
    swapped = paired_test(b, a, method=method, n_resamples=2000)
    assert swapped["delta"] == pytest.approx(-res["delta"])
    assert swapped["p_value"] == pytest.approx(res["p_value"])


def test_no_difference_gives_large_p():
    a, b = _scores(60, seed=9, shift=0.0)
    for method in ("randomization", "bootstrap", "ttest"):
        assert paired_test(a, b, method=method, n_resamples=2000)["p_value"] > 0.1


def test_type_i_error_rate_is_near_nominal():
    # Under H0 (exchangeable pairs) p <= 0.05 should happen about 5% of the time.
    rng = np.random.default_rng(10)
    hits = {"randomization": 0, "ttest": 0}
    for _ in range(150):
        a = rng.beta(2, 3, size=30)
        b = rng.beta(2, 3, size=30)
        for method in hits:
            hits[method] += paired_test(a, b, method=method, n_resamples=400, seed=None)["p_value"] <= 0.05
    for count in hits.values():
        assert count / 150 <= 0.12


def test_paired_test_does_not_depend_on_the_chunk_size(monkeypatch):
    a, b = _scores(20, seed=12, shift=-0.03)
    whole = {m: paired_test(a, b, method=m, n_resamples=999)["p_value"] for m in ("randomization", "bootstrap")}
    monkeypatch.setattr(sig, "_CHUNK_ELEMENTS", 13 * 20)
    for m, p in whole.items():
        assert paired_test(a, b, method=m, n_resamples=999)["p_value"] == p


# --------------------------------------------------------------------------- holm_bonferroni


def test_holm_against_a_naive_loop():
    rng = random.Random(0)
    for m in (1, 2, 5, 13):
        p = [rng.random() ** 3 for _ in range(m)]
        assert holm_bonferroni(p) == pytest.approx(naive_holm(p), abs=1e-15)


def test_holm_hand_example():
    # sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
    assert holm_bonferroni([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm_bonferroni([0.04, 0.03]) == pytest.approx([0.06, 0.06])  # monotone: 0.04 < 0.06 is raised
    assert holm_bonferroni([0.4, 0.6, 0.7]) == pytest.approx([1.0, 1.0, 1.0])  # capped at 1
    assert holm_bonferroni([]) == []
    assert holm_bonferroni(np.array([0.01])) == [0.01]


def test_holm_bad_input():
    for bad in ([0.1, float("nan")], [1.5], [-0.1], ["x"], "0.1"):
        with pytest.raises(TextMatchError, match="p_values"):
            holm_bonferroni(bad)


# --------------------------------------------------------------------------- compare_runs / metric_with_ci


def _runs(seed: int = 0):
    """Two runs on the same 60 queries: B usually ranks the relevant doc first, A buries it."""
    rng = random.Random(seed)
    qrels, run_a, run_b = {}, {}, {}
    for q in range(60):
        docs = [f"d{i}" for i in range(20)]
        rel = rng.sample(docs, 2)
        qrels[f"q{q}"] = {rel[0]: 2, rel[1]: 1}
        scores = {d: rng.random() for d in docs}
        run_a[f"q{q}"] = scores
        better = dict(scores)
        if rng.random() < 0.8:
            better[rel[0]] = 2.0
        run_b[f"q{q}"] = better
    ev_a = evaluate_retrieval(run_a, qrels, k_values=(10, 100), per_query=True)
    ev_b = evaluate_retrieval(run_b, qrels, k_values=(10, 100), per_query=True)
    return ev_a, ev_b


def test_compare_runs_matches_the_functions_it_combines():
    ev_a, ev_b = _runs()
    # B's query order differs from A's: alignment is by id
    pq_b = dict(reversed(list(ev_b["per_query"].items())))
    out = compare_runs(ev_a["per_query"], pq_b, n_resamples=2000)
    assert set(out) == {"ndcg@10", "recall@100", "mrr@10"}
    qids = list(ev_a["per_query"])
    for metric, res in out.items():
        xa = [ev_a["per_query"][q][metric] for q in qids]
        xb = [ev_b["per_query"][q][metric] for q in qids]
        want = paired_test(xa, xb, n_resamples=2000)
        for key in ("mean_a", "mean_b", "delta", "p_value", "n", "method"):
            assert res[key] == want[key], (metric, key)
        assert res["mean_a"] == pytest.approx(ev_a[metric]) and res["mean_b"] == pytest.approx(ev_b[metric])
        assert res["ci_a"] == pytest.approx(bootstrap_ci(xa, 2000)[1:])
        assert res["ci_b"] == pytest.approx(bootstrap_ci(xb, 2000)[1:])
    assert out["ndcg@10"]["delta"] < 0 and out["ndcg@10"]["p_value"] < 0.01
    assert out["recall@100"]["delta"] == 0 and out["recall@100"]["p_value"] == 1.0  # all 20 docs retrieved
    # the whole evaluate_retrieval result is accepted as well, and other methods pass through
    again = compare_runs(ev_a, ev_b, metrics=["mrr@10"], method="ttest")
    assert again["mrr@10"]["method"] == "ttest" and again["mrr@10"]["p_value"] < 0.01


def test_metric_with_ci():
    ev_a, _ = _runs()
    out = metric_with_ci(ev_a["per_query"], metrics=("ndcg@10", "map@100"), n_resamples=1000)
    assert set(out) == {"ndcg@10", "map@100"}
    for metric, row in out.items():
        assert set(row) == {"mean", "ci_low", "ci_high"}
        assert row["mean"] == pytest.approx(ev_a[metric])
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        values = [v[metric] for v in ev_a["per_query"].values()]
        assert (row["mean"], row["ci_low"], row["ci_high"]) == bootstrap_ci(values, 1000)
    assert metric_with_ci(ev_a, metrics="ndcg@10", n_resamples=100).keys() == {"ndcg@10"}


def test_compare_runs_errors():
    ev_a, ev_b = _runs()
    pq_b = dict(ev_b["per_query"])
    del pq_b["q3"]
    pq_b["zz"] = pq_b["q4"]
    with pytest.raises(TextMatchError, match=r"different queries: 1 only in A \(e.g. \['q3'\]\), 1 only in B.*same qrels"):
        compare_runs(ev_a["per_query"], pq_b)
    with pytest.raises(TextMatchError, match="has no 'ndcg@5'.*k_values"):
        compare_runs(ev_a, ev_b, metrics=("ndcg@5",))
    with pytest.raises(TextMatchError, match="per_query=True"):
        compare_runs(evaluate_retrieval({}, {"q": {"a": 1}}), ev_b)
    with pytest.raises(TextMatchError, match="no queries"):
        metric_with_ci({})
    with pytest.raises(TextMatchError, match="unknown method"):
        compare_runs(ev_a, ev_b, method="wilcoxon")
    with pytest.raises(TextMatchError, match="metrics"):
        metric_with_ci(ev_a, metrics=())
    bad = {q: dict(v) for q, v in ev_a["per_query"].items()}
    bad["q0"]["ndcg@10"] = float("nan")
    with pytest.raises(TextMatchError, match="NaN"):
        metric_with_ci(bad)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bootstrap_ci([]), "empty"),
        (lambda: bootstrap_ci([0.1, float("nan")]), "NaN"),
        (lambda: bootstrap_ci([0.1, float("inf")]), "infinite"),
        (lambda: bootstrap_ci([[0.1, 0.2]]), "one-dimensional"),
        (lambda: bootstrap_ci(["a"]), "sequence of numbers"),
        (lambda: bootstrap_ci("0.5"), "string"),
        (lambda: bootstrap_ci([0.1], confidence=1.0), "confidence"),
        (lambda: bootstrap_ci([0.1], confidence=0), "confidence"),
        (lambda: bootstrap_ci([0.1], confidence=95), "strictly between 0 and 1"),
        (lambda: bootstrap_ci([0.1], n_resamples=0), "n_resamples"),
        (lambda: bootstrap_ci([0.1], n_resamples=10.5), "n_resamples"),
        (lambda: bootstrap_ci([0.1], n_resamples=True), "n_resamples"),
        (lambda: paired_test([0.1, 0.2], [0.1]), "different lengths"),
        (lambda: paired_test([], []), "empty"),
        (lambda: paired_test([0.1, float("nan")], [0.1, 0.2]), "NaN"),
        (lambda: paired_test([0.1], [0.2], method="wilcoxon"), r"unknown method.*randomization"),
        (lambda: paired_test([0.1], [0.2], n_resamples=0), "n_resamples"),
        (lambda: paired_test([0.1], [0.2], method="ttest"), "at least 2 queries"),
    ],
)
def test_bad_input_is_a_textmatch_error(call, match):
    with pytest.raises(TextMatchError, match=match):
        call()
