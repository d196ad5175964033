"""Disjoint class splits for episodic meta-training: from files or drawn at random."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping

import numpy as np

from ..errors import TextMatchError
from .loading import as_map_dataset, check_columns, label_values
from .validation import as_list, sorted_classes, validate_labels

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
    items = as_list(value, f"ClassSplit.{name} to be a list of labels")
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
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise TextMatchError(f"label file {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
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
    dataset = as_map_dataset(dataset, "filter_classes")
    items = list(classes)
    wanted = list(dict.fromkeys(validate_labels(items, len(items), "class")))
    if not wanted:
        raise TextMatchError("no classes given; pass at least one class to keep")
    check_columns(dataset, label_column, None)
    labels = label_values(dataset, label_column)
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
