"""Search over document collections with a MatchingNetwork: f embeds queries, g embeds passages.

    score(q, d) = max over passages p of d of cos(f(q), g(p))      (eq. 2's similarity)

An index folder holds the passage embeddings in a vector index (exact or FAISS), the passage
and document ids, titles and texts, the embeddings' moments (`passage_stats.npy`, for fusion
by z-scores over the collection), an optional BM25 index for hybrid search, and `index.json`
with the model id and fingerprint, dimension, normalisation, format version and the default
search (`SearchSettings`: hybrid unless the index has no BM25). Building encodes the corpus
in shards written to `<index>.partial/` so that an interrupted build resumes without
re-encoding finished shards; the finished folder is renamed into place atomically.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..config import ConfigMixin
from ..errors import TextMatchError
from ..files import (
    atomic_path,
    check_target,
    files_under,
    read_consistent,
    write_folder,
)
from .corpus import checked_documents, read_corpus, split_passages
from .encoded_shards import EncodedCorpus, EncodedShards, open_partial, partial_dir
from .fusion import Run
from .phrases import contains_phrases, split_phrases
from .ranking import rank_run
from .ranking import top_k as best
from .ray_encoding import RayEngine
from .search_settings import (
    DEFAULT_SEARCH,
    DENSE_ONLY,
    FUSIONS,
    MODES,
    SearchSettings,
    index_search_settings,
)
from .sharded_index import ShardedIndex
from .vector_index import INDEX_KINDS

__all__ = ["FUSIONS", "MODES", "IndexConfig", "Passage", "Retriever", "SearchHit", "read_passages"]

INDEX_FORMAT_VERSION = 1
INDEX_CONFIG = "index.json"
PASSAGES_FILE = "passages.jsonl"
PHRASE_DEPTH = 1000  # passages each run retrieves for a query with quoted phrases, before the filter
STATS_FILE = "passage_stats.npy"  # (dim + 2, dim) float64: [n, 0, ...], sum of g'(p), sum of g'(p) g'(p)^T


@dataclass
class IndexConfig(ConfigMixin):
    """How a corpus is indexed.

    index_kind: the vector index, one of `INDEX_KINDS` (see textmatch.retrieval.vector_index); passage_tokens /
    passage_overlap: passage windows in tokens; bm25: also build a BM25 index (hybrid search);
    shard_size: passages per resumable encoding shard; batch_size: texts per forward pass.
    bm25_k1 / bm25_b: BM25's parameters (Anserini's 0.9 / 0.4: round 1's, kept because no other
    pair beat them by more than 0.1 nDCG@10 on SciFact's train qrels, results/retrieval_dev.md).
    bm25_title_boost: the document title is added this many more times to each passage's BM25
    text (a passage already starts with it once); 0 by default: 1 raised BM25 alone on the
    development qrels (+0.49 nDCG@10) but lowered the hybrid search (-0.24).
    index_shards: split the vector index into this many shards of `index_kind`, searched one
    after the other and merged by the ranking rule (textmatch.retrieval.sharded_index); 1: one
    index. `add` appends a shard. rerank: with index_kind "ivfpq", re-score the rerank x k best
    candidates by their codes with the vectors kept in half precision (0: off).
    """

    index_kind: str = "auto"
    passage_tokens: int = 256
    passage_overlap: int = 32
    bm25: bool = True
    shard_size: int = 2048
    batch_size: int = 32
    bm25_k1: float = 0.9
    bm25_b: float = 0.4
    bm25_title_boost: int = 0
    index_shards: int = 1
    rerank: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IndexConfig":
        """As ConfigMixin.from_dict; index folders written before 0.2 name the kind "backend"."""
        data = dict(data)
        if "backend" in data:
            data.setdefault("index_kind", data.pop("backend"))
        return super().from_dict(data)

    def __post_init__(self) -> None:
        if self.index_kind not in INDEX_KINDS:
            raise TextMatchError(f"index_kind must be one of {INDEX_KINDS}, got {self.index_kind!r}")
        boost = self.bm25_title_boost
        if isinstance(boost, bool) or not isinstance(boost, int) or not 0 <= boost <= 10:
            raise TextMatchError(f"bm25_title_boost must be an integer in 0..10, got {boost!r}")
        for name, value, top in (("bm25_k1", self.bm25_k1, 10.0), ("bm25_b", self.bm25_b, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top:
                raise TextMatchError(f"{name} must be a number in [0, {top:g}], got {value!r}")
        if isinstance(self.index_shards, bool) or not isinstance(self.index_shards, int) or self.index_shards < 1:
            raise TextMatchError(f"index_shards must be a positive integer, got {self.index_shards!r}")
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, int) or self.rerank < 0:
            raise TextMatchError(f"rerank must be a non-negative integer, got {self.rerank!r}")
        if self.rerank and self.index_kind != "ivfpq":
            raise TextMatchError(f"rerank re-scores IVF-PQ codes: use it with index_kind='ivfpq', not {self.index_kind!r}")
        if self.shard_size < 1 or self.batch_size < 1:
            raise TextMatchError("shard_size and batch_size must be positive")
        if self.passage_tokens < 8 or not 0 <= self.passage_overlap < self.passage_tokens // 2:
            raise TextMatchError(
                f"need passage_tokens >= 8 and 0 <= passage_overlap < passage_tokens / 2, got "
                f"{self.passage_tokens} and {self.passage_overlap}"
            )


def new_vector_index(config: IndexConfig, dim: int, n_expected: int) -> Any:
    """The empty vector index of a new build: `config.index_kind` for `n_expected` passages, or
    with `index_shards` > 1 a ShardedIndex of that kind ("auto" picks the kind for the whole)."""
    from .vector_index import AUTO_FAISS_THRESHOLD, make_index

    options = {"rerank": config.rerank} if config.rerank else {}
    if config.index_shards == 1:
        return make_index(config.index_kind, dim, n_expected=n_expected, **options)
    kind = config.index_kind
    if kind == "auto":
        kind = "exact" if n_expected < AUTO_FAISS_THRESHOLD else "hnsw"
    return ShardedIndex(dim, shard_kind=kind, **options)


def fill_index(vectors: Any, encoded: EncodedShards, start: int, index_shards: int = 1) -> np.ndarray:
    """Add the encoded passages (positions start, start + 1, ...) to `vectors` shard by shard
    and return their moments (`passage_moments`). An untrained IVF index is first trained on an
    evenly spread sample of them; a ShardedIndex gets `index_shards` shards of about equal size."""
    from .vector_index import IVF_KINDS, FaissIndex

    if isinstance(vectors, FaissIndex) and vectors.kind in IVF_KINDS and vectors.faiss_index is None:
        nlist = vectors.nlist = vectors.nlist or FaissIndex.default_nlist(encoded.n)  # from the whole, not the sample
        vectors.train(encoded.sample(max(vectors.train_size or 64 * nlist, 39 * nlist, 2**vectors.pq_bits)))
    stats = np.zeros((encoded.dim + 2, encoded.dim))
    parts = encoded.groups(index_shards) if isinstance(vectors, ShardedIndex) else encoded.iter()
    for first, emb in parts:
        vectors.add(emb, [str(start + first + i) for i in range(len(emb))])
        stats += passage_moments(emb)
    return stats


def check_index_target(folder: Path, config: IndexConfig) -> None:
    """Refuse, before any encoding, to write an index over a folder that is not one (files.check_target)."""
    kinds = {"exact": ["vectors.npy"], "auto": ["vectors.npy", "index.faiss"]}.get(config.index_kind, ["index.faiss"])
    kinds = ["shards/"] if config.index_shards > 1 else kinds + (["vectors_fp16.npy"] if config.rerank else [])
    names = [INDEX_CONFIG, PASSAGES_FILE, STATS_FILE, "ids.json", *kinds, *(["bm25/"] if config.bm25 else [])]
    check_target(folder, "index", names, legacy_index_files)


def passage_window(model: Any, config: IndexConfig) -> tuple[int, int]:
    """(max tokens, overlap) of the passages: the config's, shrunk to the model's length limit."""
    max_tokens = min(config.passage_tokens, model.support_encoder.max_length)
    return max_tokens, min(config.passage_overlap, max_tokens // 4)


def model_fingerprint(model: Any) -> str:
    """Identifies the weights of f' and g' (an index is only valid with the model that built it)."""
    from ..backends.onnx import fingerprint

    encoders = {id(e): e for e in (model.query_encoder, model.support_encoder)}.values()  # shared: hash once
    return "-".join(sorted({fingerprint(e) for e in encoders}))


class Retriever:
    """A searchable index of documents.

    >>> retriever = Retriever.build(model, "docs/", "my_index")     # or a BEIR folder, JSONL, CSV, dataset
    >>> retriever.search(["how do I reset my password"], top_k=5)
    """

    def __init__(self, model: Any, folder: Path, config: IndexConfig, meta: dict[str, Any], vectors: Any,
                 passage_docs: list[str], bm25: Any | None) -> None:
        self.model = model
        self.folder = folder
        self.config = config
        self.meta = meta
        self.vectors = vectors  # textmatch.retrieval.vector_index.VectorIndex over passage embeddings
        self.passage_docs = passage_docs  # passage position -> document id
        self.bm25 = bm25
        self.last_build: dict[str, Any] = {}  # shards / reused_shards / new_passages (/ ray: workers) of the last build or add
        self._passages: list[Passage] | None = None  # passages.jsonl, read on the first search_hits
        self._stats: np.ndarray | None = None  # passage_stats.npy, read on the first collection-zscore search
        self._doc_passages: dict[str, list[int]] | None = None  # doc id -> passage positions, for phrases

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def build(cls, model: Any, corpus: Any, folder: str | os.PathLike, config: IndexConfig | None = None,
              show_progress_bar: bool = True, search: SearchSettings | None = None,
              engine: RayEngine | None = None, **corpus_options: Any) -> "Retriever":
        """Index `corpus` (see textmatch.retrieval.corpus.read_corpus) with `model` into `folder`.
        search: how the index searches by default (recorded in index.json; default
        `DEFAULT_SEARCH`, hybrid, or dense when config.bm25 is False). engine: a `RayEngine`
        encodes the passages on Ray Data (textmatch.retrieval.ray_encoding); None here."""
        config = config or IndexConfig()
        if search is None:
            search = DEFAULT_SEARCH if config.bm25 else DENSE_ONLY
        if not isinstance(search, SearchSettings):
            raise TextMatchError(f"search must be a SearchSettings, got {type(search).__name__}")
        if search.mode != "dense" and not config.bm25:
            raise TextMatchError(f"search mode {search.mode!r} needs the BM25 index: keep IndexConfig(bm25=True) "
                                 "or search with mode='dense'")
        folder = Path(folder).expanduser().resolve()
        check_index_target(folder, config)  # before minutes of encoding, not after
        encoded = cls._encode(model, corpus, folder, config, corpus_options, show_progress_bar, engine, seen=set())
        return cls._write(model, folder, config, encoded, existing=None, search=search)

    def add(self, corpus: Any, show_progress_bar: bool = True, engine: RayEngine | None = None,
            **corpus_options: Any) -> "Retriever":
        """Append new documents (ids must be new) and rewrite the folder atomically (engine: as in `build`)."""
        check_index_target(self.folder, self.config)
        encoded = self._encode(self.model, corpus, self.folder, self.config, corpus_options, show_progress_bar, engine,
                               seen=set(self.passage_docs))
        new = self._write(self.model, self.folder, self.config, encoded, existing=self, search=self.search_settings)
        self.__dict__.update(new.__dict__)
        return self

    @staticmethod
    def _encode(model: Any, corpus: Any, folder: Path, config: IndexConfig, corpus_options: dict[str, Any],
                show_progress_bar: bool, engine: RayEngine | None, seen: set[str]) -> EncodedCorpus:
        """The corpus's passages and their embeddings in shards on disk: read, split and encoded
        here, or on Ray with a RayEngine (textmatch.retrieval.ray_encoding)."""
        max_tokens, overlap = passage_window(model, config)
        fingerprint = model_fingerprint(model)
        if engine is not None:
            from .ray_encoding import encode_corpus

            return encode_corpus(model, corpus, folder, max_tokens, overlap, config.batch_size, fingerprint, engine,
                                 seen=seen, show_progress_bar=show_progress_bar, **corpus_options)
        tokenizer = model.support_encoder.tokenizer
        passages: list[tuple[str, str, str]] = []  # (doc_id, text, title)
        for doc in checked_documents(read_corpus(corpus, **corpus_options), seen=seen):
            title = doc["title"].strip()
            for text in split_passages(doc["title"], doc["text"], tokenizer, max_tokens, overlap):
                passages.append((doc["_id"], text, title))
        encoded, reused = _encode_resumable(model, [t for _, t, _ in passages], folder, fingerprint, config,
                                            show_progress_bar)
        return EncodedCorpus(passages, encoded, fingerprint, {"shards": encoded.n_shards, "reused_shards": reused})

    @classmethod
    def _write(cls, model: Any, folder: Path, config: IndexConfig, prepared: EncodedCorpus,
               existing: "Retriever | None", search: SearchSettings) -> "Retriever":
        from .vector_index import load_index

        passages, encoded, fingerprint = prepared.passages, prepared.encoded, prepared.fingerprint
        with write_folder(folder, kind="index", legacy_owned=legacy_index_files) as tmp:
            if existing is not None:
                vectors = load_index(existing.folder, existing.meta["vector_index"])
                old = read_passages(existing.folder)
                all_docs = existing.passage_docs + [d for d, _, _ in passages]
                all_texts = [p.text for p in old] + [t for _, t, _ in passages]
                all_titles = [p.title for p in old] + [title for _, _, title in passages]
            else:
                vectors = new_vector_index(config, encoded.dim, len(passages))
                all_docs = [d for d, _, _ in passages]
                all_texts = [t for _, t, _ in passages]
                all_titles = [title for _, _, title in passages]
            start = len(all_docs) - len(passages)
            stats = fill_index(vectors, encoded, start, config.index_shards if existing is None else 1)
            vectors.save(tmp)
            if existing is not None:
                try:
                    stats = stats + existing.embedding_moments()
                except TextMatchError:  # an index from before the statistics, whose vectors cannot be read back
                    stats = None
            if stats is not None:
                np.save(tmp / STATS_FILE, stats, allow_pickle=False)
            with open(tmp / PASSAGES_FILE, "w", encoding="utf-8") as fh:
                for doc_id, text, title in zip(all_docs, all_texts, all_titles):
                    fh.write(json.dumps({"doc_id": doc_id, "text": text, "title": title}, ensure_ascii=False) + "\n")
            bm25 = None
            if config.bm25:
                from .bm25 import BM25Index

                bm25 = BM25Index(k1=config.bm25_k1, b=config.bm25_b)
                boost = config.bm25_title_boost
                bm25.build([f"{title} " * boost + text for title, text in zip(all_titles, all_texts)],
                           [str(i) for i in range(len(all_texts))])
                (tmp / "bm25").mkdir()
                bm25.save(tmp / "bm25")
            meta = {
                "format_version": INDEX_FORMAT_VERSION,
                "library_name": "textmatch",
                "model": _model_id(model),
                "model_fingerprint": fingerprint,
                "dim": encoded.dim,
                "normalized": True,
                "metric": "cosine",
                "n_documents": len(dict.fromkeys(all_docs)),
                "n_passages": len(all_docs),
                "config": config.to_dict(),
                "vector_index": vectors.meta(),
                "bm25": bm25.meta() if bm25 is not None else None,
                "search": search.to_dict(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp / INDEX_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(partial_dir(folder), ignore_errors=True)
        retriever = cls(model, folder, config, meta, vectors, all_docs, bm25)
        retriever.last_build = {"new_passages": len(passages), **prepared.report}
        return retriever

    # -- loading ----------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | os.PathLike, model: Any = None, allow_index_model: bool = False,
             engine: RayEngine | None = None, **model_kwargs: Any) -> "Retriever":
        """Open an index folder with `model` (a MatchingNetwork, or a Hub id / folder to load).
        Without it, the model named in index.json is loaded only when it lies inside the index
        folder, is textmatch's default model, or `allow_index_model=True`: an index from
        elsewhere does not choose what gets downloaded or read. A model whose weights differ
        from the ones that built the index is refused. engine: a `RayEngine` serves the shards
        of an index built with index_shards > 1 from Ray actors, one per shard, searched all at
        once (textmatch.retrieval.ray_search); None: they are loaded and searched here."""
        folder = Path(folder).expanduser().resolve()
        return read_consistent(folder, lambda: cls._load_checked(folder, model, allow_index_model, model_kwargs, engine),
                               "index")

    @classmethod
    def _load_checked(cls, folder: Path, *args: Any) -> "Retriever":
        try:
            return cls._load(folder, *args)
        except TextMatchError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError, ValueError, EOFError, OSError) as exc:
            raise TextMatchError(
                f"the index files in {folder} are malformed ({type(exc).__name__}: {exc}); build the index again"
            ) from None

    @classmethod
    def _load(cls, folder: Path, model: Any, allow_index_model: bool, model_kwargs: dict[str, Any],
              engine: RayEngine | None = None) -> "Retriever":
        from ..core.modeling import MatchingNetwork
        from ..hub.resolution import DEFAULT_MODEL
        from .vector_index import load_index

        meta = read_index_meta(folder)
        if model is None:
            wanted = str(meta.get("model") or "")
            inside = bool(wanted) and Path(wanted).expanduser().resolve().is_relative_to(folder)
            if not (allow_index_model or inside or wanted == DEFAULT_MODEL):
                raise TextMatchError(
                    f"the index in {folder} was built with the model {wanted!r}, outside the index folder; "
                    f"pass that model (--model {wanted}) or allow it (allow_index_model=True, --allow-index-model)"
                )
            model = wanted
        if isinstance(model, (str, os.PathLike)):
            model = MatchingNetwork.from_pretrained(model, **model_kwargs)
        fingerprint = model_fingerprint(model)
        if fingerprint != meta["model_fingerprint"]:
            raise TextMatchError(
                f"the index in {folder} was built with model {meta['model']!r} (fingerprint {meta['model_fingerprint']}), "
                f"but the model given has fingerprint {fingerprint}: search with the same model, or build the index again"
            )
        config = IndexConfig.from_dict(meta["config"])
        if engine is not None:
            from .ray_search import load_on_ray

            vectors = load_on_ray(folder, meta["vector_index"], engine)
        else:
            vectors = load_index(folder, meta["vector_index"])
        passage_docs = _read_passage_docs(folder, vectors.ntotal)
        bm25 = None
        if meta.get("bm25") is not None:
            from .bm25 import BM25Index

            bm25 = BM25Index.load(folder / "bm25")
        positions = [str(i) for i in range(len(passage_docs))]  # both indexes name passages by position
        if vectors.ids != positions or (bm25 is not None and bm25.ids != positions):
            raise TextMatchError(f"the vector and BM25 indexes in {folder} do not match its passages; build it again")
        return cls(model, folder, config, meta, vectors, passage_docs, bm25)

    # -- searching --------------------------------------------------------------------------
    @property
    def search_settings(self) -> SearchSettings:
        """How this index searches when `search` is given no mode / fusion / ...: the settings
        index.json records (see textmatch.retrieval.search_settings)."""
        return index_search_settings(self.meta)

    def search(self, queries: Sequence[str], top_k: int = 10, mode: str | None = None, fusion: str | None = None,
               dense_weight: float | None = None, depth: int | None = None, **settings: Any,
               ) -> list[list[tuple[str, float]]]:
        """The `top_k` documents of each query as (doc_id, score), best first.

        mode: "dense" (cos(f(q), g(passage)), a document scores its best passage), "bm25", or
        "hybrid" (both runs fused: reciprocal-rank fusion or a weighted sum of normalised scores,
        `dense_weight` on the dense side). depth: passages each run retrieves before documents
        are collapsed (default max(100, 4 * top_k)). Any setting left None, and any other field
        of `SearchSettings` not given in `settings` (normalization, rrf_k,
        second_passage_weight), comes from the index's `search_settings`."""
        return self._search(queries, top_k, mode=mode, fusion=fusion, dense_weight=dense_weight, depth=depth,
                            **settings)[0]

    def _search(self, queries: Sequence[str], top_k: int = 10, **changes: Any,
                ) -> tuple[list[list[tuple[str, float]]], list[dict[str, dict[str, int]]], dict[str, Run]]:
        """search's hits; for each run {query: {doc: its best passage's position}}; and the runs
        themselves by name ("dense", "bm25"), documents with the scores that were fused."""
        from ..data.validation import validate_texts

        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k <= 0:
            raise TextMatchError(f"top_k must be a positive integer, got {top_k!r}")
        settings = self.search_settings.with_changes(**changes)
        mode, fusion, dense_weight, depth = settings.mode, settings.fusion, settings.dense_weight, settings.depth
        if depth is not None and depth < top_k:
            raise TextMatchError(f"depth must be an integer >= top_k ({top_k}), got {depth!r}")
        if mode != "dense" and self.bm25 is None:
            raise TextMatchError(f"mode {mode!r} needs a BM25 index; build the index with bm25=True (the default)")
        queries = validate_texts(queries, "query")
        depth = depth or max(100, 4 * top_k)
        phrases: list[list[str]] = [[] for _ in queries]
        if settings.phrases:
            parsed = [split_phrases(q) for q in queries]
            queries, phrases = [q for q, _ in parsed], [p for _, p in parsed]
            if any(phrases):  # the filter below drops documents: retrieve deeper first
                depth = max(depth, PHRASE_DEPTH)
        # z-scores over the collection: standardise each run's passage scores, then fuse them as they are
        standardize = mode == "hybrid" and fusion == "weighted" and settings.normalization == "collection-zscore"
        runs, names = [], [name for name in ("dense", "bm25") if mode in (name, "hybrid")]
        try:
            if mode in ("dense", "hybrid"):
                runs.append(self._dense_run(queries, depth, settings.second_passage_weight, standardize))
            if mode in ("bm25", "hybrid"):
                runs.append(self._bm25_run(queries, depth, settings.second_passage_weight, standardize))
            wheres = [where for _, where in runs]
            runs = [run for run, _ in runs]
        except TextMatchError:
            raise
        except (IndexError, KeyError, ValueError, RuntimeError, TypeError) as exc:  # files that load but do not fit
            raise TextMatchError(
                f"the index in {self.folder} is damaged ({type(exc).__name__}: {exc}); build it again"
            ) from None
        if mode == "hybrid":
            from .fusion import reciprocal_rank_fusion, weighted_fusion

            run = (reciprocal_rank_fusion(runs, k=settings.rrf_k) if fusion == "rrf"
                   else weighted_fusion(runs, [dense_weight, 1.0 - dense_weight],
                                        normalization="none" if standardize else settings.normalization))
        else:
            run = runs[0]
        for i, wanted in enumerate(phrases):
            if wanted:
                docs = run.get(str(i), {})
                run[str(i)] = {doc: score for doc, score in docs.items() if self._has_phrases(doc, wanted)}
        # (doc_id, score) best first by the one ranking rule: score descending, ties by id descending
        hits = [[(doc, float(score)) for doc, score in best(run.get(str(i), {}), top_k)] for i in range(len(queries))]
        return hits, wheres, dict(zip(names, runs))

    def _has_phrases(self, doc: str, phrases: list[str]) -> bool:
        """Whether one passage of `doc` contains every phrase (textmatch.retrieval.phrases)."""
        passages = self._passage_rows()
        if self._doc_passages is None:
            self._doc_passages = {}
            for pos, passage in enumerate(passages):
                self._doc_passages.setdefault(passage.doc_id, []).append(pos)
        return any(contains_phrases(passages[p].text, phrases) for p in self._doc_passages.get(doc, ()))

    def _passage_rows(self) -> list[Passage]:
        """passages.jsonl, read once (hits and phrases need the texts; plain search does not)."""
        if self._passages is None:
            self._passages = read_passages(self.folder)
        return self._passages

    def _collapse(self, scores: np.ndarray, ids: list[list[str]], second: float = 0.0,
                  ) -> tuple[Run, dict[str, dict[str, int]]]:
        """Passage hits -> ({query: {doc: score}}, {query: {doc: its best passage's position}}).
        A document scores its best retrieved passage, plus `second` x its second best when two
        of its passages were retrieved."""
        run: Run = {}
        where: dict[str, dict[str, int]] = {}
        for qi, (row_scores, row_ids) in enumerate(zip(scores, ids)):
            top2: dict[str, list[float]] = {}
            best_passage: dict[str, int] = {}
            for score, pid in zip(row_scores.tolist(), row_ids):  # best first
                doc = self.passage_docs[int(pid)]
                found = top2.setdefault(doc, [])
                if not found:
                    best_passage[doc] = int(pid)
                if len(found) < 2:
                    found.append(score)
            run[str(qi)] = {doc: s[0] + (second * s[1] if second and len(s) > 1 else 0.0) for doc, s in top2.items()}
            where[str(qi)] = best_passage
        return run, where

    def _dense_run(self, queries: list[str], depth: int, second: float, standardize: bool,
                   ) -> tuple[Run, dict[str, dict[str, int]]]:
        with torch.inference_mode():
            emb = self.model.encode(queries, batch_size=self.config.batch_size, role="query")  # (m, dim)
        emb = np.ascontiguousarray(emb, dtype=np.float32)
        scores, ids = self.vectors.search(emb, min(depth, self.vectors.ntotal))  # (m, depth)
        if standardize:
            mean, std = dense_score_moments(emb, self.embedding_moments())  # (m,), (m,)
            scores = (scores - mean[:, None]) / std[:, None]
        return self._collapse(scores, ids, second)

    def _bm25_run(self, queries: list[str], depth: int, second: float, standardize: bool,
                  ) -> tuple[Run, dict[str, dict[str, int]]]:
        scores, ids = self.bm25.search(queries, min(depth, len(self.passage_docs)))  # (m, depth)
        if standardize:
            mean, std = self.bm25.score_moments(queries)  # (m,), (m,)
            scores = (scores - mean[:, None]) / std[:, None]
        return self._collapse(scores, ids, second)

    def embedding_moments(self) -> np.ndarray:
        """The passage embeddings' moments (`passage_moments`), from passage_stats.npy; an index
        built before the file existed computes them from its vectors where they can be read back
        (exact, FAISS flat or HNSW), else a TextMatchError says how to fix it."""
        if self._stats is None:
            path = self.folder / STATS_FILE
            if path.is_file():
                try:
                    stats = np.load(path, allow_pickle=False)
                except (OSError, ValueError, EOFError) as exc:
                    raise TextMatchError(f"{path} is corrupt ({exc}); build the index again") from None
                dim = self.meta["dim"]
                if (stats.dtype != np.float64 or stats.shape != (dim + 2, dim) or not np.isfinite(stats).all()
                        or int(round(stats[0, 0])) != self.vectors.ntotal):
                    raise TextMatchError(f"{path} does not match the index's {self.vectors.ntotal} vectors; build it again")
            elif (vectors := _stored_vectors(self.vectors)) is not None:
                stats = passage_moments(vectors)
            else:
                raise TextMatchError(
                    f"the index in {self.folder} was built before textmatch kept passage statistics, which "
                    "normalization='collection-zscore' needs: build it again, or search with normalization='minmax'"
                )
            self._stats = stats
        return self._stats

    def search_hits(self, queries: Sequence[str], top_k: int = 10, **settings: Any) -> list[list[SearchHit]]:
        """As `search` (same arguments), but each hit is a `SearchHit` that also carries the
        document's title, the passage that scored it (in hybrid mode the dense run's best
        passage of the document, else BM25's) and its position in the index, and, for each run
        that was searched, the document's rank and score in that run: in hybrid mode the dense
        and BM25 ranks a fused hit came from (None where that run did not retrieve it)."""
        ranked, where, runs = self._search(queries, top_k, **settings)
        passages = self._passage_rows()
        out = []
        for qi, hits in enumerate(ranked):
            run_ranks = {name: {doc: r for r, doc in enumerate(rank_run(run.get(str(qi), {})), 1)}
                         for name, run in runs.items()}
            row = []
            for rank, (doc, score) in enumerate(hits, 1):
                pos = next(w[str(qi)][doc] for w in where if doc in w.get(str(qi), {}))
                passage = passages[pos]
                found = {name: (run_ranks[name].get(doc), runs[name].get(str(qi), {}).get(doc)) for name in runs}
                dense, bm25 = found.get("dense", (None, None)), found.get("bm25", (None, None))
                row.append(SearchHit(id=doc, score=score, rank=rank, title=passage.title, passage=passage.text,
                                     passage_index=pos, dense_rank=dense[0], bm25_rank=bm25[0],
                                     dense_score=None if dense[1] is None else float(dense[1]),
                                     bm25_score=None if bm25[1] is None else float(bm25[1])))
            out.append(row)
        return out


@dataclass(frozen=True)
class SearchHit:
    """One document found by `Retriever.search_hits`: its id, score and 1-based rank, its title,
    and the text (title first) and index position of the passage that scored it. dense_rank /
    bm25_rank: the document's 1-based rank in the dense and the BM25 run (None where that run
    was not searched or did not retrieve the document within its depth); dense_score /
    bm25_score: its score there (cosine or BM25, or their collection z-scores when the weighted
    fusion standardises them)."""

    id: str
    score: float
    rank: int
    title: str
    passage: str
    passage_index: int
    dense_rank: int | None = None
    bm25_rank: int | None = None
    dense_score: float | None = None
    bm25_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- helpers ---------------------------------------------------------------------------------------
def _stored_vectors(index: Any) -> np.ndarray | None:
    """All vectors of an exact or FAISS flat / HNSW index (n, dim), or None where they cannot
    be read back exactly (IVF-PQ keeps codes, not vectors)."""
    if hasattr(index, "vectors"):
        return np.asarray(index.vectors, dtype=np.float32)
    try:
        if index.meta().get("kind") in ("flat", "hnsw"):
            return np.asarray(index.faiss_index.reconstruct_n(0, index.ntotal), dtype=np.float32)
    except (AttributeError, RuntimeError):
        pass
    return None


def passage_moments(embeddings: np.ndarray) -> np.ndarray:
    """(dim + 2, dim) float64: row 0 holds n (then zeros), row 1 sum_p g(p), rows 2.. sum_p g(p) g(p)^T
    over the passage embeddings (n, dim). Moments add: those of two collections sum."""
    x = np.asarray(embeddings, dtype=np.float64)  # (n, dim)
    out = np.zeros((x.shape[1] + 2, x.shape[1]))
    out[0, 0] = x.shape[0]
    out[1] = x.sum(0)
    out[2:] = x.T @ x
    return out


def dense_score_moments(queries: np.ndarray, moments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation over every passage p of the collection of the score q . g(p),
    for each query q (m, dim), from `passage_moments` alone (no pass over the vectors):

        mean_q = q . mu,   var_q = q^T (G / n) q - mean_q^2,   mu = sum_p g(p) / n,  G = sum_p g(p) g(p)^T

    Returns ((m,), (m,)); a deviation below 1e-12 is raised to it."""
    n = max(float(moments[0, 0]), 1.0)
    q = np.asarray(queries, dtype=np.float64)  # (m, dim)
    mean = q @ moments[1] / n  # (m,)
    second = np.einsum("md,de,me->m", q, moments[2:], q) / n  # (m,)
    return mean, np.sqrt(np.maximum(second - mean**2, 1e-24))



INDEX_FILES = (INDEX_CONFIG, PASSAGES_FILE, STATS_FILE, "ids.json", "vectors.npy", "index.faiss", "bm25")


def legacy_index_files(folder: Path) -> list[str]:
    """What an index written before manifests owns in `folder`: the files under INDEX_FILES
    names, when index.json says textmatch. A model folder is not an index: an error."""
    from ..core.modeling import is_textmatch_folder

    if is_textmatch_folder(folder):
        raise TextMatchError(f"{folder} holds a textmatch model; write the index to a folder of its own")
    if not (folder / INDEX_CONFIG).is_file():
        return []
    read_index_meta(folder)
    return files_under(folder, INDEX_FILES)


def read_index_meta(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_CONFIG
    if not path.is_file():
        raise TextMatchError(f"{folder} is not a textmatch index (no {INDEX_CONFIG}); build one with `textmatch index`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is corrupt ({exc}); build the index again") from None
    if not isinstance(meta, dict):
        raise TextMatchError(f"{path} is not a textmatch index config; build the index again")
    version = meta.get("format_version")
    if meta.get("library_name") != "textmatch" or not isinstance(version, int):
        raise TextMatchError(f"{path} is not a textmatch index config; build the index again")
    if version > INDEX_FORMAT_VERSION or version < 1:
        raise TextMatchError(
            f"the index in {folder} has format version {version}; this textmatch reads 1..{INDEX_FORMAT_VERSION}: "
            "upgrade textmatch or build the index again"
        )
    return meta


def _model_id(model: Any) -> str:
    """What `Retriever.load` passes to from_pretrained: the saved folder (absolute) or the Hub id."""
    if model.model_dir is not None:
        return str(Path(model.model_dir).resolve())
    if model.base_model and Path(model.base_model).expanduser().is_dir():
        return str(Path(model.base_model).expanduser().resolve())
    return str(model.base_model or "")


def _read_passage_docs(folder: Path, n_vectors: int) -> list[str]:
    """The document id of every passage, one per vector, or a TextMatchError naming the damage."""
    path = folder / PASSAGES_FILE
    docs = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get("doc_id"), str):
                    raise TextMatchError(f"{path} line {n} has no string doc_id; build the index again")
                docs.append(row["doc_id"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is missing or corrupt ({exc}); build the index again") from None
    if len(docs) != n_vectors:
        raise TextMatchError(
            f"{path} lists {len(docs)} passages but the vector index holds {n_vectors}; the index is damaged: build it again"
        )
    return docs


@dataclass(frozen=True)
class Passage:
    """One row of passages.jsonl: the document it belongs to, its text (title first) and the
    document's title ("" in indexes built before titles were kept)."""

    doc_id: str
    text: str
    title: str


def read_passages(folder: Path) -> list[Passage]:
    """Every passage of the index in `folder`, in index order."""
    path = folder / PASSAGES_FILE
    try:
        with open(path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        return [Passage(str(r["doc_id"]), str(r["text"]), str(r.get("title") or "")) for r in rows]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise TextMatchError(f"{path} is missing or corrupt ({exc}); build the index again") from None


def _encode_resumable(model: Any, texts: list[str], folder: Path, fingerprint: str, config: IndexConfig,
                      show_progress_bar: bool) -> tuple[EncodedShards, int]:
    """g' embeddings of `texts` (n, dim), in shards of `config.shard_size` saved under
    `<folder>.partial/` one after the other: a shard written by an interrupted run with the same
    model, texts and settings is reused, not recomputed. Returns (the shards on disk, shards reused)."""
    import hashlib

    from tqdm.auto import tqdm

    if not texts:
        raise TextMatchError("no passages to encode")
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    partial = open_partial(folder, {"model": fingerprint, "texts": digest.hexdigest(), "shard_size": config.shard_size})
    encoded = EncodedShards.uniform(partial, len(texts), config.shard_size)
    reused = sum(path.is_file() for path in encoded.files)
    bar = tqdm(total=len(texts), desc="Encoding", unit="passage", disable=not show_progress_bar)
    try:
        for path, start, count in zip(encoded.files, encoded.starts.tolist(), encoded.counts):
            if not path.is_file():
                emb = model.encode(texts[start : start + count], batch_size=config.batch_size, role="support")
                with atomic_path(path) as tmp:  # a killed run leaves whole shards only
                    np.save(tmp, emb.astype(np.float32), allow_pickle=False)
            bar.update(count)
    finally:
        bar.close()
    return encoded, reused
