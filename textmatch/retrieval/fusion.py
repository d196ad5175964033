"""Rank fusion of retrieval runs (hybrid lexical + dense search), as pure functions.

A *run* is `{query_id: {doc_id: score}}`, higher score = better (the TREC / ranx / pytrec_eval
layout). Within a query, documents are ranked by `textmatch.retrieval.ranking`'s one rule
(score descending, ties by doc id descending, scores compared as float32: trec_eval's), so
ranks and fusion agree with the evaluator and with every search path. Ranks start at 1.
Every function returns a new run and leaves its inputs untouched; the output lists each
query's documents best first.

Functions:

* `reciprocal_rank_fusion(runs, k=60, weights=None)`  (Cormack et al. 2009)
* `normalize_scores(run, method="minmax" | "zscore" | "none")`
* `weighted_fusion(runs, weights, normalization="minmax")`  (CombSUM over normalized scores)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .ranking import ranked

Run = dict[str, dict[str, float]]

__all__ = [
    "Run",
    "normalize_scores",
    "reciprocal_rank_fusion",
    "weighted_fusion",
]

_NORMALIZATIONS = ("minmax", "zscore", "none")


def _check_run(run: Any, what: str) -> None:
    if not isinstance(run, Mapping):
        raise TextMatchError(
            f"{what} must be a dict {{query_id: {{doc_id: score}}}}, got {type(run).__name__}"
        )
    for qid, docs in run.items():
        if not isinstance(docs, Mapping):
            raise TextMatchError(
                f"{what}[{qid!r}] must be a dict {{doc_id: score}}, got {type(docs).__name__}"
            )
        for did, score in docs.items():
            if isinstance(score, bool) or not isinstance(
                score, (int, float, np.integer, np.floating)
            ):
                raise TextMatchError(
                    f"{what}[{qid!r}][{did!r}] is {score!r}; scores must be numbers"
                )
            if not math.isfinite(score):
                raise TextMatchError(
                    f"{what}[{qid!r}][{did!r}] is {score}; scores must be finite"
                )


def _check_runs(runs: Any, weights: Any, what: str) -> list[float]:
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence):
        raise TextMatchError(f"{what}: pass a list of runs, e.g. [bm25_run, dense_run]")
    if not runs:
        raise TextMatchError(f"{what}: no runs given; pass at least one")
    for i, run in enumerate(runs):
        _check_run(run, f"runs[{i}]")
    if weights is None:
        return [1.0] * len(runs)
    weights = list(weights)
    if len(weights) != len(runs):
        raise TextMatchError(
            f"{what}: {len(weights)} weights for {len(runs)} runs; give one weight per run"
        )
    for w in weights:
        if (
            isinstance(w, bool)
            or not isinstance(w, (int, float, np.integer, np.floating))
            or not math.isfinite(w)
        ):
            raise TextMatchError(f"{what}: weights must be finite numbers, got {w!r}")
    return [float(w) for w in weights]


def _query_ids(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Query ids of all runs, in first-seen order."""
    seen: dict[str, None] = {}
    for run in runs:
        for qid in run:
            seen.setdefault(qid, None)
    return list(seen)


def _ordered(docs: Mapping[str, float]) -> dict[str, float]:
    return dict(ranked(docs))


def reciprocal_rank_fusion(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    k: int = 60,
    weights: Sequence[float] | None = None,
) -> Run:
    """Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009):

        RRF(q, d) = sum_r  w_r / (k + rank_r(q, d))

    rank_r(q, d) is d's 1-based rank among the documents of query q in run r (score
    descending, ties by doc id descending); a document absent from run r contributes 0 for r. k = 60 is
    the paper's constant; weights default to 1 per run. Only ranks matter, so runs on different
    scales fuse without normalization. The result holds every (query, doc) present in any run.
    """
    weights_ = _check_runs(runs, weights, "reciprocal_rank_fusion")
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, float, np.integer, np.floating))
        or not k >= 0
    ):
        raise TextMatchError(
            f"reciprocal_rank_fusion: k must be a number >= 0, got {k!r}"
        )
    fused: Run = {}
    for qid in _query_ids(runs):
        scores: dict[str, float] = {}
        for run, w in zip(runs, weights_):
            for rank, (did, _) in enumerate(ranked(run.get(qid, {})), start=1):
                scores[did] = scores.get(did, 0.0) + w / (k + rank)
        fused[qid] = _ordered(scores)
    return fused


def normalize_scores(
    run: Mapping[str, Mapping[str, float]], method: str = "minmax"
) -> Run:
    """Normalize each query's scores separately.

    minmax:  s' = (s - min_q) / (max_q - min_q), in [0, 1]; when max_q == min_q every score is 1.0.
    zscore:  s' = (s - mean_q) / std_q (population std); when std_q == 0 every score is 0.0.
    none:    s' = s (a copy).

    min_q, max_q, mean_q, std_q are over the documents the run lists for query q.
    """
    if method not in _NORMALIZATIONS:
        raise TextMatchError(
            f"normalize_scores: method must be one of {list(_NORMALIZATIONS)}, got {method!r}"
        )
    _check_run(run, "run")
    out: Run = {}
    for qid, docs in run.items():
        if not docs:
            out[qid] = {}
            continue
        values = np.array([float(s) for s in docs.values()], dtype=np.float64)
        if method == "minmax":
            lo, hi = values.min(), values.max()
            new = (values - lo) / (hi - lo) if hi > lo else np.ones_like(values)
        elif method == "zscore":
            std = values.std()
            new = (values - values.mean()) / std if std > 0 else np.zeros_like(values)
        else:
            new = values
        out[qid] = _ordered(dict(zip(docs.keys(), (float(v) for v in new))))
    return out


def weighted_fusion(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    weights: Sequence[float] | None = None,
    normalization: str = "minmax",
) -> Run:
    """Weighted score fusion (CombSUM over normalized scores):

        F(q, d) = sum_r  w_r * n_r(q, d)
        n_r(q, d) = normalize_scores(run_r, normalization)[q][d]  if run r lists d for q
                  = min_d' n_r(q, d')                            otherwise

    A document that run r did not retrieve for q gets r's lowest normalized score for q (0 after
    minmax, the most negative z after zscore): r ranked it no higher than its last document. A
    query that run r does not list at all contributes 0 from r. Weights default to 1 per run
    (then with minmax this is CombSUM; with weights summing to 1 it is a convex combination, as
    in `alpha * dense + (1 - alpha) * bm25`). The result holds every (query, doc) in any run.
    """
    weights_ = _check_runs(runs, weights, "weighted_fusion")
    if normalization not in _NORMALIZATIONS:
        raise TextMatchError(
            f"weighted_fusion: normalization must be one of {list(_NORMALIZATIONS)}, got {normalization!r}"
        )
    normalized = [normalize_scores(run, normalization) for run in runs]
    fused: Run = {}
    for qid in _query_ids(runs):
        doc_ids: dict[str, None] = {}
        for run in normalized:
            for did in run.get(qid, {}):
                doc_ids.setdefault(did, None)
        scores = dict.fromkeys(doc_ids, 0.0)
        for run, w in zip(normalized, weights_):
            docs = run.get(qid)
            if not docs:
                continue
            floor = min(docs.values())
            for did in scores:
                scores[did] += w * docs.get(did, floor)
        fused[qid] = _ordered(scores)
    return fused
