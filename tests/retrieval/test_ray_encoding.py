"""Corpus encoding on Ray Data (a local Ray instance with 2 CPUs): the corpus read as a Ray
dataset of input blocks, split and encoded by actors. The index equals the single-process one
for every kind of source, a killed worker is retried with nothing lost or duplicated, and a
rerun skips the blocks already on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_retrieval import make_corpus

from textmatch import IndexConfig, Retriever, TextMatchError
from textmatch.retrieval.encoded_shards import partial_dir
from textmatch.retrieval.ray_encoding import CRASH_ENV, RayEngine, block_path, encode_corpus

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install textmatch[ray]`")
pytestmark = pytest.mark.stress  # starts a Ray instance and worker processes (seconds each)

QUERIES = ["rain sunny", "pizza burger", "doctor flight", "guitar album"]
CONFIG = IndexConfig(index_kind="exact", passage_tokens=16, passage_overlap=4, bm25=False)
ENGINE = RayEngine(concurrency=2, block_size=3)


def corpus() -> list[dict[str, str]]:
    """make_corpus plus documents long enough for several passages, and one without text."""
    docs = make_corpus()
    words = " ".join(d["text"] for d in docs[:6])
    docs.insert(4, {"_id": "long-1", "title": "a long one", "text": words})
    docs.insert(9, {"_id": "empty", "title": "", "text": "   "})
    docs.append({"_id": "long-2", "title": "", "text": words + " " + words})
    return docs


def write_jsonl(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    control = tmp_path_factory.mktemp("ray-control") / "crash"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_ENV: str(control)}})
    yield control
    ray.shutdown()


def build(model, source, folder, engine=None):
    with pytest.warns(UserWarning, match="skipped 1 document"):
        return Retriever.build(model, source, folder, CONFIG, show_progress_bar=False, engine=engine)


def assert_same_index(a: Retriever, b: Retriever) -> None:
    """Same passages in the same order, vectors to float tolerance, same top-k documents."""
    assert a.passage_docs == b.passage_docs and a.meta["n_passages"] == b.meta["n_passages"]
    assert (a.folder / "passages.jsonl").read_text() == (b.folder / "passages.jsonl").read_text()
    va, vb = np.load(a.folder / "vectors.npy"), np.load(b.folder / "vectors.npy")
    assert va.shape == vb.shape
    np.testing.assert_allclose(va, vb, atol=1e-5)
    hits_a, hits_b = a.search(QUERIES, top_k=5), b.search(QUERIES, top_k=5)
    assert [[d for d, _ in hits] for hits in hits_a] == [[d for d, _ in hits] for hits in hits_b]
    np.testing.assert_allclose([[s for _, s in hits] for hits in hits_a], [[s for _, s in hits] for hits in hits_b],
                               atol=1e-5)


def test_ray_index_equals_the_single_process_index(local_ray, tiny_bert_model, tmp_path):
    source = write_jsonl(tmp_path / "corpus.jsonl", corpus())
    built = build(tiny_bert_model, source, tmp_path / "ray", ENGINE)
    local = build(tiny_bert_model, source, tmp_path / "local")
    assert len(local.passage_docs) > len(corpus())  # the long documents were split
    assert built.last_build["blocks"] > 3 and built.last_build["reused_blocks"] == 0
    report = built.last_build["ray"]
    assert report["encoded_blocks"] == built.last_build["blocks"] and 1 <= len(report["workers"]) <= 2
    assert all(mib > 50 for mib in report["workers"].values())  # each actor's peak resident memory
    assert_same_index(built, local)
    assert not partial_dir(tmp_path / "ray").exists()  # the block shards are gone once the index is whole


def test_files_of_every_format_and_datasets_give_the_single_process_index(local_ray, tiny_bert_model, tmp_path):
    """A folder of JSONL, Parquet (blocks cut across row groups) and CSV files; a datasets.Dataset
    saved on disk, whose blocks the workers read by reference to its Arrow files. (Text folders
    and in-memory lists: tests/retrieval/test_corpus_blocks.py, without Ray.)"""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    docs = corpus()
    files = tmp_path / "files"
    files.mkdir()
    write_jsonl(files / "a.jsonl", docs[:7])
    pq.write_table(pa.Table.from_pylist(docs[7:20]), files / "b.parquet", row_group_size=4)
    datasets.Dataset.from_list(docs[20:]).to_csv(str(files / "c.csv"), index=False)
    assert_same_index(build(tiny_bert_model, files, tmp_path / "ray", ENGINE),
                      build(tiny_bert_model, files, tmp_path / "local"))
    datasets.Dataset.from_list(docs).save_to_disk(str(tmp_path / "saved"))
    saved = datasets.load_from_disk(str(tmp_path / "saved"))
    assert_same_index(build(tiny_bert_model, saved, tmp_path / "ray-ds", ENGINE),
                      build(tiny_bert_model, saved, tmp_path / "local-ds"))


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(local_ray, tiny_bert_model, tmp_path):
    source = write_jsonl(tmp_path / "corpus.jsonl", corpus())
    local_ray.write_text("2", encoding="utf-8")  # the actor that takes input block 2 dies before writing it
    try:
        built = build(tiny_bert_model, source, tmp_path / "ray", ENGINE)
    finally:
        local_ray.unlink()
    crashed = local_ray.with_name(local_ray.name + ".crashed")
    assert crashed.is_file()  # a worker process really exited mid-run
    crashed.unlink()
    assert_same_index(built, build(tiny_bert_model, source, tmp_path / "local"))


def test_a_rerun_skips_the_blocks_on_disk(local_ray, tiny_bert_model, tmp_path):
    source = write_jsonl(tmp_path / "corpus.jsonl", corpus())
    folder = tmp_path / "idx"
    with pytest.warns(UserWarning):  # as an interrupted build leaves it: every block but two on disk
        first = encode_corpus(tiny_bert_model, source, folder, 16, 4, 32, _fingerprint(tiny_bert_model), ENGINE)
    n = first.report["blocks"]
    block_path(partial_dir(folder), 1).unlink()
    block_path(partial_dir(folder), n - 1).unlink()
    built = build(tiny_bert_model, source, folder, ENGINE)
    assert built.last_build["reused_blocks"] == n - 2 and built.last_build["ray"]["encoded_blocks"] == 2
    assert_same_index(built, build(tiny_bert_model, source, tmp_path / "local"))


def _fingerprint(model):
    from textmatch.retrieval.retriever import model_fingerprint

    return model_fingerprint(model)


def test_errors_from_the_workers_reach_the_user_in_one_line(local_ray, tiny_bert_model, tmp_path):
    docs = corpus()
    bad = write_jsonl(tmp_path / "bad.jsonl", docs[:8] + [{"id": "x", "body": "no text column"}] + docs[8:])
    with pytest.raises(TextMatchError, match=r"has no 'text' field.*--text-column"):
        Retriever.build(tiny_bert_model, bad, tmp_path / "a", CONFIG, show_progress_bar=False, engine=ENGINE)
    twice = write_jsonl(tmp_path / "twice.jsonl", docs + [docs[0]])
    with pytest.raises(TextMatchError, match="appears twice"):
        Retriever.build(tiny_bert_model, twice, tmp_path / "b", CONFIG, show_progress_bar=False, engine=ENGINE)


def test_add_on_ray_appends_like_the_single_process_add(local_ray, tiny_bert_model, tmp_path):
    docs = corpus()
    first, more = write_jsonl(tmp_path / "a.jsonl", docs[:10]), write_jsonl(tmp_path / "b.jsonl", docs[10:])
    config = IndexConfig(index_kind="exact", passage_tokens=16, passage_overlap=4, bm25=True)
    with pytest.warns(UserWarning, match="skipped 1 document"):
        ray_index = Retriever.build(tiny_bert_model, first, tmp_path / "ray", config, show_progress_bar=False,
                                    engine=ENGINE)
    with pytest.warns(UserWarning, match="skipped 1 document"):
        local = Retriever.build(tiny_bert_model, first, tmp_path / "local", config, show_progress_bar=False)
    ray_index.add(more, show_progress_bar=False, engine=ENGINE)
    local.add(more, show_progress_bar=False)
    assert_same_index(Retriever.load(tmp_path / "ray", tiny_bert_model), Retriever.load(tmp_path / "local", tiny_bert_model))
    with pytest.raises(TextMatchError, match="appears twice"):
        ray_index.add(first, show_progress_bar=False, engine=ENGINE)


def test_engine_settings_are_checked():
    with pytest.raises(TextMatchError, match="concurrency"):
        RayEngine(concurrency=0)
    with pytest.raises(TextMatchError, match="block_size"):
        RayEngine(block_size=0)
    with pytest.raises(TextMatchError, match="backend"):
        RayEngine(backend="tensorrt")
    with pytest.raises(TextMatchError, match="runs on CPUs"):
        RayEngine(backend="onnx-int8", num_gpus=1)


def test_cli_index_engine_ray_int8(local_ray, tiny_bert_dir, tmp_path, capsys):
    """The int8 backend on both engines (the actors open the one export made before they start)."""
    pytest.importorskip("onnxruntime")
    from textmatch import cli

    source = write_jsonl(tmp_path / "corpus.jsonl", make_corpus())
    base = ["index", "--model", str(tiny_bert_dir), "--corpus", str(source), "--no-progress", "--index-backend", "exact",
            "--backend", "onnx-int8", "--threads", "1"]
    assert cli.main(base + ["--output", str(tmp_path / "ray"), "--engine", "ray", "--ray-concurrency", "2",
                            "--block-size", "4"]) == 0, capsys.readouterr().err
    assert cli.main(base + ["--output", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    a, b = np.load(tmp_path / "ray" / "vectors.npy"), np.load(tmp_path / "local" / "vectors.npy")
    # int8 is dynamic quantisation: activations are scaled per batch, and the engines batch differently
    np.testing.assert_allclose(a, b, atol=3e-4)
    assert cli.main(base + ["--output", str(tmp_path / "x"), "--block-size", "3"]) == 2
    assert "--block-size applies to --engine ray" in capsys.readouterr().err
