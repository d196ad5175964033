"""model.explain: the evidence is eq. 2's attention, computed by hand here on tiny models."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_sentences
from textmatch import MatchingNetwork, MatchingNetworkConfig
from textmatch.core import explanations
from textmatch.errors import TextMatchError

QUERIES = ["rain forecast today", "play my playlist now", "pizza for dinner please", "card payment bank"]


@pytest.fixture
def fitted(tiny_bert_model):
    texts, labels = make_sentences(4, seed=3)
    return tiny_bert_model.fit(texts, labels)


def attention_by_hand(model: MatchingNetwork, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """a(x, x_i) of eq. 2 with plain loops: softmax_i(cos(f(x), g(x_i)) / tau), and the cosines."""
    with torch.inference_mode():
        f = model.encode([text], normalize_embeddings=False, convert_to_tensor=True)[0]  # (dim,)
        g = model.encode(model.support_texts, normalize_embeddings=False, convert_to_tensor=True, role="support")
    tau = float(model.temperature)
    cos = torch.tensor([float(F.cosine_similarity(f, g_i, dim=0)) for g_i in g])
    exp = [float(torch.exp(c / tau)) for c in cos]
    return torch.tensor([e / sum(exp) for e in exp]), cos


def test_evidence_weights_are_eq2_by_hand(fitted):
    top_k = len(fitted.support_texts)  # every row, so every weight is checked
    for e in fitted.explain(QUERIES, top_k=top_k):
        weights, cos = attention_by_hand(fitted, e.text)
        assert len(e.evidence) == top_k
        for ev in e.evidence:
            assert ev.kind == "example" and ev.text == fitted.support_texts[ev.support_index]
            assert ev.label == fitted.support_labels[ev.support_index]
            assert ev.weight == pytest.approx(float(weights[ev.support_index]), abs=1e-5)
            assert ev.similarity == pytest.approx(float(cos[ev.support_index]), abs=1e-5)
        listed = [ev.weight for ev in e.evidence]
        assert listed == sorted(listed, reverse=True) and sum(listed) == pytest.approx(1.0, abs=1e-4)
        # eq. 1: the class probability is the sum of its rows' weights
        per_class = sum(ev.weight for ev in e.evidence if ev.label == e.top_class)
        assert e.matching_probability == pytest.approx(per_class, abs=1e-4)


def test_label_and_probability_are_what_predict_gives(fitted):
    prediction = fitted.classify(QUERIES, threshold=0.5)
    for e, label, p in zip(fitted.explain(QUERIES, threshold=0.5), prediction.labels, prediction.probabilities):
        assert e.label == label and e.probability == pytest.approx(float(p.max()), abs=1e-6)
        assert e.out_of_scope == (label == "oos") and e.decided_by == "matching" and e.logreg_probability is None
        assert e.runner_up != e.top_class
        assert e.runner_up_probability == pytest.approx(sorted(p)[-2], abs=1e-6)
        assert e.runner_up_evidence.label == e.runner_up
        weights, _ = attention_by_hand(fitted, e.text)
        rows = [i for i, y in enumerate(fitted.support_labels) if y == e.runner_up]
        assert e.runner_up_evidence.support_index == max(rows, key=lambda i: float(weights[i]))


def test_removing_the_top_example_changes_the_evidence(fitted):
    before = fitted.explain(QUERIES[:1], top_k=3)[0]
    top = before.evidence[0]
    keep = [i for i in range(len(fitted.support_texts)) if i != top.support_index]
    fitted.fit([fitted.support_texts[i] for i in keep], [fitted.support_labels[i] for i in keep])
    after = fitted.explain(QUERIES[:1], top_k=3)[0]
    assert top.text not in [ev.text for ev in after.evidence]
    assert after.evidence[0].text == before.evidence[1].text  # the runner-up example moves up
    assert after.evidence[0].weight > before.evidence[1].weight  # and carries more of the vote


def test_ensemble_head_shows_both_and_says_who_decided(tiny_bert_model):
    texts, labels = make_sentences(4, seed=3)
    model = tiny_bert_model
    model.config.head = "ensemble"
    model.fit(texts, labels)
    probs = model.predict_proba(QUERIES)
    with torch.inference_mode():
        details = model.score_details(model.embed(model.query_encoder, QUERIES), model.support_view())
    for i, (e, p) in enumerate(zip(model.explain(QUERIES), probs)):
        assert e.decided_by == "ensemble" and e.logreg_probability is not None
        assert e.probability == pytest.approx((e.matching_probability + e.logreg_probability) / 2, abs=1e-6)
        assert e.probability == pytest.approx(float(p.max()), abs=1e-6)
        eq1_class = model.classes_[int(details.matching[i].argmax())]
        assert any("eq. 1 alone" in n for n in e.notes) == (eq1_class != e.top_class)  # said when the heads disagree
    d = model.explain(QUERIES[:1])[0].to_dict()
    assert d["decided_by_note"].startswith("the mean of eq. 1")


def test_label_names_rows_are_evidence_too(tiny_bert_model):
    texts, labels = make_sentences(3, seed=4)
    model = tiny_bert_model
    model.config.label_names = True
    model.fit(texts, labels)
    n_rows = len(texts) + len(model.classes_)
    e = model.explain(["weather"], top_k=n_rows)[0]
    kinds = {ev.kind for ev in e.evidence}
    assert kinds == {"example", "label_name"}
    names = [ev for ev in e.evidence if ev.kind == "label_name"]
    assert {ev.text for ev in names} == set(model.label_examples(model.classes_)[0])
    assert all(ev.support_index is None for ev in names)
    assert sum(ev.weight for ev in e.evidence) == pytest.approx(1.0, abs=1e-4)


def test_prototype_variant_explains_with_prototypes(tiny_bert_model):
    texts, labels = make_sentences(4, seed=3)
    model = tiny_bert_model
    model.config.aggregation = "prototype"
    model.fit(texts, labels)
    with torch.inference_mode():
        g = model.encode(texts, normalize_embeddings=False, convert_to_tensor=True, role="support")
    for e in model.explain(QUERIES, top_k=len(model.classes_), nearest_examples=2):
        with torch.inference_mode():
            f = model.encode([e.text], normalize_embeddings=False, convert_to_tensor=True)[0]
        protos = {c: g[[i for i, y in enumerate(labels) if y == c]].mean(0) for c in model.classes_}
        cos = {c: float(F.cosine_similarity(f, p, dim=0)) for c, p in protos.items()}
        z = sum(torch.exp(torch.tensor(v) / model.temperature) for v in cos.values())
        for ev in e.evidence:
            assert ev.kind == "prototype" and ev.text is None
            assert ev.similarity == pytest.approx(cos[ev.label], abs=1e-5)
            assert ev.weight == pytest.approx(float(torch.exp(torch.tensor(cos[ev.label]) / model.temperature) / z), abs=1e-5)
            assert len(ev.nearest) == 2 and all(n.label == ev.label and n.weight is None for n in ev.nearest)
            sims = [n.similarity for n in ev.nearest]
            assert sims == sorted(sims, reverse=True)
        assert e.evidence[0].label == e.top_class
        assert e.runner_up_evidence.kind == "prototype" and e.runner_up_evidence.label == e.runner_up


def test_fce_explanations_are_the_attention_of_the_fce_embeddings(tiny_bert_dir):
    texts, labels = make_sentences(3, seed=5)
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), fce=True, fce_scale_init=1.0).fit(texts, labels)
    view = model.support_view()
    with torch.inference_mode():
        f_base = model.embed(model.query_encoder, QUERIES[:2])
        f = model.query_embeddings(f_base, view.emb)
        want = torch.softmax(F.cosine_similarity(f.unsqueeze(1), view.emb.unsqueeze(0), dim=-1) / model.temperature, -1)
    for row, e in zip(want, model.explain(QUERIES[:2], top_k=len(texts))):
        for ev in e.evidence:
            assert ev.weight == pytest.approx(float(row[ev.support_index]), abs=1e-5)


def test_onnx_backend_explains_like_torch(fitted):
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs `pip install textmatch[onnx]`")
    torch_e = fitted.explain(QUERIES)
    fitted.set_backend("onnx")
    onnx_e = fitted.explain(QUERIES)
    for a, b in zip(torch_e, onnx_e):
        assert a.label == b.label
        assert [ev.support_index for ev in a.evidence] == [ev.support_index for ev in b.evidence]
        assert [ev.weight for ev in a.evidence] == pytest.approx([ev.weight for ev in b.evidence], abs=1e-3)


def test_explanations_are_json_safe(fitted):
    doc = json.loads(json.dumps([e.to_dict() for e in fitted.explain(QUERIES)]))
    assert doc[0]["evidence"][0]["kind"] == "example" and "runner_up_evidence" in doc[0]


def test_bad_arguments_are_clear_errors(fitted, tiny_bert_dir):
    with pytest.raises(TextMatchError, match="top_k"):
        fitted.explain(QUERIES, top_k=0)
    with pytest.raises(TextMatchError, match="threshold"):
        fitted.explain(QUERIES, threshold=2.0)
    with pytest.raises(TextMatchError, match="no support set"):
        MatchingNetwork.from_pretrained(str(tiny_bert_dir)).explain(QUERIES)
    with pytest.raises(TextMatchError):
        fitted.explain([""])


@pytest.mark.parametrize("k", [0, 1, 3, 10])
def test_top_rows_is_a_stable_descending_sort(k):
    weights = torch.tensor([0.1, 0.4, 0.4, 0.05, 0.05])
    naive = sorted(range(5), key=lambda i: (-float(weights[i]), i))[:k]
    assert explanations.top_rows(weights, k) == naive
    assert explanations.best_row_of_class(weights, torch.tensor([0, 1, 1, 2, 2]), 2) == 3
    assert explanations.best_row_of_class(weights, torch.tensor([0, 1, 1, 2, 2]), 5) is None


def test_config_with_prototype_and_euclidean(tiny_bert_dir):
    texts, labels = make_sentences(3, seed=6)
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), metric="euclidean").fit(texts, labels)
    e = model.explain(QUERIES[:1], top_k=2)[0]
    assert all(ev.similarity <= 0 for ev in e.evidence)  # negative squared distances
    assert isinstance(model.config, MatchingNetworkConfig)
