"""scripts/report_fewshot.py renders fewshot.md and fewshot_vs_k.png from a synthetic fewshot.json.

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

CMD_GEN = "python scripts/bench_fewshot.py --sections generalised --methods cosine,mn,setfit"
CMD_DRAWN = "python scripts/bench_fewshot.py --sections drawn --datasets banking77"
CMD_EPI = "python scripts/bench_fewshot.py --sections episodic --folds 01,02"
CMD_OOS = "python scripts/bench_fewshot.py --sections oos"
CMD_IM = "python scripts/bench_fewshot.py --sections intent-matcher --datasets banking77"
CMD_ABL = "python scripts/ablation_by_hand.py --temperature 0.1"
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


def test_render_writes_both_files_and_nothing_else(rendered):
    md, png, folder = rendered
    assert md.startswith("# ")
    assert png.startswith(PNG_MAGIC)
    assert sorted(p.name for p in folder.iterdir()) == ["fewshot.json", "fewshot.md", "fewshot_vs_k.png"]  # no temp files left


def test_runs_are_listed(rendered):
    md, _, _ = rendered
    assert "2026-11-28T10:00:00+00:00" in md and "2026-11-29T08:30:00+00:00" in md
    assert "2 CPUs (AMD EPYC 7B13), torch 2.13.0+cpu on 2 threads, Python 3.11.7" in md
    assert "wall 321.5 s" in md


def test_every_section_has_a_heading_and_its_commands(rendered):
    md, _, _ = rendered
    for title in report_fewshot.SECTION_TITLES.values():
        assert f"## {title}" in md
    for command in (CMD_GEN, CMD_DRAWN, CMD_EPI, CMD_OOS, CMD_IM, CMD_ABL):
        assert f"\n{command}\n" in md  # a line of its own, inside a fenced block
    assert md.count("```bash") == 6
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
    assert table_row(md, "Matching Network, fine-tuned on support").startswith(
        "| Matching Network, fine-tuned on support | 87.23 | – | – | – | 50.0 |")
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
    assert md.index("| Cosine matching (frozen) | 77.91") < md.index("| SetFit 1.2 | 80.75") < md.index(
        "| Matching Network, fine-tuned on support | 87.23")


def test_drawn_mean_sd_over_seeds(rendered):
    md, _, _ = rendered
    drawn = md[md.index("## Drawn K"):md.index("## Episodic")]
    assert "| method | B77 1-shot | B77 2-shot |" in drawn
    assert "| Cosine matching (frozen) | 62.00 ± 2.00 (n=3) | 70.50 ± 0.71 (n=2) |" in drawn
    assert "| Matching Network, fine-tuned on support | skipped [1] | 82.00 ± 2.83 (n=2) |" in drawn
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
    assert "| banking77 | 10 | Matching Network, fine-tuned on support | temperature 0.1 instead of 0.05 | 85.56 | 86.00 | 800.0 | worse than the default |" in ablation
    assert "| no warm-up | 84.00 | – | 790.0 |" in ablation
    timing = md[md.index("## Timing"):]
    assert "| B77 5-shot | Matching Network, fine-tuned on support | 50.0 | 20.0 | 0.25x of SetFit |" in timing
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


def test_render_with_no_records_still_writes_both_files(tmp_path):
    write_json(tmp_path, [], runs=[])
    report_fewshot.render(tmp_path)
    md = (tmp_path / "fewshot.md").read_text(encoding="utf-8")
    assert md.startswith("# ")
    assert "## " not in md
    assert (tmp_path / "fewshot_vs_k.png").read_bytes().startswith(PNG_MAGIC)


def test_only_sections_with_records_are_rendered(tmp_path):
    records = [r for r in synthetic_records() if r["section"] == "oos"]
    write_json(tmp_path, records)
    report_fewshot.render(tmp_path)
    md = (tmp_path / "fewshot.md").read_text(encoding="utf-8")
    assert "## Out-of-scope (CLINC150)" in md
    assert "## Generalised" not in md and "## Drawn" not in md and "## Timing" not in md
    assert (tmp_path / "fewshot_vs_k.png").read_bytes().startswith(PNG_MAGIC)  # the "no data" figure


def test_missing_results_file_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="bench_fewshot.py"):
        report_fewshot.render(tmp_path)
