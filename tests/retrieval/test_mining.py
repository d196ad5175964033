"""Hard negatives mined by the model (textmatch.retrieval.mining): the pure selection equals a
naive loop, relevant documents are never negatives, and RetrievalTrainer refreshes the pool
with the model at the start of every epoch and puts it into the batches."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
from test_retrieval_training import args, retrieval_task

from textmatch import TextMatchError
from textmatch.retrieval.mining import dense_negatives, mine_model_negatives
from textmatch.retrieval.training import RetrievalTrainer


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def naive_negatives(q_emb, d_emb, qids, dids, positives, n, depth):
    out = {}
    for i, q in enumerate(qids):
        scores = [(float(np.float32(q_emb[i] @ d_emb[j])), dids[j]) for j in range(len(dids))]
        ranked = [d for _, d in sorted(scores, reverse=True)]  # score, then id, descending
        out[q] = [d for d in ranked if d not in positives.get(q, ())][:depth][:n]
    return out


def test_dense_negatives_equal_a_naive_loop():
    rng = np.random.default_rng(0)
    qids = [f"q{i}" for i in range(30)]
    dids = [f"d{i}" for i in range(200)]
    q_emb, d_emb = _unit(rng, 30), _unit(rng, 200)
    positives = {q: random.Random(i).sample(dids, 3) for i, q in enumerate(qids)}
    ours = dense_negatives(q_emb, d_emb, qids, dids, positives, n=5, depth=20, seed=None)
    assert ours == naive_negatives(q_emb, d_emb, qids, dids, positives, 5, 20)
    # a query's own relevant documents never appear, even when they rank first
    q_emb2 = d_emb[[dids.index(positives[q][0]) for q in qids]]
    mined = dense_negatives(q_emb2, d_emb, qids, dids, positives, n=5, depth=20, seed=None)
    assert all(not set(mined[q]) & set(positives[q]) and len(mined[q]) == 5 for q in qids)


def test_seeded_draws_come_from_the_top_depth_in_rank_order():
    rng = np.random.default_rng(1)
    qids, dids = ["a", "b"], [f"d{i:03d}" for i in range(100)]
    q_emb, d_emb = _unit(rng, 2), _unit(rng, 100)
    top = dense_negatives(q_emb, d_emb, qids, dids, {}, n=10, depth=10, seed=None)
    drawn = dense_negatives(q_emb, d_emb, qids, dids, {}, n=3, depth=10, seed=7)
    for q in qids:
        assert set(drawn[q]) <= set(top[q]) and len(drawn[q]) == 3
        assert drawn[q] == [d for d in top[q] if d in drawn[q]]  # rank order kept
    assert drawn == dense_negatives(q_emb, d_emb, qids, dids, {}, n=3, depth=10, seed=7)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be an int >= 1"),
    ({"n": 5, "depth": 2}, "depth must be an int >= n"),
])
def test_dense_negatives_bad_arguments(kwargs, message):
    rng = np.random.default_rng(2)
    with pytest.raises(TextMatchError, match=message):
        dense_negatives(_unit(rng, 1), _unit(rng, 4), ["q"], ["a", "b", "c", "d"], {}, **kwargs)


def test_mismatched_ids_are_an_error():
    rng = np.random.default_rng(3)
    with pytest.raises(TextMatchError, match="one vector per id"):
        dense_negatives(_unit(rng, 2), _unit(rng, 4), ["q"], ["a", "b", "c", "d"], {}, n=1)


def test_mine_model_negatives_uses_the_model_and_restores_its_mode(tiny_bert_model):
    queries, corpus, qrels = retrieval_task()
    keep = sorted(queries)[:20]
    positives = {q: list(qrels[q]) for q in keep}
    tiny_bert_model.train()
    mined = mine_model_negatives(tiny_bert_model, queries, corpus, positives, n=4, depth=4, seed=None)
    assert tiny_bert_model.training
    d_ids = list(corpus)
    with tiny_bert_model.support_encoder.truncated_to(128):
        d_emb = tiny_bert_model.encode([corpus[d] for d in d_ids], role="support")
    q_emb = tiny_bert_model.encode([queries[q] for q in keep], role="query")
    assert mined == dense_negatives(q_emb, d_emb, keep, d_ids, positives, n=4, depth=4, seed=None)


def test_trainer_refreshes_model_negatives_each_epoch(_tiny_bert_model):
    queries, corpus, qrels = retrieval_task()
    train = {q: qrels[q] for q in sorted(queries)[:48]}
    model = copy.deepcopy(_tiny_bert_model)
    trainer = RetrievalTrainer(model, args(num_train_epochs=2, hard_negatives=0, model_negatives=2, mining_depth=5),
                               queries, corpus, train)
    pools = []
    original = trainer.mine_negatives

    def spy():
        pools.append(copy.deepcopy(original()))
        return pools[-1]

    trainer.mine_negatives = spy
    out = trainer.train()
    assert len(pools) == 2  # once per epoch, with the model as it stood then
    assert pools[0] != pools[1]  # the model changed between the epochs (learning rate 1e-3)
    assert trainer.mining_seconds > 0
    assert out.global_step == 6
    # the batches of the last epoch draw 2 negatives per query from its pool, never a positive
    batches = trainer.epoch_batches(random.Random("42:2"), 2)
    for batch in batches:
        for q, negatives in zip(batch.query_ids, batch.negative_ids):
            assert len(negatives) == 2 and set(negatives) <= set(trainer.mined_negatives[q])
            assert not set(negatives) & set(train[q])
    assert model.model_card_data.training_args["model_negatives"] == 2
    # a support set needs something to contrast: batch 1 with model negatives is allowed
    RetrievalTrainer(copy.deepcopy(_tiny_bert_model), args(per_device_train_batch_size=1, hard_negatives=0,
                                                           model_negatives=1), queries, corpus, train)


@pytest.mark.parametrize("field, value", [("model_negatives", -1), ("mining_depth", 0), ("mining_max_length", 1)])
def test_invalid_mining_arguments(field, value):
    from textmatch.retrieval.training import RetrievalTrainingArguments

    with pytest.raises(TextMatchError, match=rf"RetrievalTrainingArguments\.{field} must be"):
        RetrievalTrainingArguments(**{field: value})


def test_cli_model_negatives_reach_the_trainer(tiny_bert_dir, tmp_path, capsys):
    from test_retrieval_training import write_beir_folder

    from textmatch import cli

    queries, corpus, qrels = retrieval_task()
    small = {q: qrels[q] for q in sorted(queries)[:24]}
    beir = write_beir_folder(tmp_path / "beir", {q: queries[q] for q in small}, dict(corpus), small)
    argv = ["train", "--model", str(tiny_bert_dir), "--data", str(beir), "--output", str(tmp_path / "model"),
            "--device", "cpu", "--epochs", "2", "--per-device-train-batch-size", "8", "--model-negatives", "2",
            "--no-progress", "--json"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["model_negatives"] == 2 and report["mining_seconds"] > 0 and report["steps"] == 6
    assert report["arguments"]["model_negatives"] == 2 and report["arguments"]["num_train_epochs"] == 2
    assert cli.main([*argv[:-4], "--model-negatives", "-1", "--output", str(tmp_path / "m2")]) == 2
    assert "model_negatives must be" in capsys.readouterr().err
