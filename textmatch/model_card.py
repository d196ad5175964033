"""Model cards: the `README.md` that `save_pretrained` writes next to a model.

`ModelCardData` holds what the model itself does not know (language, license, the Hub id, the
datasets, evaluation results, training arguments); it travels in `config.json`.
`generate_model_card(model)` renders a Hugging Face model card from `MODEL_CARD_TEMPLATE`:
YAML front matter (library, pipeline tag, tags, base model, datasets, `model-index` with
the evaluation results, widget examples from the support set) and a Markdown body.

Anything that comes from the user (labels, texts, names) is escaped where it lands: YAML
values go through `yaml.safe_dump`, table cells and prose through `_md`, code through `repr`.
"""

from __future__ import annotations

import copy
import html
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Hashable

from .errors import TextMatchError

if TYPE_CHECKING:  # pragma: no cover
    from .modeling import MatchingNetwork

LIBRARY_NAME = "textmatch"
PIPELINE_TAG = "text-classification"
DEFAULT_TAGS = ["textmatch", "few-shot", "matching-networks", "text-classification"]
# Always on a card, whatever tags the user chose.
REQUIRED_TAGS = ["textmatch", "few-shot", "matching-networks"]
MAX_WIDGET_EXAMPLES = 5
UNKNOWN_DATASET = "unknown"
DEFAULT_SPLIT = "test"
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro F1"}
# Keys of TrainingArguments that say where/how a run happened, not how the model was trained.
EXCLUDED_TRAINING_ARGS = ("output_dir", "show_progress_bar", "device")


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


# -- escaping ----------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#~])")


def _md(value: Any, single_line: bool = False) -> str:
    """`value` as inline Markdown that shows the text literally: Markdown punctuation is
    backslash-escaped ('|' included, so table cells stay cells), HTML is entity-escaped and
    line breaks become <br> (or spaces with single_line)."""
    text = _MD_SPECIAL.sub(r"\\\1", str(value))
    text = html.escape(text, quote=False)
    lines = text.splitlines() or [""]
    return (" " if single_line else "<br>").join(lines)


class _Markdown(str):
    """Text that is Markdown already: `_table` puts it in a cell as it is."""


def _code_name(name: str) -> str:
    """An identifier as inline code; anything else escaped."""
    return _Markdown(f"`{name}`" if re.fullmatch(r"[A-Za-z_][\w.\-]*", name) else _md(name))


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        return value if isinstance(value, _Markdown) else _md(value)

    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "|".join(":---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _code_block(code: str, language: str = "python") -> str:
    """A fenced block whose fence is longer than any run of backticks inside."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{code}\n{fence}"


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> Any:
        # Line breaks and edge whitespace go in double quotes, escaped on one line: nothing a
        # user writes can end the front matter early ("---" on a line of its own).
        risky = any(c in value for c in "\n\r\x85\u2028\u2029") or value != value.strip()
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if risky else None)

    _Dumper.add_representer(str, represent_str)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 30, default_flow_style=False)


def _is_hub_id(name: str) -> bool:
    """A Hub repo id ("name" or "user/name") rather than a local path."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?", name) or ".." in name or name.endswith((".", "-")):
        return False
    return not Path(name).expanduser().exists()


def _fmt_metric(value: float) -> str:
    return f"{value:.4f}" if 1e-4 <= abs(value) < 1e4 or value == 0 else f"{value:.4g}"


def _py_str(text: str) -> str:
    """A Python string literal for `text`, in double quotes where possible."""
    literal = repr(text)
    if literal[0] == "'" and '"' not in text:
        literal = '"' + literal[1:-1] + '"'
    return literal


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


# -- the card ----------------------------------------------------------------------------------
MODEL_CARD_TEMPLATE = """\
---
$front_matter---

# $title

$summary

## Model details

$details

## Labels

$labels

## Usage

Install the library with `pip install textmatch`, then load the model and label new texts:

$usage

$training$evaluation## How it works

For a text x the model compares an embedding f(x) with the embeddings g(x_i) of the labelled
support examples and predicts the label distribution

    P(y | x, S) = sum_i a(x, x_i) y_i,    a(x, x_i) = softmax_i(sim(f(x), g(x_i)) / tau)

so the support set is part of the model: `model.add_examples(texts, labels)` adds examples or
whole new labels without any training, and `Trainer` fine-tunes the encoder on N-way K-shot
episodes drawn from labelled data.

## Citation

```bibtex
@inproceedings{vinyals2016matching,
  title     = {Matching Networks for One Shot Learning},
  author    = {Vinyals, Oriol and Blundell, Charles and Lillicrap, Timothy and Kavukcuoglu, Koray and Wierstra, Daan},
  booktitle = {Advances in Neural Information Processing Systems 29 (NeurIPS 2016)},
  year      = {2016},
  url       = {https://arxiv.org/abs/1606.04080}
}
```
"""


def _support_by_class(model: "MatchingNetwork") -> dict[Hashable, list[str]]:
    by_class: dict[Hashable, list[str]] = {c: [] for c in model.classes_}
    for text, label in zip(model.support_texts, model.support_labels):
        by_class.setdefault(label, []).append(text)
    return by_class


def widget_examples(model: "MatchingNetwork", limit: int = MAX_WIDGET_EXAMPLES) -> list[str]:
    """One support text (the first) of each of the first `limit` classes, in `classes_` order."""
    by_class = _support_by_class(model)
    return [by_class[c][0] for c in list(by_class)[:limit] if by_class[c]]


def _metric_names(results: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for entry in results:
        names += [m for m in entry["metrics"] if m not in names]
    return names


def card_metadata(model: "MatchingNetwork") -> dict[str, Any]:
    """The YAML front matter of the card, as a dict."""
    data: ModelCardData = model.model_card_data
    base_model = data.base_model or model.base_model or None
    datasets = list(data.datasets)
    if data.train_dataset_name and data.train_dataset_name not in datasets:
        datasets.append(data.train_dataset_name)
    meta: dict[str, Any] = {"library_name": LIBRARY_NAME, "pipeline_tag": PIPELINE_TAG}
    if data.language:
        meta["language"] = data.language
    if data.license:
        meta["license"] = data.license
    if base_model and _is_hub_id(base_model):
        meta["base_model"] = base_model
    meta["tags"] = data.tags + [t for t in REQUIRED_TAGS if t not in data.tags]
    if datasets:
        meta["datasets"] = datasets
    if data.eval_results:
        meta["metrics"] = _metric_names(data.eval_results)
    widget = widget_examples(model)
    if widget:
        meta["widget"] = [{"text": t} for t in widget]
    if data.eval_results:
        meta["model-index"] = [
            {
                "name": card_title(model),
                "results": [
                    {
                        "task": {"type": PIPELINE_TAG, "name": "Text Classification"},
                        "dataset": {"name": e["dataset"], "type": e["dataset"], "split": e["split"]},
                        "metrics": [
                            {"type": name, "value": value, "name": METRIC_NAMES.get(name, name)}
                            for name, value in e["metrics"].items()
                        ],
                    }
                    for e in data.eval_results
                ],
            }
        ]
    return meta


def card_title(model: "MatchingNetwork") -> str:
    data: ModelCardData = model.model_card_data
    if data.model_name:
        return data.model_name
    base_model = data.base_model or model.base_model
    title = f"Matching Network with {base_model}" if base_model and _is_hub_id(base_model) else "Matching Network"
    if data.train_dataset_name:
        title += f" trained on {data.train_dataset_name}"
    return title


def _encoder_line(encoder: Any, role: str) -> str:
    config = encoder.config_dict() if hasattr(encoder, "config_dict") else {}
    parts = [f"{encoder.encoder_type or type(encoder).__name__} encoder", f"{encoder.dim}-dimensional embeddings"]
    if config.get("pooling"):
        parts.append(f"{config['pooling']} pooling")
    try:
        parts.append(f"at most {encoder.max_length} tokens per text")
    except (NotImplementedError, AttributeError):
        pass
    return f"{role}: " + ", ".join(parts)


def _details(model: "MatchingNetwork") -> str:
    data: ModelCardData = model.model_card_data
    cfg = model.config
    base_model = data.base_model or model.base_model
    temperature = float(model.temperature.detach())
    rows: list[tuple[str, str]] = [
        ("Model type", "Matching Network (Vinyals et al., 2016) for few-shot text classification"),
        ("Library", "textmatch"),
    ]
    if base_model:
        rows.append(("Base model", base_model))
    if cfg.share_weights:
        rows.append(("Encoder", _encoder_line(model.query_encoder, "f = g (shared weights)")))
    else:
        rows.append(("Encoders", _encoder_line(model.query_encoder, "f (queries)") + "; "
                     + _encoder_line(model.support_encoder, "g (support examples)")))
    rows += [
        ("Full Context Embeddings", f"on ({cfg.fce_steps} read steps)" if cfg.fce else "off"),
        ("Similarity", cfg.metric),
        ("Aggregation", "class prototypes (mean of each label's examples)" if cfg.aggregation == "prototype"
         else "none (attention over every support example)"),
        ("Temperature", f"{temperature:.4g} ({'learned' if cfg.learn_temperature else 'fixed'})"),
        ("Out-of-scope threshold",
         "none" if cfg.threshold is None
         else f"{cfg.threshold:g} on the best {cfg.threshold_metric}; texts below it get the label {cfg.oos_label!r}"),
        ("Labels", str(len(model.classes_))),
        ("Support examples", str(len(model.support_texts))),
    ]
    if data.train_dataset_name:
        rows.append(("Training dataset", data.train_dataset_name))
    if data.language:
        rows.append(("Language", ", ".join(data.language) if isinstance(data.language, list) else data.language))
    if data.license:
        rows.append(("License", data.license))
    if data.model_id:
        rows.append(("Repository", data.model_id))
    return "\n".join(f"- **{name}:** {_md(value)}" for name, value in rows)


def _labels_section(model: "MatchingNetwork") -> str:
    if not model.classes_:
        return (
            "This model has no support set yet. Give it labelled examples with "
            "`model.fit(texts, labels)` before predicting."
        )
    by_class = _support_by_class(model)
    rows = [[label, len(texts), _shorten(texts[0]) if texts else ""] for label, texts in by_class.items()]
    return (
        f"The support set stored with the model has {len(model.support_texts)} examples of "
        f"{len(model.classes_)} labels:\n\n" + _table(["Label", "Support examples", "Example"], rows)
    )


def _usage(model: "MatchingNetwork", model_path: str | None) -> str:
    reference = model.model_card_data.model_id or model_path or "path/to/model"
    lines = [
        "from textmatch import MatchingNetwork",
        "",
        f"model = MatchingNetwork.from_pretrained({_py_str(reference)})",
    ]
    widget = widget_examples(model)
    if not widget:
        lines += [
            "# this model has no support set: give it a few labelled examples first",
            "model.fit([\"first example\", \"second example\"], [\"label_a\", \"label_b\"])",
            "print(model.predict([\"a new text\"]))",
        ]
    else:
        lines.append(f"print(model.predict([{_py_str(widget[0])}]))")
        lines.append("# more examples or new labels, no retraining: model.add_examples(texts, labels)")
    return _code_block("\n".join(lines))


def _training_section(model: "MatchingNetwork") -> str:
    data: ModelCardData = model.model_card_data
    if not data.training_args and not data.train_dataset_name:
        return ""
    parts = ["## Training", ""]
    if (data.training_args or {}).get("objective") == "retrieval":
        how = "for retrieval, with the matching loss on (query, relevant document) pairs against in-batch and hard negatives"
    else:
        how = "with episodic training (N-way K-shot episodes)"
    where = f" on {_md(data.train_dataset_name)}" if data.train_dataset_name else ""
    parts += [f"The encoder was fine-tuned {how}{where}.", ""]
    if data.training_args:
        parts += ["### Training arguments", "", _table(["Argument", "Value"], [[_code_name(k), v] for k, v in data.training_args.items()]), ""]
    return "\n".join(parts) + "\n"


def _evaluation_section(model: "MatchingNetwork") -> str:
    results = model.model_card_data.eval_results
    if not results:
        return ""
    names = _metric_names(results)
    rows = [[e["dataset"], e["split"]] + [_fmt_metric(e["metrics"][n]) if n in e["metrics"] else "-" for n in names] for e in results]
    header = ["Dataset", "Split"] + [METRIC_NAMES.get(n, n) for n in names]
    return "## Evaluation\n\n" + _table(header, rows) + "\n\n"


def generate_model_card(model: "MatchingNetwork", *, model_path: str | None = None) -> str:
    """Render the model card (`README.md`) of `model`. The usage snippet loads
    `model_card_data.model_id`, else `model_path` (where the model is being saved)."""
    data: ModelCardData = model.model_card_data
    base_model = data.base_model or model.base_model
    summary = (
        "A few-shot text classifier built with textmatch: a "
        "[Matching Network](https://arxiv.org/abs/1606.04080) labels a text by attention over a "
        "small set of labelled support examples stored with the model"
    )
    summary += f", comparing embeddings from {_md(base_model)}." if base_model else "."
    return Template(MODEL_CARD_TEMPLATE).substitute(
        front_matter=_yaml_dump(card_metadata(model)),
        title=_md(card_title(model), single_line=True),
        summary=summary,
        details=_details(model),
        labels=_labels_section(model),
        usage=_usage(model, model_path),
        training=_training_section(model),
        evaluation=_evaluation_section(model),
    )
