"""A corpus cut into input blocks (the Ray engine's unit): read one after the other, the blocks
give exactly the documents read_corpus streams, for every kind of source and block size, and
a JSONL file cut at any bytes loses and repeats no line. No Ray needed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_retrieval import make_corpus

from textmatch import TextMatchError
from textmatch.retrieval.corpus import read_corpus
from textmatch.retrieval.corpus_blocks import CorpusBlock, plan_blocks, read_block


def documents() -> list[dict[str, str]]:
    docs = make_corpus()
    docs.insert(3, {"_id": "empty", "title": "", "text": ""})
    docs.append({"_id": "7", "title": "ünïcode, \"quoted\"\nand a new line", "text": "a, b; c\td"})
    return docs


def write_source(tmp_path, kind, docs):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    if kind == "jsonl":
        path = tmp_path / "c.jsonl"
        path.write_text("\n".join(json.dumps(d) for d in docs) + "\n\n", encoding="utf-8")  # a blank line at the end
        return path
    if kind == "parquet":
        path = tmp_path / "c.parquet"
        pq.write_table(pa.Table.from_pylist(docs), path, row_group_size=3)
        return path
    if kind in ("csv", "tsv"):
        path = tmp_path / f"c.{kind}"
        datasets.Dataset.from_list(docs).to_csv(str(path), index=False, sep="," if kind == "csv" else "\t")
        return path
    if kind == "json":
        path = tmp_path / "c.json"
        path.write_text(json.dumps(docs), encoding="utf-8")
        return path
    if kind == "folder":
        folder = tmp_path / "files"
        folder.mkdir()
        (folder / "1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs[:5]), encoding="utf-8")
        pq.write_table(pa.Table.from_pylist(docs[5:]), folder / "2.parquet", row_group_size=4)
        return folder
    if kind == "texts":
        folder = tmp_path / "notes"
        (folder / "sub").mkdir(parents=True)
        for i, d in enumerate(docs):
            where = folder / "sub" if i % 3 else folder
            (where / f"{d['_id']}.md").write_text(f"# {d['title']}\n{d['text']}", encoding="utf-8")
        return folder
    if kind == "list":
        return docs
    if kind == "memory-dataset":
        return datasets.Dataset.from_list(docs)
    datasets.Dataset.from_list(docs).save_to_disk(str(tmp_path / "saved"))
    return datasets.load_from_disk(str(tmp_path / "saved"))


KINDS = ["jsonl", "parquet", "csv", "tsv", "json", "folder", "texts", "list", "memory-dataset", "saved-dataset"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block_size", [1, 2, 5, 1000])
def test_blocks_in_order_are_the_streamed_corpus(tmp_path, kind, block_size):
    source = write_source(tmp_path, kind, documents())
    plan = plan_blocks(source, block_size)
    assert [b.number for b in plan.blocks] == list(range(len(plan.blocks)))
    read = [doc for block in plan.blocks for doc in read_block(block)]
    assert read == list(read_corpus(source))
    if block_size == 1 and kind not in ("jsonl", "folder"):  # row-counted kinds: one document per block
        assert len(plan.blocks) == len(read)
    assert plan_blocks(source, block_size).digest == plan.digest  # the same corpus, the same plan


def test_a_changed_file_changes_the_plan(tmp_path):
    source = write_source(tmp_path, "jsonl", documents())
    before = plan_blocks(source, 4).digest
    with open(source, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "new", "text": "one more"}) + "\n")
    assert plan_blocks(source, 4).digest != before
    assert plan_blocks(source, 5).digest != plan_blocks(source, 4).digest


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=5000), max_size=12))
def test_jsonl_cut_at_any_bytes_loses_and_repeats_no_line(tmp_path_factory, cuts):
    path = tmp_path_factory.mktemp("cut") / "c.jsonl"
    docs = [{"_id": f"d{i}", "text": "x" * (i * 7 % 50)} for i in range(60)]
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    size = path.stat().st_size
    bounds = sorted({0, size, *(c % size for c in cuts)})
    blocks = [CorpusBlock(i, "lines", str(path), lo, hi) for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]))]
    read = [d["_id"] for block in blocks for d in read_block(block)]
    assert read == [d["_id"] for d in docs]


def test_jsonl_blocks_are_about_block_size_lines(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"_id": str(i), "text": "words " * 10}) + "\n" for i in range(1000)))
    sizes = [len(read_block(b)) for b in plan_blocks(path, 100).blocks]
    assert sum(sizes) == 1000 and len(sizes) == 10 and all(95 <= n <= 105 for n in sizes)


def test_what_cannot_be_cut_is_refused_clearly(tmp_path):
    import datasets

    stream = datasets.Dataset.from_list(documents()).to_iterable_dataset()
    with pytest.raises(TextMatchError, match="cannot cut a streamed dataset.*Parquet"):
        plan_blocks(stream)
    with pytest.raises(TextMatchError, match="does not exist"):
        plan_blocks(tmp_path / "missing.jsonl")
    with pytest.raises(TextMatchError, match="block_size must be a positive integer"):
        plan_blocks(documents(), 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextMatchError, match="holds no data files"):
        plan_blocks(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": broken}\n[1, 2]\n', encoding="utf-8")
    (block,) = plan_blocks(bad).blocks
    with pytest.raises(TextMatchError, match=r"bad.jsonl byte 29: not a JSON line"):
        read_block(block)
    bad.write_text('{"_id": "a", "body": "no text"}\n', encoding="utf-8")
    with pytest.raises(TextMatchError, match=r"document at byte 0 of bad.jsonl has no 'text' field.*--text-column"):
        read_block(plan_blocks(bad).blocks[0])
