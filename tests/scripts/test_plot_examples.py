"""scripts/plot_examples.py, the README's plots: run end to end on the real BANKING77 test set
and the demo data with tiny saved models in place of the trained ones (the untrained panel of
the demo map uses the pretrained all-MiniLM-L6-v2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from textmatch import MatchingNetwork
from textmatch.plots import png_size

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import plot_examples  # noqa: E402

pytest.importorskip("matplotlib", reason="the plots need `pip install textmatch[plots]`")


@pytest.mark.slow
@pytest.mark.shared_data
def test_plot_examples_writes_the_readme_plots(tiny_bert_dir, tmp_path):
    b77_texts, b77_labels = plot_examples.read_csv(plot_examples.B77_TRAIN)
    b77 = tmp_path / "b77"
    MatchingNetwork.from_pretrained(str(tiny_bert_dir)).fit(b77_texts, b77_labels).save_pretrained(b77)
    demo = tmp_path / "demo"
    MatchingNetwork.from_pretrained(str(tiny_bert_dir)).fit(*plot_examples.read_csv(plot_examples.DEMO_SUPPORT)).save_pretrained(demo)
    out = tmp_path / "results"
    assert plot_examples.main(["--b77-model", str(b77), "--demo-model", str(demo), "--out", str(out)]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["plots/banking77_10shot/confusion_matrix.png", "plots/banking77_10shot/embedding_map.png",
                       "plots/banking77_10shot/per_class_f1.png", "plots/demo/embedding_map_untrained_vs_trained.png"]
    for name in written:
        width, height = png_size(out / name)
        assert width > 500 and height > 400
    text = (out / "plots.md").read_text(encoding="utf-8")
    assert "python scripts/plot_examples.py --b77-model" in text and "test set (3080 texts): accuracy" in text
