"""scripts/bench_scale.py --quick: every part of the scale benchmark, small, end to end (a local
Ray instance, the int8 backend, the pool of ../shared/data texts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytest.importorskip("ray", reason="the Ray engine needs `pip install textmatch[ray]`")
pytest.importorskip("faiss")


@pytest.mark.slow
@pytest.mark.stress
@pytest.mark.shared_data
def test_bench_scale_quick(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_scale.py"), "--quick", "--output-dir",
                          str(tmp_path), "--cache-dir", str(tmp_path / "cache")],
                         capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "scale_quick.json").read_text())
    enc = report["encoding"]
    for run in ("ray", "ray_worker_killed"):  # the same passages in the same order, embeddings within int8's noise
        assert enc[run]["same_passages_as_local"] is True and enc[run]["min_cosine_to_local"] > 0.97, enc[run]
    assert enc["local_batch_32"]["max_abs_diff_to_local"] > 0  # int8's floor: another batching, other numbers
    assert enc["ray_worker_killed"]["worker_killed"] is True
    assert len(enc["ray"]["last_build"]["ray"]["workers"]) >= 1
    rows = report["indexes"]["real"] + report["indexes"]["clustered"]["rows"]
    assert {r["index"] for r in rows} >= {"IVF-flat", "IVF-PQ + fp16 re-rank x10", "HNSW (M=32)"}
    assert all(0.0 <= r["recall_at_10"] <= 1.0 and r["p50_ms"] > 0 for r in rows)
    exact_ish = [r["recall_at_10"] for r in rows if r["index"] == "IVF-flat" and r["nprobe"] == 64]
    assert min(exact_ish) > 0.9  # every list searched or nearly: close to exact search
    md = (tmp_path / "scale_quick.md").read_text()
    assert "python scripts/bench_scale.py --quick" in md and "Target recall@10" in md
