"""scripts/report_fewshot.py renders fewshot.md, fewshot_vs_k.png and fewshot_pareto.png from a synthetic fewshot.json.

The numbers checked below were computed by hand from the synthetic records.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))  # scripts/ is not a package

import report_fewshot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KEYS = ("section", "dataset", "k", "method", "seed", "fold", "variant")
MN = "Matching Network, fine-tuned (round-1 default: 150 episodes, eq. 1 head)"

CMD_GEN = "python scripts/bench_fewshot.py --sections generalised --methods cosine,mn,setfit"
CMD_DRAWN = "python scripts/bench_fewshot.py --sections drawn --datasets banking77"
CMD_EPI = "python scripts/bench_fewshot.py --sections episodic --folds 01,02"
CMD_OOS = "python scripts/bench_fewshot.py --sections oos"
CMD_IM = "python scripts/bench_fewshot.py --sections intent-matcher --datasets banking77"
CMD_ABL = "python scripts/ablation_by_hand.py --temperature 0.1"
CMD_CLI = "python scripts/bench_fewshot.py --sections cli"
IM_CLI = "textmatch train --train ../shared/data/clinc150/cpft/train.csv --output .cache/im-clinc150 --episodes 200"


def rec(command: str, **fields) -> dict:
    """A record as bench_fewshot.py writes it: every key field present, plus the command."""
    return {**{k: None for k in KEYS}, **fields, "command": command}


def synthetic_records() -> list[dict]:
    gen = {"section": "generalised", "seed": 0}
    drawn = {"section": "drawn", "dataset": "banking77"}
    epi = {"section": "episodic", "dataset": "banking77", "seed": 0, "episodes": 600}
    return [
        # generalised: B77 5-shot for three methods, one skipped cell on CLINC 10-shot
        rec(CMD_GEN, **gen, dataset="banking77", k=5, method="cosine", valid_accuracy=78.456, valid_macro_f1=78.0,
            test_accuracy=77.912, test_macro_f1=77.5, train_s=0.0, predict_s=0.004, config={},
            predict_s_note="frozen embeddings come from a cache; predict_s excludes encoding"),
        rec(CMD_GEN, **gen, dataset="banking77", k=5, method="setfit", valid_accuracy=80.1, valid_macro_f1=80.0,
            test_accuracy=80.75, test_macro_f1=80.6, train_s=200.0, predict_s=12.5, config={"iterations": 20}),
        rec(CMD_GEN, **gen, dataset="banking77", k=5, method="mn", valid_accuracy=86.0, valid_macro_f1=85.9,
            test_accuracy=87.234, test_macro_f1=87.1, train_s=50.0, predict_s=20.0, config={"episodes": 150}),
        rec(CMD_GEN, **gen, dataset="clinc150", k=10, method="setfit", skipped="setfit is not installed"),
        # drawn: cosine K=1 seeds 60/62/64 -> 62.00 ± 2.00 (n=3); K=2 70/71 -> 70.50 ± 0.71 (n=2)
        rec(CMD_DRAWN, **drawn, k=1, method="cosine", seed=0, test_accuracy=60.0, test_macro_f1=59.0, train_s=0.0, predict_s=0.1),
        rec(CMD_DRAWN, **drawn, k=1, method="cosine", seed=1, test_accuracy=62.0, test_macro_f1=61.0, train_s=0.0, predict_s=0.1),
        rec(CMD_DRAWN, **drawn, k=1, method="cosine", seed=2, test_accuracy=64.0, test_macro_f1=63.0, train_s=0.0, predict_s=0.1),
        rec(CMD_DRAWN, **drawn, k=2, method="cosine", seed=0, test_accuracy=70.0, test_macro_f1=69.0, train_s=0.0, predict_s=0.1),
        rec(CMD_DRAWN, **drawn, k=2, method="cosine", seed=1, test_accuracy=71.0, test_macro_f1=70.0, train_s=0.0, predict_s=0.1),
        # mn: K=1 skipped; K=2 80/84 -> 82.00 ± 2.83 (n=2)
        rec(CMD_DRAWN, **drawn, k=1, method="mn", seed=0,
            skipped="fine-tuning needs 2 examples per class (one support, one query)"),
        rec(CMD_DRAWN, **drawn, k=2, method="mn", seed=0, test_accuracy=80.0, test_macro_f1=79.0, train_s=30.0, predict_s=1.0),
        rec(CMD_DRAWN, **drawn, k=2, method="mn", seed=1, test_accuracy=84.0, test_macro_f1=83.0, train_s=31.0, predict_s=1.0),
        # episodic: cosine 1-shot folds 85.0 / 87.5 -> 86.25, CI 1.0 / 1.2 -> ± 1.10; 5-shot 95 / 96 -> 95.50
        rec(CMD_EPI, **epi, k=1, method="cosine", fold="01", accuracy=85.0, ci95=1.0, train_s=0.0, predict_s=3.0),
        rec(CMD_EPI, **epi, k=1, method="cosine", fold="02", accuracy=87.5, ci95=1.2, train_s=0.0, predict_s=3.0),
        rec(CMD_EPI, **epi, k=5, method="cosine", fold="01", accuracy=95.0, ci95=0.5, train_s=0.0, predict_s=3.0),
        rec(CMD_EPI, **epi, k=5, method="cosine", fold="02", accuracy=96.0, ci95=0.7, train_s=0.0, predict_s=3.0),
        # oos
        rec(CMD_OOS, section="oos", dataset="clinc150", k=10, method="cosine", seed=0, threshold=0.41234,
            in_scope_accuracy=88.123, oos_precision=70.5, oos_recall=60.25, oos_f1=64.987,
            in_scope_accuracy_no_threshold=91.0, train_s=0.0, predict_s=0.2),
        rec(CMD_OOS, section="oos", dataset="clinc150", k=10, method="setfit", seed=0, skipped="setfit is not installed"),
        # intent matcher
        rec(CMD_IM, section="intent-matcher", dataset="clinc150", method="intent-matcher", variant="for banking77",
            train_s=123.4, cli=IM_CLI),
        # ablation, in this order
        rec(CMD_ABL, section="ablation", dataset="banking77", k=10, method="mn", variant="temperature 0.1 instead of 0.05",
            valid_accuracy=85.555, test_accuracy=86.004, train_s=800.0, note="worse than the default"),
        rec(CMD_ABL, section="ablation", dataset="banking77", k=10, method="mn", variant="no warm-up",
            valid_accuracy=84.0, train_s=790.0),
        # the command line
        rec(CMD_CLI, section="cli", dataset="demo", method="textmatch", train_s=20.0, wall_s=31.0, episodes=30,
            test_accuracy=97.22, untrained_test_accuracy=97.22, cli="textmatch train --train data/intents_support.csv"),
    ]


def write_json(folder: Path, records: list[dict], runs: list[dict] | None = None) -> Path:
    runs = runs if runs is not None else [
        {"command": CMD_GEN, "date": "2026-11-28T10:00:00+00:00",
         "machine": {"cpus": 2, "cpu": "AMD EPYC 7B13", "torch_threads": 2, "torch": "2.13.0+cpu", "python": "3.11.7"},
         "wall_s": 321.5},
        {"command": CMD_DRAWN, "date": "2026-11-29T08:30:00+00:00",
         "machine": {"cpus": 2, "cpu": "AMD EPYC 7B13", "torch_threads": 1, "torch": "2.13.0+cpu", "python": "3.11.7"}},
    ]
    path = folder / "fewshot.json"
    path.write_text(json.dumps({"runs": runs, "records": records}), encoding="utf-8")
    return path


@pytest.fixture
def rendered(tmp_path) -> tuple[str, bytes, Path]:
    write_json(tmp_path, synthetic_records())
    report_fewshot.render(tmp_path)
    return (tmp_path / "fewshot.md").read_text(encoding="utf-8"), (tmp_path / "fewshot_vs_k.png").read_bytes(), tmp_path


def table_row(md: str, label: str) -> str:
    """The first table row whose first cell is `label`."""
    rows = [line for line in md.splitlines() if line.startswith(f"| {label} |")]
    assert rows, f"no row {label!r} in:\n{md}"
    return rows[0]


def test_render_writes_all_files_and_nothing_else(rendered):
    md, png, folder = rendered
    assert md.startswith("# ")
    assert png.startswith(PNG_MAGIC)
    assert (folder / "fewshot_pareto.png").read_bytes().startswith(PNG_MAGIC)
    assert sorted(p.name for p in folder.iterdir()) == [
        "fewshot.json", "fewshot.md", "fewshot_pareto.png", "fewshot_vs_k.png"]  # no temp files left


def test_runs_are_listed(rendered):
    md, _, _ = rendered
    assert "2026-11-28T10:00:00+00:00" in md and "2026-11-29T08:30:00+00:00" in md
    assert "2 CPUs (AMD EPYC 7B13), torch 2.13.0+cpu on 2 threads, Python 3.11.7" in md
    assert "wall 321.5 s" in md


def test_every_section_has_a_heading_and_its_commands(rendered):
    md, _, _ = rendered
    for title in report_fewshot.SECTION_TITLES.values():
        assert f"## {title}" in md
    for command in (CMD_GEN, CMD_DRAWN, CMD_EPI, CMD_OOS, CMD_IM, CMD_ABL, CMD_CLI):
        assert f"\n{command}\n" in md  # a line of its own, inside a fenced block
    assert md.count("```bash") == 7
    # sections appear in the documented order
    positions = [md.index(f"## {title}") for title in report_fewshot.SECTION_TITLES.values()]
    assert positions == sorted(positions)


def test_generalised_table(rendered):
    md, _, _ = rendered
    header = next(line for line in md.splitlines() if line.startswith("| method | B77 5-shot test acc"))
    assert "| B77 5-shot test acc | B77 10-shot test acc | CLINC 5-shot test acc | CLINC 10-shot test acc |" in header
    assert "B77 5-shot train s" in header
    cosine = table_row(md, "Cosine matching (frozen)")
    assert cosine.startswith("| Cosine matching (frozen) | 77.91 | – | – | – | 0.000 |")
    assert table_row(md, MN).startswith(f"| {MN} | 87.23 | – | – | – | 50.0 |")
    setfit = table_row(md, "SetFit 1.2")
    assert setfit.startswith("| SetFit 1.2 | 80.75 | – | – | skipped [1] | 200.0 |")
    assert "- [1] setfit is not installed" in md
    # published and target rows
    assert "| USE+ConveRT (published" in md and "| CPFT (published" in md
    assert "| 77.75 | 85.19 | 90.49 | 93.26 |" in md
    assert "| 80.86 | 87.20 | 92.34 | 94.18 |" in md
    assert table_row(md, "target").startswith("| target | 83.00 | 89.00 | 93.00 | 95.00 |")
    # valid table
    assert "| Cosine matching (frozen) | 78.46 | – | – | – |" in md
    # methods in display order
    assert md.index("| Cosine matching (frozen) | 77.91") < md.index("| SetFit 1.2 | 80.75") < md.index(f"| {MN} | 87.23")
    # one seed per cell: plain values, and the sentence says seed 0
    assert "(n=" not in md[md.index("## Generalised"):md.index("## Drawn")]
    assert "K examples of every class), seed 0." in md


def test_drawn_mean_sd_over_seeds(rendered):
    md, _, _ = rendered
    drawn = md[md.index("## Drawn K"):md.index("## Episodic")]
    assert "| method | B77 1-shot | B77 2-shot |" in drawn
    assert "| Cosine matching (frozen) | 62.00 ± 2.00 (n=3) | 70.50 ± 0.71 (n=2) |" in drawn
    assert f"| {MN} | skipped [1] | 82.00 ± 2.83 (n=2) |" in drawn
    assert "- [1] fine-tuning needs 2 examples per class (one support, one query)" in drawn


def test_episodic_fold_means(rendered):
    md, _, _ = rendered
    episodic = md[md.index("## Episodic"):md.index("## Out-of-scope")]
    assert "1-shot per fold (01 / 02)" in episodic
    assert "| Cosine matching (frozen) | 86.25 | (85.00 / 87.50) | ± 1.10 | 95.50 | (95.00 / 96.00) | ± 0.60 |" in episodic
    assert "| target | 92.00 | – | – | 97.50 | – | – |" in episodic
    assert "episodes per fold: 600" in episodic


def test_oos_intent_matcher_ablation_timing(rendered):
    md, _, _ = rendered
    assert "| Cosine matching (frozen) | 88.12 | 70.50 | 60.25 | 64.99 | 0.4123 | 91.00 |" in md
    assert "| SetFit 1.2 | skipped [1] | – | – | – | – | – |" in md
    assert f"| clinc150 | banking77 | 123.4 | `{IM_CLI}` |" in md
    ablation = md[md.index("## Ablation"):md.index("## Timing")]
    first = ablation.index("temperature 0.1 instead of 0.05")
    second = ablation.index("no warm-up")
    assert first < second
    assert f"| banking77 | 10 | {MN} | temperature 0.1 instead of 0.05 | 85.56 | 86.00 | 800.0 | worse than the default |" in ablation
    assert "| no warm-up | 84.00 | – | 790.0 |" in ablation
    timing = md[md.index("## Timing"):]
    assert f"| B77 5-shot | {MN} | 50.0 | 20.0 | 0.25x of SetFit |" in timing
    assert "| B77 5-shot | SetFit 1.2 | 200.0 | 12.5 | 1.00x of SetFit |" in timing
    assert "| B77 5-shot | Cosine matching (frozen) | 0.000 | 0.004 | 0.00x of SetFit |" in timing
    assert "CLINC 10-shot | SetFit" not in timing  # skipped records have no timing


def test_accuracy_by_k_is_mean_sd_over_seeds():
    series = report_fewshot.accuracy_by_k(synthetic_records(), "banking77")
    assert set(series) == {"cosine", "mn"}
    mean, sd, n = series["cosine"][1]
    assert (mean, n) == (62.0, 3) and sd == pytest.approx(2.0)
    assert 1 not in series["mn"]  # skipped
    assert report_fewshot.accuracy_by_k(synthetic_records(), "clinc150") == {}


def test_render_with_no_records_still_writes_all_files(tmp_path):
    write_json(tmp_path, [], runs=[])
    report_fewshot.render(tmp_path)
    md = (tmp_path / "fewshot.md").read_text(encoding="utf-8")
    assert md.startswith("# ")
    assert "## " not in md
    assert (tmp_path / "fewshot_vs_k.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "fewshot_pareto.png").read_bytes().startswith(PNG_MAGIC)


def test_only_sections_with_records_are_rendered(tmp_path):
    records = [r for r in synthetic_records() if r["section"] == "oos"]
    write_json(tmp_path, records)
    report_fewshot.render(tmp_path)
    md = (tmp_path / "fewshot.md").read_text(encoding="utf-8")
    assert "## Out-of-scope" in md and "### CLINC150" in md and "### BANKING77-OOS" not in md
    assert "## Generalised" not in md and "## Drawn" not in md and "## Timing" not in md
    assert (tmp_path / "fewshot_vs_k.png").read_bytes().startswith(PNG_MAGIC)  # the "no data" figure


def test_missing_results_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench_fewshot.py"):
        report_fewshot.render(tmp_path)


# -- several training seeds in the generalised section --------------------------------------------

CMD_SEEDS = "python scripts/bench_fewshot.py --sections generalised --methods textmatch,setfit --seeds 0,1,2"


def seeds_records() -> list[dict]:
    """Generalised B77 5-shot: textmatch on seeds 0-2 (test 80 / 82 / 84 -> 82.00 ± 2.00,
    valid 70 / 71 / 72 -> 71.00 ± 1.00, train 100 / 200 / 300 -> 200.0, predict 10 / 20 / 30
    -> 20.0), an earlier seed-0 record replaced by the later one; SetFit on seeds 0-1 (test
    70 / 72 -> 71.00 ± 1.41, train 300 / 500 -> 400.0); cosine on one seed (plain values);
    logreg measured on seed 0, skipped on seed 1 (plain value)."""
    gen = {"section": "generalised", "dataset": "banking77", "k": 5}
    return [
        rec(CMD_SEEDS, **gen, method="textmatch", seed=0, valid_accuracy=10.0, test_accuracy=10.0, train_s=9999.0, predict_s=1.0),
        rec(CMD_SEEDS, **gen, method="cosine", seed=0, valid_accuracy=76.0, test_accuracy=77.0, train_s=0.0, predict_s=0.5),
        rec(CMD_SEEDS, **gen, method="textmatch", seed=0, valid_accuracy=70.0, test_accuracy=80.0, train_s=100.0, predict_s=10.0),
        rec(CMD_SEEDS, **gen, method="textmatch", seed=1, valid_accuracy=71.0, test_accuracy=82.0, train_s=200.0, predict_s=20.0),
        rec(CMD_SEEDS, **gen, method="textmatch", seed=2, valid_accuracy=72.0, test_accuracy=84.0, train_s=300.0, predict_s=30.0),
        rec(CMD_SEEDS, **gen, method="setfit", seed=0, valid_accuracy=69.0, test_accuracy=70.0, train_s=300.0, predict_s=5.0),
        rec(CMD_SEEDS, **gen, method="setfit", seed=1, valid_accuracy=69.0, test_accuracy=72.0, train_s=500.0, predict_s=7.0),
        rec(CMD_SEEDS, **gen, method="logreg", seed=0, valid_accuracy=79.0, test_accuracy=80.5, train_s=1.5, predict_s=0.1),
        rec(CMD_SEEDS, **gen, method="logreg", seed=1, skipped="out of time"),
    ]


def test_generalised_cells_are_means_over_seeds():
    lines = "\n".join(report_fewshot.generalised_lines(seeds_records()))
    textmatch = report_fewshot.METHOD_NAMES["textmatch"]
    assert table_row(lines, textmatch).startswith(f"| {textmatch} | 82.00 ± 2.00 (n=3) | – | – | – | 200.0 | – |")
    assert table_row(lines, "SetFit 1.2").startswith("| SetFit 1.2 | 71.00 ± 1.41 (n=2) | – | – | – | 400.0 | – |")
    assert table_row(lines, "Cosine matching (frozen)").startswith("| Cosine matching (frozen) | 77.00 | – | – | – | 0.000 |")
    assert table_row(lines, "Logistic regression (frozen)").startswith("| Logistic regression (frozen) | 80.50 | – | – | – | 1.50 |")
    assert "mean ± sample sd over them (n = seeds)" in lines
    # the valid table, below the test table
    valid = lines[lines.index("Valid accuracy"):]
    assert f"| {textmatch} | 71.00 ± 1.00 (n=3) | – | – | – |" in valid
    assert "| Cosine matching (frozen) | 76.00 | – | – | – |" in valid


def test_timing_uses_seed_means():
    lines = "\n".join(report_fewshot.timing_lines(seeds_records()))
    textmatch = report_fewshot.METHOD_NAMES["textmatch"]
    assert f"| B77 5-shot | {textmatch} | 200.0 (n=3) | 20.0 | 0.50x of SetFit |" in lines
    assert "| B77 5-shot | SetFit 1.2 | 400.0 (n=2) | 6.00 | 1.00x of SetFit |" in lines
    assert "| B77 5-shot | Cosine matching (frozen) | 0.000 | 0.500 | 0.00x of SetFit |" in lines
    assert "| B77 5-shot | Logistic regression (frozen) | 1.50 | 0.100 | 0.00x of SetFit |" in lines


def test_group_records_keeps_the_last_record_of_each_seed():
    groups = report_fewshot.group_records(seeds_records())
    textmatch = groups[("banking77", 5, "textmatch")]
    assert [r["seed"] for r in textmatch] == [0, 1, 2]
    assert textmatch[0]["test_accuracy"] == 80.0


# -- method names and order -----------------------------------------------------------------------


def test_method_names_and_display_order():
    names = report_fewshot.METHOD_NAMES
    assert list(names) == ["cosine", "prototype", "logreg", "setfit", "textmatch", "textmatch-meta", "textmatch-unlabeled",
                           "bilstm", "bilstm-init", "mn", "mn-fce", "mn-prototype", "intent-matcher", "intent-matcher-0"]
    assert names["textmatch"] == "textmatch train (round-2 default recipe)"
    assert names["textmatch-meta"] == "textmatch pretrain on the other intent sets, then textmatch train"
    assert names["textmatch-unlabeled"] == "textmatch train --unlabeled (the train split's texts without labels)"
    assert names["bilstm"] == "BiLSTM from scratch, textmatch train"
    assert names["bilstm-init"] == "BiLSTM with MiniLM's input embeddings, textmatch train"
    assert names["mn"] == MN
    assert set(report_fewshot.SHORT_NAMES) == set(names)  # every method has a plot label
    shuffled = ["unknown-b", "mn", "bilstm-init", "textmatch", "setfit", "unknown-a", "cosine", "textmatch-meta"]
    assert report_fewshot.ordered_methods(shuffled) == [
        "cosine", "setfit", "textmatch", "textmatch-meta", "bilstm-init", "mn", "unknown-b", "unknown-a"]


def test_new_methods_render_in_display_order():
    gen = {"section": "generalised", "dataset": "clinc150", "k": 10, "seed": 0}
    order = ["bilstm-init", "mn", "textmatch-unlabeled", "setfit", "bilstm", "textmatch-meta", "textmatch", "cosine"]
    records = [rec(CMD_GEN, **gen, method=m, test_accuracy=50.0 + i, train_s=float(i)) for i, m in enumerate(order)]
    md = "\n".join(report_fewshot.generalised_lines(records))
    shown = [report_fewshot.METHOD_NAMES[m] for m in report_fewshot.METHOD_NAMES if m in order]
    positions = [md.index(f"| {name} |") for name in shown]
    assert positions == sorted(positions)
    assert table_row(md, "BiLSTM from scratch, textmatch train").startswith("| BiLSTM from scratch, textmatch train | – | – | – | 54.00 |")


# -- out-of-scope per dataset ---------------------------------------------------------------------

CMD_B77_OOS = "python scripts/bench_fewshot.py --sections oos --datasets banking77_oos --seeds 0,1"


def oos_records() -> list[dict]:
    """An old CLINC150 record without a dataset, a new CLINC150 one, and BANKING77-OOS on two
    seeds (in-scope 80 / 84 -> 82.00 ± 2.83; threshold 0.3 / 0.4 -> 0.3500 ± 0.0707) plus a
    skipped method."""
    oos = {"section": "oos", "k": 10}
    b77 = {**oos, "dataset": "banking77_oos"}
    return [
        rec(CMD_OOS, **oos, method="cosine", seed=0, threshold=0.41234, in_scope_accuracy=88.123, oos_precision=70.5,
            oos_recall=60.25, oos_f1=64.987, in_scope_accuracy_no_threshold=91.0),
        rec(CMD_B77_OOS, **b77, method="logreg", seed=0, threshold=0.3, in_scope_accuracy=80.0, oos_precision=60.0,
            oos_recall=50.0, oos_f1=54.0, in_scope_accuracy_no_threshold=85.0),
        rec(CMD_B77_OOS, **b77, method="logreg", seed=1, threshold=0.4, in_scope_accuracy=84.0, oos_precision=62.0,
            oos_recall=52.0, oos_f1=56.0, in_scope_accuracy_no_threshold=87.0),
        rec(CMD_B77_OOS, **b77, method="textmatch", seed=0, skipped="not run for lack of time"),
        rec(CMD_OOS, **oos, dataset="clinc150", method="logreg", seed=0, threshold=0.09496, in_scope_accuracy=89.56,
            oos_precision=87.92, oos_recall=58.2, oos_f1=70.04, in_scope_accuracy_no_threshold=90.11),
    ]


def test_oos_one_table_per_dataset():
    md = "\n".join(report_fewshot.oos_lines(oos_records()))
    clinc, b77 = md.index("### CLINC150"), md.index("### BANKING77-OOS")
    assert clinc < b77
    clinc_part, b77_part = md[clinc:b77], md[b77:]
    # the record without a dataset is CLINC150's, in the same table as the new one
    assert "support `cpft/train_10.csv`" in clinc_part and "oos_valid" in clinc_part
    assert "| Cosine matching (frozen) | 88.12 | 70.50 | 60.25 | 64.99 | 0.4123 | 91.00 |" in clinc_part
    assert "| Logistic regression (frozen) | 89.56 | 87.92 | 58.20 | 70.04 | 0.0950 | 90.11 |" in clinc_part
    assert "(n=" not in clinc_part and "Where several seeds" not in clinc_part
    assert "Zhang et al. 2021" in b77_part and "id-oos_valid" in b77_part and "id-oos_test" in b77_part
    assert "50 in-scope" in b77_part and "other 27" in b77_part
    assert ("| Logistic regression (frozen) | 82.00 ± 2.83 (n=2) | 61.00 ± 1.41 (n=2) | 51.00 ± 1.41 (n=2) | "
            "55.00 ± 1.41 (n=2) | 0.3500 ± 0.0707 (n=2) | 86.00 ± 1.41 (n=2) |") in b77_part
    textmatch = report_fewshot.METHOD_NAMES["textmatch"]
    assert f"| {textmatch} | skipped [1] | – | – | – | – | – |" in b77_part
    assert "- [1] not run for lack of time" in b77_part
    assert "Cosine" not in b77_part


def test_oos_section_renders_both_datasets(tmp_path):
    write_json(tmp_path, oos_records())
    report_fewshot.render(tmp_path)
    md = (tmp_path / "fewshot.md").read_text(encoding="utf-8")
    section = md[md.index("## Out-of-scope"):]
    assert "### CLINC150" in section and "### BANKING77-OOS" in section
    assert f"\n{CMD_OOS}\n" in section and f"\n{CMD_B77_OOS}\n" in section


# -- the Pareto plot ------------------------------------------------------------------------------


def naive_front(points: list[tuple[float, float]]) -> set[int]:
    """The points (accuracy, seconds) that no other point dominates, by comparing every pair."""
    front = set()
    for i, (acc_i, t_i) in enumerate(points):
        dominated = False
        for j, (acc_j, t_j) in enumerate(points):
            if j != i and acc_j >= acc_i and t_j <= t_i and (acc_j > acc_i or t_j < t_i):
                dominated = True
                break
        if not dominated:
            front.add(i)
    return front


def test_pareto_front_examples():
    assert report_fewshot.pareto_front([]) == []
    assert report_fewshot.pareto_front([(80.0, 10.0)]) == [0]
    # (acc, s): 1 is dominated by 0; 3 equals 2 in time but is less accurate; 4 is slower and better
    points = [(80.0, 1.0), (79.0, 5.0), (85.0, 10.0), (84.0, 10.0), (90.0, 100.0), (90.0, 200.0)]
    assert report_fewshot.pareto_front(points) == [0, 2, 4]
    assert report_fewshot.pareto_front([(80.0, 1.0), (80.0, 1.0)]) == [0, 1]  # identical points both stay


@pytest.mark.parametrize("seed", range(30))
def test_pareto_front_matches_the_naive_loop(seed):
    import random

    rng = random.Random(seed)
    n = rng.randint(0, 40)
    # few distinct values, so ties in accuracy, time and both are common
    points = [(float(rng.randint(0, 8)), float(rng.choice([0.5, 1, 2, 3, 10, 100]))) for _ in range(n)]
    front = report_fewshot.pareto_front(points)
    assert set(front) == naive_front(points)
    assert len(front) == len(set(front))
    times = [points[i][1] for i in front]
    assert times == sorted(times)  # joinable by a line, left to right


def test_pareto_points_are_seed_means_of_generalised_records():
    records = seeds_records() + [rec(CMD_DRAWN, section="drawn", dataset="banking77", k=5, method="cosine", seed=0,
                                     test_accuracy=1.0, train_s=0.0)]
    points = {m: rest for m, *rest in report_fewshot.pareto_points(records)[("banking77", 5)]}
    assert list(points) == ["cosine", "logreg", "setfit", "textmatch"]  # display order
    mean, sd, seconds, n = points["textmatch"]
    assert (mean, seconds, n) == (82.0, 200.0, 3) and sd == pytest.approx(2.0)
    assert points["cosine"] == [77.0, 0.0, 0.0, 1]  # the drawn record is not used
    assert points["logreg"][3] == 1  # the skipped seed does not count


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.parametrize("which", ["synthetic", "seeds", "none"])
def test_plot_pareto_renders_a_png(which):
    records = {"synthetic": synthetic_records(), "seeds": seeds_records(), "none": []}[which]
    png = report_fewshot.plot_pareto(records)
    assert png.startswith(PNG_MAGIC)
    width, height = png_size(png)
    assert width >= 800 and height >= 600
    assert len(png) > 10_000


def test_cli_section_lines():
    from report_fewshot import render_markdown

    record = {"section": "cli", "dataset": "demo", "method": "textmatch", "train_s": 21.5, "wall_s": 30.25, "episodes": 30,
              "test_accuracy": 97.22, "untrained_test_accuracy": 97.22, "cli": "textmatch train --train a|b.csv --output x",
              "command": "python scripts/bench_fewshot.py --sections cli"}
    md = render_markdown({"runs": [], "records": [record]})
    assert "## textmatch train with its defaults (the command line)" in md
    row = next(line for line in md.splitlines() if line.startswith("| demo"))
    assert row == "| demo | 30 | 21.5 | 30.2 | 97.22 | 97.22 | `textmatch train --train a\\|b.csv --output x` |"
    assert "python scripts/bench_fewshot.py --sections cli" in md
