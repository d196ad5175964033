"""scripts/recipe_search.py: the accuracy helper and the Markdown it renders from its records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import recipe_search  # noqa: E402


def test_accuracy_counts_argmax_hits():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert recipe_search.accuracy(["a", "b"], probs, ["a", "b", "b"]) == 66.67


def test_render_orders_runs_and_steps(tmp_path):
    heads = {h: 80.0 + i for i, h in enumerate(recipe_search.HEADS)}
    records = [
        {"dataset": "clinc150", "k": 5, "tag": "b", "step": 100, "train_s": 20.0, "command": "python scripts/recipe_search.py --tag b", "date": "2026-12-02", **heads},
        {"dataset": "banking77", "k": 10, "tag": "a", "step": 100, "train_s": 10.0, "command": "python scripts/recipe_search.py --tag a", "date": "2026-12-02", **heads},
        {"dataset": "banking77", "k": 10, "tag": "a", "step": 50, "train_s": 5.0, "command": "python scripts/recipe_search.py --tag a", "date": "2026-12-02", **heads, "note": "earlier form"},
    ]
    path = tmp_path / "recipe_search.json"
    path.write_text(json.dumps({"records": records}), encoding="utf-8")
    recipe_search.render(path)
    md = (tmp_path / "recipe_search.md").read_text(encoding="utf-8")
    rows = [line for line in md.splitlines() if line.startswith("| banking77") or line.startswith("| clinc150")]
    assert [r.split(" | ")[3] for r in rows] == ["50", "100", "100"] and rows[2].startswith("| clinc150")
    assert rows[0].endswith("| 80.00 | 81.00 | 82.00 | 83.00 | 84.00 | 85.00 |")
    assert "- 2026-12-02: `python scripts/recipe_search.py --tag a`" in md and "- earlier form" in md


def test_pretrain_pool_never_holds_the_target():
    assert recipe_search.pretrain_sources("clinc150, snips,atis", "banking77") == ["clinc150", "snips", "atis"]
    for pool, target in [("clinc150,banking77_oos", "banking77"), ("banking77", "banking77"), ("snips,clinc150", "clinc150")]:
        try:
            recipe_search.pretrain_sources(pool, target)
        except SystemExit as exc:
            assert "holds the target" in str(exc)
        else:
            raise AssertionError(f"{pool} for {target} was accepted")
