"""Texts and labels checked once, at the edge, so the maths never sees None, NaN, non-strings
or empty strings; every problem is a `TextMatchError` that names the fix."""

from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

from ..errors import TextMatchError


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def validate_texts(texts: Any, what: str = "text") -> list[str]:
    """Return `texts` as a list of non-empty strings, or raise naming the first bad item."""
    if isinstance(texts, str):
        raise TextMatchError(f"expected a list of {what}s, got a single string; wrap it in a list: [{texts!r}]")
    try:
        items = list(texts)
    except TypeError:
        raise TextMatchError(f"expected a list of {what}s, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if _is_missing(t):
            raise TextMatchError(f"{what} {i} is missing (None/NaN); remove the row or fill in the text")
        if not isinstance(t, str):
            raise TextMatchError(f"{what} {i} is a {type(t).__name__} ({t!r}), not a string; convert it with str()")
        if not t.strip():
            raise TextMatchError(f"{what} {i} is an empty string; remove it or give it some text")
    return items


def validate_labels(labels: Any, n: int, what: str = "label") -> list[Hashable]:
    """Return `labels` as a list of length `n` with no missing or unhashable values."""
    if isinstance(labels, str):
        raise TextMatchError(f"expected a list of {what}s, got a single string")
    items = [x.item() if hasattr(x, "item") else x for x in labels]  # numpy scalars -> Python
    if len(items) != n:
        raise TextMatchError(f"got {n} texts but {len(items)} {what}s; they must pair up one to one")
    for i, y in enumerate(items):
        if _is_missing(y) or (isinstance(y, str) and not y.strip()):
            raise TextMatchError(f"{what} {i} is missing; every text needs a label")
        try:
            hash(y)
        except TypeError:
            raise TextMatchError(f"{what} {i} ({y!r}) is a {type(y).__name__}; labels must be strings or ints") from None
    return items


def validate_support(texts: Any, labels: Any, min_classes: int = 2) -> tuple[list[str], list[Hashable]]:
    """Check a labelled support set: non-empty, paired, valid texts, at least `min_classes` classes."""
    texts = validate_texts(texts, "support text")
    if not texts:
        raise TextMatchError("the support set is empty; give at least one labelled example per class")
    labels = validate_labels(labels, len(texts), "support label")
    n_classes = len(set(labels))
    if n_classes < min_classes:
        raise TextMatchError(
            f"the support set has only {n_classes} class ({labels[0]!r}); a classifier needs at least "
            f"{min_classes} classes (use a threshold for in/out-of-scope decisions)"
        )
    return texts, labels


def sorted_classes(labels: Sequence[Hashable]) -> list[Hashable]:
    """Distinct labels, sorted (as scikit-learn's classes_), or in first-seen order if unsortable."""
    distinct = list(dict.fromkeys(labels))
    try:
        return sorted(distinct)
    except TypeError:
        return distinct
