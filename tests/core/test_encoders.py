"""Encoders: pooling against a naive loop, sentence-transformers folders, BiLSTM initialisation."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from textmatch import BiLSTMEncoder, MatchingNetwork, TextMatchError, TransformerEncoder
from textmatch.core.encoders import pool


@pytest.mark.parametrize("mode", ["mean", "max", "cls"])
def test_pool_matches_naive_loop(mode):
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    out = pool(hidden, mask, mode)
    for b in range(3):
        real = [hidden[b, t] for t in range(5) if mask[b, t]]
        if mode == "mean":
            expected = sum(real) / len(real)
        elif mode == "max":
            expected = torch.stack(real).max(0).values
        else:
            expected = hidden[b, 0]
        assert torch.allclose(out[b], expected)
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, mask, "median")


def _sentence_transformers_folder(tmp_path, tiny_bert_dir, pooling_key="pooling_mode_cls_token", max_len=24):
    """A folder laid out like an older sentence-transformers model: the transformer in 0_Transformer/."""
    root = tmp_path / "st_model"
    shutil.copytree(tiny_bert_dir, root / "0_Transformer")
    (root / "1_Pooling").mkdir()
    modes = {k: False for k in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens")}
    modes[pooling_key] = True
    (root / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **modes}))
    (root / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_len}))
    return root


@pytest.mark.parametrize("key, mode", [("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                                       ("pooling_mode_mean_tokens", "mean")])
def test_sentence_transformers_folder_settings(tmp_path, tiny_bert_dir, key, mode):
    folder = _sentence_transformers_folder(tmp_path, tiny_bert_dir, key, max_len=24)
    enc = TransformerEncoder.from_pretrained(str(folder))
    assert enc.config.pooling == mode and enc.max_length == 24
    # explicit arguments win over what the folder declares
    enc = TransformerEncoder.from_pretrained(str(folder), pooling="mean", max_length=16)
    assert enc.config.pooling == "mean" and enc.max_length == 16


def test_plain_transformers_folder_defaults(tiny_bert_dir):
    enc = TransformerEncoder.from_pretrained(str(tiny_bert_dir))
    assert enc.config.pooling == "mean"
    assert enc.max_length == 64  # the tiny model's max_position_embeddings
    emb = enc(enc.tokenize(["rain today", "play a song please"]))
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_folder_without_config_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextMatchError, match="no config.json"):
        TransformerEncoder.from_pretrained(str(tmp_path / "empty"))


def test_bilstm_init_embeddings_from_transformer(tiny_bert_dir, tiny_tokenizer_dir):
    bert = TransformerEncoder.from_pretrained(str(tiny_bert_dir))
    matrix = bert.model.get_input_embeddings()
    enc = BiLSTMEncoder.from_tokenizer(str(tiny_tokenizer_dir), hidden_size=8, init_embeddings=matrix)
    assert enc.config.embedding_dim == 32
    assert torch.equal(enc.embedding.weight, matrix.weight[: enc.config.vocab_size])
    too_small = torch.nn.Embedding(3, 32)
    with pytest.raises(TextMatchError, match="rows but the tokenizer has"):
        BiLSTMEncoder.from_tokenizer(str(tiny_tokenizer_dir), init_embeddings=too_small)


def test_bilstm_padding_does_not_change_embeddings(tiny_tokenizer_dir):
    torch.manual_seed(0)
    enc = BiLSTMEncoder.from_tokenizer(str(tiny_tokenizer_dir), embedding_dim=8, hidden_size=8, dropout=0.0).eval()
    alone = enc(enc.tokenize(["rain today"]))
    padded = enc(enc.tokenize(["rain today", "please can you play my song about the band now"]))[:1]
    assert torch.allclose(alone, padded, atol=1e-6)


def test_support_cache_is_a_buffer_outside_the_weights(tiny_bert_model):
    tiny_bert_model.fit(["rain today", "play a song"], ["weather", "music"])
    buffers = {id(b) for b in tiny_bert_model.buffers()}
    assert id(tiny_bert_model._support_emb) in buffers
    assert not any(k.startswith("_support") for k in tiny_bert_model.state_dict())
    tiny_bert_model.to(torch.float64)  # follows .to() like the weights
    assert tiny_bert_model._support_emb.dtype == torch.float64


def test_model_over_sentence_transformers_folder_saves_and_loads(tmp_path, tiny_bert_dir):
    folder = _sentence_transformers_folder(tmp_path, tiny_bert_dir)
    model = MatchingNetwork.from_pretrained(str(folder)).fit(["rain today", "play a song"], ["weather", "music"])
    model.save_pretrained(tmp_path / "saved")
    again = MatchingNetwork.from_pretrained(str(tmp_path / "saved"))
    assert again.query_encoder.config.pooling == "cls"
    assert torch.allclose(torch.tensor(again.predict_proba(["snow"])), torch.tensor(model.predict_proba(["snow"])))


@pytest.mark.parametrize("path", ["../../outside", "/etc", "0_Transformer/../../x"])
def test_modules_json_paths_stay_inside_the_folder(tmp_path, tiny_bert_dir, path):
    """A modules.json that points out of the model folder is refused, not followed."""
    folder = _sentence_transformers_folder(tmp_path, tiny_bert_dir)
    outside = tmp_path / "outside"
    shutil.copytree(tiny_bert_dir, outside)  # a loadable model where the path leads
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = path
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(TextMatchError, match="leaves"):
        TransformerEncoder.from_pretrained(str(folder))


def test_a_damaged_modules_json_is_a_clear_error(tmp_path, tiny_bert_dir):
    folder = _sentence_transformers_folder(tmp_path, tiny_bert_dir)
    (folder / "modules.json").write_text("{not json")
    with pytest.raises(TextMatchError, match="modules.json is not valid JSON"):
        TransformerEncoder.from_pretrained(str(folder))
    (folder / "modules.json").write_text(json.dumps({"not": "a list"}))
    with pytest.raises(TextMatchError, match="expected a list"):
        TransformerEncoder.from_pretrained(str(folder))


def test_allow_pickle_wraps_an_unpickling_error(tmp_path, tiny_bert_dir):
    """With allow_pickle=True a broken pickle file is a TextMatchError, not transformers' own error."""
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert_dir, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04this is not a pickle")
    with pytest.warns(UserWarning, match="allow_pickle"), pytest.raises(TextMatchError, match="cannot load transformer"):
        TransformerEncoder.from_pretrained(str(folder), allow_pickle=True)
