"""textmatch.plots: every figure is drawn off-screen and written as a PNG of the size asked
for; the sweep maths against naive loops; the write rules of textmatch.files; the errors."""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from textmatch.errors import TextMatchError
from textmatch.files import write_folder
from textmatch.plots import (
    confusion_matrix_figure,
    embedding_map_figure,
    new_figure,
    oos_threshold_figure,
    per_class_f1_figure,
    plot_training_log,
    png_size,
    project_2d,
    read_training_log,
    require_matplotlib,
    save_figure,
    threshold_curve,
    top_confusions,
    training_curves_figure,
    write_figures,
)

DPI = 40  # small PNGs keep the tests fast; the size rule is the same at any dpi


@pytest.fixture(autouse=True)
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


def assert_png_of(fig, path):
    """`path` is a non-empty PNG of the figure's size in inches times DPI pixels."""
    assert path.is_file() and path.stat().st_size > 1000
    width, height = png_size(path)
    want_w, want_h = fig.get_size_inches() * DPI
    assert abs(width - want_w) <= 2 and abs(height - want_h) <= 2, ((width, height), (want_w, want_h))


def random_labels(n_classes, n, accuracy, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"intent_{i:03d}_{'x' * (i % 7)}" for i in range(n_classes)]
    gold = [classes[i] for i in rng.integers(0, n_classes, n)]
    predicted = [g if rng.random() < accuracy else classes[rng.integers(0, n_classes)] for g in gold]
    return gold, predicted


def per_label_report(gold, predicted):
    from textmatch.classification.metrics import (
        classification_report,  # the producer of per_label
    )

    return classification_report(gold, predicted)["per_label"]


# -- figures -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_classes", [12, 150])
def test_confusion_matrix_png(tmp_path, n_classes):
    gold, predicted = random_labels(n_classes, 20 * n_classes, 0.8)
    fig = confusion_matrix_figure(gold, predicted, max_classes=30)
    assert_png_of(fig, save_figure(fig, tmp_path / "confusion.png", dpi=DPI))
    title = fig.texts[0].get_text() if fig.texts else ""
    assert "classes with errors" in title
    if n_classes == 150:
        assert "30 most confused of the" in title and "150 classes in all" in title
        assert len(fig.axes[0].get_xticklabels()) == 30


def test_confusion_matrix_without_errors_says_so(tmp_path):
    gold = ["a", "b", "c"] * 5
    fig = confusion_matrix_figure(gold, gold)
    assert any("no errors" in t.get_text() for t in fig.axes[0].texts)
    assert_png_of(fig, save_figure(fig, tmp_path / "none.png", dpi=DPI))


def test_top_confusions_match_a_counter():
    gold, predicted = random_labels(15, 600, 0.6, seed=3)
    got = top_confusions(gold, predicted, n=1000)
    want = Counter((g, p) for g, p in zip(gold, predicted) if g != p)
    assert {(g, p): c for g, p, c in got} == dict(want)
    assert [c for _, _, c in got] == sorted(want.values(), reverse=True)
    top = top_confusions(gold, predicted, n=5)
    assert top == got[:5] and top[0][2] == want.most_common(1)[0][1]


def test_per_class_f1_png_grows_with_the_classes(tmp_path):
    heights = {}
    for n_classes in (12, 150):
        gold, predicted = random_labels(n_classes, 20 * n_classes, 0.85, seed=n_classes)
        fig = per_class_f1_figure(per_label_report(gold, predicted))
        assert_png_of(fig, save_figure(fig, tmp_path / f"f1_{n_classes}.png", dpi=DPI))
        heights[n_classes] = png_size(tmp_path / f"f1_{n_classes}.png")[1]
        ax = fig.axes[0]
        assert ax.get_xlabel() == "F1" and ax.get_xlim() == (0.0, 1.0)
        assert len(ax.get_yticklabels()) == n_classes
        assert 6 <= ax.get_yticklabels()[0].get_fontsize() <= 9
        f1 = [bar.get_width() for bar in ax.patches]
        assert f1 == sorted(f1)  # bars by F1 ascending; the y axis is inverted: the worst at the top
        assert ax.yaxis_inverted()
    assert heights[150] > 5 * heights[12]


def naive_curve(thresholds, scores, is_oos, correct):
    acc, rec = [], []
    n_in, n_oos = sum(not o for o in is_oos), sum(is_oos)
    for t in thresholds:
        acc.append(sum(1 for s, o, c in zip(scores, is_oos, correct) if not o and s >= t and c) / n_in)
        rec.append(sum(1 for s, o in zip(scores, is_oos) if o and s < t) / n_oos)
    return acc, rec


def test_threshold_curve_matches_a_naive_loop():
    rng = np.random.default_rng(7)
    scores = np.round(rng.random(300), 2)  # ties on purpose
    is_oos = rng.random(300) < 0.3
    correct = rng.random(300) < 0.8
    thresholds, accuracy, recall = threshold_curve(scores, is_oos, correct)
    assert np.all(np.diff(thresholds) > 0)
    assert set(np.unique(scores)) <= set(thresholds.tolist()) and len(thresholds) == len(np.unique(scores)) + 2
    acc, rec = naive_curve(thresholds.tolist(), scores.tolist(), is_oos.tolist(), correct.tolist())
    np.testing.assert_allclose(accuracy, acc)
    np.testing.assert_allclose(recall, rec)
    assert recall[0] == 0 and recall[-1] == 1 and accuracy[-1] == 0


def test_threshold_curve_without_oos_rows_is_nan_recall():
    _, accuracy, recall = threshold_curve([0.2, 0.5, 0.9], [False] * 3, [True, False, True])
    assert np.isnan(recall).all() and accuracy[0] == pytest.approx(2 / 3)
    with pytest.raises(TextMatchError, match="one value per test text"):
        threshold_curve([0.1, 0.2], [False], [True, True])


@pytest.mark.parametrize("with_oos", [True, False])
def test_oos_threshold_png(tmp_path, with_oos):
    rng = np.random.default_rng(1)
    scores = rng.random(400)
    is_oos = (rng.random(400) < 0.25) if with_oos else np.zeros(400, bool)
    correct = rng.random(400) < 0.9
    fig = oos_threshold_figure(scores, is_oos, correct, chosen=0.4)
    assert_png_of(fig, save_figure(fig, tmp_path / "threshold.png", dpi=DPI))
    ax = fig.axes[0]
    assert len(ax.get_lines()) == (2 if with_oos else 1) + 1 + (2 if with_oos else 1)  # curves, chosen, dots
    assert with_oos or "no out-of-scope" in ax.get_title()
    acc_at = ((scores >= 0.4) & correct & ~is_oos).sum() / (~is_oos).sum()
    assert any(f"{acc_at:.3f}" == t.get_text() for t in ax.texts)


def embedding_panels(n_classes, seed=0):
    rng = np.random.default_rng(seed)
    classes = [f"class_{i}" for i in range(n_classes)]
    centres = rng.normal(size=(n_classes, 16)) * 3
    panels = []
    for title, spread in (("untrained", 3.0), ("trained", 0.5)):
        support = np.repeat(centres, 3, axis=0) + rng.normal(scale=spread, size=(3 * n_classes, 16))
        queries = np.repeat(centres, 2, axis=0) + rng.normal(scale=spread, size=(2 * n_classes, 16))
        panels.append({
            "title": title,
            "support": support,
            "support_labels": [c for c in classes for _ in range(3)],
            "queries": queries,
            "query_labels": [c for c in classes for _ in range(2)],
            "query_errors": rng.random(2 * n_classes) < 0.2,
        })
    return panels


@pytest.mark.parametrize("n_classes", [8, 77])
def test_embedding_map_png(tmp_path, n_classes):
    fig = embedding_map_figure(embedding_panels(n_classes), method="pca")
    assert_png_of(fig, save_figure(fig, tmp_path / "map.png", dpi=DPI))
    axes = fig.axes
    assert len(axes) == 2 and axes[0].get_xlabel() == "PC 1" and axes[1].get_ylabel() == "PC 2"
    assert axes[0].get_legend().get_texts()[0].get_text().startswith("test error (")
    has_class_legend = bool(fig.legends)
    assert has_class_legend == (n_classes <= 20)
    if n_classes > 20:
        assert f"{n_classes} classes (legend omitted)" in fig.texts[0].get_text()


def test_project_2d_is_pca_fitted_on_the_support(monkeypatch):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    support, queries = rng.normal(size=(30, 8)), rng.normal(size=(5, 8))
    (s2, q2), name = project_2d([support, queries], method="pca")
    pca = PCA(n_components=2, random_state=0).fit(support)
    np.testing.assert_allclose(s2, pca.transform(support))
    np.testing.assert_allclose(q2, pca.transform(queries))
    assert name == "PC"
    with pytest.raises(TextMatchError, match="unknown projection"):
        project_2d([support], method="tsne")


def test_umap_without_umap_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # absent, whether or not it is installed
    rng = np.random.default_rng(4)
    with pytest.raises(TextMatchError, match="umap-learn"):
        project_2d([rng.normal(size=(10, 4))], method="umap")
    with pytest.raises(TextMatchError, match="umap-learn"):
        embedding_map_figure(embedding_panels(4), method="umap")
    fig = embedding_map_figure(embedding_panels(4), method="auto")
    assert fig.axes[0].get_xlabel() == "PC 1"


# -- writing -------------------------------------------------------------------------------------------
def small_figure():
    fig = new_figure(3, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    return fig


def test_save_figure_refuses_other_suffixes(tmp_path):
    with pytest.raises(TextMatchError, match=r"\.png"):
        save_figure(small_figure(), tmp_path / "plot.pdf")
    assert not list(tmp_path.iterdir())


def test_write_figures_keeps_user_files_and_replaces_its_own(tmp_path):
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "foo.png").write_bytes(b"the user's own file")
    (folder / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(TextMatchError, match="not a file textmatch wrote"):
        write_figures(folder, {"foo": small_figure()}, dpi=DPI)
    assert (folder / "foo.png").read_bytes() == b"the user's own file"

    first = write_figures(folder, {"a": small_figure(), "b": small_figure()}, dpi=DPI)
    assert [p.name for p in first] == ["a.png", "b.png"] and all(png_size(p) == (120, 80) for p in first)
    second = write_figures(folder, {"c": small_figure()}, dpi=DPI)
    assert [p.name for p in second] == ["c.png"]
    assert not (folder / "a.png").exists() and not (folder / "b.png").exists()  # the earlier write, replaced whole
    assert (folder / "foo.png").read_bytes() == b"the user's own file"
    assert (folder / "notes.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(TextMatchError, match="plain file name"):
        write_figures(folder, {"../escape": small_figure()})


def test_write_figures_refuses_a_model_folder(tmp_path):
    model = tmp_path / "model"
    with write_folder(model, "model") as staging:
        (staging / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(TextMatchError, match="holds a textmatch model"):
        write_figures(model, {"x": small_figure()})


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(TextMatchError, match=r"textmatch\[plots\]"):
        require_matplotlib()
    with pytest.raises(TextMatchError, match=r"textmatch\[plots\]"):
        confusion_matrix_figure(["a", "b"], ["b", "a"])
    with pytest.raises(TextMatchError, match=r"textmatch\[plots\]"):
        training_curves_figure([{"step": 1, "loss": 1.0}])


def test_png_size_refuses_other_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png at all, really not")
    with pytest.raises(TextMatchError, match="not a PNG"):
        png_size(tmp_path / "x.png")


# -- training logs -------------------------------------------------------------------------------------
def write_log(path, steps, with_eval):
    lines = []
    for step in range(1, steps + 1):
        record = {"step": step, "loss": 2.0 / step, "accuracy": min(1.0, 0.4 + step / steps / 2),
                  "learning_rate": 1e-4 * (1 - step / steps), "grad_norm": 1.0, "temperature": 10.0}
        if with_eval and step % 10 == 0:
            record.update(eval_accuracy=0.5 + step / steps / 3, eval_loss=0.7)
        lines.append(json.dumps(record))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("with_eval", [True, False])
def test_training_log_png_next_to_the_log(tmp_path, with_eval):
    log = write_log(tmp_path / "run" / "training_log.jsonl", 60, with_eval)
    records = read_training_log(log)
    assert len(records) == 60 and ("eval_accuracy" in records[9]) == with_eval
    png = plot_training_log(log)
    assert png == log.with_name("training_curves.png") and png.stat().st_size > 1000
    fig = training_curves_figure(records)
    assert [ax.get_xlabel() for ax in fig.axes] == ["step"] * 4
    valid = fig.axes[2]
    notes = [t.get_text() for t in valid.texts]
    assert ("no validation set (pass --valid)" in notes) == (not with_eval)
    assert_png_of(fig, save_figure(fig, tmp_path / "curves.png", dpi=DPI))


def test_training_log_png_elsewhere_and_sparse_logs(tmp_path):
    log = tmp_path / "training_log.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n", encoding="utf-8")
    png = plot_training_log(log, tmp_path / "out" / "curves.png")
    assert png == tmp_path / "out" / "curves.png" and png.is_file()
    fig = training_curves_figure(read_training_log(log))
    assert any("no learning rate" in t.get_text() for t in fig.axes[3].texts)


def test_bad_training_logs(tmp_path):
    with pytest.raises(TextMatchError, match="does not exist"):
        read_training_log(tmp_path / "missing.jsonl")
    log = tmp_path / "training_log.jsonl"
    log.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \n', encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"line 2 is not JSON"):
        read_training_log(log)
    log.write_text('{"step": 1}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"line 2 is not a training record"):
        plot_training_log(log)
    assert not (tmp_path / "training_curves.png").exists()
