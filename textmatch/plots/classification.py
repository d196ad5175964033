"""Figures of a classifier's results, from plain arrays and lists: the confusion matrix of the
most confused classes, per-class F1, the out-of-scope threshold sweep and 2-D maps of the
embedding space. Nothing here reads a model: callers pass labels, scores and embeddings."""

from __future__ import annotations

import importlib
import textwrap
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import TextMatchError
from .common import (
    label_fontsize,
    new_figure,
    note,
    require_matplotlib,
    shorten,
    text_width_in,
)

PROJECTIONS = ("auto", "pca", "umap")
QUALITATIVE_MAPS = ("tab20", "tab20b", "tab20c")


def label_key(label: Hashable) -> tuple[str, str]:
    """A sort key for labels of mixed types (int gold labels next to a str "oos")."""
    return (type(label).__name__, str(label))


def check_pairs(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> tuple[list[Hashable], list[Hashable]]:
    gold, predicted = list(gold), list(predicted)
    if len(gold) != len(predicted):
        raise TextMatchError(f"gold has {len(gold)} labels and predicted {len(predicted)}; pass one prediction per text")
    if not gold:
        raise TextMatchError("no labels to plot; pass the gold and predicted labels of the test texts")
    return gold, predicted


# -- confusions -----------------------------------------------------------------------------------
def top_confusions(gold: Sequence[Hashable], predicted: Sequence[Hashable], n: int = 10) -> list[tuple[Hashable, Hashable, int]]:
    """The `n` most frequent errors as (true label, predicted label, count), most frequent first
    (ties in label order)."""
    gold, predicted = check_pairs(gold, predicted)
    counts = Counter((g, p) for g, p in zip(gold, predicted) if g != p)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], label_key(item[0][0]), label_key(item[0][1])))
    return [(g, p, c) for (g, p), c in ranked[: max(0, n)]]


def error_counts(gold: list[Hashable], predicted: list[Hashable]) -> Counter:
    """Errors per class: the texts of the class predicted as another (as the true class) plus the
    texts of other classes predicted as it (as the predicted class)."""
    errors: Counter = Counter()
    for g, p in zip(gold, predicted):
        if g != p:
            errors[g] += 1
            errors[p] += 1
    return errors


def confusion_matrix_figure(
    gold: Sequence[Hashable], predicted: Sequence[Hashable], max_classes: int = 30, title: str = "Confusion matrix"
) -> Any:
    """The confusion matrix of the classes involved in errors (as true or as predicted class),
    the most erroneous first, at most `max_classes` of them: readable with 150 classes. Rows are
    the true classes, columns the predicted ones; a cell's colour is its count divided by all the
    texts of its true class (also those predicted as a class not shown), on a square-root scale
    so that small confusions show. Counts are printed in the cells up to 25 classes. Without
    errors the figure says so."""
    require_matplotlib()
    from matplotlib.colors import PowerNorm

    gold, predicted = check_pairs(gold, predicted)
    if max_classes < 2:
        raise TextMatchError(f"max_classes={max_classes} shows no confusion; pass 2 or more")
    n_classes = len(set(gold) | set(predicted))
    errors = error_counts(gold, predicted)
    if not errors:
        fig = new_figure(6, 3)
        ax = fig.add_subplot()
        ax.set_title(title)
        note(ax, f"no errors: all {len(gold)} texts classified correctly ({n_classes} classes)", fontsize=12)
        return fig
    ranked = sorted(errors, key=lambda c: (-errors[c], label_key(c)))
    shown = ranked[:max_classes]
    index = {c: i for i, c in enumerate(shown)}
    k = len(shown)
    counts = np.zeros((k, k), dtype=int)
    for g, p in zip(gold, predicted):
        if g in index and p in index:
            counts[index[g], index[p]] += 1
    per_class = Counter(gold)
    support = np.array([per_class[c] for c in shown], dtype=float)
    fractions = np.divide(counts, support[:, None], out=np.full(counts.shape, np.nan), where=support[:, None] > 0)

    names = [shorten(c) for c in shown]
    fontsize = max(6.0, min(10.0, 11.0 - 0.15 * k))
    labels_in = text_width_in([*names, *(f"{n} (no test texts)" for n, c in zip(names, shown) if not per_class[c])], fontsize) + 0.5
    cell_in = 0.42 if k <= 12 else 0.3
    side = max(3.0, k * cell_in)
    fig = new_figure(labels_in + side + 1.6, labels_in + side + 1.0)
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(fractions), cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), aspect="equal")
    ax.set_xticks(range(k), names, rotation=90, fontsize=fontsize)
    rows = [name if support[i] else f"{name} (no test texts)" for i, name in enumerate(names)]  # a predicted-only class
    ax.set_yticks(range(k), rows, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(np.arange(k + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(k + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.9", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    dark = np.isfinite(fractions[i, j]) and fractions[i, j] > 0.35
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=fontsize * 0.9,
                            color="white" if dark else "black")
    bar = fig.colorbar(image, ax=ax, shrink=min(1.0, 6.0 / side + 0.3), pad=0.02)
    bar.set_label("fraction of the true class's texts (sqrt scale)")
    wrong = sum(g != p for g, p in zip(gold, predicted))
    what = f"all {k} classes with errors" if k == len(errors) else f"the {k} most confused of the {len(errors)} classes with errors"
    fig.suptitle(
        f"{title}\n{what} ({n_classes} classes in all; {wrong} error{'s' * (wrong != 1)} in {len(gold)} texts)",
        fontsize=11,
    )
    return fig


# -- per-class F1 -----------------------------------------------------------------------------------
def per_class_f1_figure(per_label: Mapping[Hashable, Mapping[str, float]], title: str = "F1 per class") -> Any:
    """Horizontal F1 bars, one per class with test texts (support > 0), worst at the top, with
    the macro F1 as a dashed line. `per_label` is classification_report's: label -> {"precision",
    "recall", "f1", "support"}. The figure grows 0.16 in per class, so 150 classes stay legible."""
    require_matplotlib()
    rows = []
    for label, metrics in per_label.items():
        if not isinstance(metrics, Mapping) or "f1" not in metrics:
            raise TextMatchError(f"per_label[{label!r}] has no 'f1'; pass classification_report(...)['per_label']")
        if metrics.get("support", 1) > 0:
            rows.append((float(metrics["f1"]), label_key(label), label, int(metrics.get("support", 0))))
    if not rows:
        raise TextMatchError("per_label has no class with test texts (support > 0); nothing to plot")
    rows.sort(key=lambda r: (r[0], r[1]))
    n = len(rows)
    f1 = np.array([r[0] for r in rows])
    macro = float(f1.mean())
    names = [shorten(r[2]) for r in rows]
    fontsize = label_fontsize(n, largest=9.0, smallest=6.0, per_label=0.025)
    fig = new_figure(text_width_in(names, fontsize) + 6.0, max(3.0, 0.16 * n + 1.4))
    ax = fig.add_subplot()
    y = np.arange(n)
    colours = np.where(f1 < macro, "tab:orange", "tab:blue")
    ax.barh(y, f1, height=0.75, color=colours)
    ax.axvline(macro, color="black", linestyle="--", linewidth=1.2, label=f"macro F1 = {macro:.3f}")
    ax.set_yticks(y, names, fontsize=fontsize)
    ax.set_ylim(n - 0.5, -0.5)  # the worst class at the top
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1")
    ax.tick_params(axis="x", labeltop=n > 40, top=n > 40)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    from matplotlib.patches import Patch

    handles = [
        ax.get_lines()[0],
        Patch(color="tab:orange", label="below the macro F1"),
        Patch(color="tab:blue", label="at or above it"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
    fig.suptitle(f"{title}: {n} classes, worst first; macro F1 {macro:.3f} (dashed line)", fontsize=11)
    return fig


# -- out-of-scope threshold ---------------------------------------------------------------------------
def check_threshold_inputs(scores: Any, is_oos: Any, correct_if_in_scope: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=float).reshape(-1)
    is_oos = np.asarray(is_oos, dtype=bool).reshape(-1)
    correct = np.asarray(correct_if_in_scope, dtype=bool).reshape(-1)
    if not (scores.size == is_oos.size == correct.size):
        raise TextMatchError(
            f"scores ({scores.size}), is_oos ({is_oos.size}) and correct_if_in_scope ({correct.size}) "
            "need one value per test text each"
        )
    if scores.size == 0:
        raise TextMatchError("no scores to plot; pass one score per test text")
    if not np.isfinite(scores).all():
        raise TextMatchError("scores hold NaN or infinite values; pass finite scores")
    return scores, is_oos, correct


def threshold_curve(scores: Any, is_oos: Any, correct_if_in_scope: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sweep of an out-of-scope threshold t (a text is kept when its score >= t, flagged
    out-of-scope below): thresholds (the distinct scores and two range ends, ascending), the
    in-scope accuracy at each (over in-scope texts: kept and correctly classified) and the
    out-of-scope recall (over out-of-scope texts: flagged). A curve with no texts to average
    over is NaN."""
    scores, is_oos, correct = check_threshold_inputs(scores, is_oos, correct_if_in_scope)
    lo, hi = float(scores.min()), float(scores.max())
    pad = 0.02 * (hi - lo) if hi > lo else 0.01 * max(1.0, abs(hi))
    thresholds = np.unique(np.concatenate([scores, [lo - pad, hi + pad]]))
    good = np.sort(scores[~is_oos & correct])
    oos = np.sort(scores[is_oos])
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    kept_good = good.size - np.searchsorted(good, thresholds, side="left")  # good scores >= t
    flagged = np.searchsorted(oos, thresholds, side="left")  # oos scores < t
    accuracy = kept_good / n_in if n_in else np.full(thresholds.shape, np.nan)
    recall = flagged / n_oos if n_oos else np.full(thresholds.shape, np.nan)
    return thresholds, accuracy.astype(float), recall.astype(float)


def oos_threshold_figure(
    scores: Any,
    is_oos: Any,
    correct_if_in_scope: Any,
    chosen: float | None = None,
    score_name: str = "best class probability",
    title: str = "Out-of-scope threshold",
) -> Any:
    """In-scope accuracy and out-of-scope recall against the threshold on `score_name` (see
    threshold_curve), with the `chosen` threshold marked and its two values written out."""
    require_matplotlib()
    scores, is_oos, correct = check_threshold_inputs(scores, is_oos, correct_if_in_scope)
    thresholds, accuracy, recall = threshold_curve(scores, is_oos, correct)
    has_oos, has_in = bool(is_oos.any()), bool((~is_oos).any())
    fig = new_figure(7.5, 5.0)
    ax = fig.add_subplot()
    if has_in:
        ax.plot(thresholds, accuracy, drawstyle="steps-pre", color="tab:blue", linewidth=1.8,
                label=f"in-scope accuracy ({int((~is_oos).sum())} texts)")
    if has_oos:
        ax.plot(thresholds, recall, drawstyle="steps-pre", color="tab:orange", linewidth=1.8,
                label=f"out-of-scope recall ({int(is_oos.sum())} texts)")
    if chosen is not None:
        chosen = float(chosen)
        acc_at = float(((scores >= chosen) & correct & ~is_oos).sum() / max(1, (~is_oos).sum()))
        rec_at = float(((scores < chosen) & is_oos).sum() / max(1, is_oos.sum()))
        parts = [f"chosen threshold {chosen:.3g}"]
        if has_in:
            parts.append(f"accuracy {acc_at:.3f}")
        if has_oos:
            parts.append(f"OOS recall {rec_at:.3f}")
        label = parts[0] + (f" ({', '.join(parts[1:])})" if parts[1:] else "")
        ax.axvline(chosen, color="0.3", linestyle="--", linewidth=1.2, label=label)
        # accuracy falls to the right and recall rises: each number goes where its curve is not
        for value, colour, present, side in ((acc_at, "tab:blue", has_in, 1), (rec_at, "tab:orange", has_oos, -1)):
            if present:
                ax.plot([chosen], [value], "o", color=colour, markersize=7, zorder=5)
                ax.annotate(f"{value:.3f}", (chosen, value), xytext=(8 * side, 6), textcoords="offset points",
                            ha="left" if side > 0 else "right", fontsize=9, color=colour, fontweight="bold", zorder=6,
                            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    left, right = float(thresholds[0]), float(thresholds[-1])
    if chosen is not None:
        left, right = min(left, chosen), max(right, chosen)
    ax.set_xlim(left, right)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel(f"threshold on the {score_name} (below it: out-of-scope)")
    ax.set_ylabel("fraction of texts")
    ax.grid(color="0.92")
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    subtitle = "" if has_oos else "\nno out-of-scope texts in the test set: in-scope accuracy only"
    if not has_in:
        subtitle = "\nno in-scope texts in the test set: out-of-scope recall only"
    ax.set_title(title + subtitle, fontsize=11)
    return fig


# -- embedding maps -------------------------------------------------------------------------------------
def projection_method(method: str) -> str:
    """"pca" or "umap" for `method` ("auto": UMAP when umap-learn is installed, else PCA)."""
    if method not in PROJECTIONS:
        raise TextMatchError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    if method == "pca":
        return "pca"
    try:
        importlib.import_module("umap")
    except ImportError:
        if method == "umap":
            raise TextMatchError('the UMAP projection needs umap-learn: pip install umap-learn, or pass method="pca"') from None
        return "pca"
    return "umap"


def project_2d(arrays: Sequence[Any], method: str = "auto") -> tuple[list[np.ndarray], str]:
    """2-D coordinates of each array in `arrays` ((n_i, dim) each), by a projection fitted on the
    first (a panel's support embeddings) and applied to the others (its test texts): PCA (2
    components, random_state=0) or UMAP (see projection_method). Returns the projected arrays
    and the axis name ("PC" or "UMAP")."""
    mats = [np.asarray(a, dtype=float) for a in arrays]
    if not mats:
        raise TextMatchError("project_2d got no arrays; pass the support embeddings first")
    dim = mats[0].shape[1] if mats[0].ndim == 2 else -1
    for m in mats:
        if m.ndim != 2 or m.shape[1] != dim:
            raise TextMatchError(f"embeddings of shape {m.shape} do not match (n, {dim}); pass 2-D arrays of one width")
        if not np.isfinite(m).all():
            raise TextMatchError("embeddings hold NaN or infinite values; check the encoder's output")
    if mats[0].shape[0] < 3 or dim < 2:
        raise TextMatchError(f"a 2-D map needs at least 3 support embeddings of 2+ dimensions, not {mats[0].shape}")
    if projection_method(method) == "umap":
        umap = importlib.import_module("umap")
        reducer = umap.UMAP(n_components=2, random_state=0, n_neighbors=min(15, mats[0].shape[0] - 1)).fit(mats[0])
        return [reducer.embedding_ if i == 0 else reducer.transform(m) for i, m in enumerate(mats)], "UMAP"
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0).fit(mats[0])
    return [pca.transform(m) for m in mats], "PC"


def class_colours(n: int) -> list[Any]:
    """`n` colours from the qualitative maps tab20, tab20b, tab20c (60 colours), cycled; hues
    alternate so that neighbouring classes differ."""
    from matplotlib import colormaps

    palette = []
    for name in QUALITATIVE_MAPS:  # the dark shade of each hue first, then the light ones
        colours = list(colormaps[name].colors)
        palette += colours[0::2] + colours[1::2] if name == "tab20" else colours[0::4] + colours[1::4] + colours[2::4] + colours[3::4]
    return [palette[i % len(palette)] for i in range(n)]


def check_panel(panel: Mapping[str, Any], number: int) -> dict[str, Any]:
    if not isinstance(panel, Mapping) or "support" not in panel or "support_labels" not in panel:
        raise TextMatchError(f"panel {number} needs 'support' (n, dim) embeddings and 'support_labels' (n,)")
    out = dict(panel)
    out["support_labels"] = list(panel["support_labels"])
    if len(out["support_labels"]) != len(panel["support"]):
        raise TextMatchError(f"panel {number}: {len(panel['support'])} support embeddings but {len(out['support_labels'])} labels")
    queries = panel.get("queries")
    if queries is not None:
        m = len(queries)
        for key in ("query_labels", "query_errors"):
            if panel.get(key) is not None and len(panel[key]) != m:
                raise TextMatchError(f"panel {number}: {m} queries but {len(panel[key])} {key}")
    return out


def embedding_map_figure(
    panels: Sequence[Mapping[str, Any]], method: str = "auto", max_legend: int = 20, title: str = "Embedding map"
) -> Any:
    """2-D maps of embedding spaces side by side (e.g. before and after training), one panel per
    dict {"title", "support" (n, dim), "support_labels" (n,), and optionally "queries" (m, dim),
    "query_labels" (m,), "query_errors" (m,) bool}. Each panel's projection (project_2d) is fitted
    on its support set; support points are coloured by class (one colour per class across panels),
    misclassified test texts are black crosses (correct ones are left out to keep the classes
    visible; without query_errors every test text is drawn faintly). A class legend up to
    `max_legend` classes."""
    require_matplotlib()
    panels = [check_panel(p, i) for i, p in enumerate(panels)]
    if not panels:
        raise TextMatchError("embedding_map_figure got no panels; pass a list of dicts with 'support' and 'support_labels'")
    resolved = projection_method(method)
    classes = sorted({y for p in panels for y in p["support_labels"]}, key=label_key)
    colour_of = dict(zip(classes, class_colours(len(classes))))
    legend = len(classes) <= max_legend
    legend_in = (text_width_in([shorten(c, 24) for c in classes], 8) + 0.6) if legend else 0.0
    fig = new_figure(max(6.4, 5.2 * len(panels) + legend_in), 5.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        arrays = [panel["support"]] + ([panel["queries"]] if panel.get("queries") is not None else [])
        projected, axis_name = project_2d(arrays, resolved)
        support_2d = projected[0]
        labels = panel["support_labels"]
        colours = [colour_of[y] for y in labels]
        size = float(np.clip(3000 / len(labels), 8, 24))  # smaller points as they get more
        ax.scatter(support_2d[:, 0], support_2d[:, 1], c=colours, s=size, alpha=0.85, linewidths=0, zorder=2)
        subtitle = f"{len(labels)} support texts"
        if len(projected) > 1:
            query_2d = projected[1]
            errors = panel.get("query_errors")
            if errors is None:
                qlabels = panel.get("query_labels")
                qcolours = [colour_of.get(y, "0.5") for y in qlabels] if qlabels is not None else "0.5"
                ax.scatter(query_2d[:, 0], query_2d[:, 1], c=qcolours, s=5, alpha=0.25, linewidths=0, zorder=1,
                           label=f"test text ({len(query_2d)})")
                subtitle += f", {len(query_2d)} test texts (faint)"
            else:
                errors = np.asarray(errors, dtype=bool)
                ax.scatter(query_2d[errors, 0], query_2d[errors, 1], marker="x", c="black", s=14, linewidths=0.8, alpha=0.8, zorder=3,
                           label=f"test error ({int(errors.sum())})")
                subtitle += f", {int(errors.sum())} of {len(errors)} test texts misclassified (x)"
            ax.legend(loc="upper right", fontsize=8, framealpha=0.9)
        ax.set_title(f"{panel.get('title', '')}\n{subtitle}", fontsize=10)
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.tick_params(labelsize=8)
        ax.grid(color="0.93")
        ax.set_axisbelow(True)
    how = f"{'PCA' if resolved == 'pca' else 'UMAP'} of each panel's support set"
    if legend:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=colour_of[c], markersize=5, label=shorten(c, 24)) for c in classes]
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, title="class", title_fontsize=9, frameon=False)
    else:
        how += f"; {len(classes)} classes (legend omitted), one colour each"
    width_chars = int(fig.get_size_inches()[0] * 11)  # about 11 characters per inch at 11 pt
    fig.suptitle("\n".join(textwrap.wrap(title, width_chars) + textwrap.wrap(how, width_chars)), fontsize=11)
    return fig
