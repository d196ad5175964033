"""Retrieval training on Hugging Face's Trainer: the matching loss over in-batch and hard
negatives teaches the tiny BERT a synthetic retrieval task (held-out queries), equals a naive
loss and a naive training loop, masks documents relevant to a query that are not its target,
warns about unknown ids, is reproducible, and resumes from a checkpoint exactly."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import shutil
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILLER, TOPICS
from transformers import get_linear_schedule_with_warmup

from textmatch import MatchingNetwork, TextMatchError
from textmatch.core.optimization import make_optimizer
from textmatch.retrieval.training import (
    RECIPE_FIELDS,
    RetrievalBatch,
    RetrievalTrainer,
    RetrievalTrainingArguments,
)

ALL_WORDS = [w for words in TOPICS.values() for w in words]


def retrieval_task(seed: int = 0):
    """Queries are two topic words; each has one document: both words, a third topic word and
    6-9 filler words, shuffled. 630 queries and documents; ids are "a-b" and "d-a-b"."""
    rng = random.Random(seed)
    queries, corpus, qrels = {}, {}, {}
    for a, b in itertools.combinations(ALL_WORDS, 2):
        qid = f"{a}-{b}"
        queries[qid] = f"{a} {b}"
        other = rng.choice([w for w in ALL_WORDS if w not in (a, b)])
        parts = [a, b, other] + rng.sample(FILLER, rng.randint(6, 9))
        rng.shuffle(parts)
        corpus[f"d-{qid}"] = " ".join(parts)
        qrels[qid] = {f"d-{qid}": 1}
    return queries, corpus, qrels


def mrr_at_10(model, queries, corpus, qrels, query_ids) -> float:
    """Exact cosine search over the whole corpus, reciprocal rank of the first relevant doc."""
    doc_ids = list(corpus)
    docs = model.encode([corpus[d] for d in doc_ids], role="support")
    total = 0.0
    for qid in query_ids:
        q = model.encode(queries[qid], role="query")
        scores = [float(np.dot(q, d)) for d in docs]
        ranked = sorted(range(len(doc_ids)), key=lambda j: -scores[j])[:10]
        for rank, j in enumerate(ranked, 1):
            if doc_ids[j] in qrels[qid]:
                total += 1.0 / rank
                break
    return total / len(query_ids)


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Hugging Face's Trainer creates its default output_dir ("trainer_output") in the working
    directory when none is given: keep that out of the repository."""
    monkeypatch.chdir(tmp_path)


def args(**kwargs) -> RetrievalTrainingArguments:
    defaults = {"per_device_train_batch_size": 16, "learning_rate": 1e-3, "show_progress_bar": False, "use_cpu": True}
    return RetrievalTrainingArguments(**{**defaults, **kwargs})


@pytest.fixture(scope="module")
def task():
    queries, corpus, qrels = retrieval_task()
    ids = sorted(queries)
    random.Random(1).shuffle(ids)
    test_ids, train_ids = ids[:100], ids[100:]
    train_qrels = {q: qrels[q] for q in train_ids}
    # hard negatives: documents of the other queries that share a word with this one
    hard = {q: [f"d-{o}" for o in train_ids if o != q and set(o.split("-")) & set(q.split("-"))] for q in train_ids}
    return queries, corpus, qrels, train_qrels, hard, test_ids


@pytest.fixture(scope="module")
def trained(_tiny_bert_model, task, tmp_path_factory):
    queries, corpus, qrels, train_qrels, hard, test_ids = task
    model = copy.deepcopy(_tiny_bert_model)
    model.fit(["rain today", "song now", "pizza please"], ["weather", "music", "food"])  # a stored support set
    before = mrr_at_10(model, queries, corpus, qrels, test_ids)
    output_dir = tmp_path_factory.mktemp("retrieval_run")
    model._runners = {"sentinel": object()}  # a stale ONNX session must be dropped by train()
    trainer = RetrievalTrainer(model, args(output_dir=str(output_dir), max_steps=100, hard_negatives=1), queries, corpus, train_qrels, hard)
    out = trainer.train()
    after = mrr_at_10(model, queries, corpus, qrels, test_ids)
    return model, trainer, out, output_dir, before, after


# -- learning -------------------------------------------------------------------------------
def test_training_raises_heldout_mrr(trained):
    _, _, out, _, before, after = trained
    # measured: 0.05 before, 0.39-0.44 after (training seeds 0, 1, 7, 42)
    assert before < 0.15
    assert after > 0.25 and after > before + 0.2, (before, after)
    assert out.global_step == 100
    assert math.isfinite(out.training_loss) and out.training_loss > 0
    first, last = out.log_history[:10], out.log_history[-10:]
    assert np.mean([r["loss"] for r in last]) < np.mean([r["loss"] for r in first])


def test_log_schedule_and_final_state(trained):
    model, trainer, out, output_dir, _, _ = trained
    lines = [json.loads(line) for line in (output_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 100 and [r["step"] for r in lines] == list(range(1, 101))
    assert lines == out.log_history == trainer.log_history
    assert list(lines[0]) == ["step", "epoch", "loss", "accuracy", "support_size", "learning_rate", "grad_norm", "temperature"]
    # 530 training queries in batches of 16: 34 steps per epoch, so 100 steps span 3 epochs
    assert trainer.steps_per_epoch == 34 and lines[-1]["epoch"] == 3
    assert [r["epoch"] for r in lines] == [1] * 34 + [2] * 34 + [3] * 32
    # the last batch of an epoch holds the 530 - 33 * 16 = 2 queries left
    assert lines[33]["support_size"] < 16 and lines[34]["support_size"] >= 16
    lrs = [r["learning_rate"] for r in lines]
    # the rate each step used, Hugging Face's linear schedule: warm-up over 10 % of the steps
    # (from 0 at the first step to 1e-3 at step index 10), then linear decay towards 0
    warmup = 10
    assert lrs[0] == 0.0 and int(np.argmax(lrs)) == warmup and math.isclose(lrs[warmup], 1e-3)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=100)
    expected = []
    for _ in range(100):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert all(math.isclose(lrs[k], 1e-3 * k / warmup) for k in range(warmup))
    assert all(math.isclose(lrs[k], 1e-3 * (100 - k) / 90) for k in range(warmup, 100))
    assert all(r["support_size"] >= 16 for r in lines[:33])  # 16 positives + hard negatives (deduplicated)
    assert not model.training and model._runners == {}
    assert out.best_metric is None and out.train_runtime > 0
    assert model.model_card_data.training_args["objective"] == "retrieval"
    # the stored support set was re-encoded with the trained g'
    fresh = model.encode(model.support_texts, role="support", normalize_embeddings=False, convert_to_tensor=True)
    assert torch.allclose(model._support_base, fresh, atol=1e-5)


# -- the loss -------------------------------------------------------------------------------
SMALL_QUERIES = {"q1": "rain forecast", "q2": "song album", "q3": "pizza dinner", "q4": "flight hotel"}
SMALL_CORPUS = {
    "d1": "the rain forecast for today",
    "d2": "a song from my album",
    "d3": "pizza for dinner please",
    "d4": "a flight and a hotel",
    "shared": "rain and a song now",
    "n1": "what is the snow forecast",
    "n2": "my guitar band",
    "n3": "salad for lunch",
}
# q1 and q2 both have "shared" as a relevant doc; q3 has two relevant docs
SMALL_QRELS = {"q1": {"d1": 1, "shared": 1}, "q2": {"d2": 1, "shared": 2}, "q3": {"d3": 1, "n3": 1}, "q4": {"d4": 1, "x": 0}}


def naive_loss(model, queries, corpus, qrels, query_ids, positive_ids, negative_ids) -> float:
    """Per query: softmax over the batch's distinct documents of cos / tau, without the query's
    other relevant documents; mean of -log P(positive)."""
    tau = float(model.temperature)
    support = []
    for d in list(positive_ids) + [d for negs in negative_ids for d in negs]:
        if d not in support:
            support.append(d)
    doc_emb = {d: model.encode(corpus[d], role="support") for d in support}
    losses = []
    for qid, pos in zip(query_ids, positive_ids):
        q = model.encode(queries[qid], role="query")
        scores = {d: float(np.dot(q, doc_emb[d])) / tau for d in support if d == pos or qrels[qid].get(d, 0) <= 0}
        denominator = sum(math.exp(s) for s in scores.values())
        losses.append(-math.log(math.exp(scores[pos]) / denominator))
    return sum(losses) / len(losses)


def small_trainer(model, **kwargs) -> RetrievalTrainer:
    return RetrievalTrainer(model, args(**kwargs), SMALL_QUERIES, SMALL_CORPUS, SMALL_QRELS, {"q1": ["n1", "d2"], "q2": ["n2"], "q4": ["d3"]})


@pytest.mark.parametrize(
    "batch",
    [
        (["q1", "q2", "q3", "q4"], ["d1", "shared", "d3", "d4"], [["n1"], ["n2"], [], ["n3"]]),
        (["q1", "q2", "q3"], ["shared", "shared", "n3"], [["n1", "d2"], [], ["d3"]]),
        (["q3", "q4"], ["d3", "d4"], [[], []]),
    ],
)
def test_loss_equals_naive_loop(tiny_bert_model, batch):
    query_ids, positive_ids, negative_ids = batch
    trainer = small_trainer(tiny_bert_model)
    tiny_bert_model.eval()  # no dropout: the two computations see the same network
    with torch.no_grad():
        loss = float(trainer.batch_loss(query_ids, positive_ids, negative_ids))
    expected = naive_loss(tiny_bert_model, SMALL_QUERIES, SMALL_CORPUS, SMALL_QRELS, query_ids, positive_ids, negative_ids)
    assert loss == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_loss_has_gradients(tiny_bert_model):
    trainer = small_trainer(tiny_bert_model)
    tiny_bert_model.train()
    loss = trainer.batch_loss(["q1", "q2"], ["d1", "d2"], [["n1"], []])
    loss.backward()
    grads = [p.grad for p in tiny_bert_model.query_encoder.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_shared_positive_is_masked(tiny_bert_model):
    trainer = small_trainer(tiny_bert_model)
    tiny_bert_model.eval()
    # q1 trains on d1; "shared" (q2's target) is relevant to q1 too: masked for q1 only
    with torch.no_grad():
        logits, targets, doc_ids = trainer.batch_logits(["q1", "q2"], ["d1", "shared"], [["n1"], []])
    assert doc_ids == ["d1", "shared", "n1"] and targets.tolist() == [0, 1]
    assert logits[0, 1] == float("-inf") and torch.isfinite(logits[0, [0, 2]]).all()
    assert torch.isfinite(logits[1]).all()  # d1 and n1 are q2's negatives
    # roles swapped: q1 trains on "shared", q2 on d2; now "shared" is masked for q2
    _, _, mask = trainer.support_set(["q1", "q2"], ["shared", "d2"])
    assert mask.tolist() == [[False, False], [True, False]]
    # both queries drew the shared document: one column, the target of both, nothing masked
    doc_ids, targets, mask = trainer.support_set(["q1", "q2"], ["shared", "shared"], [["d1"], ["d2"]])
    assert doc_ids == ["shared", "d1", "d2"] and targets.tolist() == [0, 0]
    assert mask.tolist() == [[False, True, False], [False, False, True]]  # each one's other positive
    # a hard negative of q1 (d2) that is q2's positive is one column, a negative for q1 only
    doc_ids, targets, mask = trainer.support_set(["q1", "q2"], ["d1", "d2"], [["d2"], []])
    assert doc_ids == ["d1", "d2"] and not mask.any()


def test_batches_sample_positives_and_negatives(tiny_bert_model):
    trainer = small_trainer(tiny_bert_model, per_device_train_batch_size=3, hard_negatives=1)
    assert trainer.positives == {"q1": ["d1", "shared"], "q2": ["d2", "shared"], "q3": ["d3", "n3"], "q4": ["d4"]}
    # hard negatives never include a query's own positives; "x" had score 0 and is no positive
    assert trainer.hard_negatives == {"q1": ["n1", "d2"], "q2": ["n2"], "q4": ["d3"]}
    rng = random.Random(0)
    drawn = {q: set() for q in SMALL_QUERIES}
    for _ in range(20):
        batches = trainer.epoch_batches(rng)
        assert [len(b.query_ids) for b in batches] == [3, 1]
        assert sorted(q for b in batches for q in b.query_ids) == sorted(SMALL_QUERIES)
        for b in batches:
            assert isinstance(b, RetrievalBatch)
            for q, pos, negs in zip(b.query_ids, b.positive_ids, b.negative_ids):
                assert pos in trainer.positives[q]
                drawn[q].add(pos)
                assert len(negs) == (1 if q in trainer.hard_negatives else 0)
                assert set(negs) <= set(trainer.hard_negatives.get(q, []))
    assert drawn == {q: set(p) for q, p in trainer.positives.items()}  # every positive is used


def test_lengths_are_truncated_during_training(tiny_bert_model):
    trainer = small_trainer(tiny_bert_model, query_max_length=3, doc_max_length=5)
    encoder = tiny_bert_model.query_encoder
    assert encoder is tiny_bert_model.support_encoder
    seen = []
    tokenize = encoder.tokenize

    def spy(texts):
        features = tokenize(texts)
        seen.append(features["input_ids"].shape[1])
        return features

    encoder.tokenize = spy
    with torch.no_grad():
        trainer.batch_loss(["q1", "q4"], ["d1", "d4"])
    assert seen == [3, 5]
    assert encoder.max_length == 64  # restored


# -- training runs --------------------------------------------------------------------------
def test_num_epochs_and_in_batch_only(tiny_bert_model, task):
    queries, corpus, _, train_qrels, _, _ = task
    small = dict(list(train_qrels.items())[:40])
    out = RetrievalTrainer(tiny_bert_model, args(num_train_epochs=2, hard_negatives=0), queries, corpus, small).train()
    assert out.global_step == 2 * 3  # 40 queries in batches of 16
    assert [r["epoch"] for r in out.log_history] == [1, 1, 1, 2, 2, 2]
    assert [r["support_size"] for r in out.log_history[:3]] == [16, 16, 8]


def test_deterministic_with_a_seed(_tiny_bert_model, task):
    queries, corpus, _, train_qrels, hard, _ = task

    def run(seed):
        model = copy.deepcopy(_tiny_bert_model)
        out = RetrievalTrainer(model, args(max_steps=5, seed=seed), queries, corpus, train_qrels, hard).train()
        return [r["loss"] for r in out.log_history], model.state_dict()

    losses_a, state_a = run(3)
    losses_b, state_b = run(3)
    losses_c, _ = run(4)
    assert losses_a == losses_b
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert losses_a != losses_c


def test_batches_are_the_run_unrolled_by_index(tiny_bert_model, task):
    """Item i of the dataset is batch i % steps_per_epoch of epoch i // steps_per_epoch + 1,
    drawn with random.Random(f"{seed}:{epoch}"): it depends on (seed, i) only."""
    queries, corpus, _, train_qrels, hard, _ = task
    small = dict(list(train_qrels.items())[:40])
    user_args = args(num_train_epochs=2.5, per_device_train_batch_size=16, gradient_accumulation_steps=2, seed=5)
    trainer = RetrievalTrainer(tiny_bert_model, user_args, queries, corpus, small, hard)
    # 3 batches per epoch, 2.5 epochs = 7.5 batches, 2 batches per optimizer step: 4 steps, 8 batches
    assert trainer.steps_per_epoch == 3 and trainer.total_steps == 4 and len(trainer.train_dataset) == 8
    assert user_args.max_steps == -1 and trainer.args is not user_args and trainer.args.max_steps == 4
    items = [trainer.train_dataset[i] for i in reversed(range(8))][::-1]  # any access order
    for epoch in (1, 2, 3):
        expected = trainer.epoch_batches(random.Random(f"5:{epoch}"), epoch)
        assert items[3 * (epoch - 1) : 3 * epoch] == expected[: len(items[3 * (epoch - 1) : 3 * epoch])]
    assert [b.epoch for b in items] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert [len(b.query_ids) for b in items] == [16, 16, 8] * 2 + [16, 16]  # no batch spans two epochs
    with pytest.raises(IndexError):
        trainer.train_dataset[8]
    inputs = trainer.data_collator([items[2]])
    assert set(inputs) == {"objective", "queries", "documents", "targets", "mask"}  # MatchingNetwork.forward's
    assert inputs["objective"] == "retrieval"
    assert inputs["targets"].dtype == torch.long and inputs["mask"].dtype == torch.bool
    assert inputs["mask"].shape == (8, len(trainer.support_set(*astuple(items[2])[:3])[0]))
    out = trainer.train()
    assert out.global_step == 4 and [r["epoch"] for r in out.log_history] == [1, 2, 2, 3]


def without_dropout(model: MatchingNetwork) -> MatchingNetwork:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def test_training_steps_equal_a_naive_loop(_tiny_bert_model, task, tmp_path):
    """The Trainer's first steps: the loss, accuracy and gradient norm of a plain torch loop
    (same batches, same objective, AdamW with the same groups, linear schedule, clipping)."""
    queries, corpus, _, train_qrels, hard, _ = task
    steps, lr, head_lr, weight_decay, max_norm = 5, 1e-3, 1e-3, 0.01, 1.0
    model = without_dropout(copy.deepcopy(_tiny_bert_model))
    reference = without_dropout(copy.deepcopy(_tiny_bert_model))
    trainer = RetrievalTrainer(
        model,
        args(output_dir=str(tmp_path), max_steps=steps, warmup_steps=0, per_device_train_batch_size=8, learning_rate=lr,
             head_learning_rate=head_lr, weight_decay=weight_decay, max_grad_norm=max_norm, query_max_length=8, doc_max_length=16),
        queries, corpus, train_qrels, hard,
    )
    batches = [trainer.train_dataset[i] for i in range(steps)]
    out = trainer.train()

    optimizer = make_optimizer(reference, lr, head_lr, weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=0, num_training_steps=steps)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    reference.train()
    expected = []
    for batch in batches:
        doc_ids, targets, mask = trainer.support_set(batch.query_ids, batch.positive_ids, batch.negative_ids)
        with reference.query_encoder.truncated_to(8):
            f = reference.embed(reference.query_encoder, [queries[q] for q in batch.query_ids])
        with reference.support_encoder.truncated_to(16):
            g = reference.embed(reference.support_encoder, [corpus[d] for d in doc_ids])
        logits = torch.nn.functional.normalize(f, dim=-1) @ torch.nn.functional.normalize(g, dim=-1).T
        logits = (logits / reference.temperature).masked_fill(mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        accuracy = float((logits.argmax(-1) == targets).float().mean())
        expected.append((float(loss.detach()), accuracy, grad_norm))

    got = [(r["loss"], r["accuracy"], r["grad_norm"]) for r in out.log_history]
    assert len(got) == steps
    for (loss, accuracy, grad_norm), (loss_ref, accuracy_ref, grad_norm_ref) in zip(got, expected):
        assert loss == pytest.approx(loss_ref, abs=1e-4)
        assert accuracy == pytest.approx(accuracy_ref, abs=1e-6)
        assert grad_norm == pytest.approx(grad_norm_ref, rel=1e-4, abs=1e-4)
    assert expected[-1][0] < expected[0][0]  # it trains
    for name, value in model.state_dict().items():
        assert torch.allclose(value, reference.state_dict()[name], atol=1e-4), name


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(_tiny_bert_model, task, tmp_path):
    queries, corpus, _, train_qrels, hard, _ = task
    small = dict(list(train_qrels.items())[:40])  # 5 batches of 8 per epoch: the run spans 2 epochs
    run_dir = tmp_path / "run"

    def trainer_for(model):
        return RetrievalTrainer(
            model,
            args(output_dir=str(run_dir), max_steps=6, per_device_train_batch_size=8, save_strategy="steps", save_steps=3),
            queries, corpus, small, hard,
        )

    uninterrupted = copy.deepcopy(_tiny_bert_model)  # with dropout: the resumed run restores the RNG states
    out = trainer_for(uninterrupted).train()
    log = (run_dir / "training_log.jsonl").read_text(encoding="utf-8")
    assert out.global_step == 6 and {p.name for p in run_dir.glob("checkpoint-*")} == {"checkpoint-3", "checkpoint-6"}
    shutil.rmtree(run_dir / "checkpoint-6")

    resumed = copy.deepcopy(_tiny_bert_model)
    trainer = trainer_for(resumed)
    out_resumed = trainer.train(resume_from_checkpoint=True)
    assert out_resumed.global_step == 6
    for name, value in uninterrupted.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], value, atol=1e-6), name
    records = [json.loads(line) for line in log.splitlines()]
    records_resumed = [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert records_resumed == trainer.log_history
    assert [r["step"] for r in records_resumed] == [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["epoch"] for r in records_resumed] == [r["epoch"] for r in records] == [1, 1, 1, 1, 1, 2]
    for a, b in zip(records_resumed, records):
        assert list(a) == list(b)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], abs=1e-5)
        assert {k: a[k] for k in ("accuracy", "support_size", "learning_rate", "temperature")} == {
            k: b[k] for k in ("accuracy", "support_size", "learning_rate", "temperature")
        }


def write_beir_folder(folder, queries, corpus, qrels):
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for did, text in corpus.items():
            fh.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / "train.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, score in docs.items():
                fh.write(f"{qid}\t{did}\t{score}\n")
    return folder


def test_cli_train_data_saves_reports_and_resumes(tiny_bert_dir, task, tmp_path, capsys):
    from textmatch import cli

    queries, corpus, _, train_qrels, _, _ = task
    small = dict(list(train_qrels.items())[:24])
    beir = write_beir_folder(tmp_path / "beir", {q: queries[q] for q in small}, {d: corpus[d] for q in small for d in small[q]}, small)
    output = tmp_path / "model"
    argv = ["train", "--model", str(tiny_bert_dir), "--data", str(beir), "--output", str(output), "--device", "cpu",
            "--max-steps", "4", "--save-steps", "2", "--lr", "1e-3", "--hard-negatives", "1", "--no-progress", "--json"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 4 and summary["n_queries"] == 24 and summary["processes"] == 1
    run_dir = tmp_path / "model.run"
    assert summary["run_dir"] == str(run_dir)
    assert summary["training_curves"] == str(run_dir / "training_curves.png")
    assert (run_dir / "training_curves.png").stat().st_size > 5000
    assert summary["arguments"]["max_steps"] == 4 and summary["arguments"]["learning_rate"] == 1e-3
    assert set(summary["arguments"]) >= set(RECIPE_FIELDS) | {"per_device_train_batch_size", "seed"}
    trained = MatchingNetwork.from_pretrained(str(output))
    assert trained.model_card_data.training_args["objective"] == "retrieval"
    assert len((run_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()) == 4
    assert (run_dir / "checkpoint-2").is_dir() and (run_dir / "checkpoint-4").is_dir()
    log = (run_dir / "training_log.jsonl").read_text(encoding="utf-8")

    shutil.rmtree(run_dir / "checkpoint-4")
    assert cli.main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["steps"] == 4
    resumed = [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed] == pytest.approx([json.loads(line)["loss"] for line in log.splitlines()], abs=1e-6)


def test_cli_batch_size_and_hard_negatives_reach_the_trainer(tiny_bert_dir, task, tmp_path, capsys):
    """--per-device-train-batch-size sets the queries per step; --hard-negatives N mines N per
    query and trains on all N each step (not 1 of them)."""
    from textmatch import cli

    queries, corpus, _, train_qrels, _, _ = task
    small = dict(list(train_qrels.items())[:24])
    beir = write_beir_folder(tmp_path / "beir", {q: queries[q] for q in small}, dict(corpus), small)
    argv = ["train", "--model", str(tiny_bert_dir), "--data", str(beir), "--output", str(tmp_path / "model"),
            "--device", "cpu", "--max-steps", "2", "--per-device-train-batch-size", "4", "--hard-negatives", "3",
            "--no-progress", "--json"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    arguments = json.loads(capsys.readouterr().out)["arguments"]
    assert arguments["per_device_train_batch_size"] == 4 and arguments["hard_negatives"] == 3
    records = [json.loads(x) for x in (tmp_path / "model.run" / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
    # 4 positives and up to 3 mined negatives for each of the 4 queries (deduplicated)
    assert all(4 < r["support_size"] <= 16 for r in records), [r["support_size"] for r in records]
    assert cli.main([*argv[:-4], "--per-device-train-batch-size", "0"]) == 2
    assert "--per-device-train-batch-size must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.stress
def test_two_gloo_processes_equal_one_with_accumulation(task, tmp_path):
    """`torchrun --nproc_per_node 2 textmatch train --data`: each process trains on its own
    batches (in-batch negatives per process), DDP averages the gradients, so the run equals one
    process with gradient accumulation 2 (a dropout-free model: no RNG in the weights); only the
    main process logs, saves and reports."""
    import os
    import subprocess
    import sys

    from conftest import write_vocab
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok_dir = tmp_path / "bert"
    vocab_file = write_vocab(tmp_path / "vocab.txt")
    vocab = {w: i for i, w in enumerate(vocab_file.read_text(encoding="utf-8").split())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)).save_pretrained(str(tok_dir))
    tok.save_pretrained(str(tok_dir))
    queries, corpus, _, train_qrels, _, _ = task
    small = dict(list(train_qrels.items())[:40])
    beir = write_beir_folder(tmp_path / "beir", {q: queries[q] for q in small}, {d: corpus[d] for q in small for d in small[q]}, small)
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(repo)}

    def train(launcher, output, *extra):
        cmd = [*launcher, "-m", "textmatch.cli", "train", "--model", str(tok_dir), "--data", str(beir), "--output", str(output),
               "--epochs", "2", "--lr", "1e-3", "--hard-negatives", "0", "--device", "cpu", "--no-progress", "--json", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.count('"output"') == 1, done.stdout  # one summary: only the main process reports
        return json.loads(done.stdout)

    two = train([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], tmp_path / "two")
    one = train([sys.executable], tmp_path / "one", "--gradient-accumulation-steps", "2")
    assert (two["processes"], one["processes"]) == (2, 1)
    # 16 queries per batch: 40 queries = 3 batches per epoch; 2 epochs = 6 batches, 2 per step
    assert two["steps"] == one["steps"] == 3
    a, b = load_file(str(tmp_path / "two" / "model.safetensors")), load_file(str(tmp_path / "one" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    logs = [[json.loads(line) for line in (tmp_path / f"{name}.run" / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]
            for name in ("two", "one")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3]
    for r2, r1 in zip(*logs):
        assert r2["loss"] == pytest.approx(r1["loss"], abs=1e-5) and r2["accuracy"] == pytest.approx(r1["accuracy"], abs=1e-6)
        assert r2["learning_rate"] == r1["learning_rate"] and r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)


# -- validation -----------------------------------------------------------------------------
def test_unknown_ids_warn_and_are_dropped(tiny_bert_model):
    qrels = {**SMALL_QRELS, "q1": {"d1": 1, "nope": 1}, "ghost": {"d2": 1, "gone": 1}}
    with pytest.warns(UserWarning, match=r"dropped 3 relevant pair\(s\) naming 1 unknown query id\(s\).*2 unknown doc id\(s\)"):
        trainer = RetrievalTrainer(tiny_bert_model, args(), SMALL_QUERIES, SMALL_CORPUS, qrels)
    assert trainer.positives["q1"] == ["d1"] and "ghost" not in trainer.positives
    with pytest.warns(UserWarning, match="dropped 2 doc id"):
        trainer = RetrievalTrainer(tiny_bert_model, args(), SMALL_QUERIES, SMALL_CORPUS, SMALL_QRELS, {"q1": ["n1", "zz", "yy"]})
    assert trainer.hard_negatives == {"q1": ["n1"]}
    with pytest.warns(UserWarning, match="args.hard_negatives is 0"):
        RetrievalTrainer(tiny_bert_model, args(hard_negatives=0), SMALL_QUERIES, SMALL_CORPUS, SMALL_QRELS, {"q1": ["n1"]})


def test_no_training_pairs_is_an_error(tiny_bert_model):
    with pytest.warns(UserWarning, match="dropped"), pytest.raises(TextMatchError, match="no training pairs"):
        RetrievalTrainer(tiny_bert_model, args(), SMALL_QUERIES, SMALL_CORPUS, {"ghost": {"d1": 1}})
    with pytest.raises(TextMatchError, match="no training pairs"):
        RetrievalTrainer(tiny_bert_model, args(), SMALL_QUERIES, SMALL_CORPUS, {"q1": {"d1": 0}})
    with pytest.raises(TextMatchError, match="nothing to contrast"):
        RetrievalTrainer(tiny_bert_model, args(per_device_train_batch_size=1, hard_negatives=0), SMALL_QUERIES, SMALL_CORPUS, SMALL_QRELS)
    with pytest.raises(TextMatchError, match="mapping"):
        RetrievalTrainer(tiny_bert_model, args(), list(SMALL_QUERIES), SMALL_CORPUS, SMALL_QRELS)


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_train_epochs", 0),
        ("num_train_epochs", float("nan")),
        ("max_steps", 0),
        ("max_steps", -2),
        ("max_steps", 1.5),
        ("per_device_train_batch_size", 0),
        ("learning_rate", 0.0),
        ("weight_decay", -1.0),
        ("warmup_steps", -0.5),
        ("max_grad_norm", 0.0),
        ("hard_negatives", -1),
        ("query_max_length", 1),
        ("doc_max_length", 0),
        ("encode_batch_size", 0),
    ],
)
def test_invalid_arguments(field, value):
    with pytest.raises(TextMatchError, match=rf"RetrievalTrainingArguments\.{field} must be"):
        RetrievalTrainingArguments(**{field: value})


def test_arguments_defaults_and_recipe():
    a = RetrievalTrainingArguments()
    assert (a.num_train_epochs, a.max_steps, a.per_device_train_batch_size) == (2, -1, 16)
    assert a.model_negatives == 0
    assert (a.hard_negatives, a.query_max_length, a.doc_max_length, a.learning_rate) == (1, 64, 256, 2e-5)
    assert a.to_dict()["doc_max_length"] == 256
    recipe = RetrievalTrainingArguments(max_steps=7, hard_negatives=3).recipe(RECIPE_FIELDS)
    assert recipe["max_steps"] == 7 and recipe["hard_negatives"] == 3 and recipe["per_device_train_batch_size"] == 16
    assert "output_dir" not in recipe and "use_cpu" not in recipe
