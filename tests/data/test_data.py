"""textmatch.data: input validation and dataset loading, with messages that name the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from textmatch import TextMatchError, load_text_dataset  # noqa: E402
from textmatch.data.loading import as_text_label_lists, texts_and_labels
from textmatch.data.validation import sorted_classes, validate_labels, validate_support, validate_texts

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
    with pytest.raises(TextMatchError, match=r"got the single string 'hello'; wrap it in a list: \['hello'\]"):
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
    with pytest.raises(TextMatchError, match=r"got the single string"):
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


# == Hugging Face datasets adapters ========================================================
from textmatch.retrieval.beir import BeirData, load_beir, read_qrels
from textmatch.data.splits import ClassSplit, class_split_from_files, filter_classes, random_class_split
from textmatch.data.sampling import sample_dataset


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SENTENCE_ROWS = [{"sentence": t, "label": y} for t, y in ROWS]


# -- load_text_dataset: column_mapping -----------------------------------------------------
def test_column_mapping_renames_a_jsonl_sentence_column(tmp_path):
    path = _write_jsonl(tmp_path / "full.jsonl", SENTENCE_ROWS)
    with pytest.raises(TextMatchError, match=r"has no column 'text'; its columns are \['sentence', 'label'\]"):
        _load(path, tmp_path)
    ds = _load(path, tmp_path, column_mapping={"sentence": "text"})
    assert isinstance(ds, datasets.Dataset) and sorted(ds.column_names) == ["label", "text"]
    assert texts_and_labels(ds) == ([t for t, _ in ROWS], [y for _, y in ROWS])


def test_column_mapping_to_custom_columns_and_identity(tmp_path):
    ds = datasets.Dataset.from_dict({"sentence": ["a", "b"], "intent": ["x", "y"]})
    got = load_text_dataset(ds, text_column="query", label_column="y", column_mapping={"sentence": "query", "intent": "y"})
    assert sorted(got.column_names) == ["query", "y"]
    same = datasets.Dataset.from_dict({"text": ["a"], "label": ["x"]})
    assert load_text_dataset(same, column_mapping={"text": "text"}) is same
    assert load_text_dataset(same, column_mapping={}) is same


def test_column_mapping_source_missing_lists_columns(tmp_path):
    path = _write_jsonl(tmp_path / "full.jsonl", SENTENCE_ROWS)
    with pytest.raises(TextMatchError, match=r"full\.jsonl has no column 'utterance' \(a key of column_mapping\); "
                                             r"its columns are \['sentence', 'label'\]"):
        _load(path, tmp_path, column_mapping={"utterance": "text"})


@pytest.mark.parametrize(
    "mapping,kwargs,pattern",
    [
        ({"sentence": "question"}, {}, r"maps 'sentence' to 'question'; a target must be the text or label column \('text' or 'label'\)"),
        ({"label": "label", "sentence": "intent"}, {}, r"maps 'sentence' to 'intent'"),
        ({"sentence": "label"}, {"label_column": None}, r"a target must be the text or label column \('text'\)"),
        ({"sentence": "text", "label": "text"}, {}, r"maps both 'sentence' and 'label' to 'text'; map one column to each"),
        (["sentence", "text"], {}, r"column_mapping must be a dict \{source_column: 'text'\|'label'\}, got list"),
    ],
)
def test_column_mapping_bad_mappings(mapping, kwargs, pattern):
    ds = datasets.Dataset.from_dict({"sentence": ["a"], "label": ["x"]})
    with pytest.raises(TextMatchError, match=pattern):
        load_text_dataset(ds, column_mapping=mapping, **kwargs)


def test_column_mapping_onto_an_existing_column_is_refused():
    ds = datasets.Dataset.from_dict({"text": ["old"], "sentence": ["new"], "label": ["x"]})
    with pytest.raises(TextMatchError, match=r"already has a column 'text', so column_mapping cannot rename 'sentence' "
                                             r"to it; drop the old column first \(dataset\.remove_columns\(\['text'\]\)\)"):
        load_text_dataset(ds, column_mapping={"sentence": "text"})
    # a swap is fine: both targets are renamed away
    swapped = load_text_dataset(
        datasets.Dataset.from_dict({"text": ["x"], "label": ["a b"]}), column_mapping={"text": "label", "label": "text"}
    )
    assert swapped[0] == {"label": "x", "text": "a b"}


def test_column_mapping_keeps_classlabel_names():
    features = datasets.Features({"utt": datasets.Value("string"), "intent": datasets.ClassLabel(names=["greet", "bye"])})
    ds = datasets.Dataset.from_dict({"utt": ["hi", "ciao", "hello"], "intent": [0, 1, 0]}, features=features)
    got = load_text_dataset(ds, column_mapping={"utt": "text", "intent": "label"})
    assert isinstance(got.features["label"], datasets.ClassLabel)
    assert texts_and_labels(got) == (["hi", "ciao", "hello"], ["greet", "bye", "greet"])


def test_missing_column_message_suggests_column_mapping(tmp_path):
    path = _write_csv(tmp_path / "other.csv", ROWS, header="text,intent")
    with pytest.raises(TextMatchError, match=r"Rename the column \(column_mapping=\{'<column>': 'label'\}\)"):
        _load(path, tmp_path)
    assert texts_and_labels(_load(path, tmp_path, column_mapping={"intent": "label"}))[1] == [y for _, y in ROWS]


# -- load_text_dataset: streaming ----------------------------------------------------------
def test_streaming_csv_is_an_iterable_dataset_checked_from_its_first_row(tmp_path):
    path = _write_csv(tmp_path / "train.csv", ROWS)
    ds = _load(path, tmp_path, streaming=True)
    assert isinstance(ds, datasets.IterableDataset)
    assert texts_and_labels(ds) == ([t for t, _ in ROWS], [y for _, y in ROWS])  # "NA"/"null" stay texts
    with pytest.raises(TextMatchError, match=r"has no column 'intent'; its columns are \['text', 'label'\]"):
        _load(path, tmp_path, streaming=True, label_column="intent")


def test_streaming_jsonl_with_column_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "full.jsonl", SENTENCE_ROWS)
    ds = _load(path, tmp_path, streaming=True, column_mapping={"sentence": "text"})
    assert isinstance(ds, datasets.IterableDataset)
    assert [row["text"] for row in ds] == [t for t, _ in ROWS]
    with pytest.raises(TextMatchError, match=r"no column 'utterance' \(a key of column_mapping\); its columns are \['sentence', 'label'\]"):
        _load(path, tmp_path, streaming=True, column_mapping={"utterance": "text"})


def test_streaming_an_in_memory_dataset_keeps_classlabel():
    ds = load_text_dataset(_classlabel_ds([2, 0, 1]), streaming=True)
    assert isinstance(ds, datasets.IterableDataset)
    assert texts_and_labels(ds)[1] == ["thanks", "greet", "bye"]
    dd = datasets.DatasetDict({"train": _classlabel_ds([0]), "test": _classlabel_ds([1])})
    assert texts_and_labels(load_text_dataset(dd, split="test", streaming=True))[1] == ["bye"]
    assert as_text_label_lists(datasets.IterableDatasetDict({"only": _classlabel_ds([1]).to_iterable_dataset()}))[1] == ["bye"]


def test_streaming_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n", encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"empty\.csv has no rows \(the stream is empty\)"):
        _load(empty, tmp_path, streaming=True)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    with pytest.raises(TextMatchError, match=r"cannot read '.*broken\.parquet' as a dataset"):
        _load(broken, tmp_path, streaming=True)


# -- sample_dataset ------------------------------------------------------------------------
def _counts_ds(counts, classlabel=False):
    """Rows "c{class} {i}" with counts[class] rows per class, classes interleaved."""
    rows = [(f"{c} {i}", c) for c, n in counts.items() for i in range(n)]
    rows.sort(key=lambda r: int(r[0].split()[1]))  # interleave classes
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    if classlabel:
        names = sorted(counts)
        features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
        return datasets.Dataset.from_dict({"text": texts, "label": [names.index(y) for y in labels]}, features=features)
    return datasets.Dataset.from_dict({"text": texts, "label": labels})


def test_sample_dataset_takes_k_per_class_reproducibly():
    ds = _counts_ds({"a": 12, "b": 9, "c": 20})
    got = sample_dataset(ds, num_samples=8, seed=1)
    assert isinstance(got, datasets.Dataset) and got.column_names == ["text", "label"]
    labels = got["label"]
    assert {c: list(labels).count(c) for c in "abc"} == {"a": 8, "b": 8, "c": 8}
    assert all(t.split()[0] == y for t, y in zip(got["text"], labels))
    assert list(got["text"]) == list(sample_dataset(ds, num_samples=8, seed=1)["text"])
    assert list(got["text"]) != list(sample_dataset(ds, num_samples=8, seed=2)["text"])
    # rows keep the dataset order, and with the same seed a smaller K is a subset of a larger K
    order = {t: i for i, t in enumerate(ds["text"])}
    assert [order[t] for t in got["text"]] == sorted(order[t] for t in got["text"])
    assert set(sample_dataset(ds, num_samples=3, seed=1)["text"]) <= set(got["text"])


def test_sample_dataset_short_class_names_it_unless_allow_fewer():
    ds = _counts_ds({"a": 12, "b": 3, "c": 5})
    with pytest.raises(TextMatchError, match=r"class 'b' has only 3 example\(s\), fewer than num_samples=8 "
                                             r"\(2 such class\(es\)\); lower num_samples or pass allow_fewer=True"):
        sample_dataset(ds, num_samples=8)
    got = sample_dataset(ds, num_samples=8, allow_fewer=True)
    assert sorted(list(got["label"]).count(c) for c in "abc") == [3, 5, 8]


def test_sample_dataset_with_classlabel_labels():
    ds = _counts_ds({"bye": 6, "greet": 2}, classlabel=True)
    with pytest.raises(TextMatchError, match=r"class 'greet' has only 2 example"):
        sample_dataset(ds, num_samples=4)
    got = sample_dataset(ds, num_samples=2, seed=0)
    assert isinstance(got.features["label"], datasets.ClassLabel)
    assert sorted(texts_and_labels(got)[1]) == ["bye", "bye", "greet", "greet"]


def test_sample_dataset_errors():
    ds = _counts_ds({"a": 3, "b": 3})
    for bad in (0, -1, 2.5, True, "8"):
        with pytest.raises(TextMatchError, match=r"num_samples must be an integer >= 1"):
            sample_dataset(ds, num_samples=bad)
    with pytest.raises(TextMatchError, match=r"has no column 'intent'; its columns are \['text', 'label'\]"):
        sample_dataset(ds, label_column="intent")
    with pytest.raises(TextMatchError, match=r"needs an in-memory datasets\.Dataset, got a streaming IterableDataset"):
        sample_dataset(ds.to_iterable_dataset())
    with pytest.raises(TextMatchError, match=r"needs a datasets\.Dataset, got list"):
        sample_dataset([("a", "x")])
    with pytest.raises(TextMatchError, match=r"splits \['train', 'test'\]; pick one"):
        sample_dataset(_dd())
    with pytest.raises(TextMatchError, match=r"label \(column 'label', row\) 1 is missing"):
        sample_dataset(datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", None]}), num_samples=1)
    with pytest.raises(TextMatchError, match=r"no rows to sample from"):
        sample_dataset(ds.select([]), num_samples=1)


# -- ClassSplit ----------------------------------------------------------------------------
def test_class_split_round_trips_through_a_dict():
    split = ClassSplit(["a", "b"], ("c",), iter(["d", "e"]))
    assert split.to_dict() == {"train": ["a", "b"], "valid": ["c"], "test": ["d", "e"]}
    assert split.classes == ["a", "b", "c", "d", "e"]
    assert ClassSplit.from_dict(json.loads(json.dumps(split.to_dict()))) == split
    assert ClassSplit.from_dict({**split.to_dict(), "note": "extra keys are ignored"}) == split
    ints = ClassSplit(np.array([1, 2]), [3], [4])
    assert ints.train == [1, 2] and all(type(c) is int for c in ints.train)


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"train": ["a", "b"], "valid": ["c"], "test": ["b", "d"]}, r"class 'b' is in both train and test \(1 shared class\(es\)\); the class splits must be disjoint"),
        ({"train": ["a"], "valid": ["a", "c"], "test": ["c"]}, r"class 'a' is in both train and valid"),
        ({"train": ["a"], "valid": [], "test": ["c"]}, r"ClassSplit\.valid is empty; every split needs at least one class"),
        ({"train": ["a", "a"], "valid": ["b"], "test": ["c"]}, r"class 'a' appears twice in ClassSplit\.train"),
        ({"train": "abc", "valid": ["b"], "test": ["c"]}, r"expected ClassSplit\.train to be a list of labels, got the single string 'abc'"),
        ({"train": ["a"], "valid": ["b"], "test": None}, r"expected ClassSplit\.test to be a list of labels, got NoneType"),
        ({"train": ["a"], "valid": ["b", None], "test": ["c"]}, r"valid class 1 is missing"),
    ],
)
def test_class_split_validation(kwargs, pattern):
    with pytest.raises(TextMatchError, match=pattern):
        ClassSplit(**kwargs)


def test_class_split_from_dict_errors():
    with pytest.raises(TextMatchError, match=r"has no key 'valid'; it needs \['train', 'valid', 'test'\], got \['train', 'validation', 'test'\]"):
        ClassSplit.from_dict({"train": ["a"], "validation": ["b"], "test": ["c"]})
    with pytest.raises(TextMatchError, match=r"must be a dict with keys \['train', 'valid', 'test'\], got list"):
        ClassSplit.from_dict([["a"], ["b"], ["c"]])


# -- class_split_from_files ----------------------------------------------------------------
def _label_files(folder, train=("a", "b"), valid=("c",), test=("d", "e")):
    folder.mkdir(parents=True, exist_ok=True)
    for name, labels in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"labels.{name}.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder


def test_class_split_from_a_folder_and_from_paths(tmp_path):
    folder = _label_files(tmp_path / "01", train=("a ", "", "b"))  # whitespace and blank lines dropped
    expected = ClassSplit(["a", "b"], ["c"], ["d", "e"])
    assert class_split_from_files(folder) == expected
    assert class_split_from_files(str(folder)) == expected
    paths = [folder / f"labels.{n}.txt" for n in ("train", "valid", "test")]
    assert class_split_from_files(paths) == expected
    assert class_split_from_files(dict(zip(("train", "valid", "test"), map(str, paths)))) == expected


def test_class_split_from_files_errors(tmp_path):
    with pytest.raises(TextMatchError, match=r"class split folder '.*nope' does not exist or is not a folder; it should hold "
                                             r"labels\.train\.txt, labels\.valid\.txt, labels\.test\.txt"):
        class_split_from_files(tmp_path / "nope")
    folder = _label_files(tmp_path / "02")
    (folder / "labels.valid.txt").unlink()
    with pytest.raises(TextMatchError, match=r"has no labels\.valid\.txt \(1 of the 3 files missing\)"):
        class_split_from_files(folder)
    (folder / "labels.valid.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"label file '.*labels\.valid\.txt' has no labels; write one label per line"):
        class_split_from_files(folder)
    _label_files(folder, valid=("c", "a"))
    with pytest.raises(TextMatchError, match=r"02: class 'a' is in both train and valid"):
        class_split_from_files(folder)
    with pytest.raises(TextMatchError, match=r"expected 3 label files \(train, valid, test\), got 2"):
        class_split_from_files([folder / "labels.train.txt", folder / "labels.test.txt"])
    with pytest.raises(TextMatchError, match=r"label file '.*missing\.txt' does not exist"):
        class_split_from_files([folder / "labels.train.txt", folder / "missing.txt", folder / "labels.test.txt"])
    with pytest.raises(TextMatchError, match=r"have no key 'test'"):
        class_split_from_files({"train": folder / "labels.train.txt", "valid": folder / "labels.valid.txt"})
    with pytest.raises(TextMatchError, match=r"expected a folder or the \(train, valid, test\) label file paths, got int"):
        class_split_from_files(3)


# -- random_class_split --------------------------------------------------------------------
def test_random_class_split_sizes_cover_and_seed():
    labels = [f"intent_{i:02d}" for i in range(20)] * 3  # a label column: duplicates merged
    split = random_class_split(labels, valid_fraction=0.2, test_fraction=0.25, seed=3)
    assert (len(split.train), len(split.valid), len(split.test)) == (11, 4, 5)
    assert sorted(split.classes) == sorted(set(labels))
    assert split.train == sorted(split.train)
    assert random_class_split(labels, 0.2, 0.25, seed=3) == split
    assert random_class_split(list(reversed(labels)), 0.2, 0.25, seed=3) == split  # only the set of classes matters
    assert random_class_split(labels, 0.2, 0.25, seed=4) != split
    tiny = random_class_split([1, 2, 3], 0.01, 0.01)
    assert (len(tiny.train), len(tiny.valid), len(tiny.test)) == (1, 1, 1)


def test_random_class_split_errors():
    with pytest.raises(TextMatchError, match=r"valid_fraction must be a number between 0 and 1 \(exclusive\), got 0"):
        random_class_split(["a", "b", "c"], valid_fraction=0)
    with pytest.raises(TextMatchError, match=r"test_fraction must be .* got 1.5"):
        random_class_split(["a", "b", "c"], test_fraction=1.5)
    with pytest.raises(TextMatchError, match=r"valid_fraction \+ test_fraction = 1 leaves no training classes"):
        random_class_split(["a", "b", "c"], 0.5, 0.5)
    with pytest.raises(TextMatchError, match=r"2 class\(es\) cannot be split into train/valid/test with at least one class each"):
        random_class_split(["a", "b", "a"])
    with pytest.raises(TextMatchError, match=r"got the single string 'abc'"):
        random_class_split("abc")


# -- filter_classes ------------------------------------------------------------------------
def test_filter_classes_keeps_rows_of_the_classes_in_order():
    ds = _counts_ds({"a": 3, "b": 2, "c": 1})
    got = filter_classes(ds, ["c", "a"])
    assert isinstance(got, datasets.Dataset)
    assert list(got["text"]) == [t for t in ds["text"] if t[0] in "ac"]
    split = ClassSplit(["a"], ["b"], ["c"])
    assert len(filter_classes(ds, split.train)) == 3 and len(filter_classes(ds, iter(split.test))) == 1


def test_filter_classes_with_classlabel_uses_names():
    ds = _counts_ds({"bye": 2, "greet": 3}, classlabel=True)
    got = filter_classes(ds, ["greet"])
    assert isinstance(got.features["label"], datasets.ClassLabel)
    assert texts_and_labels(got)[1] == ["greet"] * 3


def test_filter_classes_errors():
    ds = _counts_ds({"a": 1, "b": 1})
    with pytest.raises(TextMatchError, match=r"2 of the 3 classes have no rows in the dataset: \['z', 'y'\]; check the class "
                                             r"split against the dataset's labels \(column 'label', e\.g\. \['a', 'b'\]\)"):
        filter_classes(ds, ["z", "a", "y"])
    with pytest.raises(TextMatchError, match=r"takes one list of classes; pass split\.train"):
        filter_classes(ds, ClassSplit(["a"], ["b"], ["c"]))
    with pytest.raises(TextMatchError, match=r"got the single string 'a'"):
        filter_classes(ds, "a")
    with pytest.raises(TextMatchError, match=r"no classes given"):
        filter_classes(ds, [])
    with pytest.raises(TextMatchError, match=r"has no column 'intent'"):
        filter_classes(ds, ["a"], label_column="intent")
    with pytest.raises(TextMatchError, match=r"filter_classes needs an in-memory datasets\.Dataset"):
        filter_classes(ds.to_iterable_dataset(), ["a"])


# -- load_beir -----------------------------------------------------------------------------
def _beir(folder, corpus=None, queries=None, qrels=None):
    """A small BEIR folder; qrels is {split: tsv text}."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Alarms", "text": "set an alarm"},
        {"_id": "d2", "title": "", "text": "weather today"},
        {"_id": "d3", "title": "Music", "text": ""},
    ]
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "wake me up"}, {"_id": "q2", "text": "is it raining"}, {"_id": "q3", "text": "no qrels"},
    ]
    qrels = qrels if qrels is not None else {
        "test": "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td2\t1\nq2\td3\t0\n", "train": "q3\td3\t1\n",
    }
    _write_jsonl(folder / "corpus.jsonl", corpus)
    _write_jsonl(folder / "queries.jsonl", queries)
    for split, text in qrels.items():
        (folder / "qrels" / f"{split}.tsv").write_text(text, encoding="utf-8")
    return folder


def test_load_beir_reads_corpus_queries_and_qrels(tmp_path):
    data = load_beir(_beir(tmp_path / "ir"), cache_dir=str(tmp_path / "hf_cache"))
    assert isinstance(data, BeirData)
    assert data.corpus.column_names == ["_id", "title", "text"] and len(data.corpus) == 3
    assert data.queries.column_names == ["_id", "text"]
    assert list(data.queries["_id"]) == ["q1", "q2"]  # only queries with qrels in the split
    assert data.qrels == {"q1": {"d1": 2}, "q2": {"d2": 1, "d3": 0}}
    assert repr(data) == "BeirData(corpus=3 docs, queries=2, qrels=3 pairs)"
    train = load_beir(tmp_path / "ir", split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert list(train.queries["_id"]) == ["q3"] and train.qrels == {"q3": {"d3": 1}}


def test_load_beir_ids_become_strings_and_titles_default_to_empty(tmp_path):
    folder = _beir(
        tmp_path / "ir",
        corpus=[{"_id": 10, "text": "first"}, {"_id": 20, "text": "second"}],
        queries=[{"_id": 1, "text": "q", "metadata": {"k": "v"}}],
        qrels={"test": "1\t20\t3\n"},
    )
    for streaming in (False, True):
        data = load_beir(folder, streaming=streaming, cache_dir=str(tmp_path / "hf_cache"))
        assert data.corpus.features["_id"] == datasets.Value("string")
        assert list(data.corpus) == [{"_id": "10", "title": "", "text": "first"}, {"_id": "20", "title": "", "text": "second"}]
        assert list(data.queries) == [{"_id": "1", "text": "q"}]
        assert data.qrels == {"1": {"20": 3}}


def test_load_beir_streaming_corpus(tmp_path):
    data = load_beir(_beir(tmp_path / "ir"), streaming=True, cache_dir=str(tmp_path / "hf_cache"))
    assert isinstance(data.corpus, datasets.IterableDataset) and isinstance(data.queries, datasets.Dataset)
    assert data.corpus.column_names == ["_id", "title", "text"]
    assert [row["_id"] for row in data.corpus] == ["d1", "d2", "d3"]
    assert repr(data) == "BeirData(corpus=streamed docs, queries=2, qrels=3 pairs)"


def test_load_beir_missing_files(tmp_path):
    with pytest.raises(TextMatchError, match=r"BEIR folder '.*nope' does not exist or is not a folder; a BEIR folder holds corpus\.jsonl"):
        load_beir(tmp_path / "nope")
    folder = _beir(tmp_path / "ir")
    with pytest.raises(TextMatchError, match=r"has no qrels/dev\.tsv; the splits available are \['test', 'train'\]; pass one as split="):
        load_beir(folder, split="dev")
    for name in ("queries.jsonl", "corpus.jsonl"):
        (folder / name).unlink()
        with pytest.raises(TextMatchError, match=rf"ir has no {name}; a BEIR folder holds"):
            load_beir(folder)
    bare = tmp_path / "bare"
    _beir(bare, qrels={})
    (bare / "qrels").rmdir()
    with pytest.raises(TextMatchError, match=r"has no qrels/test\.tsv; it has no qrels/\*\.tsv files"):
        load_beir(bare)


def test_load_beir_duplicate_ids_are_counted(tmp_path):
    corpus = [{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}, {"_id": "d2", "text": "c"}, {"_id": "d2", "text": "d"}, {"_id": "d2", "text": "e"}]
    folder = _beir(tmp_path / "ir", corpus=corpus, qrels={"test": "q1\td1\t1\n"})
    for streaming in (False, True):
        with pytest.raises(TextMatchError, match=r"corpus\.jsonl has 3 duplicate _id\(s\) \(e\.g\. \['d1', 'd2'\]\); every _id must be unique"):
            load_beir(folder, streaming=streaming, cache_dir=str(tmp_path / "hf_cache"))
    folder = _beir(tmp_path / "ir2", queries=[{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}])
    with pytest.raises(TextMatchError, match=r"queries\.jsonl has 1 duplicate _id"):
        load_beir(folder, cache_dir=str(tmp_path / "hf_cache"))


def test_load_beir_unknown_ids_in_qrels_are_dropped_with_a_warning(tmp_path):
    qrels = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\nq9\td2\t1\nq8\td1\t1\nq2\tdX\t1\nq2\td2\t1\n"
    folder = _beir(tmp_path / "ir", qrels={"test": qrels})
    with pytest.warns(UserWarning, match=r"test\.tsv: dropped 3 pair\(s\) name 2 query id\(s\) not in queries\.jsonl "
                                         r"\(e\.g\. \['q9', 'q8'\]\); 1 pair\(s\) name 1 doc id\(s\) not in corpus\.jsonl"):
        data = load_beir(folder, cache_dir=str(tmp_path / "hf_cache"))
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 1}}
    folder = _beir(tmp_path / "ir2", qrels={"test": "x\ty\t1\n"})
    with pytest.warns(UserWarning), pytest.raises(TextMatchError, match=r"has no pairs naming known query and doc ids"):
        load_beir(folder, cache_dir=str(tmp_path / "hf_cache"))


def test_load_beir_bad_files(tmp_path):
    folder = _beir(tmp_path / "ir", corpus=[{"id": "d1", "text": "a"}])
    with pytest.raises(TextMatchError, match=r"corpus\.jsonl has no field '_id'; its fields are \['id', 'text'\]\. "
                                             r"Each line must be a JSON object with '_id', 'text', 'title'"):
        load_beir(folder, cache_dir=str(tmp_path / "hf_cache"))
    folder = _beir(tmp_path / "ir2")
    (folder / "corpus.jsonl").write_text("{not json\n", encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"cannot read '.*corpus\.jsonl' as a dataset"):
        load_beir(folder, cache_dir=str(tmp_path / "hf_cache"))


def test_read_qrels_formats_and_errors(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\r\n\r\nq1\td2\t-1\nq1\td1\t3\n", encoding="utf-8")  # no header, CRLF, blank line
    assert read_qrels(path) == {"q1": {"d1": 3, "d2": -1}}
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\n", encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"q\.tsv line 2: expected 3 tab-separated fields \(query-id, corpus-id, score\), got 2"):
        read_qrels(path)
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t0.5\n", encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"q\.tsv line 2: score '0\.5' is not an integer"):
        read_qrels(path)


# -- the benchmark data in ../shared/data (read at run time, never copied) --------------------
from conftest import SHARED_DATA  # noqa: E402


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


def _label_set(ds, label_column="label"):
    return set(texts_and_labels(ds, label_column=label_column)[1])


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "relpath,rows",
    [("train.csv", 10003), ("test.csv", 3080), ("cpft/train.csv", 8622), ("cpft/valid.csv", 1540),
     ("cpft/test.csv", 3080), ("cpft/train_5.csv", 385), ("cpft/train_10.csv", 770)],
)
def test_shared_banking77_csvs(relpath, rows, hf_cache):
    ds = load_text_dataset(SHARED_DATA / "banking77" / relpath, cache_dir=hf_cache)
    assert ds.column_names == ["text", "label"] and len(ds) == rows
    assert len(_label_set(ds)) == 77


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "name,rows,n_labels",
    [("train.csv", 15000, 150), ("valid.csv", 3000, 150), ("test.csv", 4500, 150),
     ("oos_train.csv", 100, 1), ("oos_valid.csv", 100, 1), ("oos_test.csv", 1000, 1)],
)
def test_shared_clinc150_csvs(name, rows, n_labels, hf_cache):
    ds = load_text_dataset(SHARED_DATA / "clinc150" / name, cache_dir=hf_cache)
    assert len(ds) == rows
    labels = _label_set(ds)
    assert len(labels) == n_labels and (labels == {"oos"}) == name.startswith("oos")


@pytest.mark.shared_data
def test_shared_protaugment_banking77_full_and_class_splits(hf_cache):
    root = SHARED_DATA / "banking77" / "protaugment"
    full = load_text_dataset(root / "full.jsonl", column_mapping={"sentence": "text"}, cache_dir=hf_cache)
    assert len(full) == 13083 and len(_label_set(full)) == 77
    rows = {"01": (4336, 4085, 4662), "02": (4173, 4398, 4512), "03": (4309, 4164, 4610),
            "04": (4157, 4335, 4591), "05": (4232, 4215, 4636)}  # from the data README
    for nn, expected in rows.items():
        split = class_split_from_files(root / "few_shot" / nn)
        assert (len(split.train), len(split.valid), len(split.test)) == (25, 25, 27)
        assert set(split.classes) == _label_set(full)
        assert tuple(len(filter_classes(full, c)) for c in (split.train, split.valid, split.test)) == expected
    train = filter_classes(full, class_split_from_files(root / "few_shot" / "01").train)
    assert len(sample_dataset(train, num_samples=10, seed=0)) == 250


@pytest.mark.shared_data
def test_shared_protaugment_clinc150_streaming_and_class_split(hf_cache):
    root = SHARED_DATA / "clinc150" / "protaugment"
    full = load_text_dataset(root / "full.jsonl", column_mapping={"sentence": "text"}, cache_dir=hf_cache)
    assert len(full) == 22500 and len(_label_set(full)) == 150
    split = class_split_from_files(root / "few_shot" / "01")
    assert (len(split.train), len(split.valid), len(split.test)) == (50, 50, 50)
    assert len(filter_classes(full, split.valid)) == 7500
    stream = load_text_dataset(root / "full.jsonl", column_mapping={"sentence": "text"}, streaming=True)
    assert isinstance(stream, datasets.IterableDataset) and {"text", "label"} <= set(stream.column_names)
    assert sum(1 for _ in stream) == 22500


@pytest.mark.shared_data
def test_shared_beir_sets(hf_cache, recwarn):
    scifact = load_beir(SHARED_DATA / "scifact", cache_dir=hf_cache)
    assert len(scifact.corpus) == 5183 and scifact.corpus.column_names == ["_id", "title", "text"]
    assert len(scifact.queries) == 300 and sum(map(len, scifact.qrels.values())) == 339
    train = load_beir(SHARED_DATA / "scifact", split="train", cache_dir=hf_cache)
    assert len(train.queries) == 809 and sum(map(len, train.qrels.values())) == 919
    cranfield = load_beir(SHARED_DATA / "cranfield", cache_dir=hf_cache)
    assert len(cranfield.corpus) == 1400 and len(cranfield.queries) == 225
    assert sum(map(len, cranfield.qrels.values())) == 1612
    assert {s for docs in cranfield.qrels.values() for s in docs.values()} == {1, 2, 3, 4}
    streamed = load_beir(SHARED_DATA / "cranfield", streaming=True)
    assert isinstance(streamed.corpus, datasets.IterableDataset) and streamed.qrels == cranfield.qrels
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]  # every qrels id is known


@pytest.mark.shared_data
def test_shared_stsb_test_with_other_columns(hf_cache):
    ds = load_text_dataset(SHARED_DATA / "stsb" / "test.csv", text_column="sentence1", label_column="score", cache_dir=hf_cache)
    assert len(ds) == 1379
    texts, scores = texts_and_labels(ds, text_column="sentence1", label_column="score")
    assert len(texts) == 1379 and all(0 <= s <= 5 for s in scores)
