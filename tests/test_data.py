"""textmatch.data: input validation and dataset loading, with messages that name the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from textmatch import TextMatchError, load_text_dataset  # noqa: E402
from textmatch.data import (  # noqa: E402
    as_text_label_lists,
    sorted_classes,
    texts_and_labels,
    validate_labels,
    validate_support,
    validate_texts,
)

ROWS = [("what is the forecast", "weather"), ("NA", "weather"), ("play a song", "music"), ("null", "music")]


def _load(path, tmp_path, **kwargs):
    """load_text_dataset with the datasets cache kept inside tmp_path."""
    return load_text_dataset(path, cache_dir=str(tmp_path / "hf_cache"), **kwargs)


# -- validate_texts ------------------------------------------------------------------------
def test_validate_texts_accepts_a_list_and_other_iterables():
    assert validate_texts(["a", " b "]) == ["a", " b "]
    assert validate_texts(("x", "y")) == ["x", "y"]
    assert validate_texts(t for t in ["p", "q"]) == ["p", "q"]
    assert validate_texts([]) == []


@pytest.mark.parametrize(
    "bad,pattern",
    [
        (None, r"text 2 is missing \(None/NaN\)"),
        (float("nan"), r"text 2 is missing \(None/NaN\)"),
        (np.float64("nan"), r"text 2 is missing"),
        (7, r"text 2 is a int \(7\), not a string"),
        (b"bytes", r"text 2 is a bytes .*not a string"),
        ("", r"text 2 is an empty string"),
        ("   ", r"text 2 is an empty string"),
        ("\t\n", r"text 2 is an empty string"),
    ],
)
def test_validate_texts_names_the_bad_index(bad, pattern):
    with pytest.raises(TextMatchError, match=pattern):
        validate_texts(["fine", "also fine", bad, "never reached"])


def test_validate_texts_first_bad_item_is_reported():
    with pytest.raises(TextMatchError, match=r"text 0 is an empty string"):
        validate_texts(["", None])


def test_validate_texts_uses_the_given_name():
    with pytest.raises(TextMatchError, match=r"query 1 is missing"):
        validate_texts(["ok", None], "query")


def test_validate_texts_bare_string():
    with pytest.raises(TextMatchError, match=r"got a single string; wrap it in a list: \['hello'\]"):
        validate_texts("hello")


def test_validate_texts_not_iterable():
    with pytest.raises(TextMatchError, match=r"expected a list of texts, got NoneType"):
        validate_texts(None)
    with pytest.raises(TextMatchError, match=r"expected a list of texts, got int"):
        validate_texts(3)


# -- validate_labels -----------------------------------------------------------------------
def test_validate_labels_converts_numpy_scalars():
    got = validate_labels(np.array([1, 2, 1]), 3)
    assert got == [1, 2, 1] and all(type(y) is int for y in got)


def test_validate_labels_length_mismatch():
    with pytest.raises(TextMatchError, match=r"got 3 texts but 2 labels; they must pair up"):
        validate_labels(["a", "b"], 3)
    with pytest.raises(TextMatchError, match=r"got 1 texts but 2 labels"):
        validate_labels(["a", "b"], 1)


@pytest.mark.parametrize("missing", [None, float("nan"), "", "  "])
def test_validate_labels_missing_label(missing):
    with pytest.raises(TextMatchError, match=r"label 1 is missing; every text needs a label"):
        validate_labels(["a", missing, "b"], 3)


def test_validate_labels_unhashable_and_bare_string():
    with pytest.raises(TextMatchError, match=r"label 0 \(\['a'\]\) is a list; labels must be strings or ints"):
        validate_labels([["a"]], 1)
    with pytest.raises(TextMatchError, match=r"got a single string"):
        validate_labels("ab", 2)


# -- validate_support ----------------------------------------------------------------------
def test_validate_support_ok():
    assert validate_support(["a", "b"], ["x", "y"]) == (["a", "b"], ["x", "y"])


def test_validate_support_empty():
    with pytest.raises(TextMatchError, match=r"support set is empty"):
        validate_support([], [])


def test_validate_support_single_class():
    with pytest.raises(TextMatchError, match=r"support set has only 1 class \('greet'\).*at least 2 classes"):
        validate_support(["hi", "hello"], ["greet", "greet"])
    assert validate_support(["hi"], ["greet"], min_classes=1) == (["hi"], ["greet"])


def test_validate_support_bad_text_and_labels():
    with pytest.raises(TextMatchError, match=r"support text 1 is missing"):
        validate_support(["hi", None], ["a", "b"])
    with pytest.raises(TextMatchError, match=r"got 2 texts but 1 support labels"):
        validate_support(["hi", "yo"], ["a"])


def test_sorted_classes():
    assert sorted_classes(["b", "a", "b", "c"]) == ["a", "b", "c"]
    assert sorted_classes([3, 1, 3]) == [1, 3]
    assert sorted_classes(["b", 1, "b"]) == ["b", 1]  # unsortable: first-seen order


# -- load_text_dataset: files --------------------------------------------------------------
def _write_csv(path, rows, header="text,label"):
    lines = ([header] if header else []) + [f"{t},{y}" for t, y in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_with_header_loads_and_na_stays_a_string(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ROWS)
    ds = _load(path, tmp_path)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == ["text", "label"]
    assert len(ds) == len(ROWS)
    texts, labels = texts_and_labels(ds)
    assert texts == ["what is the forecast", "NA", "play a song", "null"]
    assert labels == ["weather", "weather", "music", "music"]


def test_csv_loads_when_given_as_a_string_path(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ROWS)
    ds = _load(str(path), tmp_path)
    assert len(ds) == len(ROWS)


def test_tsv_loads(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("text\tlabel\nhello, there\tgreet\nbye now\tbye\n", encoding="utf-8")
    texts, labels = texts_and_labels(_load(path, tmp_path))
    assert texts == ["hello, there", "bye now"] and labels == ["greet", "bye"]


def test_csv_with_empty_text_cell_is_reported_as_missing(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("text,label\nhello,greet\n,bye\n", encoding="utf-8")
    ds = _load(path, tmp_path)
    with pytest.raises(TextMatchError, match=r"row\) 1 is missing"):
        texts_and_labels(ds)


def test_csv_without_header_mentions_the_header_and_lists_columns(tmp_path):
    path = _write_csv(tmp_path / "noheader.csv", ROWS, header=None)
    with pytest.raises(TextMatchError) as info:
        _load(path, tmp_path)
    msg = str(info.value)
    assert "noheader.csv has no column 'text'" in msg
    assert "its columns are ['what is the forecast', 'weather']" in msg
    assert "header row" in msg and "`text,label`" in msg


def test_missing_label_column_lists_the_columns(tmp_path):
    path = _write_csv(tmp_path / "other.csv", ROWS, header="text,intent")
    with pytest.raises(TextMatchError, match=r"has no column 'label'; its columns are \['text', 'intent'\]"):
        _load(path, tmp_path)
    ds = _load(path, tmp_path, label_column="intent")
    assert texts_and_labels(ds, label_column="intent")[1] == [y for _, y in ROWS]
    # label_column=None: only the text column is required
    assert len(_load(path, tmp_path, label_column=None)) == len(ROWS)


def test_jsonl_loads(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in ROWS) + "\n", encoding="utf-8")
    texts, labels = texts_and_labels(_load(path, tmp_path))
    assert texts == [t for t, _ in ROWS] and labels == [y for _, y in ROWS]


def test_json_lines_with_json_suffix_loads(tmp_path):
    path = tmp_path / "train.json"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in ROWS) + "\n", encoding="utf-8")
    assert texts_and_labels(_load(path, tmp_path))[0] == [t for t, _ in ROWS]


def test_parquet_loads(tmp_path):
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"text": [t for t, _ in ROWS], "label": [y for _, y in ROWS]}).to_parquet(str(path))
    texts, labels = texts_and_labels(_load(path, tmp_path))
    assert texts == [t for t, _ in ROWS] and labels == [y for _, y in ROWS]


def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nope" / "train.csv"
    with pytest.raises(TextMatchError, match=r"data file '.*train\.csv' does not exist; check the path"):
        load_text_dataset(missing)
    with pytest.raises(TextMatchError, match=r"data file 'missing_file\.jsonl' does not exist"):
        load_text_dataset("missing_file.jsonl")


def test_unknown_suffix(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a spreadsheet")
    with pytest.raises(TextMatchError, match=r"train\.xlsx: unknown file type '\.xlsx'; use one of \[.*'\.csv'.*\]"):
        load_text_dataset(path)


def test_unreadable_file_is_a_textmatch_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(TextMatchError, match=r"cannot read '.*broken\.parquet' as a dataset"):
        _load(path, tmp_path)


# -- load_text_dataset: in-memory datasets -------------------------------------------------
def _dd():
    train = datasets.Dataset.from_dict({"text": ["a b", "c d"], "label": ["x", "y"]})
    test = datasets.Dataset.from_dict({"text": ["e f"], "label": ["x"]})
    return datasets.DatasetDict({"train": train, "test": test})


def test_datasetdict_without_split_names_its_splits():
    with pytest.raises(TextMatchError, match=r"DatasetDict with splits \['train', 'test'\]; pick one"):
        load_text_dataset(_dd())


def test_datasetdict_with_split_picks_it():
    ds = load_text_dataset(_dd(), split="test")
    assert len(ds) == 1 and ds[0]["text"] == "e f"
    assert load_text_dataset(_dd(), split="train")[1]["label"] == "y"


def test_datasetdict_with_one_split_needs_no_split():
    dd = datasets.DatasetDict({"only": datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]})})
    assert load_text_dataset(dd)[0]["text"] == "a"


def test_unknown_split_lists_the_splits():
    with pytest.raises(TextMatchError, match=r"has no split 'validation'; its splits are \['train', 'test'\]"):
        load_text_dataset(_dd(), split="validation")


def test_dataset_is_checked_for_columns():
    ds = datasets.Dataset.from_dict({"sentence": ["a"], "label": ["x"]})
    with pytest.raises(TextMatchError, match=r"the dataset has no column 'text'; its columns are \['sentence', 'label'\]"):
        load_text_dataset(ds)
    assert load_text_dataset(ds, text_column="sentence") is ds


# -- texts_and_labels ----------------------------------------------------------------------
def _classlabel_ds(labels, names=("greet", "bye", "thanks")):
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(names))})
    return datasets.Dataset.from_dict({"text": [f"text {i}" for i in range(len(labels))], "label": labels}, features=features)


def test_texts_and_labels_maps_classlabel_ints_to_names():
    texts, labels = texts_and_labels(_classlabel_ds([0, 1, 2, 1]))
    assert texts == ["text 0", "text 1", "text 2", "text 3"]
    assert labels == ["greet", "bye", "thanks", "bye"]


def test_texts_and_labels_require_all_label_names():
    ds = _classlabel_ds([0, 2, 0])  # "bye" has no example
    assert texts_and_labels(ds)[1] == ["greet", "thanks", "greet"]
    with pytest.raises(TextMatchError, match=r"label 'bye' has no examples in the support set \(1 such label"):
        texts_and_labels(ds, require_all_label_names=True)
    assert texts_and_labels(_classlabel_ds([0, 1, 2]), require_all_label_names=True)[1] == ["greet", "bye", "thanks"]


def test_texts_and_labels_plain_labels_and_datasetdict():
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [5, 7]})
    assert texts_and_labels(ds) == (["a", "b"], [5, 7])
    dd = datasets.DatasetDict({"train": ds})
    assert texts_and_labels(dd) == (["a", "b"], [5, 7])
    with pytest.raises(TextMatchError, match=r"splits \['train', 'test'\]"):
        texts_and_labels(_dd())


def test_texts_and_labels_validates_texts():
    ds = datasets.Dataset.from_dict({"text": ["a", None], "label": ["x", "y"]})
    with pytest.raises(TextMatchError, match=r"text \(column 'text', row\) 1 is missing"):
        texts_and_labels(ds)
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", None]})
    with pytest.raises(TextMatchError, match=r"label 1 is missing"):
        texts_and_labels(ds)


def test_as_text_label_lists_forms():
    assert as_text_label_lists((["a", "b"], ["x", "y"])) == (["a", "b"], ["x", "y"])
    assert as_text_label_lists({"q": ["a"], "y": ["x"]}, "q", "y") == (["a"], ["x"])
    with pytest.raises(TextMatchError, match=r"the data has no column 'label'; its columns are \['text'\]"):
        as_text_label_lists({"text": ["a"]})
