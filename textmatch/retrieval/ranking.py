"""The one ranking rule of textmatch: every search path (dense, BM25, fusion, sharded search)
and the evaluator order documents with it, so a ranking never depends on which path made it.

    score descending; equal scores by document id descending (string order)

This is trec_eval's rule (`comp_sim_docno` in `form_res_rels.c` compares `strcmp(b, a)` on
ties), which pytrec_eval and BEIR inherit: with tied scores doc "b" ranks above "a", and "9"
above "10". Scores are compared as C floats, as trec_eval stores them (`TEXT_RESULTS.sim`):
they are rounded to float32 first, so two float64 scores that differ only beyond float32
precision are a tie, broken by id. Ids are compared as Python strings, whose code-point order
equals `strcmp`'s byte order on UTF-8 text.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..errors import TextMatchError


def score32(score: float) -> float:
    """`score` rounded to float32 (beyond its range: +-inf, as the C cast does)."""
    with np.errstate(over="ignore"):
        return float(np.float32(score))


def rank_key(doc_id: str, score: float) -> tuple[float, str]:
    """The sort key of the rule: sort with `reverse=True` (or take the largest) for best first."""
    return score32(score), str(doc_id)


def _items(docs: Mapping[str, float] | Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    items = list(docs.items()) if isinstance(docs, Mapping) else [(d, s) for d, s in docs]
    bad = [d for d, s in items if math.isnan(s)]
    if bad:
        raise TextMatchError(f"NaN score for document(s) {bad[:5]}: a ranking needs real-valued scores")
    return items


def ranked(docs: Mapping[str, float] | Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    """(doc_id, score) pairs best first by the rule; the scores are returned as given."""
    return sorted(_items(docs), key=lambda item: rank_key(*item), reverse=True)


def top_k(docs: Mapping[str, float] | Iterable[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """The k best (doc_id, score) pairs by the rule, best first (a heap: O(n log k))."""
    return heapq.nlargest(int(k), _items(docs), key=lambda item: rank_key(*item))


def rank_run(scores: Mapping[str, float]) -> list[str]:
    """The doc ids of one query's {doc_id: score} best first, as trec_eval orders them."""
    return [doc for doc, _ in ranked(scores)]


def top_k_positions(scores: np.ndarray, ids: Sequence[str], k: int) -> np.ndarray:
    """Positions of the k best of `scores` (n,) whose documents are `ids` (n,), best first by the
    rule: (min(k, n),) int64. Only the candidates tied with the k-th best are sorted by id, so
    this costs O(n) plus the sort of about k candidates."""
    scores32 = np.asarray(scores, dtype=np.float32)  # (n,)
    if np.isnan(scores32).any():
        raise TextMatchError("NaN score: a ranking needs real-valued scores")
    n = scores32.shape[0]
    k = min(int(k), n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        threshold = np.partition(scores32, n - k)[n - k]  # the k-th largest score
        candidates = np.flatnonzero(scores32 >= threshold)  # everything tied with it stays
    else:
        candidates = np.arange(n)
    order = sorted(candidates.tolist(), key=lambda p: (float(scores32[p]), str(ids[p])), reverse=True)
    return np.asarray(order[:k], dtype=np.int64)


def rerank_rows(scores: np.ndarray, ids: list[list[str]]) -> tuple[np.ndarray, list[list[str]]]:
    """Re-order each row of a top-k result (scores (m, k), ids m lists) by the rule, e.g. what an
    approximate index returned in its own order. Missing places (-inf, no id) stay last."""
    out = np.array(scores, dtype=np.float32, copy=True)  # (m, k)
    out_ids: list[list[str]] = []
    for row, row_ids in enumerate(ids):
        pairs = ranked(zip(row_ids, out[row, : len(row_ids)].tolist()))
        out[row, : len(pairs)] = [s for _, s in pairs]
        out_ids.append([d for d, _ in pairs])
    return out, out_ids
