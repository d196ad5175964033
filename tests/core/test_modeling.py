"""MatchingNetwork: the classifier API, eq. 1 by hand, the support set, thresholds, saving and
loading, and the errors users see for bad input."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from textmatch import MatchingNetwork, MatchingNetworkConfig, TextMatchError



SUPPORT = [
    ("will it rain today", "weather"),
    ("sunny forecast please", "weather"),
    ("cloudy with snow and wind", "weather"),
    ("play a song from the album", "music"),
    ("my playlist now", "music"),
    ("guitar band track", "music"),
    ("pizza for dinner", "food"),
    ("a burger and salad for lunch", "food"),
    ("noodles today", "food"),
]
QUERIES = ["rain and wind today", "play the guitar track", "pizza and noodles please", "what is the forecast"]


def support():
    return [t for t, _ in SUPPORT], [y for _, y in SUPPORT]


def unique_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def softmax_by_class(q: np.ndarray, s: np.ndarray, labels: list, classes: list, tau: float) -> np.ndarray:
    """Eq. 1 / eq. 2 by hand: softmax over cosine / tau, summed per class."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sn = s / np.linalg.norm(s, axis=1, keepdims=True)
    logits = (qn @ sn.T).astype(np.float64) / tau
    logits -= logits.max(axis=1, keepdims=True)
    a = np.exp(logits)
    a /= a.sum(axis=1, keepdims=True)
    out = np.zeros((len(q), len(classes)))
    for j, c in enumerate(classes):
        mask = np.array([y == c for y in labels])
        out[:, j] = a[:, mask].sum(axis=1)
    return out


# -- fit / predict / predict_proba ------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny_bert_model", "bilstm_model"])
def test_fit_predict_proba_shapes_and_order(which, request):
    model = request.getfixturevalue(which)
    texts, labels = support()
    assert model.fit(texts, labels) is model
    assert model.classes_ == ["food", "music", "weather"]  # sorted, not first-seen order
    probs = model.predict_proba(QUERIES)
    assert probs.shape == (len(QUERIES), 3)
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    preds = model.predict(QUERIES)
    assert preds == [model.classes_[i] for i in probs.argmax(axis=1)]
    # the callable form predicts too
    assert model(QUERIES[0]) == preds[0]
    assert model(QUERIES) == preds


def test_predict_proba_matches_hand_computation(tiny_bert_model):
    model = tiny_bert_model
    texts, labels = support()
    model.fit(texts, labels)
    q = model.encode(QUERIES)
    s = model.encode(texts, role="support")
    tau = float(model.temperature)
    expected = softmax_by_class(q, s, labels, model.classes_, tau)
    np.testing.assert_allclose(model.predict_proba(QUERIES), expected, atol=1e-5)


def test_predict_proba_matches_hand_computation_bilstm_integer_labels(bilstm_model):
    model = bilstm_model
    texts, _ = support()
    labels = [3, 3, 3, 1, 1, 1, 2, 2, 2]
    model.fit(texts, labels)
    assert model.classes_ == [1, 2, 3]
    expected = softmax_by_class(
        model.encode(QUERIES), model.encode(texts, role="support"), labels, model.classes_, 0.1
    )
    np.testing.assert_allclose(model.predict_proba(QUERIES), expected, atol=1e-5)


def test_predict_proba_batches_agree(tiny_bert_model):
    texts, labels = support()
    tiny_bert_model.fit(texts, labels)
    np.testing.assert_allclose(
        tiny_bert_model.predict_proba(QUERIES, batch_size=1), tiny_bert_model.predict_proba(QUERIES), atol=1e-6
    )


# -- the support set ----------------------------------------------------------------------------
def spy_embed(model, monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    original = model.embed

    def spy(encoder, texts, *args, **kwargs):
        calls.append(list(texts))
        return original(encoder, texts, *args, **kwargs)

    monkeypatch.setattr(model, "embed", spy)
    return calls


@pytest.mark.parametrize("how", ["append", "add_examples"])
def test_append_adds_new_class_encoding_only_new_texts(tiny_bert_model, monkeypatch, how):
    model = tiny_bert_model
    texts, labels = support()
    old_texts, old_labels = texts[:6], labels[:6]  # weather and music
    model.fit(old_texts, old_labels)
    before = model.predict_proba(QUERIES)
    before_pred = model.predict(old_texts)
    base_before = model._support_base.clone()
    new_texts, new_labels = texts[6:], labels[6:]  # food: a new class

    calls = spy_embed(model, monkeypatch)
    if how == "append":
        model.fit(new_texts, new_labels, append=True)
    else:
        model.add_examples(new_texts, new_labels)
    assert calls == [new_texts]  # only the new texts were encoded
    assert model.classes_ == ["food", "music", "weather"]
    assert model.support_texts == old_texts + new_texts
    assert torch.equal(model._support_base[:6], base_before)

    after = model.predict_proba(QUERIES)
    assert after.shape == (len(QUERIES), 3)
    # Eq. 1: adding support examples only adds terms to the normaliser, so the old classes
    # keep their relative probabilities.
    old_cols = after[:, [1, 2]]
    np.testing.assert_allclose(old_cols / old_cols.sum(axis=1, keepdims=True), before, atol=1e-5)
    # the old classes' own examples are still predicted as before
    assert model.predict(old_texts) == before_pred

    # same result as fitting on everything at once
    monkeypatch.undo()
    expected = model.fit(texts, labels).predict_proba(QUERIES)
    np.testing.assert_allclose(after, expected, atol=1e-5)


def test_fit_without_append_replaces_support(bilstm_model):
    texts, labels = support()
    bilstm_model.fit(texts, labels)
    bilstm_model.fit(texts[:6], labels[:6])
    assert bilstm_model.classes_ == ["music", "weather"]
    assert bilstm_model.predict_proba(QUERIES).shape == (len(QUERIES), 2)


def test_append_on_empty_model_needs_two_classes(bilstm_model):
    texts, labels = support()
    with pytest.raises(TextMatchError, match="at least 2 classes"):
        bilstm_model.fit(texts[:3], labels[:3], append=True)
    bilstm_model.fit(texts[:6], labels[:6], append=True)  # no support yet: a plain fit
    assert bilstm_model.classes_ == ["music", "weather"]


# -- thresholds ---------------------------------------------------------------------------------
def test_probability_threshold_gives_oos(tiny_bert_model):
    texts, labels = support()
    model = tiny_bert_model.fit(texts, labels)
    assert model.predict_proba(QUERIES).max() < 0.99  # untrained: no confident prediction
    assert model.predict(QUERIES, threshold=0.99) == ["oos"] * len(QUERIES)
    model.config.threshold = 0.99
    model.config.oos_label = "out_of_scope"
    assert model.predict(QUERIES) == ["out_of_scope"] * len(QUERIES)
    assert "out_of_scope" not in model.predict(QUERIES, threshold=0.0)


def test_threshold_from_pretrained_kwargs(tiny_bert_dir):
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), threshold=0.99)
    texts, labels = support()
    model.fit(texts, labels)
    assert model.config.threshold == 0.99
    assert model.predict(QUERIES) == ["oos"] * len(QUERIES)


def test_similarity_threshold(tiny_bert_model):
    texts, labels = support()
    model = tiny_bert_model.fit(texts, labels)
    model.config.threshold_metric = "similarity"
    best = (model.encode(QUERIES) @ model.encode(texts, role="support").T).max(axis=1)
    order = np.argsort(best)
    lo, hi = order[0], order[-1]
    assert best[hi] - best[lo] > 1e-4
    cut = float((best[lo] + best[hi]) / 2)
    preds = model.predict(QUERIES, threshold=cut)
    plain = model.predict(QUERIES)
    assert preds[lo] == "oos"
    assert preds[hi] == plain[hi] != "oos"
    for i, p in enumerate(preds):
        assert p == ("oos" if best[i] < cut else plain[i])
    # a query identical to a support text has similarity 1 and passes a 0.999 threshold
    assert model.predict([texts[0]], threshold=0.999) == model.predict([texts[0]]) != ["oos"]


def test_bad_threshold_metric():
    with pytest.raises(TextMatchError, match="threshold_metric"):
        MatchingNetworkConfig(threshold_metric="distance")


# -- encode -------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["tiny_bert_model", "bilstm_model"])
def test_encode_shapes_and_normalised(which, request):
    model = request.getfixturevalue(which)
    dim = model.query_encoder.dim
    one = model.encode("will it rain today")
    assert isinstance(one, np.ndarray) and one.shape == (dim,)
    many = model.encode(QUERIES)
    assert many.shape == (len(QUERIES), dim)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(one, model.encode(["will it rain today"])[0], atol=1e-6)
    # order is kept despite length-sorted batching
    np.testing.assert_allclose(model.encode(QUERIES[::-1], batch_size=1)[::-1], many, atol=1e-5)
    t = model.encode(QUERIES, convert_to_tensor=True)
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (len(QUERIES), dim)


# -- save / load --------------------------------------------------------------------------------
def roundtrip(model, tmp_path, name="saved"):
    texts, labels = support()
    if not model.classes_:
        model.fit(texts, labels)
    expected = model.predict_proba(QUERIES)
    folder = model.save_pretrained(tmp_path / name)
    loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.classes_ == model.classes_
    assert loaded.support_texts == model.support_texts
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), expected, atol=1e-6)
    return folder, loaded


def test_save_load_tiny_bert_shared(tiny_bert_model, tmp_path):
    folder, loaded = roundtrip(tiny_bert_model, tmp_path)
    assert loaded.config.share_weights and loaded.query_encoder is loaded.support_encoder
    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert cfg["library_name"] == "textmatch"
    assert cfg["format_version"] == 1
    assert cfg["classes"] == ["food", "music", "weather"]
    assert cfg["query_encoder"]["type"] == "transformer"
    assert "support_encoder" not in cfg
    for name in ("model.safetensors", "support_set.json", "query_encoder/config.json", "query_encoder/tokenizer_config.json"):
        assert (folder / name).is_file(), name
    assert not (folder / "support_encoder").exists()
    from safetensors.torch import load_file

    keys = load_file(str(folder / "model.safetensors")).keys()
    assert any(k.startswith("query_encoder.") for k in keys)
    assert not any(k.startswith("support_encoder.") for k in keys)  # shared weights stored once
    support = json.loads((folder / "support_set.json").read_text(encoding="utf-8"))
    assert support == {"texts": support_texts(), "labels": support_labels()}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder / "query_encoder"))
    assert tok("rain")["input_ids"] == tiny_bert_model.query_encoder.tokenizer("rain")["input_ids"]


def support_texts():
    return support()[0]


def support_labels():
    return support()[1]


def test_save_load_unshared(tiny_bert_dir, tmp_path):
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), share_weights=False)
    assert model.support_encoder is not model.query_encoder
    torch.manual_seed(1)
    with torch.no_grad():  # make g' differ from f' so that loading them apart matters
        for p in model.support_encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder, loaded = roundtrip(model, tmp_path)
    assert not loaded.config.share_weights
    assert (folder / "support_encoder" / "config.json").is_file()
    assert json.loads((folder / "config.json").read_text())["support_encoder"]["type"] == "transformer"
    q = loaded.encode(QUERIES, role="query")
    s = loaded.encode(QUERIES, role="support")
    assert not np.allclose(q, s, atol=1e-4)
    np.testing.assert_allclose(s, model.encode(QUERIES, role="support"), atol=1e-6)


def test_save_load_fce(tiny_bert_dir, tmp_path):
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), fce=True, fce_scale_init=1.0)
    assert model.support_fce is not None and model.query_fce is not None
    folder, loaded = roundtrip(model, tmp_path)
    assert loaded.config.fce and loaded.query_fce is not None
    for a, b in zip(model.query_fce.parameters(), loaded.query_fce.parameters()):
        assert torch.equal(a, b)


def test_save_load_bilstm(bilstm_model, tmp_path):
    folder, loaded = roundtrip(bilstm_model, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["query_encoder"]["type"] == "bilstm"
    assert cfg["query_encoder"]["config"]["hidden_size"] == 32
    assert type(loaded.query_encoder).__name__ == "BiLSTMEncoder"
    assert math.isclose(float(loaded.temperature), 0.1, rel_tol=1e-6)


def test_save_load_learned_temperature(tiny_bert_dir, tmp_path):
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir), learn_temperature=True)
    assert model.log_temperature.requires_grad
    with torch.no_grad():
        model.log_temperature.fill_(math.log(0.2))
    _, loaded = roundtrip(model, tmp_path)
    assert math.isclose(float(loaded.temperature.detach()), 0.2, rel_tol=1e-5)
    assert loaded.log_temperature.requires_grad


def test_save_load_config_override(bilstm_model, tmp_path):
    texts, labels = support()
    folder = bilstm_model.fit(texts, labels).save_pretrained(tmp_path / "m")
    loaded = MatchingNetwork.from_pretrained(str(folder), temperature=0.5, threshold=0.99)
    assert math.isclose(float(loaded.temperature), 0.5, rel_tol=1e-6)
    assert loaded.config.threshold == 0.99
    expected = softmax_by_class(
        loaded.encode(QUERIES), loaded.encode(texts, role="support"), labels, loaded.classes_, 0.5
    )
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), expected, atol=1e-5)


def test_missing_support_embeddings_are_recomputed(bilstm_model, tmp_path):
    folder, _ = roundtrip(bilstm_model, tmp_path)
    expected = bilstm_model.predict_proba(QUERIES)
    (folder / "support_embeddings.safetensors").unlink()
    loaded = MatchingNetwork.from_pretrained(str(folder))
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), expected, atol=1e-6)


def test_saved_without_support_set(tiny_bert_model, tmp_path):
    folder = tiny_bert_model.save_pretrained(tmp_path / "nosupport")
    assert not (folder / "support_set.json").exists()
    loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.classes_ == []
    with pytest.raises(TextMatchError, match=r"no support set.*fit"):
        loaded.predict(QUERIES)
    texts, labels = support()
    loaded.fit(texts, labels)
    tiny_bert_model.fit(texts, labels)
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), tiny_bert_model.predict_proba(QUERIES), atol=1e-6)


def test_save_to_a_file_path_refused(bilstm_model, tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(TextMatchError, match="is a file"):
        bilstm_model.save_pretrained(f)


# -- atomic save --------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def saved_bilstm(bilstm_model, tmp_path):
    texts, labels = support()
    bilstm_model.fit(texts, labels)
    folder = bilstm_model.save_pretrained(tmp_path / "model")
    return bilstm_model, folder, (bilstm_model.predict_proba(QUERIES), snapshot(folder))


def assert_intact(folder: Path, expected) -> None:
    probs, files = expected
    assert unique_dirs(folder.parent) == ["model"]  # no temp or old folders left behind
    assert snapshot(folder) == files  # not a byte of the old model changed
    loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.classes_ == ["food", "music", "weather"]
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), probs, atol=1e-6)


def test_atomic_save_when_weights_write_fails(saved_bilstm, monkeypatch):
    model, folder, expected = saved_bilstm
    model.fit(["hello", "bye"], ["a", "b"])  # a different model to save over the old one
    import safetensors.torch

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(folder)
    assert_intact(folder, expected)


def test_atomic_save_when_encoder_save_fails(saved_bilstm, monkeypatch):
    model, folder, expected = saved_bilstm
    model.fit(["hello", "bye"], ["a", "b"])

    def boom(directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "partial.json").write_text("{")
        raise KeyboardInterrupt

    monkeypatch.setattr(model.query_encoder, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(folder)
    assert_intact(folder, expected)


def test_atomic_save_when_final_rename_fails(saved_bilstm, monkeypatch):
    model, folder, expected = saved_bilstm
    model.fit(["hello", "bye"], ["a", "b"])
    import textmatch.core.modeling as modeling

    real_replace = modeling.os.replace

    def flaky(src, dst):
        if ".tmp-" in Path(src).name:
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(modeling.os, "replace", flaky)
    with pytest.raises(OSError, match="rename failed"):
        model.save_pretrained(folder)
    monkeypatch.undo()
    assert_intact(folder, expected)


def test_save_over_existing_replaces_it(saved_bilstm):
    model, folder, _ = saved_bilstm
    model.fit(["hello there", "bye now"], ["greet", "leave"])
    model.save_pretrained(folder)
    assert unique_dirs(folder.parent) == ["model"]
    loaded = MatchingNetwork.from_pretrained(str(folder))
    assert loaded.classes_ == ["greet", "leave"]


# -- bad input ----------------------------------------------------------------------------------
def test_predict_before_fit(bilstm_model):
    with pytest.raises(TextMatchError, match=r"no support set.*fit"):
        bilstm_model.predict(QUERIES)
    with pytest.raises(TextMatchError, match="fit"):
        bilstm_model.predict_proba(QUERIES)


def test_bad_queries(bilstm_model):
    texts, labels = support()
    bilstm_model.fit(texts, labels)
    with pytest.raises(TextMatchError, match=r"query 1 is an empty string"):
        bilstm_model.predict(["rain", ""])
    with pytest.raises(TextMatchError, match=r"query 0 is an empty string"):
        bilstm_model.predict_proba(["   "])
    with pytest.raises(TextMatchError, match=r"query 2 is missing \(None/NaN\)"):
        bilstm_model.predict(["rain", "song", None])
    with pytest.raises(TextMatchError, match="single string"):
        bilstm_model.predict_proba("rain")
    with pytest.raises(TextMatchError, match="not a string"):
        bilstm_model.predict([3])
    with pytest.raises(TextMatchError, match="empty string"):
        bilstm_model.encode("")


def test_bad_support_sets(bilstm_model):
    with pytest.raises(TextMatchError, match="support set is empty"):
        bilstm_model.fit([], [])
    with pytest.raises(TextMatchError, match=r"only 1 class \('weather'\).*at least 2 classes"):
        bilstm_model.fit(["rain", "snow"], ["weather", "weather"])
    with pytest.raises(TextMatchError, match="2 texts but 1"):
        bilstm_model.fit(["rain", "song"], ["weather"])
    with pytest.raises(TextMatchError, match="support text 1 is missing"):
        bilstm_model.fit(["rain", None], ["weather", "music"])
    with pytest.raises(TextMatchError, match="support label 1 is missing"):
        bilstm_model.fit(["rain", "song"], ["weather", None])
    assert bilstm_model.classes_ == []  # failed fits leave no support set


def test_unknown_hub_id_offline():
    with pytest.raises(TextMatchError, match=r"cannot load model 'no-such-user/no-such-model-xyz'.*HF_HUB_OFFLINE"):
        MatchingNetwork.from_pretrained("no-such-user/no-such-model-xyz")


def test_missing_local_path():
    with pytest.raises(TextMatchError, match=r"'\./nope/model' does not exist"):
        MatchingNetwork.from_pretrained("./nope/model")


@pytest.fixture
def saved_folder(bilstm_model, tmp_path):
    texts, labels = support()
    return bilstm_model.fit(texts, labels).save_pretrained(tmp_path / "m")


def test_missing_weights(saved_folder):
    (saved_folder / "model.safetensors").unlink()
    with pytest.raises(TextMatchError, match="has no model.safetensors"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_garbage_weights(saved_folder):
    (saved_folder / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(TextMatchError, match="corrupt or truncated"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_truncated_weights(saved_folder):
    path = saved_folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TextMatchError, match="corrupt or truncated"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_weights_of_another_architecture(saved_folder, tmp_path, tiny_bert_model):
    other = tiny_bert_model.save_pretrained(tmp_path / "bert")
    shutil.copy(other / "model.safetensors", saved_folder / "model.safetensors")
    with pytest.raises(TextMatchError, match="does not match the architecture"):
        MatchingNetwork.from_pretrained(str(saved_folder))


@pytest.mark.parametrize("version", [99, 0, "1", None])
def test_bad_format_version(saved_folder, version):
    path = saved_folder / "config.json"
    cfg = json.loads(path.read_text())
    cfg["format_version"] = version
    path.write_text(json.dumps(cfg))
    with pytest.raises(TextMatchError, match=rf"format version {version!r}.*Upgrade textmatch"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_invalid_json_config(saved_folder):
    (saved_folder / "config.json").write_text("{not json")
    with pytest.raises(TextMatchError, match="not valid JSON"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_malformed_config(saved_folder):
    path = saved_folder / "config.json"
    cfg = json.loads(path.read_text())
    del cfg["matching"]
    path.write_text(json.dumps(cfg))
    with pytest.raises(TextMatchError, match="malformed"):
        MatchingNetwork.from_pretrained(str(saved_folder))


def test_pickle_only_folder_refused(tmp_path):
    from transformers import BertConfig

    folder = tmp_path / "pickled"
    BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        str(folder)
    )
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(TextMatchError, match=r"pickle.*pytorch_model\.bin|pytorch_model\.bin.*pickle"):
        MatchingNetwork.from_pretrained(str(folder))


def test_long_text_warns_once(tiny_bert_model):
    texts, labels = support()
    tiny_bert_model.fit(texts, labels)
    limit = tiny_bert_model.query_encoder.max_length
    long_text = " ".join(["rain"] * (limit + 20))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = tiny_bert_model.predict_proba([long_text, "song"])
        tiny_bert_model.predict([long_text])
    truncation = [w for w in caught if issubclass(w.category, UserWarning) and "truncated" in str(w.message)]
    assert len(truncation) == 1
    assert f"limit of {limit}" in str(truncation[0].message)
    assert first.shape == (2, 3)


def test_short_texts_do_not_warn(tiny_bert_model):
    texts, labels = support()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_bert_model.fit(texts, labels).predict(QUERIES)
    assert not [w for w in caught if "truncated" in str(w.message)]


def test_bad_config_values():
    with pytest.raises(TextMatchError, match="metric"):
        MatchingNetworkConfig(metric="manhattan")
    with pytest.raises(TextMatchError, match="temperature"):
        MatchingNetworkConfig(temperature=0)
    with pytest.raises(TextMatchError, match="aggregation"):
        MatchingNetworkConfig(aggregation="max")


# -- public seams -------------------------------------------------------------------------------
def test_support_embeddings_and_score_embeddings(tiny_bert_model):
    model = tiny_bert_model
    assert model.support_embeddings_ is None and model.support_base_embeddings_ is None
    model.fit(*support())
    texts, labels = support()
    base = model.support_base_embeddings_
    assert base.shape == (len(texts), model.support_encoder.dim)
    assert torch.equal(model.support_embeddings_, base)  # no FCE: g = g'
    assert [model.classes_[i] for i in model.support_label_ids_.tolist()] == labels
    # eq. 1 on precomputed f'(x) equals predict_proba on the texts
    f_base = model.encode(QUERIES, normalize_embeddings=False, convert_to_tensor=True)
    probs, best_sim = model.score_embeddings(f_base)
    np.testing.assert_allclose(probs.numpy(), model.predict_proba(QUERIES), atol=1e-6)
    cos = torch.nn.functional.normalize(f_base, dim=-1) @ torch.nn.functional.normalize(base, dim=-1).T
    np.testing.assert_allclose(best_sim.numpy(), cos.max(dim=-1).values.numpy(), atol=1e-5)
    with pytest.raises(TextMatchError, match="shape"):
        model.score_embeddings(f_base[:, :3])


def test_classify_encodes_once_and_agrees_with_predict(tiny_bert_model, monkeypatch):
    model = tiny_bert_model.fit(*support())
    want_labels, want_probs = model.predict(QUERIES, threshold=0.5), model.predict_proba(QUERIES)
    calls = spy_embed(model, monkeypatch)
    out = model.classify(QUERIES, threshold=0.5)
    assert sorted(sum(calls, [])) == sorted(QUERIES)  # each text encoded once
    assert out.labels == want_labels and out.classes == model.classes_
    np.testing.assert_allclose(out.probabilities, want_probs, atol=1e-6)
    assert out.best_similarity.shape == (len(QUERIES),)


def test_model_dir_and_is_textmatch_folder(tiny_bert_dir, bilstm_model, tmp_path):
    from textmatch.core.modeling import is_textmatch_folder, read_textmatch_config

    plain = MatchingNetwork.from_pretrained(tiny_bert_dir)
    assert plain.model_dir is None and not is_textmatch_folder(tiny_bert_dir)
    folder = bilstm_model.fit(*support()).save_pretrained(tmp_path / "saved")
    assert is_textmatch_folder(folder) and read_textmatch_config(folder)["library_name"] == "textmatch"
    assert MatchingNetwork.from_pretrained(folder).model_dir == folder
    assert not is_textmatch_folder(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(TextMatchError, match="not valid JSON"):
        is_textmatch_folder(tmp_path / "bad")


def test_backend_runner_is_the_encoder_on_torch(tiny_bert_model):
    assert tiny_bert_model.backend_runner(tiny_bert_model.query_encoder) is tiny_bert_model.query_encoder


def test_encoder_truncated_to_restores_length_and_warning_state(tiny_bert_model):
    encoder = tiny_bert_model.query_encoder
    long_text = " ".join(["rain"] * 300)
    before = encoder.max_length
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation warning inside: the cut was asked for
        with encoder.truncated_to(8) as enc:
            assert enc is encoder and encoder.max_length == 8
            assert encoder.tokenize([long_text])["input_ids"].shape[1] == 8
        with encoder.truncated_to(10_000):
            assert encoder.max_length == before  # never above the encoder's own limit
    assert encoder.max_length == before
    with pytest.warns(UserWarning, match="truncated"):
        encoder.tokenize([long_text])
