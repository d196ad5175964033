"""`textmatch index`, `search`, `evaluate-retrieval` and `train --data`: document retrieval from the shell."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import TextMatchError
from ..hub import DEFAULT_MODEL
from ..retrieval import IndexConfig, Retriever, evaluate_retrieval, load_beir
from ..retrieval.bm25 import BM25Index, mine_hard_negatives
from ..retrieval.ray_encoding import ENGINES, RayEngine
from ..retrieval.search_settings import (
    DEFAULT_SEARCH,
    DENSE_ONLY,
    FUSIONS,
    MODES,
    NORMALIZATIONS,
)
from ..retrieval.training import RetrievalTrainer, RetrievalTrainingArguments
from ..retrieval.vector_index import INDEX_KINDS
from .common import (
    EXIT_OK,
    MODEL_HELP,
    add_runtime,
    backend_kwargs,
    emit_json,
    load_model,
    read_lines_or,
    training_curves,
    training_runtime,
)
from .search_table import COLOR_CHOICES, render_explained, render_table, want_color


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("index", help="index a document collection for search",
                       description="Split documents into passages, embed them with g and store them in an index "
                                   "folder (vector index + BM25). An interrupted run resumes where it stopped.")
    p.add_argument("--model", default=None,
                   help=f"Hub id or folder (default: {DEFAULT_MODEL}; with --add: the index's model, see search)")
    p.add_argument("--allow-index-model", action="store_true",
                   help="with --add: load the model index.json names even if it lies outside the index folder")
    p.add_argument("--corpus", required=True,
                   help="a BEIR folder, corpus.jsonl / .json / .csv / .tsv / .parquet, a folder of .txt/.md files, "
                        "or a Hugging Face dataset name (streamed)")
    p.add_argument("--output", required=True, metavar="INDEX_DIR", help="the index folder to write")
    p.add_argument("--add", action="store_true", help="append the corpus's new documents to an existing index")
    p.add_argument("--index-backend", default="auto", choices=INDEX_KINDS,
                   help="vector index: exact (chunked matrix product) or FAISS flat / hnsw / ivfpq; auto picks by "
                        "corpus size (default: auto)")
    p.add_argument("--passage-tokens", type=int, default=256, help="tokens per passage (default: 256)")
    p.add_argument("--passage-overlap", type=int, default=32, help="tokens shared by consecutive passages (default: 32)")
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 index (no hybrid search)")
    p.add_argument("--bm25-k1", type=float, default=0.9, help="BM25 k1 (default: 0.9)")
    p.add_argument("--bm25-b", type=float, default=0.4, help="BM25 b (default: 0.4)")
    p.add_argument("--title-boost", type=int, default=0,
                   help="add each document's title this many more times to its BM25 text (default: 0)")
    add_search_flags(p, f"what the index records as its default search; default: {DEFAULT_SEARCH.describe()} "
                        "(dense with --no-bm25)")
    p.add_argument("--shard-size", type=int, default=2048, help="passages per resumable shard (default: 2048)")
    p.add_argument("--index-shards", type=int, default=1, metavar="N",
                   help="split the vector index into N shards of --index-backend, searched one after the other and "
                        "merged by the ranking rule (default: 1, one index)")
    p.add_argument("--rerank", type=int, default=0, metavar="R",
                   help="with --index-backend ivfpq: re-score the R x k best candidates with the vectors kept in half "
                        "precision (recall close to exact search; default: 0, off)")
    add_ray_flags(p, "where the corpus is read, split into passages and encoded: local (this process) or ray (a Ray "
                     "Data pipeline: input blocks read by Ray tasks, encoded by actors, each with the --backend and "
                     "--threads given)")
    p.add_argument("--block-size", type=int, default=1000, metavar="N",
                   help="with --engine ray: documents per input block, the unit that is read, encoded and resumed "
                        "(default: 1000)")
    p.add_argument("--id-column", default="_id", help="document id field (default: _id, or id)")
    p.add_argument("--title-column", default="title", help="document title field (default: title)")
    p.add_argument("--text-column", default="text", help="document text field (default: text)")
    p.add_argument("--split", default=None, help="split of a Hugging Face dataset corpus")
    p.add_argument("--follow-symlinks", action="store_true",
                   help="in a folder corpus, also index symbolic links that lead outside the folder (skipped by default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_runtime(p)
    p.set_defaults(handler=cmd_index)

    p = sub.add_parser("search", help="search an index folder",
                       description="Return the best documents for each QUERY (or each line of stdin).")
    p.add_argument("--index", required=True, metavar="INDEX_DIR", help="a folder written by `textmatch index`")
    add_index_model_flags(p)
    p.add_argument("--top-k", type=int, default=10, help="documents per query (default: 10)")
    add_search_flags(p, "default: what the index records, see `textmatch index`")
    p.add_argument("--explain", action="store_true",
                   help="show why: each hit's best-matching passage (its position in the index) and, in hybrid mode, "
                        "the document's rank and score in the dense and the BM25 run (with --json: every SearchHit field)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("--color", default="auto", choices=COLOR_CHOICES,
                   help="highlight the query's terms in the table: auto (on a terminal, unless NO_COLOR is set), "
                        "always or never (default: auto)")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="queries (default: read lines from stdin)")
    add_ray_flags(p, "where the shards of an index built with --index-shards are searched: local (loaded here, "
                     "one after the other) or ray (each shard held by a Ray actor, all searched at once)")
    add_runtime(p)
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("evaluate-retrieval", help="nDCG@10, MRR@10, Recall@100, MAP@100 on a BEIR folder",
                       description="Index the BEIR folder's corpus, search its queries and score the ranking "
                                   "against the qrels of --split.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--data", required=True, metavar="BEIR_DIR",
                   help="corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--index", default=None, metavar="INDEX_DIR",
                   help="index folder to use or create (default: a temporary one)")
    p.add_argument("--index-backend", default="auto", choices=INDEX_KINDS,
                   help="vector index when one is built (default: auto)")
    add_search_flags(p, f"default: {DEFAULT_SEARCH.describe()}, or what --index records")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_runtime(p)
    p.set_defaults(handler=cmd_evaluate_retrieval)


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    """`train --data BEIR_DIR`: the matching loss on (query, relevant document) pairs. Under
    torchrun / accelerate launch every process trains; the main process saves and reports."""
    if args.hard_negatives < 0:
        raise TextMatchError(f"--hard-negatives must be >= 0, got {args.hard_negatives}")
    data = load_beir(args.data, split=args.split or "train")
    corpus = {str(d["_id"]): f"{d['title']} {d['text']}".strip() for d in data.corpus}
    queries = {str(q["_id"]): str(q["text"]) for q in data.queries}
    negatives = None
    if args.hard_negatives > 0:
        bm25 = BM25Index()
        bm25.build(list(corpus.values()), list(corpus))
        negatives = mine_hard_negatives(bm25, queries, data.qrels, n=args.hard_negatives)
    given = {"learning_rate": args.learning_rate, "seed": args.seed, "max_steps": args.max_steps,
             "frozen_layers": args.frozen_layers, "num_train_epochs": args.epochs,
             "model_negatives": args.model_negatives}
    training_args = RetrievalTrainingArguments(
        **training_runtime(args),
        hard_negatives=args.hard_negatives,  # the mined ones per query, each step
        **{k: v for k, v in given.items() if v is not None},
    )
    model = load_model(args)
    model.check_save_directory(args.output)  # fail now, not after training
    trainer = RetrievalTrainer(model, training_args, queries, corpus, data.qrels, hard_negatives=negatives)
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    if not trainer.is_world_process_zero():  # under torchrun / accelerate launch the main process saves and reports
        return EXIT_OK
    model.save_pretrained(args.output)
    summary = {"output": args.output, "run_dir": training_args.output_dir, "steps": result.global_step,
               "training_loss": result.training_loss, "train_seconds": round(result.train_runtime, 1),
               "n_queries": len(data.qrels), "hard_negatives": args.hard_negatives,
               "model_negatives": training_args.model_negatives, "mining_seconds": round(trainer.mining_seconds, 1),
               "processes": training_args.world_size, "arguments": model.model_card_data.training_args}
    curves = training_curves(training_args.output_dir)
    if curves is not None:
        summary["training_curves"] = curves
    if args.json:
        emit_json(summary)
    else:
        print(f"trained {result.global_step} steps on {len(data.qrels)} queries in {result.train_runtime:.0f} s "
              f"(mean loss {result.training_loss:.4f}); saved to {args.output}, log in {training_args.output_dir}")
    return EXIT_OK


def add_ray_flags(p: argparse.ArgumentParser, engine_help: str) -> None:
    """--engine and the --ray-* flags of a RayEngine."""
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help=f"{engine_help}. Ray: a local instance, or the cluster of --ray-address / RAY_ADDRESS; "
                        "pip install 'textmatch[ray]'")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: the Ray cluster to join (e.g. ray://head:10001, head:6379 or auto)")
    p.add_argument("--ray-concurrency", type=int, default=2, metavar="N", help="with --engine ray: actors (default: 2)")
    p.add_argument("--ray-num-cpus", type=float, default=1.0, help="with --engine ray: CPUs per actor (default: 1)")
    p.add_argument("--ray-num-gpus", type=float, default=0.0, help="with --engine ray: GPUs per actor (default: 0)")


def ray_engine(args: argparse.Namespace) -> RayEngine | None:
    """--engine ray and its --ray-* flags as a RayEngine; None for the local engine (where a
    --ray-* flag other than its default is a mistake worth saying)."""
    if args.engine == "local":
        given = [flag for flag, value, default in (("--ray-address", args.ray_address, None),
                                                   ("--ray-concurrency", args.ray_concurrency, 2),
                                                   ("--ray-num-cpus", args.ray_num_cpus, 1.0),
                                                   ("--ray-num-gpus", args.ray_num_gpus, 0.0),
                                                   ("--block-size", getattr(args, "block_size", 1000), 1000))
                 if value != default]
        if given:
            raise TextMatchError(f"{given[0]} applies to --engine ray; add --engine ray or drop it")
        return None
    return RayEngine(address=args.ray_address, concurrency=args.ray_concurrency, num_cpus=args.ray_num_cpus,
                     num_gpus=args.ray_num_gpus, backend=getattr(args, "backend", "torch"), num_threads=args.threads,
                     block_size=getattr(args, "block_size", 1000))


def index_config(args: argparse.Namespace) -> Any:
    return IndexConfig(
        index_kind=args.index_backend,
        passage_tokens=getattr(args, "passage_tokens", 256),
        passage_overlap=getattr(args, "passage_overlap", 32),
        bm25=not getattr(args, "no_bm25", False),
        shard_size=getattr(args, "shard_size", 2048),
        batch_size=args.batch_size,
        bm25_k1=getattr(args, "bm25_k1", 0.9),
        bm25_b=getattr(args, "bm25_b", 0.4),
        bm25_title_boost=getattr(args, "title_boost", 0),
        index_shards=getattr(args, "index_shards", 1),
        rerank=getattr(args, "rerank", 0),
    )


def add_search_flags(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--mode", default=None, choices=MODES, help=f"scoring ({default})")
    p.add_argument("--fusion", default=None, choices=FUSIONS,
                   help="hybrid fusion: reciprocal-rank fusion or a weighted sum of normalised scores")
    p.add_argument("--dense-weight", type=float, default=None,
                   help="weight of the dense scores in weighted fusion (BM25 gets 1 - it)")
    p.add_argument("--normalization", default=None, choices=NORMALIZATIONS,
                   help="how weighted fusion normalises each run's scores (see textmatch.retrieval.search_settings)")


def search_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The search settings given on the command line (None: the index's own)."""
    return {"mode": args.mode, "fusion": args.fusion, "dense_weight": args.dense_weight,
            "normalization": args.normalization}


def add_index_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="the model the index was built with (default: the one index.json names, when it lies inside "
                        f"the index folder or is {DEFAULT_MODEL}; any other needs --model or --allow-index-model)")
    p.add_argument("--allow-index-model", action="store_true",
                   help="load the model index.json names even if it lies outside the index folder or is a Hub id")


def load_index(folder: Any, args: argparse.Namespace, engine: RayEngine | None = None) -> Retriever:
    return Retriever.load(folder, model=args.model, allow_index_model=args.allow_index_model, engine=engine,
                          **backend_kwargs(args))


def cmd_index(args: argparse.Namespace) -> int:
    corpus_options = {"id_column": args.id_column, "title_column": args.title_column,
                      "text_column": args.text_column, "split": args.split, "follow_symlinks": args.follow_symlinks}
    start = time.perf_counter()
    if args.add:
        retriever = load_index(args.output, args)
        before = retriever.meta["n_documents"]
        retriever.add(args.corpus, show_progress_bar=not args.no_progress, engine=ray_engine(args), **corpus_options)
        added = retriever.meta["n_documents"] - before
    else:
        args.model = args.model or DEFAULT_MODEL
        model = load_model(args)
        config = index_config(args)
        search = (DEFAULT_SEARCH if config.bm25 else DENSE_ONLY).with_changes(**search_changes(args))
        retriever = Retriever.build(model, args.corpus, args.output, config, search=search,
                                    show_progress_bar=not args.no_progress, engine=ray_engine(args), **corpus_options)
        added = retriever.meta["n_documents"]
    meta = retriever.meta
    build = retriever.last_build
    unit = "blocks" if "blocks" in build else "shards"  # the Ray engine resumes by input block
    if build.get(f"reused_{unit}"):
        print(f"resumed an interrupted build: reused {build[f'reused_{unit}']} of {build[unit]} encoded {unit}",
              file=sys.stderr)
    print(f"indexed {added} documents ({meta['n_documents']} in all, {meta['n_passages']} passages, "
          f"{meta['vector_index']['kind']} index) in {time.perf_counter() - start:.1f} s -> {args.output}")
    return EXIT_OK


def cmd_search(args: argparse.Namespace) -> int:
    if args.top_k <= 0:
        raise TextMatchError(f"--top-k must be a positive integer, got {args.top_k}")
    queries = read_lines_or(args.queries, "queries")
    retriever = load_index(args.index, args, engine=ray_engine(args))
    plain_json = args.json and not args.explain
    search = retriever.search if plain_json else retriever.search_hits  # hits: titles and passages too
    results = search(queries, top_k=args.top_k, **search_changes(args))
    settings = retriever.search_settings.with_changes(**search_changes(args))
    if plain_json:
        emit_json({"index": args.index, "mode": settings.mode, "results": [
            {"query": q, "hits": [{"id": d, "score": s} for d, s in hits]} for q, hits in zip(queries, results)]})
    elif args.json:  # --explain --json: each hit with its passage and, in hybrid mode, its run ranks
        emit_json({"index": args.index, "mode": settings.mode, "search": settings.to_dict(), "results": [
            {"query": q, "hits": [hit.to_dict() for hit in hits]} for q, hits in zip(queries, results)]})
    else:
        color = want_color(args.color, sys.stdout.isatty(), os.environ)
        hybrid = settings.mode == "hybrid"
        print("\n\n".join(render_explained(q, hits, color=color, hybrid=hybrid) if args.explain
                           else render_table(q, hits, color=color) for q, hits in zip(queries, results)))
    return EXIT_OK


def cmd_evaluate_retrieval(args: argparse.Namespace) -> int:
    data = load_beir(args.data, split=args.split)
    model = load_model(args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="textmatch-index-") as tmp:
        folder = Path(args.index) if args.index else Path(tmp) / "index"
        if args.index and (folder / "index.json").is_file():
            retriever = Retriever.load(folder, model=model)
        else:
            retriever = Retriever.build(model, data.corpus, folder, index_config(args),
                                        show_progress_bar=not args.no_progress)
        index_seconds = time.perf_counter() - start
        query_ids = [str(q) for q in data.queries["_id"][:]]
        texts = [str(t) for t in data.queries["text"][:]]
        start = time.perf_counter()
        results = retriever.search(texts, top_k=100, **search_changes(args))
        settings = retriever.search_settings.with_changes(**search_changes(args))
        search_seconds = time.perf_counter() - start
    run = {qid: dict(hits) for qid, hits in zip(query_ids, results)}
    metrics = evaluate_retrieval(run, data.qrels)
    report = {key: metrics[key] for key in ("ndcg@10", "mrr@10", "recall@100", "map@100", "n_queries")}
    report.update({"model": args.model, "data": args.data, "split": args.split, "mode": settings.mode,
                   "fusion": settings.fusion if settings.mode == "hybrid" else None,
                   "search": settings.to_dict(),
                   "index_seconds": round(index_seconds, 1), "search_seconds": round(search_seconds, 2)})
    if args.json:
        emit_json(report)
    else:
        print(f"nDCG@10 {report['ndcg@10']:.4f}  MRR@10 {report['mrr@10']:.4f}  Recall@100 {report['recall@100']:.4f}  "
              f"MAP@100 {report['map@100']:.4f}  ({report['n_queries']} queries, {settings.describe()})")
    return EXIT_OK
