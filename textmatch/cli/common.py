"""What the command modules share: the argparse parser class and flag groups, reading labelled
data and models from flags, and printing JSON. Flag choices come from library constants."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from ..backends import BACKENDS
from ..classification.training import RECIPE_MODEL_SETTINGS
from ..core.modeling import MatchingNetwork
from ..data import check_conflicts, load_text_dataset, texts_and_labels
from ..errors import TextMatchError
from ..hub import DEFAULT_MODEL

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE = 0, 1, 2
DATA_HELP = "a CSV/TSV/JSON(L)/Parquet file with text and label columns, or a Hugging Face dataset name/folder"
MODEL_HELP = f"Hub id or folder (default: {DEFAULT_MODEL})"
CONFLICT_WARNING = r".*appear under two or more labels"


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like the rest of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"textmatch {self.prog.split()[-1]}: error: {message}\n")


def add_data_columns(p: argparse.ArgumentParser, dataset_role: str) -> None:
    p.add_argument("--dataset", default=None, metavar="NAME_OR_PATH",
                   help=f"a Hugging Face dataset (Hub name, folder or data file) giving {dataset_role}")
    p.add_argument("--split", default=None,
                   help="split of --dataset to read (defaults: see --dataset); also picks the split of any "
                        "other data source that has several")
    p.add_argument("--text-column", default="text", help="column holding the texts (default: text)")
    p.add_argument("--label-column", default="label", help="column holding the labels (default: label)")
    p.add_argument("--strict", action="store_true",
                   help="refuse data in which the same text carries two labels (default: warn and go on)")


def add_runtime(p: argparse.ArgumentParser, inference: bool = True) -> None:
    p.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available, else cpu)")
    if inference:
        p.add_argument("--backend", default="torch", choices=BACKENDS,
                       help="inference engine: torch, ONNX Runtime, or ONNX Runtime with int8 weights "
                            "(CPU; exported once and cached) (default: torch)")
        p.add_argument("--threads", type=int, default=None, help="CPU threads for inference (default: all cores)")


def add_training_runtime(p: argparse.ArgumentParser) -> None:
    """Flags both kinds of `textmatch train` share: the run folder, checkpoints and resume,
    mixed precision and gradient accumulation (Hugging Face TrainingArguments underneath)."""
    p.add_argument("--run-dir", default=None,
                   help="run folder: training_log.jsonl and, with --save-steps, resume checkpoints "
                        "(default: OUTPUT.run next to the model folder; never inside it)")
    p.add_argument("--save-steps", type=int, default=None,
                   help="write a resume checkpoint every N steps into --run-dir (optimizer, scheduler and RNG "
                        "state pickled by torch: trusted local state, never pushed; default: none)")
    p.add_argument("--save-total-limit", type=int, default=2, help="checkpoints kept in --run-dir (default: 2)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint in --run-dir (written by --save-steps on this machine)")
    p.add_argument("--per-device-train-batch-size", type=int, default=None,
                   help="per step and process: episodes (default 1), or with --data queries, whose positives are "
                        "each other's negatives (default 16)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1,
                   help="batches (episodes) per optimizer step and process (default: 1)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"),
                   help="autocast the forward pass on a GPU (default: no)")


# What `textmatch train` and `pretrain` give a model unless told otherwise (the few-shot recipe)
RECIPE_HEAD = RECIPE_MODEL_SETTINGS["head"]
RECIPE_LABEL_NAMES = RECIPE_MODEL_SETTINGS["label_names"]


def add_architecture_flags(p: argparse.ArgumentParser) -> None:
    """The model settings `train` and `pretrain` share (MatchingNetworkConfig fields)."""
    from ..core.heads import HEADS

    p.add_argument("--temperature", type=float, default=None, help="softmax temperature tau (default: 0.05)")
    p.add_argument("--learn-temperature", action="store_true", help="train tau as a parameter")
    p.add_argument("--fce", action="store_true", help="add Full Context Embeddings (paper appendix A.2)")
    p.add_argument("--prototype", action="store_true", help="match against class means (prototypical variant)")
    p.add_argument("--head", choices=HEADS, default=RECIPE_HEAD,
                   help="how the saved model reads class probabilities: eq. 1 (matching), a logistic regression "
                        f"fitted on the support set (logreg), or their mean (ensemble) (default: {RECIPE_HEAD})")
    p.add_argument("--label-names", action=argparse.BooleanOptionalAction, default=RECIPE_LABEL_NAMES,
                   help="each class's name (card_arrival -> 'card arrival') is one more example of it, in "
                        "training and in the support set (default: on; --no-label-names for labels without meaning)")


def architecture_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """MatchingNetworkConfig fields set by `add_architecture_flags`."""
    overrides: dict[str, Any] = {"head": args.head, "label_names": args.label_names}
    if args.temperature is not None:
        overrides["temperature"] = args.temperature
    if args.learn_temperature:
        overrides["learn_temperature"] = True
    if args.fce:
        overrides["fce"] = True
    if args.prototype:
        overrides["aggregation"] = "prototype"
    return overrides


def training_runtime(args: argparse.Namespace) -> dict[str, Any]:
    """TrainingArguments fields set by the shared training flags (see add_training_runtime)."""
    from pathlib import Path

    from ..core.optimization import cpu_flag

    output = Path(args.output).expanduser().resolve()
    run_dir = Path(args.run_dir).expanduser().resolve() if args.run_dir else output.with_name(output.name + ".run")
    if run_dir == output or output in run_dir.parents:
        raise TextMatchError(
            f"--run-dir {run_dir} is inside the model folder {output}: checkpoints hold pickled trainer state "
            "and must stay out of a folder you share; choose another --run-dir"
        )
    for flag, value, low in (("--save-steps", args.save_steps, 1), ("--save-total-limit", args.save_total_limit, 1),
                             ("--gradient-accumulation-steps", args.gradient_accumulation_steps, 1),
                             ("--per-device-train-batch-size", args.per_device_train_batch_size, 1)):
        if value is not None and value < low:
            raise TextMatchError(f"{flag} must be at least {low}, got {value}")
    batch = {} if args.per_device_train_batch_size is None else {"per_device_train_batch_size": args.per_device_train_batch_size}
    return {
        **batch,
        "output_dir": str(run_dir),
        "encode_batch_size": args.batch_size,
        "use_cpu": cpu_flag(args.device),
        "show_progress_bar": not args.no_progress,
        "save_strategy": "steps" if args.save_steps else "no",
        "save_steps": args.save_steps or 500,
        "save_total_limit": args.save_total_limit,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "fp16": args.mixed_precision == "fp16",
        "bf16": args.mixed_precision == "bf16",
    }


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    # datasets logs a reader's failure ("Failed to read file ...") before raising it; the CLI
    # reports that error itself, in one line, so the log would only repeat it
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)


def read_labelled(
    source: str, args: argparse.Namespace, what: str, split: str | None = None
) -> tuple[list[str], list[str]]:
    split = split or args.split
    ds = load_text_dataset(source, split=split, text_column=args.text_column, label_column=args.label_column)
    texts, labels = texts_and_labels(ds, args.text_column, args.label_column, require_all_label_names=what == "support")
    if not texts:
        raise TextMatchError(f"the {what} data {source!r} has no rows")
    labels = [str(y) for y in labels]
    if what in ("support", "train", "valid"):  # the same text under two labels: warn, or refuse with --strict
        check_conflicts(texts, labels, f"{what} data {source!r}", strict=getattr(args, "strict", False))
    return texts, labels


def load_model(args: argparse.Namespace, **overrides: Any) -> MatchingNetwork:
    backend = getattr(args, "backend", "torch")
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        raise TextMatchError(f"--threads must be at least 1, got {threads}")
    if threads is not None and backend == "torch":
        import torch

        torch.set_num_threads(threads)
    return MatchingNetwork.from_pretrained(args.model, device=args.device, backend=backend, num_threads=threads, **overrides)


def with_support(model: Any, args: argparse.Namespace, dataset_split: str | None = None) -> Any:
    """Fit the support set from --support, else from --dataset's `dataset_split`, else keep the
    model's saved one."""
    if args.support:
        texts, labels = read_labelled(args.support, args, "support")
    elif args.dataset and dataset_split:
        texts, labels = read_labelled(args.dataset, args, "support", dataset_split)
    elif not model.classes_:
        raise TextMatchError("no support set: pass --support FILE (the model was not saved with one)")
    else:
        return model
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CONFLICT_WARNING)  # read_labelled has said it already
        model.fit(texts, labels, batch_size=args.batch_size)
    return model


def read_lines_or(args_list: list[str], what: str) -> list[str]:
    items = list(args_list)
    if items:
        return items
    if sys.stdin.isatty():
        raise TextMatchError(f"no {what} given: pass them as arguments or pipe lines on stdin")
    items = [line.rstrip("\r\n") for line in sys.stdin if line.strip()]  # CRLF input keeps no \r
    if not items:
        raise TextMatchError(f"stdin held no {what}; give one per line")
    return items


def backend_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": getattr(args, "backend", "torch"), "num_threads": getattr(args, "threads", None)}


def check_plot_folder(folder: str) -> None:
    """Raise now what writing the plots of `evaluate --plot` into `folder` would raise at the end
    (a file of yours with a plot's name, a model or index folder, no permission)."""
    from ..classification.evaluation_plots import EVALUATION_PLOTS
    from ..files import check_target
    from ..plots.common import PLOTS_KIND

    check_target(folder, PLOTS_KIND, [f"{name}.png" for name in EVALUATION_PLOTS])


def training_curves(run_dir: str) -> str | None:
    """Write training_curves.png next to the run's training_log.jsonl (textmatch.plots) and
    return its path; without matplotlib (or without a log) one line on stderr says why not."""
    from ..core.callbacks import LOG_NAME
    from ..plots import plot_training_log

    log = Path(run_dir) / LOG_NAME
    if not log.is_file():
        return None
    try:
        return str(plot_training_log(log))
    except TextMatchError as exc:
        print(f"training curves skipped: {exc}", file=sys.stderr)
        return None


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n")
