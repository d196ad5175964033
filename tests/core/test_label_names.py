"""Class names as evidence (textmatch.core.label_names): the names, the support set they join,
eq. 1 by hand with them, training episodes that hold them, and saving."""

from __future__ import annotations

import numpy as np
import pytest

from textmatch import MatchingNetwork, MatchingNetworkConfig, TextMatchError, Trainer, TrainingArguments
from textmatch.core.label_names import humanize_label, label_examples

TEXTS = ["will it rain today", "sunny forecast please", "play a song from the album", "my playlist now",
         "pizza for dinner", "a burger and salad"]
LABELS = ["weather_query", "weather_query", "PlayMusic", "PlayMusic", "food-order", "food-order"]
QUERIES = ["rain and wind today", "play the guitar track", "pizza and noodles please"]


@pytest.mark.parametrize("label, name", [
    ("card_arrival", "card arrival"), ("PlayMusic", "play music"), ("AddToPlaylist", "add to playlist"),
    ("Refund_not_showing_up", "refund not showing up"), ("food-order", "food order"), ("atis_flight", "atis flight"),
    ("getHTTPStatus", "get http status"), (3, None), ("___", None), ("42", None),
])
def test_humanize_label(label, name):
    assert humanize_label(label) == name


def test_label_examples_use_descriptions_and_skip_unreadable_labels():
    texts, ids = label_examples(["A12", "card_arrival", 7], {"A12": "lost or stolen card"})
    assert texts == ["lost or stolen card", "card arrival"] and ids == [0, 1]
    with pytest.raises(TextMatchError, match="label_descriptions"):
        MatchingNetworkConfig(label_descriptions={"a": ""})
    with pytest.raises(TextMatchError, match="label_names must be True or False"):
        MatchingNetworkConfig(label_names="yes")


def test_names_join_the_support_set_in_eq_1(tiny_bert_model):
    tiny_bert_model.config.label_names = True
    tiny_bert_model.fit(TEXTS, LABELS)
    classes = tiny_bert_model.classes_
    names = [humanize_label(c) for c in classes]
    assert tiny_bert_model.support_embeddings_.shape[0] == len(TEXTS)  # the user's examples only
    assert tiny_bert_model.support_texts == TEXTS
    # eq. 1 by hand over the examples and the names
    s = tiny_bert_model.encode(TEXTS + names, normalize_embeddings=True)
    q = tiny_bert_model.encode(QUERIES, normalize_embeddings=True)
    labels = LABELS + list(classes)
    logits = q @ s.T / float(tiny_bert_model.temperature)
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    want = np.stack([a[:, [y == c for y in labels]].sum(1) for c in classes], 1)
    assert np.abs(tiny_bert_model.predict_proba(QUERIES) - want).max() < 1e-4
    # a class's name is a support example: the name itself is matched exactly
    assert np.allclose(tiny_bert_model.classify(names).best_similarity, 1.0, atol=1e-5)


def test_new_classes_bring_their_names_and_saving_keeps_them(tiny_bert_model, tmp_path):
    tiny_bert_model.config.label_names = True
    tiny_bert_model.config.head = "ensemble"
    tiny_bert_model.fit(TEXTS, LABELS)
    tiny_bert_model.add_examples(["book a flight to paris"], ["BookFlight"])
    assert "BookFlight" in tiny_bert_model.classes_
    assert np.allclose(tiny_bert_model.classify(["book flight"]).best_similarity, 1.0, atol=1e-5)  # its name joined
    probs = tiny_bert_model.predict_proba(QUERIES)
    again = MatchingNetwork.from_pretrained(tiny_bert_model.save_pretrained(tmp_path / "m"))
    assert again.config.label_names and again.config.head == "ensemble"
    assert np.allclose(again.predict_proba(QUERIES), probs, atol=1e-5)


def test_switching_names_on_after_fit_refits(tiny_bert_model):
    tiny_bert_model.fit(TEXTS, LABELS)
    before = tiny_bert_model.predict_proba(QUERIES)
    tiny_bert_model.config.label_names = True
    after = tiny_bert_model.predict_proba(QUERIES)
    assert not np.allclose(before, after)


def test_training_episodes_hold_the_names(bilstm_model, tmp_path):
    bilstm_model.config.label_names = True
    texts = TEXTS * 2
    labels = LABELS * 2
    args = TrainingArguments(output_dir=str(tmp_path / "run"), num_episodes=1, show_progress_bar=False, use_cpu=True)
    trainer = Trainer(bilstm_model, args, train_dataset=(texts, labels))
    episode_texts = set(trainer.train_sampler.texts)
    assert {"weather query", "play music", "food order"} <= episode_texts
    assert trainer.train_texts == texts  # the support set stored at the end is the user's data
    trainer.train()
    assert bilstm_model.support_texts == texts
