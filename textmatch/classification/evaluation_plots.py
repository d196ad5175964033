"""The plots of `textmatch evaluate --plot DIR`, from one classification of a labelled test set.

    confusion_matrix.png  the classes with errors, the most erroneous first (textmatch.plots)
    per_class_f1.png      F1 of every class, worst first, macro F1 marked
    oos_threshold.png     in-scope accuracy and out-of-scope recall against the threshold, the
                          chosen point marked (only when a threshold is in use, or the test set
                          has rows labelled with the model's out-of-scope label)
    embedding_map.png     the support embeddings g'(x_i) in 2-D (PCA; UMAP when installed),
                          coloured by class, with the misclassified test texts marked

Each figure is also available from Python (`evaluation_figures`, or textmatch.plots directly);
`plot_evaluation` writes them into one folder through textmatch.files (a plots folder: files of
yours there are never overwritten).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch

from ..data.validation import validate_support
from ..errors import TextMatchError
from ..plots import (
    confusion_matrix_figure,
    embedding_map_figure,
    oos_threshold_figure,
    per_class_f1_figure,
    require_matplotlib,
    write_figures,
)
from .metrics import classification_report

EVALUATION_PLOTS = ("confusion_matrix", "per_class_f1", "oos_threshold", "embedding_map")  # NAME.png


@dataclass
class PlottedEvaluation:
    """What `plot_evaluation` returns: the classification report, the prediction it came from,
    the threshold used (None when none) and the PNG files written."""

    report: dict[str, Any]
    prediction: Any
    threshold: float | None
    paths: list[Path]


def classify_for_plots(model: Any, texts: Sequence[str], batch_size: int = 64,
                       threshold: float | None = None) -> tuple[Any, torch.Tensor]:
    """The prediction of `texts` and their f'(x) embeddings (n, dim), from one encoding of each
    (the map shows the same embeddings the prediction used)."""
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=False, convert_to_tensor=True)
    return model.classify_embeddings(emb, threshold=threshold), emb


def evaluation_figures(model: Any, gold: Sequence[Hashable], prediction: Any, query_embeddings: torch.Tensor,
                       report: dict[str, Any] | None = None, threshold: float | None = None,
                       method: str = "auto", title: str = "") -> dict[str, Any]:
    """The figures of `evaluate --plot` (name -> matplotlib Figure) for a test set's gold labels,
    the model's `Prediction` of it and the f'(x) embeddings that prediction used. Labels are
    compared as strings (as `textmatch evaluate` reads them from files)."""
    require_matplotlib()
    gold = [str(y) for y in gold]
    predicted = [str(y) for y in prediction.labels]
    if len(gold) != len(predicted) or len(gold) != len(query_embeddings):
        raise TextMatchError(f"{len(gold)} gold labels for {len(predicted)} predictions and "
                             f"{len(query_embeddings)} embeddings; pass one of each per test text")
    report = report or classification_report(gold, predicted)
    suffix = f" - {title}" if title else ""
    figures = {
        "confusion_matrix": confusion_matrix_figure(gold, predicted, title=f"Confusion matrix{suffix}"),
        "per_class_f1": per_class_f1_figure(report["per_label"], title=f"F1 per class{suffix}"),
    }
    oos_label = str(model.config.oos_label)
    is_oos = np.array([y == oos_label for y in gold])
    if threshold is not None or is_oos.any():
        probs = np.asarray(prediction.probabilities)  # (n, n_classes)
        by_probability = model.config.threshold_metric == "probability"
        scores = probs.max(axis=1) if by_probability else np.asarray(prediction.best_similarity)  # (n,)
        best_class = [str(prediction.classes[i]) for i in probs.argmax(axis=1)]
        correct = np.array([b == g for b, g in zip(best_class, gold)])
        figures["oos_threshold"] = oos_threshold_figure(
            scores, is_oos, correct, chosen=threshold,
            score_name="best class probability" if by_probability else "best similarity",
            title=f"Out-of-scope threshold{suffix}")
    figures["embedding_map"] = embedding_map_figure([map_panel(model, gold, predicted, query_embeddings, title)],
                                                    method=method, title=f"Embedding map{suffix}")
    return figures


def map_panel(model: Any, gold: Sequence[str], predicted: Sequence[str], query_embeddings: torch.Tensor,
              title: str = "") -> dict[str, Any]:
    """One panel of `embedding_map_figure`: the model's support embeddings g'(x_i) and the test
    texts' f'(x), both at unit length (the matching layer's cosine ignores length), with the
    misclassified test texts marked."""
    support = model.support_base_embeddings_
    if support is None:
        raise TextMatchError("the model has no support set yet; call model.fit(texts, labels) first")
    unit = torch.nn.functional.normalize
    errors = np.array([g != p for g, p in zip(gold, predicted)])
    n_classes = len(model.classes_)
    return {
        "title": title or f"{n_classes} classes",
        "support": unit(support.float(), dim=-1).cpu().numpy(),
        "support_labels": [str(y) for y in model.support_labels],
        "queries": unit(query_embeddings.float(), dim=-1).cpu().numpy(),
        "query_labels": list(gold),
        "query_errors": errors,
    }


def plot_evaluation(model: Any, texts: Sequence[str], labels: Sequence[Hashable], folder: str | os.PathLike,
                    threshold: float | None = None, batch_size: int = 64, method: str = "auto",
                    title: str = "") -> PlottedEvaluation:
    """Classify a labelled test set and write the plots of `evaluate --plot` into `folder`."""
    require_matplotlib()
    texts, labels = validate_support(texts, labels, min_classes=1)
    prediction, emb = classify_for_plots(model, texts, batch_size, threshold)
    report = classification_report([str(y) for y in labels], [str(y) for y in prediction.labels])
    used = model.config.threshold if threshold is None else threshold
    figures = evaluation_figures(model, labels, prediction, emb, report, used, method, title)
    return PlottedEvaluation(report, prediction, used, write_figures(folder, figures))
