"""Render the few-shot benchmark results: fewshot.json -> fewshot.md + fewshot_vs_k.png + fewshot_pareto.png.

`render(output_dir)` reads `<output_dir>/fewshot.json` (written by scripts/bench_fewshot.py)
and writes, each atomically (bench_common: a temporary file in the same folder, then `os.replace`):

  fewshot.md          one table per section that has records, each followed by the commands
                      that produced its records
  fewshot_vs_k.png    test accuracy against K on BANKING77 from the "drawn" section (mean over
                      seeds, error bars = sd), one line per method
  fewshot_pareto.png  test accuracy against train seconds (log scale) of every method of the
                      "generalised" section, one subplot per (dataset, K), seed means, with the
                      Pareto front joined by a line and the target accuracy dashed

Everything below `render` is a small pure function from records to lines of Markdown, so each
part can be read (and tested) on its own.

  python scripts/bench_fewshot.py --render-only --output-dir results
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common
from bench_common import markdown_table, write_bytes_atomic, write_text_atomic

Record = dict[str, Any]
Cell = tuple[str, int]  # (dataset, k)

DASH = "–"  # a cell that was not run

METHOD_NAMES = {
    "cosine": "Cosine matching (frozen)",
    "prototype": "Prototypes (frozen)",
    "logreg": "Logistic regression (frozen)",
    "setfit": "SetFit 1.2",
    "textmatch": "textmatch train (round-2 default recipe)",
    "textmatch-meta": "textmatch pretrain on the other intent sets, then textmatch train",
    "textmatch-unlabeled": "textmatch train --unlabeled (the train split's texts without labels)",
    "bilstm": "BiLSTM from scratch, textmatch train",
    "bilstm-init": "BiLSTM with MiniLM's input embeddings, textmatch train",
    "mn": "Matching Network, fine-tuned (round-1 default: 150 episodes, eq. 1 head)",
    "mn-fce": "Matching Network, fine-tuned on support + FCE",
    "mn-prototype": "Matching Network, fine-tuned on support, prototype variant",
    "intent-matcher": "Intent matcher (meta-trained on the other dataset) + fine-tuned",
    "intent-matcher-0": "Intent matcher, no fine-tuning",
}
# Short labels for the legend of the Pareto plot.
SHORT_NAMES = {
    "cosine": "cosine (frozen)",
    "prototype": "prototypes (frozen)",
    "logreg": "logreg (frozen)",
    "setfit": "SetFit",
    "textmatch": "textmatch",
    "textmatch-meta": "textmatch + pretrain",
    "textmatch-unlabeled": "textmatch + unlabeled",
    "bilstm": "BiLSTM",
    "bilstm-init": "BiLSTM, MiniLM emb.",
    "mn": "MN (round 1)",
    "mn-fce": "MN + FCE",
    "mn-prototype": "MN, prototypes",
    "intent-matcher": "intent matcher + ft",
    "intent-matcher-0": "intent matcher, no ft",
}
DATASET_NAMES = {"banking77": "B77", "clinc150": "CLINC", "banking77_oos": "B77-OOS"}
DATASET_ORDER = ("banking77", "clinc150", "banking77_oos")

# Generalised few-shot test accuracy (%) on the fixed CPFT splits, not measured here.
GENERALISED_CELLS: tuple[Cell, ...] = (("banking77", 5), ("banking77", 10), ("clinc150", 5), ("clinc150", 10))
PUBLISHED_ROWS: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("USE+ConveRT (published, Casanueva et al. 2020; not measured here)", (77.75, 85.19, 90.49, 93.26)),
    ("CPFT (published, Zhang et al. 2021; not measured here)", (80.86, 87.20, 92.34, 94.18)),
)
GENERALISED_TARGET = ("target", (83.0, 89.0, 93.0, 95.0))
EPISODIC_KS = (1, 5)
EPISODIC_TARGET = {1: 92.0, 5: 97.5}
DRAWN_PLOT_KS = (1, 2, 5, 10)

SECTION_TITLES = {
    "generalised": "Generalised few-shot (fixed CPFT splits)",
    "drawn": "Drawn K (mean ± sd over seeds)",
    "episodic": "Episodic 5-way (BANKING77 ProtAugment folds)",
    "oos": "Out-of-scope",
    "intent-matcher": "Intent matchers",
    "ablation": "Ablation",
    "timing": "Timing (generalised few-shot)",
    "cli": "textmatch train with its defaults (the command line)",
}


# -- entry point --------------------------------------------------------------------------------


def render(output_dir: Path) -> None:
    """Write `fewshot.md`, `fewshot_vs_k.png` and `fewshot_pareto.png` in `output_dir` from its
    `fewshot.json`."""
    output_dir = Path(output_dir)
    data = load_results(output_dir / "fewshot.json")
    write_text_atomic(output_dir / "fewshot.md", render_markdown(data))
    write_bytes_atomic(output_dir / "fewshot_vs_k.png", plot_accuracy_vs_k(data.get("records", []), "banking77"))
    write_bytes_atomic(output_dir / "fewshot_pareto.png", plot_pareto(data.get("records", [])))


def load_results(path: Path) -> dict[str, Any]:
    """The parsed results file, with "runs" and "records" always present (lists)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run scripts/bench_fewshot.py first (it writes fewshot.json there)")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {**data, "runs": list(data.get("runs") or []), "records": list(data.get("records") or [])}


# -- the Markdown document ------------------------------------------------------------------------


def render_markdown(data: dict[str, Any]) -> str:
    """The whole fewshot.md: title, runs, then one part per section that has records."""
    records = data.get("records", [])
    lines = ["# Few-shot intent classification benchmark", ""]
    notes = data.get("notes", [])
    if notes:  # what the records alone do not say (how the results were assembled)
        lines += ["Notes:", ""] + [f"- {note}" for note in notes] + [""]
    lines += runs_lines(data.get("runs", []))
    renderers: tuple[tuple[str, Callable[[list[Record]], list[str]]], ...] = (
        ("generalised", generalised_lines),
        ("drawn", drawn_lines),
        ("episodic", episodic_lines),
        ("oos", oos_lines),
        ("intent-matcher", intent_matcher_lines),
        ("ablation", ablation_lines),
        ("timing", timing_lines),
        ("cli", cli_lines),
    )
    rendered = 0
    for section, build in renderers:
        source = "generalised" if section == "timing" else section
        chosen = section_records(records, source)
        if chosen:
            lines += [f"## {SECTION_TITLES[section]}", ""] + build(chosen)
            if section != "timing":
                lines += commands_lines(chosen)
            rendered += 1
    if not rendered:
        lines += ["No records yet: run `python scripts/bench_fewshot.py` to measure some.", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def runs_lines(runs: Sequence[Record]) -> list[str]:
    """One bullet per run: date, machine, wall time and the command."""
    if not runs:
        return ["No runs recorded.", ""]
    lines = ["Runs (date, machine, wall time, command):", ""]
    for run in runs:
        wall = f", wall {format_seconds(run['wall_s'])} s" if isinstance(run.get("wall_s"), (int, float)) else ""
        lines.append(f"- {run.get('date', '?')}: {machine_line(run.get('machine') or {})}{wall}: `{run.get('command', '?')}`")
    return lines + [""]


def machine_line(machine: Record) -> str:
    """'2 CPUs (AMD EPYC ...), torch 2.13.0 on 2 threads, Python 3.11.7'."""
    return (f"{machine.get('cpus', '?')} CPUs ({machine.get('cpu') or 'unknown CPU'}), "
            f"torch {machine.get('torch', '?')} on {machine.get('torch_threads', '?')} threads, "
            f"Python {machine.get('python', '?')}")


def commands_lines(records: Iterable[Record]) -> list[str]:
    """The distinct commands that produced `records`, in order of first appearance, fenced."""
    commands = distinct(r["command"] for r in records if r.get("command"))
    if not commands:
        return []
    return ["Commands:", "", "```bash", *commands, "```", ""]


# -- generalised ----------------------------------------------------------------------------------


def generalised_lines(records: list[Record]) -> list[str]:
    """Test accuracy and train seconds per method and (dataset, K); the published and target
    rows; then the valid accuracies, where hyperparameters are chosen."""
    cells = cells_of(records, GENERALISED_CELLS)
    by_key = group_records(records)
    reasons = skip_reasons(records)
    header = ["method"] + [f"{cell_name(c)} test acc" for c in cells] + [f"{cell_name(c)} train s" for c in cells]
    rows = []
    for method in methods_of(records):
        found = [by_key.get((d, k, method), []) for d, k in cells]
        rows.append([method_name(method)]
                    + [group_cell(g, "test_accuracy", reasons, format_pct) for g in found]
                    + [group_cell(g, "train_s", reasons, format_seconds, skipped_text=DASH, spread=False) for g in found])
    for label, values in (*PUBLISHED_ROWS, GENERALISED_TARGET):
        rows.append([label] + reference_cells(cells, dict(zip(GENERALISED_CELLS, values))) + [DASH] * len(cells))
    several = any(len(measured_records(g, "test_accuracy")) > 1 for g in by_key.values())
    seeds = ("; where several training seeds were run (same support), mean ± sample sd over them (n = seeds) "
             "and train s their mean; otherwise seed 0") if several else ", seed 0"
    lines = [f"Accuracy (%) on the full test set; the support is the fixed `cpft/train_K.csv` (K examples of every class){seeds}.", ""]
    lines += markdown_table(header, rows) + [""]
    lines += ["Valid accuracy (%), where hyperparameters are chosen:", ""]
    valid_rows = [[method_name(m)] + [group_cell(by_key.get((d, k, m), []), "valid_accuracy", reasons, format_pct) for d, k in cells]
                  for m in methods_of(records)]
    lines += markdown_table(["method"] + [cell_name(c) for c in cells], valid_rows) + [""]
    return lines + notes_lines(reasons) + legend_lines()


def reference_cells(cells: Sequence[Cell], values: dict[Cell, float]) -> list[str]:
    """Formatted reference values for `cells`, with a dash where the reference has none."""
    return [format_pct(values[c]) if c in values else DASH for c in cells]


# -- drawn ----------------------------------------------------------------------------------------


def drawn_lines(records: list[Record]) -> list[str]:
    """Test accuracy mean ± sd over seeds (n = seeds measured) per method and (dataset, K)."""
    cells = cells_of(records)
    reasons = skip_reasons(records)
    rows = []
    for method in methods_of(records):
        row = [method_name(method)]
        for dataset, k in cells:
            group = [r for r in records if (r.get("dataset"), r.get("k"), r.get("method")) == (dataset, k, method)]
            row.append(seeds_cell(group, "test_accuracy", reasons))
        rows.append(row)
    lines = [("Test accuracy (%): K examples of every class drawn from the full train split with each seed; "
             "mean ± sample sd over the seeds measured (n)."), ""]
    return lines + markdown_table(["method"] + [cell_name(c) for c in cells], rows) + [""] + notes_lines(reasons) + legend_lines()


def seeds_cell(group: Sequence[Record], metric: str, reasons: Sequence[str], fmt: Callable[[float], str] | None = None) -> str:
    """'mean ± sd (n=N)' over the measured records of one cell (`fmt`, default `format_pct`);
    'skipped [i]' when every record of the cell was skipped; a dash when there is none."""
    fmt = fmt or format_pct
    values = [float(r[metric]) for r in group if not r.get("skipped") and is_number(r.get(metric))]
    if values:
        mean, sd = mean_sd(values)
        return f"{fmt(mean)} ± {fmt(sd)} (n={len(values)})"
    skipped = [r for r in group if r.get("skipped")]
    return skipped_cell(skipped[-1], reasons) if skipped else DASH


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, sd


# -- episodic -------------------------------------------------------------------------------------


# In the episodic protocol the trained networks are meta-trained on the fold's train classes
# (early stopping on its valid classes), not fine-tuned on a support set.
EPISODIC_NAMES = {
    "mn": "Matching Network, meta-trained on the fold's train classes",
    "mn-fce": "Matching Network + FCE, meta-trained on the fold's train classes",
    "mn-prototype": "Matching Network, prototype variant, meta-trained on the fold's train classes",
    "intent-matcher-0": "Intent matcher (meta-trained on CLINC150 only), no fine-tuning",
    "textmatch-meta": "Matching Network meta-trained on the fold's train classes + CLINC150, SNIPS, ATIS",
}


def episodic_lines(records: list[Record]) -> list[str]:
    """Per method and K: mean accuracy over folds, the per-fold accuracies and the mean 95% CI;
    the targets as a last row."""
    ks = sorted(set(EPISODIC_KS) | {r["k"] for r in records if r.get("k") is not None})
    folds = sorted({str(r["fold"]) for r in records if r.get("fold") is not None})
    reasons = skip_reasons(records)
    header = ["method"]
    for k in ks:
        header += [f"{k}-shot acc", f"{k}-shot per fold ({' / '.join(folds)})", f"{k}-shot mean 95% CI"]
    rows = []
    for method in methods_of(records):
        row = [EPISODIC_NAMES.get(method, method_name(method))]
        for k in ks:
            group = [r for r in records if r.get("method") == method and r.get("k") == k]
            row += fold_cells(group, folds, reasons)
        rows.append(row)
    target = ["target"]
    for k in ks:
        target += [format_pct(EPISODIC_TARGET[k]) if k in EPISODIC_TARGET else DASH, DASH, DASH]
    rows.append(target)
    episodes = distinct(str(r["episodes"]) for r in records if r.get("episodes") is not None)
    lines = [("5-way K-shot accuracy (%) on episodes of each fold's test classes, 5 queries per class; "
             f"mean over folds, then each fold; episodes per fold: {', '.join(episodes) or '?'}."), ""]
    return lines + markdown_table(header, rows) + [""] + notes_lines(reasons) + legend_lines()


def fold_cells(group: Sequence[Record], folds: Sequence[str], reasons: Sequence[str]) -> list[str]:
    """[mean over folds, '(a / b / ...)', mean ± CI] for one method and K."""
    measured = {str(r.get("fold")): r for r in group if not r.get("skipped") and is_number(r.get("accuracy"))}
    if not measured:
        skipped = [r for r in group if r.get("skipped")]
        return [skipped_cell(skipped[-1], reasons) if skipped else DASH, DASH, DASH]
    accuracies = [float(r["accuracy"]) for r in measured.values()]
    per_fold = " / ".join(format_pct(float(measured[f]["accuracy"])) if f in measured else DASH for f in folds)
    cis = [float(r["ci95"]) for r in measured.values() if is_number(r.get("ci95"))]
    ci = f"± {format_pct(statistics.fmean(cis))}" if cis else DASH
    return [format_pct(statistics.fmean(accuracies)), f"({per_fold})", ci]


# -- out-of-scope ---------------------------------------------------------------------------------

OOS_COLUMNS = (
    ("in-scope acc", "in_scope_accuracy"),
    ("OOS precision", "oos_precision"),
    ("OOS recall", "oos_recall"),
    ("OOS F1", "oos_f1"),
    ("threshold", "threshold"),
    ("in-scope acc, no threshold", "in_scope_accuracy_no_threshold"),
)


# One table per dataset: (sub-heading, what the table measures). Records without a dataset are
# the earliest ones, all CLINC150.
OOS_DATASETS = {
    "clinc150": ("CLINC150", ("CLINC150, support `cpft/train_10.csv`; a query whose best class probability is below the threshold "
                              "(chosen for OOS F1 on valid + oos_valid) is out-of-scope. Percentages on test + oos_test.")),
    "banking77_oos": ("BANKING77-OOS", ("BANKING77-OOS (Zhang et al. 2021): the 50 in-scope BANKING77 intents, with in-domain "
                                        "out-of-scope queries from the other 27; support: 10 examples of every in-scope class drawn "
                                        "from its train split with each seed; a query whose best class probability is below the "
                                        "threshold (chosen for OOS F1 on valid + id-oos_valid) is out-of-scope. Percentages on "
                                        "test + id-oos_test.")),
}
OOS_SEEDS = "Where several seeds were run, mean ± sample sd over them (n = seeds)."


def oos_dataset(record: Record) -> str:
    """The dataset of an OOS record; "clinc150" for the early records that have none."""
    return str(record.get("dataset") or "clinc150")


def oos_lines(records: list[Record]) -> list[str]:
    """Per dataset (a sub-heading each): in-scope accuracy and OOS precision / recall / F1 with
    the threshold chosen on valid, mean ± sd over seeds where there are several."""
    rank = {d: i for i, d in enumerate(OOS_DATASETS)}
    datasets = sorted(distinct(oos_dataset(r) for r in records), key=lambda d: (rank.get(d, len(rank)), d))
    lines: list[str] = []
    for dataset in datasets:
        chosen = [{**r, "dataset": dataset} for r in records if oos_dataset(r) == dataset]
        heading, sentence = OOS_DATASETS.get(dataset, (dataset, f"{dataset}: threshold chosen on valid, percentages on test."))
        grouped = group_records(chosen)
        by_method = {m: [r for key, group in grouped.items() if key[2] == m for r in group] for m in methods_of(chosen)}
        reasons = skip_reasons(chosen)
        rows = []
        for method, group in by_method.items():
            rows.append([method_name(method)] + [
                group_cell(group, key, reasons, format_threshold if key == "threshold" else format_pct, skipped_text=None if i == 0 else DASH)
                for i, (_, key) in enumerate(OOS_COLUMNS)])
        several = any(len(measured_records(g, "in_scope_accuracy")) > 1 for g in by_method.values())
        lines += [f"### {heading}", "", sentence + (f" {OOS_SEEDS}" if several else ""), ""]
        lines += markdown_table(["method"] + [name for name, _ in OOS_COLUMNS], rows) + [""] + notes_lines(reasons)
    return lines + legend_lines()


# -- intent matchers ------------------------------------------------------------------------------


def intent_matcher_lines(records: list[Record]) -> list[str]:
    """One row per meta-trained intent matcher: source, target, train seconds, CLI command."""
    reasons = skip_reasons(records)
    rows = []
    for r in records:
        target = str(r.get("variant") or "")
        target = target[len("for "):] if target.startswith("for ") else (target or DASH)
        rows.append([
            str(r.get("dataset") or DASH),
            target,
            metric_cell(r, "train_s", reasons, format_seconds),
            f"`{escape_cell(r['cli'])}`" if r.get("cli") else DASH,
        ])
    lines = ["Meta-trained on the source dataset's train split (early stopping on its valid split), used on the target.", ""]
    return lines + markdown_table(["source", "target", "train s", "cli"], rows) + [""] + notes_lines(reasons)


# -- ablation -------------------------------------------------------------------------------------


def ablation_lines(records: list[Record]) -> list[str]:
    """The ablation records as they come, in order of appearance."""
    reasons = skip_reasons(records)
    rows = []
    for r in records:
        rows.append([
            str(r.get("dataset") or DASH),
            str(r["k"]) if r.get("k") is not None else DASH,
            method_name(r["method"]) if r.get("method") else DASH,
            escape_cell(str(r.get("variant") or DASH)),
            metric_cell(r, "valid_accuracy", reasons, format_pct),
            metric_cell(r, "test_accuracy", reasons, format_pct, skipped_text=DASH),
            metric_cell(r, "train_s", reasons, format_seconds, skipped_text=DASH),
            escape_cell(str(r.get("note") or "")),
        ])
    header = ["dataset", "K", "method", "variant", "valid acc", "test acc", "train s", "note"]
    return markdown_table(header, rows) + [""] + notes_lines(reasons) + legend_lines()


# -- the command line -----------------------------------------------------------------------------


def cli_lines(records: list[Record]) -> list[str]:
    """`textmatch train` with its defaults as a user runs it: episodes, training and wall
    seconds, test accuracy trained and untrained, the command."""
    reasons = skip_reasons(records)
    rows = [[escape_cell(str(r.get("dataset") or DASH)), value_or_dash(r.get("episodes"), lambda v: f"{v:.0f}"),
             metric_cell(r, "train_s", reasons, format_seconds), metric_cell(r, "wall_s", reasons, format_seconds, skipped_text=DASH),
             metric_cell(r, "test_accuracy", reasons, format_pct, skipped_text=DASH),
             metric_cell(r, "untrained_test_accuracy", reasons, format_pct, skipped_text=DASH),
             f"`{escape_cell(r['cli'])}`" if r.get("cli") else DASH] for r in records]
    lines = [("`textmatch train` with no options but the data (the recipe's defaults), run by the benchmark as a "
              "subprocess with every torch thread of the machine; wall s includes loading the model and saving it; "
              "untrained: `textmatch evaluate --support` with the base model."), ""]
    header = ["data", "episodes", "train s", "wall s", "test acc", "untrained test acc", "command"]
    return lines + markdown_table(header, rows) + [""] + notes_lines(reasons) + legend_lines()


# -- timing ---------------------------------------------------------------------------------------


def timing_lines(records: list[Record]) -> list[str]:
    """Train and predict seconds of the generalised runs, and train time relative to SetFit's on
    the same dataset and K."""
    by_key = group_records(records)
    rows = []
    for dataset, k in cells_of(records, GENERALISED_CELLS):
        setfit = group_mean(by_key.get((dataset, k, "setfit"), []), "train_s")
        for method in methods_of(records):
            measured = [r for r in by_key.get((dataset, k, method), []) if not r.get("skipped")]
            if not measured:
                continue
            train_s = group_mean(measured, "train_s")
            seeds = len(measured_records(measured, "train_s"))
            train = value_or_dash(train_s, format_seconds) + (f" (n={seeds})" if seeds > 1 else "")
            rows.append([cell_name((dataset, k)), method_name(method), train,
                         value_or_dash(group_mean(measured, "predict_s"), format_seconds), setfit_ratio(train_s, setfit)])
    if not rows:
        return ["No measured (non-skipped) generalised records.", ""]
    lines = ["Seconds on the machine of the run that produced each record (see Runs); train s: training on the support set (fine-tuning, or fitting the logistic regression); predict s: classifying the test set (encoding included for trained models; frozen methods read cached embeddings, so only the classifier is timed); where several training seeds were run, the mean over them (n = seeds), and the ratio to SetFit is between means. Runs on 1 thread shared the 2 cores with 1 to 7 other benchmark processes (see the notes at the top), so seconds from different runs compare only roughly.", ""]
    notes = distinct(f"- {method_name(r['method'])}: {escape_cell(str(r['predict_s_note']))}"
                     for r in records if r.get("predict_s_note") and r.get("method"))
    notes_block = ["Notes on predict s:", "", *notes, ""] if notes else []
    return lines + markdown_table(["cell", "method", "train s", "predict s", "train time vs SetFit"], rows) + [""] + notes_block


def setfit_ratio(mine: float | None, theirs: float | None) -> str:
    """'0.12x of SetFit': a train time (seed mean) over SetFit's on the same cell, else a dash."""
    if not (is_number(mine) and is_number(theirs)) or float(theirs) <= 0:
        return DASH
    return f"{float(mine) / float(theirs):.2f}x of SetFit"


# -- the plot -------------------------------------------------------------------------------------


def accuracy_by_k(records: Iterable[Record], dataset: str) -> dict[str, dict[int, tuple[float, float, int]]]:
    """{method: {k: (mean, sd, n)}} of test accuracy over seeds, from measured "drawn" records."""
    values: dict[str, dict[int, list[float]]] = {}
    for r in records:
        if r.get("section") != "drawn" or r.get("dataset") != dataset or r.get("skipped") or not is_number(r.get("test_accuracy")):
            continue
        values.setdefault(r["method"], {}).setdefault(int(r["k"]), []).append(float(r["test_accuracy"]))
    return {m: {k: (*mean_sd(v), len(v)) for k, v in sorted(per_k.items())} for m, per_k in values.items()}


def plot_accuracy_vs_k(records: Sequence[Record], dataset: str) -> bytes:
    """PNG bytes of test accuracy against K (categorical axis) on `dataset`, one line per method
    with sd error bars; a figure saying "no data" when there are no drawn records."""
    import io

    # the Agg backend through a bare Figure: no pyplot, so the caller's backend is left alone
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = accuracy_by_k(records, dataset)
    ks = sorted(set(DRAWN_PLOT_KS) | {k for per_k in series.values() for k in per_k})
    position = {k: i for i, k in enumerate(ks)}
    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for method in ordered_methods(series):
        per_k = series[method]
        xs = [position[k] for k in per_k]
        ax.errorbar(xs, [v[0] for v in per_k.values()], yerr=[v[1] for v in per_k.values()],
                    marker="o", capsize=3, label=method_name(method))
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("K (examples per class)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: accuracy against K (drawn supports, mean ± sd over seeds)")
    if series:
        ax.legend(fontsize="small", loc="best")
        ax.grid(True, alpha=0.3)
    else:
        ax.text(0.5, 0.5, f"no data: no drawn records for {dataset}", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


PARETO_FLOOR_S = 1.0  # train seconds below this (frozen methods: 0) are drawn at it on the log axis
PARETO_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*", "d", "8")
PARETO_MARKER_SIZE = {"*": 11}  # points; 8 for the others (a star looks smaller at the same size)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (accuracy, seconds) points on the Pareto front (higher accuracy and lower
    time are better): those no other point dominates, i.e. none is at least as accurate and at
    least as fast and strictly better on one of the two (identical points are all kept). In
    order of increasing time, then index: the order to join them by a line."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], i))
    front: list[int] = []
    best = -math.inf  # the best accuracy among strictly faster points
    start = 0
    while start < len(order):  # one group of equal times at a time
        end = start
        while end < len(order) and points[order[end]][1] == points[order[start]][1]:
            end += 1
        group = order[start:end]
        top = max(points[i][0] for i in group)
        if top > best:
            front += [i for i in group if points[i][0] == top]
            best = top
        start = end
    return front


def pareto_points(records: Iterable[Record]) -> dict[Cell, list[tuple[str, float, float, float, int]]]:
    """{(dataset, k): [(method, test accuracy mean, sd, train seconds mean, seeds)]} over the
    measured "generalised" records that have both numbers, methods in display order."""
    chosen = [r for r in records if r.get("section") == "generalised" and r.get("k") is not None]
    grouped = group_records(chosen)
    out: dict[Cell, list[tuple[str, float, float, float, int]]] = {}
    for method in methods_of(chosen):
        for (dataset, k, m), group in grouped.items():
            if m != method:
                continue
            measured = [r for r in measured_records(group, "test_accuracy") if is_number(r.get("train_s"))]
            if measured:
                mean, sd = mean_sd([float(r["test_accuracy"]) for r in measured])
                seconds = statistics.fmean(float(r["train_s"]) for r in measured)
                out.setdefault((dataset, int(k)), []).append((method, mean, sd, seconds, len(measured)))
    return out


def plot_pareto(records: Sequence[Record]) -> bytes:
    """PNG bytes of test accuracy against train seconds (log scale, floored at PARETO_FLOOR_S)
    of the generalised methods, one subplot per GENERALISED_CELLS cell (2 x 2), seed means with
    sd error bars, the Pareto front joined by a line and the target accuracy dashed; one legend
    (a marker and colour per method) for all subplots. Subplots without records say "no data"."""
    import io

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    series = pareto_points(records)
    methods = ordered_methods(distinct(m for points in series.values() for m, *_ in points))
    # a colour (tab20's dark shades, then its light ones, then tab20b) and a marker per method,
    # fixed by its place in METHOD_NAMES so that a method looks the same from one render to the next
    palette = colormaps["tab20"].colors + colormaps["tab20b"].colors
    unknown = [m for m in methods if m not in METHOD_NAMES]
    slot = {m: i for i, m in enumerate([*METHOD_NAMES, *unknown])}
    style = {m: (palette[(2 * i) % 20 + (2 * i) // 20 if i < 20 else i % len(palette)], PARETO_MARKERS[i % len(PARETO_MARKERS)])
             for m, i in ((m, slot[m]) for m in methods)}
    legend_rows = max(1, math.ceil((len(methods) + 2) / 4))
    fig = Figure(figsize=(12, 8.5 + 0.3 * legend_rows), dpi=100)
    FigureCanvasAgg(fig)
    targets = dict(zip(GENERALISED_CELLS, GENERALISED_TARGET[1]))
    for position, cell in enumerate(GENERALISED_CELLS, 1):
        ax = fig.add_subplot(2, 2, position)
        ax.set_title(f"{cell_name(cell)} (fixed CPFT support)")
        ax.set_xscale("log")
        ax.set_xlabel(f"train seconds (log scale; below {PARETO_FLOOR_S:g} s, e.g. frozen 0 s, drawn at {PARETO_FLOOR_S:g} s)")
        ax.set_ylabel("test accuracy (%)")
        points = series.get(cell, [])
        if cell in targets:
            ax.axhline(targets[cell], color="grey", linestyle="--", linewidth=1)
            ax.annotate(f"target {format_pct(targets[cell])}", xy=(0.01, targets[cell]), xycoords=("axes fraction", "data"),
                        xytext=(0, 2), textcoords="offset points", fontsize="small", color="dimgrey")
        if not points:
            ax.text(0.5, 0.5, f"no data: no generalised records for {cell_name(cell)}", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(PARETO_FLOOR_S, 1e4)
            continue
        xy = [(accuracy, max(seconds, PARETO_FLOOR_S)) for _, accuracy, _, seconds, _ in points]
        for (method, accuracy, sd, _, n), (_, x) in zip(points, xy):
            colour, marker = style[method]
            ax.errorbar([x], [accuracy], yerr=[sd] if n > 1 else None, color=colour, marker=marker,
                        markersize=PARETO_MARKER_SIZE.get(marker, 8),
                        markeredgecolor="black", markeredgewidth=0.5, capsize=3, linestyle="none", zorder=3)
        front = pareto_front(xy)
        ax.plot([xy[i][1] for i in front], [xy[i][0] for i in front], color="black", linewidth=1, zorder=2)
        ax.grid(True, which="major", alpha=0.3)
        low, high = min(x for _, x in xy), max(x for _, x in xy)
        ax.set_xlim(low / 1.6, high * 1.6)
    handles = [Line2D([], [], color=style[m][0], marker=style[m][1], markersize=PARETO_MARKER_SIZE.get(style[m][1], 8), markeredgecolor="black",
                      markeredgewidth=0.5, linestyle="none", label=SHORT_NAMES.get(m, m)) for m in methods]
    handles += [Line2D([], [], color="black", linewidth=1, label="Pareto front"),
                Line2D([], [], color="grey", linestyle="--", linewidth=1, label="target accuracy")]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize="medium", frameon=False)
    fig.suptitle("Generalised few-shot: test accuracy against train time (seed means; error bars = sd over seeds)")
    fig.tight_layout(rect=(0, 0.035 * legend_rows + 0.01, 1, 0.97))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# -- small helpers --------------------------------------------------------------------------------


def section_records(records: Iterable[Record], section: str) -> list[Record]:
    """The records of one section, in order of appearance."""
    return [r for r in records if r.get("section") == section]


def index_records(records: Iterable[Record]) -> dict[tuple[Any, Any, Any], Record]:
    """{(dataset, k, method): record}; a later record replaces an earlier one."""
    return {(r.get("dataset"), r.get("k"), r.get("method")): r for r in records}


def group_records(records: Iterable[Record]) -> dict[tuple[Any, Any, Any], list[Record]]:
    """{(dataset, k, method): one record per seed}, seeds in order of first appearance; a later
    record of the same seed replaces an earlier one."""
    by_seed: dict[tuple[Any, Any, Any], dict[Any, Record]] = {}
    for r in records:
        by_seed.setdefault((r.get("dataset"), r.get("k"), r.get("method")), {})[r.get("seed")] = r
    return {key: list(per_seed.values()) for key, per_seed in by_seed.items()}


def measured_records(group: Iterable[Record], metric: str) -> list[Record]:
    """The records of `group` that were not skipped and have a number for `metric`."""
    return [r for r in group if not r.get("skipped") and is_number(r.get(metric))]


def group_mean(group: Iterable[Record], metric: str) -> float | None:
    """The mean of `metric` over the measured records of `group` (None when there is none)."""
    values = [float(r[metric]) for r in measured_records(group, metric)]
    return statistics.fmean(values) if values else None


def group_cell(group: Sequence[Record], metric: str, reasons: Sequence[str], fmt: Callable[[float], str],
               skipped_text: str | None = None, spread: bool = True) -> str:
    """One table cell over the seeds of a cell: the plain value for one measured seed; for
    several, 'mean ± sd (n=N)' (`spread`) or the bare mean; else as `metric_cell` (a dash, or
    'skipped [i]' / `skipped_text` when the seeds were skipped)."""
    measured = measured_records(group, metric)
    if len(measured) > 1:
        return seeds_cell(measured, metric, reasons, fmt) if spread else fmt(statistics.fmean(float(r[metric]) for r in measured))
    if measured:
        return fmt(float(measured[0][metric]))
    skipped = [r for r in group if r.get("skipped")]
    return metric_cell(skipped[-1] if skipped else (group[-1] if group else None), metric, reasons, fmt, skipped_text)


def cells_of(records: Iterable[Record], always: Sequence[Cell] = ()) -> list[Cell]:
    """The (dataset, K) columns: `always` plus those present, ordered by dataset then K."""
    present = {(r["dataset"], int(r["k"])) for r in records if r.get("dataset") and r.get("k") is not None}
    rank = {d: i for i, d in enumerate(DATASET_ORDER)}
    return sorted(set(always) | present, key=lambda c: (rank.get(c[0], len(rank)), c[0], c[1]))


def methods_of(records: Iterable[Record]) -> list[str]:
    """The methods present, known ones in the display order, others after in order of appearance."""
    return ordered_methods(distinct(r["method"] for r in records if r.get("method")))


def ordered_methods(methods: Iterable[str]) -> list[str]:
    """`methods` sorted into METHOD_NAMES order, unknown ones last (stable)."""
    rank = {m: i for i, m in enumerate(METHOD_NAMES)}
    return sorted(methods, key=lambda m: rank.get(m, len(rank)))


def method_name(method: str) -> str:
    """The display name of a method (its id when unknown)."""
    return METHOD_NAMES.get(method, method)


def cell_name(cell: Cell) -> str:
    """'B77 5-shot'."""
    return f"{DATASET_NAMES.get(cell[0], cell[0])} {cell[1]}-shot"


def skip_reasons(records: Iterable[Record]) -> list[str]:
    """The distinct skip reasons (whitespace collapsed), numbered by position + 1 in the notes."""
    return distinct(normalise_reason(r["skipped"]) for r in records if r.get("skipped"))


def normalise_reason(reason: Any) -> str:
    """A skip reason on one line."""
    return " ".join(str(reason).split())


def skipped_cell(record: Record, reasons: Sequence[str]) -> str:
    """'skipped [i]', i pointing at the reason in the notes below the table."""
    return f"skipped [{reasons.index(normalise_reason(record['skipped'])) + 1}]"


def metric_cell(record: Record | None, key: str, reasons: Sequence[str], fmt: Callable[[float], str],
                skipped_text: str | None = None) -> str:
    """One table cell: a dash when not run (or the value is missing), 'skipped [i]' (or
    `skipped_text`) when skipped, else the formatted value."""
    if record is None:
        return DASH
    if record.get("skipped"):
        return skipped_text if skipped_text is not None else skipped_cell(record, reasons)
    return value_or_dash(record.get(key), fmt)


def value_or_dash(value: Any, fmt: Callable[[float], str]) -> str:
    """`fmt(value)` for a number, else a dash."""
    return fmt(float(value)) if is_number(value) else DASH


def notes_lines(reasons: Sequence[str]) -> list[str]:
    """The numbered skip reasons under a table."""
    if not reasons:
        return []
    return ["Skipped:", ""] + [f"- [{i}] {escape_cell(reason)}" for i, reason in enumerate(reasons, 1)] + [""]


def legend_lines() -> list[str]:
    """What a dash means."""
    return [f"{DASH} = not run (or not recorded).", ""]


def escape_cell(text: str) -> str:
    """`text` safe inside a table cell (pipes escaped, one line)."""
    return " ".join(text.split()).replace("|", "\\|")


def format_pct(value: float) -> str:
    """A percentage rounded to 2 decimals."""
    return f"{value:.2f}"


def format_seconds(value: float) -> str:
    """Seconds: 3 decimals below 1 s, 2 below 10 s, 1 above."""
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def format_threshold(value: float) -> str:
    """A probability threshold, 4 decimals."""
    return f"{value:.4f}"


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def distinct(items: Iterable[str]) -> list[str]:
    """`items` without repeats, in order of first appearance."""
    return list(dict.fromkeys(items))
