"""The plots the README shows, made from real runs: `evaluate --plot` on BANKING77 10-shot with
the model `textmatch train` makes there, its training curves, and the demo's support set mapped
before and after training, side by side.

    python scripts/plot_examples.py                 # trains both models first (about 7 + 1 min on 2 cores)
    python scripts/plot_examples.py --b77-model DIR # a model from `textmatch train --train .../train_10.csv`

Writes results/plots/banking77_10shot/{confusion_matrix,per_class_f1,embedding_map,training_curves}.png,
results/plots/demo/embedding_map_untrained_vs_trained.png and results/plots.md (the commands,
machine, date and the accuracies the plots show). Reads BANKING77 from ../shared/data.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import (  # noqa: E402
    REPO,
    command_line,
    header_lines,
    load_average_text,
    machine_info,
    utc_date,
    write_text_atomic,
)

from textmatch import MatchingNetwork, cli  # noqa: E402
from textmatch.classification.evaluation_plots import (  # noqa: E402
    classify_for_plots,
    evaluation_figures,
    map_panel,
)
from textmatch.classification.metrics import classification_report  # noqa: E402
from textmatch.core.callbacks import LOG_NAME  # noqa: E402
from textmatch.plots import (  # noqa: E402
    embedding_map_figure,
    read_training_log,
    training_curves_figure,
    write_figures,
)

SHARED = REPO.parent / "shared" / "data"
B77_TRAIN = SHARED / "banking77" / "cpft" / "train_10.csv"
B77_TEST = SHARED / "banking77" / "cpft" / "test.csv"
DEMO_SUPPORT = REPO / "data" / "intents_support.csv"
DEMO_TEST = REPO / "data" / "intents_test.csv"


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def train(train_file: Path, output: Path) -> float:
    """`textmatch train` with its defaults; returns the seconds it took."""
    start = time.perf_counter()
    code = cli.main(["train", "--train", str(train_file), "--output", str(output), "--no-progress"])
    if code != 0:
        raise SystemExit(f"textmatch train --train {train_file} failed with exit status {code}")
    return time.perf_counter() - start


def banking77(model_dir: Path, out: Path) -> dict[str, float]:
    """evaluate --plot on the BANKING77 test set, plus the run's training curves."""
    model = MatchingNetwork.from_pretrained(str(model_dir))
    texts, gold = read_csv(B77_TEST)
    prediction, emb = classify_for_plots(model, texts)
    report = classification_report(gold, [str(y) for y in prediction.labels])
    figures = evaluation_figures(model, gold, prediction, emb, report, title="BANKING77 10-shot")
    log = Path(f"{model_dir}.run") / LOG_NAME
    if log.is_file():
        figures["training_curves"] = training_curves_figure(read_training_log(log),
                                                            title="Training curves - BANKING77 10-shot")
    write_figures(out, figures)
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def demo_maps(trained_dir: Path, out: Path) -> dict[str, float]:
    """The demo's support set and test errors before (the pretrained model) and after training."""
    texts, labels = read_csv(DEMO_SUPPORT)
    test_texts, test_labels = read_csv(DEMO_TEST)
    panels, accuracy = [], {}
    for name, model in (("untrained", MatchingNetwork.from_pretrained().fit(texts, labels)),
                        ("trained", MatchingNetwork.from_pretrained(str(trained_dir)))):
        prediction, emb = classify_for_plots(model, test_texts)
        predicted = [str(y) for y in prediction.labels]
        accuracy[name] = classification_report(test_labels, predicted)["accuracy"]
        panel = map_panel(model, test_labels, predicted, emb)
        panel["title"] = f"{name}: all-MiniLM-L6-v2{' + textmatch train' if name == 'trained' else ''}"
        panels.append(panel)
    write_figures(out, {"embedding_map_untrained_vs_trained": embedding_map_figure(
        panels, method="pca", title="Demo intents: the support set before and after training")})
    return accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--b77-model", type=Path, help="a model trained on BANKING77 10-shot (default: train one)")
    parser.add_argument("--demo-model", type=Path, help="a model trained on the demo support set (default: train one)")
    parser.add_argument("--out", type=Path, default=REPO / "results")
    args = parser.parse_args(argv)
    if not B77_TEST.is_file():
        raise SystemExit(f"needs the benchmark data in {SHARED}")
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="textmatch-plots-") as tmp:
        b77_model = args.b77_model or Path(tmp) / "b77-10shot"
        demo_model = args.demo_model or Path(tmp) / "demo"
        if args.b77_model is None:
            seconds["b77"] = train(B77_TRAIN, b77_model)
        if args.demo_model is None:
            seconds["demo"] = train(DEMO_SUPPORT, demo_model)
        b77 = banking77(b77_model, args.out / "plots" / "banking77_10shot")
        demo = demo_maps(demo_model, args.out / "plots" / "demo")
    lines = header_lines([
        ("command", f"`{command_line(__file__, argv if argv is not None else sys.argv[1:])}`"),
        ("date", utc_date()),
        ("machine", ", ".join(f"{k}: {v}" for k, v in machine_info().items())),
        ("load average at the end", load_average_text()),
    ], title="Plots of real runs (scripts/plot_examples.py)", bullets=True)
    lines += [
        f"- BANKING77 10-shot (`textmatch train --train ../{B77_TRAIN.relative_to(REPO.parent)}` with its defaults"
        + (f", {seconds['b77']:.0f} s" if "b77" in seconds else f", model {args.b77_model}") + "), test set "
        f"(3080 texts): accuracy {100 * b77['accuracy']:.2f}, macro F1 {100 * b77['macro_f1']:.2f}. "
        "`plots/banking77_10shot/`: confusion_matrix.png, per_class_f1.png, embedding_map.png, training_curves.png.",
        f"- Demo intents, test set: accuracy {100 * demo['untrained']:.2f} with the pretrained model, "
        f"{100 * demo['trained']:.2f} after `textmatch train --train data/intents_support.csv`"
        + (f" ({seconds['demo']:.0f} s)" if "demo" in seconds else "")
        + ". `plots/demo/embedding_map_untrained_vs_trained.png`.",
        "",
    ]
    write_text_atomic(args.out / "plots.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
