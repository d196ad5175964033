"""Evaluating a fitted MatchingNetwork on labelled texts, with the result put on its model card."""

from __future__ import annotations

from typing import Any, Hashable, Sequence

from ..core.card_data import DEFAULT_SPLIT, UNKNOWN_DATASET
from ..core.modeling import MatchingNetwork
from ..data.validation import validate_labels, validate_texts
from ..errors import TextMatchError
from .metrics import classification_report


def evaluate(
    model: MatchingNetwork,
    texts: Sequence[str],
    labels: Sequence[Hashable],
    dataset_name: str | None = None,
    split: str | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Predict `texts` with `model` and compare with `labels`: accuracy, macro_f1, n and
    per_label (precision / recall / F1 / support). Accuracy and macro F1 are recorded in
    `model.model_card_data.eval_results` under `dataset_name` and `split` (default "unknown"
    and "test"), replacing an earlier result on the same dataset and split, so the next
    `save_pretrained` or `push_to_hub` puts them on the card."""
    queries = validate_texts(texts, "text")
    gold = validate_labels(labels, len(queries))
    if not queries:
        raise TextMatchError("nothing to evaluate: texts is empty")
    report = classification_report(gold, model.predict(queries, batch_size=batch_size))
    model.model_card_data.add_eval_result(
        dataset_name or UNKNOWN_DATASET,
        split or DEFAULT_SPLIT,
        {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]},
    )
    return report
