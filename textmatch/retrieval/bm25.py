"""Lexical retrieval with BM25 (via `bm25s`), and BM25 hard-negative mining.

`BM25Index` keeps documents with string ids and ranks them for free-text queries:

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))          (method="lucene")

Defaults: k1 = 0.9, b = 0.4. These are Anserini's defaults, with which the BEIR BM25 baselines
(Thakur et al. 2021, "flat" runs) were produced; bm25s's own defaults are Robertson's
k1 = 1.5, b = 0.75. Text is lower-cased, split on `\\b\\w\\w+\\b`, English stopwords are removed
(bm25s's NLTK list) and words are stemmed with the Snowball English stemmer when PyStemmer is
installed (`pip install PyStemmer`), else not stemmed; `meta()["stemmer"]` says which.

Scores are computed by bm25s; the top k is selected here with a stable order: higher score
first, ties by insertion order of the documents, so results (and mined negatives) are
reproducible.

Install: `pip install bm25s PyStemmer`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .ranking import top_k_positions

__all__ = ["BM25Index", "mine_hard_negatives", "stemmer_available"]

_FORMAT = "textmatch-bm25"
_FORMAT_VERSION = 1
_META_FILE = "textmatch_bm25.json"
_DOCS_FILE = "documents.jsonl"
_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


def _import_bm25s():
    try:
        import bm25s
    except ImportError:  # pragma: no cover - depends on the environment
        raise TextMatchError(
            "BM25 needs the bm25s package: pip install bm25s (and PyStemmer for stemming)"
        ) from None
    return bm25s


def stemmer_available() -> bool:
    """True when PyStemmer (the `Stemmer` module) can be imported."""
    try:
        import Stemmer  # noqa: F401
    except ImportError:
        return False
    return True


def _make_stemmer(name: str | None):
    if name is None:
        return None
    try:
        import Stemmer
    except ImportError:
        raise TextMatchError(
            f"stemmer={name!r} needs PyStemmer: pip install PyStemmer (or pass stemmer=None)"
        ) from None
    try:
        return Stemmer.Stemmer(name)
    except KeyError:
        raise TextMatchError(
            f"PyStemmer has no stemmer {name!r}; choose one of {sorted(Stemmer.algorithms())}"
        ) from None


def _check_texts(
    texts: Sequence[str], ids: Sequence[str], what: str
) -> tuple[list[str], list[str]]:
    if isinstance(texts, str) or isinstance(ids, str):
        raise TextMatchError(
            f"{what}: pass lists of texts and ids, not a single string"
        )
    texts, ids = list(texts), list(ids)
    if len(texts) != len(ids):
        raise TextMatchError(
            f"{what}: got {len(texts)} texts but {len(ids)} ids; give one id per text"
        )
    for i, (text, doc_id) in enumerate(zip(texts, ids)):
        if not isinstance(text, str):
            raise TextMatchError(
                f"{what}: text {i} is a {type(text).__name__}, not a str"
            )
        if not isinstance(doc_id, str):
            raise TextMatchError(
                f"{what}: id {i} ({doc_id!r}) is a {type(doc_id).__name__}; ids must be str"
            )
    return texts, ids


class BM25Index:
    """A BM25 index over documents with string ids.

    k1, b: BM25 parameters (default 0.9 / 0.4, Anserini's BEIR settings; see the module doc).
    method: bm25s scoring variant: "lucene" (default), "robertson", "atire", "bm25l", "bm25+".
    delta: the delta of bm25l / bm25+ (ignored by the other methods).
    stopwords: bm25s stopword list name ("en", "english", "de", ...), a list of words, or None.
    stemmer: "auto" (default: Snowball "english" when PyStemmer is installed, else none), a
        PyStemmer algorithm name such as "english", or None for no stemming.

    `build(texts, ids)` indexes documents; `add(texts, ids, indexed_texts)` appends more (bm25s
    has no incremental update, so this re-indexes everything: O(total corpus) per call; batch
    your additions). The index keeps the ids, not a copy of the texts: `add` takes the texts
    already indexed from the caller, who has them anyway (a Retriever's passages.jsonl).
    `search(queries, k)` returns (scores (m, k) float32, ids m lists of k), ordered by the
    ranking rule of textmatch.retrieval.ranking. `save(folder)` / `BM25Index.load(folder)` use
    bm25s's own files (numpy .npy arrays saved with allow_pickle=False and JSON) plus
    `textmatch_bm25.json` (settings, meta()) and `documents.jsonl` (the ids). No pickle anywhere.
    """

    def __init__(
        self,
        k1: float = 0.9,
        b: float = 0.4,
        method: str = "lucene",
        delta: float = 0.5,
        stopwords: str | Sequence[str] | None = "en",
        stemmer: str | None = "auto",
    ) -> None:
        if not (isinstance(k1, (int, float)) and np.isfinite(k1) and k1 >= 0):
            raise TextMatchError(f"k1 must be a number >= 0, got {k1!r}")
        if not (isinstance(b, (int, float)) and 0 <= b <= 1):
            raise TextMatchError(f"b must be a number in [0, 1], got {b!r}")
        if method not in _METHODS:
            raise TextMatchError(
                f"method must be one of {list(_METHODS)}, got {method!r}"
            )
        if stemmer == "auto":
            stemmer = "english" if stemmer_available() else None
        self._stemmer = _make_stemmer(
            stemmer
        )  # checks the name (and that PyStemmer is there)
        bm25s = _import_bm25s()
        if isinstance(stopwords, str):
            try:  # checks the list name now rather than at build time
                bm25s.tokenize(
                    ["x"], stopwords=stopwords, return_ids=False, show_progress=False
                )
            except ValueError:
                raise TextMatchError(
                    f"bm25s has no stopword list {stopwords!r}; try 'en' or None"
                ) from None
        elif stopwords is not None:
            stopwords = [str(w) for w in stopwords]
        self.k1 = float(k1)
        self.b = float(b)
        self.method = method
        self.delta = float(delta)
        self.stopwords = stopwords
        self.stemmer = stemmer
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._bm25: Any = None

    # ------------------------------------------------------------------ indexing
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The document ids, in index order (a copy)."""
        return list(self._ids)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        bm25s = _import_bm25s()
        stopwords = [] if self.stopwords is None else self.stopwords
        return bm25s.tokenize(
            texts,
            stopwords=stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )

    def _index(self, texts: list[str], ids: list[str]) -> None:
        bm25s = _import_bm25s()
        tokens = self._tokenize(texts)
        if not any(tokens):
            raise TextMatchError(
                "none of the documents has a word left to index after lower-casing, stopword removal "
                "and the 2-character minimum; index some real text"
            )
        bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method, delta=self.delta)
        bm25.index(tokens, show_progress=False)
        self._bm25, self._ids, self._id_set = bm25, ids, set(ids)

    def build(self, texts: Sequence[str], ids: Sequence[str]) -> BM25Index:
        """Index `texts` under `ids` (unique strings), replacing whatever was indexed. Returns self."""
        texts, ids = _check_texts(texts, ids, "build")
        if not texts:
            raise TextMatchError("build: no documents given; pass at least one text")
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dupes:
            raise TextMatchError(
                f"build: {len(dupes)} duplicate id(s), e.g. {dupes[:3]}; ids must be unique"
            )
        self._index(texts, ids)
        return self

    def add(self, texts: Sequence[str], ids: Sequence[str], indexed_texts: Sequence[str]) -> BM25Index:
        """Append documents. bm25s cannot update an index in place, so this rebuilds the index
        over `indexed_texts` (the texts of the documents already indexed, in `ids` order) plus
        the new ones: the result equals `build(indexed_texts + texts)`. Returns self."""
        texts, ids = _check_texts(texts, ids, "add")
        if not texts:
            return self
        old_texts, _ = _check_texts(indexed_texts, self._ids, "add (indexed_texts)")
        seen: set[str] = set(self._id_set)
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        if dupes:
            raise TextMatchError(
                f"add: {len(dupes)} id(s) already in the index or repeated, e.g. {dupes[:3]}; ids must be unique"
            )
        self._index(old_texts + texts, self._ids + ids)
        return self

    # ------------------------------------------------------------------ search
    def _require_built(self, what: str) -> None:
        if self._bm25 is None:
            raise TextMatchError(
                f"{what}: the index is empty; call build(texts, ids) first"
            )

    def score_all(self, query: str) -> np.ndarray:
        """BM25 scores of one query against every document, shape (len(index),), float32.
        A query with no indexed word scores 0 everywhere."""
        self._require_built("score_all")
        return self._scores([query])[0]

    def _scores(self, queries: list[str]) -> list[np.ndarray]:
        n = len(self._ids)
        out = []
        vocab = self._bm25.vocab_dict
        for tokens in self._tokenize(queries):
            tokens = [t for t in tokens if t in vocab and t != ""]
            if tokens:
                out.append(np.asarray(self._bm25.get_scores(tokens), dtype=np.float32))
            else:
                out.append(np.zeros(n, dtype=np.float32))
        return out

    def score_moments(self, queries: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each query's BM25 scores over every indexed document:
        ((m,), (m,)) float64, the deviation raised to at least 1e-12 (a query matching nothing
        scores 0 everywhere)."""
        self._require_built("score_moments")
        rows = self._scores(list(queries))
        mean = np.array([r.mean(dtype=np.float64) for r in rows])
        std = np.array([r.std(dtype=np.float64) for r in rows])
        return mean, np.maximum(std, 1e-12)

    def search(
        self, queries: Sequence[str], k: int = 10
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Top-k documents per query: (scores (m, k) float32, descending per row; ids, m lists of
        k str). k is capped at the number of documents; k <= 0 is an error. Ties are ordered by
        the ranking rule (larger id first). A query with no indexed word (only stopwords or
        unseen words) gets score 0 for every document (so its "top k" are the k largest ids); an empty or blank query string
        is an error."""
        self._require_built("search")
        if isinstance(queries, str):
            raise TextMatchError(
                "search: pass a list of query strings, e.g. search([query], k)"
            )
        queries = list(queries)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TextMatchError(f"search: k must be an int, got {k!r}")
        if k <= 0:
            raise TextMatchError(f"search: k must be >= 1, got {k}")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise TextMatchError(
                    f"search: query {i} is a {type(q).__name__}, not a str"
                )
            if not q.strip():
                raise TextMatchError(
                    f"search: query {i} is empty; every query needs some text"
                )
        k = min(int(k), len(self._ids))
        top_scores = np.zeros((len(queries), k), dtype=np.float32)
        top_ids: list[list[str]] = []
        for row, scores in enumerate(self._scores(queries)):
            order = top_k_positions(scores, self._ids, k)
            top_scores[row] = scores[order]
            top_ids.append([self._ids[j] for j in order])
        return top_scores, top_ids

    # ------------------------------------------------------------------ persistence
    def meta(self) -> dict[str, Any]:
        """Settings and sizes, JSON-able."""
        bm25s = _import_bm25s()
        return {
            "backend": "bm25s",
            "bm25s_version": getattr(bm25s, "__version__", "unknown"),
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "delta": self.delta,
            "stopwords": self.stopwords
            if isinstance(self.stopwords, (str, type(None)))
            else list(self.stopwords),
            "stemmer": self.stemmer,
            "num_docs": len(self._ids),
            "vocab_size": 0
            if self._bm25 is None
            else sum(1 for t in self._bm25.vocab_dict if t != ""),
        }

    def save(self, folder: str | Path) -> Path:
        """Write the index to `folder` (created if needed): bm25s's .npy/.json files,
        textmatch_bm25.json and documents.jsonl. Returns the folder."""
        self._require_built("save")
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        self._bm25.save(str(folder), allow_pickle=False, show_progress=False)
        with open(folder / _DOCS_FILE, "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"id": doc_id}, ensure_ascii=False) + "\n" for doc_id in self._ids)
        meta = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **self.meta()}
        (folder / _META_FILE).write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index:
        """Read an index written by `save` (no pickle: numpy arrays with allow_pickle=False, JSON)."""
        bm25s = _import_bm25s()
        folder = Path(folder).expanduser()
        meta_path = folder / _META_FILE
        if not meta_path.is_file():
            raise TextMatchError(
                f"{folder} is not a saved BM25Index: it has no {_META_FILE}"
            )
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if (
            meta.get("format") != _FORMAT
            or meta.get("format_version") != _FORMAT_VERSION
        ):
            raise TextMatchError(
                f"{meta_path}: unknown format {meta.get('format')!r} version {meta.get('format_version')!r}"
            )
        if meta["stemmer"] is not None and not stemmer_available():
            raise TextMatchError(
                f"{folder} was built with the {meta['stemmer']!r} stemmer; install PyStemmer to query it "
                "(pip install PyStemmer), else queries would not match the stemmed index"
            )
        index = cls(
            k1=meta["k1"],
            b=meta["b"],
            method=meta["method"],
            delta=meta["delta"],
            stopwords=meta["stopwords"],
            stemmer=meta["stemmer"],
        )
        ids = []
        with open(folder / _DOCS_FILE, encoding="utf-8") as f:  # older folders also hold "text": unused
            for line in f:
                if line.strip():
                    ids.append(json.loads(line)["id"])
        bm25 = bm25s.BM25.load(
            str(folder), allow_pickle=False, show_progress=False, verbosity=0
        )
        if bm25.scores["num_docs"] != len(ids) or len(ids) != meta["num_docs"]:
            raise TextMatchError(
                f"{folder}: the bm25s index has {bm25.scores['num_docs']} documents but {_DOCS_FILE} has "
                f"{len(ids)}; the folder is damaged, rebuild and save again"
            )
        index._bm25, index._ids, index._id_set = bm25, ids, set(ids)
        return index

    def __repr__(self) -> str:
        return (
            f"BM25Index(docs={len(self._ids)}, k1={self.k1}, b={self.b}, method={self.method!r}, "
            f"stemmer={self.stemmer!r})"
        )


def mine_hard_negatives(
    index: BM25Index,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    n: int = 5,
    depth: int = 30,
    seed: int | None = 0,
) -> dict[str, list[str]]:
    """BM25 hard negatives: for each query, documents ranked in its top `depth` by BM25 that are
    not judged relevant (qrels score > 0; a judged score <= 0 counts as not relevant).

    seed=None: the first n such documents (the hardest). An int seed: n drawn at random (from
    `random.Random(seed)`) among all such documents in the top `depth`, which spreads the
    negatives over the top of the ranking and makes unjudged true positives at rank 1 less
    likely to dominate; depth == n gives the top n whatever the seed. Either way the list is in
    BM25 rank order, and may be shorter than n when the index is small or relevant documents
    fill the top. Queries without a qrels entry get negatives with nothing excluded.
    Returns {query_id: [doc_id, ...]} for every query in `queries`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TextMatchError(f"mine_hard_negatives: n must be an int >= 1, got {n!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < n:
        raise TextMatchError(
            f"mine_hard_negatives: depth must be an int >= n ({n}), got {depth!r}"
        )
    qids = list(queries)
    if not qids:
        return {}
    _, ranked = index.search([queries[q] for q in qids], k=depth)
    rng = random.Random(seed) if seed is not None else None
    out: dict[str, list[str]] = {}
    for qid, docs in zip(qids, ranked):
        judged = qrels.get(qid, {})
        candidates = [d for d in docs if judged.get(d, 0) <= 0]
        if rng is not None and len(candidates) > n:
            keep = sorted(rng.sample(range(len(candidates)), n))
            candidates = [candidates[i] for i in keep]
        out[qid] = candidates[:n]
    return out
