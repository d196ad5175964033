"""What a model card says beyond the model itself (`ModelCardData`, saved in config.json).

The hub renders the card from a model (`textmatch.hub.model_card`); the core only carries
this data, so it never imports the card.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import TextMatchError

DEFAULT_TAGS = ["textmatch", "few-shot", "matching-networks", "text-classification"]
UNKNOWN_DATASET = "unknown"
DEFAULT_SPLIT = "test"


def _optional_str(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TextMatchError(f"ModelCardData.{name} must be a string or None, got {type(value).__name__} ({value!r})")
    return value.strip() or None


def _str_list(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TextMatchError(f"ModelCardData.{name} must be a list of strings, got {type(value).__name__} ({value!r})")
    out: list[str] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise TextMatchError(f"ModelCardData.{name}[{i}] must be a non-empty string, got {item!r}")
        if item.strip() not in out:
            out.append(item.strip())
    return out


def _metric_value(where: str, value: Any) -> float:
    if hasattr(value, "item"):  # numpy / torch scalars
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TextMatchError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _eval_result(i: int, entry: Any) -> dict[str, Any]:
    where = f"ModelCardData.eval_results[{i}]"
    if not isinstance(entry, dict):
        raise TextMatchError(f"{where} must be a dict with 'dataset', 'split' and 'metrics', got {entry!r}")
    dataset = entry.get("dataset")
    split = entry.get("split")
    metrics = entry.get("metrics")
    for key, value in (("dataset", dataset), ("split", split)):
        if not isinstance(value, str) or not value.strip():
            raise TextMatchError(f"{where}['{key}'] must be a non-empty string, got {value!r}")
    if not isinstance(metrics, dict) or not metrics:
        raise TextMatchError(f"{where}['metrics'] must be a non-empty dict of metric name -> number, got {metrics!r}")
    clean: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.strip():
            raise TextMatchError(f"{where}['metrics'] has a metric name that is not a string: {name!r}")
        clean[name] = _metric_value(f"{where}['metrics'][{name!r}]", value)
    return {"dataset": dataset.strip(), "split": split.strip(), "metrics": clean}


@dataclass
class ModelCardData:
    """What a model card says beyond the model itself; saved in config.json.

    language / license: Hub metadata (e.g. "en", "apache-2.0"). model_name: the card's title.
    model_id: the Hub repo id (the usage snippet loads it). base_model: the transformer the
    encoder started from (default: the model's own `base_model`). datasets: Hub dataset ids.
    train_dataset_name: what `Trainer.train()` trained on. eval_results: one entry per
    evaluated dataset + split, {"dataset", "split", "metrics": {name: value}} (see
    `MatchingNetwork.evaluate`). training_args: the last training run's arguments.
    earlier_training: the runs before it, oldest first, each {"train_dataset_name",
    "training_args"} (e.g. multi-dataset meta-training or a contrastive stage, then the
    few-shot fine-tuning): a trainer moves the model's last run here when it starts a new one.
    tags: Hub tags ("textmatch", "few-shot" and "matching-networks" are always on the card).
    """

    language: str | list[str] | None = None
    license: str | None = None
    model_name: str | None = None
    model_id: str | None = None
    base_model: str | None = None
    datasets: list[str] = field(default_factory=list)
    train_dataset_name: str | None = None
    eval_results: list[dict[str, Any]] = field(default_factory=list)
    training_args: dict[str, Any] = field(default_factory=dict)
    earlier_training: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: list(DEFAULT_TAGS))

    def __post_init__(self) -> None:
        if isinstance(self.language, (list, tuple)):
            self.language = _str_list("language", self.language) or None
        else:
            self.language = _optional_str("language", self.language)
        for name in ("license", "model_name", "model_id", "base_model", "train_dataset_name"):
            setattr(self, name, _optional_str(name, getattr(self, name)))
        if self.model_id is not None and any(c.isspace() for c in self.model_id):
            raise TextMatchError(f"ModelCardData.model_id must be a Hub repo id like 'user/name', got {self.model_id!r}")
        self.datasets = _str_list("datasets", self.datasets)
        self.tags = _str_list("tags", self.tags)
        if self.eval_results is None:
            self.eval_results = []
        if not isinstance(self.eval_results, (list, tuple)):
            raise TextMatchError(f"ModelCardData.eval_results must be a list, got {type(self.eval_results).__name__}")
        self.eval_results = [_eval_result(i, e) for i, e in enumerate(self.eval_results)]
        if self.training_args is None:
            self.training_args = {}
        if not isinstance(self.training_args, dict) or not all(isinstance(k, str) for k in self.training_args):
            raise TextMatchError(f"ModelCardData.training_args must be a dict with string keys, got {self.training_args!r}")
        self.training_args = dict(self.training_args)
        if self.earlier_training is None:
            self.earlier_training = []
        if not isinstance(self.earlier_training, (list, tuple)) or not all(
            isinstance(e, dict) and isinstance(e.get("training_args", {}), dict) for e in self.earlier_training
        ):
            raise TextMatchError(
                "ModelCardData.earlier_training must be a list of {'train_dataset_name', 'training_args'} dicts, "
                f"got {self.earlier_training!r}"
            )
        self.earlier_training = [
            {"train_dataset_name": e.get("train_dataset_name"), "training_args": dict(e.get("training_args") or {})}
            for e in self.earlier_training
        ]

    def start_training(self, training_args: dict[str, Any], dataset_name: str | None) -> None:
        """A new training run begins: the last run (if any) moves to `earlier_training`, the
        new run's arguments and data become `training_args` / `train_dataset_name`, and
        evaluation results of the weights before it are cleared."""
        if self.training_args:
            self.earlier_training.append(
                {"train_dataset_name": self.train_dataset_name, "training_args": dict(self.training_args)}
            )
        self.training_args = dict(training_args)
        self.train_dataset_name = dataset_name
        self.eval_results = []

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ModelCardData":
        """Build from `to_dict`'s output; unknown keys (from newer versions) are ignored."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise TextMatchError(f"model card data must be a dict, got {type(data).__name__}")
        names = {f.name for f in fields(cls)}
        return cls(**{k: copy.deepcopy(v) for k, v in data.items() if k in names})

    def add_eval_result(self, dataset: str, split: str, metrics: dict[str, float]) -> dict[str, Any]:
        """Record an evaluation, replacing an earlier one on the same dataset and split."""
        entry = _eval_result(len(self.eval_results), {"dataset": dataset, "split": split, "metrics": metrics})
        self.eval_results = [
            e for e in self.eval_results if (e["dataset"], e["split"]) != (entry["dataset"], entry["split"])
        ]
        self.eval_results.append(entry)
        return entry


# -- datasets ----------------------------------------------------------------------------------
def infer_dataset_name(dataset: Any) -> str | None:
    """The Hub id of a `datasets.Dataset` from its `info.dataset_name` ("user/name" when the
    cache path shows the namespace), or None: in-memory data, (texts, labels) pairs, and
    files read with a packaged builder ("csv", "json", ...) have no name worth a card."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        return None
    if isinstance(dataset, datasets.DatasetDict):
        if not dataset:
            return None
        dataset = next(iter(dataset.values()))
    if not isinstance(dataset, datasets.Dataset):
        return None
    name = getattr(dataset.info, "dataset_name", None)
    if not isinstance(name, str) or not name.strip():
        return None
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

        packaged = set(_PACKAGED_DATASETS_MODULES)
    except ImportError:  # pragma: no cover - private module moved
        packaged = {"csv", "json", "parquet", "text", "arrow", "pandas", "generator"}
    if name in packaged:
        return None
    for cache in dataset.cache_files or []:  # .../datasets/<namespace>___<name>/<config>/...
        for part in Path(cache.get("filename", "")).parts:
            namespace, sep, rest = part.partition("___")
            if sep and rest == name and namespace:
                return f"{namespace}/{name}"
    return name


