"""Multi-dataset episodic meta-training: MultiSourceEpisodeSampler (one source per episode,
chosen from (seed, i) in proportion to sqrt(texts)), the Trainer with a dict of sources (own
shapes, card record, no support set, per-source validation), and `textmatch pretrain` then
`textmatch train --model`."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import make_sentences
from textmatch import EpisodeSampler, MatchingNetwork, TextMatchError, Trainer, TrainingArguments, cli
from textmatch.classification.fewshot import evaluate_episodes
from textmatch.classification.training import is_source_dict
from textmatch.cli.pretrain import source_name
from textmatch.core.episodes import MultiSourceEpisodeSampler


def unique_source(prefix: str, n_classes: int, n_per_class: int) -> tuple[list[str], list[str]]:
    """Texts that name their source and class, so a text tells where it came from."""
    texts = [f"{prefix} class {c} example {j}" for c in range(n_classes) for j in range(n_per_class)]
    labels = [f"c{c}" for c in range(n_classes) for _ in range(n_per_class)]  # the same label names in every source
    return texts, labels


def topic_sources() -> dict[str, tuple[list[str], list[str]]]:
    """Two sources of the synthetic task, three topics each (different topics)."""
    texts, labels = make_sentences(10, seed=1)
    split = {"A": ("weather", "music", "food"), "B": ("travel", "money", "health")}
    return {name: ([t for t, y in zip(texts, labels) if y in keep], [y for y in labels if y in keep])
            for name, keep in split.items()}


def args(tmp_path, **changes) -> TrainingArguments:
    base = dict(output_dir=str(tmp_path / "run"), num_episodes=2, show_progress_bar=False)
    return TrainingArguments(**{**base, **changes})


# -- the sampler ----------------------------------------------------------------------------------
def sampler_of(sizes: dict[str, int], seed: int = 0) -> MultiSourceEpisodeSampler:
    """Sources of 4 classes with sizes[name] texts each."""
    return MultiSourceEpisodeSampler(
        {name: EpisodeSampler(unique_source(name, 4, n // 4), 2, 1, 1, seed=seed) for name, n in sizes.items()},
        seed=seed,
    )


def test_source_choice_depends_only_on_seed_and_index():
    sizes = {"big": 400, "mid": 100, "small": 36}
    one, two = sampler_of(sizes, seed=5), sampler_of(sizes, seed=5)
    order = [17, 3, 250, 0, 3]  # any order, any repetition: episode i is episode i
    assert [one.source_of(i) for i in order] == [two.source_of(i) for i in reversed(order)][::-1]
    for i in order:
        a, b = one.episode(i), two.episode(i)
        assert (a.source, a.support_texts, a.query_texts, a.classes) == (b.source, b.support_texts, b.query_texts, b.classes)
        assert a.source == one.source_of(i) == one.episode_indices(i)[0]
    assert [one.source_of(i) for i in range(200)] != [sampler_of(sizes, seed=6).source_of(i) for i in range(200)]


def test_sources_are_drawn_in_proportion_to_sqrt_size():
    sizes = {"big": 400, "mid": 100, "small": 36}  # sqrt: 20, 10, 6
    sampler = sampler_of(sizes, seed=0)
    want = {name: math.sqrt(n) / 36 for name, n in sizes.items()}
    assert sampler.probabilities == pytest.approx(want)
    draws = 20_000
    counts = Counter(sampler.source_of(i) for i in range(draws))
    for name, p in want.items():  # binomial sd <= 0.0036: 0.02 is > 5 sd (and the seed is fixed)
        assert abs(counts[name] / draws - p) < 0.02, (name, counts[name] / draws, p)


def test_the_sampler_refuses_bad_sources():
    with pytest.raises(TextMatchError, match="at least one source"):
        MultiSourceEpisodeSampler({})
    with pytest.raises(TextMatchError, match="expected an EpisodeSampler"):
        MultiSourceEpisodeSampler({"A": unique_source("A", 3, 4)})


# -- the Trainer with a dict of sources ---------------------------------------------------------
def test_no_episode_mixes_sources_and_each_keeps_its_shape(bilstm_model, tmp_path):
    sources = {"seven": unique_source("seven", 7, 6), "three": unique_source("three", 3, 12)}
    trainer = Trainer(bilstm_model, args(tmp_path), train_dataset=sources)
    sampler = trainer.train_sampler
    assert isinstance(sampler, MultiSourceEpisodeSampler) and sampler.sources == ["seven", "three"]
    shapes = {name: (s.n_way, s.k_shot, s.q_query) for name, s in sampler.samplers.items()}
    assert shapes["seven"][0] == 7 and shapes["three"][0] == 3  # each source its own width
    texts = {name: set(data[0]) for name, data in sources.items()}
    seen = Counter()
    for episode in sampler.episodes(300):
        seen[episode.source] += 1
        assert set(episode.support_texts + episode.query_texts) <= texts[episode.source]  # one source only
        assert (episode.n_way, len(episode.support_texts) // episode.n_way,
                len(episode.query_texts) // episode.n_way) == shapes[episode.source]
    assert set(seen) == {"seven", "three"}
    # a user's n_way is a cap: 5-way on the 7-class source, 3-way on the 3-class one
    capped = Trainer(bilstm_model, args(tmp_path, n_way=5), train_dataset=sources).train_sampler
    assert {name: s.n_way for name, s in capped.samplers.items()} == {"seven": 5, "three": 3}


def test_a_dict_of_columns_is_still_one_dataset(bilstm_model, tmp_path):
    texts, labels = unique_source("one", 3, 10)
    columns = Trainer(bilstm_model, args(tmp_path), train_dataset={"text": texts, "label": labels})
    pair = Trainer(bilstm_model, args(tmp_path), train_dataset=(texts, labels))
    assert columns.train_sources is None and isinstance(columns.train_sampler, EpisodeSampler)
    assert columns.train_sampler.episode(3) == pair.train_sampler.episode(3)
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts, "label": labels})})
    assert not is_source_dict(splits)  # the splits of one dataset are not sources
    assert is_source_dict({"text": (texts, labels)})  # a source may be named like a column


def test_meta_training_trains_records_the_card_and_saves_no_support(bilstm_model, tmp_path):
    sources = topic_sources()
    before = {name: evaluate_episodes(bilstm_model, data, 3, 3, 3, num_episodes=20, seed=9).loss
              for name, data in sources.items()}
    start = {k: v.clone() for k, v in bilstm_model.state_dict().items()}
    trainer = Trainer(bilstm_model, args(tmp_path, num_episodes=30, learning_rate=3e-3, eval_steps=15, eval_episodes=10),
                      train_dataset=sources, eval_dataset=sources)
    out = trainer.train()
    assert out.global_step == 30 and math.isfinite(out.training_loss)
    assert any(not torch.equal(start[k], v) for k, v in bilstm_model.state_dict().items())  # the weights moved
    after = {name: evaluate_episodes(bilstm_model, data, 3, 3, 3, num_episodes=20, seed=9).loss
             for name, data in sources.items()}
    assert all(after[name] < before[name] for name in sources), (before, after)
    # validation: each source on its own episodes, eval_accuracy their mean
    evals = [r for r in out.log_history if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [15, 30]
    for r in evals:
        assert r["eval_accuracy"] == pytest.approx((r["eval_A_accuracy"] + r["eval_B_accuracy"]) / 2)
    # the card
    card = bilstm_model.model_card_data
    assert card.train_dataset_name == "A + B"
    recipe = card.training_args
    assert recipe["objective"] == "meta-training" and recipe["sources"] == ["A", "B"]
    assert recipe["episode_shapes"]["A"] == {"n_way": 3, "k_shot": 5, "q_query": 5}
    assert sum(recipe["source_probabilities"].values()) == pytest.approx(1)
    assert "n_way" not in recipe  # each source has its own
    # no support set: saved without one, and loads without one
    assert bilstm_model.classes_ == [] and trainer.train_texts == []
    folder = bilstm_model.save_pretrained(tmp_path / "meta")
    assert not (folder / "support_set.json").exists()
    again = MatchingNetwork.from_pretrained(str(folder))
    assert again.classes_ == [] and again.model_card_data.training_args["objective"] == "meta-training"


def test_a_support_set_the_model_had_is_re_encoded(bilstm_model, tmp_path):
    texts, labels = unique_source("kept", 3, 4)
    bilstm_model.fit(texts, labels)
    trainer = Trainer(bilstm_model, args(tmp_path, learning_rate=1e-2), train_dataset=topic_sources())
    with pytest.warns(UserWarning, match="support set of 12 examples"):
        trainer.train()
    assert bilstm_model.support_texts == texts
    fresh = bilstm_model.encode(texts, normalize_embeddings=False, convert_to_tensor=True, role="support")  # new g'(S)
    assert torch.allclose(bilstm_model.support_base_embeddings_, fresh, atol=1e-5)


def one_class(n: int = 6):
    return [f"only {i}" for i in range(n)], ["a"] * n


@pytest.mark.parametrize("train,eval_,changes,message", [
    ({}, None, {}, "train_dataset is an empty dict"),
    ({"A": unique_source("A", 3, 6), "B": one_class()}, None, {}, r"source 'B'.*1 class.*drop the source"),
    ({"A": unique_source("A", 3, 6), "B": "not data"}, None, {}, r"source 'B'.*expected a datasets.Dataset"),
    ({"": unique_source("A", 3, 6)}, None, {}, "non-empty strings"),
    ({"A": unique_source("A", 3, 6)}, None, {"k_shot": 4, "q_query": 4}, r"source 'A'.*lower k_shot"),
    ({"A": unique_source("A", 3, 6), "B": unique_source("B", 4, 6)}, None, {"per_device_train_batch_size": 2},
     r"different widths \(A: 3-way, B: 4-way\).*gradient_accumulation_steps"),
    ({"A": unique_source("A", 3, 6)}, {"V": one_class()}, {}, r"eval_dataset source 'V'"),
])
def test_bad_sources_are_refused_with_the_fix(bilstm_model, tmp_path, train, eval_, changes, message):
    with pytest.raises(TextMatchError, match=message):
        Trainer(bilstm_model, args(tmp_path, **changes), train_dataset=train, eval_dataset=eval_)


def test_classes_too_small_for_an_episode_are_left_out_with_a_warning(bilstm_model, tmp_path):
    """A public intent set (ATIS) has classes of one example: the source still trains, on its
    other classes, and a warning names how many were left out."""
    texts, labels = unique_source("A", 3, 6)
    source = (texts + ["A rare one"], labels + ["rare"])
    with pytest.warns(UserWarning, match=r"source 'A': 1 of its 4 classes have fewer than 2 examples.*'rare'"):
        trainer = Trainer(bilstm_model, args(tmp_path), train_dataset={"A": source, "B": unique_source("B", 4, 6)})
    sampler = trainer.train_sampler.samplers["A"]
    assert sampler.n_way == 3 and "rare" not in sampler.classes
    assert all("rare" not in e.classes for e in trainer.train_sampler.episodes(30))


# -- the CLI --------------------------------------------------------------------------------------
def write_csv(path: Path, texts, labels) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(("text", "label"))
        writer.writerows(zip(texts, labels))
    return path


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_pretrain_then_train_model(tiny_bert_dir, tmp_path, capsys):
    sources = topic_sources()
    a = write_csv(tmp_path / "A.csv", *sources["A"])
    b = write_csv(tmp_path / "bank.csv", *sources["B"])
    few_texts, few_labels = make_sentences(3, seed=7)
    few = write_csv(tmp_path / "few.csv", few_texts, few_labels)
    meta = tmp_path / "meta"
    code, out, err = run(["pretrain", "--model", tiny_bert_dir, "--data", a, "--data", f"B={b}", "--valid", f"A={a}",
                          "--output", meta, "--episodes", "4", "--eval-steps", "2", "--eval-episodes", "3",
                          "--lr", "1e-3", "--no-progress", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["episodes"] == 4 and summary["n_support"] == 0 and summary["best_eval_accuracy"] is not None
    assert set(summary["sources"]) == {"A", "B"} and summary["sources"]["A"]["classes"] == 3
    assert summary["arguments"]["objective"] == "meta-training"
    assert (meta / "model.safetensors").is_file() and not (meta / "support_set.json").exists()
    assert summary["training_curves"] == str(tmp_path / "meta.run" / "training_curves.png")
    assert (tmp_path / "meta.run" / "training_curves.png").stat().st_size > 5000

    tuned = tmp_path / "tuned"
    code, out, err = run(["train", "--model", meta, "--train", few, "--output", tuned, "--episodes", "2",
                          "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_support"] == 18
    earlier = MatchingNetwork.from_pretrained(str(tuned)).model_card_data.earlier_training
    assert [(e["train_dataset_name"], e["training_args"]["objective"]) for e in earlier] == [("A + B", "meta-training")]
    readme = (tuned / "README.md").read_text(encoding="utf-8")
    assert "### Earlier training" in readme and "1. meta-training on A + B: `sources`" in readme


def test_cli_source_names_and_errors(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    a = write_csv(tmp_path / "A.csv", *unique_source("A", 3, 4))
    a2 = write_csv(tmp_path / "x" / "A.csv", *unique_source("A2", 3, 4))
    assert source_name(str(a)) == ("A", str(a))
    assert source_name(f"bank={a}") == ("bank", str(a))
    assert source_name("org/intents") == ("org/intents", "org/intents")  # a Hub id names itself
    odd = write_csv(tmp_path / "k=v.csv", *unique_source("K", 3, 4))
    assert source_name(str(odd)) == ("k=v", str(odd))  # an existing path is not split at '='
    code, _, err = run(["pretrain", "--data", a, "--data", a2, "--output", tmp_path / "out"], capsys)
    assert code == 2 and "named 'A'" in err and "NAME=PATH" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(["pretrain", "--output", tmp_path / "out"], capsys)
    assert code == 2 and "no training data" in err


def test_help_lists_pretrain(capsys):
    assert cli.main(["--help"]) == 0
    assert "pretrain" in capsys.readouterr().out
    assert cli.main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--data" in out and "--valid" in out and "--episodes" in out and "--max-steps" not in out
