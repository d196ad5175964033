"""Reading labelled text from Hugging Face `datasets` and files, with checks that name the fix.

Everything goes through `datasets`: CSV / JSON / JSONL / Parquet files are read with
`load_dataset(<builder>, data_files=...)` (works offline), other names with
`load_dataset(name)`. Texts and labels are then validated once, here, so the maths never
sees None, NaN, non-strings or empty strings.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Hashable, Sequence

from .errors import TextMatchError

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


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


# -- datasets ------------------------------------------------------------------------------
def load_text_dataset(
    name_or_path: Any,
    split: str | None = None,
    text_column: str = "text",
    label_column: str | None = "label",
    **load_kwargs: Any,
):
    """Load a `datasets.Dataset` from a file, folder, Hub name or in-memory dataset, and check
    that it has the text (and label) column.

    A CSV file needs a header row naming the columns (`text,label`).
    """
    import datasets

    if isinstance(name_or_path, datasets.DatasetDict):
        ds = _pick_split(name_or_path, split, "the dataset")
    elif isinstance(name_or_path, datasets.Dataset):
        ds = name_or_path
    else:
        ds = _load(str(name_or_path), split, **load_kwargs)
    check_columns(ds, text_column, label_column, source=str(name_or_path) if not isinstance(name_or_path, datasets.Dataset) else "the dataset")
    return ds


def _pick_split(dd: Any, split: str | None, source: str):
    splits = list(dd.keys())
    if split is None:
        if len(splits) == 1:
            return dd[splits[0]]
        raise TextMatchError(
            f"{source} is a DatasetDict with splits {splits}; pick one, e.g. dataset[{splits[0]!r}] "
            f"(or --split {splits[0]})"
        )
    if split not in dd:
        raise TextMatchError(f"{source} has no split {split!r}; its splits are {splits}")
    return dd[split]


def _load(source: str, split: str | None, **load_kwargs: Any):
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_file():
            builder = FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                raise TextMatchError(
                    f"{source}: unknown file type {path.suffix!r}; use one of {sorted(FILE_BUILDERS)}"
                )
            kwargs = dict(load_kwargs)
            if builder == "csv":
                kwargs.setdefault("keep_default_na", False)  # "NA" or "null" are texts, not missing
                kwargs.setdefault("na_values", [""])
                if path.suffix.lower() == ".tsv":
                    kwargs.setdefault("sep", "\t")
            return datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
        if not path.exists() and (source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS):
            raise TextMatchError(f"data file {source!r} does not exist; check the path")
        loaded = datasets.load_dataset(source, **load_kwargs)
    except TextMatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source
        raise TextMatchError(f"cannot read {source!r} as a dataset: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    return _pick_split(loaded, split, source) if isinstance(loaded, datasets.DatasetDict) else loaded


def check_columns(ds: Any, text_column: str, label_column: str | None, source: str = "the dataset") -> None:
    """Raise if a needed column is missing, listing the columns there are."""
    columns = list(ds.column_names)
    needed = [c for c in (text_column, label_column) if c]
    missing = [c for c in needed if c not in columns]
    if not missing:
        return
    hint = ""
    if source.lower().endswith((".csv", ".tsv")):
        hint = f" Does the file start with a header row? It must name the columns, e.g. `{','.join(needed)}`."
    mapping = " or choose other columns with text_column=/label_column= (--text-column/--label-column)"
    raise TextMatchError(
        f"{source} has no column {missing[0]!r}; its columns are {columns}.{hint} Rename the column{mapping}"
    )


def texts_and_labels(
    ds: Any,
    text_column: str = "text",
    label_column: str = "label",
    require_all_label_names: bool = False,
) -> tuple[list[str], list[Hashable]]:
    """Pull validated texts and labels out of a `datasets.Dataset`; ClassLabel ints become names.

    require_all_label_names: with a ClassLabel column, every declared name must have examples
    (a support set where a label has no examples is an error).
    """
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, None, "the dataset")
    check_columns(ds, text_column, label_column)
    texts = validate_texts(ds[text_column], f"text (column {text_column!r}, row)")
    labels = list(ds[label_column])
    feature = ds.features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        names = feature.names
        labels = [names[y] if isinstance(y, int) and 0 <= y < len(names) else y for y in labels]
        if require_all_label_names:
            empty = [n for n in names if n not in set(labels)]
            if empty:
                raise TextMatchError(
                    f"label {empty[0]!r} has no examples in the support set ({len(empty)} such label(s)); "
                    "add examples for it or drop it from the label names"
                )
    return texts, validate_labels(labels, len(texts))


def as_text_label_lists(
    data: Any, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], list[Hashable]]:
    """Accept a `datasets.Dataset`, a (texts, labels) pair, or a dict of columns."""
    import datasets

    if isinstance(data, (datasets.Dataset, datasets.DatasetDict)):
        return texts_and_labels(data, text_column, label_column)
    if isinstance(data, dict):
        missing = [c for c in (text_column, label_column) if c not in data]
        if missing:
            raise TextMatchError(f"the data has no column {missing[0]!r}; its columns are {list(data)}")
        return validate_texts(data[text_column]), validate_labels(data[label_column], len(data[text_column]))
    if isinstance(data, (tuple, list)) and len(data) == 2:
        texts = validate_texts(data[0])
        return texts, validate_labels(data[1], len(texts))
    raise TextMatchError(
        f"expected a datasets.Dataset or a (texts, labels) pair, got {type(data).__name__}"
    )
