"""Why a Matching Network gave a label: the support examples that carry eq. 1's vote.

Vinyals et al. 2016 classify with a weighted vote of the support set,

    P(y | x, S) = sum_i a(x, x_i) y_i,   a(x, x_i) = softmax_i(c(f(x, S), g(x_i, S)) / tau)   (eqs. 1-2)

so the support rows with the largest attention a(x, x_i) are the evidence for a prediction: the
examples a person can read to see why a text got its label. With prototype aggregation (Snell
et al. 2017) eq. 1 has one term per class (the mean of its support embeddings), so the evidence
is the class prototypes, each with its support examples nearest to the text. Where another head
decides (the logistic regression of `head="logreg"`, or the mean of both with "ensemble"), an
explanation shows that head's probabilities beside eq. 1's and says which one decided; the
attention evidence is still eq. 1's, the part of the model that can point at examples.

`explain(model, texts)` (also `MatchingNetwork.explain`) returns one `Explanation` per text.
The maths below it are pure functions tested against naive loops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Sequence

import torch

from ..data.validation import validate_texts
from ..errors import TextMatchError
from . import matching

if TYPE_CHECKING:
    from .modeling import MatchingNetwork, SupportView

HEAD_NOTES = {
    "matching": "eq. 1 (attention over the support set)",
    "logreg": "the logistic regression on the support set (eq. 1 shown beside it)",
    "ensemble": "the mean of eq. 1 and the logistic regression",
}


@dataclass(frozen=True)
class Evidence:
    """One support row that pulls a text towards a class.

    text: the support example (or the class name, kind "label_name"; None for a prototype).
    weight: a(x, x_i) of eq. 2 over all support rows (over the class prototypes for kind
    "prototype"); None for the examples listed under a prototype, which carry no weight of
    their own. similarity: c(f(x, S), g(x_i, S)), the cosine (or, with metric="euclidean", the
    negative squared distance). support_index: the row's position in `model.support_texts`
    (None for class names and prototypes). nearest: for a prototype, its class's support
    examples nearest to the text."""

    text: str | None
    label: Hashable
    weight: float | None
    similarity: float
    support_index: int | None
    kind: str = "example"
    nearest: tuple["Evidence", ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["label"] = _jsonable(self.label)
        out["nearest"] = [e.to_dict() for e in self.nearest]
        return out


@dataclass(frozen=True)
class Explanation:
    """Why `text` got `label`.

    label: what `predict` returns (the model's `oos_label` when the text falls below the
    threshold); top_class: the best class before any threshold, with `probability` under the
    head that decided (`decided_by`: config.head), `matching_probability` under eq. 1 and
    `logreg_probability` under the logistic regression (None with the matching head).
    evidence: the top_k support rows by attention weight, over every class. runner_up: the
    second-best class under the deciding head, its probabilities, and runner_up_evidence, its
    row with the largest weight (the example that pulls the other way)."""

    text: str
    label: Hashable
    top_class: Hashable
    probability: float
    decided_by: str
    matching_probability: float
    logreg_probability: float | None
    out_of_scope: bool
    threshold: float | None
    evidence: tuple[Evidence, ...]
    runner_up: Hashable | None = None
    runner_up_probability: float | None = None
    runner_up_matching_probability: float | None = None
    runner_up_evidence: Evidence | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: what `textmatch predict --explain --json` prints for one text."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("evidence", "runner_up_evidence")}
        for key in ("label", "top_class", "runner_up"):
            out[key] = _jsonable(out[key])
        out["decided_by_note"] = HEAD_NOTES.get(self.decided_by, self.decided_by)
        out["notes"] = list(self.notes)
        out["evidence"] = [e.to_dict() for e in self.evidence]
        out["runner_up_evidence"] = None if self.runner_up_evidence is None else self.runner_up_evidence.to_dict()
        return out


# -- the maths: pure functions ----------------------------------------------------------------------
def top_rows(weights: torch.Tensor, k: int) -> list[int]:
    """The positions of the k largest weights, largest first; ties by position (the earlier row
    first), so the order never depends on the sort's stability. weights: (n_rows,)"""
    values = weights.tolist()
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[: max(0, k)]


def best_row_of_class(weights: torch.Tensor, row_labels: torch.Tensor, class_id: int) -> int | None:
    """The row of class `class_id` with the largest weight (the earliest on ties), or None when
    the class has no row. weights, row_labels: (n_rows,)"""
    rows = (row_labels == class_id).nonzero().flatten().tolist()
    if not rows:
        return None
    values = weights.tolist()
    return min(rows, key=lambda i: (-values[i], i))


def ranked_classes(probabilities: torch.Tensor) -> list[int]:
    """Class positions by probability, best first, ties by position. probabilities: (n_classes,)"""
    return top_rows(probabilities, len(probabilities))


# -- explanations of a model's predictions ----------------------------------------------------------
def explain(model: "MatchingNetwork", texts: Sequence[str], top_k: int = 3, batch_size: int = 64,
            threshold: float | None = None, nearest_examples: int = 2) -> list[Explanation]:
    """One `Explanation` per text, from one encoding of each and one support set throughout
    (the model's `support_view`), on whatever inference backend the model uses.

    top_k: support rows listed as evidence (prototypes with aggregation="prototype");
    nearest_examples: with prototypes, support examples listed under each; threshold: as in
    `predict` (default: the model's)."""
    from .modeling import check_threshold  # modeling imports this module

    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise TextMatchError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(nearest_examples, bool) or not isinstance(nearest_examples, int) or nearest_examples < 0:
        raise TextMatchError(f"nearest_examples must be a non-negative integer, got {nearest_examples!r}")
    if batch_size < 1:
        raise TextMatchError(f"batch_size must be at least 1, got {batch_size}")
    view = model.support_view()
    queries = validate_texts(texts, "query")
    threshold = model.config.threshold if threshold is None else threshold
    check_threshold(threshold, model.config.threshold_metric, model.config.metric)
    out: list[Explanation] = []
    was_training = model.training
    model.eval()  # no dropout: the same embeddings predict() uses
    try:
        with torch.inference_mode():
            for start in range(0, len(queries), batch_size):
                batch = queries[start : start + batch_size]
                f_base = model.embed(model.query_encoder, batch, batch_size)  # (b, dim)
                details = model.score_details(f_base, view)
                out.extend(_explain_batch(model, view, batch, details, top_k, threshold, nearest_examples))
    finally:
        model.train(was_training)
    return out


def _explain_batch(model: "MatchingNetwork", view: "SupportView", texts: list[str], details: Any, top_k: int,
                   threshold: float | None, nearest_examples: int) -> list[Explanation]:
    config = model.config
    n_classes = len(view.classes)
    tau = model.temperature.detach().to(details.query.dtype)
    prototype = config.aggregation == "prototype"
    if prototype:
        protos = matching.prototypes(view.emb, view.label_ids, n_classes)  # (n_classes, dim)
        unit_sim = matching.similarity(details.query, protos, config.metric)  # (b, n_classes)
        weights = matching.attention(details.query, protos, tau, config.metric)  # (b, n_classes)
    else:
        unit_sim = details.similarity  # (b, n_rows)
        weights = matching.attention(details.query, view.emb, tau, config.metric)  # (b, n_rows): eq. 2
    out = []
    for b, text in enumerate(texts):
        probs = details.probabilities[b]  # (n_classes,) under the deciding head
        order = ranked_classes(probs)
        top = order[0]
        runner = order[1] if n_classes > 1 else None
        if threshold is None:
            oos = False
        else:
            score = float(probs[top]) if config.threshold_metric == "probability" else float(details.similarity[b].max())
            oos = score < threshold
        if prototype:
            evidence = tuple(_prototype(view, k, weights[b], unit_sim[b], details.similarity[b], nearest_examples)
                             for k in top_rows(weights[b], top_k))
            runner_evidence = None if runner is None else _prototype(
                view, runner, weights[b], unit_sim[b], details.similarity[b], nearest_examples)
        else:
            evidence = tuple(_row(view, i, weights[b], unit_sim[b]) for i in top_rows(weights[b], top_k))
            best = None if runner is None else best_row_of_class(weights[b], view.label_ids, runner)
            runner_evidence = None if best is None else _row(view, best, weights[b], unit_sim[b])
        logreg = details.logreg[b] if details.logreg is not None else None
        notes = []
        if config.head != "matching" and int(details.matching[b].argmax()) != top:
            notes.append(f"eq. 1 alone would say {view.classes[int(details.matching[b].argmax())]!r}; "
                         f"the {config.head} head decided")
        if oos:
            what = "best class probability" if config.threshold_metric == "probability" else "best similarity"
            notes.append(f"{what} below the threshold {threshold:g}: labelled {config.oos_label!r}")
        out.append(Explanation(
            text=text,
            label=config.oos_label if oos else view.classes[top],
            top_class=view.classes[top],
            probability=float(probs[top]),
            decided_by=config.head,
            matching_probability=float(details.matching[b, top]),
            logreg_probability=None if logreg is None else float(logreg[top]),
            out_of_scope=oos,
            threshold=threshold,
            evidence=evidence,
            runner_up=None if runner is None else view.classes[runner],
            runner_up_probability=None if runner is None else float(probs[runner]),
            runner_up_matching_probability=None if runner is None else float(details.matching[b, runner]),
            runner_up_evidence=runner_evidence,
            notes=tuple(notes),
        ))
    return out


def _row(view: "SupportView", i: int, weights: torch.Tensor, sims: torch.Tensor) -> Evidence:
    """Support row i as evidence (an example, or a class name after the examples)."""
    example = i < view.n_examples
    return Evidence(text=view.texts[i], label=view.classes[int(view.label_ids[i])], weight=float(weights[i]),
                    similarity=float(sims[i]), support_index=i if example else None,
                    kind="example" if example else "label_name")


def _prototype(view: "SupportView", k: int, weights: torch.Tensor, proto_sims: torch.Tensor,
               row_sims: torch.Tensor, nearest: int) -> Evidence:
    """Class k's prototype as evidence, with its `nearest` rows most similar to the text."""
    rows = (view.label_ids == k).nonzero().flatten()
    picked = rows[top_rows(row_sims[rows], nearest)].tolist() if nearest else []
    examples = tuple(
        Evidence(text=view.texts[i], label=view.classes[k], weight=None, similarity=float(row_sims[i]),
                 support_index=i if i < view.n_examples else None,
                 kind="example" if i < view.n_examples else "label_name")
        for i in picked
    )
    return Evidence(text=None, label=view.classes[k], weight=float(weights[k]), similarity=float(proto_sims[k]),
                    support_index=None, kind="prototype", nearest=examples)


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
