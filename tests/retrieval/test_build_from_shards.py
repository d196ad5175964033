"""An index is built from the encoding shards on disk, one at a time: EncodedShards against
naive slicing, and an IVF index trained on a sample of the shards then filled shard by shard."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TOPICS
from textmatch import IndexConfig, Retriever
from textmatch.retrieval.encoded_shards import EncodedShards
from textmatch.retrieval.retriever import passage_moments

pytest.importorskip("faiss")


def write_shards(folder, n=23, size=5, dim=4):
    folder.mkdir()
    data = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    for s in range(0, n, size):
        np.save(folder / f"shard-{s // size:06d}.npy", data[s : s + size])
    return data


@pytest.mark.parametrize("count", [1, 2, 3, 7, 23, 40])
def test_groups_cover_every_passage_once_in_order(tmp_path, count):
    data = write_shards(tmp_path / "p")
    encoded = EncodedShards.uniform(tmp_path / "p", 23, 5)
    groups = list(encoded.groups(count))
    assert len(groups) == min(count, 23)
    assert [first for first, _ in groups] == np.cumsum([0] + [len(g) for _, g in groups[:-1]]).tolist()
    np.testing.assert_array_equal(np.concatenate([g for _, g in groups]), data)
    assert max(len(g) for _, g in groups) - min(len(g) for _, g in groups) <= 1


def test_iter_and_sample(tmp_path):
    data = write_shards(tmp_path / "p")
    encoded = EncodedShards.uniform(tmp_path / "p", 23, 5)
    np.testing.assert_array_equal(np.concatenate([e for _, e in encoded.iter()]), data)
    for size in (1, 4, 10, 23, 100):
        want = data[np.unique(np.linspace(0, 22, min(size, 23)).astype(np.int64))]
        np.testing.assert_array_equal(encoded.sample(size), want)
    stats = sum(passage_moments(e) for _, e in encoded.iter())
    np.testing.assert_allclose(stats, passage_moments(data))


def corpus(n: int = 420) -> list[dict[str, str]]:
    words = [w for ws in TOPICS.values() for w in ws]
    rng = np.random.default_rng(5)
    return [{"_id": f"d{i:04d}", "title": "", "text": " ".join(rng.choice(words, 5))} for i in range(n)]


def test_ivfflat_index_built_from_small_shards_searches_like_exact(tiny_bert_model, tmp_path):
    queries = ["rain sunny forecast", "pizza burger", "doctor flight ticket"]
    exact = Retriever.build(tiny_bert_model, corpus(), tmp_path / "exact", IndexConfig(index_kind="exact", bm25=False),
                            show_progress_bar=False)
    ivf = Retriever.build(tiny_bert_model, corpus(), tmp_path / "ivf",
                          IndexConfig(index_kind="ivfflat", bm25=False, shard_size=64), show_progress_bar=False)
    assert ivf.meta["vector_index"]["kind"] == "ivfflat" and ivf.last_build["shards"] == 7
    nlist = ivf.meta["vector_index"]["options"]["nlist"]
    assert nlist == 10  # from the 420 passages, not from the training sample
    ivf.vectors.nprobe = nlist  # every list: exact scores
    got, want = ivf.search(queries, top_k=10), exact.search(queries, top_k=10)
    for g, w in zip(got, want):
        assert [d for d, _ in g] == [d for d, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "ivf" / "passage_stats.npy"),
                               np.load(tmp_path / "exact" / "passage_stats.npy"), atol=1e-6)


def test_ivfpq_rerank_from_the_index_config(tiny_bert_model, tmp_path):
    from textmatch import TextMatchError

    with pytest.raises(TextMatchError, match="ivfpq"):
        IndexConfig(index_kind="hnsw", rerank=4)
    built = Retriever.build(tiny_bert_model, corpus(), tmp_path / "pq",
                            IndexConfig(index_kind="ivfpq", bm25=False, shard_size=100, rerank=8), show_progress_bar=False)
    assert built.meta["vector_index"]["options"]["rerank"] == 8 and (tmp_path / "pq" / "vectors_fp16.npy").is_file()
    loaded = Retriever.load(tmp_path / "pq", model=tiny_bert_model)
    assert loaded.search(["rain sunny forecast"], top_k=5) == built.search(["rain sunny forecast"], top_k=5)
