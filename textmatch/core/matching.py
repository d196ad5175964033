"""The matching layer of Matching Networks as pure tensor functions.

Vinyals et al. 2016, "Matching Networks for One Shot Learning" (arXiv 1606.04080):

    P(y | x, S) = sum_i a(x, x_i) y_i                               (eq. 1)
    a(x, x_i)   = exp(c(f(x), g(x_i))) / sum_j exp(c(f(x), g(x_j)))  (eq. 2)

with c a similarity (cosine in the paper) divided here by a temperature tau. Everything is
computed in log space: log P(y=c | x, S) = logsumexp_{i: y_i = c} s_i - logsumexp_i s_i,
where s_i = c(f(x), g(x_i)) / tau, which never under- or overflows.

Variants (options, not separate code paths): prototype aggregation (Snell et al. 2017),
where each class is represented by the mean of its support embeddings, and a negative
squared Euclidean distance instead of the cosine.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import TextMatchError

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")


def cosine_similarity_matrix(queries: torch.Tensor, supports: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every query with every support embedding (the c of eq. 2).

    queries: (n_query, dim), supports: (n_support, dim) -> (n_query, n_support)
    """
    q = queries / queries.norm(dim=-1, keepdim=True).clamp_min(eps)  # (n_query, dim)
    s = supports / supports.norm(dim=-1, keepdim=True).clamp_min(eps)  # (n_support, dim)
    return q @ s.T  # (n_query, n_support)


def neg_squared_euclidean(queries: torch.Tensor, supports: torch.Tensor) -> torch.Tensor:
    """-||q - s||^2 for every pair (Snell et al. 2017, eq. 1 of the prototypical networks paper).

    queries: (n_query, dim), supports: (n_support, dim) -> (n_query, n_support)
    """
    q2 = (queries * queries).sum(-1, keepdim=True)  # (n_query, 1)
    s2 = (supports * supports).sum(-1)  # (n_support,)
    return -(q2 - 2.0 * queries @ supports.T + s2).clamp_min(0.0)  # (n_query, n_support)


def similarity(queries: torch.Tensor, supports: torch.Tensor, metric: Metric = "cosine") -> torch.Tensor:
    """The similarity c(f(x), g(x_i)) of eq. 2 for the chosen metric: (n_query, n_support)."""
    if metric == "cosine":
        return cosine_similarity_matrix(queries, supports)
    if metric == "euclidean":
        return neg_squared_euclidean(queries, supports)
    raise TextMatchError(f"unknown metric {metric!r}; choose one of {METRICS}")


def attention_logits(
    queries: torch.Tensor,
    supports: torch.Tensor,
    temperature: float | torch.Tensor = 0.05,
    metric: Metric = "cosine",
) -> torch.Tensor:
    """The logits of the attention kernel of eq. 2: c(f(x), g(x_i)) / tau.

    softmax over the last dimension gives a(x, x_i). -> (n_query, n_support)
    """
    return similarity(queries, supports, metric) / temperature


def attention(queries: torch.Tensor, supports: torch.Tensor, temperature: float | torch.Tensor = 0.05,
              metric: Metric = "cosine") -> torch.Tensor:
    """a(x, x_i) of eq. 2, a softmax over the support set: (n_query, n_support), rows sum to 1."""
    return attention_logits(queries, supports, temperature, metric).softmax(dim=-1)


def class_log_probs(logits: torch.Tensor, support_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log P(y = c | x, S) of eq. 1, from the attention logits, in log space.

    log sum_{i: y_i = c} a(x, x_i) = logsumexp_{i: y_i = c} s_i - logsumexp_i s_i.
    A class with no support example gets -inf.

    logits: (n_query, n_support), support_labels: (n_support,) ints in [0, n_classes)
    -> (n_query, n_classes)
    """
    one_hot = F.one_hot(support_labels, n_classes).T.bool()  # (n_classes, n_support)
    masked = logits.unsqueeze(1).masked_fill(~one_hot.unsqueeze(0), float("-inf"))  # (n_query, n_classes, n_support)
    per_class = torch.logsumexp(masked, dim=-1)  # (n_query, n_classes)
    return per_class - torch.logsumexp(logits, dim=-1, keepdim=True)  # (n_query, n_classes)


def prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class means of the support embeddings (Snell et al. 2017, eq. 1).

    embeddings: (n_support, dim), labels: (n_support,) -> (n_classes, dim).
    Every class in [0, n_classes) must have at least one example.
    """
    one_hot = F.one_hot(labels, n_classes).to(embeddings.dtype)  # (n_support, n_classes)
    counts = one_hot.sum(0)  # (n_classes,)
    if bool((counts == 0).any()):
        raise TextMatchError("prototypes: a class has no support example")
    return (one_hot.T @ embeddings) / counts.unsqueeze(-1)  # (n_classes, dim)


def matching_log_probs(
    queries: torch.Tensor,
    supports: torch.Tensor,
    support_labels: torch.Tensor,
    n_classes: int,
    temperature: float | torch.Tensor = 0.05,
    metric: Metric = "cosine",
    aggregation: Literal["none", "prototype"] = "none",
) -> torch.Tensor:
    """log P(y | x, S) for every query and class: eq. 1 with the kernel of eq. 2.

    aggregation="prototype" first replaces each class's supports by their mean, so that eq. 1
    has one term per class (prototypical networks). -> (n_query, n_classes)
    """
    if aggregation == "prototype":
        protos = prototypes(supports, support_labels, n_classes)  # (n_classes, dim)
        return attention_logits(queries, protos, temperature, metric).log_softmax(dim=-1)
    if aggregation != "none":
        raise TextMatchError(f"unknown aggregation {aggregation!r}; choose 'none' or 'prototype'")
    logits = attention_logits(queries, supports, temperature, metric)  # (n_query, n_support)
    return class_log_probs(logits, support_labels, n_classes)


def matching_nll(log_probs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean negative log-likelihood of the true labels under eq. 1, the episode loss.

    With label smoothing eps the target is (1 - eps) one-hot + eps / n_classes uniform.
    log_probs: (n_query, n_classes), targets: (n_query,) -> scalar
    """
    nll = -log_probs.gather(1, targets.unsqueeze(1)).squeeze(1)  # (n_query,)
    if label_smoothing > 0.0:
        finite = log_probs.clamp_min(torch.finfo(log_probs.dtype).min)
        uniform = -finite.mean(dim=-1)  # (n_query,)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    return nll.mean()
