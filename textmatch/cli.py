"""The `textmatch` command: predict, evaluate and train from the shell.

Exit status: 0 on success, 2 on bad usage or bad input (one line on stderr naming the
problem), 1 on an internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .errors import TextMatchError
from .evaluation import classification_report
from .hub import DEFAULT_MODEL

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like the rest of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"textmatch {self.prog.split()[-1]}: error: {message}\n")


def _add_data_columns(p: argparse.ArgumentParser, dataset_role: str) -> None:
    p.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                   help=f"a Hugging Face dataset (Hub name, folder or data file) giving {dataset_role}")
    p.add_argument("--split", default=None,
                   help="split of --dataset to read (defaults: see --dataset); also picks the split of any "
                        "other data source that has several")
    p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    p.add_argument("--label-column", default="label", help="column holding the labels (default: label)")


def _add_runtime(p: argparse.ArgumentParser, inference: bool = True) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    if inference:
        p.add_argument("--backend", default="torch", choices=["torch", "onnx", "onnx-int8"],
                       help="inference engine: torch, ONNX Runtime, or ONNX Runtime with int8 weights "
                            "(CPU; exported once and cached) (default: torch)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="textmatch",
        description="Few-shot text classification with Matching Networks (Vinyals et al. 2016).",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"textmatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    data_help = "a CSV/TSV/JSON(L)/Parquet file with text and label columns, or a Hugging Face dataset name/folder"

    p = sub.add_parser("predict", help="label texts against a labelled support set",
                       description="Label each TEXT (or each line of stdin) with the class of its best match.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--support", help=f"labelled examples; {data_help}. Optional when the model was saved with one")
    p.add_argument("--threshold", type=float, default=None,
                   help="out-of-scope threshold on the best class probability: below it the label is 'oos'")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per text in --json output (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (default: read lines from stdin)")
    _add_data_columns(p, "the support set (split 'train' unless --split)")
    _add_runtime(p)

    p = sub.add_parser("evaluate", help="accuracy of a model on a labelled test set",
                       description="Classify a labelled test set against the support set and report accuracy.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--support", help=f"labelled examples; {data_help}. Optional when the model was saved with one")
    p.add_argument("--test", help=f"labelled test texts; {data_help}. Or use --dataset")
    p.add_argument("--threshold", type=float, default=None, help="out-of-scope threshold (see predict)")
    p.add_argument("--record", action="store_true",
                   help="store accuracy and macro F1 in the model card of the --model folder (saved by textmatch), "
                        "with the support set and threshold they were measured with")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    _add_data_columns(p, "the test set (split 'test' unless --split) and, without --support, the support set "
                         "(its 'train' split)")
    _add_runtime(p)

    p = sub.add_parser("train", help="fine-tune a model on labelled data with N-way K-shot episodes",
                       description="Episodic training (the matching loss of eq. 1); the output folder holds "
                                   "the trained model with the training data as its support set.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"starting point: Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--train", help=f"training examples; {data_help}. Or use --dataset")
    p.add_argument("--data", metavar="BEIR_DIR",
                   help="retrieval training instead: a BEIR folder; trains f (queries) and g (documents) on the "
                        "--split qrels (default train) with in-batch and BM25-mined hard negatives")
    p.add_argument("--hard-negatives", type=int, default=1, help="with --data: BM25 hard negatives per query (default 1)")
    p.add_argument("--epochs", type=int, default=1, help="with --data: passes over the training queries (default 1)")
    p.add_argument("--max-steps", type=int, default=None, help="with --data: stop after this many batches")
    p.add_argument("--valid", help="validation examples (same classes, or other classes for meta-training): "
                                   "enables best-checkpoint keeping and early stopping")
    p.add_argument("--output", required=True, help="folder to save the trained model in")
    p.add_argument("--n-way", type=int, default=None, help="classes per episode (default: min(64, classes))")
    p.add_argument("--k-shot", type=int, default=None, help="support examples per class (default: about 128 texts per episode, <= 5)")
    p.add_argument("--q-query", type=int, default=None, help="query examples per class (default: from the data, <= 5)")
    p.add_argument("--episodes", type=int, default=None, help="training episodes (default: 150)")
    p.add_argument("--lr", type=float, default=None, help="encoder learning rate (default: 3e-5)")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature tau (default: 0.05)")
    p.add_argument("--learn-temperature", action="store_true", help="train tau as a parameter")
    p.add_argument("--fce", action="store_true", help="add Full Context Embeddings (paper appendix A.2)")
    p.add_argument("--prototype", action="store_true", help="match against class means (prototypical variant)")
    p.add_argument("--eval-steps", type=int, default=None, help="validate every N episodes (default: 25)")
    p.add_argument("--eval-episodes", type=int, default=None, help="validation episodes per evaluation (default: 50)")
    p.add_argument("--patience", type=int, default=None, help="stop after N validations without gain (default: 4)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 42)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    _add_data_columns(p, "the training set (split 'train' unless --split)")
    _add_runtime(p, inference=False)

    p = sub.add_parser("index", help="index a document collection for search",
                       description="Split documents into passages, embed them with g and store them in an index "
                                   "folder (vector index + BM25). An interrupted run resumes where it stopped.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--corpus", required=True,
                   help="a BEIR folder, corpus.jsonl / .json / .csv / .tsv / .parquet, a folder of .txt/.md files, "
                        "or a Hugging Face dataset name (streamed)")
    p.add_argument("--output", required=True, metavar="INDEX_DIR", help="the index folder to write")
    p.add_argument("--add", action="store_true", help="append the corpus's new documents to an existing index")
    p.add_argument("--index-backend", default="auto", choices=["auto", "exact", "flat", "hnsw", "ivfpq"],
                   help="vector index: exact (chunked matrix product) or FAISS flat / hnsw / ivfpq; auto picks by "
                        "corpus size (default: auto)")
    p.add_argument("--passage-tokens", type=int, default=256, help="tokens per passage (default: 256)")
    p.add_argument("--passage-overlap", type=int, default=32, help="tokens shared by consecutive passages (default: 32)")
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 index (no hybrid search)")
    p.add_argument("--shard-size", type=int, default=2048, help="passages per resumable shard (default: 2048)")
    p.add_argument("--id-column", default="_id", help="document id field (default: _id, or id)")
    p.add_argument("--title-column", default="title", help="document title field (default: title)")
    p.add_argument("--text-column", default="text", help="document text field (default: text)")
    p.add_argument("--split", default=None, help="split of a Hugging Face dataset corpus")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_runtime(p)

    p = sub.add_parser("search", help="search an index folder",
                       description="Return the best documents for each QUERY (or each line of stdin).")
    p.add_argument("--index", required=True, metavar="INDEX_DIR", help="a folder written by `textmatch index`")
    p.add_argument("--top-k", type=int, default=10, help="documents per query (default: 10)")
    p.add_argument("--mode", default="dense", choices=["dense", "bm25", "hybrid"], help="scoring (default: dense)")
    p.add_argument("--fusion", default="rrf", choices=["rrf", "weighted"],
                   help="hybrid fusion: reciprocal-rank fusion or weighted min-max scores (default: rrf)")
    p.add_argument("--dense-weight", type=float, default=0.5, help="weight of the dense scores in weighted fusion")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("queries", nargs="*", metavar="QUERY", help="queries (default: read lines from stdin)")
    _add_runtime(p)

    p = sub.add_parser("evaluate-retrieval", help="nDCG@10, MRR@10, Recall@100, MAP@100 on a BEIR folder",
                       description="Index the BEIR folder's corpus, search its queries and score the ranking "
                                   "against the qrels of --split.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--data", required=True, metavar="BEIR_DIR",
                   help="corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--index", default=None, metavar="INDEX_DIR",
                   help="index folder to use or create (default: a temporary one)")
    p.add_argument("--index-backend", default="auto", choices=["auto", "exact", "flat", "hnsw", "ivfpq"],
                   help="vector index when one is built (default: auto)")
    p.add_argument("--mode", default="dense", choices=["dense", "bm25", "hybrid"], help="scoring (default: dense)")
    p.add_argument("--fusion", default="rrf", choices=["rrf", "weighted"], help="hybrid fusion (default: rrf)")
    p.add_argument("--dense-weight", type=float, default=0.5, help="weight of the dense scores in weighted fusion")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    _add_runtime(p)

    p = sub.add_parser("push", help="upload a saved model to the Hugging Face Hub",
                       description="Upload a model folder saved by textmatch (weights, config, tokenizer, support "
                                   "set, model card) to a Hub model repo, creating it if needed. Log in first "
                                   "with `hf auth login` or set HF_TOKEN.")
    p.add_argument("--model", required=True, help="a folder saved by textmatch (e.g. by `textmatch train`)")
    p.add_argument("--repo-id", required=True, help="the Hub repo, e.g. your-name/my-intents")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token (default: the one saved by `hf auth login` or HF_TOKEN)")
    p.add_argument("--commit-message", default="Upload textmatch model", help="the commit message")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return parser


# -- helpers --------------------------------------------------------------------------------------
def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()


def _read_labelled(
    source: str, args: argparse.Namespace, what: str, split: str | None = None
) -> tuple[list[str], list[str]]:
    from .data import load_text_dataset, texts_and_labels

    split = split or args.split
    ds = load_text_dataset(source, split=split, text_column=args.text_column, label_column=args.label_column)
    texts, labels = texts_and_labels(ds, args.text_column, args.label_column, require_all_label_names=what == "support")
    if not texts:
        raise TextMatchError(f"the {what} data {source!r} has no rows")
    return texts, [str(y) for y in labels]


def _load_model(args: argparse.Namespace, **overrides: Any):
    from .modeling import MatchingNetwork

    backend = getattr(args, "backend", "torch")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise TextMatchError(f"--threads must be at least 1, got {threads}")
    if threads is not None and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    return MatchingNetwork.from_pretrained(args.model, device=args.device, backend=backend, num_threads=threads, **overrides)


def _with_support(model: Any, args: argparse.Namespace, dataset_split: str | None = None) -> Any:
    """Fit the support set from --support, else from --dataset's `dataset_split`, else keep the
    model's saved one."""
    if args.support:
        texts, labels = _read_labelled(args.support, args, "support")
        model.fit(texts, labels, batch_size=args.batch_size)
    elif args.dataset and dataset_split:
        texts, labels = _read_labelled(args.dataset, args, "support", dataset_split)
        model.fit(texts, labels, batch_size=args.batch_size)
    elif not model.classes_:
        raise TextMatchError("no support set: pass --support FILE (the model was not saved with one)")
    return model


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")


# -- commands -------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    texts = list(args.texts)
    if not texts:
        if sys.stdin.isatty():
            raise TextMatchError("no texts given: pass TEXT arguments or pipe lines on stdin")
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        if not texts:
            raise TextMatchError("stdin held no texts; give one text per line")
    if args.top_k < 1:
        raise TextMatchError(f"--top-k must be at least 1, got {args.top_k}")
    model = _with_support(_load_model(args), args, args.split or "train")
    probs = model.predict_proba(texts, batch_size=args.batch_size)
    labels = model.predict(texts, batch_size=args.batch_size, threshold=args.threshold)
    rows = []
    for text, label, p in zip(texts, labels, probs):
        order = p.argsort()[::-1][: args.top_k]
        rows.append({
            "text": text,
            "label": label,
            "score": float(p.max()),
            "top": [{"label": model.classes_[i], "probability": float(p[i])} for i in order],
        })
    if args.json:
        _emit_json({"model": args.model, "threshold": args.threshold, "predictions": rows})
    else:
        for row in rows:
            print(f"{row['label']}\t{row['score']:.3f}\t{row['text']}")
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not args.test and not args.dataset:
        raise TextMatchError("no test data: pass --test FILE or --dataset NAME [--split test]")
    if args.record and _saved_folder(args.model) is None:
        raise TextMatchError(f"--record needs a model folder saved by textmatch; {args.model!r} is not one")
    # with --dataset, --split names the test split; the support set is the dataset's train split
    model = _with_support(_load_model(args), args, "train")
    if args.test:
        texts, gold = _read_labelled(args.test, args, "test")
    else:
        texts, gold = _read_labelled(args.dataset, args, "test", args.split or "test")
    start = time.perf_counter()
    predicted = [str(y) for y in model.predict(texts, batch_size=args.batch_size, threshold=args.threshold)]
    seconds = time.perf_counter() - start
    report = classification_report(gold, predicted)
    unseen = sorted(set(gold) - {str(c) for c in model.classes_} - {model.config.oos_label})
    report.update({
        "model": args.model,
        "support": args.support or (f"{args.dataset} (split train)" if args.dataset else "saved with the model"),
        "test": args.test,
        "n_support": len(model.support_texts),
        "n_classes": len(model.classes_),
        "threshold": args.threshold if args.threshold is not None else model.config.threshold,
        "labels_not_in_support": unseen,
        "predict_seconds": round(seconds, 3),
    })
    if args.record:
        if args.threshold is not None:
            model.config.threshold = args.threshold
        test_name = args.dataset if not args.test else Path(args.test).name
        split = args.split or "test"
        metrics = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        model.model_card_data.add_eval_result(test_name, split, metrics)
        model.save_pretrained(args.model)
        report["recorded_in"] = args.model
    if args.json:
        _emit_json(report)
    else:
        print(f"accuracy {report['accuracy']:.4f} on {report['n']} texts "
              f"({len(model.classes_)} classes, {len(model.support_texts)} support examples)")
        print(f"macro F1 {report['macro_f1']:.4f}; prediction took {seconds:.1f} s")
        if unseen:
            print(f"warning: {len(unseen)} test label(s) have no support examples, e.g. {unseen[0]!r}", file=sys.stderr)
    return EXIT_OK


def cmd_train_retrieval(args: argparse.Namespace) -> int:
    """`train --data BEIR_DIR`: the matching loss on (query, relevant document) pairs."""
    from .bm25 import BM25Index, mine_hard_negatives
    from .data import load_beir
    from .retrieval_training import RetrievalTrainer, RetrievalTrainingArguments

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
    given = {"learning_rate": args.lr, "seed": args.seed, "max_steps": args.max_steps}
    training_args = RetrievalTrainingArguments(
        output_dir=args.output,
        num_epochs=args.epochs,
        encode_batch_size=args.batch_size,
        device=args.device or "auto",
        show_progress_bar=not args.no_progress,
        **{k: v for k, v in given.items() if v is not None},
    )
    model = _load_model(args)
    result = RetrievalTrainer(model, training_args, queries, corpus, data.qrels, hard_negatives=negatives).train()
    model.save_pretrained(args.output)
    summary = {"output": args.output, "steps": result.global_step, "training_loss": result.training_loss,
               "train_seconds": round(result.train_runtime, 1), "n_queries": len(data.qrels),
               "hard_negatives": args.hard_negatives, "arguments": training_args.to_dict()}
    if args.json:
        _emit_json(summary)
    else:
        print(f"trained {result.global_step} steps on {len(data.qrels)} queries in {result.train_runtime:.0f} s "
              f"(mean loss {result.training_loss:.4f}); saved to {args.output}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    from .training import Trainer, TrainingArguments

    if args.data:
        if args.train or args.dataset:
            raise TextMatchError("--data (retrieval training) and --train/--dataset (classification) exclude each other")
        return cmd_train_retrieval(args)

    overrides: dict[str, Any] = {}
    if args.temperature is not None:
        overrides["temperature"] = args.temperature
    if args.learn_temperature:
        overrides["learn_temperature"] = True
    if args.fce:
        overrides["fce"] = True
    if args.prototype:
        overrides["aggregation"] = "prototype"
    if not args.train and not args.dataset:
        raise TextMatchError("no training data: pass --train FILE or --dataset NAME [--split train]")
    train = _read_labelled(args.train, args, "train") if args.train else _read_labelled(
        args.dataset, args, "train", args.split or "train"
    )
    valid = _read_labelled(args.valid, args, "valid") if args.valid else None
    given = {
        "n_way": args.n_way, "k_shot": args.k_shot, "q_query": args.q_query, "num_episodes": args.episodes,
        "learning_rate": args.lr, "eval_steps": args.eval_steps, "eval_episodes": args.eval_episodes,
        "early_stopping_patience": args.patience,
        "seed": args.seed,
    }
    training_args = TrainingArguments(
        output_dir=args.output,
        batch_size=args.batch_size,
        device=args.device or "auto",
        show_progress_bar=not args.no_progress,
        **{k: v for k, v in given.items() if v is not None},
    )
    model = _load_model(args, **overrides)
    trainer = Trainer(model, training_args, train_dataset=train, eval_dataset=valid, train_dataset_name=args.dataset)
    result = trainer.train()
    model.save_pretrained(args.output)
    summary = {
        "output": args.output,
        "episodes": result.global_step,
        "training_loss": result.training_loss,
        "best_eval_accuracy": result.best_metric,
        "best_step": result.best_step,
        "train_seconds": round(result.train_runtime, 1),
        "n_support": len(model.support_texts),
        "n_classes": len(model.classes_),
        "arguments": training_args.to_dict(),
    }
    if args.json:
        _emit_json(summary)
    else:
        best = f", best validation accuracy {result.best_metric:.4f}" if result.best_metric is not None else ""
        print(f"trained {result.global_step} episodes in {result.train_runtime:.0f} s "
              f"(mean loss {result.training_loss:.4f}{best}); saved to {args.output}")
    return EXIT_OK


def _read_lines_or(args_list: list[str], what: str) -> list[str]:
    items = list(args_list)
    if items:
        return items
    if sys.stdin.isatty():
        raise TextMatchError(f"no {what} given: pass them as arguments or pipe lines on stdin")
    items = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not items:
        raise TextMatchError(f"stdin held no {what}; give one per line")
    return items


def _index_config(args: argparse.Namespace) -> Any:
    from .retrieval import IndexConfig

    return IndexConfig(
        backend=args.index_backend,
        passage_tokens=getattr(args, "passage_tokens", 256),
        passage_overlap=getattr(args, "passage_overlap", 32),
        bm25=not getattr(args, "no_bm25", False),
        shard_size=getattr(args, "shard_size", 2048),
        batch_size=args.batch_size,
    )


def cmd_index(args: argparse.Namespace) -> int:
    from .retrieval import Retriever

    corpus_options = {"id_column": args.id_column, "title_column": args.title_column,
                      "text_column": args.text_column, "split": args.split}
    start = time.perf_counter()
    if args.add:
        retriever = Retriever.load(args.output, **_backend_kwargs(args))
        before = retriever.meta["n_documents"]
        retriever.add(args.corpus, show_progress_bar=not args.no_progress, **corpus_options)
        added = retriever.meta["n_documents"] - before
    else:
        model = _load_model(args)
        retriever = Retriever.build(model, args.corpus, args.output, _index_config(args),
                                    show_progress_bar=not args.no_progress, **corpus_options)
        added = retriever.meta["n_documents"]
    meta = retriever.meta
    if retriever.last_build.get("reused_shards"):
        print(f"resumed an interrupted build: reused {retriever.last_build['reused_shards']} of "
              f"{retriever.last_build['shards']} encoded shards", file=sys.stderr)
    print(f"indexed {added} documents ({meta['n_documents']} in all, {meta['n_passages']} passages, "
          f"{meta['vector_index']['kind']} index) in {time.perf_counter() - start:.1f} s -> {args.output}")
    return EXIT_OK


def _backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": getattr(args, "backend", "torch"), "num_threads": getattr(args, "threads", None)}


def cmd_search(args: argparse.Namespace) -> int:
    from .retrieval import Retriever

    if args.top_k <= 0:
        raise TextMatchError(f"--top-k must be a positive integer, got {args.top_k}")
    queries = _read_lines_or(args.queries, "queries")
    retriever = Retriever.load(args.index, **_backend_kwargs(args))
    results = retriever.search(queries, top_k=args.top_k, mode=args.mode, fusion=args.fusion,
                               dense_weight=args.dense_weight)
    if args.json:
        _emit_json({"index": args.index, "mode": args.mode, "results": [
            {"query": q, "hits": [{"id": d, "score": s} for d, s in hits]} for q, hits in zip(queries, results)]})
    else:
        for q, hits in zip(queries, results):
            print(f"# {q}")
            for rank, (doc, score) in enumerate(hits, 1):
                print(f"{rank}\t{score:.4f}\t{doc}")
    return EXIT_OK


def cmd_evaluate_retrieval(args: argparse.Namespace) -> int:
    import tempfile

    from .data import load_beir
    from .evaluation import evaluate_retrieval
    from .retrieval import Retriever

    data = load_beir(args.data, split=args.split)
    model = _load_model(args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="textmatch-index-") as tmp:
        folder = Path(args.index) if args.index else Path(tmp) / "index"
        if args.index and (folder / "index.json").is_file():
            retriever = Retriever.load(folder, model=model)
        else:
            retriever = Retriever.build(model, data.corpus, folder, _index_config(args),
                                        show_progress_bar=not args.no_progress)
        index_seconds = time.perf_counter() - start
        query_ids = [str(q) for q in data.queries["_id"][:]]
        texts = [str(t) for t in data.queries["text"][:]]
        start = time.perf_counter()
        results = retriever.search(texts, top_k=100, mode=args.mode, fusion=args.fusion, dense_weight=args.dense_weight)
        search_seconds = time.perf_counter() - start
    run = {qid: dict(hits) for qid, hits in zip(query_ids, results)}
    metrics = evaluate_retrieval(run, data.qrels)
    report = {key: metrics[key] for key in ("ndcg@10", "mrr@10", "recall@100", "map@100", "n_queries")}
    report.update({"model": args.model, "data": args.data, "split": args.split, "mode": args.mode,
                   "fusion": args.fusion if args.mode == "hybrid" else None,
                   "index_seconds": round(index_seconds, 1), "search_seconds": round(search_seconds, 2)})
    if args.json:
        _emit_json(report)
    else:
        print(f"nDCG@10 {report['ndcg@10']:.4f}  MRR@10 {report['mrr@10']:.4f}  Recall@100 {report['recall@100']:.4f}  "
              f"MAP@100 {report['map@100']:.4f}  ({report['n_queries']} queries, {args.mode})")
    return EXIT_OK


def _saved_folder(model: str) -> Path | None:
    """`model` as a local folder saved by textmatch, else None."""
    from .modeling import _read_textmatch_config

    folder = Path(model).expanduser()
    return folder if folder.is_dir() and _read_textmatch_config(folder) is not None else None


def cmd_push(args: argparse.Namespace) -> int:
    from .modeling import MatchingNetwork

    folder = _saved_folder(args.model)
    if folder is None:
        raise TextMatchError(
            f"{args.model!r} is not a model folder saved by textmatch (no textmatch config.json); "
            "save one with `textmatch train` or model.save_pretrained(dir)"
        )
    model = MatchingNetwork.from_pretrained(str(folder))
    info = model.push_to_hub(
        args.repo_id,
        token=args.token,
        private=True if args.private else None,
        commit_message=args.commit_message,
        revision=args.revision,
        create_pr=args.create_pr,
    )
    url = str(getattr(info, "commit_url", "") or getattr(info, "pr_url", "") or "")
    if args.json:
        _emit_json({"repo_id": args.repo_id, "commit_url": url, "model": str(folder)})
    else:
        print(f"pushed {folder} to https://huggingface.co/{args.repo_id}" + (f" ({url})" if url else ""))
    return EXIT_OK


COMMANDS = {
    "predict": cmd_predict,
    "evaluate": cmd_evaluate,
    "train": cmd_train,
    "index": cmd_index,
    "search": cmd_search,
    "evaluate-retrieval": cmd_evaluate_retrieval,
    "push": cmd_push,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2): return, don't raise
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if getattr(args, "batch_size", 1) < 1:
            raise TextMatchError(f"--batch-size must be at least 1, got {args.batch_size}")
        _quiet_libraries()
        return COMMANDS[args.command](args)
    except TextMatchError as exc:
        print(f"textmatch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("textmatch: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if os.environ.get("TEXTMATCH_DEBUG"):
            raise
        print(f"textmatch {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(set TEXTMATCH_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
