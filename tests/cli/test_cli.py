"""The `textmatch` command: flags, JSON output and exit codes (0 ok, 2 bad input, 1 internal)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_sentences
from textmatch import cli


def write_csv(path: Path, texts, labels, header=("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        if header:
            writer.writerow(header)
        writer.writerows(zip(texts, labels))
    return path


@pytest.fixture
def files(tmp_path):
    texts, labels = make_sentences(8, seed=11)
    test_texts, test_labels = make_sentences(3, seed=12)
    return {
        "support": write_csv(tmp_path / "support.csv", texts, labels),
        "test": write_csv(tmp_path / "test.csv", test_texts, test_labels),
        "noheader": write_csv(tmp_path / "noheader.csv", texts, labels, header=None),
        "onelabel": write_csv(tmp_path / "one.csv", texts[:5], ["a"] * 5),
        "dir": tmp_path,
    }


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json(tiny_bert_dir, files, capsys):
    code, out, err = run(["predict", "--model", tiny_bert_dir, "--support", files["support"], "--json",
                          "rain forecast today", "play my playlist"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert [p["text"] for p in doc["predictions"]] == ["rain forecast today", "play my playlist"]
    for p in doc["predictions"]:
        assert p["label"] in {"weather", "music", "food", "travel", "money", "health"}
        assert len(p["top"]) == 3 and p["top"][0]["label"] == p["label"]
        assert p["score"] == pytest.approx(p["top"][0]["probability"])


def test_predict_plain_and_threshold(tiny_bert_dir, files, capsys):
    code, out, _ = run(["predict", "--model", tiny_bert_dir, "--support", files["support"],
                        "--threshold", "1.0", "rain today"], capsys)
    assert code == 0
    label, score, text = out.strip().split("\t")
    assert label == "oos" and text == "rain today" and 0 < float(score) <= 1


def test_evaluate_json_fields(tiny_bert_dir, files, capsys):
    code, out, err = run(["evaluate", "--model", tiny_bert_dir, "--support", files["support"],
                          "--test", files["test"], "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n"] == 18 and 0.0 <= doc["accuracy"] <= 1.0
    assert set(doc["per_label"]) >= {"weather", "music"}
    correct = sum(round(v["recall"] * v["support"]) for v in doc["per_label"].values())
    assert correct == round(doc["accuracy"] * doc["n"])


def test_train_then_evaluate_saved_model(tiny_bert_dir, files, capsys, tmp_path):
    out_dir = tmp_path / "trained"
    code, out, err = run(["train", "--model", tiny_bert_dir, "--train", files["support"], "--valid", files["test"],
                          "--output", out_dir, "--episodes", "4", "--eval-steps", "2", "--lr", "1e-3",
                          "--no-progress", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["episodes"] == 4 and summary["n_support"] == 48 and summary["best_eval_accuracy"] is not None
    assert (out_dir / "model.safetensors").is_file()
    assert len((tmp_path / "trained.run" / "training_log.jsonl").read_text().splitlines()) == 4  # the run folder
    assert not (out_dir / "training_log.jsonl").exists()  # the model folder holds the model only
    # the saved model carries its support set: --support is optional
    code, out, err = run(["evaluate", "--model", out_dir, "--test", files["test"], "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_support"] == 48


def test_dataset_flag_reads_splits_of_a_dataset_folder(tiny_bert_dir, files, capsys, tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    shutil.copy(files["support"], folder / "train.csv")
    shutil.copy(files["test"], folder / "test.csv")
    code, out, err = run(["evaluate", "--model", tiny_bert_dir, "--dataset", folder, "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["n"] == 18 and doc["n_support"] == 48
    code, out, err = run(["predict", "--model", tiny_bert_dir, "--dataset", folder, "rain"], capsys)
    assert code == 0, err
    code, _, err = run(["evaluate", "--model", tiny_bert_dir, "--dataset", folder, "--split", "valid"], capsys)
    assert code == 2 and "no split 'valid'" in err and "train" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--support", "{noheader}", "x"], "header"),
        (["predict", "--support", "{onelabel}", "x"], "at least 2 classes"),
        (["predict", "--support", "{dir}/missing.csv", "x"], "does not exist"),
        (["predict", "--support", "{support}", ""], "empty"),
        (["evaluate", "--support", "{support}", "--test", "{support}", "--label-column", "intent"], "no column 'intent'"),
        (["train", "--train", "{support}", "--output", "{dir}/o", "--k-shot", "6", "--q-query", "5"], "examples but k_shot"),
        (["predict", "x"], "no support set"),
        (["evaluate", "--support", "{support}"], "--test FILE or --dataset"),
        (["train", "--output", "{dir}/o"], "--train FILE or --dataset"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_bert_dir, files, capsys, argv, message):
    argv = [a.format(**files) for a in argv]
    code, out, err = run([argv[0], "--model", tiny_bert_dir, *argv[1:]], capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unknown_model_exits_2(files, capsys):
    code, _, err = run(["predict", "--model", "no-such-user/no-such-model-xyz", "--support", files["support"], "x"], capsys)
    assert code == 2 and "no-such-user/no-such-model-xyz" in err


def test_usage_errors_exit_2(capsys):
    assert run([], capsys)[0] == 2
    code, _, err = run(["evaluate", "--support", "s.csv", "--threshold", "high"], capsys)
    assert code == 2 and "--threshold" in err
    code, _, err = run(["predict", "--batch-size", "0", "--support", "s.csv", "x"], capsys)
    assert code == 2 and "--batch-size" in err


def test_internal_error_exits_1(tiny_bert_dir, files, capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr("textmatch.core.modeling.MatchingNetwork.classify", boom)
    code, _, err = run(["predict", "--model", tiny_bert_dir, "--support", files["support"], "x"], capsys)
    assert code == 1 and "internal error" in err and "simulated bug" in err


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
def test_help(command, capsys):
    assert cli.main([command, "--help"]) == 0
    assert "--model" in capsys.readouterr().out


def test_console_script_and_stdin(tiny_bert_dir, files):
    exe = shutil.which("textmatch", path=str(Path(sys.executable).parent))
    assert exe, "the textmatch console script is not installed"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run([exe, "predict", "--model", str(tiny_bert_dir), "--support", str(files["support"])],
                            input="rain today\n\nplay a song\n", capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [ln.split("\t")[2] for ln in result.stdout.splitlines()] == ["rain today", "play a song"]
    bad = subprocess.run([exe, "evaluate", "--model", str(tiny_bert_dir), "--support", str(files["noheader"]),
                          "--test", str(files["test"])], capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "header" in bad.stderr


def test_predict_json_encodes_each_text_once(tiny_bert_dir, files, capsys, monkeypatch):
    """Labels, scores and the top classes come from one encoding of each text."""
    from textmatch import MatchingNetwork

    encoded: list[str] = []
    original = MatchingNetwork.embed

    def spy(self, encoder, texts, *args, **kwargs):
        encoded.extend(texts)
        return original(self, encoder, texts, *args, **kwargs)

    monkeypatch.setattr(MatchingNetwork, "embed", spy)
    queries = ["rain forecast today", "play my playlist", "rain forecast today"]
    code, out, err = run(["predict", "--model", tiny_bert_dir, "--support", files["support"], "--json",
                          "--threshold", "0.2", *queries], capsys)
    assert code == 0, err
    assert [t for t in encoded if t in queries] == queries  # each once (twice before: proba, then labels)
    assert len(json.loads(out)["predictions"]) == 3


# -- lose nothing: the data-loss cases of the reliability issue, each reproduced ------------------
def write_corpus(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(["rain and wind today", "a new pizza place", "cheap flights to rome"]):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    return path


def test_index_output_keeps_the_users_files(tiny_bert_dir, capsys, tmp_path):
    """`mkdir d; echo x > d/keep.txt; textmatch index --corpus c.jsonl --output d` deleted keep.txt."""
    pytest.importorskip("bm25s")
    out = tmp_path / "d"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_text("x")
    (out / "sub" / "keep.txt").write_text("y")
    corpus = write_corpus(tmp_path / "c.jsonl")
    for _ in range(2):  # a new index, then a rebuild over it
        code, _, err = run(["index", "--model", tiny_bert_dir, "--corpus", corpus, "--output", out, "--no-progress"], capsys)
        assert code == 0, err
    assert (out / "keep.txt").read_text() == "x" and (out / "sub" / "keep.txt").read_text() == "y"
    code, out_text, err = run(["search", "--index", out, "--model", tiny_bert_dir, "--json", "rain"], capsys)
    assert code == 0 and json.loads(out_text)["results"][0]["hits"], err


def test_index_over_a_model_folder_is_refused(tiny_bert_dir, files, capsys, tmp_path):
    pytest.importorskip("bm25s")
    model_dir = tmp_path / "model"
    code, _, err = run(["train", "--model", tiny_bert_dir, "--train", files["support"], "--output", model_dir,
                        "--episodes", "1", "--no-progress"], capsys)
    assert code == 0, err
    before = sorted(p.name for p in model_dir.iterdir())
    code, _, err = run(["index", "--model", tiny_bert_dir, "--corpus", write_corpus(tmp_path / "c.jsonl"),
                        "--output", model_dir, "--no-progress"], capsys)
    assert code == 2 and "holds a textmatch model" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_train_output_keeps_the_users_files_and_mode(tiny_bert_dir, files, capsys, tmp_path):
    """train --output over a user's folder overwrote README.md and config.json and chmod-ed it 700."""
    out = tmp_path / "mine"
    out.mkdir()
    os.chmod(out, 0o755)
    (out / "README.md").write_text("my notes")
    argv = ["train", "--model", tiny_bert_dir, "--train", files["support"], "--output", out, "--episodes", "1",
            "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 2 and "README.md is not a file textmatch wrote" in err, err
    assert (out / "README.md").read_text() == "my notes"
    (out / "README.md").rename(out / "notes.md")
    (out / "thesis.docx").write_text("years of work")
    code, _, err = run(argv, capsys)
    assert code == 0, err
    assert (out / "notes.md").read_text() == "my notes" and (out / "thesis.docx").read_text() == "years of work"
    assert oct(out.stat().st_mode & 0o777) == oct(0o755)
    assert (tmp_path / "mine.run" / "training_log.jsonl").is_file()


def test_a_failed_training_run_keeps_the_previous_log(tiny_bert_dir, files, capsys, tmp_path, monkeypatch):
    out, run_dir = tmp_path / "model", tmp_path / "model.run"
    argv = ["train", "--model", tiny_bert_dir, "--train", files["support"], "--output", out, "--episodes", "2",
            "--no-progress"]
    assert run(argv, capsys)[0] == 0
    log = (run_dir / "training_log.jsonl").read_text()
    from textmatch import MatchingNetwork

    def boom(self, *a, **k):
        raise RuntimeError("killed mid-run")

    monkeypatch.setattr(MatchingNetwork, "forward", boom)
    code, _, err = run(argv, capsys)
    assert code == 1 and "killed mid-run" in err
    assert (run_dir / "training_log.jsonl").read_text() == log  # not truncated by the failed run
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".training_log")) == []


def test_run_dir_and_resume_flags(tiny_bert_dir, files, capsys, tmp_path):
    out = tmp_path / "model"
    base = ["train", "--model", tiny_bert_dir, "--train", files["support"], "--output", out, "--episodes", "2",
            "--no-progress"]
    code, _, err = run([*base, "--run-dir", out / "runs"], capsys)
    assert code == 2 and "is inside the model folder" in err and "choose another --run-dir" in err
    code, _, err = run([*base, "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err and "holds no checkpoint-N folder" in err and "--save-steps N" in err
    code, _, err = run([*base, "--save-steps", "0"], capsys)
    assert code == 2 and "--save-steps must be at least 1, got 0" in err
    assert run([*base, "--run-dir", tmp_path / "elsewhere"], capsys)[0] == 0
    assert (tmp_path / "elsewhere" / "training_log.jsonl").is_file()
    code, _, err = run([*base, "--run-dir", tmp_path / "elsewhere", "--resume"], capsys)
    assert code == 2 and "holds no checkpoint-N folder" in err and "--save-steps N" in err
    code, _, err = run([*base, "--device", "cuda:1"], capsys)
    assert code == 2 and "CUDA_VISIBLE_DEVICES=1" in err


def test_train_refuses_before_training_not_after(tiny_bert_dir, files, capsys, tmp_path, monkeypatch):
    from textmatch import Trainer

    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")  # the user's, not a textmatch config

    def never(self):
        raise AssertionError("training started although the save was bound to fail")

    monkeypatch.setattr(Trainer, "train", never)
    code, _, err = run(["train", "--model", tiny_bert_dir, "--train", files["support"], "--output", out,
                        "--no-progress"], capsys)
    assert code == 2 and "config.json is not a file textmatch wrote" in err, err
    assert (out / "config.json").read_text() == "{}"


def test_predict_explain_table_and_json(tiny_bert_dir, files, capsys):
    argv = ["predict", "--model", tiny_bert_dir, "--support", files["support"], "--explain", "--evidence", "2",
            "rain forecast today", "play my playlist"]
    code, out, err = run(argv + ["--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    for p in doc["predictions"]:
        e = p["explanation"]
        assert p["label"] == e["label"] and p["score"] == e["probability"] and e["decided_by"] == "matching"
        assert len(e["evidence"]) == 2 and e["evidence"][0]["weight"] >= e["evidence"][1]["weight"]
        assert e["runner_up_evidence"]["label"] == e["runner_up"] != e["label"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2 and blocks[0].splitlines()[0] == "rain forecast today"
    first = doc["predictions"][0]["explanation"]
    assert f"-> {first['label']}  p={first['probability']:.3f}" in blocks[0]
    assert first["evidence"][0]["text"] in blocks[0] and "runner-up " + first["runner_up"] in blocks[0]
    code, _, err = run(argv[:-2] + ["--evidence", "0", "x"], capsys)
    assert code == 2 and "--evidence" in err
