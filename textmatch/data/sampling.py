"""K-shot samples of a labelled dataset (reproducible, per class)."""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np

from ..errors import TextMatchError
from .loading import as_map_dataset, check_columns, label_values
from .validation import sorted_classes, validate_labels


def rows_by_class(ds: Any, label_column: str = "label") -> dict[Hashable, list[int]]:
    """{label: row indices}, labels sorted (ClassLabel ints by name); labels are validated."""
    labels = validate_labels(label_values(ds, label_column), len(ds), f"label (column {label_column!r}, row)")
    by_class: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    return {c: by_class[c] for c in sorted_classes(list(by_class))}


def sample_dataset(
    dataset: Any,
    label_column: str = "label",
    num_samples: int = 8,
    seed: int = 42,
    allow_fewer: bool = False,
):
    """K examples per class: `num_samples` rows of every class, drawn at random, as a `datasets.Dataset`.

    Like setfit's `sample_dataset`, but a class with fewer than `num_samples` rows is an error
    naming it, unless `allow_fewer=True` (then all its rows are taken). Each class's rows are
    shuffled by one `numpy.random.default_rng(seed)`, classes in sorted order, so the sample
    depends only on the data and the seed, and with the same seed a smaller `num_samples`
    gives a subset of a larger one. The rows keep their dataset order and features
    (ClassLabel columns stay ClassLabel).
    """
    dataset = as_map_dataset(dataset, "sample_dataset")
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
        raise TextMatchError(f"num_samples must be an integer >= 1 (examples per class), got {num_samples!r}")
    check_columns(dataset, label_column, None)
    if len(dataset) == 0:
        raise TextMatchError("the dataset has no rows to sample from")
    by_class = rows_by_class(dataset, label_column)
    short = [(c, len(ix)) for c, ix in by_class.items() if len(ix) < num_samples]
    if short and not allow_fewer:
        c, n = min(short, key=lambda t: t[1])
        raise TextMatchError(
            f"class {c!r} has only {n} example(s), fewer than num_samples={num_samples} "
            f"({len(short)} such class(es)); lower num_samples or pass allow_fewer=True to take all of them"
        )
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for rows in by_class.values():
        picked.extend(int(i) for i in rng.permutation(np.asarray(rows))[:num_samples])
    return dataset.select(sorted(picked))
