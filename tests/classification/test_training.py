"""Episodic training: the Trainer learns the synthetic task, logs every step, schedules the
learning rate, stops early, restores the best weights, is reproducible, and refuses bad
arguments with a message that names the fix."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from textmatch import MatchingNetwork, MatchingNetworkConfig, TextMatchError, Trainer, TrainingArguments
from textmatch.classification.training import episode_shape




def make_bilstm(tokenizer_dir) -> MatchingNetwork:
    from transformers import AutoTokenizer

    from textmatch import BiLSTMEncoder

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=32, hidden_size=32, dropout=0.0, max_length=32)
    return MatchingNetwork(encoder, config=MatchingNetworkConfig(temperature=0.1))


def accuracy(pred, gold) -> float:
    return float(np.mean([p == g for p, g in zip(pred, gold)]))


# -- one full run per encoder, shared by the checks below -------------------------------------
def run(model, synthetic, output_dir, learning_rate):
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_episodes=200,
        learning_rate=learning_rate,
        eval_steps=50,
        n_way=4,
        show_progress_bar=False,
    )
    trainer = Trainer(model, args, train_dataset=(train_texts, train_labels), eval_dataset=(valid_texts, valid_labels))
    return model, trainer, trainer.train(), output_dir


@pytest.fixture(scope="module")
def bilstm_run(tiny_tokenizer_dir, synthetic, tmp_path_factory):
    return run(make_bilstm(tiny_tokenizer_dir), synthetic, tmp_path_factory.mktemp("bilstm_run"), 3e-3)


@pytest.fixture(scope="module")
def bert_run(_tiny_bert_model, synthetic, tmp_path_factory):
    return run(copy.deepcopy(_tiny_bert_model), synthetic, tmp_path_factory.mktemp("bert_run"), 1e-3)


@pytest.fixture(params=["bilstm", "bert"])
def trained(request):
    return request.getfixturevalue(f"{request.param}_run")


def test_reaches_high_validation_accuracy(trained):
    _, _, out, _ = trained
    assert out.global_step == 200
    assert out.best_metric is not None and out.best_metric > 0.90
    assert out.best_step in (50, 100, 150, 200)
    assert math.isfinite(out.training_loss) and out.training_loss > 0
    first_eval = next(r for r in out.log_history if "eval_accuracy" in r)
    assert out.best_metric > first_eval["eval_accuracy"] or out.best_step == 50


def test_support_set_fitted_at_end_and_predicts(trained, synthetic):
    model, _, _, _ = trained
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    assert model.support_texts == train_texts
    assert model.classes_ == sorted(set(train_labels))
    assert not model.training
    assert accuracy(model.predict(valid_texts), valid_labels) > 0.85


def test_training_log(trained):
    _, trainer, out, output_dir = trained
    path = output_dir / "training_log.jsonl"
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == list(range(1, 201))
    assert records == out.log_history == trainer.log_history
    for r in records:
        for key in ("loss", "accuracy", "learning_rate", "grad_norm", "temperature"):
            assert math.isfinite(r[key]), (key, r)
        assert r["loss"] >= 0 and 0 <= r["accuracy"] <= 1
        assert r["grad_norm"] >= 0
        is_eval = r["step"] % 50 == 0
        assert ("eval_accuracy" in r) == is_eval
        if is_eval:
            assert 0 <= r["eval_accuracy"] <= 1
            assert math.isfinite(r["eval_loss"]) and r["eval_accuracy_ci95"] >= 0
        assert "early_stopped" not in r
    assert max(r["eval_accuracy"] for r in records if "eval_accuracy" in r) == out.best_metric
    # the model learns: late training episodes beat early ones
    assert np.mean([r["loss"] for r in records[-50:]]) < np.mean([r["loss"] for r in records[:20]])
    assert np.mean([r["accuracy"] for r in records[-50:]]) > np.mean([r["accuracy"] for r in records[:20]])


def test_learning_rate_warmup_then_linear_decay(trained):
    """Hugging Face's linear schedule, logged as the rate each step used: step s (1-based) uses
    lr * (s - 1) / warmup during the warm-up, then lr * (total - s + 1) / (total - warmup)."""
    _, trainer, out, _ = trained
    lrs = np.array([r["learning_rate"] for r in out.log_history])
    total = trainer.args.num_episodes
    warmup = math.ceil(trainer.args.warmup_steps * total)  # 20 of 200 steps
    lr = trainer.args.learning_rate
    expected = [lr * (s - 1) / warmup if s - 1 < warmup else lr * (total - s + 1) / (total - warmup) for s in range(1, total + 1)]
    assert np.allclose(lrs, expected, rtol=1e-9, atol=1e-15)
    assert lrs[0] == 0.0 and int(lrs.argmax()) == warmup and lrs.max() == pytest.approx(lr)


def test_best_weights_restored(trained):
    _, trainer, out, _ = trained
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(out.best_metric, abs=1e-9)


# -- reproducibility ----------------------------------------------------------------------------
def short_run(model, synthetic, seed, **kwargs):
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    args = TrainingArguments(
        num_episodes=kwargs.pop("num_episodes", 20),
        learning_rate=kwargs.pop("learning_rate", 3e-3),
        n_way=4,
        seed=seed,
        show_progress_bar=False,
        **kwargs,
    )
    eval_dataset = (valid_texts, valid_labels) if "eval_steps" in kwargs else None
    trainer = Trainer(model, args, train_dataset=(train_texts, train_labels), eval_dataset=eval_dataset)
    return trainer, trainer.train()


@pytest.mark.parametrize("which", ["bilstm_model", "tiny_bert_model"])
def test_same_seed_same_losses(which, request, synthetic):
    model = request.getfixturevalue(which)
    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    losses_a = [r["loss"] for r in short_run(a, synthetic, seed=7)[1].log_history]
    losses_b = [r["loss"] for r in short_run(b, synthetic, seed=7)[1].log_history]
    losses_c = [r["loss"] for r in short_run(c, synthetic, seed=8)[1].log_history]
    assert len(losses_a) == 20
    assert losses_a == losses_b
    assert losses_a != losses_c
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


# -- early stopping and best weights ------------------------------------------------------------
EARLY = dict(num_episodes=2000, learning_rate=10.0, eval_steps=10, eval_episodes=10, early_stopping_patience=2)


def test_early_stopping_and_best_model(bilstm_model, synthetic, tmp_path):
    best_model = copy.deepcopy(bilstm_model)
    trainer, out = short_run(best_model, synthetic, seed=42, output_dir=str(tmp_path), **EARLY)
    assert out.global_step < 2000
    log = out.log_history
    assert len(log) == out.global_step
    assert log[-1].get("early_stopped") is True
    assert not any(r.get("early_stopped") for r in log[:-1])
    file_records = [json.loads(x) for x in (tmp_path / "training_log.jsonl").read_text().splitlines()]
    assert file_records[-1]["early_stopped"] is True and len(file_records) == out.global_step
    evals = [r["eval_accuracy"] for r in log if "eval_accuracy" in r]
    assert len(evals) == out.global_step // 10
    # stopped after exactly `patience` evaluations without improvement
    best_index = evals.index(max(evals))
    assert len(evals) - 1 - best_index == 2
    assert out.best_step == 10 * (best_index + 1) and out.best_metric == max(evals)
    assert evals[-1] < out.best_metric  # the last evaluation is worse, so restoring matters
    # keep_best_model=True: the model holds the best evaluation's weights
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(out.best_metric, abs=1e-9)

    last_model = copy.deepcopy(bilstm_model)
    trainer_last, out_last = short_run(last_model, synthetic, seed=42, keep_best_model=False, **EARLY)
    assert [r["loss"] for r in out_last.log_history] == [r["loss"] for r in log]
    assert trainer_last.evaluate()["eval_accuracy"] == pytest.approx(evals[-1], abs=1e-9)


def test_no_early_stopping_without_patience(bilstm_model, synthetic):
    _, out = short_run(bilstm_model, synthetic, seed=42, **{**EARLY, "num_episodes": 80, "early_stopping_patience": None})
    assert out.global_step == 80
    assert not any(r.get("early_stopped") for r in out.log_history)


def test_gradient_norm_is_logged_before_clipping(bilstm_model, synthetic):
    _, out = short_run(bilstm_model, synthetic, seed=1, num_episodes=10, max_grad_norm=1e-3)
    norms = [r["grad_norm"] for r in out.log_history]
    assert all(math.isfinite(n) for n in norms)
    assert max(norms) > 1e-3  # the norm before clipping, not the clipped one


def test_no_eval_dataset(bilstm_model, synthetic):
    trainer, out = short_run(bilstm_model, synthetic, seed=1, num_episodes=5)
    assert out.best_metric is None and out.best_step is None
    assert not any("eval_accuracy" in r for r in out.log_history)
    with pytest.raises(TextMatchError, match="no eval_dataset"):
        trainer.evaluate()


def test_fit_support_at_end_can_be_disabled(bilstm_model, synthetic):
    short_run(bilstm_model, synthetic, seed=1, num_episodes=3, fit_support_at_end=False)
    assert bilstm_model.classes_ == []


def test_trains_from_a_datasets_dataset(bilstm_model, synthetic):
    import datasets

    train_texts, train_labels, _, _ = synthetic
    ds = datasets.Dataset.from_dict({"sentence": train_texts, "intent": train_labels})
    args = TrainingArguments(num_episodes=3, learning_rate=1e-3, show_progress_bar=False)
    Trainer(bilstm_model, args, train_dataset=ds, text_column="sentence", label_column="intent").train()
    assert bilstm_model.support_texts == train_texts


# -- bad arguments ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(num_episodes=0), r"num_episodes must be an integer >= 1 or None \(from the data\), got 0"),
        (dict(warmup_steps=-1), r"warmup_steps must be a ratio in \[0, 1\) or a number of steps, got -1"),
        (dict(learning_rate=0.0), r"learning_rate"),
        (dict(n_way=1), r"n_way must be an integer >= 2"),
        (dict(k_shot=0), r"k_shot must be an integer >= 1"),
        (dict(early_stopping_patience=0), r"early_stopping_patience"),
        (dict(load_best_model_at_end=True), r"use keep_best_model=True"),
        (dict(num_episodes=10, max_steps=20), r"set the number of steps with num_episodes"),
        (dict(push_to_hub=True), r"model.push_to_hub"),
        (dict(gradient_accumulation_steps=0), r"gradient_accumulation_steps must be an integer >= 1"),
    ],
)
def test_bad_training_arguments(kwargs, pattern):
    with pytest.raises(TextMatchError, match=pattern):
        TrainingArguments(**kwargs)


def test_class_too_small_for_episode(bilstm_model, synthetic):
    train_texts, train_labels, _, _ = synthetic
    keep = [i for i, y in enumerate(train_labels) if y != "music"]
    music = [i for i, y in enumerate(train_labels) if y == "music"][:5]
    texts = [train_texts[i] for i in keep + music]
    labels = [train_labels[i] for i in keep + music]
    args = TrainingArguments(k_shot=3, q_query=3, show_progress_bar=False)
    with pytest.raises(TextMatchError, match=r"class 'music' has 5 examples but k_shot \+ q_query = 3 \+ 3 = 6"):
        Trainer(bilstm_model, args, train_dataset=(texts, labels))


def test_single_example_class_under_auto_shape(bilstm_model, synthetic):
    train_texts, train_labels, _, _ = synthetic
    texts = train_texts + ["hello"]
    labels = train_labels + ["greeting"]
    with pytest.raises(TextMatchError, match=r"class 'greeting' has 1 example"):
        Trainer(bilstm_model, TrainingArguments(show_progress_bar=False), train_dataset=(texts, labels))


def test_n_way_larger_than_classes(bilstm_model, synthetic):
    train_texts, train_labels, _, _ = synthetic
    with pytest.raises(TextMatchError, match=r"n_way=8 but the data has only 6 classes"):
        Trainer(bilstm_model, TrainingArguments(n_way=8), train_dataset=(train_texts, train_labels))


def test_trainer_input_checks(bilstm_model, synthetic):
    with pytest.raises(TextMatchError, match="needs a train_dataset"):
        Trainer(bilstm_model, TrainingArguments())
    with pytest.raises(TextMatchError, match="needs a MatchingNetwork"):
        Trainer(object(), TrainingArguments(), train_dataset=(["a", "b"], ["x", "y"]))
    with pytest.raises(TextMatchError, match="at least 2 classes"):
        Trainer(bilstm_model, TrainingArguments(), train_dataset=(["a b", "c d", "e f"], ["x", "x", "x"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when no GPU is present")
def test_cuda_without_gpu():
    from textmatch.core.optimization import cpu_flag

    assert cpu_flag("cpu") is True and cpu_flag("auto") is False and cpu_flag(None) is False
    with pytest.raises(TextMatchError, match=r"'cuda' asked for but no CUDA GPU is available; use --device cpu"):
        cpu_flag("cuda")
    with pytest.raises(TextMatchError, match=r"CUDA_VISIBLE_DEVICES=1"):
        cpu_flag("cuda:1")
    with pytest.raises(TextMatchError, match=r"must be 'auto', 'cpu', 'cuda', got 'tpu'"):
        cpu_flag("tpu")


# -- episode shape ------------------------------------------------------------------------------
def labels_with_counts(counts):
    return [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]


@pytest.mark.parametrize(
    "counts, expected",
    [
        ([30] * 6, (6, 5, 5)),
        ([30] * 20, (20, 3, 3)),
        ([10] * 77, (64, 1, 1)),
        ([5] * 150, (64, 1, 1)),
        ([170] * 25, (25, 2, 3)),
        ([3] * 4, (4, 1, 2)),
        ([10, 7, 9], (3, 3, 4)),
        ([2, 50], (2, 1, 1)),
        ([11, 12], (2, 5, 5)),
        ([8] * 17, (17, 3, 4)),
    ],
)
def test_auto_episode_shape(counts, expected):
    labels = labels_with_counts(counts)
    n_way, k_shot, q_query = episode_shape(labels, None, None, None)
    classes, smallest = len(counts), min(counts)
    assert (n_way, k_shot, q_query) == expected
    assert n_way == min(64, classes)
    per_class = min(smallest, max(2, 128 // n_way))
    assert k_shot == min(5, per_class // 2)
    assert q_query == min(5, per_class - k_shot)


def test_episode_shape_keeps_explicit_values():
    labels = labels_with_counts([10, 10, 10])
    assert episode_shape(labels, 2, 3, 4) == (2, 3, 4)
    assert episode_shape(labels, None, 7, None) == (3, 7, 3)
    assert episode_shape(labels, None, None, 8) == (3, 2, 8)
    with pytest.raises(TextMatchError, match="at least 2 classes"):
        episode_shape(["a", "a"], None, None, None)


def test_default_episodes_follow_the_data(bilstm_model, synthetic, tmp_path):
    """num_episodes=None: episode_passes passes over the training texts, within the bounds."""
    from textmatch.classification.training import MAX_EPISODES, MIN_EPISODES, default_episodes

    naive = lambda n, per, passes: min(MAX_EPISODES, max(MIN_EPISODES, -(-passes * n // per)))  # noqa: E731
    for n, per, passes in [(132, 120, 15), (847, 128, 15), (1650, 128, 15), (770, 256, 15), (10, 128, 1), (5000, 128, 2)]:
        assert default_episodes(n, per, passes) == naive(n, per, passes)
    assert default_episodes(847, 128, 15) == 100 and default_episodes(132, 120, 15) == MIN_EPISODES
    texts, labels = synthetic[0][:60], synthetic[1][:60]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), episode_passes=3, show_progress_bar=False, use_cpu=True)
    assert args.num_episodes is None and args.max_steps == -1
    trainer = Trainer(bilstm_model, args, train_dataset=(texts, labels))
    sampler = trainer.train_sampler
    per_episode = sampler.n_way * (sampler.k_shot + sampler.q_query)
    want = naive(len(texts), per_episode, 3)
    assert trainer.args.num_episodes == trainer.args.max_steps == want
    assert args.num_episodes is None  # the user's arguments are left as given
    assert trainer.train().global_step == want
    assert bilstm_model.model_card_data.training_args["num_episodes"] == want
