"""How an index searches by default: the mode, the fusion of the dense and BM25 runs and how a
document scores from its passages. `Retriever.build` records them in `index.json` ("search");
every argument of `Retriever.search` (and `textmatch search --mode ...`) overrides them per call.

The default (`DEFAULT_SEARCH`) was chosen by one rule on development data only: the highest
nDCG@10 on SciFact's *train* qrels (809 queries) with the frozen all-MiniLM-L6-v2, a simpler
setting winning ties within 0.1 point (`scripts/retrieval_dev.py`, `results/retrieval_dev.md`).
No test qrels were read to choose it. An index without BM25 searches dense.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from ..config import ConfigMixin
from ..errors import TextMatchError

MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("rrf", "weighted")
NORMALIZATIONS = ("minmax", "zscore", "collection-zscore")


@dataclass(frozen=True)
class SearchSettings(ConfigMixin):
    """mode: "dense" (cos(f(q), g(passage))), "bm25" or "hybrid" (both runs fused).
    fusion: "rrf" (reciprocal-rank fusion, k = rrf_k) or "weighted":
        F(q, d) = dense_weight * n_dense(q, d) + (1 - dense_weight) * n_bm25(q, d)
    with n the scores normalised per query by `normalization`: "minmax" or "zscore" over the
    documents each run retrieved (textmatch.retrieval.fusion.normalize_scores; both depend on
    how deep the run was cut), or "collection-zscore": (s - mean_q) / std_q with the mean and
    standard deviation of the query's scores over every passage of the collection (exact, for
    dense from the passage embeddings' stored moments, for BM25 from all its scores), which
    does not depend on the cut-off.
    second_passage_weight: a document scores its best passage plus this weight times its
    second best (0: the best passage alone).
    depth: passages each run retrieves before documents are collapsed (None: max(100, 4 top_k)).
    phrases: a query's "quoted words" must appear together, in that order, in a passage of
        every document returned (textmatch.retrieval.phrases; such a query retrieves at least
        1000 passages per run before the filter); False: quote marks are plain characters.
    """

    mode: str = "hybrid"
    fusion: str = "weighted"
    dense_weight: float = 0.75
    normalization: str = "collection-zscore"
    rrf_k: int = 60
    second_passage_weight: float = 0.0
    depth: int | None = None
    phrases: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TextMatchError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.fusion not in FUSIONS:
            raise TextMatchError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.normalization not in NORMALIZATIONS:
            raise TextMatchError(f"normalization must be one of {NORMALIZATIONS}, got {self.normalization!r}")
        w = self.dense_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise TextMatchError(f"dense_weight must be a number in [0, 1] (the BM25 weight is 1 - it), got {w!r}")
        s = self.second_passage_weight
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and 0.0 <= s <= 1.0):
            raise TextMatchError(f"second_passage_weight must be a number in [0, 1], got {s!r}")
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 0:
            raise TextMatchError(f"rrf_k must be an integer >= 0, got {self.rrf_k!r}")
        if not isinstance(self.phrases, bool):
            raise TextMatchError(f"phrases must be True or False, got {self.phrases!r}")
        if self.depth is not None and (isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1):
            raise TextMatchError(f"depth must be a positive integer or None, got {self.depth!r}")

    def describe(self) -> str:
        """One line for help texts and reports, e.g. "hybrid, weighted collection-zscore fusion,
        dense weight 0.75"."""
        if self.mode != "hybrid":
            return self.mode
        if self.fusion == "rrf":
            return f"hybrid, RRF (k {self.rrf_k})"
        extra = f", second passage {self.second_passage_weight}" if self.second_passage_weight else ""
        return f"hybrid, weighted {self.normalization} fusion, dense weight {self.dense_weight}{extra}"

    def with_changes(self, **changes: Any) -> "SearchSettings":
        """These settings with the non-None `changes` applied (and checked)."""
        unknown = set(changes) - set(self.to_dict())
        if unknown:
            raise TextMatchError(f"unknown search setting(s) {sorted(unknown)}; known: {sorted(self.to_dict())}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


DEFAULT_SEARCH = SearchSettings()
DENSE_ONLY = SearchSettings(mode="dense")


def index_search_settings(meta: dict[str, Any]) -> SearchSettings:
    """The settings an index folder's `index.json` records; an index written before they were
    recorded gets today's default (dense when it has no BM25 index)."""
    stored = meta.get("search")
    if isinstance(stored, dict):
        return SearchSettings.from_dict(stored)
    return DEFAULT_SEARCH if meta.get("bm25") is not None else DENSE_ONLY
