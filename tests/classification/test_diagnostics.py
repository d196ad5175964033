"""textmatch.core.diagnostics: the maths against naive loops, and `diagnose_support` on tiny
models with planted faults (a near-duplicate across classes, a mislabelled example)."""

from __future__ import annotations

import copy
import json
import math
import random
import warnings

import pytest
import torch
from conftest import TOPICS

from textmatch import MatchingNetwork, TextMatchError
from textmatch.core import diagnostics, matching
from textmatch.core.diagnostics import (
    SupportDiagnostics,
    diagnose_support,
    leave_one_out_predictions,
    near_duplicates,
    prototype_confusions,
)

DT = torch.float64


# -- naive references ----------------------------------------------------------------------------
def naive_cos(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def naive_near_duplicates(emb, labels, threshold):
    rows = emb.tolist()
    found = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            if labels[i] != labels[j]:
                c = naive_cos(rows[i], rows[j])
                if c >= threshold:
                    found.append((i, j, c))
    return sorted(found, key=lambda r: (-r[2], r[0], r[1]))


def naive_mean_of_units(vectors):
    units = [[x / math.sqrt(sum(y * y for y in v)) for x in v] for v in vectors]
    return [sum(col) / len(units) for col in zip(*units)]


def naive_prototype_confusions(emb, labels, n_classes):
    rows = emb.tolist()
    out = []
    for i, (x, y) in enumerate(zip(rows, labels)):
        own = [rows[k] for k in range(len(rows)) if labels[k] == y and k != i]
        if not own:
            continue
        cos_own = naive_cos(x, naive_mean_of_units(own))
        best, nearest = -math.inf, None
        for c in range(n_classes):
            members = [rows[k] for k in range(len(rows)) if labels[k] == c]
            if c == y or not members:
                continue
            cos = naive_cos(x, naive_mean_of_units(members))
            if cos > best:
                best, nearest = cos, c
        if best > cos_own:
            out.append((i, y, nearest, cos_own, best))
    return sorted(out, key=lambda r: (r[3] - r[4], r[0]))


def naive_loo(query, support, ids, n_classes, temperature, metric, aggregation, n_examples):
    """Eq. 1 for example i against the support set rebuilt without row i (matching_log_probs)."""
    probs = []
    for i in range(n_examples):
        keep = [r for r in range(len(support)) if r != i]
        lp = matching.matching_log_probs(query[i : i + 1], support[keep], ids[keep], n_classes,
                                         temperature, metric, aggregation)
        probs.append(lp.exp()[0])
    return torch.stack(probs)


def clustered(n_per_class, n_classes, dim, seed, spread=0.3):
    """Embeddings around one random centre per class: (n, dim), labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_classes, dim, generator=g, dtype=DT) * 2
    labels = torch.arange(n_classes).repeat_interleave(n_per_class)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g, dtype=DT), labels


# -- near_duplicates -------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.9, 0.3, -1.0])
def test_near_duplicates_against_a_naive_loop(threshold, monkeypatch):
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(25, 6, generator=g, dtype=DT)
    emb[7] = emb[3] * 2 + 0.01  # planted: near-duplicates under different labels
    labels = torch.randint(0, 4, (25,), generator=g)
    labels[3], labels[7] = 0, 1
    want = naive_near_duplicates(emb, labels.tolist(), threshold)
    monkeypatch.setattr(diagnostics, "BLOCK_ELEMENTS", 40)  # several blocks of rows
    got = near_duplicates(emb, labels, threshold)
    assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in want]
    assert [c for *_, c in got] == pytest.approx([c for *_, c in want], abs=1e-9)
    assert all(labels[i] != labels[j] and i < j for i, j, _ in got)
    if threshold == 0.9:
        assert got[0][:2] == (3, 7)
    # max_pairs keeps the first ones of the full list, and the scan still counts them all
    top, total = diagnostics.scan_near_duplicates(emb, labels, threshold, max_pairs=3)
    assert top == got[:3] and total == len(want)


def test_near_duplicates_takes_numpy_and_finds_exact_copies_at_threshold_one():
    emb = torch.randn(5, 4, dtype=torch.float32)
    emb[4] = emb[0]
    labels = [0, 1, 1, 2, 2]
    got = near_duplicates(emb.numpy(), labels, 1.0)
    assert [(i, j) for i, j, _ in got] == [(0, 4)] and got[0][2] == pytest.approx(1.0)
    assert near_duplicates(emb, [0, 1, 1, 2, 0], 1.0) == []  # the same class: not a conflict


# -- prototype_confusions --------------------------------------------------------------------------
def test_prototype_confusions_against_a_naive_loop():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(20, 5, generator=g, dtype=DT)
    labels = torch.tensor([0] * 6 + [1] * 6 + [2] * 7 + [3])  # class 3 has one example
    got = prototype_confusions(emb, labels, 5)  # class 4 has none
    want = naive_prototype_confusions(emb, labels.tolist(), 5)
    assert want, "the random data should hold some confusions"
    assert [r[:3] for r in got] == [r[:3] for r in want]
    for a, b in zip(got, want):
        assert a[3:] == pytest.approx(b[3:], abs=1e-9)
    assert 19 not in [r[0] for r in got]  # a class's only example is skipped


def test_prototype_confusions_finds_a_planted_mislabel():
    emb, labels = clustered(5, 3, 8, seed=3)
    planted = 2  # an example of class 0 ...
    labels = labels.clone()
    labels[planted] = 1  # ... put under class 1
    got = prototype_confusions(emb, labels, 3)
    assert [(i, own, other) for i, own, other, *_ in got] == [(planted, 1, 0)]
    assert got[0][4] > got[0][3]


# -- leave_one_out_predictions ---------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("aggregation", ["none", "prototype"])
@pytest.mark.parametrize("with_names", [False, True])
def test_leave_one_out_against_a_naive_loop(metric, aggregation, with_names):
    n_classes = 4
    support, ids = clustered(3, n_classes, 6, seed=4, spread=0.8)
    support = support * (0.3 if metric == "euclidean" else 1.0)  # keep exp() of eq. 2 in range
    n_examples = len(support)
    if with_names:  # one class-name row per class, after the examples
        names = torch.randn(n_classes, 6, dtype=DT, generator=torch.Generator().manual_seed(5))
        support, ids = torch.cat([support, names]), torch.cat([ids, torch.arange(n_classes)])
    g = torch.Generator().manual_seed(6)
    query = support[:n_examples] + 0.1 * torch.randn(n_examples, 6, generator=g, dtype=DT)  # f(x_i) != g(x_i)
    predicted, probs = leave_one_out_predictions(query, support, ids, n_classes, 0.5, metric, aggregation,
                                                 n_examples, batch_size=5)
    want = naive_loo(query, support, ids, n_classes, 0.5, metric, aggregation, n_examples)
    assert probs.shape == (n_examples, n_classes)
    torch.testing.assert_close(probs, want, atol=1e-9, rtol=1e-7)
    assert predicted.tolist() == want.argmax(-1).tolist()


@pytest.mark.parametrize("aggregation", ["none", "prototype"])
def test_leave_one_out_masks_each_example_itself(aggregation):
    """Without the mask each example would match itself (cosine 1) and LOO would be perfect."""
    support, ids = clustered(4, 3, 5, seed=7)
    ids = ids.clone()
    ids[0] = 2  # mislabelled: its nearest rows are of class 0
    predicted, probs = leave_one_out_predictions(support, support, ids, 3, 0.05, "cosine", aggregation)
    assert predicted[0] == 0
    assert predicted[1:].tolist() == ids[1:].tolist()


def test_leave_one_out_a_class_left_without_rows_gets_probability_zero():
    support = torch.randn(5, 4, dtype=DT)
    ids = torch.tensor([0, 0, 1, 1, 2])  # class 2: one example, no name row
    for aggregation in ("none", "prototype"):
        _, probs = leave_one_out_predictions(support, support, ids, 3, 0.1, "cosine", aggregation)
        assert probs[4, 2] == 0 and probs[4].sum() == pytest.approx(1.0)
    # a class-name row keeps the class in the support set
    with_name = torch.cat([support, torch.randn(1, 4, dtype=DT)])
    _, probs = leave_one_out_predictions(support, with_name, torch.tensor([0, 0, 1, 1, 2, 2]), 3, 0.1, n_examples=5)
    assert probs[4, 2] > 0


def test_leave_one_out_checks_shapes():
    with pytest.raises(TextMatchError):
        leave_one_out_predictions(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1]), 2)
    with pytest.raises(TextMatchError):
        leave_one_out_predictions(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 1]), 2, aggregation="max")


# -- diagnose_support on tiny models ---------------------------------------------------------------
SEPARABLE = {
    "weather": ["rain snow", "sunny forecast", "cloudy wind rain", "snow forecast wind"],
    "music": ["song album", "playlist guitar", "band track song", "album guitar band"],
    "food": ["pizza burger", "salad noodles", "dinner lunch pizza", "burger salad dinner"],
}


def flatten(groups):
    texts = [t for ts in groups.values() for t in ts]
    labels = [label for label, ts in groups.items() for _ in ts]
    return texts, labels


def separable(model, strength=3.0):
    """Add one direction per topic to the tiny BERT's word embeddings of the topic's words:
    with a large `strength` sentences of different topics are far apart and of one topic close;
    a small one (0.008) leaves leave-one-out right on some examples and wrong on others."""
    encoder = model.query_encoder
    weight = encoder.model.embeddings.word_embeddings.weight
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for words in TOPICS.values():
            direction = strength * torch.randn(weight.shape[1], generator=g)
            for word in words:
                weight[encoder.tokenizer.convert_tokens_to_ids(word)] += direction
    return model


def test_a_planted_near_duplicate_is_found(tiny_bert_model):
    texts, labels = flatten(SEPARABLE)
    texts, labels = texts + ["rain snow"], labels + ["music"]  # the same sentence under two classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fit warns about the conflict, as it should
        tiny_bert_model.fit(texts, labels)
    report = diagnose_support(tiny_bert_model, near_duplicate_threshold=0.999)
    first = report.near_duplicates[0]
    assert {(first.text_a, first.label_a), (first.text_b, first.label_b)} == {("rain snow", "weather"), ("rain snow", "music")}
    assert first.cosine >= 0.999 and report.near_duplicate_count == len(report.near_duplicates)
    assert all(row.label_a != row.label_b for row in report.near_duplicates)
    assert report.counts == {"food": 4, "music": 5, "weather": 4}


def test_a_planted_mislabel_is_misplaced_and_a_loo_error(tiny_bert_model):
    model = separable(tiny_bert_model)
    texts, labels = flatten(SEPARABLE)
    planted = "rain cloudy snow wind"  # weather, put under music
    model.fit(texts + [planted], labels + ["music"])
    report = diagnose_support(model)
    assert [(m.text, m.label, m.nearest_class) for m in report.misplaced] == [(planted, "music", "weather")]
    assert report.misplaced[0].cosine_other > report.misplaced[0].cosine_own
    assert [(e.text, e.label, e.predicted) for e in report.loo_errors] == [(planted, "music", "weather")]
    assert report.loo_accuracy == {"food": 1.0, "music": 0.8, "weather": 1.0}
    assert report.loo_overall == pytest.approx(12 / 13)
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["misplaced"][0]["text"] == planted and doc["loo_errors"][0]["predicted"] == "weather"


@pytest.mark.parametrize("settings", [{}, {"label_names": True}, {"aggregation": "prototype"}])
def test_loo_accuracy_equals_refitting_without_each_example(tiny_bert_model, settings):
    """The naive leave-one-out: fit on the support set minus example i, predict example i."""
    model = separable(tiny_bert_model, 0.008)
    for key, value in settings.items():
        setattr(model.config, key, value)
    texts, labels = flatten({c: ts[:3] for c, ts in SEPARABLE.items()})  # 3 classes x 3
    model.fit(texts, labels)
    report = diagnose_support(model)

    naive = copy.deepcopy(model)
    errors, correct = [], {c: 0 for c in SEPARABLE}
    for i, (text, label) in enumerate(zip(texts, labels)):
        naive.fit(texts[:i] + texts[i + 1 :], labels[:i] + labels[i + 1 :])
        probs = naive.predict_proba([text])[0]
        predicted = naive.classes_[int(probs.argmax())]
        if predicted == label:
            correct[label] += 1
        else:
            errors.append((i, predicted, float(probs.max())))
    assert 0 < len(errors) < len(texts)  # some right, some wrong: the comparison means something
    assert report.loo_accuracy == {c: correct[c] / 3 for c in sorted(SEPARABLE)}
    assert report.loo_overall == pytest.approx(sum(correct.values()) / 9)
    got = sorted((e.index, e.predicted, e.probability) for e in report.loo_errors)
    assert [(i, p) for i, p, _ in got] == [(i, p) for i, p, _ in sorted(errors)]
    assert [p for *_, p in got] == pytest.approx([p for *_, p in sorted(errors)], abs=1e-4)


def test_shared_weights_encode_nothing(tiny_bert_model, monkeypatch):
    texts, labels = flatten(SEPARABLE)
    tiny_bert_model.fit(texts, labels)

    def boom(*args, **kwargs):
        raise AssertionError("the support set was encoded again")

    monkeypatch.setattr(tiny_bert_model.query_encoder, "forward", boom)
    monkeypatch.setattr(tiny_bert_model, "embed", boom)
    report = diagnose_support(tiny_bert_model)
    assert isinstance(report, SupportDiagnostics) and sum(report.counts.values()) == len(texts)


def test_separate_encoders_encode_the_support_texts_with_f(tiny_bert_dir, tiny_bert_model, monkeypatch):
    texts, labels = flatten(SEPARABLE)
    tiny_bert_model.fit(texts, labels)
    two = MatchingNetwork.from_pretrained(str(tiny_bert_dir), share_weights=False)  # f' = g' as weights
    two.fit(texts, labels)
    calls = []
    embed = two.embed

    def spy(encoder, batch, *args, **kwargs):
        calls.append((encoder is two.query_encoder, list(batch)))
        return embed(encoder, batch, *args, **kwargs)

    monkeypatch.setattr(two, "embed", spy)
    report = diagnose_support(two)
    assert calls == [(True, texts)]
    shared = diagnose_support(tiny_bert_model)
    assert report.loo_accuracy == shared.loo_accuracy
    assert "separate encoders" in report.head_note and "separate" not in shared.head_note


def test_fce_and_ensemble_notes_and_json(tiny_bert_dir):
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), fce=True, head="ensemble", label_names=True)
    texts, labels = flatten(SEPARABLE)
    model.fit(texts, labels)
    report = diagnose_support(model)
    assert "ensemble head" in report.head_note and "not refitted" in report.head_note
    assert "FCE" in report.head_note and "class names stay" in report.head_note
    view = model.support_view()
    with torch.inference_mode():
        query = model.query_embeddings(model.support_base_embeddings_, view.emb)
        predicted, _ = leave_one_out_predictions(query, view.emb, view.label_ids, 3, float(model.temperature),
                                                 n_examples=len(texts))
    right = [p == view.label_ids[i] for i, p in enumerate(predicted.tolist())]
    assert report.loo_overall == pytest.approx(sum(right) / len(right))
    doc = report.to_dict()
    assert json.loads(json.dumps(doc)) == doc and doc["settings"]["fce"] is True


def test_errors_without_support_set_and_with_a_bad_threshold(tiny_bert_model):
    with pytest.raises(TextMatchError, match=r"no support set.*model\.fit"):
        diagnose_support(tiny_bert_model)
    tiny_bert_model.fit(*flatten(SEPARABLE))
    for bad in (1.5, -1.01, float("nan"), True):
        with pytest.raises(TextMatchError, match=r"\[-1, 1\]"):
            diagnose_support(tiny_bert_model, near_duplicate_threshold=bad)


def test_max_rows_keeps_counts_complete(tiny_bert_model):
    rng = random.Random(0)
    texts, labels = flatten(SEPARABLE)
    rng.shuffle(labels)  # many errors and confusions
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tiny_bert_model.fit(texts, labels)
    full = diagnose_support(tiny_bert_model, near_duplicate_threshold=-1.0)
    short = diagnose_support(tiny_bert_model, near_duplicate_threshold=-1.0, max_rows=2)
    assert full.near_duplicate_count == len(full.near_duplicates) == short.near_duplicate_count > 2
    assert short.near_duplicates == full.near_duplicates[:2]
    assert short.loo_errors == full.loo_errors[:2] and short.loo_error_count == full.loo_error_count
    assert short.misplaced == full.misplaced[:2] and short.misplaced_count == full.misplaced_count
