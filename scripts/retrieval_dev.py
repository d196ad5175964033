"""How textmatch's default search was chosen: hybrid settings, BM25 parameters and document
scoring, compared on development qrels only (SciFact's train qrels, 809 queries; Cranfield has
test qrels only and is never looked at here).

    HF_HUB_OFFLINE=1 python scripts/retrieval_dev.py                     # writes results/retrieval_dev.{json,md}

The frozen all-MiniLM-L6-v2 (never trained on these qrels) encodes the SciFact passages once
(cached in --cache-dir, an index folder written by `Retriever.build`); every setting is then
scored from full (query x passage) score matrices in memory, with the same arithmetic as
`Retriever.search`: a run keeps its `depth` best passages per query, collapses them to documents,
normalises, and the two runs are fused. One rule picks every setting: the highest mean nDCG@10
on the development queries, a simpler setting winning ties within 0.1 point.

Stages (each starts from the winners of the ones before):
  1. BM25: k1, b, stemming, stopwords, the title repeated in the BM25 text, passage or document
     granularity.
  2. Fusion: RRF, or a weighted sum of scores normalised by min-max or z-scores over the
     retrieved depth (both depend on the cut-off), or by z-scores over the whole collection
     (does not), with the dense weight in steps of 0.05.
  3. Document score from its passages: the best passage, or the best plus a weight on the
     second best.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_common
from bench_common import (
    DATE_MINUTES, REPO, SHARED_DATA, code, command_line, header_lines, machine_info, markdown_table, utc_date,
    write_results,
)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEPTH = 100  # passages per run before documents are collapsed (Retriever.search's default for top_k <= 25)


# -- the data --------------------------------------------------------------------------------------
def load_dev(cache: Path, backend: str):
    """SciFact's train queries and qrels, the passage embeddings and texts of the frozen index."""
    from textmatch import MatchingNetwork
    from textmatch.retrieval.beir import load_beir
    from textmatch.retrieval.retriever import IndexConfig, Retriever

    data = load_beir(SHARED_DATA / "scifact", split="train")
    model = MatchingNetwork.from_pretrained(MODEL, backend=backend)
    folder = cache / "scifact_frozen"
    if (folder / "index.json").is_file():
        retriever = Retriever.load(folder, model=model)
    else:
        retriever = Retriever.build(model, data.corpus, folder, IndexConfig(index_kind="exact"), show_progress_bar=False)
    rows = [json.loads(line) for line in open(folder / "passages.jsonl", encoding="utf-8")]
    titles = {str(d["_id"]): str(d["title"] or "") for d in data.corpus}
    qids = [q for q in data.qrels]
    texts_by_id = {str(q["_id"]): str(q["text"]) for q in data.queries}
    queries = [texts_by_id[q] for q in qids]
    q_emb = model.encode(queries, role="query").astype(np.float32)  # (Q, dim)
    p_emb = np.asarray(retriever.vectors.vectors, dtype=np.float32)  # (P, dim)
    return {
        "qids": qids, "queries": queries, "qrels": data.qrels, "q_emb": q_emb, "p_emb": p_emb,
        "passage_docs": [r["doc_id"] for r in rows], "passage_texts": [r["text"] for r in rows], "titles": titles,
    }


class Scorer:
    """Fast nDCG@10 / Recall@100 of (query x document) score matrices against binary or graded qrels."""

    def __init__(self, qids: list[str], qrels: dict, docs: list[str]) -> None:
        col = {d: i for i, d in enumerate(docs)}
        self.rel = np.zeros((len(qids), len(docs)), dtype=np.float32)  # (Q, D) grades
        self.idcg = np.zeros(len(qids))
        self.n_rel = np.zeros(len(qids))
        disc = 1.0 / np.log2(np.arange(2, 12))
        for i, q in enumerate(qids):
            grades = sorted((g for g in qrels[q].values() if g > 0), reverse=True)
            for d, g in qrels[q].items():
                if d in col and g > 0:
                    self.rel[i, col[d]] = g
            self.idcg[i] = float(np.sum(np.array(grades[:10]) * disc[: len(grades[:10])]))
            self.n_rel[i] = len(grades)

    def __call__(self, scores: np.ndarray) -> dict[str, float]:
        """scores: (Q, D), -inf for documents not retrieved."""
        top = np.argpartition(-scores, 100, axis=1)[:, :100]  # (Q, 100) unordered
        order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, 1)  # (Q, 100) best first
        found = np.isfinite(np.take_along_axis(scores, top, 1))
        gains = np.take_along_axis(self.rel, top, 1) * found  # (Q, 100)
        disc = 1.0 / np.log2(np.arange(2, 12))
        ndcg = (gains[:, :10] * disc).sum(1) / self.idcg
        recall = (gains > 0).sum(1) / self.n_rel
        return {"ndcg@10": round(100 * float(ndcg.mean()), 2), "recall@100": round(100 * float(recall.mean()), 2)}


# -- runs ---------------------------------------------------------------------------------------------
def doc_starts(passage_docs: list[str]) -> tuple[np.ndarray, list[str]]:
    """Start position of each document's (contiguous) passages, and the document ids."""
    starts, docs = [], []
    for i, d in enumerate(passage_docs):
        if not docs or docs[-1] != d:
            starts.append(i)
            docs.append(d)
    return np.asarray(starts), docs


def to_docs(passage_scores: np.ndarray, starts: np.ndarray, depth: int, second: float = 0.0) -> np.ndarray:
    """(Q, P) passage scores -> (Q, D) document scores from each query's `depth` best passages:
    the best passage plus `second` x the second best (when both are retrieved); -inf for a
    document none of whose passages was retrieved."""
    q, p = passage_scores.shape
    keep = np.argpartition(-passage_scores, depth - 1, axis=1)[:, :depth]
    masked = np.full_like(passage_scores, -np.inf)
    np.put_along_axis(masked, keep, np.take_along_axis(passage_scores, keep, 1), 1)
    best = np.maximum.reduceat(masked, starts, axis=1)  # (Q, D)
    if not second:
        return best
    doc_of = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, p)))  # (P,)
    is_best = masked == best[:, doc_of]
    rest = np.where(is_best, -np.inf, masked)
    runner = np.maximum.reduceat(rest, starts, axis=1)
    return best + second * np.where(np.isfinite(runner), runner, 0.0)


def normalise(docs: np.ndarray, method: str, passage_scores: np.ndarray) -> np.ndarray:
    """Per query: "minmax" or "zscore" over the retrieved documents (cut-off dependent), or
    "collection-zscore" over every passage of the collection (mean and std of the full row: cut-off
    independent). Documents not
    retrieved get the lowest normalised score of the retrieved ones (weighted_fusion's floor)."""
    finite = np.isfinite(docs)
    if method == "minmax":
        lo = np.where(finite, docs, np.inf).min(1, keepdims=True)
        hi = np.where(finite, docs, -np.inf).max(1, keepdims=True)
        out = (docs - lo) / np.maximum(hi - lo, 1e-12)
    elif method == "collection-zscore":
        mean = passage_scores.mean(1, keepdims=True)
        std = passage_scores.std(1, keepdims=True)
        out = (docs - mean) / np.maximum(std, 1e-12)
    elif method == "zscore":  # over the retrieved documents (cut-off dependent), as fusion.normalize_scores
        mean = np.where(finite, docs, 0).sum(1, keepdims=True) / np.maximum(finite.sum(1, keepdims=True), 1)
        var = (np.where(finite, docs - mean, 0) ** 2).sum(1, keepdims=True) / np.maximum(finite.sum(1, keepdims=True), 1)
        out = (docs - mean) / np.maximum(np.sqrt(var), 1e-12)
    else:
        raise ValueError(method)
    floor = np.where(finite, out, np.inf).min(1, keepdims=True)
    return np.where(finite, out, floor)


def rrf(*runs: np.ndarray, k: int = 60) -> np.ndarray:
    out = np.zeros_like(runs[0])
    for run in runs:
        ranks = np.argsort(np.argsort(-run, axis=1, kind="stable"), axis=1) + 1
        out += np.where(np.isfinite(run), 1.0 / (k + ranks), 0.0)
    any_found = np.any([np.isfinite(r) for r in runs], axis=0)
    return np.where(any_found, out, -np.inf)


def fuse(dense: np.ndarray, lexical: np.ndarray, dense_p: np.ndarray, lexical_p: np.ndarray, method: str,
         weight: float) -> np.ndarray:
    if method == "rrf":
        return rrf(dense, lexical)
    any_found = np.isfinite(dense) | np.isfinite(lexical)
    fused = weight * normalise(dense, method, dense_p) + (1 - weight) * normalise(lexical, method, lexical_p)
    return np.where(any_found, fused, -np.inf)


def bm25_matrix(texts: list[str], queries: list[str], **params) -> np.ndarray:
    """(Q, len(texts)) BM25 scores of every query against every text."""
    from textmatch.retrieval.bm25 import BM25Index

    index = BM25Index(**params).build(texts, [str(i) for i in range(len(texts))])
    return np.stack([index.score_all(q) for q in queries])


# -- the stages ---------------------------------------------------------------------------------------
def pick(rows: list[dict], key: str = "ndcg@10") -> dict:
    """The best row by `key`; among rows within 0.1 point of it, the first listed (round 1's
    setting or the simpler one is listed first, so a change must win by more than 0.1)."""
    top = max(r[key] for r in rows)
    return next(r for r in rows if r[key] >= top - 0.1)


def run(args) -> dict:
    t0 = time.perf_counter()
    dev = load_dev(Path(args.cache_dir), args.backend)
    starts, docs = doc_starts(dev["passage_docs"])
    score = Scorer(dev["qids"], dev["qrels"], docs)
    dense_p = dev["q_emb"] @ dev["p_emb"].T  # (Q, P) cosine
    dense_docs = to_docs(dense_p, starts, DEPTH)
    out: dict = {"n_queries": len(dev["qids"]), "n_passages": len(dev["passage_docs"]), "n_documents": len(docs)}
    out["dense"] = score(dense_docs)
    print("dense", out["dense"], f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    # stage 1: BM25 alone, then fused with the dense run by round 1's fusion (weighted min-max 0.5)
    titles = [dev["titles"].get(d, "") for d in dev["passage_docs"]]
    bm25_rows = []
    pairs = [(0.9, 0.4)] + [kb for kb in itertools.product((0.6, 0.9, 1.2, 1.5), (0.4, 0.6, 0.75, 0.9))
                            if kb != (0.9, 0.4)]  # round 1's setting first: a change must win
    grid = [dict(k1=k1, b=b, stemmer="english", stopwords="en", title_repeat=0, granularity="passage")
            for k1, b in pairs]
    cache: dict = {}

    def bm25_run(cfg: dict) -> tuple[np.ndarray, np.ndarray]:
        key = json.dumps(cfg, sort_keys=True)
        if key not in cache:
            params = dict(k1=cfg["k1"], b=cfg["b"], stemmer=cfg["stemmer"], stopwords=cfg["stopwords"])
            if cfg["granularity"] == "document":
                full = {}
                for d, t in zip(dev["passage_docs"], dev["passage_texts"]):
                    full[d] = t if d not in full else full[d] + " " + t
                scores_d = bm25_matrix([full[d] for d in docs], dev["queries"], **params)  # (Q, D)
                lexical_p = scores_d[:, np.repeat(np.arange(len(docs)), np.diff(np.append(starts, len(titles))))]
            else:
                texts = [(f"{title} " * cfg["title_repeat"]) + text for title, text in zip(titles, dev["passage_texts"])]
                lexical_p = bm25_matrix(texts, dev["queries"], **params)
            cache[key] = (lexical_p, to_docs(lexical_p, starts, DEPTH))
        return cache[key]

    def try_bm25(cfg: dict) -> dict:
        lexical_p, lexical = bm25_run(cfg)
        row = {**cfg, "bm25": score(lexical),
               **score(fuse(dense_docs, lexical, dense_p, lexical_p, "minmax", 0.5))}
        bm25_rows.append(row)
        print("bm25", row, f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        return row

    for cfg in grid:
        try_bm25(cfg)
    best = pick(bm25_rows)
    for change in ({"stemmer": None}, {"stopwords": None}, {"title_repeat": 1}, {"title_repeat": 2},
                   {"granularity": "document"}):
        try_bm25({**{k: best[k] for k in ("k1", "b", "stemmer", "stopwords", "title_repeat", "granularity")}, **change})
    bm25_cfg = {k: pick(bm25_rows)[k] for k in ("k1", "b", "stemmer", "stopwords", "title_repeat", "granularity")}
    out["bm25"] = {"rows": bm25_rows, "chosen": bm25_cfg, "rule": "highest hybrid nDCG@10 (weighted min-max 0.5)"}

    # stage 2: fusion method and weight
    lexical_p, lexical = bm25_run(bm25_cfg)
    fusion_rows = [{"fusion": "rrf", "normalization": None, "dense_weight": None,
                    **score(fuse(dense_docs, lexical, dense_p, lexical_p, "rrf", 0))}]
    for method in ("minmax", "zscore", "collection-zscore"):
        for w in np.round(np.arange(0.0, 1.0001, 0.05), 2):
            fusion_rows.append({"fusion": "weighted", "normalization": method, "dense_weight": float(w),
                                **score(fuse(dense_docs, lexical, dense_p, lexical_p, method, float(w)))})
    fusion = pick(fusion_rows)
    out["fusion"] = {"rows": fusion_rows, "chosen": {k: fusion[k] for k in ("fusion", "normalization", "dense_weight")}}
    print("fusion", out["fusion"]["chosen"], fusion["ndcg@10"], file=sys.stderr, flush=True)

    # stage 3: a document's score from its passages
    agg_rows = []
    for second in (0.0, 0.1, 0.2, 0.3):
        d2 = to_docs(dense_p, starts, DEPTH, second)
        l2 = lexical if bm25_cfg["granularity"] == "document" else to_docs(lexical_p, starts, DEPTH, second)
        agg_rows.append({"second_passage_weight": second,
                         **score(fuse(d2, l2, dense_p, lexical_p, fusion["normalization"] or "rrf",
                                      fusion["dense_weight"] or 0))})
    out["passages"] = {"rows": agg_rows, "chosen": pick(agg_rows)["second_passage_weight"]}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# -- stage 4: fine-tuning ------------------------------------------------------------------------------
FINETUNE_VARIANTS = {  # name -> RetrievalTrainingArguments fields
    "BM25 negatives, 1 epoch (the old default)": {"hard_negatives": 1, "model_negatives": 0, "num_train_epochs": 1},
    "BM25 negatives, 2 epochs": {"hard_negatives": 1, "model_negatives": 0, "num_train_epochs": 2},
    "BM25 + model negatives refreshed each epoch, 2 epochs": {"hard_negatives": 1, "model_negatives": 1,
                                                               "num_train_epochs": 2},
}


def finetune_stage(args, chosen: dict) -> dict:
    """Fine-tuning variants trained on 80% of SciFact's train queries and scored on the other 20%
    (split by random.Random(0)), documents cut at 256 tokens (one vector per document: a cheaper
    stand-in for the index's passages), dense alone and fused with BM25 by the chosen settings."""
    import random
    import tempfile

    from textmatch import MatchingNetwork
    from textmatch.retrieval.beir import load_beir
    from textmatch.retrieval.bm25 import BM25Index, mine_hard_negatives
    from textmatch.retrieval.training import RetrievalTrainer, RetrievalTrainingArguments

    data = load_beir(SHARED_DATA / "scifact", split="train")
    corpus = {str(d["_id"]): f"{d['title']} {d['text']}".strip() for d in data.corpus}
    queries = {str(q["_id"]): str(q["text"]) for q in data.queries}
    qids = sorted(data.qrels)
    random.Random(0).shuffle(qids)
    n_dev = len(qids) // 5
    dev_ids, train_ids = qids[:n_dev], qids[n_dev:]
    train_qrels = {q: data.qrels[q] for q in train_ids}
    docs = list(corpus)
    score = Scorer(dev_ids, data.qrels, docs)
    bm25_cfg = chosen["bm25"]
    params = dict(k1=bm25_cfg["k1"], b=bm25_cfg["b"], stemmer=bm25_cfg["stemmer"], stopwords=bm25_cfg["stopwords"])
    lexical_p = bm25_matrix([corpus[d] for d in docs], [queries[q] for q in dev_ids], **params)  # (Q, D)
    starts = np.arange(len(docs))
    lexical = to_docs(lexical_p, starts, DEPTH)
    fusion = chosen["fusion"]
    negatives = mine_hard_negatives(BM25Index(**params).build(list(corpus.values()), docs),
                                    {q: queries[q] for q in train_ids}, train_qrels, n=1)

    def evaluate(model) -> dict:
        t = time.perf_counter()
        with model.support_encoder.truncated_to(256):
            d_emb = model.encode([corpus[d] for d in docs], role="support")
        q_emb = model.encode([queries[q] for q in dev_ids], role="query")
        dense_p = q_emb @ d_emb.T
        dense = to_docs(dense_p, starts, DEPTH)
        return {"dense": score(dense),
                "hybrid": score(fuse(dense, lexical, dense_p, lexical_p, fusion["normalization"] or "rrf",
                                     fusion["dense_weight"] or 0)),
                "encode_seconds": round(time.perf_counter() - t, 1)}

    out = {"n_train_queries": len(train_ids), "n_dev_queries": len(dev_ids), "bm25": score(lexical), "rows": {}}
    out["rows"]["frozen"] = evaluate(MatchingNetwork.from_pretrained(MODEL))
    print("finetune frozen", out["rows"]["frozen"], file=sys.stderr, flush=True)
    for name, fields in FINETUNE_VARIANTS.items():
        if args.variants and name not in args.variants:
            continue
        model = MatchingNetwork.from_pretrained(MODEL)
        with tempfile.TemporaryDirectory() as run_dir:
            targs = RetrievalTrainingArguments(output_dir=run_dir, seed=42, show_progress_bar=False, **fields)
            trainer = RetrievalTrainer(model, targs, queries, corpus, train_qrels, hard_negatives=negatives)
            result = trainer.train()
        row = evaluate(model)
        row.update({"arguments": fields, "steps": result.global_step, "train_seconds": round(result.train_runtime, 1),
                    "mining_seconds": round(trainer.mining_seconds, 1), "training_loss": round(result.training_loss, 4)})
        out["rows"][name] = row
        print("finetune", name, row, file=sys.stderr, flush=True)
    return out


def render(results: dict) -> str:
    r = results["dev"]
    lines = header_lines([
        ("Command", code(results["command"])), ("Date", results["date"]),
        ("Machine", f"{results['machine']['cores']} cores, {results['machine'].get('cpu_model') or '?'}"),
    ], title="Choosing the default search on development qrels")
    lines += [
        f"Development data: SciFact **train** qrels ({r['n_queries']} queries) over the SciFact corpus "
        f"({r['n_documents']} documents, {r['n_passages']} passages); the frozen {MODEL}. No test qrels are read. "
        "Rule: the highest nDCG@10; round 1's or the simpler setting (listed first) wins within 0.1 point. Numbers in %.", "",
        f"Dense alone: nDCG@10 {r['dense']['ndcg@10']}, Recall@100 {r['dense']['recall@100']}.", "",
        "## 1. BM25 (alone, and fused with dense by weighted min-max 0.5)", "",
    ]
    lines += markdown_table(
        ["k1", "b", "stemmer", "stopwords", "title repeated", "granularity", "BM25 nDCG@10", "hybrid nDCG@10",
         "hybrid R@100"],
        [[str(x["k1"]), str(x["b"]), str(x["stemmer"]), str(x["stopwords"]), str(x["title_repeat"]),
          x["granularity"], str(x["bm25"]["ndcg@10"]), str(x["ndcg@10"]), str(x["recall@100"])] for x in r["bm25"]["rows"]])
    lines += ["", f"Chosen: `{json.dumps(r['bm25']['chosen'])}`", "", "## 2. Fusion", ""]
    lines += markdown_table(
        ["fusion", "normalization", "dense weight", "nDCG@10", "R@100"],
        [[x["fusion"], str(x["normalization"] or "-"), str(x["dense_weight"] if x["dense_weight"] is not None else "-"),
          str(x["ndcg@10"]), str(x["recall@100"])] for x in r["fusion"]["rows"]])
    lines += ["", f"Chosen: `{json.dumps(r['fusion']['chosen'])}`", "",
              "## 3. Document score from its passages", ""]
    lines += markdown_table(["second passage weight", "nDCG@10", "R@100"],
                            [[str(x["second_passage_weight"]), str(x["ndcg@10"]), str(x["recall@100"])]
                             for x in r["passages"]["rows"]])
    lines += ["", f"Chosen: {r['passages']['chosen']}", "", f"Run time: {r['seconds']} s.", ""]
    f = results.get("finetune")
    if f:
        lines += ["## 4. Fine-tuning", "",
                  f"Trained on {f['n_train_queries']} of SciFact's train queries, scored on the other {f['n_dev_queries']} "
                  "(split by random.Random(0)); one vector per document (cut at 256 tokens), hybrid = the chosen "
                  f"BM25 and fusion (BM25 alone on these queries: {f['bm25']['ndcg@10']}). Command: "
                  f"{code(f['command'])}, {f['date']}.", ""]
        lines += markdown_table(
            ["variant", "dense nDCG@10", "hybrid nDCG@10", "hybrid R@100", "steps", "train s", "of which mining s"],
            [[name, str(x["dense"]["ndcg@10"]), str(x["hybrid"]["ndcg@10"]), str(x["hybrid"]["recall@100"]),
              str(x.get("steps", "-")), str(x.get("train_seconds", "-")), str(x.get("mining_seconds", "-"))]
             for name, x in f["rows"].items()])
        lines.append("")
    if results.get("decisions"):
        lines += ["## What was kept", ""] + [f"- {d}" for d in results["decisions"]] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default="/tmp/textmatch-retrieval-dev",
                        help="where the frozen SciFact index is built once and reused")
    parser.add_argument("--backend", default="onnx", choices=["torch", "onnx"])
    parser.add_argument("--output-dir", default=str(REPO / "results"))
    parser.add_argument("--stage", default="search", choices=["search", "finetune"],
                        help="search: stages 1-3; finetune: stage 4, added to retrieval_dev.json")
    parser.add_argument("--variants", nargs="*", default=None, help="fine-tuning variants to run (default: all)")
    parser.add_argument("--render-only", action="store_true", help="re-render retrieval_dev.md from its JSON")
    args = parser.parse_args()
    if not SHARED_DATA.is_dir():
        print(f"retrieval_dev: {SHARED_DATA} is missing (the benchmark data)", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(args.output_dir)
    if args.render_only:  # after editing the "decisions" notes of retrieval_dev.json
        results = json.loads((out_dir / "retrieval_dev.json").read_text(encoding="utf-8"))
        write_results(out_dir, "retrieval_dev", results, render)
        return 0
    if args.stage == "finetune":  # added to the search stage's results, which it builds on
        results = json.loads((out_dir / "retrieval_dev.json").read_text(encoding="utf-8"))
        chosen = {k: results["dev"][k]["chosen"] for k in ("bm25", "fusion")}
        results["finetune"] = {"command": command_line(__file__, sys.argv[1:]), "date": utc_date(DATE_MINUTES),
                               **finetune_stage(args, chosen)}
        write_results(out_dir, "retrieval_dev", results, render)
        return 0
    results = {"command": command_line(__file__, sys.argv[1:]), "date": utc_date(DATE_MINUTES),
               "machine": machine_info(), "dev": run(args)}
    write_results(out_dir, "retrieval_dev", results, render)
    print(json.dumps({k: results["dev"][k]["chosen"] for k in ("bm25", "fusion", "passages")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
