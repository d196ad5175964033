"""MatchingNetworkClassifier: a scikit-learn estimator (params, clone, CV, pipelines) that never
changes the MatchingNetwork it is given."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from textmatch import MatchingNetwork, MatchingNetworkClassifier




PARAMS = {"num_episodes", "learning_rate", "temperature", "threshold", "batch_size", "seed", "model"}


def state_of(net: MatchingNetwork) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_get_set_params_round_trip(bilstm_model):
    clf = MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, temperature=0.1)
    params = clf.get_params()
    assert set(params) == PARAMS
    assert params["model"] is bilstm_model
    assert params["temperature"] == 0.1 and params["num_episodes"] == 0
    assert clf.set_params(temperature=0.2, threshold=0.5, seed=3) is clf
    assert (clf.temperature, clf.threshold, clf.seed) == (0.2, 0.5, 3)
    other = MatchingNetworkClassifier(**{**params, "temperature": 0.2, "threshold": 0.5, "seed": 3})
    assert other.get_params() == clf.get_params()


def test_clone(bilstm_model):
    clf = MatchingNetworkClassifier(model=bilstm_model, num_episodes=3, learning_rate=1e-3, threshold=0.3)
    twin = clone(clf)
    assert twin is not clf
    assert isinstance(twin.model, MatchingNetwork) and twin.model is not bilstm_model  # deep-copied
    params, twin_params = clf.get_params(), twin.get_params()
    for name in PARAMS - {"model"}:
        assert twin_params[name] == params[name]
    for a, b in zip(bilstm_model.parameters(), twin.model.parameters()):
        assert torch.equal(a, b)
    assert not hasattr(twin, "model_")


@pytest.mark.parametrize("which", ["bilstm_model", "tiny_bert_model"])
def test_fit_predict_score(which, request, synthetic):
    net = request.getfixturevalue(which)
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    clf = MatchingNetworkClassifier(model=net, num_episodes=0, temperature=0.1)
    assert clf.fit(train_texts, np.asarray(train_labels)) is clf
    assert list(clf.classes_) == sorted(set(train_labels))
    assert float(clf.model_.temperature) == pytest.approx(0.1, rel=1e-6)
    proba = clf.predict_proba(valid_texts)
    assert proba.shape == (len(valid_texts), 6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    pred = clf.predict(valid_texts)
    assert isinstance(pred, np.ndarray) and pred.shape == (len(valid_texts),)
    assert list(pred) == [clf.classes_[i] for i in proba.argmax(axis=1)]
    score = clf.score(valid_texts, valid_labels)
    assert score == pytest.approx(np.mean(pred == np.asarray(valid_labels)))
    assert 0.0 <= score <= 1.0


def test_threshold_param_gives_oos(bilstm_model, synthetic):
    train_texts, train_labels, valid_texts, _ = synthetic
    clf = MatchingNetworkClassifier(model=bilstm_model, threshold=1.0).fit(train_texts, train_labels)
    assert set(clf.predict(valid_texts[:5])) == {"oos"}


def test_training_inside_fit_learns_and_leaves_model_alone(bilstm_model, synthetic):
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    before = state_of(bilstm_model)
    untrained = MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, temperature=0.1)
    trained = MatchingNetworkClassifier(model=bilstm_model, num_episodes=60, learning_rate=3e-3, temperature=0.1)
    base_score = untrained.fit(train_texts, train_labels).score(valid_texts, valid_labels)
    score = trained.fit(train_texts, train_labels).score(valid_texts, valid_labels)
    assert score > 0.85 and score > base_score
    # the MatchingNetwork passed in is never changed: same weights, still no support set
    assert bilstm_model.classes_ == [] and bilstm_model.support_texts == []
    assert bilstm_model._support_emb is None
    after = state_of(bilstm_model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert trained.model_ is not bilstm_model


def test_fit_does_not_change_passed_model_config(tiny_bert_model, synthetic):
    train_texts, train_labels, _, _ = synthetic
    temperature = float(tiny_bert_model.temperature)
    MatchingNetworkClassifier(model=tiny_bert_model, temperature=0.3, threshold=0.9).fit(train_texts, train_labels)
    assert tiny_bert_model.classes_ == []
    assert tiny_bert_model.config.threshold is None
    assert float(tiny_bert_model.temperature) == temperature


def test_cross_val_score(bilstm_model, synthetic):
    train_texts, train_labels, _, _ = synthetic
    clf = MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, temperature=0.1)
    scores = cross_val_score(clf, train_texts, train_labels, cv=3)
    assert scores.shape == (3,)
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert bilstm_model.classes_ == []


def lowercase(texts):
    return [t.lower() for t in texts]


def test_pipeline(bilstm_model, synthetic):
    train_texts, train_labels, valid_texts, valid_labels = synthetic
    shouting = [t.upper() for t in valid_texts]
    pipe = Pipeline(
        [
            ("lower", FunctionTransformer(lowercase)),
            ("clf", MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, temperature=0.1)),
        ]
    )
    pipe.fit([t.upper() for t in train_texts], train_labels)
    assert list(pipe.classes_) == sorted(set(train_labels))
    direct = MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, temperature=0.1).fit(train_texts, train_labels)
    np.testing.assert_allclose(pipe.predict_proba(shouting), direct.predict_proba(valid_texts), atol=1e-6)
    assert list(pipe.predict(shouting)) == list(direct.predict(valid_texts))
    assert pipe.score(shouting, valid_labels) == pytest.approx(direct.score(valid_texts, valid_labels))
    assert pipe.get_params()["clf__temperature"] == 0.1
    pipe.set_params(clf__threshold=1.0)
    assert pipe.named_steps["clf"].threshold == 1.0


def test_model_given_as_saved_folder(bilstm_model, synthetic, tmp_path):
    train_texts, train_labels, valid_texts, _ = synthetic
    folder = bilstm_model.fit(train_texts[::10], train_labels[::10]).save_pretrained(tmp_path / "saved")
    clf = MatchingNetworkClassifier(model=str(folder), temperature=0.3, threshold=0.2)
    clf.fit(train_texts, train_labels)
    # the estimator's parameters win over the values saved with the model
    assert float(clf.model_.temperature) == pytest.approx(0.3, rel=1e-6)
    assert clf.model_.config.threshold == 0.2
    assert list(clf.classes_) == sorted(set(train_labels))
    assert clf.predict_proba(valid_texts).shape == (len(valid_texts), 6)


def test_explain_gives_the_labels_predict_gives(bilstm_model, synthetic):
    train_texts, train_labels, valid_texts, _ = synthetic
    clf = MatchingNetworkClassifier(model=bilstm_model, num_episodes=0, threshold=0.4).fit(train_texts, train_labels)
    explanations = clf.explain(valid_texts[:6], top_k=2)
    assert [e.label for e in explanations] == list(clf.predict(valid_texts[:6]))
    assert all(len(e.evidence) == 2 and e.evidence[0].text in train_texts for e in explanations)
