"""Classification heads on top of the matching layer's embeddings.

A Matching Network classifies with eq. 1: P(y | x, S) = sum_i a(x, x_i) y_i, the attention a
being the softmax over the support set of cos(f(x), g(x_i)) / tau (eq. 2). The same
embeddings can also feed a multinomial logistic regression fitted on the support set (the
head SetFit uses), or the mean of both distributions:

    head = "matching"   P(y | x, S) of eq. 1 (the paper)
    head = "logreg"     softmax(W f'(x) / |f'(x)| + b), W, b fitted on the support examples
    head = "ensemble"   (P_matching + P_logreg) / 2

The logistic regression is refitted whenever the support set changes (`MatchingNetwork.fit`,
`add_examples`), in about a second, so classes added at prediction time keep working.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import TextMatchError

HEADS = ("matching", "logreg", "ensemble")


def check_head(head: str, logreg_c: float) -> None:
    if head not in HEADS:
        raise TextMatchError(f"head must be one of {', '.join(HEADS)}; got {head!r}")
    if isinstance(logreg_c, bool) or not isinstance(logreg_c, (int, float)) or not 0 < logreg_c < float("inf"):
        raise TextMatchError(f"logreg_c must be a positive finite number, got {logreg_c!r}")


def fit_logistic_regression(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, c: float = 10.0, max_iter: int = 500
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression, as scikit-learn's LogisticRegression(C=c) fits it.

    Minimises sum_i -log softmax(W x_i + b)[y_i] + |W|^2 / (2c) (scikit-learn's objective
    divided by c; the bias is not penalised) with L-BFGS and a strong-Wolfe line search, in
    float64. The problem is strictly convex, so the result does not depend on a seed.

    features: (n, dim); labels: (n,) class ids in [0, n_classes).
    Returns weight (n_classes, dim) and bias (n_classes,), float32 on the features' device.
    """
    if features.ndim != 2 or labels.shape != features.shape[:1]:
        raise TextMatchError(f"features (n, dim) and labels (n,) expected, got {tuple(features.shape)} and {tuple(labels.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        x = features.detach().clone().double()  # (n, dim); a normal tensor even under inference_mode
        y = labels.detach().clone().long()  # (n,)
        weight = torch.zeros(n_classes, x.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
        bias = torch.zeros(n_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7, tolerance_change=1e-10,
            history_size=20, line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            logits = x @ weight.T + bias  # (n, n_classes)
            loss = F.cross_entropy(logits, y, reduction="sum") + weight.pow(2).sum() / (2 * c)
            loss.backward()
            return loss

        optimizer.step(closure)
    return weight.detach().float(), bias.detach().float()


def logreg_probs(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(W x + b) for features (n, dim): (n, n_classes)."""
    return torch.softmax(features @ weight.T.to(features.dtype) + bias.to(features.dtype), dim=-1)


def head_features(embeddings: torch.Tensor) -> torch.Tensor:
    """What the logistic regression sees: f'(x) scaled to unit length, (n, dim) (the matching
    layer's cosine ignores the length too)."""
    return F.normalize(embeddings, dim=-1)


def combine(head: str, matching: torch.Tensor, logreg: torch.Tensor | None) -> torch.Tensor:
    """The head's class probabilities (n, n_classes) from eq. 1's and the logistic regression's."""
    if head == "matching":
        return matching
    if logreg is None:
        raise TextMatchError(f"head={head!r} has no fitted logistic regression; call model.fit(texts, labels)")
    return logreg if head == "logreg" else (matching + logreg) / 2
