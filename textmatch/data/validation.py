"""Texts and labels checked once, at the edge, so the maths never sees None, NaN, non-strings
or empty strings; every problem is a `TextMatchError` that names the fix."""

from __future__ import annotations

import math
import warnings
from typing import Any, Hashable, Sequence

from ..errors import TextMatchError


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def as_list(value: Any, what: str) -> list[Any]:
    """`value` as a list; a single string or something not iterable is an error that says
    `what` was expected (e.g. "a list of texts")."""
    if isinstance(value, str):
        raise TextMatchError(f"expected {what}, got the single string {value!r}; wrap it in a list: [{value!r}]")
    try:
        return list(value)
    except TypeError:
        raise TextMatchError(f"expected {what}, got {type(value).__name__}") from None


def validate_texts(texts: Any, what: str = "text") -> list[str]:
    """Return `texts` as a list of non-empty strings, or raise naming the first bad item."""
    items = as_list(texts, f"a list of {what}s")
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
    items = [x.item() if hasattr(x, "item") else x for x in as_list(labels, f"a list of {what}s")]  # numpy -> Python
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


def conflicting_labels(texts: Sequence[str], labels: Sequence[Hashable]) -> dict[str, list[Hashable]]:
    """Texts that appear under two or more different labels: {text: its labels, sorted}."""
    seen: dict[str, list[Hashable]] = {}
    for text, label in zip(texts, labels):
        found = seen.setdefault(text, [])
        if label not in found:
            found.append(label)
    return {text: sorted_classes(found) for text, found in seen.items() if len(found) > 1}


def check_conflicts(texts: Sequence[str], labels: Sequence[Hashable], what: str = "support set", strict: bool = False) -> None:
    """Warn (or with `strict`, refuse) when the same text carries different labels: such data
    contradicts itself, and nothing downstream can tell which label is meant."""
    conflicts = conflicting_labels(texts, labels)
    if not conflicts:
        return
    text, found = next(iter(conflicts.items()))
    message = (
        f"{len(conflicts)} text(s) of the {what} appear under two or more labels (e.g. {text[:60]!r}: "
        f"{', '.join(map(repr, found))}); fix their labels"
    )
    if strict:
        raise TextMatchError(message)
    warnings.warn(message + " (strict=True / --strict refuses such data)", UserWarning, stacklevel=3)
