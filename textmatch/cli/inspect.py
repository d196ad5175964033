"""`textmatch inspect`: what to check in a support set before training on it (textmatch.core.diagnostics)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..core.diagnostics import SupportDiagnostics, diagnose_support
from ..errors import TextMatchError
from ..hub import DEFAULT_MODEL
from .common import (
    DATA_HELP,
    EXIT_OK,
    MODEL_HELP,
    add_data_columns,
    add_runtime,
    emit_json,
    load_model,
    with_support,
)

ALL_CLASSES_UP_TO = 30  # per-class counts list every class up to this many, else the smallest --top
TEXT_WIDTH = 100


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "inspect", help="check a support set before training: near-duplicates, misplaced examples, leave-one-out accuracy",
        description="Diagnose a labelled support set with the model's cached embeddings: examples per class, "
                    "near-duplicate examples across classes, examples closer to another class's prototype than to "
                    "their own, and the leave-one-out accuracy of eq. 1 per class.")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"{MODEL_HELP}; a folder saved by textmatch carries its support set")
    p.add_argument("--support", help=f"labelled examples; {DATA_HELP}. Optional when the model was saved with one")
    p.add_argument("--near-duplicate-threshold", type=float, default=0.95,
                   help="cosine similarity in [-1, 1] from which two examples of different classes are listed as "
                        "near-duplicates (default: 0.95)")
    p.add_argument("--top", type=int, default=20,
                   help="rows listed per section, in the report and in --json (the counts stay complete) (default: 20)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_data_columns(p, "the support set (split 'train' unless --split)")
    add_runtime(p)
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    threshold = args.near_duplicate_threshold
    if not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise TextMatchError(f"--near-duplicate-threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if args.top < 1:
        raise TextMatchError(f"--top must be at least 1, got {args.top}")
    model = with_support(load_model(args), args, args.split or "train")
    report = diagnose_support(model, near_duplicate_threshold=threshold, max_rows=args.top, batch_size=args.batch_size)
    if args.json:
        emit_json({"model": str(args.model), **report.to_dict()})
    else:
        print(render(report, args.top))
    return EXIT_OK


def _line(text: str) -> str:
    """A text on one line of at most TEXT_WIDTH characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= TEXT_WIDTH else flat[: TEXT_WIDTH - 3] + "..."


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def render(report: SupportDiagnostics, top: int) -> str:
    """The plain-text report of `textmatch inspect`."""
    counts, summary = report.counts, report.count_summary()
    width = min(32, max((len(str(c)) for c in report.classes), default=0))
    out = [f"support set: {sum(counts.values())} examples, {len(report.classes)} classes",
           f"examples per class: min {summary['min']}, median {summary['median']:g}, max {summary['max']}"]
    by_count = sorted(report.classes, key=lambda c: (counts[c], str(c)))
    if len(report.classes) <= ALL_CLASSES_UP_TO:
        shown = by_count
    else:
        shown = by_count[:top]
        out.append(f"fewest examples ({len(shown)} of {len(report.classes)} classes):")
    out += [f"  {str(c):<{width}}  {counts[c]}" for c in shown]

    out += ["", f"near-duplicates across classes (cosine >= {report.threshold:g}): {report.near_duplicate_count} pair(s)"
                + _shown(len(report.near_duplicates), report.near_duplicate_count)]
    for row in report.near_duplicates:
        out.append(f"  {row.cosine:.3f}  [{row.label_a}] {_line(row.text_a)}")
        out.append(f"         [{row.label_b}] {_line(row.text_b)}")

    out += ["", "misplaced examples (closer to another class's prototype than to their own, computed without them): "
                f"{report.misplaced_count}" + _shown(len(report.misplaced), report.misplaced_count)]
    for row in report.misplaced:
        out.append(f"  [{row.label} -> {row.nearest_class}] own {row.cosine_own:.3f}, other {row.cosine_other:.3f}: "
                   f"{_line(row.text)}")

    counted = {c: counts[c] for c in report.classes if report.loo_accuracy.get(c) is not None}
    n_counted = sum(counted.values())
    correct = n_counted - report.loo_error_count
    out += ["", f"leave-one-out accuracy (eq. 1): {_percent(report.loo_overall)} ({correct}/{n_counted})"]
    worst = sorted(counted, key=lambda c: (report.loo_accuracy[c], str(c)))
    for c in worst[: len(worst) if len(worst) <= ALL_CLASSES_UP_TO else top]:
        right = round((report.loo_accuracy[c] or 0.0) * counted[c])
        out.append(f"  {str(c):<{width}}  {_percent(report.loo_accuracy[c]):>6} ({right}/{counted[c]})")
    if report.loo_skipped_classes:
        out.append("  not counted (a single example, nothing left to match): "
                   + ", ".join(str(c) for c in report.loo_skipped_classes[:top]))
    if report.loo_errors:
        out.append(f"leave-one-out errors: {report.loo_error_count}" + _shown(len(report.loo_errors), report.loo_error_count))
        for e in report.loo_errors:
            out.append(f"  [{e.label} -> {e.predicted}] p={e.probability:.2f}: {_line(e.text)}")
    out += ["", f"note: {report.head_note}"]
    return "\n".join(out)


def _shown(shown: int, total: int) -> str:
    return f", the first {shown} listed" if shown < total else ""
