"""IR metrics with trec_eval semantics (nDCG with graded gains, MRR, recall, MAP, precision)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .ranking import rank_run

# ---------------------------------------------------------------------------
# Information-retrieval metrics (trec_eval / pytrec_eval semantics, as used by BEIR)
# ---------------------------------------------------------------------------
#
# Conventions shared by every function below, all taken from trec_eval (the C
# program that pytrec_eval wraps and that BEIR's ``EvaluateRetrieval`` calls):
#
# * A ranking is a sequence of doc ids, best first.  Docs that are not in the
#   qrels ("unjudged") are non-relevant: grade 0.
# * A doc is *relevant* when its grade is > 0 (trec_eval's default
#   ``relevance_level`` of 1 for integer grades).  Grades <= 0 are judged
#   non-relevant and contribute no gain.
# * The denominators of recall and MAP are the number of relevant docs in the
#   qrels, retrieved or not; the ideal DCG of nDCG is built from every judged
#   doc's grade, retrieved or not.
# * ``k`` larger than the ranking is fine: missing ranks count as non-relevant
#   (so precision@k still divides by k, as trec_eval's ``P_k`` does).
# * A query with no relevant docs scores 0 on every metric.

DEFAULT_K_VALUES: tuple[int, ...] = (1, 3, 5, 10, 100)
_HEADLINE_METRICS: tuple[tuple[str, int], ...] = (("ndcg", 10), ("mrr", 10), ("recall", 100), ("map", 100))
_METRIC_NAMES: tuple[str, ...] = ("ndcg", "mrr", "recall", "map", "precision")


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise TextMatchError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _grades(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int) -> list[int]:
    """Grades of the first ``k`` docs of a ranking (0 for unjudged); refuses duplicate ids, as trec_eval does."""
    k = _check_k(k)
    if len(set(ranked_ids)) != len(ranked_ids):
        counts: dict[str, int] = {}
        for doc_id in ranked_ids:
            counts[doc_id] = counts.get(doc_id, 0) + 1
        dupes = [doc_id for doc_id, n in counts.items() if n > 1]
        raise TextMatchError(f"ranking contains duplicate doc ids: {dupes[:5]}")
    return [qrels.get(doc_id, 0) for doc_id in ranked_ids[:k]]


def _ideal_gains(qrels: Mapping[str, int]) -> list[int]:
    """Positive grades of all judged docs, best first (the ideal ranking's gains)."""
    return sorted((g for g in qrels.values() if g > 0), reverse=True)


# The _*_from_grades helpers take the grades of the top (at least k) ranked docs, best first.


def _ndcg_from_grades(grades: Sequence[int], ideal: Sequence[int], k: int) -> float:
    # Summed rank by rank, in trec_eval's order (m_ndcg_cut.c), for bit-level agreement.
    dcg = 0.0
    for i, gain in enumerate(grades[:k]):
        if gain > 0:
            dcg += gain / math.log2(i + 2)
    idcg = 0.0
    for i, gain in enumerate(ideal[:k]):
        idcg += gain / math.log2(i + 2)
    return dcg / idcg if idcg > 0 else 0.0


def _mrr_from_grades(grades: Sequence[int], k: int) -> float:
    for i, gain in enumerate(grades[:k]):
        if gain > 0:
            return 1.0 / (i + 1)
    return 0.0


def _recall_from_grades(grades: Sequence[int], k: int, n_rel: int) -> float:
    return sum(1 for g in grades[:k] if g > 0) / n_rel if n_rel else 0.0


def _precision_from_grades(grades: Sequence[int], k: int) -> float:
    return sum(1 for g in grades[:k] if g > 0) / k


def _ap_from_grades(grades: Sequence[int], k: int, n_rel: int) -> float:
    if not n_rel:
        return 0.0
    hits = 0
    total = 0.0
    for i, gain in enumerate(grades[:k]):
        if gain > 0:
            hits += 1
            total += hits / (i + 1)
    return total / n_rel


def ndcg_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear (graded) gains, as trec_eval's ``ndcg_cut.k``.

    DCG@k = sum over ranks i = 1..k of rel_i / log2(i + 1), where rel_i is the
    qrels grade of the doc at rank i (unjudged docs and grades <= 0 give 0).
    The ideal DCG@k applies the same formula to all positive grades in the
    qrels sorted descending (judged docs that were not retrieved included).
    Returns 0.0 when the qrels have no positive grade.
    """
    return _ndcg_from_grades(_grades(ranked_ids, qrels, k), _ideal_gains(qrels), k)


def mrr_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first doc with grade > 0 among the top ``k``; 0.0 if there is none.

    (trec_eval's ``recip_rank`` has no cutoff; this is the MRR@k that BEIR
    reports, computed on the trec_eval ordering.)
    """
    return _mrr_from_grades(_grades(ranked_ids, qrels, k), k)


def recall_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 100) -> float:
    """Relevant docs (grade > 0) in the top ``k`` over all relevant docs in the qrels (trec_eval ``recall.k``).

    0.0 when the qrels have no relevant doc.
    """
    return _recall_from_grades(_grades(ranked_ids, qrels, k), k, len(_ideal_gains(qrels)))


def precision_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 10) -> float:
    """Relevant docs (grade > 0) in the top ``k``, divided by ``k`` (trec_eval ``P.k``).

    The denominator is ``k`` even when fewer than ``k`` docs were retrieved.
    """
    return _precision_from_grades(_grades(ranked_ids, qrels, k), k)


def average_precision_at_k(ranked_ids: Sequence[str], qrels: Mapping[str, int], k: int = 100) -> float:
    """Average precision cut at ``k``, as trec_eval's ``map_cut.k`` (BEIR's "MAP@k").

    Sum of precision@i over the ranks i <= k holding a relevant doc (grade > 0),
    divided by the number of relevant docs in the qrels -- not by min(k, R), and
    not by the relevant docs retrieved.  0.0 when the qrels have no relevant doc.
    """
    return _ap_from_grades(_grades(ranked_ids, qrels, k), k, len(_ideal_gains(qrels)))


def _metric_keys(k_values: Iterable[int]) -> list[tuple[str, int]]:
    """(metric, k) pairs: every metric at every k in ``k_values`` (in order), then any missing headline metric."""
    keys: list[tuple[str, int]] = []
    for k in k_values:
        k = _check_k(k)
        keys.extend((name, k) for name in _METRIC_NAMES if (name, k) not in keys)
    keys.extend(pair for pair in _HEADLINE_METRICS if pair not in keys)
    return keys


def _query_metrics(
    grades: Sequence[int], ideal: Sequence[int], keys: Sequence[tuple[str, int]]
) -> dict[str, float]:
    n_rel = len(ideal)
    values: dict[str, float] = {}
    for name, k in keys:
        if name == "ndcg":
            value = _ndcg_from_grades(grades, ideal, k)
        elif name == "mrr":
            value = _mrr_from_grades(grades, k)
        elif name == "recall":
            value = _recall_from_grades(grades, k, n_rel)
        elif name == "map":
            value = _ap_from_grades(grades, k, n_rel)
        else:
            value = _precision_from_grades(grades, k)
        values[f"{name}@{k}"] = value
    return values


def evaluate_retrieval(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    k_values: Sequence[int] = DEFAULT_K_VALUES,
    per_query: bool = False,
) -> dict[str, Any]:
    """Mean IR metrics of a run over a set of queries, with trec_eval semantics.

    ``run`` maps query id -> {doc id: score}; each query's docs are ordered with
    :func:`rank_run` (score descending, ties by doc id descending, as trec_eval).
    ``qrels`` maps query id -> {doc id: grade}.

    The mean is taken over the queries in ``qrels`` that have at least one doc
    with grade > 0.  A query in ``qrels`` but absent from ``run`` (or with an
    empty ranking) scores 0 on every metric and still counts in the mean, like
    ``trec_eval -c``; note that BEIR, through pytrec_eval, instead drops such
    queries from its average.  Queries only in ``run`` are ignored.

    Returns a dict with ``"ndcg@10"``, ``"mrr@10"``, ``"recall@100"`` and
    ``"map@100"`` (always present), ``ndcg@k``, ``mrr@k``, ``recall@k``,
    ``map@k`` and ``precision@k`` for every ``k`` in ``k_values``, and
    ``"n_queries"`` (the number of queries averaged).  With no query to
    average, every metric is 0.0 and ``n_queries`` is 0.  With
    ``per_query=True`` the dict also has ``"per_query"``: {query id: {metric:
    value}} for the same queries.
    """
    keys = _metric_keys(k_values)
    max_k = max(k for _, k in keys)
    per_q: dict[str, dict[str, float]] = {}
    for qid, judged in qrels.items():
        ideal = _ideal_gains(judged)
        if not ideal:
            continue
        ranked = rank_run(run.get(qid, {}))
        grades = [judged.get(doc_id, 0) for doc_id in ranked[:max_k]]
        per_q[qid] = _query_metrics(grades, ideal, keys)
    n = len(per_q)
    result: dict[str, Any] = {}
    for name, k in keys:
        key = f"{name}@{k}"
        result[key] = math.fsum(values[key] for values in per_q.values()) / n if n else 0.0
    result["n_queries"] = n
    if per_query:
        result["per_query"] = per_q
    return result
