"""The default search of an index: recorded in index.json at build, used when `search` is given
no setting, overridden per call and from the CLI; old index folders get today's default; the
passage weighting and the hits' passages and titles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_retrieval import make_corpus, write_beir

from textmatch import TextMatchError, cli
from textmatch.files import MANIFEST_NAME
from textmatch.retrieval.fusion import reciprocal_rank_fusion, weighted_fusion
from textmatch.retrieval.retriever import IndexConfig, Retriever, dense_score_moments, passage_moments
from textmatch.retrieval.search_settings import DEFAULT_SEARCH, DENSE_ONLY, SearchSettings, index_search_settings

pytest.importorskip("bm25s", reason="hybrid search needs bm25s")
QUERIES = ["rain sunny", "pizza burger", "doctor flight"]


@pytest.fixture
def built(tiny_bert_model, tmp_path):
    return Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "idx", IndexConfig(index_kind="exact"),
                           show_progress_bar=False)


def _runs(retriever, depth=100):
    """The dense and BM25 runs (document = best passage) computed from the parts."""
    dense = retriever.search(QUERIES, top_k=depth, mode="dense", depth=depth)
    lexical = retriever.search(QUERIES, top_k=depth, mode="bm25", depth=depth)
    return ({str(i): dict(h) for i, h in enumerate(dense)}, {str(i): dict(h) for i, h in enumerate(lexical)})


def collection_z_runs(retriever, model, depth=100):
    """The dense and BM25 runs with every passage score standardised by the mean and std of the
    query's scores over all passages, computed naively from every score."""
    vectors = np.asarray(retriever.vectors.vectors)
    runs = []
    for scorer in ("dense", "bm25"):
        run = {}
        for i, q in enumerate(QUERIES):
            if scorer == "dense":
                scores = vectors @ model.encode([q], role="query")[0]
            else:
                scores = retriever.bm25.score_all(q).astype(np.float64)
            z = (scores - scores.mean()) / scores.std()
            top = np.argsort(-scores, kind="stable")[:depth]
            docs = {}
            for p in top:
                doc = retriever.passage_docs[p]
                docs[doc] = max(docs.get(doc, -np.inf), float(z[p]))
            run[str(i)] = docs
        runs.append(run)
    return runs


def test_the_default_is_recorded_and_used(built, tmp_path, tiny_bert_model):
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["search"] == DEFAULT_SEARCH.to_dict() and DEFAULT_SEARCH.mode == "hybrid"
    assert built.search_settings == DEFAULT_SEARCH
    d = DEFAULT_SEARCH
    assert (d.fusion, d.normalization) == ("weighted", "collection-zscore")
    fused = weighted_fusion(collection_z_runs(built, tiny_bert_model), [d.dense_weight, 1 - d.dense_weight],
                            normalization="none")
    expected = [list(fused[str(i)].items())[:5] for i in range(len(QUERIES))]
    got = built.search(QUERIES, top_k=5)
    assert [[doc for doc, _ in h] for h in got] == [[doc for doc, _ in h] for h in expected]
    assert [s for h in got for _, s in h] == pytest.approx([s for h in expected for _, s in h], abs=1e-4)


def test_collection_moments_equal_a_naive_pass(built, tmp_path):
    vectors = np.asarray(built.vectors.vectors, dtype=np.float64)
    q = np.random.default_rng(0).normal(size=(4, vectors.shape[1]))
    mean, std = dense_score_moments(q, np.load(tmp_path / "idx" / "passage_stats.npy"))
    naive = q @ vectors.T
    assert mean == pytest.approx(naive.mean(1)) and std == pytest.approx(naive.std(1))
    m, s = built.bm25.score_moments(QUERIES + ["zzzz unseen"])
    full = [built.bm25.score_all(x).astype(np.float64) for x in QUERIES]
    assert m[:3] == pytest.approx([f.mean() for f in full], rel=1e-5) and s[:3] == pytest.approx([f.std() for f in full], rel=1e-5)
    assert m[3] == 0 and s[3] == 1e-12  # a query matching nothing: no division by zero


def test_passage_moments_follow_add_and_old_indexes(tiny_bert_model, tmp_path):
    docs = make_corpus()
    r = Retriever.build(tiny_bert_model, docs[:5], tmp_path / "i", IndexConfig(index_kind="exact"), show_progress_bar=False)
    r.add(docs[5:], show_progress_bar=False)
    stored = np.load(tmp_path / "i" / "passage_stats.npy")
    assert stored == pytest.approx(passage_moments(np.asarray(r.vectors.vectors)))
    hits = r.search(QUERIES, top_k=4)
    # an index from before the file (and before manifests): the exact index's vectors are read back
    (tmp_path / "i" / "passage_stats.npy").unlink()
    (tmp_path / "i" / MANIFEST_NAME).unlink()
    old = Retriever.load(tmp_path / "i", model=tiny_bert_model)
    again = old.search(QUERIES, top_k=4)
    assert [[d for d, _ in h] for h in again] == [[d for d, _ in h] for h in hits]
    assert [x for h in again for _, x in h] == pytest.approx([x for h in hits for _, x in h], abs=1e-5)
    np.save(tmp_path / "i" / "passage_stats.npy", np.zeros((3, 3)))
    with pytest.raises(TextMatchError, match="does not match the index"):
        Retriever.load(tmp_path / "i", model=tiny_bert_model).search(QUERIES)
    assert Retriever.load(tmp_path / "i", model=tiny_bert_model).search(QUERIES, normalization="minmax")


def test_per_call_settings_override_the_index(built):
    dense, lexical = _runs(built)
    rrf = reciprocal_rank_fusion([dense, lexical], k=10)
    got = built.search(QUERIES, top_k=3, mode="hybrid", fusion="rrf", rrf_k=10)
    assert [[doc for doc, _ in h] for h in got] == [list(rrf[str(i)])[:3] for i in range(len(QUERIES))]
    zs = weighted_fusion([dense, lexical], [0.3, 0.7], normalization="zscore")
    got = built.search(QUERIES, top_k=3, fusion="weighted", dense_weight=0.3, normalization="zscore")
    assert [[doc for doc, _ in h] for h in got] == [list(zs[str(i)])[:3] for i in range(len(QUERIES))]
    assert built.search(QUERIES, top_k=3, mode="dense") == [list(dense[str(i)].items())[:3] for i in range(3)]
    with pytest.raises(TextMatchError, match="normalization must be one of"):
        built.search(QUERIES, normalization="rank")
    with pytest.raises(TextMatchError, match="unknown search setting"):
        built.search(QUERIES, alpha=0.5)
    with pytest.raises(TextMatchError, match="dense_weight must be a number in"):
        built.search(QUERIES, dense_weight=2.0)


def test_build_records_what_the_user_chose_and_refuses_the_impossible(tiny_bert_model, tmp_path):
    mine = SearchSettings(mode="hybrid", fusion="rrf", rrf_k=20)
    r = Retriever.build(tiny_bert_model, make_corpus(1), tmp_path / "a", IndexConfig(index_kind="exact"), search=mine,
                        show_progress_bar=False)
    assert Retriever.load(tmp_path / "a", model=tiny_bert_model).search_settings == mine
    r.add([{"_id": "new", "title": "t", "text": "rain cloud"}], show_progress_bar=False)
    assert r.search_settings == mine  # add keeps the recorded settings
    dense_only = Retriever.build(tiny_bert_model, make_corpus(1), tmp_path / "b", IndexConfig(index_kind="exact", bm25=False),
                                 show_progress_bar=False)
    assert dense_only.search_settings == DENSE_ONLY
    with pytest.raises(TextMatchError, match="needs the BM25 index"):
        Retriever.build(tiny_bert_model, make_corpus(1), tmp_path / "c", IndexConfig(bm25=False), search=DEFAULT_SEARCH,
                        show_progress_bar=False)


def test_an_index_from_before_the_settings_gets_todays_default():
    assert index_search_settings({"bm25": {"k1": 0.9}}) == DEFAULT_SEARCH
    assert index_search_settings({"bm25": None}) == DENSE_ONLY
    stored = {"mode": "bm25", "fusion": "rrf", "dense_weight": 0.2, "from_a_newer_version": 1}
    assert index_search_settings({"bm25": {}, "search": stored}).mode == "bm25"


def test_second_passage_weight_adds_the_runner_up(tiny_bert_model, tmp_path):
    long_doc = {"_id": "long", "title": "", "text": " ".join(["rain sunny cloud"] * 60)}
    docs = make_corpus(1) + [long_doc]
    r = Retriever.build(tiny_bert_model, docs, tmp_path / "p", IndexConfig(index_kind="exact", passage_tokens=32,
                                                                              passage_overlap=4), show_progress_bar=False)
    assert r.meta["n_passages"] > len(docs) + 2
    passages = [(i, p) for i, p in enumerate(r.passage_docs) if p == "long"]
    base = dict(r.search(["rain sunny"], top_k=len(docs), mode="bm25", depth=len(r.passage_docs))[0])
    plus = dict(r.search(["rain sunny"], top_k=len(docs), mode="bm25", depth=len(r.passage_docs), second_passage_weight=0.5)[0])
    scores = sorted((float(s) for s in r.bm25.score_all("rain sunny")[[i for i, _ in passages]]), reverse=True)
    assert base["long"] == pytest.approx(scores[0])
    assert plus["long"] == pytest.approx(scores[0] + 0.5 * scores[1])
    single = [d for d in base if d != "long"]  # one passage each: unchanged
    assert all(plus[d] == pytest.approx(base[d]) for d in single)


def test_search_hits_carry_title_and_passage(built):
    hits = built.search_hits(["pizza burger"], top_k=3)[0]
    plain = built.search(["pizza burger"], top_k=3)[0]
    assert [(h.id, h.score) for h in hits] == plain and [h.rank for h in hits] == [1, 2, 3]
    for h in hits:
        assert built.passage_docs[h.passage_index] == h.id
        assert h.title == h.id.split("-")[0] and h.passage.startswith(f"{h.title}. ")


def test_hybrid_hits_say_where_they_came_from(built):
    """search_hits in hybrid mode: each hit's rank in the dense and the BM25 run is its rank in a
    search of that mode alone (the collection z-scores are a per-query affine map: same order)."""
    query = "pizza burger rain"
    hits = built.search_hits([query], top_k=5, depth=200)[0]
    dense = [d for d, _ in built.search([query], top_k=200, mode="dense", depth=200)[0]]
    bm25 = [d for d, _ in built.search([query], top_k=200, mode="bm25", depth=200)[0]]
    for h in hits:
        assert h.dense_rank == dense.index(h.id) + 1
        assert h.bm25_rank == (bm25.index(h.id) + 1 if h.id in bm25 else None)
        assert built.passage_docs[h.passage_index] == h.id
        want = 0.75 * h.dense_score + 0.25 * (h.bm25_score or 0.0) if h.bm25_score is not None else None
        if want is not None:
            assert h.score == pytest.approx(want, rel=1e-5)  # the fused score is the weighted sum of the two
    only = built.search_hits([query], top_k=3, mode="dense")[0]
    assert all(h.bm25_rank is None and h.dense_rank == h.rank for h in only)


def test_cli_search_explain(tiny_bert_dir, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", make_corpus())
    out = tmp_path / "idx"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--output", str(out),
                     "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    args = ["search", "--index", str(out), "--model", str(tiny_bert_dir), "--top-k", "2"]
    assert cli.main(args + ["--explain", "--json", "pizza burger"]) == 0
    doc = json.loads(capsys.readouterr().out)
    hit = doc["results"][0]["hits"][0]
    assert {"passage_index", "passage", "dense_rank", "bm25_rank"} <= set(hit) and doc["mode"] == "hybrid"
    assert cli.main(args + ["--explain", "--color", "never", "pizza burger"]) == 0
    text = capsys.readouterr().out
    assert f"1. {hit['id']}: passage #{hit['passage_index']}; dense rank {hit['dense_rank']}" in text
    assert hit["passage"][:30] in text.replace("\n      ", " ")


def test_cli_index_records_flags_and_search_uses_them(tiny_bert_dir, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", make_corpus())
    out = tmp_path / "idx"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--output", str(out), "--no-progress",
                     "--fusion", "rrf"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "index.json").read_text())
    assert meta["search"] == DEFAULT_SEARCH.with_changes(fusion="rrf").to_dict()
    capsys.readouterr()
    assert cli.main(["search", "--index", str(out), "--model", str(tiny_bert_dir), "--json", "rain"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "hybrid"
    assert cli.main(["search", "--index", str(out), "--model", str(tiny_bert_dir), "--mode", "bm25", "--json",
                     "rain"]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "bm25"
    assert cli.main(["evaluate-retrieval", "--model", str(tiny_bert_dir), "--data", str(beir), "--no-progress",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["mode"] == "hybrid" and report["search"] == DEFAULT_SEARCH.to_dict()
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--output", str(tmp_path / "x"),
                     "--no-progress", "--dense-weight", "7"]) == 2
    assert "dense_weight must be a number in [0, 1]" in capsys.readouterr().err


# -- query-side options: quoted phrases, title boost --------------------------------------------------
def test_split_and_match_phrases():
    from textmatch.retrieval.phrases import contains_phrases, split_phrases

    assert split_phrases('"heart failure" in  older "adults"') == ("heart failure in older adults", ["heart failure", "adults"])
    assert split_phrases('a 5" screen') == ('a 5" screen', [])  # one quote mark: an ordinary character
    assert split_phrases('"" rain') == ("rain", [])
    assert split_phrases('"  Heart   Failure "') == ("Heart Failure", ["heart failure"])
    assert contains_phrases("Chronic HEART\nfailure, adults.", ["heart failure", "adults"])
    assert not contains_phrases("sweetheart failure", ["heart failure"])
    assert not contains_phrases("heart-failure", ["heartfailure"]) and contains_phrases("heart-failure", ["heart failure"])
    assert not contains_phrases("failure of the heart", ["heart failure"])


PHRASE_DOCS = [
    {"_id": "a", "title": "cardiology", "text": "heart failure in older adults"},
    {"_id": "b", "title": "cardiology", "text": "failure of the heart valve in adults"},
    {"_id": "c", "title": "cardiology", "text": "heart disease and diet"},
    {"_id": "d", "title": "weather", "text": "rain and sunny spells"},
]


@pytest.mark.parametrize("kind", ["exact", "flat"])
def test_quoted_phrases_filter_the_documents(tiny_bert_model, tmp_path, kind):
    if kind != "exact":
        pytest.importorskip("faiss")
    r = Retriever.build(tiny_bert_model, PHRASE_DOCS, tmp_path / "i", IndexConfig(index_kind=kind), show_progress_bar=False)
    quoted = r.search(['"heart failure" adults'], top_k=4)[0]
    assert [d for d, _ in quoted] == ["a"]
    plain = [d for d, _ in r.search(["heart failure adults"], top_k=4)[0]]
    assert {"a", "b"} <= set(plain)
    # the quoted words rank like unquoted ones: the filter keeps the unquoted query's scores
    assert dict(quoted)["a"] == pytest.approx(dict(r.search(["heart failure adults"], top_k=4)[0])["a"])
    unfiltered = r.search(['"heart failure" adults'], top_k=4, phrases=False)[0]  # quote marks are plain text
    assert {d for d, _ in unfiltered} == {"a", "b", "c", "d"}
    assert r.search(['"valve heart"'], top_k=4) == [[]]  # nowhere in that order: nothing
    for mode in ("dense", "bm25"):
        assert [d for d, _ in r.search(['"heart failure"'], top_k=4, mode=mode)[0]] == ["a"]
    hits = r.search_hits(['"rain and sunny"'], top_k=2)[0]
    assert [h.id for h in hits] == ["d"] and "rain and sunny" in hits[0].passage


def test_title_boost_and_bm25_parameters(tiny_bert_model, tmp_path):
    plain = Retriever.build(tiny_bert_model, PHRASE_DOCS, tmp_path / "p", IndexConfig(index_kind="exact"),
                            show_progress_bar=False)
    boosted = Retriever.build(tiny_bert_model, PHRASE_DOCS, tmp_path / "b",
                              IndexConfig(index_kind="exact", bm25_title_boost=2, bm25_k1=1.2, bm25_b=0.75),
                              show_progress_bar=False)
    assert boosted.bm25.meta()["k1"] == 1.2 and boosted.bm25.meta()["b"] == 0.75
    assert Retriever.load(tmp_path / "b", model=tiny_bert_model).config.bm25_title_boost == 2
    # "cardiology" is only in titles: its term frequency, so its BM25 score, rises with the boost
    before = dict(plain.search(["cardiology"], top_k=4, mode="bm25")[0])
    after = dict(boosted.search(["cardiology"], top_k=4, mode="bm25")[0])
    assert after["a"] > before["a"] > 0
    old_config = IndexConfig.from_dict({"index_kind": "exact"})  # an index.json from before these fields
    assert (old_config.bm25_k1, old_config.bm25_b, old_config.bm25_title_boost) == (0.9, 0.4, 0)
    for bad in ({"bm25_title_boost": -1}, {"bm25_title_boost": 1.5}, {"bm25_k1": -0.1}, {"bm25_b": 2}):
        with pytest.raises(TextMatchError, match=next(iter(bad))):
            IndexConfig(**bad)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_old_faiss_indexes_read_their_moments_back(tiny_bert_model, tmp_path, kind):
    pytest.importorskip("faiss")
    r = Retriever.build(tiny_bert_model, make_corpus(), tmp_path / "i", IndexConfig(index_kind=kind), show_progress_bar=False)
    stored = np.load(tmp_path / "i" / "passage_stats.npy")
    (tmp_path / "i" / "passage_stats.npy").unlink()  # an index from before the file (and before manifests)
    (tmp_path / "i" / MANIFEST_NAME).unlink()
    old = Retriever.load(tmp_path / "i", model=tiny_bert_model)
    assert old.embedding_moments() == pytest.approx(stored, abs=1e-4)
    assert [[d for d, _ in h] for h in old.search(QUERIES, top_k=4)] == [[d for d, _ in h] for h in r.search(QUERIES, top_k=4)]
