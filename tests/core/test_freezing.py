"""Freezing the lowest encoder blocks while training (`frozen_layers`, `freeze_embeddings`):
the frozen weights do not move, the others do, no gradient reaches a frozen block, the user's
model gets its requires_grad flags back, the card records the setting, the CLI passes it on,
and an impossible freeze is refused before training with the encoder's layer count."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from conftest import make_sentences
from textmatch import TextMatchError, Trainer, TrainingArguments
from textmatch.core.freezing import blocks_to_freeze, frozen


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, p.detach()) for a, p in zip(before, module.parameters()))


def train(model, tmp_path, **fields):
    texts, labels = make_sentences(6, seed=3)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), num_episodes=3, learning_rate=1e-2, n_way=4,
                             show_progress_bar=False, **fields)
    trainer = Trainer(model, args, train_dataset=(texts, labels))
    return trainer, trainer.train()


def test_transformer_blocks_are_the_embeddings_and_each_layer(tiny_bert_model):
    embeddings, layers = tiny_bert_model.query_encoder.blocks()
    bert = tiny_bert_model.query_encoder.model
    assert embeddings is bert.embeddings
    assert layers == list(bert.encoder.layer) and len(layers) == bert.config.num_hidden_layers == 2


def test_frozen_layers_keep_their_weights_and_the_rest_trains(tiny_bert_model, tmp_path):
    bert = tiny_bert_model.query_encoder.model
    before = {name: snapshot(m) for name, m in
              [("embeddings", bert.embeddings), ("layer0", bert.encoder.layer[0]), ("layer1", bert.encoder.layer[1])]}
    trainer, _ = train(tiny_bert_model, tmp_path, frozen_layers=1)
    assert not moved(before["embeddings"], bert.embeddings)
    assert not moved(before["layer0"], bert.encoder.layer[0])
    assert moved(before["layer1"], bert.encoder.layer[1])
    assert all(p.requires_grad for p in tiny_bert_model.parameters() if p is not tiny_bert_model.log_temperature)
    # the optimizer never held a frozen parameter
    held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not held & {id(p) for p in bert.embeddings.parameters()}
    assert held >= {id(p) for p in bert.encoder.layer[1].parameters()}
    assert tiny_bert_model.model_card_data.training_args["frozen_layers"] == 1


def test_freeze_embeddings_only(tiny_bert_model, tmp_path):
    bert = tiny_bert_model.query_encoder.model
    emb, layer0 = snapshot(bert.embeddings), snapshot(bert.encoder.layer[0])
    train(tiny_bert_model, tmp_path, freeze_embeddings=True)
    assert not moved(emb, bert.embeddings) and moved(layer0, bert.encoder.layer[0])
    assert tiny_bert_model.model_card_data.training_args["freeze_embeddings"] is True


def test_no_gradient_reaches_a_frozen_block(tiny_bert_model):
    bert = tiny_bert_model.query_encoder.model
    features = tiny_bert_model.query_encoder.tokenize(["book a table for two", "what's my balance"])
    with frozen(tiny_bert_model, frozen_layers=1):
        tiny_bert_model.query_encoder(features).sum().backward()
    assert all(p.grad is None for p in [*bert.embeddings.parameters(), *bert.encoder.layer[0].parameters()])
    assert all(p.grad is not None for p in bert.encoder.layer[1].parameters() if p.requires_grad)


def test_flags_come_back_after_a_failed_run(tiny_bert_model):
    bert = tiny_bert_model.query_encoder.model
    bert.encoder.layer[1].output.dense.bias.requires_grad_(False)  # the user's own choice survives
    with pytest.raises(RuntimeError):
        with frozen(tiny_bert_model, frozen_layers=1):
            raise RuntimeError("training failed")
    assert all(p.requires_grad for p in [*bert.embeddings.parameters(), *bert.encoder.layer[0].parameters()])
    assert not bert.encoder.layer[1].output.dense.bias.requires_grad


def test_separate_f_and_g_are_both_frozen(tiny_bert_model):
    from textmatch import MatchingNetwork

    model = MatchingNetwork(tiny_bert_model.query_encoder, copy.deepcopy(tiny_bert_model.query_encoder))
    blocks = blocks_to_freeze(model, 1, False)
    assert len(blocks) == 4  # (embeddings, layer 0) of f', then of g'
    assert blocks[2] is model.support_encoder.model.embeddings


def test_bilstm_freezes_its_embedding(bilstm_model, tmp_path):
    emb, lstm = snapshot(bilstm_model.query_encoder.embedding), snapshot(bilstm_model.query_encoder.lstm)
    train(bilstm_model, tmp_path, freeze_embeddings=True)
    assert not moved(emb, bilstm_model.query_encoder.embedding) and moved(lstm, bilstm_model.query_encoder.lstm)


def test_too_many_frozen_layers_fail_before_training(tiny_bert_model, tmp_path):
    texts, labels = make_sentences(6, seed=3)
    args = TrainingArguments(output_dir=str(tmp_path / "run"), num_episodes=3, n_way=4, frozen_layers=3)
    with pytest.raises(TextMatchError, match="frozen_layers=3, but the transformer encoder has 2 layers"):
        Trainer(tiny_bert_model, args, train_dataset=(texts, labels))


@pytest.mark.parametrize("fields, message", [
    ({"frozen_layers": -1}, "frozen_layers must be an integer >= 0"),
    ({"frozen_layers": 1.5}, "frozen_layers must be an integer >= 0"),
    ({"freeze_embeddings": "yes"}, "freeze_embeddings must be True or False"),
])
def test_bad_values_are_refused(fields, message):
    with pytest.raises(TextMatchError, match=message):
        TrainingArguments(**fields)


def test_cli_frozen_layers(tiny_bert_dir, tmp_path, capsys):
    import csv

    from textmatch import cli

    texts, labels = make_sentences(6, seed=3)
    support = tmp_path / "support.csv"
    with open(support, "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([("text", "label"), *zip(texts, labels)])
    code = cli.main(["train", "--model", str(tiny_bert_dir), "--train", str(support), "--output", str(tmp_path / "m"),
                     "--episodes", "2", "--frozen-layers", "1", "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["arguments"]["frozen_layers"] == 1
    for flag, message in [("5", "has 2 layers"), ("2", "nothing else to train")]:
        code = cli.main(["train", "--model", str(tiny_bert_dir), "--train", str(support), "--output", str(tmp_path / "m2"),
                         "--episodes", "2", "--frozen-layers", flag, "--no-progress"])
        assert code == 2 and message in capsys.readouterr().err
