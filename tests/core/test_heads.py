"""Classification heads (textmatch.core.heads): the logistic regression against scikit-learn,
the heads of a MatchingNetwork against hand computations, refitting when the support set
changes, and saving / loading the fitted head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegression

from textmatch import MatchingNetwork, MatchingNetworkConfig, TextMatchError
from textmatch.core import heads

TEXTS = ["will it rain today", "sunny forecast please", "cloudy with snow", "play a song from the album",
         "my playlist now", "guitar band track", "pizza for dinner", "a burger and salad", "noodles today"]
LABELS = ["weather"] * 3 + ["music"] * 3 + ["food"] * 3
QUERIES = ["rain and wind today", "play the guitar track", "pizza and noodles please"]


@pytest.mark.parametrize("c", [0.5, 10.0])
def test_logistic_regression_matches_scikit_learn(c):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 120)
    x = rng.normal(size=(120, 16)) + 1.5 * np.eye(6, 16)[y]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    weight, bias = heads.fit_logistic_regression(torch.tensor(x), torch.tensor(y), 6, c)
    ours = heads.logreg_probs(torch.tensor(x, dtype=torch.float32), weight, bias).numpy()
    theirs = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x, y)
    assert np.abs(ours - theirs.predict_proba(x)).max() < 1e-4
    assert np.abs(weight.numpy() - theirs.coef_).max() < 1e-3


def test_combine_and_checks():
    m = torch.tensor([[0.8, 0.2]])
    lr = torch.tensor([[0.4, 0.6]])
    assert torch.equal(heads.combine("matching", m, None), m)
    assert torch.equal(heads.combine("logreg", m, lr), lr)
    assert torch.allclose(heads.combine("ensemble", m, lr), torch.tensor([[0.6, 0.4]]))
    with pytest.raises(TextMatchError, match="call model.fit"):
        heads.combine("logreg", m, None)
    with pytest.raises(TextMatchError, match="head must be one of matching, logreg, ensemble"):
        MatchingNetworkConfig(head="svm")
    with pytest.raises(TextMatchError, match="logreg_c must be a positive"):
        MatchingNetworkConfig(head="logreg", logreg_c=0)


def _by_hand(model: MatchingNetwork, head: str) -> np.ndarray:
    """The head's probabilities from the model's own embeddings, with scikit-learn and eq. 1 by hand."""
    s = model.encode(TEXTS, normalize_embeddings=True)  # (9, dim)
    q = model.encode(QUERIES, normalize_embeddings=True)  # (3, dim)
    classes = sorted(set(LABELS))
    tau = float(model.temperature)
    logits = q @ s.T / tau
    a = np.exp(logits - logits.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    matching = np.stack([a[:, [y == c for y in LABELS]].sum(1) for c in classes], 1)
    lr = LogisticRegression(C=model.config.logreg_c, max_iter=5000, tol=1e-10).fit(s, LABELS).predict_proba(q)
    return {"matching": matching, "logreg": lr, "ensemble": (matching + lr) / 2}[head]


@pytest.mark.parametrize("head", ["matching", "logreg", "ensemble"])
def test_model_heads_against_hand_computation(tiny_bert_model, head):
    tiny_bert_model.config.head = head
    tiny_bert_model.fit(TEXTS, LABELS)
    probs = tiny_bert_model.predict_proba(QUERIES)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.abs(probs - _by_hand(tiny_bert_model, head)).max() < 1e-3


def test_head_refits_when_classes_are_added_and_survives_save(tiny_bert_model, tmp_path):
    tiny_bert_model.config.head = "logreg"
    tiny_bert_model.fit(TEXTS, LABELS)
    before = tiny_bert_model.head_[0].shape
    tiny_bert_model.add_examples(["book a flight to paris", "train tickets to rome"], ["travel", "travel"])
    assert before == (3, tiny_bert_model.query_encoder.dim)
    assert tiny_bert_model.head_[0].shape == (4, tiny_bert_model.query_encoder.dim)
    assert tiny_bert_model.predict(["book a flight to paris"]) == ["travel"]  # a support text gets its class
    probs = tiny_bert_model.predict_proba(QUERIES)
    folder = tiny_bert_model.save_pretrained(tmp_path / "m")
    saved = load_file(str(folder / "support_embeddings.safetensors"))
    assert saved["head_weight"].shape == (4, tiny_bert_model.query_encoder.dim) and saved["head_bias"].shape == (4,)
    again = MatchingNetwork.from_pretrained(folder)
    assert again.config.head == "logreg" and again.config.logreg_c == 10.0
    assert torch.equal(again.head_[0], tiny_bert_model.head_[0])  # loaded, not refitted
    assert np.allclose(again.predict_proba(QUERIES), probs, atol=1e-6)


def test_switching_the_head_after_fit(tiny_bert_model):
    tiny_bert_model.fit(TEXTS, LABELS)
    assert tiny_bert_model.head_ is None  # the matching head fits nothing
    tiny_bert_model.config.head = "ensemble"
    assert np.abs(tiny_bert_model.predict_proba(QUERIES) - _by_hand(tiny_bert_model, "ensemble")).max() < 1e-3
    loaded = MatchingNetwork.from_pretrained(tiny_bert_model.model_dir or _save(tiny_bert_model), head="logreg")
    assert loaded.head_ is not None  # refitted on load: the saved folder had no head


def _save(model: MatchingNetwork):
    import tempfile

    return model.save_pretrained(tempfile.mkdtemp())
