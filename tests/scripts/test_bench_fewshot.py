"""scripts/bench_fewshot.py --quick: every section and method runs end to end on the real
data (a few classes) and writes results in the documented structure. Values are not checked:
the quick run trains for 3 episodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fewshot")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_fewshot.py"), "--quick", "--threads", "1",
         "--data-dir", str(SHARED_DATA), "--output-dir", str(out), "--cache-dir", str(out / "cache")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "fewshot.json").read_text(encoding="utf-8"))


def records(data, section):
    return [r for r in data["records"] if r["section"] == section]


def test_every_section_and_method_has_records(quick_run):
    _, data = quick_run
    assert data["runs"] and data["runs"][0]["command"].startswith("python scripts/bench_fewshot.py --quick")
    assert {"cpus", "cpu", "torch"} <= set(data["runs"][0]["machine"])
    gen = records(data, "generalised")
    methods = {"cosine", "prototype", "logreg", "setfit", "mn", "intent-matcher", "intent-matcher-0",
               "textmatch", "textmatch-meta", "textmatch-unlabeled", "bilstm", "bilstm-init"}
    for dataset in ("banking77", "clinc150"):
        for k in (5, 10):
            cell = {r["method"]: r for r in gen if r["dataset"] == dataset and r["k"] == k}
            assert set(cell) == methods, (dataset, k)
            for method, r in cell.items():
                if "skipped" in r:  # only SetFit may be skipped (not installed by the test scripts)
                    assert method == "setfit" and "pip install setfit" in r["skipped"]
                    continue
                assert 0 <= r["valid_accuracy"] <= 100 and 0 <= r["test_accuracy"] <= 100
                assert r["train_s"] >= 0 and r["predict_s"] >= 0
                assert isinstance(r["config"], dict)


def test_drawn_seeds_and_k(quick_run):
    _, data = quick_run
    drawn = records(data, "drawn")
    assert {(r["dataset"], r["k"], r["seed"]) for r in drawn} == {
        (d, 2, s) for d in ("banking77", "clinc150") for s in (0, 1)
    }


def test_episodic_oos_intent_matcher_and_ablation(quick_run):
    _, data = quick_run
    epi = records(data, "episodic")
    assert {(r["method"], r["k"]) for r in epi} == {(m, k) for m in ("cosine", "prototype", "mn", "intent-matcher-0", "textmatch-meta") for k in (1, 5)}
    for r in epi:
        assert r["fold"] == "01" and r["episodes"] == 20 and 0 <= r["accuracy"] <= 100 and r["ci95"] >= 0
    oos = {r["method"]: r for r in records(data, "oos") if r["dataset"] == "clinc150"}
    assert {"cosine", "logreg", "mn", "intent-matcher", "textmatch"} <= set(oos)
    banking_oos = {r["method"]: r for r in records(data, "oos") if r["dataset"] == "banking77_oos"}
    assert {"cosine", "logreg", "textmatch"} <= set(banking_oos)
    for r in [*oos.values(), *banking_oos.values()]:
        if "skipped" not in r:
            assert {"threshold", "in_scope_accuracy", "oos_precision", "oos_recall", "oos_f1"} <= set(r)
    im = records(data, "intent-matcher")
    assert {r["dataset"] for r in im} == {"banking77", "clinc150"}
    assert all(r["cli"].startswith("textmatch train --train ") for r in im)
    variants = {r["variant"] for r in records(data, "ablation")}
    assert {"head=prototype", "head=logreg", "head=matching+logreg"} <= variants
    assert {"head=matching, class names off", "head=logreg, class names on"} <= variants  # the recipe's ablation
    cli = records(data, "cli")
    assert [r["dataset"] for r in cli] == ["demo"] and cli[0]["episodes"] == 2
    assert 0 <= cli[0]["test_accuracy"] <= 100 and cli[0]["untrained_test_accuracy"] >= 90  # the demo's 97.2 %
    assert cli[0]["arguments"]["num_episodes"] == 2 and cli[0]["cli"].startswith("textmatch train --train ")
    pre = records(data, "pretrain")
    assert {r["dataset"] for r in pre} == {"banking77", "clinc150"}
    for r in pre:
        assert r["cli"].startswith("textmatch pretrain --data ") and r["dataset"] not in r["sources"]
        assert "banking77_oos" not in r["sources"]


def test_report_files(quick_run):
    out, _ = quick_run
    md = (out / "fewshot.md").read_text(encoding="utf-8")
    assert "python scripts/bench_fewshot.py --quick" in md
    for heading in ("Generalised", "Episodic", "Out-of-scope", "Ablation", "textmatch train with its defaults"):
        assert heading in md
    assert (out / "fewshot_vs_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
