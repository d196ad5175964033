"""Confidence intervals and paired significance tests over per-query IR metrics.

Everything here works on per-query values: the ``"per_query"`` dict that
``evaluate_retrieval(..., per_query=True)`` returns, or plain sequences of
floats, one per query.  The unit of resampling is the query, as in IR practice.

* :func:`bootstrap_ci` -- percentile bootstrap confidence interval of a mean.
* :func:`paired_test` -- two-sided paired tests of "run A and run B have the
  same mean": the randomization (sign-flip) test recommended by Smucker, Allan
  & Carterette (CIKM 2007, "A comparison of statistical significance tests for
  information retrieval evaluation"), the paired bootstrap test, and the paired
  t-test.
* :func:`holm_bonferroni` -- Holm (1979) step-down adjusted p-values, for a
  table that compares several runs with one baseline.
* :func:`compare_runs`, :func:`metric_with_ci` -- the above applied to the
  ``per_query`` dicts of :func:`textmatch.retrieval.metrics.evaluate_retrieval`.

Only numpy is needed (the t distribution's CDF is computed here, through the
regularized incomplete beta function).  Resampling is seeded
(``numpy.random.default_rng(seed)``), so results are reproducible, and is
vectorised in chunks of at most ``_CHUNK_ELEMENTS`` draws, so memory stays
bounded whatever ``n_resamples`` is; the chunk size does not change the result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import TextMatchError

DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")
METHODS: tuple[str, ...] = ("randomization", "bootstrap", "ttest")
_CHUNK_ELEMENTS = 1 << 20  # draws per chunk: an (rows, n) int64 matrix of 8 MiB


# --------------------------------------------------------------------------- input checks


def _values(values: Any, name: str = "values") -> np.ndarray:
    """``values`` as a 1-D float64 array, refusing empty, non-numeric and non-finite input."""
    if isinstance(values, (str, bytes)):
        raise TextMatchError(f"{name} must be a sequence of numbers (one per query), got a string")
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TextMatchError(
            f"{name} must be a sequence of numbers (one per query); pass e.g. the per-query values of one metric"
        ) from None
    if arr.ndim != 1:
        raise TextMatchError(f"{name} must be one-dimensional (one number per query), got shape {arr.shape}")
    if arr.size == 0:
        raise TextMatchError(f"{name} is empty; pass at least one per-query value")
    bad = ~np.isfinite(arr)
    if bad.any():
        where = np.flatnonzero(bad)[:5].tolist()
        raise TextMatchError(
            f"{name} has {int(bad.sum())} NaN or infinite value(s) (positions {where}); "
            "every per-query value must be a finite number: fix or drop those queries in both runs"
        )
    return arr


def _check_resamples(n_resamples: Any) -> int:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise TextMatchError(f"n_resamples must be an integer >= 1 (10000 is usual), got {n_resamples!r}")
    return int(n_resamples)


def _check_confidence(confidence: Any) -> float:
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float, np.floating, np.integer))
        or not 0 < confidence < 1
    ):
        raise TextMatchError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
    return float(confidence)


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _values(a, "a"), _values(b, "b")
    if x.size != y.size:
        raise TextMatchError(
            f"a and b have different lengths ({x.size} vs {y.size}); a paired test needs one value per query "
            "from each run, for the same queries in the same order"
        )
    return x, y


def _chunks(n_resamples: int, n: int):
    """Row counts whose sum is ``n_resamples``, each chunk holding at most ~_CHUNK_ELEMENTS draws."""
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        step = min(rows, n_resamples - done)
        yield step
        done += step


def _bootstrap_means(x: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples of ``x`` drawn with replacement.

    Row r uses the r-th block of ``n`` draws of ``rng.integers(0, n)``: the same
    values as ``rng.integers(0, n, size=n)`` called once per resample.
    """
    n = x.size
    out = np.empty(n_resamples, dtype=np.float64)
    start = 0
    for rows in _chunks(n_resamples, n):
        idx = rng.integers(0, n, size=(rows, n))
        out[start : start + rows] = x[idx].mean(axis=1)
        start += rows
    return out


def _resample_p(stats: np.ndarray, observed: float, scale: float) -> tuple[float, int]:
    """(count + 1) / (R + 1) with count = #{|stat| >= |observed|}, allowing for float rounding."""
    tol = 1e-9 * scale  # sums of the same terms in another order may differ in the last bits
    count = int(np.count_nonzero(np.abs(stats) >= abs(observed) - tol))
    return (count + 1) / (stats.size + 1), count


# --------------------------------------------------------------------------- t distribution


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom: I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isinf(t):
        return 0.0
    return min(1.0, max(0.0, _betainc(df / 2.0, 0.5, df / (df + t * t))))


# --------------------------------------------------------------------------- public API


def bootstrap_ci(
    values: Sequence[float], n_resamples: int = 10000, confidence: float = 0.95, seed: int | None = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of the mean of per-query values.

    With x_1..x_n the per-query values, draw ``n_resamples`` resamples
    x*_1..x*_n of n queries with replacement, compute each resample's mean
    m*_r = (1/n) sum_i x*_i, and return

        (mean, low, high) = ( (1/n) sum_i x_i,
                              quantile(m*, alpha/2),
                              quantile(m*, 1 - alpha/2) ),   alpha = 1 - confidence

    (Efron & Tibshirani 1993, percentile interval; quantiles with numpy's default
    linear interpolation).  Resamples are drawn by
    ``numpy.random.default_rng(seed)``: resample r is the r-th call of
    ``rng.integers(0, n, size=n)``.  With one query the interval is that value.
    """
    x = _values(values)
    n_resamples = _check_resamples(n_resamples)
    alpha = 1.0 - _check_confidence(confidence)
    means = _bootstrap_means(x, n_resamples, np.random.default_rng(seed))
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(np.mean(x)), float(low), float(high)


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    method: str = "randomization",
    n_resamples: int = 10000,
    seed: int | None = 0,
) -> dict[str, Any]:
    """Two-sided paired significance test of H0: runs A and B have the same mean.

    ``a[i]`` and ``b[i]`` are the two runs' values on query i.  With the
    differences d_i = a_i - b_i and delta = (1/n) sum_i d_i = mean_a - mean_b:

    * ``"randomization"`` (default; Fisher's paired permutation test as used by
      Smucker, Allan & Carterette, CIKM 2007): under H0 the labels A/B of each
      query are exchangeable, so each d_i may flip sign.  Draw ``n_resamples``
      sign vectors s in {-1, +1}^n uniformly, compute
      T*_r = |(1/n) sum_i s_i d_i| and
      p = (#{r : T*_r >= |delta|} + 1) / (n_resamples + 1).
      Sign s_i of resample r is 1 - 2 * u, u the draws of
      ``rng.integers(0, 2, size=n)`` (r-th call).
    * ``"bootstrap"`` (paired bootstrap, shift method, Efron & Tibshirani 1993):
      resample the centred differences d_i - delta with replacement (n at a
      time, same draws as :func:`bootstrap_ci`), compute the resample means
      m*_r and p = (#{r : |m*_r| >= |delta|} + 1) / (n_resamples + 1).
    * ``"ttest"`` (paired Student t-test): t = delta / (s_d / sqrt(n)), with
      s_d the sample standard deviation of d (ddof = 1), df = n - 1, and
      p = P(|T_df| >= |t|) = I_{df/(df+t^2)}(df/2, 1/2) (regularized incomplete
      beta).  Needs n >= 2.  All d_i equal: p = 1 if they are 0, else p = 0
      (t is infinite).

    The (count + 1) / (R + 1) correction makes the Monte-Carlo p-values valid
    (never 0; Phipson & Smyth 2010).  Identical runs give delta = 0 and p = 1
    under every method.

    Returns {"mean_a", "mean_b", "delta", "p_value", "method", "n",
    "statistic"} (statistic: delta for the resampling tests, t for the t-test),
    plus "n_resamples" for the resampling tests and "df" for the t-test.
    """
    if method not in METHODS:
        raise TextMatchError(f"unknown method {method!r}; use one of {list(METHODS)}")
    x, y = _paired(a, b)
    d = x - y
    n = int(d.size)
    delta = float(np.mean(d))
    result: dict[str, Any] = {
        "mean_a": float(np.mean(x)),
        "mean_b": float(np.mean(y)),
        "delta": delta,
        "method": method,
        "n": n,
    }
    if method == "ttest":
        if n < 2:
            raise TextMatchError("the t-test needs at least 2 queries; use method='randomization' or more queries")
        sd = float(np.std(d, ddof=1))
        if sd == 0.0:
            t = 0.0 if delta == 0.0 else math.copysign(math.inf, delta)
            p = 1.0 if delta == 0.0 else 0.0
        else:
            t = delta / (sd / math.sqrt(n))
            p = _t_two_sided_p(t, n - 1)
        result.update(p_value=p, statistic=t, df=n - 1)
        return result

    n_resamples = _check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    scale = float(np.mean(np.abs(d)))
    if method == "randomization":
        stats = np.empty(n_resamples, dtype=np.float64)
        start = 0
        for rows in _chunks(n_resamples, n):
            signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, n))
            stats[start : start + rows] = (signs @ d) / n
            start += rows
    else:
        stats = _bootstrap_means(d - delta, n_resamples, rng)
    p, _ = _resample_p(stats, delta, scale)
    result.update(p_value=p, statistic=delta, n_resamples=n_resamples)
    return result


def holm_bonferroni(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in the order given.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted
    values are

        p~_(i) = max_{j <= i} min(1, (m - j + 1) * p_(j)),

    so hypothesis i is rejected at family-wise error rate alpha exactly when
    p~_i <= alpha (the procedure that rejects H_(1)..H_(i) while
    p_(j) <= alpha / (m - j + 1)).  Use it when a table compares several runs
    with one baseline: adjust the p-values of all the comparisons of a metric
    together and mark those with adjusted p <= alpha.  An empty list gives [].
    """
    if isinstance(p_values, (str, bytes)):
        raise TextMatchError("p_values must be a sequence of numbers in [0, 1], got a string")
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError):
        raise TextMatchError("p_values must be a sequence of numbers in [0, 1]") from None
    if p.ndim != 1:
        raise TextMatchError(f"p_values must be one-dimensional, got shape {p.shape}")
    if p.size == 0:
        return []
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise TextMatchError(f"p_values must all be numbers in [0, 1] (no NaN), got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return [float(v) for v in out]


def _per_query_dict(per_query: Any, name: str) -> Mapping[str, Mapping[str, float]]:
    """Accept either the ``per_query`` dict or the whole ``evaluate_retrieval`` result holding it."""
    if not isinstance(per_query, Mapping):
        raise TextMatchError(
            f"{name} must be the 'per_query' dict of evaluate_retrieval(..., per_query=True), "
            f"got {type(per_query).__name__}"
        )
    if "n_queries" in per_query and not isinstance(per_query.get("n_queries"), Mapping):
        if isinstance(per_query.get("per_query"), Mapping):
            return per_query["per_query"]
        raise TextMatchError(
            f"{name} is an evaluate_retrieval result without per-query values; call "
            "evaluate_retrieval(run, qrels, per_query=True) and pass its result (or its 'per_query')"
        )
    if not per_query:
        raise TextMatchError(
            f"{name} has no queries; evaluate_retrieval found no query with a relevant doc in the qrels"
        )
    return per_query


def _metric_column(per_query: Mapping[str, Mapping[str, float]], qids: Sequence[str], metric: str, name: str) -> np.ndarray:
    values = []
    for qid in qids:
        row = per_query[qid]
        if not isinstance(row, Mapping) or metric not in row:
            have = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise TextMatchError(
                f"{name}: query {qid!r} has no {metric!r} (it has {have}); evaluate with a k_values that "
                f"includes that cut-off, e.g. evaluate_retrieval(run, qrels, k_values=(10, 100), per_query=True)"
            )
        values.append(row[metric])
    return _values(values, f"{name} {metric!r}")


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(metrics)
    if not metrics or not all(isinstance(m, str) for m in metrics):
        raise TextMatchError(f"metrics must be a non-empty sequence of metric names such as 'ndcg@10', got {metrics!r}")
    return metrics


def metric_with_ci(
    per_query: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> dict[str, dict[str, float]]:
    """Mean and percentile bootstrap CI of each metric over the queries of one run.

    ``per_query``: {query id: {metric: value}} as in
    ``evaluate_retrieval(..., per_query=True)["per_query"]`` (the whole result
    dict is accepted too).  Returns {metric: {"mean", "ci_low", "ci_high"}},
    each from :func:`bootstrap_ci` over the queries (same seed for every metric).
    """
    pq = _per_query_dict(per_query, "per_query")
    qids = list(pq)
    out: dict[str, dict[str, float]] = {}
    for metric in _check_metrics(metrics):
        mean, low, high = bootstrap_ci(_metric_column(pq, qids, metric, "per_query"), n_resamples, confidence, seed)
        out[metric] = {"mean": mean, "ci_low": low, "ci_high": high}
    return out


def compare_runs(
    per_query_a: Mapping[str, Mapping[str, float]],
    per_query_b: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = DEFAULT_METRICS,
    method: str = "randomization",
    n_resamples: int = 10000,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> dict[str, dict[str, Any]]:
    """Paired comparison of two runs (A vs B) on the same queries, metric by metric.

    ``per_query_a``, ``per_query_b``: the ``"per_query"`` dicts of
    ``evaluate_retrieval(..., per_query=True)`` for each run (or the whole
    result dicts), evaluated on the same qrels.  The queries are aligned by id;
    differing query sets are an error.  For each metric returns the
    :func:`paired_test` result (``delta`` = mean_a - mean_b) plus
    ``"ci_a"`` and ``"ci_b"``: each run's (low, high) bootstrap interval of
    its mean (:func:`bootstrap_ci`, ``confidence``).  To compare several runs
    with one baseline, adjust the p-values of each metric together with
    :func:`holm_bonferroni`.
    """
    if method not in METHODS:
        raise TextMatchError(f"unknown method {method!r}; use one of {list(METHODS)}")
    pa, pb = _per_query_dict(per_query_a, "per_query_a"), _per_query_dict(per_query_b, "per_query_b")
    only_a = [q for q in pa if q not in pb]
    only_b = [q for q in pb if q not in pa]
    if only_a or only_b:
        raise TextMatchError(
            f"the runs were evaluated on different queries: {len(only_a)} only in A (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in B (e.g. {only_b[:3]}); a paired test needs the same queries: evaluate both "
            "runs with evaluate_retrieval against the same qrels (it scores a query missing from a run as 0)"
        )
    metrics = _check_metrics(metrics)
    _check_confidence(confidence)
    _check_resamples(n_resamples)
    qids = list(pa)
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        xa = _metric_column(pa, qids, metric, "per_query_a")
        xb = _metric_column(pb, qids, metric, "per_query_b")
        res = paired_test(xa, xb, method=method, n_resamples=n_resamples, seed=seed)
        _, lo_a, hi_a = bootstrap_ci(xa, n_resamples, confidence, seed)
        _, lo_b, hi_b = bootstrap_ci(xb, n_resamples, confidence, seed)
        res["ci_a"] = (lo_a, hi_a)
        res["ci_b"] = (lo_b, hi_b)
        out[metric] = res
    return out
