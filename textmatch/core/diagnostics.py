"""Support-set diagnostics: what to check in a few-shot support set before training on it.

A Matching Network classifies a query x by attention over the support set S (Vinyals et al.
2016):

    P(y | x, S) = sum_i a(x, x_i) y_i                                  (eq. 1)
    a(x, x_i)   = softmax_i( c(f(x, S), g(x_i, S)) / tau )             (eq. 2)

so the support set *is* the classifier, and its faults show in it before any training:

- near-duplicates across classes: two examples of different classes whose g'(x_i) are almost
  the same (cosine >= a threshold); eq. 1 cannot tell them apart, so one label is likely wrong;
- misplaced examples: an example closer (cosine of g'(x_i)) to another class's prototype than
  to its own class's prototype computed without it;
- leave-one-out accuracy: eq. 1 for each support example against the support set without it,
  per class: the classes the support set describes badly.

The first three functions are pure (tensors or arrays in, results out); `diagnose_support`
reads a fitted `MatchingNetwork`'s cached embeddings and returns a `SupportDiagnostics`.
"""

from __future__ import annotations

import math
import numbers
import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Hashable

import torch

from ..errors import TextMatchError
from . import matching

if TYPE_CHECKING:  # pragma: no cover
    from .modeling import MatchingNetwork

# Cosines are compared with this slack, so that two encodings of one text that differ in the
# last bits (batch padding) still count as cosine 1 >= a threshold of 1.
COSINE_TOLERANCE = 1e-6
# Elements per block of a pairwise matrix: bounds memory for large support sets.
BLOCK_ELEMENTS = 1 << 22
EPS = 1e-12


def _tensor(x: Any, what: str, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != ndim:
        raise TextMatchError(f"{what} must have {ndim} dimension(s), got shape {tuple(t.shape)}")
    return t


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (a zero row stays zero): (n, dim)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def _pair_order(values: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """Positions sorted by value (highest first), then i, then j (stable sorts, last key first)."""
    order = torch.argsort(j, stable=True)
    order = order[torch.argsort(i[order], stable=True)]
    return order[torch.argsort(-values[order], stable=True)]


def scan_near_duplicates(
    emb: Any, label_ids: Any, threshold: float, max_pairs: int | None = None
) -> tuple[list[tuple[int, int, float]], int]:
    """`near_duplicates` with its total: (the highest `max_pairs` pairs, or all with None; how
    many pairs pass the threshold in all). Computed in blocks of rows, so memory stays at
    about BLOCK_ELEMENTS similarities, not n x n."""
    x = _unit(_tensor(emb, "emb", 2).double())  # (n, dim)
    ids = _tensor(label_ids, "label_ids", 1).to(x.device).long()  # (n,)
    if len(ids) != len(x):
        raise TextMatchError(f"emb has {len(x)} rows but label_ids {len(ids)}")
    n = len(x)
    rows = max(1, BLOCK_ELEMENTS // max(n, 1))
    cols = torch.arange(n, device=x.device)  # (n,)
    kept_v = torch.zeros(0, dtype=x.dtype, device=x.device)
    kept_i = kept_j = torch.zeros(0, dtype=torch.long, device=x.device)
    total = 0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        sims = x[start:stop] @ x.T  # (block, n)
        here = cols[start:stop]  # (block,)
        mask = (sims >= threshold - COSINE_TOLERANCE) & (cols[None, :] > here[:, None]) & (ids[None, :] != ids[start:stop, None])
        bi, bj = mask.nonzero(as_tuple=True)  # (found,) each
        total += len(bi)
        kept_v = torch.cat([kept_v, sims[bi, bj].clamp(-1.0, 1.0)])
        kept_i, kept_j = torch.cat([kept_i, bi + start]), torch.cat([kept_j, bj])
        if max_pairs is not None and len(kept_v) > max_pairs:
            top = _pair_order(kept_v, kept_i, kept_j)[:max_pairs]
            kept_v, kept_i, kept_j = kept_v[top], kept_i[top], kept_j[top]
    order = _pair_order(kept_v, kept_i, kept_j)
    pairs = [(int(a), int(b), float(v)) for a, b, v in zip(kept_i[order].tolist(), kept_j[order].tolist(), kept_v[order].tolist())]
    return pairs, total


def near_duplicates(emb: Any, label_ids: Any, threshold: float, max_pairs: int | None = None) -> list[tuple[int, int, float]]:
    """Pairs of support examples of different classes that eq. 1 can hardly tell apart.

    emb: (n, dim) embeddings (g'(x_i) of eq. 2), label_ids: (n,) class ids. Returns (i, j,
    cosine) for every pair i < j with label_ids[i] != label_ids[j] and cos(emb[i], emb[j]) >=
    threshold (up to COSINE_TOLERANCE of rounding), highest cosine first (ties by i, then j);
    at most `max_pairs` of them when given. Cosines in float64, computed in blocks of rows.
    """
    return scan_near_duplicates(emb, label_ids, threshold, max_pairs)[0]


def prototype_confusions(emb: Any, label_ids: Any, n_classes: int) -> list[tuple[int, int, int, float, float]]:
    """Examples closer to another class's prototype than to their own (Snell et al. 2017's
    prototypes, read with the cosine of eq. 2).

    emb: (n, dim), label_ids: (n,) ints in [0, n_classes). A prototype is the mean of its
    class's unit-length embeddings (each example weighs the same; the cosine ignores the
    length). An example's own prototype leaves it out (leave-one-out), so an example cannot
    pull its own class towards itself. An example that is its class's only one is skipped: its
    own prototype without it does not exist. Classes without examples have no prototype.

    Returns (i, own_class, nearest_class, cos_own, cos_other) for each example whose cosine
    to the nearest other prototype is higher than to its own, largest gap first.
    """
    u = _unit(_tensor(emb, "emb", 2).double())  # (n, dim)
    ids = _tensor(label_ids, "label_ids", 1).to(u.device).long()  # (n,)
    if len(ids) != len(u):
        raise TextMatchError(f"emb has {len(u)} rows but label_ids {len(ids)}")
    if len(u) == 0:
        return []
    one_hot = torch.nn.functional.one_hot(ids, n_classes).bool()  # (n, n_classes)
    counts = one_hot.sum(0)  # (n_classes,)
    sums = one_hot.T.to(u.dtype) @ u  # (n_classes, dim): n_c times each prototype
    cos_all = (u @ sums.T) / sums.norm(dim=-1).clamp_min(EPS)  # (n, n_classes)
    own_sum = sums[ids] - u  # (n, dim): the own prototype without the example (times n_c - 1)
    cos_own = (u * own_sum).sum(-1) / own_sum.norm(dim=-1).clamp_min(EPS)  # (n,)
    others = cos_all.masked_fill(one_hot | (counts == 0)[None, :], -math.inf)  # (n, n_classes)
    cos_other, nearest = others.max(dim=-1)  # (n,), (n,)
    flagged = (counts[ids] >= 2) & (cos_other > cos_own)  # (n,)
    rows = [
        (i, int(ids[i]), int(nearest[i]), float(cos_own[i]), float(cos_other[i]))
        for i in flagged.nonzero(as_tuple=True)[0].tolist()
    ]
    return sorted(rows, key=lambda r: (r[3] - r[4], r[0]))


def _paired_similarity(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """c(a_k, b_k) of eq. 2 row by row: (n, dim), (n, dim) -> (n,)."""
    if metric == "cosine":
        return (_unit(a) * _unit(b)).sum(-1)
    if metric == "euclidean":
        return -((a - b) ** 2).sum(-1)
    raise TextMatchError(f"unknown metric {metric!r}; choose one of {matching.METRICS}")


def _grouped_log_probs(logits: torch.Tensor, row_ids: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log P(y = c | x, S) of eq. 1 from logits (b, n_rows) whose rows belong to classes
    row_ids (n_rows,): logsumexp per class over its rows (-inf for a class whose every logit is
    -inf), less logsumexp over all. The same as matching.class_log_probs, in O(b * n_rows)
    memory instead of O(b * n_classes * n_rows). -> (b, n_classes)"""
    idx = row_ids.expand(len(logits), -1)  # (b, n_rows)
    top = torch.full((len(logits), n_classes), -math.inf, dtype=logits.dtype, device=logits.device)
    top = top.scatter_reduce(1, idx, logits, reduce="amax")  # (b, n_classes): each class's largest logit
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    terms = (logits - top.gather(1, idx)).exp()  # (b, n_rows), masked rows give 0
    sums = torch.zeros_like(top).scatter_add(1, idx, terms)  # (b, n_classes)
    per_class = sums.log() + top  # (b, n_classes)
    return per_class - per_class.logsumexp(dim=-1, keepdim=True)


def leave_one_out_predictions(
    query: torch.Tensor,
    support: torch.Tensor,
    row_label_ids: torch.Tensor,
    n_classes: int,
    temperature: float | torch.Tensor = 0.05,
    metric: str = "cosine",
    aggregation: str = "none",
    n_examples: int | None = None,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 for each support example against the support set without it.

    query: f(x_i, S) of the first n_examples support rows, (n_examples, dim); support: g(S),
    (n_rows, dim); row_label_ids: (n_rows,) class ids in [0, n_classes). Rows i <
    n_examples are the examples (query i is row i); rows >= n_examples (e.g. the class names
    of `label_names`) always stay in the support set. For query i, row i's logit in eq. 2 is
    -inf; with aggregation="prototype" its class's prototype is the mean of the class's other
    rows. A class left with no row gets probability 0.

    Returns the predicted class ids (n_examples,) and the probabilities P(y | x_i, S \\ {x_i})
    (n_examples, n_classes).
    """
    if aggregation not in ("none", "prototype"):
        raise TextMatchError(f"unknown aggregation {aggregation!r}; choose 'none' or 'prototype'")
    if metric not in matching.METRICS:
        raise TextMatchError(f"unknown metric {metric!r}; choose one of {matching.METRICS}")
    n_examples = len(query) if n_examples is None else n_examples
    if query.ndim != 2 or support.ndim != 2 or query.shape != (n_examples, support.shape[1]):
        raise TextMatchError(
            f"query must be (n_examples={n_examples}, dim) and support (n_rows, dim), got {tuple(query.shape)} and {tuple(support.shape)}"
        )
    if row_label_ids.shape != (len(support),) or n_examples > len(support):
        raise TextMatchError(f"row_label_ids must be (n_rows={len(support)},) and n_examples <= n_rows")
    ids = row_label_ids.to(support.device).long()  # (n_rows,)
    query = query.to(support.device, support.dtype)
    out = []
    if aggregation == "prototype":
        one_hot = torch.nn.functional.one_hot(ids, n_classes).to(support.dtype)  # (n_rows, n_classes)
        counts = one_hot.sum(0)  # (n_classes,)
        sums = one_hot.T @ support  # (n_classes, dim)
        protos = sums / counts.clamp_min(1).unsqueeze(-1)  # (n_classes, dim)
    for start in range(0, n_examples, batch_size):
        stop = min(n_examples, start + batch_size)
        q = query[start:stop]  # (b, dim)
        if aggregation == "prototype":
            logits = matching.attention_logits(q, protos, temperature, metric)  # type: ignore[arg-type]  # (b, n_classes)
            logits = logits.masked_fill((counts == 0).unsqueeze(0), -math.inf)
            own = ids[start:stop]  # (b,)
            rest = counts[own] - 1  # (b,)
            own_proto = (sums[own] - support[start:stop]) / rest.clamp_min(1).unsqueeze(-1)  # (b, dim)
            own_logit = _paired_similarity(q, own_proto, metric) / temperature  # (b,)
            own_logit = torch.where(rest > 0, own_logit, torch.full_like(own_logit, -math.inf))
            logits = logits.scatter(1, own.unsqueeze(1), own_logit.unsqueeze(1))
            out.append(logits.log_softmax(dim=-1))  # (b, n_classes)
        else:
            logits = matching.attention_logits(q, support, temperature, metric).clone()  # type: ignore[arg-type]  # (b, n_rows)
            rows = torch.arange(start, stop, device=logits.device)
            logits[rows - start, rows] = -math.inf  # x_i leaves S
            out.append(_grouped_log_probs(logits, ids, n_classes))  # (b, n_classes)
    if not out:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, n_classes, dtype=support.dtype)
    probs = torch.cat(out).exp()  # (n_examples, n_classes)
    return probs.argmax(dim=-1), probs


# -- the report ------------------------------------------------------------------------------------
@dataclass
class NearDuplicate:
    """Two support examples of different classes with cosine >= the threshold (of g'(x))."""

    text_a: str
    label_a: Hashable
    text_b: str
    label_b: Hashable
    cosine: float
    index_a: int
    index_b: int


@dataclass
class Misplaced:
    """A support example closer to another class's prototype than to its own (leave-one-out)."""

    text: str
    label: Hashable
    nearest_class: Hashable
    cosine_own: float
    cosine_other: float
    index: int


@dataclass
class LooError:
    """A support example that eq. 1 gives to another class once it leaves the support set."""

    text: str
    label: Hashable
    predicted: Hashable
    probability: float  # of the predicted class
    probability_true: float  # of its own class
    index: int


@dataclass
class SupportDiagnostics:
    """What `diagnose_support` found in a model's support set.

    classes: the classes (the model's `classes_` order); counts: {class: examples}.
    near_duplicates: pairs across classes with cosine >= `threshold`, highest first (at most
    `max_rows` when it was given; `near_duplicate_count` counts them all). misplaced: examples
    nearer another class's prototype than their own (leave-one-out), largest gap first
    (`misplaced_count` in all). loo_accuracy: leave-one-out accuracy of eq. 1 per class (None
    for a class whose only support row is its one example: without it there is nothing to
    match, see `loo_skipped_classes`); loo_overall: over all counted examples; loo_errors:
    the wrongly predicted examples, most confident first (`loo_error_count` in all).
    head_note: how the leave-one-out figures relate to the model's head.
    """

    classes: list[Hashable]
    counts: dict[Hashable, int]
    near_duplicates: list[NearDuplicate]
    misplaced: list[Misplaced]
    loo_accuracy: dict[Hashable, float | None]
    loo_overall: float | None
    loo_errors: list[LooError]
    threshold: float
    head_note: str
    near_duplicate_count: int = 0
    misplaced_count: int = 0
    loo_error_count: int = 0
    loo_skipped_classes: list[Hashable] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: labels as given (str or int), class-keyed dicts keyed by str(label)."""
        return {
            "classes": [_plain(c) for c in self.classes],
            "n_examples": sum(self.counts.values()),
            "counts": {str(c): int(n) for c, n in self.counts.items()},
            "threshold": self.threshold,
            "near_duplicate_count": self.near_duplicate_count,
            "near_duplicates": [_plain_row(asdict(r)) for r in self.near_duplicates],
            "misplaced_count": self.misplaced_count,
            "misplaced": [_plain_row(asdict(r)) for r in self.misplaced],
            "loo_accuracy": {str(c): a for c, a in self.loo_accuracy.items()},
            "loo_overall": self.loo_overall,
            "loo_error_count": self.loo_error_count,
            "loo_errors": [_plain_row(asdict(r)) for r in self.loo_errors],
            "loo_skipped_classes": [_plain(c) for c in self.loo_skipped_classes],
            "settings": dict(self.settings),
            "head_note": self.head_note,
        }

    def count_summary(self) -> dict[str, float]:
        """min / median / max examples per class."""
        values = list(self.counts.values()) or [0]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) for k, v in row.items()}


def _read_support(model: "MatchingNetwork") -> tuple[Any, list[str], list[Hashable], torch.Tensor]:
    """One consistent support set: the view, its texts, labels and g'(x_i). A `fit` in another
    thread between the reads replaces the view's tensors, which is seen and read again."""
    for _ in range(5):
        view = model.support_view()
        texts, labels, base = list(model.support_texts), list(model.support_labels), model.support_base_embeddings_
        if base is not None and len(base) == len(texts) == len(labels) and model.support_view().emb is view.emb:
            return view, texts, labels, base
    raise TextMatchError("the support set kept changing while it was read; diagnose it when no fit is running")


def _head_note(model: "MatchingNetwork", n_names: int) -> str:
    config = model.config
    note = ("Leave-one-out uses eq. 1 over the cached embeddings: each support example is matched against "
            "the support set without it" + (" (the class names stay in it)" if n_names else "") + ".")
    if config.head != "matching":
        note += (f" The model's {config.head} head (logistic regression) is not refitted per example, so these "
                 "figures describe eq. 1, not the head it predicts with.")
    if config.fce:
        note += " With FCE, g(S) and f(x_i, S) are not recomputed without x_i (it stays in their context)."
    if not config.share_weights:
        note += " f' and g' are separate encoders: the support texts were encoded once more with f'."
    return note


def diagnose_support(
    model: "MatchingNetwork",
    near_duplicate_threshold: float = 0.95,
    max_rows: int | None = None,
    batch_size: int = 64,
) -> SupportDiagnostics:
    """Diagnose a fitted model's support set from its cached embeddings.

    - g(S) is `model.support_view().emb` (the examples, then the class names with label_names);
    - f(x_i, S) = `model.query_embeddings(f'(x_i), g(S))` (the attention LSTM with FCE, else
      f'(x_i)). When f' and g' share weights, f'(x_i) = g'(x_i) = `support_base_embeddings_`
      and nothing is encoded; only with `config.share_weights=False` are the support texts
      encoded with f' (`model.embed(model.query_encoder, ...)`, `batch_size` per pass);
    - near-duplicates and misplaced examples use the cosine of g'(x_i) (before FCE);
    - leave-one-out: `leave_one_out_predictions` with the model's temperature, metric and
      aggregation (eq. 1, whatever the model's head; see `head_note`).

    max_rows: keep at most this many rows per list (the counts stay complete). Raises
    TextMatchError when the model has no support set or the threshold is not in [-1, 1].
    """
    if isinstance(near_duplicate_threshold, bool) or not isinstance(near_duplicate_threshold, numbers.Real) \
            or not -1.0 <= float(near_duplicate_threshold) <= 1.0:
        raise TextMatchError(
            f"near_duplicate_threshold must be a cosine similarity in [-1, 1], got {near_duplicate_threshold!r}"
        )
    if max_rows is not None and max_rows < 0:
        raise TextMatchError(f"max_rows must be at least 0, got {max_rows}")
    if model.support_base_embeddings_ is None:
        raise TextMatchError(
            "the model has no support set to diagnose; fit one first: model.fit(texts, labels) "
            "(on the command line: --support FILE)"
        )
    view, texts, labels, base = _read_support(model)
    classes, n, n_classes = view.classes, len(texts), len(view.classes)
    row_ids = view.label_ids.long()  # (n_rows,): the examples, then the class names
    example_ids = row_ids[:n]  # (n,)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if model.config.share_weights:
                f_base = base  # f'(x_i) = g'(x_i): the cache, no encoding
            else:
                f_base = model.embed(model.query_encoder, texts, batch_size)  # (n, dim)
            query = model.query_embeddings(f_base.to(view.emb.device, view.emb.dtype), view.emb)  # f(x_i, S), (n, dim)
            predicted, probs = leave_one_out_predictions(
                query, view.emb, row_ids, n_classes, temperature=float(model.temperature),
                metric=model.config.metric, aggregation=model.config.aggregation, n_examples=n,
            )  # (n,), (n, n_classes)
            pairs, pair_count = scan_near_duplicates(base, example_ids, near_duplicate_threshold, max_rows)
            confusions = prototype_confusions(base, example_ids, n_classes)
    finally:
        model.train(was_training)

    predicted_l, probs_l, ids_l = predicted.cpu().tolist(), probs.cpu().tolist(), example_ids.cpu().tolist()
    rows_per_class = torch.bincount(row_ids.cpu(), minlength=n_classes).tolist()
    counts = {c: 0 for c in classes}
    for y in ids_l:
        counts[classes[y]] += 1
    correct = [0] * n_classes
    counted = [0] * n_classes
    errors = []
    for i, (y, p) in enumerate(zip(ids_l, predicted_l)):
        if rows_per_class[y] < 2:  # its only row: without it the class cannot be matched
            continue
        counted[y] += 1
        if p == y:
            correct[y] += 1
        else:
            errors.append(LooError(texts[i], labels[i], classes[p], probs_l[i][p], probs_l[i][y], i))
    errors.sort(key=lambda e: (-e.probability, e.index))
    skipped = [c for k, c in enumerate(classes) if counts[c] and not counted[k]]
    misplaced = [Misplaced(texts[i], labels[i], classes[other], own_cos, other_cos, i)
                 for i, _, other, own_cos, other_cos in confusions]
    near = [NearDuplicate(texts[i], labels[i], texts[j], labels[j], cos, i, j) for i, j, cos in pairs]
    keep = (lambda rows: rows) if max_rows is None else (lambda rows: rows[:max_rows])
    return SupportDiagnostics(
        classes=list(classes),
        counts=counts,
        near_duplicates=near,
        misplaced=keep(misplaced),
        loo_accuracy={c: (correct[k] / counted[k] if counted[k] else None) for k, c in enumerate(classes)},
        loo_overall=sum(correct) / sum(counted) if sum(counted) else None,
        loo_errors=keep(errors),
        threshold=float(near_duplicate_threshold),
        head_note=_head_note(model, len(row_ids) - n),
        near_duplicate_count=pair_count,
        misplaced_count=len(misplaced),
        loo_error_count=len(errors),
        loo_skipped_classes=skipped,
        settings={"metric": model.config.metric, "aggregation": model.config.aggregation, "head": model.config.head,
                  "temperature": float(model.temperature), "fce": model.config.fce,
                  "share_weights": model.config.share_weights, "label_names": model.config.label_names},
    )

