"""Few-shot evaluation protocols (DESIGN.md section 5): episodic N-way K-shot accuracy with a
95% confidence interval (Vinyals et al. 2016, section 4), and out-of-scope detection with a
threshold chosen on validation data (Larson et al. 2019, CLINC150).

The episodic evaluation encodes every text once (f' and g' of eq. 1) and then scores each
episode from those base embeddings, so 600 episodes cost one pass over the data. Full
Context Embeddings are still applied per episode: g(x_i, S) and f(x, S) depend on the
episode's support set.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.episodes import EpisodeSampler
from ..core.matching import matching_nll
from ..data.loading import as_text_label_lists
from ..errors import TextMatchError


@dataclass
class EpisodicResult:
    """Mean query accuracy over episodes, its 95% CI half-width (1.96 * sd / sqrt(n)), the
    mean matching loss (-log P(y | x, S) of eq. 1 over the queries, averaged over episodes),
    and the accuracy of each episode."""

    accuracy: float
    ci95: float
    n_way: int
    k_shot: int
    q_query: int
    num_episodes: int
    loss: float = math.nan
    episode_accuracies: list[float] = field(default_factory=list, repr=False)


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and normal-approximation 95% CI half-width of `values`."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise TextMatchError("no values to average")
    ci = 1.96 * arr.std(ddof=1) / math.sqrt(arr.size) if arr.size > 1 else 0.0
    return float(arr.mean()), float(ci)


def evaluate_episodes(
    model: Any,
    data: Any,
    n_way: int = 5,
    k_shot: int = 1,
    q_query: int = 5,
    num_episodes: int = 600,
    seed: int = 0,
    classes: Sequence[Hashable] | None = None,
    batch_size: int = 64,
    text_column: str = "text",
    label_column: str = "label",
) -> EpisodicResult:
    """Episodic accuracy of a MatchingNetwork: `num_episodes` episodes of `n_way` classes with
    `k_shot` support and `q_query` query examples each, drawn from `data` (restricted to
    `classes`, e.g. a split's test classes); episode i depends only on (seed, i)."""
    texts, labels = as_text_label_lists(data, text_column, label_column)
    sampler = EpisodeSampler((texts, labels), n_way, k_shot, q_query, seed=seed, classes=classes)
    if num_episodes < 1:
        raise TextMatchError(f"num_episodes must be at least 1, got {num_episodes}")
    used = sampler.rows.tolist()
    position = {row: j for j, row in enumerate(used)}
    subset = [texts[i] for i in used]
    was_training = model.training
    model.eval()
    accs: list[float] = []
    losses: list[float] = []
    try:
        with torch.inference_mode():
            g_base = model.embed(model.support_encoder, subset, batch_size)  # (n_used, dim)
            same = model.query_encoder is model.support_encoder
            f_base = g_base if same else model.embed(model.query_encoder, subset, batch_size)  # (n_used, dim)
            support_labels = torch.arange(n_way, device=g_base.device).repeat_interleave(k_shot)  # (n_way*k,)
            query_labels = torch.arange(n_way, device=g_base.device).repeat_interleave(q_query)  # (n_way*q,)
            for i in range(num_episodes):
                s_rows, q_rows, _ = sampler.episode_indices(i)
                s_idx = torch.tensor([position[r] for r in s_rows.tolist()], device=g_base.device)
                q_idx = torch.tensor([position[r] for r in q_rows.tolist()], device=g_base.device)
                g = model.support_embeddings(g_base[s_idx])  # (n_way*k, dim)
                f = model.query_embeddings(f_base[q_idx], g)  # (n_way*q, dim)
                log_probs = model.log_probs(f, g, support_labels, n_way)  # (n_way*q, n_way)
                accs.append(float((log_probs.argmax(-1) == query_labels).float().mean()))
                losses.append(float(matching_nll(log_probs, query_labels)))
    finally:
        model.train(was_training)
    mean, ci = mean_ci95(accs)
    return EpisodicResult(mean, ci, n_way, k_shot, q_query, num_episodes, float(np.mean(losses)), accs)


# -- out-of-scope detection ------------------------------------------------------------------


def choose_threshold(in_scores: Sequence[float], oos_scores: Sequence[float]) -> float:
    """The confidence threshold that maximises out-of-scope F1 on validation data.

    in_scores: best-class confidence of in-scope texts; oos_scores: the same for out-of-scope
    texts. A text is flagged out-of-scope when its score is below the threshold. Candidates
    are midpoints between consecutive distinct scores (and the ends); ties go to the lower
    threshold (fewer in-scope texts rejected).
    """
    ins = np.asarray(in_scores, dtype=float)
    oos = np.asarray(oos_scores, dtype=float)
    if ins.size == 0 or oos.size == 0:
        raise TextMatchError("choose_threshold needs both in-scope and out-of-scope validation scores")
    values = np.unique(np.concatenate([ins, oos]))  # sorted
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    best_t, best_f1 = float(candidates[0]), -1.0
    for t in candidates:
        tp = float((oos < t).sum())
        fp = float((ins < t).sum())
        fn = float(oos.size - tp)
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def oos_report(
    gold: Sequence[Hashable], predicted: Sequence[Hashable], oos_label: Hashable = "oos"
) -> dict[str, float]:
    """In-scope accuracy (over gold in-scope texts; predicting oos counts as wrong) and
    out-of-scope precision, recall and F1 (oos as the positive class)."""
    if len(gold) != len(predicted):
        raise TextMatchError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    in_scope = [(g, p) for g, p in zip(gold, predicted) if g != oos_label]
    tp = sum(g == oos_label and p == oos_label for g, p in zip(gold, predicted))
    n_pred = sum(p == oos_label for p in predicted)
    n_gold = sum(g == oos_label for g in gold)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return {
        "in_scope_accuracy": sum(g == p for g, p in in_scope) / len(in_scope) if in_scope else 0.0,
        "oos_precision": precision,
        "oos_recall": recall,
        "oos_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "n_in_scope": len(in_scope),
        "n_oos": n_gold,
    }
