"""Figures of textmatch results, drawn with matplotlib (the optional extra textmatch[plots])
off-screen and written as PNG: arrays and lists in, figures out. The package reads no model:
callers pass labels, scores, embeddings or a training log. It imports only textmatch.errors and
textmatch.files of textmatch."""

from .classification import (
    confusion_matrix_figure,
    embedding_map_figure,
    oos_threshold_figure,
    per_class_f1_figure,
    project_2d,
    threshold_curve,
    top_confusions,
)
from .common import new_figure, png_size, require_matplotlib, save_figure, write_figures
from .training import plot_training_log, read_training_log, training_curves_figure

__all__ = [
    "confusion_matrix_figure",
    "embedding_map_figure",
    "new_figure",
    "oos_threshold_figure",
    "per_class_f1_figure",
    "plot_training_log",
    "png_size",
    "project_2d",
    "read_training_log",
    "require_matplotlib",
    "save_figure",
    "threshold_curve",
    "top_confusions",
    "training_curves_figure",
    "write_figures",
]
