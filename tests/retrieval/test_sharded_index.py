"""ShardedIndex: search over shards equals the unsharded exact search, ties included, and the
shards save and load as one index."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from textmatch import TextMatchError
from textmatch.retrieval.sharded_index import ShardedIndex
from textmatch.retrieval.vector_index import ExactIndex, load_index, merge_top_k

faiss = pytest.importorskip("faiss")


def tied_vectors(n: int = 120, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Unit vectors with many exact duplicates (equal scores for every query), ids shuffled so
    that the order of addition is not the order of the ids."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n // 4, dim)).astype(np.float32)
    vectors = np.repeat(base, 4, axis=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"doc-{i:04d}" for i in range(n)]
    random.Random(seed).shuffle(ids)
    return vectors, ids


def build(kind: str, vectors: np.ndarray, ids: list[str], sizes: list[int]) -> ShardedIndex:
    index = ShardedIndex(vectors.shape[1], shard_kind=kind)
    start = 0
    for size in sizes:
        index.add(vectors[start : start + size], ids[start : start + size])
        start += size
    return index


@pytest.mark.parametrize("kind", ["exact", "flat"])
@pytest.mark.parametrize("sizes", [[120], [50, 50, 20], [7, 13, 40, 60], [30] * 4])
def test_sharded_search_equals_unsharded_exact_search_ties_included(kind, sizes):
    """Exact shards: the same ids as the unsharded exact search, ties at the cut included.
    FAISS flat shards: the same scores (which of several candidates tied at the k-th place a
    FAISS shard returns is FAISS's choice, as in an unsharded FAISS index)."""
    vectors, ids = tied_vectors()
    whole = ExactIndex(vectors.shape[1])
    whole.add(vectors, ids)
    sharded = build(kind, vectors, ids, sizes)
    queries = np.concatenate([vectors[::9], np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)])
    for k in (1, 3, 4, 10, 120, 500):
        want_scores, want_ids = whole.search(queries, k)
        got_scores, got_ids = sharded.search(queries, k)
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
        if kind == "exact":
            assert got_ids == want_ids, (k, sizes)
        else:  # the ids agree wherever the score is not tied at the cut
            for row, (g, w) in enumerate(zip(got_ids, want_ids)):
                cut = want_scores[row, -1]
                assert [d for d, s in zip(g, got_scores[row]) if s > cut + 1e-5] == [d for d, s in zip(w, want_scores[row]) if s > cut + 1e-5]


def test_save_and_load_round_trip(tmp_path):
    vectors, ids = tied_vectors()
    sharded = build("exact", vectors, ids, [40, 40, 40])
    folder = tmp_path / "idx"
    folder.mkdir()
    sharded.save(folder)
    loaded = load_index(folder, sharded.meta())
    assert isinstance(loaded, ShardedIndex) and len(loaded.shards) == 3 and loaded.ids == ids
    assert loaded.search(vectors[:5], 7) [1] == sharded.search(vectors[:5], 7)[1]
    meta = sharded.meta()
    meta["ntotal"] = 119
    with pytest.raises(TextMatchError):
        load_index(folder, meta)


def test_duplicate_ids_across_shards_are_refused():
    vectors, ids = tied_vectors()
    sharded = build("exact", vectors, ids, [60])
    with pytest.raises(TextMatchError, match="duplicate id"):
        sharded.add(vectors[:2], [ids[0], "new"])
    assert len(sharded.shards) == 1 and sharded.ntotal == 60


def test_merge_top_k_against_a_naive_sort():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(6, 15)).astype(np.float32)  # many ties
    positions = np.stack([rng.permutation(15) for _ in range(6)]).astype(np.int64)
    positions[0, :3] = -1
    scores[0, :3] = -np.inf
    id_rank = rng.permutation(15)
    got_s, got_p = merge_top_k(scores, positions, 20, id_rank)
    for row in range(6):
        valid = [(float(s), int(p)) for s, p in zip(scores[row], positions[row]) if p >= 0]
        naive = sorted(valid, key=lambda sp: (-sp[0], -id_rank[sp[1]]))
        assert [p for p in got_p[row] if p >= 0] == [p for _, p in naive]
        assert list(got_p[row][len(naive):]) == [-1] * (20 - len(naive))


def test_bad_shard_kind_is_a_clear_error():
    with pytest.raises(TextMatchError, match="shard_kind"):
        ShardedIndex(8, shard_kind="sharded")
    with pytest.raises(TextMatchError, match="unknown index option"):
        ShardedIndex(8, shard_kind="hnsw", colour="red")


def test_a_retriever_with_index_shards_searches_like_one_index(tiny_bert_model, tmp_path, capsys):
    from test_retrieval import make_corpus, write_beir

    from textmatch import IndexConfig, Retriever, cli

    queries = ["rain sunny", "pizza burger", "doctor flight", "guitar album"]
    one = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "one", IndexConfig(index_kind="exact"),
                          show_progress_bar=False)
    three = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "three",
                            IndexConfig(index_kind="exact", index_shards=3), show_progress_bar=False)
    assert three.meta["vector_index"]["kind"] == "sharded" and len(three.vectors.shards) == 3
    for mode in ("dense", "hybrid"):
        assert three.search(queries, top_k=5, mode=mode) == one.search(queries, top_k=5, mode=mode)
    loaded = Retriever.load(tmp_path / "three", model=tiny_bert_model)
    assert loaded.search(queries, top_k=5) == one.search(queries, top_k=5)
    loaded.add([{"_id": "extra", "title": "music", "text": "guitar album band"}], show_progress_bar=False)
    assert len(loaded.vectors.shards) == 4 and loaded.search(["guitar album band"], top_k=1, mode="bm25")[0][0][0] == "extra"
    beir = write_beir(tmp_path / "beir", make_corpus())
    assert cli.main(["index", "--model", str(tiny_bert_model.base_model), "--corpus", str(beir), "--output",
                     str(tmp_path / "cli"), "--no-progress", "--index-shards", "2", "--index-backend", "exact"]) == 0
    assert json.loads((tmp_path / "cli" / "index.json").read_text())["vector_index"]["options"]["shard_kind"] == "exact"
    capsys.readouterr()
