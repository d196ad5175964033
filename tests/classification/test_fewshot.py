"""Few-shot protocols: episodic accuracy against a naive per-episode loop, the OOS threshold
against brute force, the OOS report against hand counts."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from textmatch import (
    EpisodeSampler,
    MatchingNetwork,
    MatchingNetworkConfig,
    TextMatchError,
)
from textmatch.classification.fewshot import choose_threshold, evaluate_episodes, mean_ci95, oos_report


def test_episode_indices_match_episode_texts(synthetic):
    texts, labels = synthetic[0], synthetic[1]
    sampler = EpisodeSampler((texts, labels), 4, 2, 3, seed=7)
    for i in range(5):
        s_rows, q_rows, chosen = sampler.episode_indices(i)
        ep = sampler.episode(i)
        assert [texts[r] for r in s_rows] == ep.support_texts
        assert [texts[r] for r in q_rows] == ep.query_texts
        assert [sampler.classes[c] for c in chosen] == ep.classes
        assert ep.support_labels == [j for j in range(4) for _ in range(2)]
        # every row's true label is the class behind its local label
        assert all(labels[r] == ep.classes[y] for r, y in zip(q_rows, ep.query_labels))


def naive_episodic(model, texts, labels, n_way, k_shot, q_query, n, seed):
    """One episode at a time through the model's own predict path (fit + predict)."""
    sampler = EpisodeSampler((texts, labels), n_way, k_shot, q_query, seed=seed)
    accs = []
    for i in range(n):
        ep = sampler.episode(i)
        m = copy.deepcopy(model)
        m.fit(ep.support_texts, ep.support_labels)
        pred = m.predict(ep.query_texts)
        accs.append(float(np.mean([p == y for p, y in zip(pred, ep.query_labels)])))
    return accs


@pytest.mark.parametrize("fce", [False, True])
def test_evaluate_episodes_matches_naive_loop(tiny_bert_dir, synthetic, fce):
    texts, labels = synthetic[2], synthetic[3]
    torch.manual_seed(0)
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), fce=fce, temperature=0.1)
    result = evaluate_episodes(model, (texts, labels), n_way=3, k_shot=2, q_query=2, num_episodes=6, seed=3)
    expected = naive_episodic(model, texts, labels, 3, 2, 2, 6, 3)
    assert result.episode_accuracies == pytest.approx(expected)
    assert result.accuracy == pytest.approx(np.mean(expected))
    sd = np.std(expected, ddof=1)
    assert result.ci95 == pytest.approx(1.96 * sd / math.sqrt(6))
    assert (result.n_way, result.k_shot, result.q_query, result.num_episodes) == (3, 2, 2, 6)


def test_evaluate_episodes_restricts_to_classes(tiny_bert_model, synthetic):
    texts, labels = synthetic[2], synthetic[3]
    r = evaluate_episodes(tiny_bert_model, (texts, labels), n_way=2, k_shot=1, q_query=1, num_episodes=3, classes=["food", "music"])
    assert 0.0 <= r.accuracy <= 1.0
    with pytest.raises(TextMatchError, match="n_way=3 but the data has only 2 classes"):
        evaluate_episodes(tiny_bert_model, (texts, labels), n_way=3, classes=["food", "music"])
    with pytest.raises(TextMatchError, match="num_episodes"):
        evaluate_episodes(tiny_bert_model, (texts, labels), n_way=2, k_shot=1, q_query=1, num_episodes=0)


def test_mean_ci95():
    mean, ci = mean_ci95([0.5, 1.0, 0.75, 1.0])
    assert mean == pytest.approx(0.8125)
    assert ci == pytest.approx(1.96 * np.std([0.5, 1.0, 0.75, 1.0], ddof=1) / 2)
    assert mean_ci95([0.3]) == (0.3, 0.0)
    with pytest.raises(TextMatchError):
        mean_ci95([])


def brute_force_f1(ins, oos, t):
    tp = sum(s < t for s in oos)
    fp = sum(s < t for s in ins)
    fn = len(oos) - tp
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_choose_threshold_maximises_oos_f1():
    rng = np.random.default_rng(0)
    ins = rng.beta(5, 2, size=200)  # in-scope: confident
    oos = rng.beta(2, 4, size=40)  # out-of-scope: less so
    t = choose_threshold(ins, oos)
    grid = np.linspace(0, 1.01, 2001)
    best = max(brute_force_f1(ins, oos, g) for g in grid)
    assert brute_force_f1(ins, oos, t) == pytest.approx(best)
    assert brute_force_f1(ins, oos, t) > 0.5


def test_choose_threshold_separable_and_errors():
    t = choose_threshold([0.9, 0.8, 0.95], [0.1, 0.3])
    assert 0.3 < t < 0.8  # rejects every OOS text and no in-scope one
    with pytest.raises(TextMatchError, match="in-scope and out-of-scope"):
        choose_threshold([], [0.1])


def test_oos_report_counts():
    gold = ["a", "b", "a", "oos", "oos", "oos"]
    pred = ["a", "oos", "b", "oos", "a", "oos"]
    r = oos_report(gold, pred)
    assert r["in_scope_accuracy"] == pytest.approx(1 / 3)
    assert r["oos_precision"] == pytest.approx(2 / 3)
    assert r["oos_recall"] == pytest.approx(2 / 3)
    assert r["oos_f1"] == pytest.approx(2 / 3)
    assert (r["n_in_scope"], r["n_oos"]) == (3, 3)
    with pytest.raises(TextMatchError, match="gold labels"):
        oos_report(["a"], [])


def test_threshold_applies_to_model_predictions(tiny_bert_model, synthetic):
    """The benchmark's OOS rule (best class probability below the threshold -> oos) is the
    model's own threshold rule."""
    texts, labels, vt, _ = synthetic
    model = tiny_bert_model.fit(texts[::3], labels[::3])
    probs = model.predict_proba(vt[:10])
    t = float(np.median(probs.max(1)))
    ours = [model.classes_[i] if p.max() >= t else "oos" for i, p in zip(probs.argmax(1), probs)]
    assert model.predict(vt[:10], threshold=t) == ours
    assert MatchingNetworkConfig().threshold_metric == "probability"
