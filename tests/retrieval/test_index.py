"""Vector-index backends (textmatch/retrieval/vector_index.py) against a naive numpy loop."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from textmatch.errors import TextMatchError
from textmatch.retrieval.vector_index import AUTO_FAISS_THRESHOLD, ExactIndex, FaissIndex, VectorIndex, load_index, make_index

faiss = pytest.importorskip("faiss")

DIM = 32
ALL_KINDS = ("exact", "flat", "hnsw", "ivfpq")


def unit(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def doc_ids(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def naive_search(db: np.ndarray, ids: list[str], queries: np.ndarray, k: int):
    """One query and one document at a time: the reference."""
    all_scores, all_ids = [], []
    for q in queries:
        scored = [(float(np.dot(q.astype(np.float64), v.astype(np.float64))), pos) for pos, v in enumerate(db)]
        scored.sort(key=lambda t: (-t[0], t[1]))
        top = scored[:k]
        all_scores.append([s for s, _ in top])
        all_ids.append([ids[p] for _, p in top])
    return np.array(all_scores, dtype=np.float64), all_ids


def recall_at(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def small():
    db, queries = unit(300, seed=1), unit(20, seed=2)
    return db, doc_ids(300), queries


# ---------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("kind", ["exact", "flat"])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_exact_backends_match_naive_loop(small, kind, k):
    db, ids, queries = small
    index = make_index(kind, DIM)
    index.add(db, ids)
    scores, found = index.search(queries, k)
    ref_scores, ref_ids = naive_search(db, ids, queries, k)
    assert scores.dtype == np.float32 and scores.shape == (len(queries), k)
    assert found == ref_ids
    np.testing.assert_allclose(scores, ref_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 299, 300, 301, 10_000])
def test_chunked_exact_equals_unchunked(small, chunk_size):
    db, ids, queries = small
    whole = ExactIndex(DIM, chunk_size=len(db))
    whole.add(db, ids)
    chunked = ExactIndex(DIM, chunk_size=chunk_size)
    chunked.add(db, ids)
    for k in (1, 10, 50):  # k > chunk_size for the small chunks
        s1, i1 = whole.search(queries, k)
        s2, i2 = chunked.search(queries, k)
        assert i1 == i2
        np.testing.assert_allclose(s1, s2, rtol=0, atol=1e-6)


def test_exact_with_ties_orders_by_insertion():
    db = np.tile(unit(1, seed=3), (5, 1))  # five identical documents
    index = ExactIndex(DIM, chunk_size=2)
    index.add(db, ["e", "d", "c", "b", "a"])
    _, found = index.search(db[:1], 3)
    assert found == [["e", "d", "c"]]


def test_hnsw_recall_on_2000_points():
    db, queries = unit(2000, seed=4), unit(50, seed=5)
    ids = doc_ids(2000)
    index = make_index("hnsw", DIM)
    index.add(db, ids)
    scores, found = index.search(queries, 10)
    _, truth = naive_search(db, ids, queries, 10)
    assert recall_at(found, truth) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_ivfpq_recall_with_all_lists_probed():
    dim = 64
    db, queries = unit(3000, dim, seed=6), unit(50, dim, seed=7)
    ids = doc_ids(3000)
    index = make_index("ivfpq", dim, pq_m=16)
    index.add(db, ids)
    assert index.nlist == FaissIndex.default_nlist(3000) == 3000 // 39
    index.nprobe = index.nlist  # only the quantisation error is left
    _, found = index.search(queries, 10)
    _, truth = naive_search(db, ids, queries, 10)
    assert recall_at(found, truth) >= 0.4  # random 64-d data at 16 bytes a vector
    top1 = recall_at([f[:10] for f in found], [t[:1] for t in truth])
    assert top1 >= 0.8


# ---------------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_load_round_trip(tmp_path, kind):
    db, queries = unit(1000, seed=8), unit(10, seed=9)
    index = make_index(kind, DIM)
    index.add(db, doc_ids(1000))
    scores, found = index.search(queries, 10)
    meta = json.loads(json.dumps(index.meta()))  # JSON-able
    assert meta["kind"] == kind and meta["dim"] == DIM and meta["ntotal"] == 1000
    index.save(tmp_path)
    loaded = load_index(tmp_path, meta)
    assert type(loaded) is type(index) and loaded.ntotal == 1000 and loaded.meta() == index.meta()
    scores2, found2 = loaded.search(queries, 10)
    assert found2 == found
    np.testing.assert_array_equal(scores2, scores)
    if kind == "exact":
        assert isinstance(loaded.vectors, np.memmap)  # not read into RAM
    # a loaded index still appends
    extra = unit(5, seed=10)
    loaded.add(extra, doc_ids(5, "new"))
    _, top = loaded.search(extra, 1)
    assert [t[0] for t in top] == doc_ids(5, "new")


def test_save_load_empty_indexes(tmp_path):
    for kind in ALL_KINDS:
        folder = tmp_path / kind
        folder.mkdir()
        index = make_index(kind, DIM)
        index.save(folder)
        loaded = load_index(folder, index.meta())
        assert loaded.ntotal == 0
        scores, found = loaded.search(unit(2, seed=1), 3)
        assert scores.shape == (2, 0) and found == [[], []]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_add_appends(kind):
    first, second = unit(600, seed=11), unit(40, seed=12)
    index = make_index(kind, DIM)
    index.add(first, doc_ids(600))
    index.add(second, doc_ids(40, "late"))
    index.add(second[:0], [])  # an empty add is a no-op
    assert index.ntotal == 640 and len(index) == 640
    _, found = index.search(second, 1)
    hits = np.mean([f[0] == want for f, want in zip(found, doc_ids(40, "late"))])
    assert hits >= (1.0 if kind in ("exact", "flat", "hnsw") else 0.9)


def test_exact_many_small_adds_equal_one_add():
    db, queries = unit(200, seed=13), unit(5, seed=14)
    one = ExactIndex(DIM)
    one.add(db, doc_ids(200))
    many = ExactIndex(DIM)
    for start in range(0, 200, 9):
        many.add(db[start : start + 9], doc_ids(200)[start : start + 9])
    np.testing.assert_array_equal(many.vectors, db)
    assert one.search(queries, 7) [1] == many.search(queries, 7)[1]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_fewer_documents_than_k(kind):
    n = 300 if kind == "ivfpq" else 3
    db = unit(n, seed=15)
    index = make_index(kind, DIM)
    index.add(db, doc_ids(n))
    scores, found = index.search(db[:2], n + 10)
    assert scores.shape == (2, n)
    assert all(len(f) <= n for f in found)
    if kind != "ivfpq":
        assert [f[0] for f in found] == ["doc0", "doc1"] and all(len(f) == n for f in found)


def test_float64_input_is_accepted(small):
    db, ids, queries = small
    index = ExactIndex(DIM)
    index.add(db.astype(np.float64), ids)
    assert index.vectors.dtype == np.float32
    scores, _ = index.search(queries.astype(np.float64), 3)
    assert scores.dtype == np.float32


def test_make_index_auto():
    assert type(make_index("auto", DIM)) is ExactIndex
    assert type(make_index("auto", DIM, n_expected=AUTO_FAISS_THRESHOLD - 1)) is ExactIndex
    big = make_index("auto", DIM, n_expected=AUTO_FAISS_THRESHOLD, ef_search=64, chunk_size=10)
    assert isinstance(big, FaissIndex) and big.kind == "hnsw" and big.ef_search == 64
    small = make_index("auto", DIM, n_expected=10, chunk_size=10, ef_search=64)
    assert isinstance(small, ExactIndex) and small.chunk_size == 10
    assert isinstance(make_index("exact", DIM), VectorIndex)


def test_faiss_threads_follow_torch(monkeypatch):
    import torch

    calls: list[int] = []
    monkeypatch.setattr(faiss, "omp_set_num_threads", calls.append)
    index = make_index("flat", DIM)
    index.add(unit(5), doc_ids(5))
    index.search(unit(1), 1)
    assert calls and set(calls) == {torch.get_num_threads()}


# ---------------------------------------------------------------------------------- errors


@pytest.fixture()
def filled():
    index = ExactIndex(DIM)
    index.add(unit(10), doc_ids(10))
    return index


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_k_must_be_positive(kind):
    index = make_index(kind, DIM)
    index.add(unit(300), doc_ids(300))
    for k in (0, -1):
        with pytest.raises(TextMatchError, match="k must be a positive integer"):
            index.search(unit(1), k)
    with pytest.raises(TextMatchError, match="k must be"):
        index.search(unit(1), 2.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_wrong_dimension(kind):
    index = make_index(kind, DIM)
    with pytest.raises(TextMatchError, match="dimension 16 but the index has dimension 32"):
        index.add(unit(300, 16), doc_ids(300))
    if kind != "ivfpq":
        index.add(unit(300), doc_ids(300))
        with pytest.raises(TextMatchError, match="dimension 64"):
            index.search(unit(2, 64), 1)


def test_non_2d_arrays(filled):
    with pytest.raises(TextMatchError, match="2-D"):
        filled.add(unit(1)[0], ["x"])
    with pytest.raises(TextMatchError, match="2-D"):
        filled.search(unit(1)[0], 1)
    with pytest.raises(TextMatchError, match="2-D"):
        filled.search(unit(4).reshape(2, 2, DIM), 1)
    with pytest.raises(TextMatchError, match="numbers"):
        filled.add(np.array([["a"] * DIM]), ["x"])


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_nan_vectors(kind):
    index = make_index(kind, DIM)
    db = unit(300)
    db[7, 3] = np.nan
    with pytest.raises(TextMatchError, match="row 7 contains NaN"):
        index.add(db, doc_ids(300))
    assert index.ntotal == 0
    queries = unit(3)
    queries[2, 0] = np.inf
    index.add(unit(300), doc_ids(300))
    with pytest.raises(TextMatchError, match="row 2 contains NaN or inf"):
        index.search(queries, 1)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_duplicate_ids(kind):
    index = make_index(kind, DIM)
    ids = doc_ids(300)
    ids[5] = ids[200] = "twice"
    with pytest.raises(TextMatchError, match="duplicate id 'twice'"):
        index.add(unit(300), ids)
    assert index.ntotal == 0
    index.add(unit(300), doc_ids(300))
    with pytest.raises(TextMatchError, match="duplicate id 'doc3' \\(already in the index\\)"):
        index.add(unit(2, seed=3), ["new", "doc3"])
    assert index.ntotal == 300


def test_ids_count_and_type(filled):
    with pytest.raises(TextMatchError, match="got 3 vectors but 2 ids"):
        filled.add(unit(3, seed=1), ["a", "b"])
    with pytest.raises(TextMatchError, match="ids must be strings"):
        filled.add(unit(2, seed=1), ["a", 7])
    with pytest.raises(TextMatchError, match="sequence of strings"):
        filled.add(unit(2, seed=1), "ab")
    assert filled.ntotal == 10


def test_ivfpq_too_few_vectors_suggests_flat():
    index = make_index("ivfpq", DIM)
    with pytest.raises(TextMatchError, match='needs at least 256 vectors.*kind="flat"'):
        index.add(unit(100), doc_ids(100))
    with pytest.raises(TextMatchError, match="at least 1000"):
        make_index("ivfpq", DIM, nlist=1000).add(unit(300), doc_ids(300))


def test_bad_options():
    with pytest.raises(TextMatchError, match="index kind must be one of"):
        make_index("annoy", DIM)
    with pytest.raises(TextMatchError, match="pq_m=5 must divide the dimension 32"):
        make_index("ivfpq", DIM, pq_m=5)
    with pytest.raises(TextMatchError, match="unknown index option"):
        make_index("hnsw", DIM, efsearch=5)
    with pytest.raises(TextMatchError, match="do not apply"):
        make_index("exact", DIM, ef_search=5)
    with pytest.raises(TextMatchError, match="dim must be"):
        make_index("exact", 0)
    with pytest.raises(TextMatchError, match="chunk_size"):
        ExactIndex(DIM, chunk_size=0)
    assert make_index("ivfpq", 30).pq_m == 3  # largest divisor of 30 below 30 / 8


def test_missing_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    for kind in ("flat", "hnsw", "ivfpq"):
        with pytest.raises(TextMatchError, match=r'pip install "textmatch\[faiss\]"'):
            make_index(kind, DIM)
    assert type(make_index("exact", DIM)) is ExactIndex


def test_load_errors(tmp_path, filled):
    with pytest.raises(TextMatchError, match="unknown index kind"):
        load_index(tmp_path, {"kind": "annoy", "dim": DIM, "ntotal": 0})
    with pytest.raises(TextMatchError, match="lacks"):
        load_index(tmp_path, {"kind": "exact"})
    with pytest.raises(TextMatchError, match="newer"):
        load_index(tmp_path, {**filled.meta(), "format": 99})
    with pytest.raises(TextMatchError, match="missing"):
        load_index(tmp_path, filled.meta())
    filled.save(tmp_path)
    with pytest.raises(TextMatchError, match="holds 10 ids but the index holds 11"):
        load_index(tmp_path, {**filled.meta(), "ntotal": 11})
    with pytest.raises(TextMatchError, match="not an existing folder"):
        filled.save(tmp_path / "absent")
