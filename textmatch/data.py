"""Reading labelled text from Hugging Face `datasets` and files, with checks that name the fix.

Everything goes through `datasets`: CSV / JSON / JSONL / Parquet files are read with
`load_dataset(<builder>, data_files=...)` (works offline), other names with
`load_dataset(name)`. Texts and labels are then validated once, here, so the maths never
sees None, NaN, non-strings or empty strings.

Also here: setfit-style `column_mapping` and streaming in `load_text_dataset`, K-shot samples
(`sample_dataset`), class splits for episodic meta-training (`ClassSplit`,
`class_split_from_files`, `random_class_split`, `filter_classes`) and BEIR-layout retrieval
sets (`load_beir`).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

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
    column_mapping: Mapping[str, str] | None = None,
    streaming: bool = False,
    **load_kwargs: Any,
):
    """Load a `datasets.Dataset` from a file, folder, Hub name or in-memory dataset, and check
    that it has the text (and label) column.

    A CSV file needs a header row naming the columns (`text,label`).

    column_mapping: {source_column: target}, as in setfit: the source columns are renamed
        before the checks, and each target must be `text_column` or `label_column`; e.g.
        `{"sentence": "text"}` for a JSONL file whose texts are under "sentence".
    streaming: return a `datasets.IterableDataset` that reads rows lazily (for corpora too
        large for memory). Its columns are checked the same way, from its features or, where
        those are unknown (CSV files), from the first row.
    load_kwargs: passed on to `datasets.load_dataset` (e.g. cache_dir).
    """
    import datasets

    if isinstance(name_or_path, _in_memory_types()):
        source = "the dataset"
        ds = name_or_path
        if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            ds = _pick_split(ds, split, source)
        if streaming and isinstance(ds, datasets.Dataset):
            ds = ds.to_iterable_dataset()
    else:
        source = str(name_or_path)
        ds = _load(source, split, streaming=streaming, **load_kwargs)
    if column_mapping is not None:
        ds = apply_column_mapping(ds, column_mapping, text_column, label_column, source)
    check_columns(ds, text_column, label_column, source=source)
    return ds


def _in_memory_types() -> tuple[type, ...]:
    import datasets

    return (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)


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


def _read_error(source: str, exc: Exception) -> TextMatchError:
    """A one-line TextMatchError for a file or dataset that `datasets` could not read."""
    return TextMatchError(f"cannot read {source!r} as a dataset: {type(exc).__name__}: {exc}".splitlines()[0])


def _load(source: str, split: str | None, streaming: bool = False, **load_kwargs: Any):
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
            return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming, **kwargs)
        if not path.exists() and (source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS):
            raise TextMatchError(f"data file {source!r} does not exist; check the path")
        loaded = datasets.load_dataset(source, streaming=streaming, **load_kwargs)
    except TextMatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source
        raise _read_error(source, exc) from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return _pick_split(loaded, split, source)
    return loaded


def dataset_columns(ds: Any, source: str = "the dataset") -> list[str]:
    """Column names of a `Dataset` or `IterableDataset`.

    A streaming dataset whose features are unknown (a CSV file, or after `map`) is asked for
    its first row; an empty one is an error (there is nothing to check or to learn from).
    """
    names = getattr(ds, "column_names", None)
    if names is not None:
        return list(names)
    try:
        first = next(iter(ds.take(1)), None)
    except Exception as exc:  # noqa: BLE001 - reading is lazy: a bad file fails here
        raise _read_error(source, exc) from None
    if first is None:
        raise TextMatchError(f"{source} has no rows (the stream is empty); check the file or the split")
    return list(first)


def apply_column_mapping(
    ds: Any,
    column_mapping: Mapping[str, str],
    text_column: str = "text",
    label_column: str | None = "label",
    source: str = "the dataset",
):
    """Rename columns as `column_mapping` ({source_column: target}) says, as in setfit.

    Each target must be `text_column` or `label_column`, at most one source per target; the
    source columns must exist, and a target may not already be a column of its own.
    """
    if not isinstance(column_mapping, Mapping):
        raise TextMatchError(
            f"column_mapping must be a dict {{source_column: {text_column!r}|{label_column!r}}}, "
            f"got {type(column_mapping).__name__}"
        )
    targets = [c for c in (text_column, label_column) if c]
    by_target: dict[str, str] = {}
    for src, dst in column_mapping.items():
        if dst not in targets:
            allowed = " or ".join(repr(t) for t in targets)
            raise TextMatchError(
                f"column_mapping maps {src!r} to {dst!r}; a target must be the text or label column "
                f"({allowed}), e.g. {{{src!r}: {text_column!r}}}"
            )
        if dst in by_target:
            raise TextMatchError(
                f"column_mapping maps both {by_target[dst]!r} and {src!r} to {dst!r}; map one column to each target"
            )
        by_target[dst] = src
    columns = dataset_columns(ds, source)
    missing = [c for c in column_mapping if c not in columns]
    if missing:
        raise TextMatchError(
            f"{source} has no column {missing[0]!r} (a key of column_mapping); its columns are {columns}. "
            "Make the column_mapping keys name existing columns"
        )
    renames = {src: dst for src, dst in column_mapping.items() if src != dst}
    clash = [dst for dst in renames.values() if dst in columns and dst not in renames]
    if clash:
        src = by_target[clash[0]]
        raise TextMatchError(
            f"{source} already has a column {clash[0]!r}, so column_mapping cannot rename {src!r} to it; "
            f"drop the old column first (dataset.remove_columns([{clash[0]!r}])) or leave {src!r} out of column_mapping"
        )
    return ds.rename_columns(renames) if renames else ds


def check_columns(ds: Any, text_column: str, label_column: str | None, source: str = "the dataset") -> None:
    """Raise if a needed column is missing, listing the columns there are."""
    columns = dataset_columns(ds, source)
    needed = [c for c in (text_column, label_column) if c]
    missing = [c for c in needed if c not in columns]
    if not missing:
        return
    hint = ""
    if source.lower().endswith((".csv", ".tsv")):
        hint = f" Does the file start with a header row? It must name the columns, e.g. `{','.join(needed)}`."
    mapping = (
        f" (column_mapping={{'<column>': {missing[0]!r}}}) or choose other columns with "
        "text_column=/label_column= (--text-column/--label-column)"
    )
    raise TextMatchError(
        f"{source} has no column {missing[0]!r}; its columns are {columns}.{hint} Rename the column{mapping}"
    )


def column_values(ds: Any, column: str) -> list[Any]:
    """One column of a `datasets.Dataset` as a list, read in one batch (datasets 4+ returns a
    lazy `Column` from `ds[column]`, which is slow to iterate row by row)."""
    return list(ds[column][:])


def _class_names(ds: Any, label_column: str) -> list[str] | None:
    """The names of a ClassLabel column, or None for plain labels (or unknown features)."""
    import datasets

    features = getattr(ds, "features", None) or {}
    feature = features.get(label_column)
    return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def _names_for(labels: Sequence[Any], names: list[str] | None) -> list[Any]:
    """ClassLabel ints -> their names; anything else unchanged."""
    if names is None:
        return list(labels)
    return [names[y] if isinstance(y, int) and 0 <= y < len(names) else y for y in labels]


def texts_and_labels(
    ds: Any,
    text_column: str = "text",
    label_column: str = "label",
    require_all_label_names: bool = False,
) -> tuple[list[str], list[Hashable]]:
    """Pull validated texts and labels out of a `datasets.Dataset` (or an `IterableDataset`,
    read to the end); ClassLabel ints become names.

    require_all_label_names: with a ClassLabel column, every declared name must have examples
    (a support set where a label has no examples is an error).
    """
    import datasets

    if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        ds = _pick_split(ds, None, "the dataset")
    check_columns(ds, text_column, label_column)
    if isinstance(ds, datasets.IterableDataset):
        rows = [(row[text_column], row[label_column]) for row in ds]
        raw_texts, labels = [t for t, _ in rows], [y for _, y in rows]
    else:
        raw_texts, labels = column_values(ds, text_column), column_values(ds, label_column)
    texts = validate_texts(raw_texts, f"text (column {text_column!r}, row)")
    names = _class_names(ds, label_column)
    if names is not None:
        labels = _names_for(labels, names)
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
    """Accept a `datasets.Dataset` (or `IterableDataset`), a (texts, labels) pair, or a dict of columns."""
    if isinstance(data, _in_memory_types()):
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


# -- few-shot samples ----------------------------------------------------------------------
def _as_map_dataset(data: Any, what: str):
    """A `datasets.Dataset` (one split of a DatasetDict), or an error saying what to pass."""
    import datasets

    if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        data = _pick_split(data, None, "the dataset")
    if isinstance(data, datasets.IterableDataset):
        raise TextMatchError(
            f"{what} needs an in-memory datasets.Dataset, got a streaming IterableDataset; "
            "load the data without streaming=True"
        )
    if not isinstance(data, datasets.Dataset):
        raise TextMatchError(f"{what} needs a datasets.Dataset, got {type(data).__name__}")
    return data


def _label_values(ds: Any, label_column: str) -> list[Any]:
    """The label column as a list, ClassLabel ints shown by name."""
    return _names_for(column_values(ds, label_column), _class_names(ds, label_column))


def rows_by_class(ds: Any, label_column: str = "label") -> dict[Hashable, list[int]]:
    """{label: row indices}, labels sorted (ClassLabel ints by name); labels are validated."""
    labels = validate_labels(_label_values(ds, label_column), len(ds), f"label (column {label_column!r}, row)")
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
    dataset = _as_map_dataset(dataset, "sample_dataset")
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


# -- class splits for episodic meta-training -----------------------------------------------
SPLIT_NAMES = ("train", "valid", "test")
LABEL_FILES = {name: f"labels.{name}.txt" for name in SPLIT_NAMES}


@dataclass
class ClassSplit:
    """Disjoint class lists for episodic meta-training: episodes are drawn from the `train`
    classes, validated on `valid` and tested on `test` classes the model has never seen.

    Every list must be non-empty and the three must not share a class.
    """

    train: list[Hashable]
    valid: list[Hashable]
    test: list[Hashable]

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            setattr(self, name, _split_classes(getattr(self, name), name))
        for i, a in enumerate(SPLIT_NAMES):
            for b in SPLIT_NAMES[i + 1:]:
                other = set(getattr(self, b))
                shared = [c for c in getattr(self, a) if c in other]
                if shared:
                    raise TextMatchError(
                        f"class {shared[0]!r} is in both {a} and {b} ({len(shared)} shared class(es)); "
                        "the class splits must be disjoint"
                    )

    @property
    def classes(self) -> list[Hashable]:
        """All classes: train, then valid, then test."""
        return [*self.train, *self.valid, *self.test]

    def to_dict(self) -> dict[str, list[Hashable]]:
        """{"train": [...], "valid": [...], "test": [...]} (JSON-ready for string or int labels)."""
        return {name: list(getattr(self, name)) for name in SPLIT_NAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassSplit":
        """The inverse of `to_dict`; other keys are ignored."""
        if not isinstance(data, Mapping):
            raise TextMatchError(f"a class split must be a dict with keys {list(SPLIT_NAMES)}, got {type(data).__name__}")
        missing = [name for name in SPLIT_NAMES if name not in data]
        if missing:
            raise TextMatchError(
                f"the class split has no key {missing[0]!r}; it needs {list(SPLIT_NAMES)}, got {list(data)}"
            )
        return cls(**{name: data[name] for name in SPLIT_NAMES})


def _split_classes(value: Any, name: str) -> list[Hashable]:
    """One split's class list: a non-empty list of distinct, valid labels."""
    if isinstance(value, str):
        raise TextMatchError(f"ClassSplit.{name} must be a list of labels, got the single string {value!r}; wrap it in a list")
    try:
        items = list(value)
    except TypeError:
        raise TextMatchError(f"ClassSplit.{name} must be a list of labels, got {type(value).__name__}") from None
    if not items:
        raise TextMatchError(f"ClassSplit.{name} is empty; every split needs at least one class")
    items = validate_labels(items, len(items), f"{name} class")
    seen: set[Hashable] = set()
    for c in items:
        if c in seen:
            raise TextMatchError(f"class {c!r} appears twice in ClassSplit.{name}; list each class once")
        seen.add(c)
    return items


def read_label_file(path: str | Path) -> list[str]:
    """Labels from a text file, one per line (surrounding whitespace and blank lines dropped)."""
    path = Path(path)
    if not path.is_file():
        raise TextMatchError(f"label file {str(path)!r} does not exist; check the path")
    labels = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    labels = [y for y in labels if y]
    if not labels:
        raise TextMatchError(f"label file {str(path)!r} has no labels; write one label per line")
    return labels


def _class_split_paths(folder_or_paths: Any) -> dict[str, Path]:
    if isinstance(folder_or_paths, Mapping):
        missing = [name for name in SPLIT_NAMES if name not in folder_or_paths]
        if missing:
            raise TextMatchError(
                f"the label file paths have no key {missing[0]!r}; give {{'train': ..., 'valid': ..., 'test': ...}}"
            )
        return {name: Path(folder_or_paths[name]) for name in SPLIT_NAMES}
    if isinstance(folder_or_paths, (str, os.PathLike)):
        folder = Path(folder_or_paths).expanduser()
        if not folder.is_dir():
            raise TextMatchError(
                f"class split folder {str(folder_or_paths)!r} does not exist or is not a folder; "
                f"it should hold {', '.join(LABEL_FILES.values())}"
            )
        paths = {name: folder / filename for name, filename in LABEL_FILES.items()}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            raise TextMatchError(
                f"class split folder {str(folder)!r} has no {missing[0]} ({len(missing)} of the 3 files missing); "
                f"it must hold {', '.join(LABEL_FILES.values())}, one label per line"
            )
        return paths
    try:
        paths = [Path(p) for p in folder_or_paths]
    except TypeError:
        raise TextMatchError(
            f"expected a folder or the (train, valid, test) label file paths, got {type(folder_or_paths).__name__}"
        ) from None
    if len(paths) != 3:
        raise TextMatchError(f"expected 3 label files (train, valid, test), got {len(paths)}")
    return dict(zip(SPLIT_NAMES, paths))


def class_split_from_files(folder_or_paths: Any) -> ClassSplit:
    """Read a `ClassSplit` from `labels.train.txt`, `labels.valid.txt` and `labels.test.txt`
    (one label per line, as in ProtAugment's `few_shot/NN` folders).

    folder_or_paths: the folder holding the three files, their paths as a (train, valid, test)
    sequence, or a {"train": path, "valid": path, "test": path} dict.
    """
    paths = _class_split_paths(folder_or_paths)
    lists = {name: read_label_file(path) for name, path in paths.items()}
    try:
        return ClassSplit(**lists)
    except TextMatchError as exc:
        where = paths["train"].parent if len({p.parent for p in paths.values()}) == 1 else "the label files"
        raise TextMatchError(f"{where}: {exc}") from None


def random_class_split(
    labels: Iterable[Hashable],
    valid_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> ClassSplit:
    """Split the distinct `labels` at random into train / valid / test classes.

    labels: class names, or a whole label column (duplicates are merged). Each held-out split
    gets round(fraction * classes) classes, at least one; train keeps the rest (at least one).
    The result depends only on the set of classes and the seed; each list is sorted.
    """
    if isinstance(labels, str):
        raise TextMatchError(f"expected a list of labels, got the single string {labels!r}")
    items = list(labels)
    classes = sorted_classes(validate_labels(items, len(items)))
    for name, value in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise TextMatchError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
    if valid_fraction + test_fraction >= 1:
        raise TextMatchError(
            f"valid_fraction + test_fraction = {valid_fraction + test_fraction:g} leaves no training classes; "
            "keep their sum below 1"
        )
    n = len(classes)
    n_valid, n_test = max(1, round(n * valid_fraction)), max(1, round(n * test_fraction))
    if n_valid + n_test >= n:
        raise TextMatchError(
            f"{n} class(es) cannot be split into train/valid/test with at least one class each "
            f"({n_valid} valid + {n_test} test); use more classes or lower the fractions"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [classes[i] for i in order]
    return ClassSplit(
        train=sorted_classes(shuffled[n_test + n_valid:]),
        valid=sorted_classes(shuffled[n_test:n_test + n_valid]),
        test=sorted_classes(shuffled[:n_test]),
    )


def filter_classes(dataset: Any, classes: Iterable[Hashable], label_column: str = "label"):
    """The rows of `dataset` whose label is one of `classes`, in dataset order (a `datasets.Dataset`).

    With a ClassLabel column, classes are given by name. Every class must have rows; the error
    names those without any.
    """
    if isinstance(classes, ClassSplit):
        raise TextMatchError("filter_classes takes one list of classes; pass split.train, split.valid or split.test")
    if isinstance(classes, str):
        raise TextMatchError(f"expected a list of classes, got the single string {classes!r}; wrap it in a list")
    dataset = _as_map_dataset(dataset, "filter_classes")
    items = list(classes)
    wanted = list(dict.fromkeys(validate_labels(items, len(items), "class")))
    if not wanted:
        raise TextMatchError("no classes given; pass at least one class to keep")
    check_columns(dataset, label_column, None)
    labels = _label_values(dataset, label_column)
    wanted_set = set(wanted)
    keep = [i for i, y in enumerate(labels) if _is_hashable(y) and y in wanted_set]
    present = {labels[i] for i in keep}
    empty = [c for c in wanted if c not in present]
    if empty:
        examples = sorted_classes([y for y in dict.fromkeys(labels) if _is_hashable(y)])[:3]
        raise TextMatchError(
            f"{len(empty)} of the {len(wanted)} classes have no rows in the dataset: {empty[:5]}"
            f"{' ...' if len(empty) > 5 else ''}; check the class split against the dataset's labels "
            f"(column {label_column!r}, e.g. {examples})"
        )
    return dataset.select(keep)


def _is_hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# -- BEIR-layout retrieval sets -------------------------------------------------------------
BEIR_LAYOUT = "a BEIR folder holds corpus.jsonl (_id, title, text), queries.jsonl (_id, text) and qrels/<split>.tsv"


@dataclass(repr=False)
class BeirData:
    """A retrieval set in BEIR layout, as `datasets` objects.

    corpus: a `Dataset` (or `IterableDataset` when streamed) with string `_id`, `title`, `text`.
    queries: a `Dataset` with string `_id`, `text`: the queries that have qrels in the split.
    qrels: {query_id: {doc_id: score}}, higher score = more relevant.
    """

    corpus: Any
    queries: Any
    qrels: dict[str, dict[str, int]]

    def __repr__(self) -> str:
        n_docs = len(self.corpus) if hasattr(self.corpus, "__len__") else "streamed"
        pairs = sum(len(docs) for docs in self.qrels.values())
        return f"BeirData(corpus={n_docs} docs, queries={len(self.queries)}, qrels={pairs} pairs)"


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV: `query-id<TAB>corpus-id<TAB>score` lines (integer scores), with
    an optional header row. Ids are strings; a repeated pair keeps its last score."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    first = True
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.rstrip("\r\n").split("\t")]
            if len(parts) != 3:
                raise TextMatchError(
                    f"{path} line {lineno}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                    f"got {len(parts)}"
                )
            qid, did, score = parts
            is_header, first = first and not _is_int(score), False
            if is_header:
                continue
            if not _is_int(score):
                raise TextMatchError(f"{path} line {lineno}: score {score!r} is not an integer; qrels scores are integers")
            qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _read_jsonl_table(path: Path, required: Sequence[str], optional: Sequence[str], streaming: bool, **load_kwargs: Any):
    """Load a JSONL file with `datasets`, keep the `required` + `optional` fields (missing
    optional ones become ""), ids as strings."""
    import datasets

    try:
        ds = datasets.load_dataset("json", data_files=str(path), split="train", streaming=streaming, **load_kwargs)
    except Exception as exc:  # noqa: BLE001
        raise _read_error(str(path), exc) from None
    columns = dataset_columns(ds, str(path))
    missing = [c for c in required if c not in columns]
    if missing:
        raise TextMatchError(
            f"{path} has no field {missing[0]!r}; its fields are {columns}. Each line must be a JSON object "
            f"with {', '.join(repr(c) for c in (*required, *optional))}"
        )
    ds = ds.select_columns([c for c in (*required, *optional) if c in columns])
    # cast before adding columns: in datasets 5.2 a streamed cast_column after map() changes
    # the declared feature but not the values
    if ds.features["_id"] != datasets.Value("string"):
        ds = ds.cast_column("_id", datasets.Value("string"))
    for column in optional:
        if column not in columns:
            if isinstance(ds, datasets.IterableDataset):
                features = datasets.Features({**ds.features, column: datasets.Value("string")})
                ds = ds.map(lambda _row, c=column: {c: ""}, features=features)
            else:
                ds = ds.add_column(column, [""] * len(ds))
    return ds.select_columns([required[0], *optional, *required[1:]])  # _id, title, text


def _duplicates(ids: Iterable[str]) -> tuple[int, list[str]]:
    """(number of repeated entries, a few of the repeated ids)."""
    seen: set[str] = set()
    repeated: list[str] = []
    for i in ids:
        if i in seen:
            repeated.append(i)
        seen.add(i)
    return len(repeated), list(dict.fromkeys(repeated))[:3]


def _drop_unknown_pairs(
    qrels: dict[str, dict[str, int]], query_ids: set[str], doc_ids: set[str]
) -> tuple[dict[str, dict[str, int]], str | None]:
    """Qrels without the pairs that name unknown queries or docs, and a message counting them."""
    kept: dict[str, dict[str, int]] = {}
    bad_q: dict[str, int] = {}
    bad_d: dict[str, int] = {}
    for qid, docs in qrels.items():
        if qid not in query_ids:
            bad_q[qid] = len(docs)
            continue
        for did, score in docs.items():
            if did in doc_ids:
                kept.setdefault(qid, {})[did] = score
            else:
                bad_d[did] = bad_d.get(did, 0) + 1
    if not bad_q and not bad_d:
        return kept, None
    parts = []
    if bad_q:
        parts.append(
            f"{sum(bad_q.values())} pair(s) name {len(bad_q)} query id(s) not in queries.jsonl (e.g. {list(bad_q)[:3]})"
        )
    if bad_d:
        parts.append(
            f"{sum(bad_d.values())} pair(s) name {len(bad_d)} doc id(s) not in corpus.jsonl (e.g. {list(bad_d)[:3]})"
        )
    return kept, "; ".join(parts)


def load_beir(folder: str | Path, split: str = "test", streaming: bool = False, **load_kwargs: Any) -> BeirData:
    """Load a retrieval set in BEIR layout: `corpus.jsonl` (`_id`, `title`, `text`),
    `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv` (`query-id`, `corpus-id`, `score`).

    Ids become strings; a corpus without titles gets empty ones. Only the queries with qrels in
    `split` are kept (as BEIR does). Qrels pairs naming unknown query or doc ids are dropped
    with a warning that counts them. streaming=True streams the corpus as an
    `IterableDataset` (its ids are still read once, to check them); queries stay in memory.
    load_kwargs: passed on to `datasets.load_dataset` (e.g. cache_dir).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise TextMatchError(f"BEIR folder {str(folder)!r} does not exist or is not a folder; {BEIR_LAYOUT}")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise TextMatchError(f"{root} has no {name}; {BEIR_LAYOUT}")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        there = f"the splits available are {available}; pass one as split=" if available else "it has no qrels/*.tsv files"
        raise TextMatchError(f"{root} has no qrels/{split}.tsv; {there} ({BEIR_LAYOUT})")

    corpus = _read_jsonl_table(root / "corpus.jsonl", ("_id", "text"), ("title",), streaming, **load_kwargs)
    queries = _read_jsonl_table(root / "queries.jsonl", ("_id", "text"), (), False, **load_kwargs)
    try:
        doc_ids = [row["_id"] for row in corpus.select_columns(["_id"])] if streaming else column_values(corpus, "_id")
    except Exception as exc:  # noqa: BLE001 - a streamed file fails while it is read
        raise _read_error(str(root / "corpus.jsonl"), exc) from None
    query_ids = column_values(queries, "_id")
    for name, ids in (("corpus.jsonl", doc_ids), ("queries.jsonl", query_ids)):
        n_repeated, examples = _duplicates(ids)
        if n_repeated:
            raise TextMatchError(
                f"{root / name} has {n_repeated} duplicate _id(s) (e.g. {examples}); every _id must be unique"
            )
    qrels, dropped = _drop_unknown_pairs(read_qrels(qrels_path), set(query_ids), set(doc_ids))
    if dropped:
        warnings.warn(f"{qrels_path}: dropped {dropped}", UserWarning, stacklevel=2)
    if not qrels:
        raise TextMatchError(
            f"{qrels_path} has no pairs naming known query and doc ids; check that it belongs to this corpus"
        )
    queries = queries.select([i for i, qid in enumerate(query_ids) if qid in qrels])
    return BeirData(corpus=corpus, queries=queries, qrels=qrels)
