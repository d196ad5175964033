"""IVF indexes trained on a sample and filled shard by shard; IVF-PQ candidates re-scored with
the stored half-precision vectors (rerank)."""

from __future__ import annotations

import numpy as np
import pytest

from textmatch import TextMatchError
from textmatch.retrieval.vector_index import ExactIndex, FaissIndex, load_index, make_index

faiss = pytest.importorskip("faiss")


def clustered(n: int = 6000, dim: int = 32, centres: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around `centres` random centres: structure an IVF index can use."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + 0.35 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at(k: int, got: list[list[str]], want: list[list[str]]) -> float:
    return float(np.mean([len(set(g[:k]) & set(w[:k])) / k for g, w in zip(got, want)]))


@pytest.fixture(scope="module")
def data():
    vectors = clustered()
    ids = [f"p{i}" for i in range(len(vectors))]
    queries = clustered(200, seed=1)
    exact = ExactIndex(vectors.shape[1])
    exact.add(vectors, ids)
    return vectors, ids, queries, exact.search(queries, 10)[1]


def fill_in_shards(index: FaissIndex, vectors: np.ndarray, ids: list[str], shards: int = 4) -> FaissIndex:
    sample = vectors[np.linspace(0, len(vectors) - 1, 2000).astype(int)]
    index.train(sample)
    for part in np.array_split(np.arange(len(vectors)), shards):
        index.add(vectors[part], [ids[i] for i in part])
    return index


def test_ivfflat_trained_on_a_sample_and_filled_by_shards_searches_exactly_with_every_list(data):
    vectors, ids, queries, want = data
    index = fill_in_shards(FaissIndex(32, kind="ivfflat", nlist=32, nprobe=32), vectors, ids)
    assert index.ntotal == len(vectors)
    assert recall_at(10, index.search(queries, 10)[1], want) == 1.0  # every list searched: exact
    index.nprobe = 4
    assert 0.8 < recall_at(10, index.search(queries, 10)[1], want) < 1.0 + 1e-9


def test_rerank_lifts_ivfpq_recall_to_the_lists_exact_search(data, tmp_path):
    vectors, ids, queries, want = data
    plain = fill_in_shards(FaissIndex(32, kind="ivfpq", nlist=32, nprobe=32, pq_m=8), vectors, ids)
    reranked = fill_in_shards(FaissIndex(32, kind="ivfpq", nlist=32, nprobe=32, pq_m=8, rerank=10), vectors, ids)
    r_plain = recall_at(10, plain.search(queries, 10)[1], want)
    r_rerank = recall_at(10, reranked.search(queries, 10)[1], want)
    assert r_rerank >= 0.97 and r_rerank > r_plain + 0.05, (r_plain, r_rerank)
    scores, found = reranked.search(queries[:3], 10)
    for row, row_ids in enumerate(found):  # re-scored exactly (fp16 vectors): the true inner products
        true = np.array([vectors[int(d[1:])] @ queries[row] for d in row_ids], dtype=np.float32)
        np.testing.assert_allclose(scores[row], true, atol=2e-3)
    reranked.save(tmp_path)
    loaded = load_index(tmp_path, reranked.meta())
    assert loaded.search(queries, 10)[1] == reranked.search(queries, 10)[1]
    (tmp_path / "vectors_fp16.npy").unlink()
    with pytest.raises(TextMatchError, match="vectors_fp16.npy"):
        load_index(tmp_path, reranked.meta())


def test_ivf_options_are_checked(data):
    vectors, ids, _, _ = data
    with pytest.raises(TextMatchError, match="rerank"):
        FaissIndex(32, kind="hnsw", rerank=4)
    index = FaissIndex(32, kind="ivfflat", nlist=8)
    with pytest.raises(TextMatchError, match="at least"):
        index.train(vectors[:20])
    index.train(vectors[:1000])
    with pytest.raises(TextMatchError, match="trained already"):
        index.train(vectors[:1000])
    with pytest.raises(TextMatchError, match="needs no training"):
        FaissIndex(32, kind="flat").train(vectors[:100])
    assert make_index("ivfflat", 32).kind == "ivfflat"
