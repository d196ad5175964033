"""`textmatch pretrain`: episodic meta-training on several labelled datasets at once.

Each episode comes from one dataset, in its own shape (Trainer with a dict train_dataset,
`MultiSourceEpisodeSampler`); the model is saved without a support set, to be fine-tuned on
your own few-shot data with `textmatch train --model DIR --train FILE`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..classification import Trainer, TrainingArguments
from ..errors import TextMatchError
from ..hub import DEFAULT_MODEL
from .classify import TRAINING_FLAGS
from .common import (
    DATA_HELP,
    EXIT_OK,
    add_architecture_flags,
    add_data_columns,
    add_runtime,
    add_training_runtime,
    architecture_overrides,
    emit_json,
    load_model,
    read_labelled,
    training_curves,
    training_runtime,
)

SOURCE_HELP = (f"a labelled source: {DATA_HELP}; named by its file stem, folder name or Hub id, "
               "or NAME=PATH_OR_ID to name it. Repeat for each dataset")
PRETRAIN_FLAGS = [flag for flag in TRAINING_FLAGS if flag[1] != "max_steps"]  # --max-steps is retrieval's
FLAG_HELP = {"learning_rate": "encoder learning rate (default: 3e-5)",
             "n_way": "classes per episode, capped at each source's classes (default: min(64, classes))"}


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("pretrain", help="meta-train a model on several labelled datasets (episodes never mix them)",
                       description="Episodic meta-training on several labelled datasets: each episode comes from one "
                                   "dataset, in that dataset's own N-way K-shot shape, the dataset drawn with "
                                   "probability proportional to the square root of its size. The model is saved "
                                   "without a support set; fine-tune it on your own data with "
                                   "`textmatch train --model OUTPUT --train FILE`.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"starting point: Hub id or folder (default: {DEFAULT_MODEL})")
    p.add_argument("--data", action="append", default=[], metavar="[NAME=]SOURCE", help=SOURCE_HELP)
    p.add_argument("--valid", action="append", default=[], metavar="[NAME=]SOURCE",
                   help="a validation source (same form as --data; repeat): validated on its own episodes, the "
                        "accuracy averaged over sources; enables best-checkpoint keeping and early stopping")
    p.add_argument("--valid-split", default="validation",
                   help="split of each --valid Hub dataset or folder (default: validation)")
    p.add_argument("--output", required=True, help="folder to save the meta-trained model in")
    add_training_runtime(p)
    for flag, field, kind, text in PRETRAIN_FLAGS:
        p.add_argument(flag, dest=field, type=kind, default=None, help=FLAG_HELP.get(field, text))
    add_architecture_flags(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_data_columns(p, "one more training source, named by its id (split 'train' unless --split)")
    add_runtime(p, inference=False)
    p.set_defaults(handler=cmd_pretrain)


def source_name(spec: str) -> tuple[str, str]:
    """(name, location) of a --data / --valid value: NAME=LOCATION, else the location named by
    its file stem, its folder's name or its Hub id. An existing path is never split at '='."""
    path = Path(spec).expanduser()
    if not path.exists() and "=" in spec:
        name, _, location = spec.partition("=")
        if not name.strip() or not location.strip():
            raise TextMatchError(f"{spec!r}: give a source as NAME=PATH_OR_ID or PATH_OR_ID, with both parts non-empty")
        return name.strip(), location.strip()
    if path.is_file():
        return path.stem, spec
    if path.is_dir():
        return path.resolve().name, spec
    return spec, spec  # a Hub dataset id


def read_sources(specs: list[str], args: argparse.Namespace, what: str, split: str) -> dict[str, tuple[list[str], list[str]]]:
    """{name: (texts, labels)} of the sources given with --data (what="train") or --valid;
    two sources of one name are an error."""
    sources: dict[str, tuple[list[str], list[str]]] = {}
    where: dict[str, str] = {}
    for spec in specs:
        name, location = source_name(spec)
        if name in where:
            raise TextMatchError(
                f"two {what} sources are named {name!r} ({where[name]!r} and {location!r}); "
                f"name them apart with NAME=PATH, e.g. --{'data' if what == 'train' else 'valid'} {name}2={location}"
            )
        where[name] = location
        sources[name] = read_labelled(location, args, what, split)
    return sources


def cmd_pretrain(args: argparse.Namespace) -> int:
    specs = list(args.data) + ([args.dataset] if args.dataset else [])
    if not specs:
        raise TextMatchError("no training data: pass --data FILE once per dataset (or NAME=PATH_OR_HUB_ID)")
    train = read_sources(specs, args, "train", args.split or "train")
    valid = read_sources(args.valid, args, "valid", args.valid_split) if args.valid else None
    given = {field: getattr(args, field) for _, field, _, _ in PRETRAIN_FLAGS}
    training_args = TrainingArguments(**training_runtime(args), **{k: v for k, v in given.items() if v is not None})
    model = load_model(args, **architecture_overrides(args))
    model.check_save_directory(args.output)  # fail now, not after training
    trainer = Trainer(model, training_args, train_dataset=train, eval_dataset=valid)
    result = trainer.train(resume_from_checkpoint=True if args.resume else None)
    if not trainer.is_world_process_zero():  # under torchrun / accelerate launch the main process saves and reports
        return EXIT_OK
    model.save_pretrained(args.output)
    sampler = trainer.train_sampler
    sources = {
        name: {"texts": len(train[name][0]), "classes": len(set(train[name][1])),
               "probability": round(sampler.probabilities[name], 4),
               "n_way": s.n_way, "k_shot": s.k_shot, "q_query": s.q_query}
        for name, s in sampler.samplers.items()
    }
    summary = {
        "output": args.output,
        "run_dir": training_args.output_dir,
        "episodes": result.global_step,
        "training_loss": result.training_loss,
        "best_eval_accuracy": result.best_metric,
        "best_step": result.best_step,
        "train_seconds": round(result.train_runtime, 1),
        "sources": sources,
        "n_support": len(model.support_texts),
        "processes": training_args.world_size,
        "arguments": model.model_card_data.training_args,
    }
    curves = training_curves(training_args.output_dir)
    if curves is not None:
        summary["training_curves"] = curves
    if args.json:
        emit_json(summary)
    else:
        best = f", best validation accuracy {result.best_metric:.4f}" if result.best_metric is not None else ""
        print(f"meta-trained {result.global_step} episodes on {len(sources)} sources ({' + '.join(sources)}) in "
              f"{result.train_runtime:.0f} s (mean loss {result.training_loss:.4f}{best}); saved to {args.output}, "
              f"log in {training_args.output_dir}; fine-tune with: textmatch train --model {args.output} --train FILE")
    return EXIT_OK
