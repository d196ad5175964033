"""`textmatch predict`, `evaluate` and `train`: few-shot classification from the shell."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

from ..classification import (
    ContrastiveArguments,
    ContrastiveTrainer,
    Trainer,
    TrainingArguments,
    classification_report,
)
from ..classification.evaluation_plots import classify_for_plots, evaluation_figures
from ..classification.training import episode_shape, with_label_examples
from ..core.episodes import EpisodeSampler
from ..core.modeling import is_textmatch_folder
from ..data import FILE_BUILDERS, column_values, load_text_dataset
from ..errors import TextMatchError
from ..hub import DEFAULT_MODEL
from ..plots import require_matplotlib, write_figures
from .common import (
    DATA_HELP,
    EXIT_OK,
    MODEL_HELP,
    add_architecture_flags,
    add_data_columns,
    add_runtime,
    add_training_runtime,
    architecture_overrides,
    check_plot_folder,
    emit_json,
    load_model,
    read_labelled,
    read_lines_or,
    training_curves,
    training_runtime,
    with_support,
)
from .explain_table import render_explanations

# `train` flags that set a training argument of the same name; left out, the argument keeps its
# default. (--lr and --seed serve retrieval training too, and --max-steps only it.)
TRAINING_FLAGS = [
    ("--n-way", "n_way", int, "classes per episode (default: min(64, classes))"),
    ("--k-shot", "k_shot", int, "support examples per class (default: about 128 texts per episode, <= 5)"),
    ("--q-query", "q_query", int, "query examples per class (default: from the data, <= 5)"),
    ("--episodes", "num_episodes", int, "training episodes (default: from the data, 15 passes over it, 30 to 100)"),
    ("--lr", "learning_rate", float, "encoder learning rate (default: 3e-5; 2e-5 with --data)"),
    ("--eval-steps", "eval_steps", int, "validate every N episodes (default: 25)"),
    ("--eval-episodes", "eval_episodes", int, "validation episodes per evaluation (default: 50)"),
    ("--patience", "early_stopping_patience", int, "stop after N validations without gain (default: 4)"),
    ("--seed", "seed", int, "random seed (default: 42)"),
    ("--frozen-layers", "frozen_layers", int, "freeze the embeddings and the lowest N encoder layers (faster; default: 0)"),
    ("--max-steps", "max_steps", int, "with --data: stop after this many batches"),
]


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("predict", help="label texts against a labelled support set",
                       description="Label each TEXT (or each line of stdin) with the class of its best match.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--support", help=f"labelled examples; {DATA_HELP}. Optional when the model was saved with one")
    p.add_argument("--threshold", type=float, default=None,
                   help="out-of-scope threshold on the best class probability: below it the label is 'oos'")
    p.add_argument("--top-k", type=int, default=3, help="classes listed per text in --json output (default: 3)")
    p.add_argument("--explain", action="store_true",
                   help="show why: the support examples with the largest attention weight (eq. 2), the best example "
                        "of the runner-up class and which head decided (with --json: an 'explanation' per text)")
    p.add_argument("--evidence", type=int, default=3, metavar="K",
                   help="with --explain: support examples (or prototypes) listed per text (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label (default: read lines from stdin)")
    add_data_columns(p, "the support set (split 'train' unless --split)")
    add_runtime(p)
    p.set_defaults(handler=cmd_predict)

    p = sub.add_parser("evaluate", help="accuracy of a model on a labelled test set",
                       description="Classify a labelled test set against the support set and report accuracy.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=MODEL_HELP)
    p.add_argument("--support", help=f"labelled examples; {DATA_HELP}. Optional when the model was saved with one")
    p.add_argument("--test", help=f"labelled test texts; {DATA_HELP}. Or use --dataset")
    p.add_argument("--threshold", type=float, default=None, help="out-of-scope threshold (see predict)")
    p.add_argument("--plot", metavar="DIR",
                   help="write plots into DIR: confusion_matrix.png (the classes with errors), per_class_f1.png, "
                        "embedding_map.png (support set in 2-D, test errors marked) and, with a threshold or test rows "
                        "labelled with the out-of-scope label, oos_threshold.png (needs pip install 'textmatch[plots]')")
    p.add_argument("--record", action="store_true",
                   help="store accuracy and macro F1 in the model card of the --model folder (saved by textmatch), "
                        "with the support set and threshold they were measured with")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_data_columns(p, "the test set (split 'test' unless --split) and, without --support, the support set "
                         "(its 'train' split)")
    add_runtime(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("train", help="fine-tune a model on labelled data with N-way K-shot episodes",
                       description="Episodic training (the matching loss of eq. 1); the output folder holds "
                                   "the trained model with the training data as its support set.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"starting point: Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--train", help=f"training examples; {DATA_HELP}. Or use --dataset")
    p.add_argument("--data", metavar="BEIR_DIR",
                   help="retrieval training instead: a BEIR folder; trains f (queries) and g (documents) on the "
                        "--split qrels (default train) with in-batch and BM25-mined hard negatives")
    p.add_argument("--hard-negatives", type=int, default=1, help="with --data: BM25 hard negatives per query (default 1)")
    p.add_argument("--model-negatives", type=int, default=None,
                   help="with --data: hard negatives per query mined by the model itself, refreshed at the start of "
                        "every epoch (default: RetrievalTrainingArguments.model_negatives)")
    p.add_argument("--epochs", type=int, default=None,
                   help="with --data: passes over the training queries (default: RetrievalTrainingArguments's)")
    p.add_argument("--valid", help="validation examples (same classes, or other classes for meta-training): "
                                   "enables best-checkpoint keeping and early stopping")
    p.add_argument("--output", required=True, help="folder to save the trained model in")
    p.add_argument("--unlabeled", metavar="FILE",
                   help="unlabelled in-domain texts for a contrastive stage before the episodes (SimCSE: each text "
                        "encoded twice, its dropout views are positives, the batch's other texts negatives): one "
                        "text per line (.txt) or a CSV/TSV/JSON(L)/Parquet file with a --text-column (a label column "
                        "is ignored); its log goes to RUN_DIR/contrastive")
    p.add_argument("--unlabeled-epochs", type=float, default=None,
                   help="with --unlabeled: passes over the texts, 64 per batch (default 1)")
    p.add_argument("--unlabeled-max-steps", type=int, default=None,
                   help="with --unlabeled: stop the contrastive stage after N steps (default: from --unlabeled-epochs)")
    add_training_runtime(p)
    for flag, field, kind, text in TRAINING_FLAGS:
        p.add_argument(flag, dest=field, type=kind, default=None, help=text)
    add_architecture_flags(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_data_columns(p, "the training set (split 'train' unless --split)")
    add_runtime(p, inference=False)
    p.set_defaults(handler=cmd_train)


def cmd_predict(args: argparse.Namespace) -> int:
    texts = read_lines_or(args.texts, "texts")
    if args.top_k < 1:
        raise TextMatchError(f"--top-k must be at least 1, got {args.top_k}")
    if args.evidence < 1:
        raise TextMatchError(f"--evidence must be at least 1, got {args.evidence}")
    model = with_support(load_model(args), args, args.split or "train")
    if args.explain:
        return explain_predictions(model, texts, args)
    prediction = model.classify(texts, batch_size=args.batch_size, threshold=args.threshold)  # one encoding per text
    rows = []
    for text, label, p in zip(texts, prediction.labels, prediction.probabilities):
        order = p.argsort()[::-1][: args.top_k]
        rows.append({
            "text": text,
            "label": label,
            "score": float(p.max()),
            "top": [{"label": model.classes_[i], "probability": float(p[i])} for i in order],
        })
    if args.json:
        emit_json({"model": args.model, "threshold": args.threshold, "predictions": rows})
    else:
        for row in rows:
            print(f"{row['label']}\t{row['score']:.3f}\t{row['text']}")
    return EXIT_OK


def explain_predictions(model: Any, texts: list[str], args: argparse.Namespace) -> int:
    """`predict --explain`: one explanation per text, as a table or (--json) as data."""
    explanations = model.explain(texts, top_k=args.evidence, batch_size=args.batch_size, threshold=args.threshold)
    if args.json:
        rows = [{"text": d["text"], "label": d["label"], "score": d["probability"], "explanation": d}
                for d in (e.to_dict() for e in explanations)]
        emit_json({"model": args.model, "threshold": args.threshold, "predictions": rows})
    else:
        print(render_explanations(explanations))
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    if not args.test and not args.dataset:
        raise TextMatchError("no test data: pass --test FILE or --dataset NAME [--split test]")
    if args.record and not is_textmatch_folder(args.model):
        raise TextMatchError(f"--record needs a model folder saved by textmatch; {args.model!r} is not one")
    # with --dataset, --split names the test split; the support set is the dataset's train split
    model = with_support(load_model(args), args, "train")
    if args.test:
        texts, gold = read_labelled(args.test, args, "test")
    else:
        texts, gold = read_labelled(args.dataset, args, "test", args.split or "test")
    if args.plot:
        require_matplotlib()  # before encoding anything
        check_plot_folder(args.plot)
    start = time.perf_counter()
    if args.plot:  # the embeddings are kept for the map: one encoding of each text still
        prediction, query_embeddings = classify_for_plots(model, texts, args.batch_size, args.threshold)
    else:
        prediction = model.classify(texts, batch_size=args.batch_size, threshold=args.threshold)
    predicted = [str(y) for y in prediction.labels]
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
    if args.plot:
        figures = evaluation_figures(model, gold, prediction, query_embeddings, report, report["threshold"],
                                     title=Path(args.test).stem if args.test else str(args.dataset))
        report["plots"] = [str(p) for p in write_figures(args.plot, figures)]
    if args.json:
        emit_json(report)
    else:
        for path in report.get("plots", []):
            print(f"wrote {path}")
        print(f"accuracy {report['accuracy']:.4f} on {report['n']} texts "
              f"({len(model.classes_)} classes, {len(model.support_texts)} support examples)")
        print(f"macro F1 {report['macro_f1']:.4f}; prediction took {seconds:.1f} s")
        if unseen:
            print(f"warning: {len(unseen)} test label(s) have no support examples, e.g. {unseen[0]!r}", file=sys.stderr)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    check_unlabeled_flags(args)
    if args.data:
        if args.train or args.dataset:
            raise TextMatchError("--data (retrieval training) and --train/--dataset (classification) exclude each other")
        if args.unlabeled:
            raise TextMatchError("--unlabeled (a contrastive stage) applies to classification training, not to --data")
        from .retrieve import cmd_train_retrieval

        return cmd_train_retrieval(args)

    overrides = architecture_overrides(args)
    if not args.train and not args.dataset:
        raise TextMatchError("no training data: pass --train FILE or --dataset NAME [--split train]")
    train = read_labelled(args.train, args, "train") if args.train else read_labelled(
        args.dataset, args, "train", args.split or "train"
    )
    valid = read_labelled(args.valid, args, "valid") if args.valid else None
    given = {field: getattr(args, field) for _, field, _, _ in TRAINING_FLAGS if field != "max_steps"}
    training_args = TrainingArguments(**training_runtime(args), **{k: v for k, v in given.items() if v is not None})
    model = load_model(args, **overrides)
    model.check_save_directory(args.output)  # fail now, not after training
    contrastive = None
    if args.unlabeled:  # fail now on the episodes' data, not after the contrastive stage
        episodes = with_label_examples(model, list(train[0]), list(train[1]))  # as the Trainer will draw them
        EpisodeSampler(episodes, *episode_shape(episodes[1], training_args.n_way, training_args.k_shot, training_args.q_query))
        if args.resume and not list(Path(training_args.output_dir).glob("checkpoint-*")):
            raise TextMatchError(f"nothing to resume: {training_args.output_dir} holds no checkpoint-N folder")
        contrastive = contrastive_stage(args, model)
    trainer = Trainer(model, training_args, train_dataset=train, eval_dataset=valid, train_dataset_name=args.dataset)
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    if not trainer.is_world_process_zero():  # under torchrun / accelerate launch the main process saves and reports
        return EXIT_OK
    model.save_pretrained(args.output)
    summary = {
        "output": args.output,
        "run_dir": training_args.output_dir,
        "episodes": result.global_step,
        "training_loss": result.training_loss,
        "best_eval_accuracy": result.best_metric,
        "best_step": result.best_step,
        "train_seconds": round(result.train_runtime, 1),
        "n_support": len(model.support_texts),
        "n_classes": len(model.classes_),
        "processes": training_args.world_size,
        "arguments": model.model_card_data.training_args,
    }
    if contrastive is not None:
        summary["contrastive"] = contrastive
    curves = training_curves(training_args.output_dir)
    if curves is not None:
        summary["training_curves"] = curves
    if args.json:
        emit_json(summary)
    else:
        if contrastive is not None:
            print(f"contrastive stage: {contrastive['steps']} steps on {contrastive['n_texts']} unlabelled texts in "
                  f"{contrastive['train_seconds']:.0f} s (mean loss {contrastive['training_loss']:.4f}), "
                  f"log in {contrastive['run_dir']}")
        best = f", best validation accuracy {result.best_metric:.4f}" if result.best_metric is not None else ""
        print(f"trained {result.global_step} episodes in {result.train_runtime:.0f} s "
              f"(mean loss {result.training_loss:.4f}{best}); saved to {args.output}, log in {training_args.output_dir}")
    return EXIT_OK


UNLABELED_SUFFIXES = (".txt", *FILE_BUILDERS)


def check_unlabeled_flags(args: argparse.Namespace) -> None:
    """--unlabeled-epochs / --unlabeled-max-steps: in range, and only with --unlabeled."""
    for flag, value in (("--unlabeled-epochs", args.unlabeled_epochs), ("--unlabeled-max-steps", args.unlabeled_max_steps)):
        if value is not None and not args.unlabeled:
            raise TextMatchError(f"{flag} sets the contrastive stage: give it with --unlabeled FILE")
    if args.unlabeled_epochs is not None and not (math.isfinite(args.unlabeled_epochs) and args.unlabeled_epochs > 0):
        raise TextMatchError(f"--unlabeled-epochs must be a number > 0, got {args.unlabeled_epochs}")
    if args.unlabeled_max_steps is not None and args.unlabeled_max_steps < 1:
        raise TextMatchError(f"--unlabeled-max-steps must be at least 1, got {args.unlabeled_max_steps}")


def read_unlabeled(source: str, text_column: str) -> list[str]:
    """The texts of --unlabeled: the lines of a .txt file (blank lines skipped, each stripped),
    or the `text_column` of a data file (any label column is ignored)."""
    path = Path(source).expanduser()
    if not path.is_file():
        raise TextMatchError(f"--unlabeled {source!r} is not a file; give one text per line (.txt) or a data file")
    suffix = path.suffix.lower()
    if suffix not in UNLABELED_SUFFIXES:
        raise TextMatchError(f"--unlabeled {source!r}: unknown file type {suffix!r}; use one of {sorted(UNLABELED_SUFFIXES)}")
    if suffix == ".txt":
        try:
            lines = path.read_text(encoding="utf-8-sig").split("\n")
        except UnicodeDecodeError:
            raise TextMatchError(f"--unlabeled {source!r} is not UTF-8 text; save it as UTF-8") from None
        texts = [line.strip() for line in lines if line.strip()]
    else:
        texts = column_values(load_text_dataset(str(path), text_column=text_column, label_column=None), text_column)
    if not texts:
        raise TextMatchError(f"--unlabeled {source!r} holds no texts")
    return texts


def contrastive_stage(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """`train --unlabeled FILE`: the contrastive stage (ContrastiveTrainer) on the model, with
    the run's --device, --seed, --batch-size (texts per forward pass), --mixed-precision and
    progress bar; its log in RUN_DIR/contrastive, no checkpoints (the stage is short: --resume
    runs it again, with the same result, before resuming the episodes). -> the summary's entry."""
    runtime = training_runtime(args)
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "save_strategy", "save_steps", "save_total_limit"):
        runtime.pop(name, None)  # episodes per step and checkpoints: the episodic stage's
    runtime["output_dir"] = str(Path(runtime["output_dir"]) / "contrastive")
    given = {"seed": args.seed, "max_steps": args.unlabeled_max_steps, "num_train_epochs": args.unlabeled_epochs}
    contrastive_args = ContrastiveArguments(**runtime, **{k: v for k, v in given.items() if v is not None})
    trainer = ContrastiveTrainer(model, contrastive_args, read_unlabeled(args.unlabeled, args.text_column))
    result = trainer.train()
    return {
        "unlabeled": args.unlabeled,
        "run_dir": contrastive_args.output_dir,
        "steps": result.global_step,
        "training_loss": result.training_loss,
        "train_seconds": round(result.train_runtime, 1),
        "n_texts": len(trainer.texts),
        "duplicates_dropped": trainer.duplicates_dropped,
        "batch_size": trainer.batch_size,
    }
