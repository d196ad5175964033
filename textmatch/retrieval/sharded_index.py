"""A vector index in shards: one sub-index per shard, searched one after the other, the top-k
merged by the project's one ranking rule (textmatch.retrieval.ranking: score descending, then id
descending).

Each `add` becomes a new shard of `shard_kind` (any kind of textmatch.retrieval.vector_index:
exact, flat, hnsw, ivfpq), so an index too large to build in one go is built shard by shard,
and a shard's files are saved in a folder of their own (`shards/shard-NNNNN/`). Search asks every
shard for its k best, maps their positions to the whole index's and keeps the k best of all by
the rule; with exact shards the result is the unsharded exact search's, ties included (each
shard breaks its own ties by the same rule, so the k best of the union are among the shards' k
best). Exact shards are memory-mapped when loaded, so the resident memory of a search is one
shard's working set at a time. For shards that do not fit one process or one host,
textmatch.retrieval.ray_search holds each shard in a Ray actor and searches them all at once.

    index = ShardedIndex(384, shard_kind="exact")
    for vectors, ids in shards:
        index.add(vectors, ids)            # one shard each
    scores, ids = index.search(queries, k=10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .vector_index import (
    FAISS_KINDS,
    SHARDED,
    VectorIndex,
    load_index,
    make_index,
    merge_top_k,
)

SHARD_FOLDER = "shards"


class ShardedIndex(VectorIndex):
    """Inner-product search over shards of `shard_kind`, each made by `make_index(shard_kind,
    dim, n_expected, **shard_options)` from one `add`."""

    kind = SHARDED

    def __init__(self, dim: int, shard_kind: str = "exact", **shard_options: Any) -> None:
        super().__init__(dim)
        if shard_kind not in ("exact", *FAISS_KINDS):
            raise TextMatchError(f"shard_kind must be exact or one of {FAISS_KINDS}, got {shard_kind!r}")
        make_index(shard_kind, dim, **shard_options)  # the options are checked now, not at the first add
        self.shard_kind = shard_kind
        self.shard_options = dict(shard_options)
        self.shards: list[VectorIndex] = []
        self.offsets: list[int] = []  # position in the whole index of each shard's first vector
        self.pending_metas: list[dict[str, Any]] = []  # the shards' meta() while loading
        self.adding: list[str] = []  # the ids of the add in progress (the base class stores them after)
        self.position_of: dict[str, int] | None = None  # id -> position in the whole index, built on first search

    def add(self, vectors: np.ndarray, ids: Any) -> None:
        """Append vectors (n, dim) named by `ids` as one new shard (see VectorIndex.add)."""
        self.adding = [] if isinstance(ids, str) else list(ids)
        try:
            super().add(vectors, ids)
        finally:
            self.adding = []
        self.position_of = None

    def options(self) -> dict[str, Any]:
        return {"shard_kind": self.shard_kind, "shard_options": self.shard_options,
                "shards": [shard.meta() for shard in self.shards]}

    @classmethod
    def _from_meta(cls, kind: str, dim: int, options: dict[str, Any]) -> "ShardedIndex":
        index = cls(dim, options.get("shard_kind", "exact"), **(options.get("shard_options") or {}))
        index.pending_metas = list(options.get("shards") or [])
        return index

    def _add_vectors(self, vectors: np.ndarray) -> None:
        shard = make_index(self.shard_kind, self.dim, n_expected=len(vectors), **self.shard_options)
        shard.add(vectors, self.adding)  # the real ids: each shard breaks its ties by the same rule
        self.offsets.append(self.ntotal)
        self.shards.append(shard)

    def _search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Every shard's k best (m, k_s), positions made global, then the k best of all by the
        rule, best first; places no shard filled are -inf / -1 and come last."""
        m = len(queries)
        if self.position_of is None:
            self.position_of = {doc_id: i for i, doc_id in enumerate(self.ids)}
        scores, positions = [], []
        for s, ids in self.shard_results(queries, k):  # (m, k_s), best first by the rule
            pos = np.full(s.shape, -1, dtype=np.int64)  # (m, k_s)
            for row, row_ids in enumerate(ids):
                pos[row, : len(row_ids)] = [self.position_of[doc_id] for doc_id in row_ids]
            scores.append(np.where(pos >= 0, s, -np.inf).astype(np.float32))
            positions.append(pos)
        if not scores:
            return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
        return merge_top_k(np.concatenate(scores, axis=1), np.concatenate(positions, axis=1), k, self.id_rank)

    def shard_results(self, queries: np.ndarray, k: int) -> list[tuple[np.ndarray, list[list[str]]]]:
        """Each non-empty shard's k best for `queries` (VectorIndex.search), here one shard after
        the other (textmatch.retrieval.ray_search asks Ray actors, all at once)."""
        return [shard.search(queries, min(k, shard.ntotal)) for shard in self.shards if shard.ntotal]

    def _save_files(self, folder: Path) -> None:
        root = folder / SHARD_FOLDER
        root.mkdir()
        for number, shard in enumerate(self.shards):
            sub = root / f"shard-{number:05d}"
            sub.mkdir()
            shard.save(sub)

    def _load_files(self, folder: Path, ntotal: int) -> None:
        self.shards, self.offsets, total = [], [], 0
        for number, meta in enumerate(self.pending_metas):
            sub = folder / SHARD_FOLDER / f"shard-{number:05d}"
            shard = load_index(sub, meta)
            self.offsets.append(total)
            self.shards.append(shard)
            total += shard.ntotal
        self.pending_metas = []
        if total != ntotal:
            raise TextMatchError(f"the shards in {folder / SHARD_FOLDER} hold {total} vectors, not {ntotal}: save the index again")

