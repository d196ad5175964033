"""Reading labelled text from Hugging Face `datasets` and files, with checks that name the fix.

Everything goes through `datasets`: CSV / JSON / JSONL / Parquet files are read with
`load_dataset(<builder>, data_files=...)` (works offline), other names with
`load_dataset(name)`. Also here: setfit-style `column_mapping`, streaming, and the plain
(texts, labels) lists the rest of textmatch works on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from ..errors import TextMatchError
from .validation import validate_labels, validate_texts

FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


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
            ds = select_split(ds, split, source)
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


def check_json_start(path: Path) -> None:
    """A JSON / JSONL data file must start with an object or an array: anything else (a bare
    `null`, a number) is refused here, before pyarrow's JSON reader, which crashes on some."""
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head and head[:1] not in (b"{", b"["):
        raise TextMatchError(
            f"{path} is not JSON lines of objects (it starts with {head[:20]!r}); "
            'each line must be an object such as {"text": "...", "label": "..."}'
        )


def select_split(dd: Any, split: str | None, source: str):
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


def read_error(source: str, exc: Exception) -> TextMatchError:
    """A one-line TextMatchError, in our words, for a file or dataset that `datasets` could not read."""
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    if "error occurred while generating the dataset" in text.lower() and cause is not None:
        exc, text = cause, str(cause)  # the real reason is the cause; the wrapper says nothing
    if "corresponds to no data" in text:
        return TextMatchError(f"{source!r} holds no rows; give a file with a header row and at least one row of data")
    if isinstance(exc, UnicodeDecodeError) or "codec can't decode" in text:
        return TextMatchError(f"{source!r} is not UTF-8 text; save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    first = text.splitlines()[0] if text else ""
    return TextMatchError(f"cannot read {source!r} as a dataset ({type(exc).__name__}: {first}); check its format")


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
            if builder == "json":
                check_json_start(path)
            return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming, **kwargs)
        if not path.exists() and (source.startswith((".", "/", "~")) or Path(source).suffix.lower() in FILE_BUILDERS):
            raise TextMatchError(f"data file {source!r} does not exist; check the path")
        loaded = datasets.load_dataset(source, streaming=streaming, **load_kwargs)
    except TextMatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; name the source
        raise read_error(source, exc) from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return select_split(loaded, split, source)
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
        raise read_error(source, exc) from None
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
        ds = select_split(ds, None, "the dataset")
    check_columns(ds, text_column, label_column)
    if isinstance(ds, datasets.IterableDataset):
        try:  # a streamed file is parsed while it is read: its errors surface here
            rows = [(row[text_column], row[label_column]) for row in ds]
        except Exception as exc:  # noqa: BLE001 - pandas / pyarrow / json parse errors, in our words
            raise read_error("the streamed dataset", exc) from None
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


def as_map_dataset(data: Any, what: str):
    """A `datasets.Dataset` (one split of a DatasetDict), or an error saying what to pass."""
    import datasets

    if isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        data = select_split(data, None, "the dataset")
    if isinstance(data, datasets.IterableDataset):
        raise TextMatchError(
            f"{what} needs an in-memory datasets.Dataset, got a streaming IterableDataset; "
            "load the data without streaming=True"
        )
    if not isinstance(data, datasets.Dataset):
        raise TextMatchError(f"{what} needs a datasets.Dataset, got {type(data).__name__}")
    return data


def label_values(ds: Any, label_column: str) -> list[Any]:
    """The label column as a list, ClassLabel ints shown by name."""
    return _names_for(column_values(ds, label_column), _class_names(ds, label_column))
