"""The probes of the reliability issue, as a table: every command with bad or hostile input,
every numeric flag at its edges, hostile output folders, damaged model and index folders.

Each probe runs the real command line in-process and states what a user must see: "ok" (exit 0),
"error" (exit 2 with one line on stderr that matches the pattern; never exit 1, never a
traceback) or "warn" (exit 0 with a warning line). A probe that writes also checks that
nothing outside its output folder changed and that the user's own files are still there.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import make_sentences
from textmatch import cli

OK, ERROR, WARN = "ok", "error", "warn"


@dataclass(frozen=True)
class Probe:
    name: str
    argv: tuple[str, ...]  # "{support}", "{model}", ... are filled from the workspace
    expect: str
    match: str = ""


def write_csv(path: Path, rows, header=("text", "label"), encoding="utf-8", line_end="\n") -> Path:
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh, lineterminator=line_end)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_bert_dir):
    """Data files, a saved model and an index, made once; probes that damage them use copies."""
    root = tmp_path_factory.mktemp("probes")
    texts, labels = make_sentences(6, seed=21)
    rows = list(zip(texts, labels))
    files = {
        "support": write_csv(root / "support.csv", rows),
        "test": write_csv(root / "test.csv", list(zip(*make_sentences(2, seed=22)))),
        "empty": root / "empty.csv",
        "header_only": write_csv(root / "header.csv", []),
        "wrong_columns": write_csv(root / "wrong.csv", rows, header=("sentence", "intent")),
        "nan_label": write_csv(root / "nan.csv", rows[:6] + [(texts[6], "")]),
        "one_class": write_csv(root / "one.csv", [(t, "a") for t in texts[:6]]),
        "one_per_class": write_csv(root / "one_per.csv", rows[::6]),
        "conflict": write_csv(root / "conflict.csv", rows + [(texts[0], "not-" + labels[0])]),
        "latin1": write_csv(root / "latin1.csv", rows[:12] + [("caf\u00e9 cr\u00e8me", labels[0])], encoding="latin-1"),
        "bom": write_csv(root / "bom.csv", rows, encoding="utf-8-sig"),
        "crlf": write_csv(root / "crlf.csv", rows, line_end="\r\n"),
        "tsv_named_csv": root / "tabs.csv",
        "malformed_jsonl": root / "bad.jsonl",
        "big_text": write_csv(root / "big.csv", rows + [("rain " * 200_000, labels[0])]),
        "unicode": write_csv(root / "uni.csv", rows + [("\U0001F600\u200f\u200b" * 3_400, labels[1])]),
        "corpus": root / "corpus.jsonl",
        "dir": root,
    }
    files["empty"].write_text("")
    files["tsv_named_csv"].write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    files["malformed_jsonl"].write_text('{"text": "rain", "label": "weather"}\n{"text": oops\n')
    with open(files["corpus"], "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts[:10]):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": text}) + "\n")
    model = root / "model"
    assert cli.main(["train", "--model", str(tiny_bert_dir), "--train", str(files["support"]), "--output", str(model),
                     "--episodes", "1", "--no-progress"]) == 0
    index = root / "index"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(files["corpus"]), "--output", str(index),
                     "--no-progress", "--index-backend", "exact"]) == 0
    files.update(model=model, index=index, bert=Path(tiny_bert_dir))
    try:
        import faiss  # noqa: F401
    except ImportError:
        return files
    files["faiss_index"] = root / "faiss_index"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(files["corpus"]), "--output",
                     str(files["faiss_index"]), "--no-progress", "--index-backend", "flat"]) == 0
    return files


def damaged_copy(src: Path, dst: Path, damage) -> Path:
    shutil.copytree(src, dst)
    damage(dst)
    return dst


DATA_PROBES = [
    Probe("missing support file", ("predict", "--model", "{bert}", "--support", "{dir}/nope.csv", "x"), ERROR, "does not exist"),
    Probe("empty support file", ("predict", "--model", "{bert}", "--support", "{empty}", "x"), ERROR, ""),
    Probe("header-only support", ("predict", "--model", "{bert}", "--support", "{header_only}", "x"), ERROR, "no rows"),
    Probe("wrong columns", ("predict", "--model", "{bert}", "--support", "{wrong_columns}", "x"), ERROR, "no column 'text'"),
    Probe("NaN label", ("predict", "--model", "{bert}", "--support", "{nan_label}", "x"), ERROR, "missing"),
    Probe("one class", ("predict", "--model", "{bert}", "--support", "{one_class}", "x"), ERROR, "at least 2 classes"),
    Probe("one example per class", ("predict", "--model", "{bert}", "--support", "{one_per_class}", "rain"), OK),
    Probe("one example per class, train", ("train", "--model", "{bert}", "--train", "{one_per_class}", "--output",
                                           "{out}", "--episodes", "1", "--no-progress", "--no-label-names"), ERROR,
          "at least 2 per class"),
    # with class names on (the default), each class's name is its second example: episodes of name + text
    Probe("one example per class and its name, train", ("train", "--model", "{bert}", "--train", "{one_per_class}",
                                                        "--output", "{out}", "--episodes", "1", "--no-progress"), OK),
    Probe("conflicting duplicates warn", ("predict", "--model", "{bert}", "--support", "{conflict}", "rain"), WARN,
          "appear under two or more labels"),
    Probe("conflicting duplicates --strict", ("predict", "--model", "{bert}", "--support", "{conflict}", "--strict",
                                              "rain"), ERROR, "appear under two or more labels"),
    Probe("latin-1 file", ("predict", "--model", "{bert}", "--support", "{latin1}", "rain"), ERROR, "not UTF-8"),
    Probe("BOM", ("predict", "--model", "{bert}", "--support", "{bom}", "rain"), OK),
    Probe("CRLF", ("predict", "--model", "{bert}", "--support", "{crlf}", "rain"), OK),
    Probe("TSV named .csv", ("predict", "--model", "{bert}", "--support", "{tsv_named_csv}", "rain"), ERROR, "column"),
    Probe("malformed JSONL", ("predict", "--model", "{bert}", "--support", "{malformed_jsonl}", "rain"), ERROR, "bad.jsonl"),
    Probe("directory instead of file", ("predict", "--model", "{bert}", "--support", "{dir}", "rain"), ERROR, ""),
    Probe("1 MB text", ("predict", "--model", "{bert}", "--support", "{big_text}", "rain"), WARN, "truncated"),
    Probe("emoji / RTL / zero-width", ("predict", "--model", "{bert}", "--support", "{unicode}", "rain"), OK),
    Probe("evaluate: missing test", ("evaluate", "--model", "{bert}", "--support", "{support}", "--test", "{dir}/no.csv"),
          ERROR, "does not exist"),
    Probe("evaluate: wrong columns", ("evaluate", "--model", "{bert}", "--support", "{support}", "--test",
                                      "{wrong_columns}"), ERROR, "no column"),
    Probe("train: empty", ("train", "--model", "{bert}", "--train", "{empty}", "--output", "{out}", "--no-progress"), ERROR, ""),
    Probe("train: one class", ("train", "--model", "{bert}", "--train", "{one_class}", "--output", "{out}",
                               "--no-progress"), ERROR, "at least 2 classes"),
    Probe("index: missing corpus", ("index", "--model", "{bert}", "--corpus", "{dir}/none.jsonl", "--output", "{out}"),
          ERROR, "does not exist"),
    Probe("index: malformed corpus", ("index", "--model", "{bert}", "--corpus", "{malformed_jsonl}", "--output", "{out}",
                                      "--no-progress"), ERROR, ""),
    Probe("evaluate-retrieval: not a BEIR folder", ("evaluate-retrieval", "--model", "{bert}", "--data", "{dir}/none"),
          ERROR, ""),
    Probe("search: not an index", ("search", "--index", "{dir}", "rain"), ERROR, "not a textmatch index"),
    Probe("push: not a model folder", ("push", "--model", "{dir}", "--repo-id", "me/x"), ERROR, "not a model folder"),
]

# every numeric flag at 0, negative, huge and NaN (huge only where the command stays fast)
PREDICT = ("predict", "--model", "{bert}", "--support", "{support}")
TRAIN = ("train", "--model", "{bert}", "--train", "{support}", "--output", "{out}", "--no-progress")
INDEX = ("index", "--model", "{bert}", "--corpus", "{corpus}", "--output", "{out}", "--no-progress")
SEARCH = ("search", "--index", "{index}", "--model", "{bert}")
NUMERIC = [
    (PREDICT, "--threshold", ["-0.5", "2", "nan", "inf"], "threshold"),
    (PREDICT, "--top-k", ["0", "-1"], "--top-k"),
    (PREDICT, "--batch-size", ["0", "-3"], "--batch-size"),
    (PREDICT, "--threads", ["0", "-2"], "--threads"),
    (TRAIN, "--episodes", ["0", "-1"], "num_episodes"),
    (TRAIN, "--n-way", ["0", "1", "-2"], "n_way"),
    (TRAIN, "--k-shot", ["0", "-1"], "k_shot"),
    (TRAIN, "--q-query", ["0", "-1"], "q_query"),
    (TRAIN, "--lr", ["0", "-1e-3", "nan", "inf"], "learning_rate"),
    (TRAIN, "--temperature", ["0", "-1", "nan", "inf"], "temperature"),
    (TRAIN, "--eval-steps", ["0", "-1"], "eval_steps"),
    (TRAIN, "--eval-episodes", ["0", "-1"], "eval_episodes"),
    (TRAIN, "--patience", ["0", "-1"], "early_stopping_patience"),
    (TRAIN, "--seed", ["-1"], "seed"),
    (INDEX, "--passage-tokens", ["0", "-5", "4"], "passage_tokens"),
    (INDEX, "--passage-overlap", ["-1", "10000"], "passage_overlap"),
    (INDEX, "--shard-size", ["0", "-1"], "shard_size"),
    (SEARCH, "--top-k", ["0", "-1"], "--top-k"),
    (SEARCH, "--dense-weight", ["-0.1", "5", "nan"], "dense_weight"),
]
NUMERIC_PROBES = [
    Probe(f"{base[0]} {flag} {value}", (*base, f"{flag}={value}", *(["rain"] if base[0] in ("predict", "search") else [])),
          ERROR, match)
    for base, flag, values, match in NUMERIC
    for value in values
] + [
    Probe("search --top-k huge", (*SEARCH, "--top-k", "1000000", "rain"), OK),
    Probe("predict --top-k huge", (*PREDICT, "--top-k", "1000000", "--json", "rain"), OK),
    Probe("predict --threshold 1 (all out of scope, allowed)", (*PREDICT, "--threshold", "1", "rain"), OK),
]

OUTPUT_PROBES = [
    Probe("train --output is a file", (*TRAIN[:-3], "--output", "{support}", "--episodes", "1", "--no-progress"), ERROR,
          "is a file"),
    Probe("train --output under a file", (*TRAIN[:-3], "--output", "{support}/sub", "--episodes", "1", "--no-progress"),
          ERROR, ""),
    Probe("index --output is a file", (*INDEX[:-3], "--output", "{support}", "--no-progress"), ERROR, "is a file"),
    Probe("index --output is a model folder", (*INDEX[:-3], "--output", "{model_copy}", "--no-progress"), ERROR,
          "holds a textmatch model"),
    Probe("train --output is an index folder", (*TRAIN[:-3], "--output", "{index_copy}", "--episodes", "1",
                                                "--no-progress"), ERROR, "holds a textmatch index"),
]


def corrupt(name, text=None, truncate=None):
    def damage(folder: Path) -> None:
        path = folder / name
        if truncate is not None:
            path.write_bytes(path.read_bytes()[:truncate])
        else:
            path.write_text(text)
        (folder / "textmatch-manifest.json").unlink()  # as a folder from before manifests: parsers see it
    return damage


def damage_with_manifest(name):
    def damage(folder: Path) -> None:
        path = folder / name
        path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    return damage


MODEL_DAMAGE = {
    "truncated model.safetensors": (corrupt("model.safetensors", truncate=100), "corrupt or truncated"),
    "truncated weights, manifest kept": (damage_with_manifest("model.safetensors"), "model.safetensors"),
    "invalid config.json": (corrupt("config.json", "{not json"), "not valid JSON"),
    "unknown config fields": (corrupt("config.json", json.dumps({"library_name": "textmatch", "format_version": 1,
                                                                  "matching": {"wat": 1}, "query_encoder": {}})), ""),
    "wrong-typed config field": (corrupt("config.json", json.dumps({"library_name": "textmatch", "format_version": 1,
                                                                     "matching": {"temperature": "hot"},
                                                                     "query_encoder": {"type": "transformer", "config": {}}})),
                                 "temperature"),
    "corrupt support_set.json": (corrupt("support_set.json", "[1, 2"), "support_set.json is corrupt"),
    "support_set.json without labels": (corrupt("support_set.json", json.dumps({"texts": ["a", "b"]})), "labels"),
}


def pickled_only(folder: Path) -> None:
    for path in folder.glob("*.safetensors"):
        path.rename(path.with_suffix(".bin"))
    (folder / "textmatch-manifest.json").unlink()


INDEX_DAMAGE = {
    "short passages.jsonl": (corrupt("passages.jsonl", '{"doc_id": "d0", "text": "x"}\n'), "lists 1 passages"),
    "truncated vectors.npy": (corrupt("vectors.npy", truncate=20), "vectors.npy"),
    "invalid index.json": (corrupt("index.json", "{"), "index.json is corrupt"),
    "truncated index.faiss": (corrupt("index.faiss", truncate=30), "index.faiss"),
    "truncated index.faiss, manifest kept": (damage_with_manifest("index.faiss"), "index.faiss"),
}


def fill(argv, ws, out) -> list[str]:
    values = {k: str(v) for k, v in ws.items()}
    values["out"] = str(out)
    return [a.format(**values) for a in argv]


def run_probe(probe: Probe, ws, tmp_path, capsys) -> tuple[int, str, str]:
    out = tmp_path / "out"
    keep = tmp_path / "keep.txt"
    keep.write_text("the user's")
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    code = cli.main(fill(probe.argv, ws, out))
    stdout, stderr = capsys.readouterr()
    assert keep.read_text() == "the user's"
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before  # nothing written next to the test folder
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    if probe.expect == ERROR:
        assert code == 2, (probe.name, code, stderr)
        lines = [line for line in stderr.splitlines() if "error:" in line]
        assert len(lines) == 1 and probe.match in lines[0], (probe.name, stderr)
    elif probe.expect == WARN:
        assert code == 0, (probe.name, stderr)
        assert any("warning" in line.lower() and probe.match in line for line in stderr.splitlines()), (probe.name, stderr)
    else:
        assert code == 0, (probe.name, stderr)
    return code, stdout, stderr


@pytest.mark.parametrize("probe", DATA_PROBES + NUMERIC_PROBES, ids=lambda p: p.name)
def test_probe(probe, workspace, tmp_path, capsys):
    run_probe(probe, workspace, tmp_path, capsys)


@pytest.mark.parametrize("probe", OUTPUT_PROBES, ids=lambda p: p.name)
def test_output_probe(probe, workspace, tmp_path, capsys):
    ws = dict(workspace)
    ws["model_copy"] = damaged_copy(workspace["model"], tmp_path / "model_copy", lambda f: None)
    ws["index_copy"] = damaged_copy(workspace["index"], tmp_path / "index_copy", lambda f: None)
    before = {p: p.read_bytes() for p in ws["model_copy"].rglob("*") if p.is_file()}
    support_before = workspace["support"].read_bytes()
    run_probe(probe, ws, tmp_path, capsys)
    assert {p: p.read_bytes() for p in ws["model_copy"].rglob("*") if p.is_file()} == before
    assert workspace["support"].read_bytes() == support_before


@pytest.mark.parametrize("name", sorted(MODEL_DAMAGE))
def test_damaged_model_folder(name, workspace, tmp_path, capsys):
    damage, match = MODEL_DAMAGE[name]
    ws = dict(workspace, model=damaged_copy(workspace["model"], tmp_path / "m", damage))
    run_probe(Probe(name, ("predict", "--model", "{model}", "rain"), ERROR, match), ws, tmp_path, capsys)


def test_pickled_only_model_folder(workspace, tmp_path, capsys):
    ws = dict(workspace, model=damaged_copy(workspace["model"], tmp_path / "m", pickled_only))
    run_probe(Probe("pickled only", ("predict", "--model", "{model}", "rain"), ERROR, "pickle"), ws, tmp_path, capsys)


@pytest.mark.parametrize("name", sorted(INDEX_DAMAGE))
def test_damaged_index_folder(name, workspace, tmp_path, capsys):
    damage, match = INDEX_DAMAGE[name]
    source = workspace["index"]
    if name.startswith("truncated index.faiss"):
        source = workspace.get("faiss_index") or pytest.skip("faiss is not installed")
    ws = dict(workspace, index=damaged_copy(source, tmp_path / "i", damage))
    run_probe(Probe(name, ("search", "--index", "{index}", "--model", "{bert}", "rain"), ERROR, match), ws, tmp_path, capsys)


def test_unknown_model_offline(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_probe(Probe("unknown model id", ("predict", "--model", "nobody/no-such-model", "--support", "{support}", "x"),
                    ERROR, "nobody/no-such-model"), workspace, tmp_path, capsys)


def test_push_offline_is_bad_input_not_a_bug(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    ws = dict(workspace, model_copy=damaged_copy(workspace["model"], tmp_path / "m", lambda f: None))
    run_probe(Probe("push offline", ("push", "--model", "{model_copy}", "--repo-id", "me/x", "--token", "hf_x"), ERROR,
                    "cannot push to the Hub"), ws, tmp_path, capsys)


def test_stdin_crlf_is_stripped(workspace):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "textmatch.cli", "predict", "--model", str(workspace["bert"]),
                           "--support", str(workspace["support"]), "--json"],
                          input=b"rain today\r\nplay a song\r\n", capture_output=True, timeout=300,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr.decode()
    texts = [p["text"] for p in json.loads(proc.stdout)["predictions"]]
    assert texts == ["rain today", "play a song"]


@pytest.mark.stress
def test_kill_9_during_train_keeps_the_previous_model_and_log(workspace, tmp_path):
    """kill -9 of `textmatch train --output DIR` over a trained model: DIR still loads as the old
    model, with the old log; the killed run's temporary log is removed by the next run."""
    import signal
    import subprocess
    import sys
    import time

    from textmatch import MatchingNetwork

    out = damaged_copy(workspace["model"], tmp_path / "model", lambda f: None)
    run_dir = tmp_path / "model.run"  # where `train --output DIR` logs: DIR.run
    assert cli.main(["train", "--model", str(workspace["bert"]), "--train", str(workspace["support"]), "--output",
                     str(out), "--episodes", "1", "--no-progress"]) == 0
    log = run_dir / "training_log.jsonl"
    old_log = log.read_bytes()
    old = MatchingNetwork.from_pretrained(out).predict_proba(["rain today"])
    cmd = [sys.executable, "-m", "textmatch.cli", "train", "--model", str(workspace["bert"]), "--train",
           str(workspace["support"]), "--output", str(out), "--episodes", "100000", "--no-progress"]
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 120
    temps = []
    while time.time() < deadline and proc.poll() is None:
        temps = [p for p in run_dir.iterdir() if p.name.startswith(".training_log.jsonl.tmp-") and p.stat().st_size > 0]
        if temps:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert temps, "the run was not killed mid-training"
    assert log.read_bytes() == old_log
    import numpy as np

    np.testing.assert_allclose(MatchingNetwork.from_pretrained(out).predict_proba(["rain today"]), old, atol=1e-6)
    assert cli.main(["train", "--model", str(workspace["bert"]), "--train", str(workspace["support"]), "--output",
                     str(out), "--episodes", "2", "--no-progress"]) == 0
    assert not any(p.name.startswith(".training_log.jsonl.tmp-") for p in run_dir.iterdir())
    assert len(log.read_text().splitlines()) == 2  # the new, completed run's log


@pytest.mark.parametrize("command", ["train", "index"])
def test_immutable_output_folder_is_a_clear_error(command, workspace, tmp_path, capsys):
    """An immutable --output (chattr +i: even root cannot write in it) is bad input, not a bug."""
    import subprocess

    out = tmp_path / "locked"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available on this file system")
    try:
        argv = (*TRAIN[:-3], "--output", str(out), "--episodes", "1", "--no-progress") if command == "train" else \
            (*INDEX[:-3], "--output", str(out), "--no-progress")
        code = cli.main(fill(argv, workspace, out))
        err = capsys.readouterr().err
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    assert code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
