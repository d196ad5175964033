"""Sharded search on Ray (a local Ray instance with 2 CPUs): each shard held by an actor in a
process of its own, all searched at once; the merged results equal the one-process sharded
search and the unsharded exact search, ties included."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_retrieval import make_corpus
from test_sharded_index import build, tied_vectors

from textmatch import IndexConfig, Retriever, TextMatchError
from textmatch.retrieval.ray_encoding import RayEngine
from textmatch.retrieval.ray_search import RayShardedIndex, load_on_ray
from textmatch.retrieval.vector_index import ExactIndex

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install textmatch[ray]`")
pytest.importorskip("faiss")
pytestmark = pytest.mark.stress  # starts a Ray instance and actor processes (seconds each)

ENGINE = RayEngine(num_cpus=0.5)  # 4 shard actors on the 2 CPUs
QUERIES = ["rain sunny", "pizza burger", "doctor flight", "guitar album", "please today"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_actors_search_like_the_local_shards_ties_included(local_ray, tmp_path, kind):
    vectors, ids = tied_vectors()
    local = build(kind, vectors, ids, [7, 13, 40, 60])
    local.save(tmp_path)
    served = load_on_ray(tmp_path, local.meta(), ENGINE)
    assert isinstance(served, RayShardedIndex) and len(served.actors) == 4
    pids = {w["pid"] for w in served.workers}
    assert len(pids) == 4 and os.getpid() not in pids  # one process per shard, none of them this one
    assert sorted(w["ntotal"] for w in served.workers) == [7, 13, 40, 60]
    whole = ExactIndex(vectors.shape[1])
    whole.add(vectors, ids)
    queries = np.concatenate([vectors[::9], np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)])
    for k in (1, 3, 4, 10, 120, 500):
        got, want = served.search(queries, k), local.search(queries, k)
        np.testing.assert_array_equal(got[0], want[0])
        assert got[1] == want[1], k
        if kind == "exact":
            assert got[1] == whole.search(queries, k)[1], k  # the unsharded exact search's ids, ties at the cut too
    with pytest.raises(TextMatchError, match="read-only"):
        served.add(vectors[:1], ["new"])


def test_a_retriever_searches_its_shards_on_ray(local_ray, tiny_bert_model, tmp_path):
    config = IndexConfig(index_kind="exact", index_shards=3)
    docs = make_corpus() + [dict(d, _id=d["_id"] + "-copy") for d in make_corpus()]  # equal vectors: ties
    Retriever.build(tiny_bert_model, docs, tmp_path / "idx", config, show_progress_bar=False)
    one = Retriever.build(tiny_bert_model, docs, tmp_path / "one", IndexConfig(index_kind="exact"),
                          show_progress_bar=False)
    local = Retriever.load(tmp_path / "idx", tiny_bert_model)
    served = Retriever.load(tmp_path / "idx", tiny_bert_model, engine=ENGINE)
    assert isinstance(served.vectors, RayShardedIndex)
    for mode in ("dense", "hybrid"):
        for k in (1, 4, 100):
            got = served.search(QUERIES, top_k=k, mode=mode)
            assert got == local.search(QUERIES, top_k=k, mode=mode) == one.search(QUERIES, top_k=k, mode=mode)


def test_what_cannot_be_served_is_refused_clearly(local_ray, tiny_bert_model, tmp_path):
    Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "one", IndexConfig(index_kind="exact"),
                    show_progress_bar=False)
    with pytest.raises(TextMatchError, match="needs an index built in shards.*--index-shards"):
        Retriever.load(tmp_path / "one", tiny_bert_model, engine=ENGINE)
    Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "idx", IndexConfig(index_kind="exact", index_shards=3),
                    show_progress_bar=False)
    with pytest.raises(TextMatchError, match=r"3 shards x 1 CPUs per actor need more than the 2 CPUs.*--ray-num-cpus 0.67"):
        Retriever.load(tmp_path / "idx", tiny_bert_model, engine=RayEngine(num_cpus=1))


def test_cli_search_engine_ray(local_ray, tiny_bert_dir, tmp_path, capsys):
    from test_retrieval import write_beir

    from textmatch import cli

    beir = write_beir(tmp_path / "beir", make_corpus())
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--output", str(tmp_path / "idx"),
                     "--no-progress", "--index-backend", "exact", "--index-shards", "2"]) == 0
    capsys.readouterr()
    search = ["search", "--index", str(tmp_path / "idx"), "--model", str(tiny_bert_dir), "--json", *QUERIES]
    assert cli.main(search) == 0
    local = json.loads(capsys.readouterr().out)
    assert cli.main(search + ["--engine", "ray", "--ray-num-cpus", "0.5"]) == 0
    assert json.loads(capsys.readouterr().out) == local
