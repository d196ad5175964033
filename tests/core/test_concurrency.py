"""Consistency under concurrency: loads during saves see one whole save (or a clear error), and
predictions from many threads during add_examples each use one whole support set."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest
import torch

from conftest import make_sentences
from textmatch import MatchingNetwork, TextMatchError


@pytest.mark.stress
def test_loads_during_saves_see_one_whole_save(bilstm_model, tmp_path):
    """A writer saves two different models (weights, temperature, support set) in turn into one
    folder as fast as it can; every load that succeeds is exactly one of them."""
    texts, labels = make_sentences(4, seed=3)
    first = bilstm_model.fit(texts[:12], labels[:12])
    second = copy.deepcopy(first)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.5)
    second.fit(texts[12:], labels[12:])
    second.config.temperature = 0.3
    saves = [first, second]
    signatures = [(m.support_texts, float(next(m.query_encoder.parameters()).detach().sum())) for m in saves]
    folder = tmp_path / "model"
    first.save_pretrained(folder)

    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            saves[i % 2].save_pretrained(folder)

    thread = threading.Thread(target=writer)
    thread.start()
    loaded, refused = 0, 0
    deadline = time.monotonic() + 8
    try:
        while time.monotonic() < deadline:
            try:
                model = MatchingNetwork.from_pretrained(folder)
            except TextMatchError as exc:
                assert "changed while it was read" in str(exc), exc
                refused += 1
                continue
            signature = (model.support_texts, float(next(model.query_encoder.parameters()).detach().sum()))
            assert any(signature[0] == s[0] and signature[1] == pytest.approx(s[1], abs=1e-4) for s in signatures)
            loaded += 1
    finally:
        stop.set()
        thread.join()
    assert loaded > 0, f"no load succeeded ({refused} refused)"


@pytest.mark.stress
def test_predict_from_many_threads_while_examples_are_added(bilstm_model):
    texts, labels = make_sentences(3, seed=5)
    model = bilstm_model.fit(texts, labels)
    queries = ["rain today", "play a song", "pizza please", "flight to rome"]
    additions = [([f"brand new thing {i}", f"another new thing {i}"], [f"new{i}", f"new{i}"]) for i in range(6)]

    # what each support state predicts, computed one at a time on a copy
    reference = copy.deepcopy(model)
    expected = {tuple(reference.classes_): reference.predict_proba(queries)}
    for new_texts, new_labels in additions:
        reference.add_examples(new_texts, new_labels)
        expected[tuple(reference.classes_)] = reference.predict_proba(queries)

    results, failures = [], []
    start = threading.Barrier(9)

    def predictor() -> None:
        start.wait()
        try:
            for _ in range(15):
                out = model.classify(queries)
                results.append((tuple(out.classes), out.probabilities, out.labels))
        except Exception as exc:  # noqa: BLE001 - the test reports any exception
            failures.append(exc)

    threads = [threading.Thread(target=predictor) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait()
    for new_texts, new_labels in additions:
        model.add_examples(new_texts, new_labels)
    for t in threads:
        t.join()
    assert failures == []
    assert len(results) == 8 * 15
    for classes, probs, predicted in results:
        assert classes in expected  # one whole support set, never a mix
        np.testing.assert_allclose(probs, expected[classes], atol=1e-5)
        assert predicted == [classes[i] for i in probs.argmax(axis=1)]
    assert model.classes_ == list(reference.classes_)
