"""IR metrics in `textmatch.retrieval.metrics`: hand-computed cases (trec_eval semantics) and a ranx cross-check."""

from __future__ import annotations

import math
import random
import warnings

import pytest

from textmatch import TextMatchError
from textmatch.retrieval.metrics import (
    average_precision_at_k,
    evaluate_retrieval,
    mrr_at_k,
    ndcg_at_k,
    precision_at_k,
    rank_run,
    recall_at_k,
)

TOL = 1e-9
log2 = math.log2

# Graded qrels: d1 (3), d2 (2), d3 (1) relevant; d4 judged non-relevant; d9 unjudged.
QRELS = {"d1": 3, "d2": 2, "d3": 1, "d4": 0}
RANKING = ["d3", "d9", "d1", "d4", "d2"]  # grades by rank: 1, -, 3, 0, 2


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL


# --------------------------------------------------------------------------- single-ranking metrics


def test_ndcg_graded_gains_and_ideal_from_all_judged_docs():
    # DCG@5 = 1/log2(2) + 0 + 3/log2(4) + 0 + 2/log2(6); IDCG@5 = 3/log2(2) + 2/log2(3) + 1/log2(4).
    dcg5 = 1 / log2(2) + 3 / log2(4) + 2 / log2(6)
    idcg5 = 3 / log2(2) + 2 / log2(3) + 1 / log2(4)
    assert close(dcg5, 1 + 1.5 + 0.7737056144690831)
    assert close(idcg5, 3 + 1.2618595071429148 + 0.5)
    assert close(ndcg_at_k(RANKING, QRELS, 5), dcg5 / idcg5)
    # k = 1: the top doc has grade 1, the ideal top grade is 3.
    assert close(ndcg_at_k(RANKING, QRELS, 1), 1 / 3)
    # k = 2: DCG = 1, IDCG = 3 + 2/log2(3).
    assert close(ndcg_at_k(RANKING, QRELS, 2), 1 / (3 + 2 / log2(3)))
    # k = 3: DCG = 1 + 3/2, IDCG = 3 + 2/log2(3) + 1/2.
    assert close(ndcg_at_k(RANKING, QRELS, 3), 2.5 / (3 + 2 / log2(3) + 0.5))
    # k beyond the ranking: nothing more to gain, ideal is already complete at 3 docs.
    assert close(ndcg_at_k(RANKING, QRELS, 100), dcg5 / idcg5)
    assert close(ndcg_at_k(RANKING, QRELS, 10), ndcg_at_k(RANKING, QRELS, 5))


def test_ndcg_ideal_counts_relevant_docs_that_were_not_retrieved():
    # Only d2 retrieved, at rank 1; the ideal list is still [3, 2, 1].
    assert close(ndcg_at_k(["d2"], QRELS, 10), 2 / (3 + 2 / log2(3) + 1 / 2))
    assert close(ndcg_at_k(["d1", "d2", "d3"], QRELS, 10), 1.0)


def test_ndcg_negative_grades_count_as_zero():
    qrels = {"a": -1, "b": 1}
    assert close(ndcg_at_k(["a", "b"], qrels, 10), (1 / log2(3)) / 1.0)
    assert close(recall_at_k(["a", "b"], qrels, 10), 1.0)
    assert close(precision_at_k(["a", "b"], qrels, 2), 0.5)


def test_mrr():
    assert close(mrr_at_k(RANKING, QRELS, 10), 1.0)
    ranking = ["d9", "d4", "d2", "d1"]  # first relevant at rank 3
    assert close(mrr_at_k(ranking, QRELS, 10), 1 / 3)
    assert close(mrr_at_k(ranking, QRELS, 3), 1 / 3)
    assert mrr_at_k(ranking, QRELS, 2) == 0.0
    assert mrr_at_k(["d4", "d9"], QRELS, 100) == 0.0  # grade 0 and unjudged are not relevant


def test_recall_and_precision():
    # Relevant: d1, d2, d3 (3 docs).  Relevant ranks in RANKING: 1, 3, 5.
    assert close(recall_at_k(RANKING, QRELS, 1), 1 / 3)
    assert close(recall_at_k(RANKING, QRELS, 3), 2 / 3)
    assert close(recall_at_k(RANKING, QRELS, 5), 1.0)
    assert close(recall_at_k(RANKING, QRELS, 100), 1.0)
    assert close(recall_at_k(["d1", "x"], QRELS, 100), 1 / 3)
    assert close(precision_at_k(RANKING, QRELS, 1), 1.0)
    assert close(precision_at_k(RANKING, QRELS, 3), 2 / 3)
    assert close(precision_at_k(RANKING, QRELS, 5), 3 / 5)
    # k larger than the ranking: still divided by k (trec_eval P_k).
    assert close(precision_at_k(RANKING, QRELS, 10), 3 / 10)
    assert close(precision_at_k(RANKING, QRELS, 100), 3 / 100)


def test_average_precision_cut():
    # Precision at the relevant ranks 1, 3, 5: 1, 2/3, 3/5; divided by all 3 relevant docs.
    assert close(average_precision_at_k(RANKING, QRELS, 100), (1 + 2 / 3 + 3 / 5) / 3)
    assert close(average_precision_at_k(RANKING, QRELS, 5), (1 + 2 / 3 + 3 / 5) / 3)
    assert close(average_precision_at_k(RANKING, QRELS, 3), (1 + 2 / 3) / 3)  # not / 2
    assert close(average_precision_at_k(RANKING, QRELS, 1), 1 / 3)
    # Denominator is every relevant doc, retrieved or not.
    qrels = {"a": 1, "b": 1, "c": 1, "d": 1}
    assert close(average_precision_at_k(["a", "x", "b"], qrels, 10), (1 + 2 / 3) / 4)
    assert average_precision_at_k(["x", "y"], qrels, 10) == 0.0


@pytest.mark.parametrize("qrels", [{}, {"a": 0, "b": 0}, {"a": -1}])
def test_no_relevant_docs_scores_zero(qrels):
    ranking = ["a", "b", "c"]
    for fn in (ndcg_at_k, mrr_at_k, recall_at_k, precision_at_k, average_precision_at_k):
        assert fn(ranking, qrels, 10) == 0.0
        assert fn([], qrels, 10) == 0.0


def test_empty_ranking_scores_zero():
    for fn in (ndcg_at_k, mrr_at_k, recall_at_k, precision_at_k, average_precision_at_k):
        assert fn([], QRELS, 10) == 0.0


def test_bad_arguments():
    for fn in (ndcg_at_k, mrr_at_k, recall_at_k, precision_at_k, average_precision_at_k):
        with pytest.raises(TextMatchError):
            fn(RANKING, QRELS, 0)
        with pytest.raises(TextMatchError):
            fn(["a", "b", "a"], QRELS, 10)  # trec_eval rejects duplicate docs
    with pytest.raises(TextMatchError):
        rank_run({"a": float("nan")})
    with pytest.raises(TextMatchError):
        evaluate_retrieval({}, {"q": {"a": 1}}, k_values=(0,))


# --------------------------------------------------------------------------- ranking / ties


def test_rank_run_score_descending_then_docid_descending():
    scores = {"a": 1.0, "b": 1.0, "c": 2.0, "10": 1.0, "9": 1.0, "z": -0.5}
    # Ties at 1.0 broken by doc id descending, string order: "b" > "a" > "9" > "10".
    assert rank_run(scores) == ["c", "b", "a", "9", "10", "z"]
    assert rank_run({}) == []
    # Insertion order does not matter.
    assert rank_run(dict(reversed(list(scores.items())))) == rank_run(scores)


def test_rank_run_compares_scores_at_float32_precision():
    # trec_eval stores scores as C float: these two are a tie, so the higher doc id wins
    # whichever doc has the (float64-)larger score.
    assert rank_run({"x": 0.1, "y": 0.1 + 1e-12}) == ["y", "x"]
    assert rank_run({"x": 0.1 + 1e-12, "y": 0.1}) == ["y", "x"]
    assert rank_run({"x": 0.1 + 1e-6, "y": 0.1}) == ["x", "y"]  # distinct in float32


def test_ties_change_metrics_at_the_cutoff():
    # "a" (relevant) and "b" tie; trec_eval puts "b" first, so the relevant doc is at rank 2.
    run = {"q": {"a": 0.5, "b": 0.5}}
    qrels = {"q": {"a": 1}}
    res = evaluate_retrieval(run, qrels, k_values=(1, 2))
    assert res["mrr@1"] == 0.0 and res["ndcg@1"] == 0.0 and res["recall@1"] == 0.0
    assert close(res["mrr@2"], 0.5)
    assert close(res["ndcg@2"], 1 / log2(3))


# --------------------------------------------------------------------------- evaluate_retrieval


def _hand_example():
    qrels = {
        "q1": {"a": 2, "b": 1, "c": 0},
        "q2": {"x": 0},  # no relevant doc: not averaged
        "q3": {"m": 1},  # missing from the run: scores 0 everywhere, still averaged
    }
    run = {
        "q1": {"a": 0.5, "b": 0.5, "c": 0.9, "z": 0.1},  # ranked c, b, a, z (b before a: tie, docid desc)
        "q2": {"x": 1.0},
        "q4": {"m": 1.0},  # not in qrels: ignored
    }
    # q1 grades by rank: 0, 1, 2, 0.  Relevant: a, b.
    q1 = {
        "ndcg@1": 0.0,
        "mrr@1": 0.0,
        "recall@1": 0.0,
        "map@1": 0.0,
        "precision@1": 0.0,
        "ndcg@3": (1 / log2(3) + 2 / log2(4)) / (2 + 1 / log2(3)),
        "mrr@3": 1 / 2,
        "recall@3": 1.0,
        "map@3": (1 / 2 + 2 / 3) / 2,
        "precision@3": 2 / 3,
        "ndcg@10": (1 / log2(3) + 2 / log2(4)) / (2 + 1 / log2(3)),
        "mrr@10": 1 / 2,
        "recall@100": 1.0,
        "map@100": (1 / 2 + 2 / 3) / 2,
    }
    return run, qrels, q1


def test_evaluate_retrieval_means_and_query_selection():
    run, qrels, q1 = _hand_example()
    res = evaluate_retrieval(run, qrels, k_values=(1, 3), per_query=True)
    expected_keys = {f"{m}@{k}" for m in ("ndcg", "mrr", "recall", "map", "precision") for k in (1, 3)}
    expected_keys |= {"ndcg@10", "mrr@10", "recall@100", "map@100"}
    assert set(res) == expected_keys | {"n_queries", "per_query"}
    assert res["n_queries"] == 2
    assert set(res["per_query"]) == {"q1", "q3"}
    for key, value in q1.items():
        assert close(res["per_query"]["q1"][key], value), key
        assert res["per_query"]["q3"][key] == 0.0
        assert close(res[key], value / 2), key
    assert close(res["ndcg@10"], 0.6199062332840657 / 2)


def test_evaluate_retrieval_default_k_values():
    run, qrels, _ = _hand_example()
    res = evaluate_retrieval(run, qrels)
    assert "per_query" not in res
    for k in (1, 3, 5, 10, 100):
        for m in ("ndcg", "mrr", "recall", "map", "precision"):
            assert f"{m}@{k}" in res
    assert len(res) == 5 * 5 + 1
    assert close(res["precision@100"], (2 / 100) / 2)
    assert close(res["recall@100"], 0.5)


def test_evaluate_retrieval_nothing_to_average():
    res = evaluate_retrieval({"q": {"a": 1.0}}, {"q": {"a": 0}, "r": {}}, k_values=(10,))
    assert res["n_queries"] == 0
    assert all(v == 0.0 for key, v in res.items() if key != "n_queries")


# --------------------------------------------------------------------------- cross-check with ranx


def _random_case(seed: int, tied: bool):
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(40):
        pool = [f"d{i}" for i in range(rng.randint(5, 250))]
        judged = rng.sample(pool, rng.randint(1, min(30, len(pool))))
        grades = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in judged}
        grades[judged[0]] = rng.randint(1, 3)  # at least one relevant doc
        retrieved = rng.sample(pool, rng.randint(1, min(150, len(pool))))
        if tied:
            scores = {d: float(rng.randint(0, 5)) for d in retrieved}
        else:  # distinct scores, also distinct in float32
            values = rng.sample(range(1, 100_000), len(retrieved))
            scores = {d: v / 1000 for d, v in zip(retrieved, values)}
        qrels[f"q{q}"] = grades
        run[f"q{q}"] = scores
    return run, qrels


RANX_METRICS = ["ndcg@10", "mrr@10", "recall@100", "map@100", "precision@10", "ndcg@3", "map@5", "recall@5"]


@pytest.fixture(scope="module")
def ranx():
    return pytest.importorskip("ranx", reason="ranx (optional cross-check) is not installed")


def _ranx_per_query(ranx, run, qrels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba type-safety warnings
        ranx_run = ranx.Run({q: dict(s) for q, s in run.items()})
        ranx.evaluate(ranx.Qrels(qrels), ranx_run, RANX_METRICS)
    return {m: {q: float(v) for q, v in ranx_run.scores[m].items()} for m in RANX_METRICS}


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_ranx_on_random_graded_runs(ranx, seed):
    # Distinct scores, so ranx's own (unspecified) tie order cannot matter.  ranx's "ndcg" is the
    # Jarvelin-Kekalainen variant with linear gains, i.e. trec_eval's ndcg_cut.
    run, qrels = _random_case(seed, tied=False)
    ours = evaluate_retrieval(run, qrels, k_values=(3, 5, 10, 100), per_query=True)
    theirs = _ranx_per_query(ranx, run, qrels)
    assert ours["n_queries"] == len(qrels)
    for metric in RANX_METRICS:
        for q in qrels:
            assert abs(ours["per_query"][q][metric] - theirs[metric][q]) <= TOL, (metric, q)
        mean = sum(theirs[metric].values()) / len(qrels)
        assert abs(ours[metric] - mean) <= TOL, metric


def test_matches_ranx_on_tied_runs_after_trec_ordering(ranx):
    # Heavily tied scores: our trec_eval ordering is handed to ranx as distinct scores (rank-encoded),
    # so the metric arithmetic is compared on the same ordering.
    run, qrels = _random_case(2, tied=True)
    encoded = {q: {d: float(len(s) - i) for i, d in enumerate(rank_run(s))} for q, s in run.items()}
    ours = evaluate_retrieval(run, qrels, k_values=(3, 5, 10, 100), per_query=True)
    theirs = _ranx_per_query(ranx, encoded, qrels)
    for metric in RANX_METRICS:
        for q in qrels:
            assert abs(ours["per_query"][q][metric] - theirs[metric][q]) <= TOL, (metric, q)


# --------------------------------------------------------------------------- cross-check with pytrec_eval
#
# pytrec_eval wraps trec_eval itself, so here the comparison includes the tie order (score
# descending, then doc id descending).  trec_eval's recip_rank has no cut-off: MRR@k is compared
# with recip_rank on the run truncated to its top k (in trec_eval order).

PYTREC_K = (1, 3, 5, 10, 100)
_TREC_MEASURES = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "precision": "P"}


@pytest.fixture(scope="module")
def pytrec_eval():
    return pytest.importorskip(
        "pytrec_eval", reason="pytrec_eval (pip install pytrec_eval-terrier; the 'eval' extra) is not installed"
    )


def _pytrec_per_query(pytrec_eval, run, qrels, k_values=PYTREC_K):
    """{our metric name: {query id: pytrec_eval's value}}."""
    cutoffs = ",".join(str(k) for k in k_values)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"{m}.{cutoffs}" for m in _TREC_MEASURES.values()})
    scores = evaluator.evaluate({q: dict(s) for q, s in run.items()})
    out = {
        f"{ours}@{k}": {q: values[f"{theirs}_{k}"] for q, values in scores.items()}
        for ours, theirs in _TREC_MEASURES.items()
        for k in k_values
    }
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    for k in k_values:
        top = {q: {d: s[d] for d in rank_run(s)[:k]} for q, s in run.items()}
        out[f"mrr@{k}"] = {q: values["recip_rank"] for q, values in rr.evaluate(top).items()}
    return out


def _assert_matches_pytrec(ours, theirs, qids):
    assert ours["n_queries"] == len(qids)
    for metric, per_query in theirs.items():
        assert set(per_query) == set(qids), metric
        for q in qids:
            assert abs(ours["per_query"][q][metric] - per_query[q]) <= TOL, (metric, q)
        assert abs(ours[metric] - math.fsum(per_query.values()) / len(qids)) <= TOL, metric


@pytest.mark.parametrize("seed, tied", [(0, False), (1, False), (2, True), (3, True)])
def test_matches_pytrec_eval_on_random_graded_runs(pytrec_eval, seed, tied):
    run, qrels = _random_case(seed, tied=tied)
    ours = evaluate_retrieval(run, qrels, k_values=PYTREC_K, per_query=True)
    _assert_matches_pytrec(ours, _pytrec_per_query(pytrec_eval, run, qrels), list(qrels))


@pytest.mark.shared_data
def test_matches_pytrec_eval_on_bm25_scifact(pytrec_eval, tmp_path):
    pytest.importorskip("bm25s", reason="bm25s (the 'bm25' extra) is not installed")
    from conftest import SHARED_DATA

    from textmatch.retrieval.beir import load_beir
    from textmatch.retrieval.bm25 import BM25Index

    folder = SHARED_DATA / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"needs the SciFact BEIR folder {folder} (corpus.jsonl, queries.jsonl, qrels/test.tsv)")
    data = load_beir(folder, split="test", cache_dir=str(tmp_path / "hf_cache"))
    corpus = data.corpus
    texts = [f"{title} {text}" for title, text in zip(corpus["title"], corpus["text"])]
    qids, queries = list(data.queries["_id"]), list(data.queries["text"])
    assert len(texts) == 5183 and len(qids) == 300
    index = BM25Index().build(texts, list(corpus["_id"]))
    scores, ids = index.search(queries, k=100)
    run = {q: {d: float(s) for d, s in zip(row_ids, row)} for q, row_ids, row in zip(qids, ids, scores)}

    ours = evaluate_retrieval(run, data.qrels, k_values=PYTREC_K, per_query=True)
    _assert_matches_pytrec(ours, _pytrec_per_query(pytrec_eval, run, data.qrels), qids)
    assert 0.6 <= ours["ndcg@10"] <= 0.72  # BM25 on SciFact (Anserini reports 0.679 with stemming)
