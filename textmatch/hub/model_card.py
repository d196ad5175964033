"""Model cards: the `README.md` that `save_pretrained` writes next to a model.

`ModelCardData` (in `textmatch.core.card_data`) holds what the model itself does not know
(language, license, the Hub id, the datasets, evaluation results, training arguments); it
travels in `config.json`. `generate_model_card(model)` renders a Hugging Face model card from
`model_card_template.md`:
YAML front matter (library, pipeline tag, tags, base model, datasets, `model-index` with
the evaluation results, widget examples from the support set) and a Markdown body.

Anything that comes from the user (labels, texts, names) is escaped where it lands: YAML
values go through `yaml.safe_dump`, table cells and prose through `_md`, code through `repr`.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from string import Template
from typing import Any, Hashable

from ..core.card_data import ModelCardData
from ..core.modeling import MatchingNetwork

LIBRARY_NAME = "textmatch"
PIPELINE_TAG = "text-classification"
# Always on a card, whatever tags the user chose.
REQUIRED_TAGS = ["textmatch", "few-shot", "matching-networks"]
MAX_WIDGET_EXAMPLES = 5
METRIC_NAMES = {"accuracy": "Accuracy", "macro_f1": "Macro F1"}


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
MODEL_CARD_TEMPLATE = (Path(__file__).parent / "model_card_template.md").read_text(encoding="utf-8")


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


HEAD_LINES = {
    "matching": "matching: P(y | x, S) of eq. 1",
    "logreg": "logistic regression on the support set's embeddings (C = {c:g}), refitted when it changes",
    "ensemble": "ensemble: the mean of eq. 1 and a logistic regression on the support set (C = {c:g})",
}


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
        ("Head", HEAD_LINES[cfg.head].format(c=cfg.logreg_c)),
        ("Class names as examples", ("on" + (f" ({len(cfg.label_descriptions)} described)" if cfg.label_descriptions else ""))
         if cfg.label_names else "off"),
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
    objective = (data.training_args or {}).get("objective")
    where = f" on {_md(data.train_dataset_name)}" if data.train_dataset_name else ""
    if objective == "retrieval":
        how = "for retrieval, with the matching loss on (query, relevant document) pairs against in-batch and hard negatives"
    elif objective == "contrastive":
        n_texts = data.training_args.get("n_texts")
        texts = f"{_md(n_texts)} unlabelled texts" if n_texts is not None else "unlabelled texts"
        of = f" of {_md(data.train_dataset_name)}" if data.train_dataset_name else ""
        how, where = f"with an unsupervised contrastive objective (dropout views, SimCSE) on {texts}{of}", ""
    else:
        how = "with episodic training (N-way K-shot episodes)"
    parts += [f"The encoder was fine-tuned {how}{where}.", ""]
    if data.training_args:
        parts += ["### Training arguments", "", _table(["Argument", "Value"], [[_code_name(k), v] for k, v in data.training_args.items()]), ""]
    if data.earlier_training:
        parts += ["### Earlier training", "", "Before that run, oldest first:", ""]
        for i, run in enumerate(data.earlier_training, 1):
            args = run["training_args"]
            on = f" on {_md(run['train_dataset_name'])}" if run.get("train_dataset_name") else ""
            parts += [f"{i}. {_md(str(args.get('objective', 'episodes')))}{on}: "
                      + ", ".join(f"{_code_name(k)} = {_md(str(v))}" for k, v in args.items() if k != "objective")]
        parts.append("")
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


def _write_card(model: MatchingNetwork, model_path: str) -> str:
    return generate_model_card(model, model_path=model_path)


# save_pretrained writes README.md through this seam: the card is built here, from the model it
# is given, and the core never imports this module.
MatchingNetwork.model_card_writer = _write_card
