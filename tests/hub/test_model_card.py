"""Model cards: ModelCardData, the rendered README.md (checked against patterns, as setfit's
tests do), textmatch.evaluate, and the wiring into save_pretrained and Trainer.train."""

from __future__ import annotations

import ast
import html
import json
import math
import re

import pytest
import yaml

from textmatch import MatchingNetwork, TextMatchError, Trainer, TrainingArguments, evaluate
from textmatch.core.card_data import DEFAULT_TAGS, ModelCardData, infer_dataset_name
from textmatch.classification.training import RECIPE_FIELDS
from textmatch.core.optimization import FREEZING_FIELDS, RECIPE_HF_ARGS
from textmatch.hub.model_card import generate_model_card

SUPPORT = [
    ("will it rain today", "weather"),
    ("sunny forecast please", "weather"),
    ("cloudy with snow and wind", "weather"),
    ("play a song from the album", "music"),
    ("my playlist now", "music"),
    ("pizza for dinner", "food"),
]
TEST = [("rain and wind today", "weather"), ("play the guitar track", "music"), ("pizza and noodles please", "food")]


def support():
    return [t for t, _ in SUPPORT], [y for _, y in SUPPORT]


# -- reading a card back ----------------------------------------------------------------------
FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)


def front_matter(card: str) -> dict:
    match = FRONT_MATTER.match(card)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def body(card: str) -> str:
    return FRONT_MATTER.sub("", card, count=1)


def section(card: str, title: str) -> str | None:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", body(card), re.S | re.M)
    return match.group(1) if match else None


def unescape_md(cell: str) -> str:
    """Invert model_card._md: <br> -> newline, HTML entities, backslash escapes; `code` -> code."""
    if re.fullmatch(r"`[^`]+`", cell):
        return cell[1:-1]
    text = cell.replace("<br>", "\n")
    text = re.sub(r"\\(.)", r"\1", text)
    return html.unescape(text)


def table(text: str) -> list[list[str]]:
    """Rows (header first, separator dropped) of the first Markdown table in `text`, cells
    split on unescaped pipes and unescaped."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    rows = []
    for line in lines:
        assert line.endswith("|") and not line.endswith("\\|"), line
        cells = re.split(r"(?<!\\)\|", line)[1:-1]
        if all(re.fullmatch(r":?-+:?", c.strip()) for c in cells):
            continue
        rows.append([unescape_md(c.strip()) for c in cells])
    return rows


def usage_code(card: str) -> str:
    match = re.search(r"^(`{3,})python\n(.*?)\n\1$", section(card, "Usage"), re.S | re.M)
    assert match
    return match.group(2)


def call_args(code: str, name: str) -> list:
    """The literal first argument of every call to `name` (an attribute) in `code`."""
    return [
        ast.literal_eval(node.args[0])
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name
    ]


@pytest.fixture
def fitted(tiny_bert_model):
    texts, labels = support()
    model = tiny_bert_model.fit(texts, labels)
    model.base_model = "org/tiny-bert"  # a Hub-like id (the fixture's is a temporary folder)
    return model


# -- the rendered card --------------------------------------------------------------------------
def test_front_matter(fitted):
    texts, labels = [t for t, _ in TEST], [y for _, y in TEST]
    report = evaluate(fitted, texts, labels, dataset_name="org/intents", split="test")
    card = generate_model_card(fitted)
    meta = front_matter(card)
    assert meta["library_name"] == "textmatch"
    assert meta["pipeline_tag"] == "text-classification"
    assert {"textmatch", "few-shot", "matching-networks"} <= set(meta["tags"])
    assert meta["base_model"] == "org/tiny-bert"
    assert meta["metrics"] == ["accuracy", "macro_f1"]
    assert "language" not in meta and "license" not in meta and "datasets" not in meta  # unknown: left out
    # widget: the first support example of each class, classes in sorted order
    assert meta["widget"] == [{"text": "pizza for dinner"}, {"text": "play a song from the album"}, {"text": "will it rain today"}]
    assert all(w["text"] in fitted.support_texts for w in meta["widget"])
    # model-index: the evaluation's numbers
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {"name": "org/intents", "type": "org/intents", "split": "test"}
    values = {m["type"]: m["value"] for m in result["metrics"]}
    assert values == {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
    assert generate_model_card(fitted) == card  # deterministic

    # huggingface_hub reads the metadata the same way (offline: parsing only)
    from huggingface_hub import ModelCard

    hub_card = ModelCard(card)
    assert hub_card.data.library_name == "textmatch"
    assert hub_card.data.base_model == "org/tiny-bert"
    hub_values = {r.metric_type: r.metric_value for r in hub_card.data.eval_results}
    assert hub_values == values
    assert {r.dataset_split for r in hub_card.data.eval_results} == {"test"}


def test_body_sections(fitted):
    fitted.model_card_data.model_id = "someone/intents-model"
    card = generate_model_card(fitted)
    text = body(card)
    assert re.search(r"^# Matching Network with org/tiny-bert$", text, re.M)
    details = section(card, "Model details")
    assert re.search(r"\*\*Full Context Embeddings:\*\* off", details)
    assert re.search(r"\*\*Similarity:\*\* cosine", details)
    assert re.search(r"\*\*Aggregation:\*\* none", details)
    assert re.search(r"\*\*Temperature:\*\* 0\.05 \(fixed\)", details)
    assert re.search(r"\*\*Out-of-scope threshold:\*\* none", details)
    assert re.search(r"\*\*Base model:\*\* org/tiny-bert", details)
    code = usage_code(card)
    assert call_args(code, "from_pretrained") == ["someone/intents-model"]
    assert 'MatchingNetwork.from_pretrained("someone/intents-model")' in code
    assert call_args(code, "predict") == [["pizza for dinner"]]
    assert section(card, "Training") is None and section(card, "Evaluation") is None
    citation = section(card, "Citation")
    assert re.search(r"@inproceedings\{vinyals2016matching,", citation)
    assert re.search(r"title\s*=\s*\{Matching Networks for One Shot Learning\}", citation)
    assert "Vinyals, Oriol" in citation and "2016" in citation


def test_details_follow_the_config(tiny_bert_dir):
    model = MatchingNetwork.from_pretrained(
        str(tiny_bert_dir), fce=True, fce_steps=3, aggregation="prototype", metric="euclidean",
        temperature=0.2, learn_temperature=True, threshold=0.7, oos_label="other",
    )
    details = section(generate_model_card(model), "Model details")
    assert re.search(r"\*\*Full Context Embeddings:\*\* on \(3 read steps\)", details)
    assert re.search(r"\*\*Similarity:\*\* euclidean", details)
    assert re.search(r"\*\*Aggregation:\*\* class prototypes", details)
    assert re.search(r"\*\*Temperature:\*\* 0\.2 \(learned\)", details)
    assert re.search(r"\*\*Out-of-scope threshold:\*\* 0\.7 on the best probability.*'other'", details)


def test_label_table_counts(fitted):
    rows = table(section(generate_model_card(fitted), "Labels"))
    assert rows[0] == ["Label", "Support examples", "Example"]
    assert {r[0]: int(r[1]) for r in rows[1:]} == {"food": 1, "music": 2, "weather": 3}
    assert [r[0] for r in rows[1:]] == fitted.classes_
    assert all(r[2] in fitted.support_texts for r in rows[1:])


def test_widget_takes_five_classes(bilstm_model, synthetic):
    texts, labels = synthetic[0], synthetic[1]
    bilstm_model.fit(texts, labels)
    meta = front_matter(generate_model_card(bilstm_model))
    assert len(bilstm_model.classes_) == 6
    first = {c: texts[labels.index(c)] for c in bilstm_model.classes_}
    assert meta["widget"] == [{"text": first[c]} for c in bilstm_model.classes_[:5]]


def test_model_without_support_set(tiny_bert_model):
    card = generate_model_card(tiny_bert_model)
    meta = front_matter(card)
    assert "widget" not in meta and "model-index" not in meta and "metrics" not in meta
    assert meta["library_name"] == "textmatch"
    assert "base_model" not in meta  # the fixture's base model is a local folder, not a Hub id
    assert re.search(r"no support set", section(card, "Labels"))
    code = usage_code(card)
    assert call_args(code, "from_pretrained") == ["path/to/model"]
    assert call_args(code, "fit")  # the snippet gives it examples first
    compile(code, "usage", "exec")


def test_local_base_model_stays_out_of_yaml(tiny_bert_model, tiny_bert_dir):
    card = generate_model_card(tiny_bert_model)
    assert "base_model" not in front_matter(card)
    assert str(tiny_bert_dir) in unescape_md(section(card, "Model details"))
    tiny_bert_model.model_card_data.base_model = "org/override"  # the card data wins
    assert front_matter(generate_model_card(tiny_bert_model))["base_model"] == "org/override"


def test_metadata_from_card_data(fitted):
    data = fitted.model_card_data
    data.language, data.license, data.datasets = ["en", "de"], "apache-2.0", ["org/a"]
    data.model_name, data.tags = "My intents", ["intents"]
    meta = front_matter(generate_model_card(fitted))
    assert meta["language"] == ["en", "de"] and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["org/a"]
    assert meta["tags"][0] == "intents" and {"few-shot", "matching-networks", "textmatch"} <= set(meta["tags"])
    assert re.search(r"^# My intents$", generate_model_card(fitted), re.M)


# -- special characters ---------------------------------------------------------------------------
NASTY_LABELS = ['say "hi" | bye', "two\nlines: yes", "a|b*_#`x`<b>&amp;"]
NASTY_TEXTS = [
    'he said "stop" | then\n---\nleft',
    "key: value # not a comment\r\n- item",
    "```python\nprint('x')\n```",
    "  leading space and a \\ backslash",
    "plain text",
    "<script>alert(1)</script> | [link](http://x)",
]


def test_special_characters_are_escaped(bilstm_model, tmp_path):
    labels = [NASTY_LABELS[i % 3] for i in range(len(NASTY_TEXTS))]
    bilstm_model.fit(NASTY_TEXTS, labels)
    data = bilstm_model.model_card_data
    data.model_name = 'Model "x" | y\n---'
    data.train_dataset_name = "org/data|set"
    data.training_args = {"note": "a | b\nc", "odd | name": 1}
    evaluate(bilstm_model, NASTY_TEXTS[:3], labels[:3], dataset_name='ds "q" | x', split="te|st")
    card = generate_model_card(bilstm_model, model_path='dir "x"/m`')

    meta = front_matter(card)  # the front matter ends where it should and parses
    assert [w["text"] for w in meta["widget"]] == [NASTY_TEXTS[labels.index(c)] for c in bilstm_model.classes_]
    assert meta["model-index"][0]["name"] == 'Model "x" | y\n---'
    assert meta["model-index"][0]["results"][0]["dataset"]["name"] == 'ds "q" | x'
    assert "org/data|set" in meta["datasets"]
    from huggingface_hub import ModelCard

    assert ModelCard(card).data.widget == meta["widget"]

    assert body(card).startswith("\n# Model \"x\" \\| y ---\n")  # the title stays one line
    rows = table(section(card, "Labels"))
    assert all(len(r) == 3 for r in rows)
    assert {r[0]: int(r[1]) for r in rows[1:]} == {c: 2 for c in NASTY_LABELS}
    one_break = lambda t: "\n".join(t.splitlines())  # noqa: E731 - \r\n shows as one <br>
    assert {r[2] for r in rows[1:]} == {one_break(NASTY_TEXTS[labels.index(c)]) for c in NASTY_LABELS}
    assert table(section(card, "Training"))[1:] == [["note", "a | b\nc"], ["odd | name", "1"]]
    eval_rows = table(section(card, "Evaluation"))
    assert eval_rows[1][:2] == ['ds "q" | x', "te|st"]
    assert "<script>" not in card and "<b>" not in card

    code = usage_code(card)
    compile(code, "usage", "exec")
    assert call_args(code, "from_pretrained") == ['dir "x"/m`']
    assert call_args(code, "predict") == [[meta["widget"][0]["text"]]]


# -- textmatch.evaluate -----------------------------------------------------------------------------
def test_evaluate_against_a_hand_count(fitted, monkeypatch):
    gold = ["food", "food", "food", "music", "music", "weather"]
    predicted = ["food", "food", "music", "music", "music", "food"]
    texts = [f"text {i}" for i in range(len(gold))]
    monkeypatch.setattr(fitted, "predict", lambda t, batch_size=64: predicted[: len(t)])
    report = evaluate(fitted, texts, gold, dataset_name="hand", split="validation")
    assert report["n"] == 6
    assert math.isclose(report["accuracy"], 4 / 6)
    # food: 2 right of 3 predicted, 3 gold -> P = R = F1 = 2/3; music: P 2/3, R 2/2 -> F1 0.8;
    # weather: never predicted -> 0
    assert math.isclose(report["per_label"]["food"]["f1"], 2 / 3)
    assert math.isclose(report["per_label"]["music"]["f1"], 0.8)
    assert math.isclose(report["per_label"]["music"]["precision"], 2 / 3)
    assert report["per_label"]["weather"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert math.isclose(report["macro_f1"], (2 / 3 + 0.8 + 0.0) / 3)
    (entry,) = fitted.model_card_data.eval_results
    assert entry["dataset"] == "hand" and entry["split"] == "validation"
    assert entry["metrics"] == {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}


def test_evaluate_records_one_result_per_dataset_and_split(fitted):
    texts, labels = [t for t, _ in TEST], [y for _, y in TEST]
    report = evaluate(fitted, texts, labels)
    expected = sum(p == y for p, y in zip(fitted.predict(texts), labels)) / len(labels)
    assert report["accuracy"] == expected
    assert [(e["dataset"], e["split"]) for e in fitted.model_card_data.eval_results] == [("unknown", "test")]
    evaluate(fitted, texts[:2], labels[:2], dataset_name="d", split="test")
    evaluate(fitted, texts[:1], labels[:1], dataset_name="d", split="test")  # replaces the one before
    evaluate(fitted, texts, labels, dataset_name="d", split="validation")
    results = fitted.model_card_data.eval_results
    assert [(e["dataset"], e["split"]) for e in results] == [("unknown", "test"), ("d", "test"), ("d", "validation")]
    assert results[1]["metrics"]["accuracy"] == float(fitted.predict(texts[:1]) == labels[:1])


def test_evaluate_int_labels_with_oos(bilstm_model):
    texts, _ = support()
    labels = [1, 1, 1, 2, 2, 3]
    bilstm_model.fit(texts, labels)
    report = evaluate(bilstm_model, texts, labels)
    assert report["accuracy"] == sum(p == y for p, y in zip(bilstm_model.predict(texts), labels)) / len(labels)
    bilstm_model.config.threshold = 1.0
    report = evaluate(bilstm_model, texts, labels)  # every prediction is "oos", a str among int labels
    assert report["accuracy"] == 0.0 and "oos" in report["per_label"]


def test_evaluate_bad_input(fitted):
    with pytest.raises(TextMatchError, match="2 texts but 1"):
        evaluate(fitted, ["a", "b"], ["food"])
    with pytest.raises(TextMatchError, match="nothing to evaluate"):
        evaluate(fitted, [], [])
    assert fitted.model_card_data.eval_results == []


def test_cli_uses_the_shared_report():
    from textmatch.classification import metrics
    from textmatch.cli import classify

    assert classify.classification_report is metrics.classification_report


# -- Trainer ---------------------------------------------------------------------------------------
def test_training_args_after_train(bilstm_model, synthetic, tmp_path):
    texts, labels = synthetic[0][:60], synthetic[1][:60]
    bilstm_model.fit(texts, labels)
    evaluate(bilstm_model, texts[:6], labels[:6], dataset_name="before")
    assert section(generate_model_card(bilstm_model), "Training") is None
    args = TrainingArguments(output_dir=str(tmp_path / "run"), num_episodes=2, show_progress_bar=False, use_cpu=True)
    Trainer(bilstm_model, args, train_dataset=(texts, labels), train_dataset_name="org/synthetic").train()
    data = bilstm_model.model_card_data
    assert data.train_dataset_name == "org/synthetic"
    assert data.eval_results == []  # results of the weights before training are dropped
    # the recipe: textmatch's own fields and the Hugging Face ones that say how the model trained
    assert set(data.training_args) == set(RECIPE_FIELDS) | set(RECIPE_HF_ARGS) | set(FREEZING_FIELDS) | {"processes"}
    assert data.training_args["processes"] == 1
    assert data.training_args["optim"] == "adamw_torch_fused" and data.training_args["warmup_steps"] == 0.1
    assert data.training_args["num_episodes"] == 2
    assert isinstance(data.training_args["k_shot"], int)  # as used, not None

    card = generate_model_card(bilstm_model)
    assert front_matter(card)["datasets"] == ["org/synthetic"]
    training = section(card, "Training")
    assert re.search(r"episodic training \(N-way K-shot episodes\) on org/synthetic", training)
    rows = table(training)
    assert rows[0] == ["Argument", "Value"]
    shown = dict(rows[1:])
    assert shown["num_episodes"] == "2" and shown["learning_rate"] == "3e-05" and shown["n_way"] == "2"
    assert "output_dir" not in shown and "use_cpu" not in shown and "report_to" not in shown


def test_earlier_training_runs_are_kept(bilstm_model, synthetic, tmp_path):
    """A second training run (e.g. fine-tuning after meta-training) moves the first one to
    earlier_training; the card lists it and it survives save / load."""
    texts, labels = synthetic[0][:60], synthetic[1][:60]
    for i, (name, episodes) in enumerate((("org/source", 2), (None, 3))):
        args = TrainingArguments(output_dir=str(tmp_path / f"run{i}"), num_episodes=episodes, show_progress_bar=False, use_cpu=True)
        Trainer(bilstm_model, args, train_dataset=(texts, labels), train_dataset_name=name).train()
    data = bilstm_model.model_card_data
    assert data.training_args["num_episodes"] == 3 and data.train_dataset_name is None
    assert [(e["train_dataset_name"], e["training_args"]["num_episodes"]) for e in data.earlier_training] == [("org/source", 2)]
    training = section(generate_model_card(bilstm_model), "Training")
    assert re.search(r"### Earlier training.*\n1\. episodes on org/source: `num_episodes` = 2", training, re.S)
    bilstm_model.save_pretrained(tmp_path / "saved")
    again = MatchingNetwork.from_pretrained(tmp_path / "saved")
    assert again.model_card_data.earlier_training == data.earlier_training
    with pytest.raises(TextMatchError, match="earlier_training"):
        ModelCardData(earlier_training=["not a dict"])


def test_train_dataset_name_from_datasets(tmp_path, bilstm_model, synthetic):
    import datasets

    texts, labels = synthetic[0][::10], synthetic[1][::10]
    plain = datasets.Dataset.from_dict({"text": texts, "label": labels})
    assert infer_dataset_name(plain) is None
    assert infer_dataset_name((texts, labels)) is None
    named = datasets.Dataset.from_dict({"text": texts, "label": labels}, info=datasets.DatasetInfo(dataset_name="intents"))
    assert infer_dataset_name(named) == "intents"
    assert infer_dataset_name(datasets.DatasetDict({"train": named})) == "intents"
    assert Trainer(bilstm_model, train_dataset=named).train_dataset_name == "intents"
    assert Trainer(bilstm_model, train_dataset=named, train_dataset_name="mine").train_dataset_name == "mine"
    # a Hub dataset's cache folder is <namespace>___<name>: the namespace comes back
    hub_like = tmp_path / "org___intents" / "default"
    named.save_to_disk(str(hub_like))
    assert infer_dataset_name(datasets.load_from_disk(str(hub_like))) == "org/intents"
    # a CSV file read with the packaged builder has no name worth a card
    csv = tmp_path / "train.csv"
    csv.write_text("text,label\n" + "\n".join(f"{t},{y}" for t, y in zip(texts, labels)) + "\n")
    from textmatch import load_text_dataset

    assert infer_dataset_name(load_text_dataset(str(csv))) is None


# -- saving ----------------------------------------------------------------------------------------
def test_save_writes_readme_and_reload_keeps_card_data(fitted, tmp_path):
    data = fitted.model_card_data
    data.language, data.license, data.model_id = "en", "mit", "someone/intents-model"
    data.training_args = {"num_episodes": 5}
    evaluate(fitted, [t for t, _ in TEST], [y for _, y in TEST], dataset_name="org/intents")
    folder = fitted.save_pretrained(tmp_path / "model")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme == generate_model_card(fitted)
    assert json.loads((folder / "config.json").read_text())["model_card_data"] == data.to_dict()

    loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.model_card_data == data
    assert generate_model_card(loaded) == readme
    # without a model_id the snippet loads the folder the model was saved to
    loaded.model_card_data.model_id = None
    loaded.save_pretrained(tmp_path / "copy")
    code = usage_code((tmp_path / "copy" / "README.md").read_text(encoding="utf-8"))
    assert call_args(code, "from_pretrained") == [str(tmp_path / "copy")]


def test_save_replaces_readme_keeps_other_files(fitted, tmp_path):
    folder = fitted.save_pretrained(tmp_path / "model")
    (folder / "notes.txt").write_text("mine")
    fitted.model_card_data.model_name = "Second save"
    fitted.save_pretrained(folder)
    assert (folder / "notes.txt").read_text() == "mine"
    assert re.search(r"^# Second save$", (folder / "README.md").read_text(encoding="utf-8"), re.M)


def test_card_failure_leaves_old_folder_intact(fitted, tmp_path, monkeypatch):
    folder = fitted.save_pretrained(tmp_path / "model")
    before = (folder / "README.md").read_bytes()
    def boom(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr(MatchingNetwork, "model_card_writer", boom)
    with pytest.raises(RuntimeError, match="card failed"):
        fitted.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (folder / "README.md").read_bytes() == before


def test_folder_saved_before_model_cards(fitted, tmp_path):
    folder = fitted.save_pretrained(tmp_path / "model")
    (folder / "textmatch-manifest.json").unlink()  # those folders had no manifest either
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["model_card_data"]
    path.write_text(json.dumps(cfg))
    assert MatchingNetwork.from_pretrained(str(folder)).model_card_data == ModelCardData()

    cfg["model_card_data"] = {"eval_results": "not a list", "future_key": 1}
    path.write_text(json.dumps(cfg))
    with pytest.warns(UserWarning, match="ignoring its model card data"):
        loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.model_card_data == ModelCardData()


# -- ModelCardData ---------------------------------------------------------------------------------
def test_model_card_data_round_trip_and_defaults():
    data = ModelCardData()
    assert data.tags == DEFAULT_TAGS and data.tags is not DEFAULT_TAGS
    assert data.eval_results == [] and data.training_args == {} and data.datasets == []
    full = ModelCardData(
        language="en", license="apache-2.0", model_name="m", model_id="u/m", base_model="b/m",
        datasets="org/a", train_dataset_name="org/a",
        eval_results=[{"dataset": "d", "split": "test", "metrics": {"accuracy": 1}}],
        training_args={"num_episodes": 3}, tags=["x", "x", "y"],
    )
    assert full.datasets == ["org/a"] and full.tags == ["x", "y"]
    assert full.eval_results[0]["metrics"] == {"accuracy": 1.0}
    again = ModelCardData.from_dict({**full.to_dict(), "from_the_future": True})
    assert again == full
    again.to_dict()["datasets"].append("z")  # to_dict is a copy
    assert again.datasets == ["org/a"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"license": 3}, "license must be a string"),
        ({"language": ["en", ""]}, r"language\[1\]"),
        ({"datasets": [None]}, r"datasets\[0\]"),
        ({"tags": "few-shot"}, None),  # a single tag is accepted
        ({"model_id": "user/has space"}, "model_id"),
        ({"eval_results": {"dataset": "d"}}, "eval_results must be a list"),
        ({"eval_results": [{"dataset": "d", "split": "test", "metrics": {}}]}, "metrics"),
        ({"eval_results": [{"dataset": "", "split": "test", "metrics": {"a": 1}}]}, "dataset"),
        ({"eval_results": [{"dataset": "d", "split": "test", "metrics": {"a": float("nan")}}]}, "finite"),
        ({"eval_results": [{"dataset": "d", "split": "test", "metrics": {"a": "high"}}]}, "finite"),
        ({"training_args": [1, 2]}, "training_args"),
    ],
)
def test_model_card_data_validation(kwargs, match):
    if match is None:
        ModelCardData(**kwargs)
        return
    with pytest.raises(TextMatchError, match=match):
        ModelCardData(**kwargs)


def test_model_card_data_add_eval_result_replaces():
    data = ModelCardData()
    data.add_eval_result("d", "test", {"accuracy": 0.5})
    data.add_eval_result("d", "validation", {"accuracy": 0.6})
    data.add_eval_result("d", "test", {"accuracy": 0.7})
    assert [(e["split"], e["metrics"]["accuracy"]) for e in data.eval_results] == [("validation", 0.6), ("test", 0.7)]
    with pytest.raises(TextMatchError, match="finite"):
        data.add_eval_result("d", "test", {"accuracy": None})
    assert len(data.eval_results) == 2


def test_details_name_the_head_and_class_names(tiny_bert_model):
    tiny_bert_model.config.head, tiny_bert_model.config.label_names = "ensemble", True
    tiny_bert_model.fit(["rain today", "sunny", "play jazz", "a song"], ["weather", "weather", "music", "music"])
    details = section(generate_model_card(tiny_bert_model), "Model details")
    assert re.search(r"\*\*Head:\*\* ensemble: the mean of eq\. 1 and a logistic regression .*\(C = 10\)", details)
    assert re.search(r"\*\*Class names as examples:\*\* on$", details, re.M)
    tiny_bert_model.config.head, tiny_bert_model.config.label_names = "matching", False
    details = section(generate_model_card(tiny_bert_model), "Model details")
    assert re.search(r"\*\*Head:\*\* matching: P\(y \\?\| x, S\) of eq\. 1", details)
    assert re.search(r"\*\*Class names as examples:\*\* off$", details, re.M)
