"""Hard negatives mined by the model being trained (dense retrieval over the training corpus).

BM25 negatives (`textmatch.retrieval.bm25.mine_hard_negatives`) are documents that share words
with the query; the model's own negatives are the documents it currently ranks highest without
their being relevant, which is where its matching loss (eq. 2: a softmax over the support set)
still spends probability. Mining them again as training goes on follows ANCE (Xiong et al.
2021, "Approximate nearest neighbor negative contrastive learning"): the negatives of epoch e
come from the model as it stands at the start of epoch e.

    negatives(q) = the `depth` documents d maximising cos(f(q), g(d)), minus q's relevant ones

`dense_negatives` is pure given the embeddings; `mine_model_negatives` encodes the corpus and
the queries with the model (documents cut at `max_length` tokens, a cheaper encoding than the
index's passages) and calls it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import TextMatchError

__all__ = ["dense_negatives", "mine_model_negatives"]


def dense_negatives(
    query_emb: np.ndarray,
    doc_emb: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    positives: Mapping[str, Sequence[str]],
    n: int,
    depth: int = 30,
    seed: int | None = 0,
) -> dict[str, list[str]]:
    """For each query, n documents from its `depth` best by cosine that are not relevant to it.

    query_emb (m, dim) and doc_emb (n_docs, dim) are L2-normalised, so q . d is the cosine.
    seed=None keeps the n hardest; an int draws n at random among the non-relevant documents of
    the top `depth` (`random.Random(seed)`), as `mine_hard_negatives` does for BM25. Each list is
    in rank order (ties by document id descending, textmatch's ranking rule).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TextMatchError(f"dense_negatives: n must be an int >= 1, got {n!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < n:
        raise TextMatchError(f"dense_negatives: depth must be an int >= n ({n}), got {depth!r}")
    if query_emb.shape[0] != len(query_ids) or doc_emb.shape[0] != len(doc_ids):
        raise TextMatchError(
            f"dense_negatives: {query_emb.shape[0]} query vectors for {len(query_ids)} ids and "
            f"{doc_emb.shape[0]} document vectors for {len(doc_ids)} ids; give one vector per id"
        )
    from .ranking import top_k_positions

    rng = random.Random(seed) if seed is not None else None
    out: dict[str, list[str]] = {}
    keep = min(len(doc_ids), depth + max((len(positives.get(q, ())) for q in query_ids), default=0))
    for start in range(0, len(query_ids), 256):
        scores = query_emb[start : start + 256] @ doc_emb.T  # (chunk, n_docs)
        for row, qid in enumerate(query_ids[start : start + 256]):
            own = set(positives.get(qid, ()))
            ranked = [doc_ids[p] for p in top_k_positions(scores[row], doc_ids, keep)]
            candidates = [d for d in ranked if d not in own][:depth]
            if rng is not None and len(candidates) > n:
                picked = sorted(rng.sample(range(len(candidates)), n))
                candidates = [candidates[i] for i in picked]
            out[qid] = candidates[:n]
    return out


def mine_model_negatives(
    model: Any,
    queries: Mapping[str, str],
    corpus: Mapping[str, str],
    positives: Mapping[str, Sequence[str]],
    n: int,
    depth: int = 30,
    max_length: int = 128,
    batch_size: int = 32,
    seed: int | None = 0,
) -> dict[str, list[str]]:
    """`dense_negatives` of the queries in `positives` over the whole `corpus`, with `model`'s f'
    (queries) and g' (documents cut at `max_length` tokens). The model's train / eval mode is
    restored afterwards; no gradient is kept."""
    query_ids = [q for q in positives if q in queries]
    doc_ids = list(corpus)
    if not query_ids or not doc_ids:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), model.support_encoder.truncated_to(max_length):
            doc_emb = model.encode([corpus[d] for d in doc_ids], batch_size=batch_size, role="support")
        with torch.inference_mode():
            query_emb = model.encode([queries[q] for q in query_ids], batch_size=batch_size, role="query")
    finally:
        model.train(was_training)
    return dense_negatives(np.asarray(query_emb, dtype=np.float32), np.asarray(doc_emb, dtype=np.float32),
                           query_ids, doc_ids, positives, n, depth, seed)
