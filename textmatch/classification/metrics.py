"""Classification metrics: accuracy, per-label precision / recall / F1 and macro F1."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def _sorted_labels(labels: set[Hashable]) -> list[Hashable]:
    """Labels in sorted order; mixed types (int gold labels and a str "oos") sort by type, then text."""
    try:
        return sorted(labels)  # type: ignore[type-var]
    except TypeError:
        return sorted(labels, key=lambda y: (type(y).__name__, str(y)))


def classification_report(gold: Sequence[Hashable], predicted: Sequence[Hashable]) -> dict[str, Any]:
    """Accuracy, per-label precision / recall / F1 / support, and macro F1 (over the gold labels)."""
    labels = _sorted_labels(set(gold) | set(predicted))
    per_label: dict[Hashable, dict[str, float]] = {}
    for label in labels:
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        n_pred = sum(p == label for p in predicted)
        n_gold = sum(g == label for g in gold)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}
    gold_labels = [lab for lab in labels if per_label[lab]["support"] > 0]
    return {
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / len(gold),
        "n": len(gold),
        "macro_f1": sum(per_label[lab]["f1"] for lab in gold_labels) / max(1, len(gold_labels)),
        "per_label": per_label,
    }
