"""Retrieval end to end with the tiny BERT: corpus inputs, passages, index folders, search modes,
add, resumable encoding, the CLI, and bad input."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TOPICS
from textmatch import MatchingNetwork, TextMatchError, cli
from textmatch.retrieval.corpus import read_corpus, split_passages
from textmatch.retrieval.retriever import IndexConfig, Retriever

pytest.importorskip("bm25s", reason="hybrid search needs bm25s")


def make_corpus(n_per_topic: int = 3) -> list[dict[str, str]]:
    docs = []
    for topic, words in TOPICS.items():
        for j in range(n_per_topic):
            text = " ".join(words[(j + k) % len(words)] for k in range(4)) + " please today"
            docs.append({"_id": f"{topic}-{j}", "title": topic, "text": text})
    return docs


def write_beir(folder: Path, docs: list[dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for d in docs:
            fh.write(json.dumps(d) + "\n")
    queries = {f"q-{t}": f"{words[0]} {words[1]}" for t, words in TOPICS.items()}
    with open(folder / "queries.jsonl", "w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / "test.tsv", "w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for t in TOPICS:
            fh.write(f"q-{t}\t{t}-0\t2\nq-{t}\t{t}-1\t1\n")
    return folder


@pytest.fixture
def model(tiny_bert_model):
    return tiny_bert_model


def test_corpus_inputs_agree(tmp_path):
    docs = make_corpus(1)
    beir = write_beir(tmp_path / "beir", docs)
    with open(tmp_path / "docs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "text"])
        writer.writerows([(d["_id"], d["title"], d["text"]) for d in docs])
    folder = tmp_path / "txt"
    folder.mkdir()
    for d in docs:
        (folder / f"{d['_id']}.md").write_text(f"# {d['title']}\n{d['text']}\n")
    from_beir = list(read_corpus(beir))
    from_csv = list(read_corpus(tmp_path / "docs.csv"))
    from_txt = list(read_corpus(folder))
    assert [d["_id"] for d in from_beir] == [d["_id"] for d in docs] == [d["_id"] for d in from_csv]
    assert sorted(d["_id"] for d in from_txt) == sorted(f"{d['_id']}.md" for d in docs)
    assert all(d["title"] in TOPICS for d in from_txt)


def test_split_passages_overlap_and_limit(tiny_bert_model):
    tok = tiny_bert_model.support_encoder.tokenizer
    words = [w for ws in TOPICS.values() for w in ws] * 3
    passages = split_passages("weather", " ".join(words), tok, max_tokens=20, overlap=4)
    assert len(passages) > 3
    for p in passages:
        assert p.startswith("weather. ")
        assert len(tok(p)["input_ids"]) <= 20
    first, second = passages[0].split(" ")[1:], passages[1].split(" ")[1:]
    assert first[-4:] == second[:4]  # the overlap
    assert split_passages("", "rain", tok, 20, 4) == ["rain"]


@pytest.mark.parametrize("backend", ["exact", "flat", "hnsw"])
def test_build_search_load_modes(model, tmp_path, backend):
    pytest.importorskip("faiss") if backend != "exact" else None
    docs = make_corpus()
    retriever = Retriever.build(model, docs, tmp_path / "idx", IndexConfig(index_kind=backend, shard_size=5),
                                show_progress_bar=False)
    meta = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert meta["n_documents"] == len(docs) and meta["dim"] == 32 and meta["format_version"] == 1
    assert not (tmp_path / "idx.partial").exists()
    for mode in ("dense", "bm25", "hybrid"):
        hits = retriever.search(["rain sunny", "pizza burger"], top_k=4, mode=mode)
        assert [len(h) for h in hits] == [4, 4]
        assert all(a[1] >= b[1] for h in hits for a, b in zip(h, h[1:]))
    bm25_hits = retriever.search(["pizza burger"], top_k=1, mode="bm25")[0]
    assert bm25_hits[0][0].startswith("food-")
    again = Retriever.load(tmp_path / "idx", model=model)
    assert again.search(["rain sunny"], top_k=5) == retriever.search(["rain sunny"], top_k=5)


def test_dense_search_matches_brute_force(model, tmp_path):
    docs = make_corpus()
    retriever = Retriever.build(model, docs, tmp_path / "idx", IndexConfig(index_kind="exact", bm25=False),
                                show_progress_bar=False)
    doc_emb = model.encode([f"{d['title']}. {d['text']}" for d in docs], role="support")
    q_emb = model.encode(["flight hotel"], role="query")
    expected = [docs[i]["_id"] for i in np.argsort(-(doc_emb @ q_emb[0]), kind="stable")[:5]]
    got = [d for d, _ in retriever.search(["flight hotel"], top_k=5)[0]]
    assert got == expected


def test_add_appends_documents(model, tmp_path):
    docs = make_corpus()
    retriever = Retriever.build(model, docs[:6], tmp_path / "idx", IndexConfig(index_kind="exact"), show_progress_bar=False)
    retriever.add(docs[6:], show_progress_bar=False)
    assert retriever.meta["n_documents"] == len(docs)
    found = {d for hits in retriever.search(["doctor medicine"], top_k=len(docs), mode="bm25") for d, _ in hits}
    assert any(d.startswith("health-") for d in found)
    with pytest.raises(TextMatchError, match="appears twice"):
        retriever.add(docs[:1], show_progress_bar=False)
    reloaded = Retriever.load(tmp_path / "idx", model=model)
    assert reloaded.meta["n_passages"] == retriever.meta["n_passages"]


def test_other_model_is_refused(model, tmp_path, tiny_bert_dir):
    import torch

    Retriever.build(model, make_corpus(1), tmp_path / "idx", IndexConfig(index_kind="exact"), show_progress_bar=False)
    other = MatchingNetwork.from_pretrained(str(tiny_bert_dir))
    with torch.no_grad():
        other.query_encoder.model.embeddings.word_embeddings.weight.add_(0.1)
    with pytest.raises(TextMatchError, match="built with model"):
        Retriever.load(tmp_path / "idx", model=other)


def test_bad_input(model, tmp_path):
    with pytest.raises(TextMatchError, match="nothing to index|no documents"):
        Retriever.build(model, [], tmp_path / "a", show_progress_bar=False)
    dup = make_corpus(1) + make_corpus(1)[:1]
    with pytest.raises(TextMatchError, match="appears twice"):
        Retriever.build(model, dup, tmp_path / "b", show_progress_bar=False)
    assert not (tmp_path / "b").exists()
    with pytest.warns(UserWarning, match="skipped 1 document"):
        r = Retriever.build(model, make_corpus(1) + [{"_id": "empty", "title": "", "text": "  "}], tmp_path / "c",
                            IndexConfig(index_kind="exact"), show_progress_bar=False)
    assert r.meta["n_documents"] == len(TOPICS)
    with pytest.raises(TextMatchError, match="top_k"):
        r.search(["rain"], top_k=0)
    with pytest.warns(UserWarning, match="truncated"):
        r.search([" ".join(["rain"] * 200)], top_k=1)
    meta = json.loads((tmp_path / "c" / "index.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "c" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(TextMatchError, match="format version 99"):
        Retriever.load(tmp_path / "c", model=model)
    with pytest.raises(TextMatchError, match="not a textmatch index"):
        Retriever.load(tmp_path, model=model)


def test_cli_index_search_evaluate(tiny_bert_dir, tmp_path, capsys):
    beir = write_beir(tmp_path / "beir", make_corpus())
    out = tmp_path / "idx"
    assert cli.main(["index", "--model", str(tiny_bert_dir), "--corpus", str(beir), "--output", str(out),
                     "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # the index names its model (a folder outside the index): used only when asked for
    assert cli.main(["search", "--index", str(out), "rain sunny"]) == 2
    err = capsys.readouterr().err
    assert "was built with the model" in err and str(tiny_bert_dir) in err and "--allow-index-model" in err
    assert cli.main(["search", "--index", str(out), "--allow-index-model", "--top-k", "1", "rain"]) == 0
    capsys.readouterr()
    assert cli.main(["search", "--index", str(out), "--model", str(tiny_bert_dir), "--top-k", "3", "--mode", "hybrid",
                     "--json", "rain sunny"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["results"][0]["hits"]) == 3
    assert cli.main(["evaluate-retrieval", "--model", str(tiny_bert_dir), "--data", str(beir), "--mode", "bm25",
                     "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"ndcg@10", "recall@100", "mrr@10", "n_queries"} <= set(report) and report["n_queries"] == len(TOPICS)
    assert report["ndcg@10"] > 0.5  # BM25 finds the topic words on this toy set
    assert cli.main(["search", "--index", str(out), "--model", str(tiny_bert_dir), "--top-k", "0", "rain"]) == 2
    assert "--top-k" in capsys.readouterr().err


def test_interrupted_build_resumes_without_recomputing(tiny_bert_dir, tmp_path):
    """Kill `textmatch index` after its first shards are on disk; the rerun reuses them."""
    docs = make_corpus(40)  # 240 documents, 24 shards of 10
    beir = write_beir(tmp_path / "beir", docs)
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "textmatch.cli", "index", "--model", str(tiny_bert_dir), "--corpus", str(beir),
           "--output", str(out), "--shard-size", "10", "--batch-size", "2", "--no-progress", "--index-backend", "exact"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    partial = tmp_path / "idx.partial"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(partial.glob("shard-*.npy"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(partial.glob("shard-*.npy"))
    assert 3 <= len(done) < 24, "the build was not interrupted mid-way; make the corpus larger"
    assert not (out / "index.json").exists()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    reused = int(result.stderr.split("reused ")[1].split(" of ")[0])
    assert reused >= len(done) - 1  # a shard being written at the kill may be redone
    meta = json.loads((out / "index.json").read_text())
    assert meta["n_documents"] == 240 and not partial.exists()


@pytest.mark.parametrize("kind", ["exact", "flat", "hnsw"])
def test_tied_scores_are_ordered_by_the_one_rule_on_every_path(model, tmp_path, kind):
    """Copies of one document under different ids tie on every score (dense, BM25, fused); every
    search path lists them by id descending (trec_eval's rule), as the evaluator ranks them."""
    if kind != "exact":
        pytest.importorskip("faiss")
    from textmatch.retrieval.metrics import rank_run
    from textmatch.retrieval.ranking import ranked

    docs = make_corpus(2)
    copies = [{"_id": doc_id, "title": "weather", "text": "rain rain and wind please today"}
              for doc_id in ("w-b", "w-10", "w-9", "w-a", "w-c")]
    retriever = Retriever.build(model, docs + copies, tmp_path / "idx", IndexConfig(index_kind=kind),
                                show_progress_bar=False)
    want = sorted((c["_id"] for c in copies), reverse=True)  # ["w-c", "w-b", "w-a", "w-9", "w-10"]
    orders = {}
    for mode, fusion in (("dense", "rrf"), ("bm25", "rrf"), ("hybrid", "rrf"), ("hybrid", "weighted")):
        hits = retriever.search(["rain wind"], top_k=len(docs) + len(copies), mode=mode, fusion=fusion)[0]
        got = [doc for doc, _ in hits if doc in want]
        scores = {doc: score for doc, score in hits if doc in want}
        if fusion != "rrf" or mode != "hybrid":  # (RRF turns the tie order into distinct ranks)
            assert len(set(scores.values())) == 1, (mode, fusion, scores)  # the copies really tie
        assert got == want, (mode, fusion)
        assert [d for d, _ in hits] == rank_run(dict(hits)) == [d for d, _ in ranked(hits)], (mode, fusion)
        orders[mode, fusion] = got
    assert len({tuple(o) for o in orders.values()}) == 1
    # the cut: asking for fewer than the tied copies keeps the largest ids
    top2 = retriever.search(["rain rain and wind please today"], top_k=2, mode="bm25")[0]
    assert [doc for doc, _ in top2] == want[:2]


def test_symlinks_out_of_a_corpus_folder_are_skipped(tmp_path):
    """A link in the corpus folder to a file outside it (say, the system's password file) is
    not indexed unless asked for; links inside the folder are fine."""
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash")
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Rain\nrain and wind")
    (folder / "passwd.txt").symlink_to(secret)
    (folder / "sub" / "again.md").symlink_to(folder / "a.md")  # inside: kept
    (folder / "outside").symlink_to(tmp_path, target_is_directory=True)
    with pytest.warns(UserWarning, match=r"skipped 2 symbolic link\(s\)"):
        docs = list(read_corpus(folder))
    assert sorted(d["_id"] for d in docs) == ["a.md", "sub/again.md"]
    assert not any("root:x" in d["text"] for d in docs)
    followed = list(read_corpus(folder, follow_symlinks=True))
    assert "passwd.txt" in {d["_id"] for d in followed}
