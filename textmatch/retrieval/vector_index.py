"""Vector indexes for document retrieval: exact numpy search and faiss (flat, HNSW, IVF-PQ).

Every index scores by inner product. Give it L2-normalised float32 embeddings (what
`MatchingNetwork.encode(..., normalize_embeddings=True)` returns) and the score is the cosine
similarity. Documents are named by string ids; `search` returns the scores best first and the
ids of the documents they belong to.

    index = make_index("auto", dim=384, n_expected=len(doc_ids))
    index.add(doc_vectors, doc_ids)
    scores, ids = index.search(query_vectors, k=10)   # (m, k) float32, m lists of ids
    index.save(folder)                                # folder exists; the caller makes it atomic
    index = load_index(folder, index.meta())          # meta() is JSON-able: store it beside

Backends:

- `ExactIndex`: exact search by chunked matrix product with a running top-k merge, so the
  working memory is (queries x chunk_size) floats whatever the corpus size. Vectors are saved
  as `.npy` and loaded memory-mapped, so a loaded index is not held in RAM twice. No extra
  dependency.
- `FaissIndex(kind="flat")`: faiss `IndexFlatIP`, exact as well (faiss BLAS kernels).
- `FaissIndex(kind="hnsw")`: faiss `IndexHNSWFlat` with inner product: approximate,
  logarithmic search time, no training; the default for large corpora.
- `FaissIndex(kind="ivfflat")`: faiss `IndexIVFFlat`: inverted lists of full vectors, exact
  scores within the `nprobe` lists searched; trained on a sample (`train`, or the first `add`),
  then filled by any number of `add`s (shard by shard).
- `FaissIndex(kind="ivfpq")`: faiss `IndexIVFPQ` with inner product: compressed codes
  (pq_m bytes a vector with 8-bit codes), trained like ivfflat; the least memory and the
  lowest recall, unless `rerank=R`: the R x k best candidates by code are re-scored with the
  vectors kept in half precision (`vectors_fp16.npy`, memory-mapped once saved), so that recall
  approaches the lists' exact search.

The faiss backends need `pip install "textmatch[faiss]"`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TextMatchError

__all__ = [
    "AUTO_FAISS_THRESHOLD",
    "INDEX_KINDS",
    "ExactIndex",
    "FaissIndex",
    "VectorIndex",
    "load_index",
    "make_index",
    "merge_top_k",
]

INDEX_KINDS = ("exact", "flat", "hnsw", "ivfflat", "ivfpq", "auto")
FAISS_KINDS = ("flat", "hnsw", "ivfflat", "ivfpq")
IVF_KINDS = ("ivfflat", "ivfpq")
INDEX_FORMAT = 1
SHARDED = "sharded"  # the kind of textmatch.retrieval.sharded_index.ShardedIndex (a layout of other kinds)

# "auto" picks ExactIndex below this many vectors and HNSW from it on. Set from the measured
# crossover (scripts/bench_index.py, results/index_scale.md "Crossover": 384-d unit vectors,
# 2-core AMD EPYC, one query at a time on one thread, HNSW at the defaults below against
# ExactIndex). Below 10,000 vectors exact search is faster (0.14 against 0.18 ms p50 at 5,000);
# at 10,000 the two tie within run-to-run noise (0.27 / 0.26 ms in the final run, 0.26 / 0.29 in
# an earlier one); from 15,000 on HNSW is clearly faster (0.39 against 0.72 ms; 0.49 against
# 1.0 ms at 20k; exact search then grows linearly: 5 ms at 100k, 53 ms at 1M). Where they tie,
# exact search wins: exact results, no graph to build (HNSW builds at ~800 vectors/s with
# these defaults on 2 cores), free appends. So the threshold is the clear crossover, 15,000.
AUTO_FAISS_THRESHOLD = 15_000

_EXACT_OPTIONS = ("chunk_size",)
_FAISS_OPTIONS = ("hnsw_m", "ef_construction", "ef_search", "nlist", "nprobe", "pq_m", "pq_bits", "train_size", "rerank")
RERANK_QUERIES = 64  # queries re-scored at a time
FP16_FILE = "vectors_fp16.npy"  # IVF-PQ with rerank: the vectors in half precision, for exact re-scoring
_CHECK_ROWS = 65_536  # rows checked for NaN / inf at a time (bounded temporary memory)


# --------------------------------------------------------------------------------------------
# helpers


def _import_faiss() -> Any:
    try:
        import faiss  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TextMatchError(
            'the faiss index backends ("flat", "hnsw", "ivfflat", "ivfpq") need faiss: pip install "textmatch[faiss]" '
            '(or use kind="exact", which needs nothing more)'
        ) from exc
    return faiss


def _sync_faiss_threads(faiss: Any) -> None:
    """faiss (OpenMP) uses as many threads as torch does."""
    try:
        import torch

        threads = int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency, but the index does not need it
        return
    faiss.omp_set_num_threads(max(1, threads))


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TextMatchError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _as_matrix(array: Any, dim: int, name: str) -> np.ndarray:
    """A C-contiguous float32 (n, dim) array with finite values, or a TextMatchError."""
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except Exception as exc:
            raise TextMatchError(f"{name} must be a numpy array of shape (n, {dim}): {exc}") from exc
    if array.ndim != 2:
        raise TextMatchError(
            f"{name} must be a 2-D array of shape (n, {dim}), got shape {array.shape}; "
            "for a single vector use vector[None, :]"
        )
    if array.dtype.kind not in "fiu":
        raise TextMatchError(f"{name} must hold numbers (float32 embeddings), got dtype {array.dtype}")
    if array.shape[1] != dim:
        raise TextMatchError(f"{name} have dimension {array.shape[1]} but the index has dimension {dim}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    for start in range(0, array.shape[0], _CHECK_ROWS):
        block = array[start : start + _CHECK_ROWS]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise TextMatchError(f"{name} row {row} contains NaN or inf; embeddings must be finite")
    return array


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TextMatchError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise TextMatchError(f"k must be a positive integer, got {k}")
    return int(k)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def _read_ids(folder: Path, expected: int) -> list[str]:
    path = folder / "ids.json"
    if not path.is_file():
        raise TextMatchError(f"{path} is missing: the index folder is incomplete, save the index again")
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TextMatchError(f"{path} is not valid JSON ({exc}): save the index again") from exc
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise TextMatchError(f"{path} must hold a JSON list of strings: save the index again")
    if len(ids) != expected:
        raise TextMatchError(f"{path} holds {len(ids)} ids but the index holds {expected} vectors: save the index again")
    return ids


# --------------------------------------------------------------------------------------------
# base class


class VectorIndex:
    """Inner-product search over float32 vectors named by unique string ids.

    Subclasses implement `_add_vectors`, `_search_vectors`, `_save_files`, `_load_files` and
    `options`. The base class validates input, keeps the ids and maps positions to ids.
    """

    kind: str = ""

    def __init__(self, dim: int) -> None:
        self.dim = _check_int("dim", dim)
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._id_rank: np.ndarray | None = None  # see id_rank

    @property
    def id_rank(self) -> np.ndarray:
        """Each position's id rank in ascending string order, (ntotal,) int64: the ranking rule's
        tie-break (equal scores: larger id first) as a number, for vectorised sorts."""
        if self._id_rank is None or self._id_rank.shape[0] != len(self._ids):
            rank = np.empty(len(self._ids), dtype=np.int64)
            rank[np.asarray(sorted(range(len(self._ids)), key=self._ids.__getitem__), dtype=np.int64)] = np.arange(
                len(self._ids), dtype=np.int64
            )
            self._id_rank = rank
        return self._id_rank

    # -- public API ---------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        return len(self._ids)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, dim={self.dim}, ntotal={self.ntotal})"

    @property
    def ids(self) -> list[str]:
        """The ids, in the order they were added (a copy)."""
        return list(self._ids)

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append vectors (n, dim) named by `ids` (n unique strings, new to the index)."""
        vectors = _as_matrix(vectors, self.dim, "vectors")
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise TextMatchError(f"ids must be a sequence of strings (one per vector), got {type(ids).__name__}")
        ids = list(ids)
        if len(ids) != vectors.shape[0]:
            raise TextMatchError(f"got {vectors.shape[0]} vectors but {len(ids)} ids; give one id per vector")
        seen: set[str] = set()
        for doc_id in ids:
            if not isinstance(doc_id, str):
                raise TextMatchError(f"ids must be strings, got {doc_id!r} ({type(doc_id).__name__})")
            if doc_id in seen or doc_id in self._id_set:
                where = "twice in this batch" if doc_id in seen else "already in the index"
                raise TextMatchError(f"duplicate id {doc_id!r} ({where}); ids must be unique within an index")
            seen.add(doc_id)
        if not ids:
            return
        self._add_vectors(vectors)
        self._ids.extend(ids)
        self._id_set.update(ids)
        self._id_rank = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """The k best documents for each query: scores (m, min(k, ntotal)) float32, best first
        by the ranking rule (textmatch.retrieval.ranking: ties by id descending), and m lists
        of ids.

        Approximate kinds may find fewer than min(k, ntotal) documents for some query; the
        missing places have score -inf and that query's id list is shorter. Which of several
        candidates tied at the k-th place an approximate kind returns is its own choice; what
        it returns is ordered by the rule.
        """
        k = _check_k(k)
        queries = _as_matrix(queries, self.dim, "queries")
        m = queries.shape[0]
        k_eff = min(k, self.ntotal)
        if m == 0 or k_eff == 0:
            return np.zeros((m, k_eff), dtype=np.float32), [[] for _ in range(m)]
        scores, positions = self._search_vectors(queries, k_eff)
        scores, positions = _order_ties(scores, positions, self.id_rank)
        ids = self._ids
        missing = positions < 0
        if missing.any():
            scores = np.where(missing, np.float32(-np.inf), scores).astype(np.float32, copy=False)
            return scores, [[ids[p] for p in row if p >= 0] for row in positions.tolist()]
        return scores, [[ids[p] for p in row] for row in positions.tolist()]

    def meta(self) -> dict[str, Any]:
        """What `load_index` needs besides the files: kind, dim, ntotal, options (JSON-able)."""
        return {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "dim": self.dim,
            "ntotal": self.ntotal,
            "options": self.options(),
        }

    def save(self, folder: Path | str) -> None:
        """Write the index files into `folder`, which must exist (the caller makes it atomic:
        save into a temporary folder, then rename it into place)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TextMatchError(f"{folder} is not an existing folder; create it before saving the index")
        _write_json(folder / "ids.json", self._ids)
        self._save_files(folder)

    @classmethod
    def load(cls, folder: Path | str, meta: dict[str, Any]) -> VectorIndex:
        """The index saved in `folder` with this `meta()`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise TextMatchError(f"index folder {folder} does not exist")
        kind, dim, ntotal, options = _check_meta(meta)
        index = cls._from_meta(kind, dim, options)
        index._ids = _read_ids(folder, ntotal)
        index._id_set = set(index._ids)
        index._id_rank = None
        if len(index._id_set) != ntotal:
            raise TextMatchError(f"{folder / 'ids.json'} holds duplicate ids: save the index again")
        index._load_files(folder, ntotal)
        return index

    # -- for subclasses -----------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_meta(cls, kind: str, dim: int, options: dict[str, Any]) -> VectorIndex:
        raise NotImplementedError

    def _add_vectors(self, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def _search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(m, k) float32 scores best first and (m, k) int64 positions (-1: none found)."""
        raise NotImplementedError

    def _save_files(self, folder: Path) -> None:
        raise NotImplementedError

    def _load_files(self, folder: Path, ntotal: int) -> None:
        raise NotImplementedError


def _check_meta(meta: Any) -> tuple[str, int, int, dict[str, Any]]:
    if not isinstance(meta, dict):
        raise TextMatchError(f"index meta must be a dict (from index.meta()), got {type(meta).__name__}")
    missing = [key for key in ("kind", "dim", "ntotal") if key not in meta]
    if missing:
        raise TextMatchError(f"index meta lacks {', '.join(missing)}; it must come from index.meta()")
    fmt = meta.get("format", INDEX_FORMAT)
    if not isinstance(fmt, int) or fmt > INDEX_FORMAT:
        raise TextMatchError(
            f"index format {fmt!r} is newer than this textmatch understands ({INDEX_FORMAT}); upgrade textmatch"
        )
    kind = meta["kind"]
    if kind not in FAISS_KINDS and kind not in ("exact", SHARDED):
        raise TextMatchError(f"unknown index kind {kind!r} in meta; expected one of exact, {', '.join(FAISS_KINDS)}, {SHARDED}")
    options = meta.get("options") or {}
    if not isinstance(options, dict):
        raise TextMatchError("index meta 'options' must be a dict")
    return kind, _check_int("meta dim", meta["dim"]), _check_int("meta ntotal", meta["ntotal"], 0), options


def _order_ties(scores: np.ndarray, pos: np.ndarray, id_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (scores (m, k), positions (m, k)) that hold equal scores, re-ordered by the
    ranking rule (score descending, then id descending); rows without ties are left as they
    are, so the common case costs one comparison per place. Missing places (-1) stay last."""
    tied_rows = np.flatnonzero((scores[:, 1:] == scores[:, :-1]).any(axis=1)) if scores.shape[1] > 1 else []
    if len(tied_rows) == 0:
        return scores, pos
    scores, pos = scores.copy(), pos.copy()
    for row in tied_rows:
        found = pos[row] >= 0
        n = int(found.sum())
        order = np.lexsort((-id_rank[pos[row, :n]], -scores[row, :n]))
        scores[row, :n], pos[row, :n] = scores[row, :n][order], pos[row, :n][order]
    return scores, pos


def _top_k(scores: np.ndarray, pos: np.ndarray, k: int, id_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores of each row (unordered) with their positions, by np.argpartition.

    Ties at the cut are broken by the ranking rule (larger id first, `id_rank`), so the result
    does not depend on how the corpus is chunked.
    """
    width = scores.shape[1]
    if width <= k:
        return scores, pos
    keep = np.argpartition(scores, width - k, axis=1)[:, width - k :]
    top = np.take_along_axis(scores, keep, axis=1)
    kth = top.min(axis=1, keepdims=True)
    tied = np.nonzero((scores == kth).sum(axis=1) > (top == kth).sum(axis=1))[0]
    for row in tied:  # rare: equal scores across the cut; the rule decides who stays
        keep[row] = np.lexsort((-id_rank[pos[row]], -scores[row]))[:k]
    return np.take_along_axis(scores, keep, axis=1), np.take_along_axis(pos, keep, axis=1)


def merge_top_k(scores: np.ndarray, positions: np.ndarray, k: int, id_rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates of each row by the ranking rule (score descending, then id
    descending via `id_rank`), best first. scores (m, c) float32, positions (m, c) int64 with -1
    for none (its score -inf) -> (m, k) each, missing places last as -inf / -1."""
    rank = np.where(positions >= 0, id_rank[np.clip(positions, 0, None)], -1)  # (m, c): -1 sorts after every id
    order = np.lexsort((-rank, -scores.astype(np.float64)), axis=-1)[:, :k]  # (m, min(c, k))
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_positions = np.take_along_axis(positions, order, axis=1)
    if top_scores.shape[1] < k:  # fewer candidates than k in all
        pad = k - top_scores.shape[1]
        top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        top_positions = np.pad(top_positions, ((0, 0), (0, pad)), constant_values=-1)
    return top_scores.astype(np.float32), top_positions


# --------------------------------------------------------------------------------------------
# exact search in numpy


class ExactIndex(VectorIndex):
    """Exact inner-product search: chunked matrix product plus a running top-k merge.

    Working memory is bounded by (queries x chunk_size) float32 scores whatever the corpus
    size. Vectors live in one float32 array (grown geometrically on later adds); a loaded
    index keeps them memory-mapped (read-only) until the next `add` copies them into RAM.
    """

    kind = "exact"

    def __init__(self, dim: int, chunk_size: int = 50_000) -> None:
        super().__init__(dim)
        self.chunk_size = _check_int("chunk_size", chunk_size)
        self._buffer = np.zeros((0, self.dim), dtype=np.float32)

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors (ntotal, dim), a view: do not modify."""
        return self._buffer[: self.ntotal]

    def options(self) -> dict[str, Any]:
        return {"chunk_size": self.chunk_size}

    @classmethod
    def _from_meta(cls, kind: str, dim: int, options: dict[str, Any]) -> ExactIndex:
        if kind != "exact":
            raise TextMatchError(f"meta kind {kind!r} is not an exact index; use load_index(folder, meta)")
        return cls(dim, **{k: v for k, v in options.items() if k in _EXACT_OPTIONS})

    def _add_vectors(self, vectors: np.ndarray) -> None:
        n_old, n_new = self.ntotal, vectors.shape[0]
        needed = n_old + n_new
        buffer = self._buffer
        if needed > buffer.shape[0] or not buffer.flags.writeable:
            # First add: exactly the size given. Later adds: grow by half, so many small adds
            # cost amortised O(n) copying; a memory-mapped (loaded) index is copied into RAM.
            capacity = needed if n_old == 0 else max(needed, n_old + n_old // 2)
            grown = np.empty((capacity, self.dim), dtype=np.float32)
            grown[:n_old] = buffer[:n_old]
            buffer = grown
        buffer[n_old:needed] = vectors
        self._buffer = buffer

    def _search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n, m = self.ntotal, queries.shape[0]
        id_rank = self.id_rank
        best_scores = np.full((m, 0), -np.inf, dtype=np.float32)
        best_pos = np.zeros((m, 0), dtype=np.int64)
        for start in range(0, n, self.chunk_size):
            chunk = self._buffer[start : min(start + self.chunk_size, n)]
            scores = queries @ chunk.T  # (m, c) float32: the only (queries x chunk) buffer
            pos = np.broadcast_to(np.arange(start, start + scores.shape[1], dtype=np.int64), scores.shape)
            scores, pos = _top_k(scores, pos, k, id_rank)
            # running merge: the best k so far (earlier documents first) and this chunk's best k
            best_scores, best_pos = _top_k(
                np.concatenate([best_scores, scores], axis=1), np.concatenate([best_pos, pos], axis=1), k, id_rank
            )
        # best first by the ranking rule: equal scores by id descending
        order = np.lexsort((-id_rank[best_pos], -best_scores), axis=1)
        return (
            np.take_along_axis(best_scores, order, axis=1).astype(np.float32, copy=False),
            np.take_along_axis(best_pos, order, axis=1),
        )

    def _save_files(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self.vectors, allow_pickle=False)

    def _load_files(self, folder: Path, ntotal: int) -> None:
        path = folder / "vectors.npy"
        if not path.is_file():
            raise TextMatchError(f"{path} is missing: the index folder is incomplete, save the index again")
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise TextMatchError(f"{path} is not a readable .npy file ({exc}): save the index again") from exc
        if vectors.dtype != np.float32 or vectors.shape != (ntotal, self.dim):
            raise TextMatchError(
                f"{path} holds {vectors.dtype} {vectors.shape}, expected float32 ({ntotal}, {self.dim}): "
                "save the index again"
            )
        if ntotal == 0:  # np.memmap cannot map an empty array on every platform; use RAM
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._buffer = vectors


# --------------------------------------------------------------------------------------------
# faiss


class FaissIndex(VectorIndex):
    """faiss inner-product index: "flat" (exact), "hnsw" (graph), "ivfflat" (inverted lists) or
    "ivfpq" (inverted lists of compressed codes; `rerank` re-scores candidates exactly).

    Options: HNSW `hnsw_m` (links per node), `ef_construction`, `ef_search` (breadth of the
    search: higher is slower and more accurate). IVF-PQ `nlist` (default about 4 sqrt(n),
    capped so each list has at least 39 training vectors), `nprobe` (lists searched),
    `pq_m` (sub-quantisers, must divide dim; default dim / 8), `pq_bits` (bits a code),
    `train_size` (vectors of the first add used to train, evenly spaced; default 64 x nlist,
    at least 39 x nlist: k-means cost grows with it). `ef_search` and `nprobe` may be changed
    at any time.
    """

    def __init__(
        self,
        dim: int,
        kind: str = "hnsw",
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        pq_m: int | None = None,
        pq_bits: int = 8,
        train_size: int | None = None,
        rerank: int = 0,
    ) -> None:
        super().__init__(dim)
        if kind not in FAISS_KINDS:
            raise TextMatchError(f"faiss index kind must be one of {FAISS_KINDS}, got {kind!r}")
        self._faiss = _import_faiss()
        self.kind = kind
        self.hnsw_m = _check_int("hnsw_m", hnsw_m, 2)
        self.ef_construction = _check_int("ef_construction", ef_construction)
        self.ef_search = _check_int("ef_search", ef_search)
        self.nlist = None if nlist is None else _check_int("nlist", nlist)
        self.nprobe = _check_int("nprobe", nprobe)
        self.pq_bits = _check_int("pq_bits", pq_bits)
        if self.pq_bits > 16:
            raise TextMatchError(f"pq_bits must be between 1 and 16, got {pq_bits}")
        self.train_size = None if train_size is None else _check_int("train_size", train_size)
        self.rerank = _check_int("rerank", rerank, 0)
        if self.rerank and kind != "ivfpq":
            raise TextMatchError(f"rerank re-scores compressed IVF-PQ codes; kind={kind!r} scores exactly already")
        self._fp16: list[np.ndarray] = []  # rerank: the added vectors in half precision, per add (or one memmap)
        if pq_m is None:
            # dim / 8 sub-vectors of 8 dimensions; for a dim not divisible by 8, the largest
            # divisor of dim below dim / 8 (at least 1)
            pq_m = next(d for d in range(max(1, dim // 8), 0, -1) if dim % d == 0)
        self.pq_m = _check_int("pq_m", pq_m)
        if self.dim % self.pq_m:
            raise TextMatchError(f"pq_m={self.pq_m} must divide the dimension {self.dim}")
        self._index: Any = None
        if kind == "flat":
            self._index = self._faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            self._index = self._faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self._faiss.METRIC_INNER_PRODUCT)
            self._index.hnsw.efConstruction = self.ef_construction
            self._index.hnsw.efSearch = self.ef_search
        # ivfflat / ivfpq: built by `train`, or on the first add when the number of vectors is known

    @property
    def faiss_index(self) -> Any:
        """The underlying faiss index (None for an IVF-PQ index before its first add)."""
        return self._index

    def options(self) -> dict[str, Any]:
        if self.kind == "flat":
            return {}
        if self.kind == "hnsw":
            return {"hnsw_m": self.hnsw_m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        if self.kind == "ivfflat":
            return {"nlist": self.nlist, "nprobe": self.nprobe, "train_size": self.train_size}
        return {
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "pq_m": self.pq_m,
            "pq_bits": self.pq_bits,
            "train_size": self.train_size,
            "rerank": self.rerank,
        }

    @classmethod
    def _from_meta(cls, kind: str, dim: int, options: dict[str, Any]) -> FaissIndex:
        if kind not in FAISS_KINDS:
            raise TextMatchError(f"meta kind {kind!r} is not a faiss index; use load_index(folder, meta)")
        return cls(dim, kind=kind, **{k: v for k, v in options.items() if k in _FAISS_OPTIONS})

    @staticmethod
    def default_nlist(n: int) -> int:
        """About 4 sqrt(n) inverted lists, at most n // 39 (39 training vectors a list)."""
        return max(1, min(round(4 * math.sqrt(n)), n // 39))

    def train(self, sample: np.ndarray) -> None:
        """Train an IVF index ("ivfflat", "ivfpq") on `sample` (n, dim) before any `add`: e.g. an
        evenly spread sample of a corpus whose vectors are then added shard by shard, so that
        they never have to be in memory at once. Without it the first `add` trains."""
        if self.kind not in IVF_KINDS:
            raise TextMatchError(f"only IVF indexes are trained; kind={self.kind!r} needs no training")
        if self._index is not None:
            raise TextMatchError("this index is trained already; train a new one to change its lists")
        self._train_ivf(_as_matrix(sample, self.dim, "sample"))

    def _train_ivf(self, vectors: np.ndarray) -> None:
        faiss = self._faiss
        n = vectors.shape[0]
        min_pq = 2**self.pq_bits if self.kind == "ivfpq" else 1
        nlist = self.nlist if self.nlist is not None else self.default_nlist(n)
        needed = max(39 * nlist if self.nlist is None else nlist, min_pq, 39)
        if n < needed:
            raise TextMatchError(
                f'an "{self.kind}" index is trained on a sample (or its first add), which needs at least {needed} '
                f"vectors (nlist={nlist} lists"
                + (f", {min_pq} codes per sub-quantiser for pq_bits={self.pq_bits}" if self.kind == "ivfpq" else "")
                + f'); got {n}. Use kind="flat" (or "exact") for a collection this small, or add more vectors at once'
            )
        if self.nlist is not None and n < 39 * nlist:
            warnings.warn(
                f"training nlist={nlist} inverted lists on {n} vectors (< 39 a list): the clustering may be poor",
                stacklevel=3,
            )
        train_size = self.train_size if self.train_size is not None else 64 * nlist
        train_size = max(needed, min(n, train_size))
        if train_size < n:  # an evenly spread, deterministic sample
            train = vectors[np.linspace(0, n - 1, train_size).astype(np.int64)]
        else:
            train = vectors
        quantizer = faiss.IndexFlatIP(self.dim)
        if self.kind == "ivfflat":
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, self.pq_m, self.pq_bits, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.seed = 1234
            index.pq.cp.min_points_per_centroid = 1
            # each sub-quantiser has 2**pq_bits centroids in dim / pq_m (~8) dimensions: 64 points
            # a centroid train them well, and faiss's default (256) makes PQ training 4x slower
            index.pq.cp.max_points_per_centroid = 64
        index.cp.seed = 1234
        # faiss prints its own "please provide at least N training points" lines to stderr;
        # the sizes are checked (and warned about) above instead
        index.cp.min_points_per_centroid = 1
        index.train(train)
        index.nprobe = self.nprobe
        self._quantizer = quantizer  # keep the python object alive with the index
        self._index = index
        self.nlist = nlist

    def _add_vectors(self, vectors: np.ndarray) -> None:
        _sync_faiss_threads(self._faiss)
        if self._index is None:
            self._train_ivf(vectors)
        self._index.add(vectors)
        if self.rerank:
            self._fp16.append(vectors.astype(np.float16))

    def _search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _sync_faiss_threads(self._faiss)
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = self.ef_search
        elif self.kind in IVF_KINDS:
            self._index.nprobe = self.nprobe
        if self.rerank:
            return self._reranked(queries, k)
        scores, labels = self._index.search(queries, k)
        return scores.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)

    def _reranked(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ candidates (rerank x k by their codes) re-scored exactly with the fp16 vectors,
        then the k best by the ranking rule."""
        _, candidates = self._index.search(queries, min(self.ntotal, self.rerank * k))  # (m, c), -1: none
        if len(self._fp16) > 1:
            self._fp16 = [np.concatenate(self._fp16)]
        stored = self._fp16[0]  # (ntotal, dim) float16
        found = candidates >= 0
        scores = np.empty(candidates.shape, dtype=np.float32)  # (m, c)
        for start in range(0, len(queries), RERANK_QUERIES):  # bounded memory: (chunk, c, dim) at a time
            part = np.clip(candidates[start : start + RERANK_QUERIES], 0, None)
            rows = stored[part].astype(np.float32)  # (chunk, c, dim)
            scores[start : start + RERANK_QUERIES] = np.einsum("mcd,md->mc", rows, queries[start : start + RERANK_QUERIES])
        return merge_top_k(np.where(found, scores, -np.inf).astype(np.float32), candidates, k, self.id_rank)

    def _save_files(self, folder: Path) -> None:
        if self._index is not None:
            self._faiss.write_index(self._index, str(folder / "index.faiss"))
        if self.rerank:
            stored = np.concatenate(self._fp16) if self._fp16 else np.zeros((0, self.dim), dtype=np.float16)
            np.save(folder / FP16_FILE, stored, allow_pickle=False)

    def _load_files(self, folder: Path, ntotal: int) -> None:
        path = folder / "index.faiss"
        if self.kind in IVF_KINDS and ntotal == 0 and not path.exists():
            return  # saved before its first add: still untrained
        if not path.is_file():
            raise TextMatchError(f"{path} is missing: the index folder is incomplete, save the index again")
        try:
            index = self._faiss.read_index(str(path))
        except RuntimeError as exc:
            raise TextMatchError(f"{path} is not a readable faiss index ({exc}): save the index again") from exc
        if index.d != self.dim or index.ntotal != ntotal:
            raise TextMatchError(
                f"{path} holds {index.ntotal} vectors of dimension {index.d}, expected {ntotal} of "
                f"dimension {self.dim}: save the index again"
            )
        self._index = index
        if self.rerank:
            fp16 = folder / FP16_FILE
            try:
                stored = np.load(fp16, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise TextMatchError(f"{fp16} is missing or unreadable ({exc}): save the index again") from None
            if stored.shape != (ntotal, self.dim) or stored.dtype != np.float16:
                raise TextMatchError(f"{fp16} holds {stored.shape} {stored.dtype}, expected ({ntotal}, {self.dim}) float16")
            self._fp16 = [stored]


# --------------------------------------------------------------------------------------------
# factories


def make_index(kind: str, dim: int, n_expected: int | None = None, **options: Any) -> VectorIndex:
    """A new empty index.

    kind: "exact" (ExactIndex), "flat" / "hnsw" / "ivfpq" (FaissIndex), or "auto": exact below
    AUTO_FAISS_THRESHOLD expected vectors (or when n_expected is None), else "hnsw" (which
    needs faiss). Options go to the chosen class; with "auto" the options of the class not
    chosen are ignored.
    """
    if kind not in INDEX_KINDS:
        raise TextMatchError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
    if n_expected is not None:
        n_expected = _check_int("n_expected", n_expected, 0)
    unknown = sorted(set(options) - set(_EXACT_OPTIONS) - set(_FAISS_OPTIONS))
    if unknown:
        raise TextMatchError(
            f"unknown index option(s) {', '.join(unknown)}; known: {', '.join(_EXACT_OPTIONS + _FAISS_OPTIONS)}"
        )
    if kind == "auto":
        kind = "exact" if n_expected is None or n_expected < AUTO_FAISS_THRESHOLD else "hnsw"
        allowed = _EXACT_OPTIONS if kind == "exact" else _FAISS_OPTIONS
        options = {k: v for k, v in options.items() if k in allowed}
    if kind == "exact":
        wrong = sorted(set(options) - set(_EXACT_OPTIONS))
        if wrong:
            raise TextMatchError(f'option(s) {", ".join(wrong)} do not apply to kind="exact"')
        return ExactIndex(dim, **options)
    wrong = sorted(set(options) - set(_FAISS_OPTIONS))
    if wrong:
        raise TextMatchError(f'option(s) {", ".join(wrong)} do not apply to kind="{kind}"')
    return FaissIndex(dim, kind=kind, **options)


def load_index(folder: Path | str, meta: dict[str, Any]) -> VectorIndex:
    """The index saved in `folder`, of the class `meta["kind"]` names."""
    kind, _, _, _ = _check_meta(meta)
    if kind == SHARDED:
        from .sharded_index import ShardedIndex

        return ShardedIndex.load(folder, meta)
    cls: type[VectorIndex] = ExactIndex if kind == "exact" else FaissIndex
    return cls.load(folder, meta)
