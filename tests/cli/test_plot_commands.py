"""`evaluate --plot DIR` and the training curves of `train`: PNG files of the expected size,
written without a display; without matplotlib a clear error (evaluate) or one line (train)."""

from __future__ import annotations

import json
import sys

import pytest
from test_cli import run, write_csv

from conftest import make_sentences
from textmatch import MatchingNetwork
from textmatch.classification.evaluation_plots import classify_for_plots, evaluation_figures, plot_evaluation
from textmatch.plots import png_size
from textmatch.plots.common import DPI

pytest.importorskip("matplotlib", reason="the plots need `pip install textmatch[plots]`")


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)


@pytest.fixture
def data(tmp_path):
    texts, labels = make_sentences(6, seed=21)
    test_texts, test_labels = make_sentences(3, seed=22)
    test_texts += ["hello bye test", "x x x"]
    test_labels += ["oos", "oos"]
    return {"support": write_csv(tmp_path / "support.csv", texts, labels),
            "test": write_csv(tmp_path / "test.csv", test_texts, test_labels),
            "texts": test_texts, "labels": test_labels, "support_rows": (texts, labels)}


def expected_sizes(model, texts, labels, threshold, title):
    prediction, emb = classify_for_plots(model, texts, threshold=threshold)
    figures = evaluation_figures(model, labels, prediction, emb, threshold=threshold, title=title)
    return {name: tuple(int(round(v * DPI)) for v in fig.get_size_inches()) for name, fig in figures.items()}


def test_evaluate_plot_writes_every_figure(tiny_bert_dir, data, tmp_path, capsys):
    out = tmp_path / "plots"
    code, stdout, err = run(["evaluate", "--model", tiny_bert_dir, "--support", data["support"], "--test", data["test"],
                             "--threshold", "0.3", "--plot", out, "--json"], capsys)
    assert code == 0, err
    report = json.loads(stdout)
    names = sorted(p.rsplit("/", 1)[-1] for p in report["plots"])
    assert names == ["confusion_matrix.png", "embedding_map.png", "oos_threshold.png", "per_class_f1.png"]
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir)).fit(*data["support_rows"])
    want = expected_sizes(model, data["texts"], data["labels"], 0.3, "test")
    for name, size in want.items():
        path = out / f"{name}.png"
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert abs(png_size(path)[0] - size[0]) <= 2 and abs(png_size(path)[1] - size[1]) <= 2, name


def test_no_threshold_and_no_oos_rows_draws_no_threshold_curve(tiny_bert_dir, tmp_path):
    texts, labels = make_sentences(4, seed=23)
    test_texts, test_labels = make_sentences(2, seed=24)
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir)).fit(texts, labels)
    result = plot_evaluation(model, test_texts, test_labels, tmp_path / "p")
    assert sorted(p.name for p in result.paths) == ["confusion_matrix.png", "embedding_map.png", "per_class_f1.png"]
    assert result.report["n"] == len(test_texts) and result.threshold is None


def test_plot_folder_problems_are_found_before_encoding(tiny_bert_dir, data, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "confusion_matrix.png").write_bytes(b"my own picture")
    code, _, err = run(["evaluate", "--model", tiny_bert_dir, "--support", data["support"], "--test", data["test"],
                        "--plot", mine], capsys)
    assert code == 2 and "not a file textmatch wrote" in err
    assert (mine / "confusion_matrix.png").read_bytes() == b"my own picture"


def test_evaluate_plot_without_matplotlib_says_how_to_install(tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(["evaluate", "--model", tiny_bert_dir, "--support", data["support"], "--test", data["test"],
                        "--plot", tmp_path / "p"], capsys)
    assert code == 2 and 'pip install "textmatch[plots]"' in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


def test_train_writes_training_curves(tiny_bert_dir, data, tmp_path, capsys):
    out = tmp_path / "model"
    code, stdout, err = run(["train", "--model", tiny_bert_dir, "--train", data["support"], "--valid", data["support"],
                             "--output", out, "--episodes", "6", "--eval-steps", "3", "--eval-episodes", "2",
                             "--no-progress", "--json", "--no-label-names", "--head", "matching"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    curves = tmp_path / "model.run" / "training_curves.png"
    assert summary["training_curves"] == str(curves) and curves.stat().st_size > 5000
    width, height = png_size(curves)
    assert width > height > 300


def test_train_without_matplotlib_skips_the_curves_in_one_line(tiny_bert_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, stdout, err = run(["train", "--model", tiny_bert_dir, "--train", data["support"], "--output", tmp_path / "m",
                             "--episodes", "2", "--no-progress", "--no-label-names", "--head", "matching"], capsys)
    assert code == 0, err
    skipped = [line for line in err.splitlines() if "training curves" in line]
    assert skipped == ['training curves skipped: plots need matplotlib: pip install "textmatch[plots]"']
    assert not (tmp_path / "m.run" / "training_curves.png").exists()
