"""Inference backends: ONNX Runtime (fp32, int8) agree with torch; exports are cached and redone
when the weights change. Speed is measured by scripts/bench_speed.py, never here."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from conftest import make_sentences
from textmatch import MatchingNetwork, TextMatchError, Trainer, TrainingArguments, cli
from textmatch.backends import onnx as backends

pytest.importorskip("onnxruntime", reason="the ONNX backends need `pip install textmatch[onnx]`")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "tm_cache"
    monkeypatch.setenv("TEXTMATCH_CACHE", str(folder))
    return folder


@pytest.fixture(scope="module")
def task():
    support = make_sentences(6, seed=21)
    queries, gold = make_sentences(4, seed=22)
    return support, queries, gold


@pytest.fixture(scope="module")
def trained_tiny(tiny_bert_dir, task):
    """A tiny BERT trained a little, so its predictions are not near-ties."""
    model = MatchingNetwork.from_pretrained(str(tiny_bert_dir))
    args = TrainingArguments(num_episodes=60, learning_rate=1e-3, n_way=4, show_progress_bar=False)
    Trainer(model, args, train_dataset=make_sentences(20, seed=23)).train()
    model.fit(*task[0])
    return model


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_backend_gives_the_same_top1_as_torch(trained_tiny, task, cache, backend):
    _, queries, _ = task
    reference = trained_tiny.predict(queries)
    fast = copy.deepcopy(trained_tiny).set_backend(backend)
    assert fast.predict(queries) == reference
    tolerance = 1e-4 if backend == "onnx" else 0.05
    np.testing.assert_allclose(fast.encode(queries), trained_tiny.encode(queries), atol=tolerance)


def test_export_is_cached_and_redone_when_weights_change(trained_tiny, cache, monkeypatch):
    calls = []
    real = backends.export_onnx
    monkeypatch.setattr(backends, "export_onnx", lambda enc, path: (calls.append(path), real(enc, path)))
    model = copy.deepcopy(trained_tiny)
    model.set_backend("onnx")
    model.set_backend("onnx")  # same weights: the cached export is reused
    assert len(calls) == 1
    with torch.no_grad():
        model.query_encoder.model.embeddings.word_embeddings.weight.add_(0.01)
    model.set_backend("onnx")
    assert len(calls) == 2 and calls[0].parent != calls[1].parent


def test_export_lives_next_to_a_saved_model_and_old_exports_go(trained_tiny, tmp_path, cache):
    folder = copy.deepcopy(trained_tiny).save_pretrained(tmp_path / "saved")
    model = MatchingNetwork.from_pretrained(str(folder), backend="onnx-int8")
    exports = list((folder / ".textmatch-onnx").iterdir())
    assert len(exports) == 1 and (exports[0] / "encoder-int8.onnx").is_file()
    assert not cache.exists()  # nothing in the user cache: the model folder was writable
    with torch.no_grad():
        model.query_encoder.model.embeddings.word_embeddings.weight.mul_(1.1)
    model.set_backend("onnx")
    assert [p.name for p in (folder / ".textmatch-onnx").iterdir()] != [exports[0].name]
    # re-saving keeps the export folder (not one of the model's own files)
    model.save_pretrained(folder)
    assert (folder / ".textmatch-onnx").is_dir()


def test_training_after_set_backend_uses_torch_and_resets(tiny_bert_model, cache):
    model = tiny_bert_model.set_backend("onnx")
    assert model._runners
    Trainer(model, TrainingArguments(num_episodes=2, show_progress_bar=False),
            train_dataset=make_sentences(4, seed=24)).train()
    # after training the sessions were rebuilt from the new weights (fit_support_at_end used them)
    runner = next(iter(model._runners.values()))
    assert backends.fingerprint(model.query_encoder) in str(runner.path)
    probe = make_sentences(1, seed=25)[0]
    reference = copy.deepcopy(model).set_backend("torch").encode(probe)
    np.testing.assert_allclose(model.encode(probe), reference, atol=1e-4)


def test_bilstm_and_bad_backend_are_refused(bilstm_model, tiny_bert_model, cache):
    with pytest.raises(TextMatchError, match="transformer encoders"):
        bilstm_model.set_backend("onnx")
    with pytest.raises(TextMatchError, match="backend must be one of"):
        tiny_bert_model.set_backend("tensorrt")


def test_cli_backend_flag(tiny_bert_dir, tmp_path, cache, capsys):
    import csv

    texts, labels = make_sentences(4, seed=26)
    support = tmp_path / "s.csv"
    with open(support, "w", newline="") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(texts, labels)])
    outputs = {}
    for backend in ("torch", "onnx"):
        code = cli.main(["predict", "--model", str(tiny_bert_dir), "--support", str(support), "--backend", backend,
                         "--threads", "1", "--json", "rain today", "play a song"])
        out, err = capsys.readouterr()
        assert code == 0, err
        outputs[backend] = [p["label"] for p in json.loads(out)["predictions"]]
    assert outputs["onnx"] == outputs["torch"]
    assert cli.main(["predict", "--model", str(tiny_bert_dir), "--support", str(support), "--threads", "0", "x"]) == 2
