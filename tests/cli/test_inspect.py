"""`textmatch inspect`: support-set diagnostics from the shell, plain and --json, and its errors."""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import make_sentences
from test_cli import run, write_csv

from textmatch import cli

PLANTED = "rain forecast today please"  # under "weather" and under "music"


@pytest.fixture
def support_csv(tmp_path):
    texts, labels = make_sentences(4, seed=21)
    return write_csv(tmp_path / "support.csv", texts + [PLANTED, PLANTED], labels + ["weather", "music"])


@pytest.fixture
def model_dir(tiny_bert_model, tmp_path):
    """A tiny textmatch folder saved with its support set (with the planted duplicate)."""
    texts, labels = make_sentences(4, seed=21)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_bert_model.fit(texts + [PLANTED, PLANTED], labels + ["weather", "music"])
    return tiny_bert_model.save_pretrained(tmp_path / "model")


def test_plain_report_on_a_saved_model(model_dir, capsys):
    code, out, err = run(["inspect", "--model", model_dir, "--near-duplicate-threshold", "0.999"], capsys)
    assert code == 0, err
    assert "support set: 26 examples, 6 classes" in out
    assert "examples per class: min 4, median 4, max 5" in out
    lines = out.splitlines()
    first_pair = lines.index(next(line for line in lines if line.startswith("near-duplicates"))) + 1
    assert {lines[first_pair].split("] ", 1)[1], lines[first_pair + 1].split("] ", 1)[1]} == {PLANTED}
    assert {"[weather]", "[music]"} == {lines[first_pair].split()[1], lines[first_pair + 1].split()[0]}
    for heading in ("misplaced examples", "leave-one-out accuracy (eq. 1):", "note: Leave-one-out uses eq. 1"):
        assert heading in out
    assert all(f"  {label} " in out for label in ("weather", "music", "food", "travel", "money", "health"))


def test_json_with_a_support_file_and_top(tiny_bert_dir, support_csv, capsys):
    code, out, err = run(["inspect", "--model", tiny_bert_dir, "--support", support_csv, "--json",
                          "--near-duplicate-threshold", "-1", "--top", "2"], capsys)
    assert code == 0, err
    assert "appear under two or more labels" in err  # read_labelled's warning, on stderr
    doc = json.loads(out)
    assert doc["model"] == str(tiny_bert_dir) and doc["threshold"] == -1.0
    assert doc["counts"]["weather"] == 5 and doc["n_examples"] == 26
    assert len(doc["near_duplicates"]) == 2 < doc["near_duplicate_count"]  # --top keeps 2 rows, the count is full
    assert {doc["near_duplicates"][0]["text_a"], doc["near_duplicates"][0]["text_b"]} == {PLANTED}
    assert len(doc["loo_errors"]) <= 2 and len(doc["misplaced"]) <= 2
    assert set(doc["loo_accuracy"]) == set(doc["counts"])
    assert 0.0 <= doc["loo_overall"] <= 1.0 and doc["head_note"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "no support set"),
        (["--support", "{support}", "--near-duplicate-threshold", "1.5"], "--near-duplicate-threshold"),
        (["--support", "{support}", "--near-duplicate-threshold", "nan"], "[-1, 1]"),
        (["--support", "{support}", "--top", "0"], "--top"),
    ],
)
def test_errors_exit_2_with_one_line(tiny_bert_dir, support_csv, capsys, extra, message):
    argv = ["inspect", "--model", tiny_bert_dir, *[a.format(support=support_csv) for a in extra]]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert message in err and err.startswith("textmatch inspect: error:")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help(capsys):
    assert cli.main(["inspect", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--support", "--near-duplicate-threshold", "--top", "--json", "--text-column", "--batch-size"):
        assert flag in out
