"""Passage encoding on Ray Data (a local Ray instance with 2 CPUs): the index equals the
single-process one, a killed worker is retried with nothing lost or duplicated, and an
interrupted build resumes across engines."""

from __future__ import annotations

import numpy as np
import pytest
from test_retrieval import make_corpus

from textmatch import IndexConfig, Retriever, TextMatchError
from textmatch.retrieval import ray_encoding
from textmatch.retrieval.ray_encoding import CRASH_ENV, RayEngine, read_shard, write_parquet_shard

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install textmatch[ray]`")
pytestmark = pytest.mark.stress  # starts a Ray instance and worker processes (seconds each)

QUERIES = ["rain sunny", "pizza burger", "doctor flight", "guitar album"]
CONFIG = IndexConfig(index_kind="exact", shard_size=5, bm25=False)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    control = tmp_path_factory.mktemp("ray-control") / "crash"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_ENV: str(control)}})
    yield control
    ray.shutdown()


def single_process(model, tmp_path):
    return Retriever.build(model, make_corpus(), tmp_path / "single", CONFIG, show_progress_bar=False)


def assert_same_index(a: Retriever, b: Retriever) -> None:
    assert a.passage_docs == b.passage_docs and a.meta["n_passages"] == b.meta["n_passages"]
    va, vb = np.load(a.folder / "vectors.npy"), np.load(b.folder / "vectors.npy")
    assert va.shape == vb.shape
    np.testing.assert_allclose(va, vb, atol=1e-5)
    assert [[d for d, _ in hits] for hits in a.search(QUERIES, top_k=5)] == \
        [[d for d, _ in hits] for hits in b.search(QUERIES, top_k=5)]


def test_ray_index_equals_the_single_process_index(local_ray, tiny_bert_model, tmp_path):
    built = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "ray", CONFIG, show_progress_bar=False,
                            engine=RayEngine(concurrency=2))
    assert built.last_build["shards"] == len(built.passage_docs) // 5 + (len(built.passage_docs) % 5 > 0) > 2
    report = built.last_build["ray"]
    assert report["shards"] == built.last_build["shards"] and 1 <= len(report["workers"]) <= 2
    assert all(mib > 50 for mib in report["workers"].values())  # each actor's peak resident memory
    assert_same_index(built, single_process(tiny_bert_model, tmp_path))
    assert not (tmp_path / "ray.partial").exists()  # the shards are gone once the index is whole


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(local_ray, tiny_bert_model, tmp_path):
    local_ray.write_text("2", encoding="utf-8")  # the actor that takes shard 2 dies before writing it
    try:
        built = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "ray", CONFIG, show_progress_bar=False,
                                engine=RayEngine(concurrency=2))
    finally:
        local_ray.unlink()
    crashed = local_ray.with_name(local_ray.name + ".crashed")
    assert crashed.is_file()  # a worker process really exited mid-run
    crashed.unlink()
    assert_same_index(built, single_process(tiny_bert_model, tmp_path))


def test_an_interrupted_single_process_build_resumes_on_ray(local_ray, tiny_bert_model, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = type(tiny_bert_model).encode

    def two_shards_then_fail(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the third shard
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(tiny_bert_model), "encode", two_shards_then_fail)
    with pytest.raises(KeyboardInterrupt):
        Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "idx", CONFIG, show_progress_bar=False)
    monkeypatch.setattr(type(tiny_bert_model), "encode", real)
    assert sorted(p.name for p in (tmp_path / "idx.partial").glob("shard-*")) == ["shard-000000.npy", "shard-000001.npy"]
    built = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "idx", CONFIG, show_progress_bar=False,
                            engine=RayEngine(concurrency=2))
    assert built.last_build["reused_shards"] == 2
    assert_same_index(built, single_process(tiny_bert_model, tmp_path))


def test_parquet_shards_round_trip_and_refuse_the_wrong_rows(tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "shard-000004.parquet"
    write_parquet_shard(path, 20, ["a", "a", "b"], vectors)
    np.testing.assert_array_equal(read_shard(path, 3, 20), vectors)
    with pytest.raises(TextMatchError, match="does not hold passages 21"):
        read_shard(path, 3, 21)
    assert ray_encoding.shard_path(tmp_path, 4) == path and ray_encoding.shard_path(tmp_path, 5) is None


def test_engine_settings_are_checked():
    with pytest.raises(TextMatchError, match="concurrency"):
        RayEngine(concurrency=0)
    with pytest.raises(TextMatchError, match="backend"):
        RayEngine(backend="tensorrt")
    with pytest.raises(TextMatchError, match="runs on CPUs"):
        RayEngine(backend="onnx-int8", num_gpus=1)


def test_cli_index_engine_ray(local_ray, tiny_bert_dir, tmp_path, capsys):
    from test_retrieval import write_beir

    from textmatch import cli

    beir = write_beir(tmp_path / "beir", make_corpus())
    base = ["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--no-progress", "--index-backend", "exact",
            "--shard-size", "5"]
    assert cli.main(base + ["--output", str(tmp_path / "ray"), "--engine", "ray", "--ray-concurrency", "2"]) == 0, \
        capsys.readouterr().err
    assert cli.main(base + ["--output", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    a, b = np.load(tmp_path / "ray" / "vectors.npy"), np.load(tmp_path / "local" / "vectors.npy")
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert cli.main(base + ["--output", str(tmp_path / "x"), "--ray-concurrency", "3"]) == 2
    assert "--ray-concurrency applies to --engine ray" in capsys.readouterr().err
