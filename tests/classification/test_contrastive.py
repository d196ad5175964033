"""The contrastive stage on unlabelled text (unsupervised SimCSE, Gao et al. 2021): dropout
gives two different views of a text in train mode and none in eval mode; the loss is eq. 2 of
Vinyals et al. with each text's second view as its class (checked against a naive loop); batch
i depends only on (seed, i); training lowers the loss; duplicates are dropped; bad input and
encoders without dropout are refused; `textmatch train --unlabeled` runs the stage first and
the saved card lists it under "Earlier training"."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import warnings

import pytest
import torch
from conftest import make_sentences

from textmatch import (
    BiLSTMEncoder,
    ContrastiveArguments,
    ContrastiveTrainer,
    MatchingNetwork,
    TextMatchError,
    cli,
)
from textmatch.classification.contrastive import (
    ContrastiveCollator,
    batch_sizes,
    check_dropout,
    epoch_batches,
)
from textmatch.core.objectives import paired_views_loss
from textmatch.hub.model_card import generate_model_card

TEXTS = make_sentences(10, seed=3)[0]  # 60 distinct short texts


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Hugging Face's Trainer creates its default output_dir in the working directory when none
    is given: keep that out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def bilstm_dropout_model(tiny_tokenizer_dir):
    """A BiLSTM MatchingNetwork with dropout 0.1 (the shared `bilstm_model` fixture has none)."""
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=32, hidden_size=32, dropout=0.1, max_length=32)
    return MatchingNetwork(encoder)


def args(**kwargs) -> ContrastiveArguments:
    defaults = {"per_device_train_batch_size": 32, "learning_rate": 1e-3, "show_progress_bar": False, "use_cpu": True}
    return ContrastiveArguments(**{**defaults, **kwargs})


# -- the two views ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_bert_model", "bilstm_dropout_model"])
def test_dropout_views_differ_in_train_mode_and_match_in_eval_mode(name, request):
    model = request.getfixturevalue(name)
    chunks = ContrastiveCollator(model, max_length=64, encode_batch_size=8).collate(TEXTS[:12])["texts"]  # tokenised once
    with torch.no_grad():
        model.train()
        view1 = model.embed_tokenized(model.query_encoder, chunks)  # (12, dim)
        view2 = model.embed_tokenized(model.support_encoder, chunks)  # (12, dim)
        assert view1.shape == view2.shape == (12, model.query_encoder.dim)
        cos = torch.nn.functional.cosine_similarity(view1, view2, dim=-1)  # (12,)
        assert (view1 - view2).abs().max() > 1e-3 and bool((cos < 1 - 1e-6).all()), cos
        assert float(cos.mean()) > 0.5  # two views of one text, not two unrelated vectors
        model.eval()
        assert torch.equal(model.embed_tokenized(model.query_encoder, chunks), model.embed_tokenized(model.support_encoder, chunks))


def test_an_encoder_without_dropout_is_refused(bilstm_model):
    """The shared BiLSTM fixture is built with dropout=0.0: its two views would be equal."""
    bilstm_model.eval()
    with pytest.raises(TextMatchError, match="contrastive stage needs dropout"):
        check_dropout(bilstm_model, TEXTS[:4])
    with pytest.raises(TextMatchError, match="dropout=0.1"):
        ContrastiveTrainer(bilstm_model, args(), TEXTS)
    assert not bilstm_model.training  # the check leaves the mode as it found it


# -- the loss ---------------------------------------------------------------------------------
def naive_loss(view1: torch.Tensor, view2: torch.Tensor, tau: float) -> float:
    """Row by row, in Python floats: -log softmax_j(cos(h_i, h'_j) / tau) at j = i, averaged."""
    total = 0.0
    for i in range(len(view1)):
        logits = []
        for j in range(len(view2)):
            a, b = view1[i].tolist(), view2[j].tolist()
            cos = sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))
            logits.append(cos / tau)
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(s - top) for s in logits))
        total += -(logits[i] - log_sum)
    return total / len(view1)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_loss_equals_a_naive_loop(tau):
    gen = torch.Generator().manual_seed(0)
    view1 = torch.randn(7, 5, generator=gen, dtype=torch.float64)  # (B, dim)
    view2 = view1 + 0.3 * torch.randn(7, 5, generator=gen, dtype=torch.float64)  # a noisy second view
    out = paired_views_loss(view1, view2, torch.tensor(tau, dtype=torch.float64), "cosine")
    assert out["logits"].shape == (7, 7) and out["targets"].tolist() == list(range(7))
    assert float(out["loss"]) == pytest.approx(naive_loss(view1, view2, tau), rel=1e-9)
    # the same views in both roles: each row's partner is its own vector, the loss still counts the others
    same = paired_views_loss(view1, view1, tau)
    assert float(same["loss"]) == pytest.approx(naive_loss(view1, view1, tau), rel=1e-9)


def test_the_objective_is_the_pure_loss_on_the_model_views(tiny_bert_model):
    """In eval mode (no dropout) the step's objective equals paired_views_loss on model.embed."""
    model = tiny_bert_model.eval()
    trainer = ContrastiveTrainer(model, args(), TEXTS)
    with torch.no_grad():
        out = trainer.batch_outputs(TEXTS[:9])
        emb = model.embed(model.query_encoder, TEXTS[:9])  # (9, dim)
        want = paired_views_loss(emb, emb, model.temperature, "cosine")
    assert float(out["loss"]) == pytest.approx(float(want["loss"]), rel=1e-5)
    assert torch.allclose(out["logits"], want["logits"], atol=1e-4)


# -- the data order ---------------------------------------------------------------------------
def test_batch_sizes_are_near_equal_and_never_one_text():
    assert batch_sizes(60, 32) == [30, 30] and batch_sizes(64, 64) == [64] and batch_sizes(65, 64) == [33, 32]
    for n in range(2, 40):
        for b in range(2, n + 1):
            sizes = batch_sizes(n, b)
            assert sum(sizes) == n and min(sizes) >= 2 and max(sizes) - min(sizes) <= 1
            assert max(sizes) <= b or (b == 2 and max(sizes) == 3), (n, b, sizes)


def test_batch_i_depends_only_on_seed_and_i(tiny_bert_model):
    a = ContrastiveTrainer(tiny_bert_model, args(seed=5, per_device_train_batch_size=16, max_steps=12), TEXTS)
    b = ContrastiveTrainer(copy.deepcopy(tiny_bert_model), args(seed=5, per_device_train_batch_size=16, max_steps=12), TEXTS)
    assert a.steps_per_epoch == 4 and len(a.train_dataset) == 12
    forward = [a.train_dataset[i] for i in range(12)]
    backward = [b.train_dataset[i] for i in reversed(range(12))][::-1]  # another access order, another instance
    assert [x.texts for x in forward] == [x.texts for x in backward]
    assert [x.epoch for x in forward] == [1] * 4 + [2] * 4 + [3] * 4
    for epoch in range(3):  # every epoch holds every text once, in its own order
        texts = [t for x in forward[4 * epoch : 4 * epoch + 4] for t in x.texts]
        assert sorted(texts) == sorted(TEXTS)
    assert forward[0].texts != forward[4].texts  # epochs are reshuffled
    assert forward[0].texts == epoch_batches(TEXTS, 16, 5, 1)[0].texts  # seeded by (seed, epoch)
    other_seed = epoch_batches(TEXTS, 16, 6, 1)
    assert other_seed[0].texts != forward[0].texts
    with pytest.raises(IndexError):
        a.train_dataset[12]


def test_epochs_set_the_number_of_steps(tiny_bert_model):
    trainer = ContrastiveTrainer(tiny_bert_model, args(per_device_train_batch_size=16, num_train_epochs=2.5), TEXTS)
    assert trainer.steps_per_epoch == 4 and trainer.total_steps == 10  # 2.5 epochs of 4 batches
    assert trainer.args.per_device_train_batch_size == 16


# -- training ---------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_records_the_run(tiny_bert_model, tmp_path):
    model = tiny_bert_model
    model.fit(["rain today", "song now"], ["weather", "music"])  # a stored support set: re-encoded at the end
    before_weights = {k: v.clone() for k, v in model.state_dict().items()}
    probe = TEXTS[:30]

    def fixed_mask_loss() -> float:  # the same dropout masks before and after training
        torch.manual_seed(123)
        model.train()
        with torch.no_grad():
            return float(trainer.batch_loss(probe))

    trainer = ContrastiveTrainer(model, args(output_dir=str(tmp_path / "run"), max_steps=20, seed=1), TEXTS)
    loss_before = fixed_mask_loss()
    out = trainer.train()
    assert not model.training  # left in eval mode
    loss_after = fixed_mask_loss()
    # measured: 2.50 -> 0.027 (step losses 2.55 -> 0.05), 0.05 s a step; the run is deterministic (fixed seeds)
    assert loss_after < 0.5 * loss_before, (loss_before, loss_after)
    losses = [r["loss"] for r in out.log_history]
    assert out.global_step == 20 and len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert out.log_history[-1]["batch_size"] == 30 and out.log_history[-1]["epoch"] == 10
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before_weights[k])]
    assert any(k.startswith("query_encoder.") for k in changed)
    with torch.no_grad():
        model.eval()
        assert torch.allclose(model.support_embeddings_, model.embed(model.support_encoder, ["rain today", "song now"]), atol=1e-5)
    lines = (tmp_path / "run" / "training_log.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 21))
    card_args = model.model_card_data.training_args
    assert card_args["objective"] == "contrastive" and card_args["n_texts"] == 60
    assert card_args["per_device_train_batch_size"] == 32 and card_args["max_length"] == 64
    card = generate_model_card(model)
    assert "with an unsupervised contrastive objective (dropout views, SimCSE) on 60 unlabelled texts." in card


def test_bilstm_with_dropout_trains(bilstm_dropout_model):
    model = bilstm_dropout_model
    before = model.query_encoder.embedding.weight.detach().clone()
    out = ContrastiveTrainer(model, args(max_steps=3, per_device_train_batch_size=20), TEXTS).train()
    assert out.global_step == 3 and math.isfinite(out.training_loss)
    assert not torch.equal(before, model.query_encoder.embedding.weight)


def test_separate_f_and_g_both_train(tiny_tokenizer_dir):
    """f' != g': view 1 comes from f', view 2 from g' (each tokenises the batch itself)."""
    from transformers import AutoTokenizer

    from textmatch import MatchingNetworkConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    f, g = (BiLSTMEncoder.from_tokenizer(tok, embedding_dim=16, hidden_size=16, dropout=0.1, max_length=32) for _ in range(2))
    model = MatchingNetwork(f, g, config=MatchingNetworkConfig(share_weights=False))
    before = [e.embedding.weight.detach().clone() for e in (f, g)]
    trainer = ContrastiveTrainer(model, args(max_steps=2, per_device_train_batch_size=20), TEXTS)
    assert set(trainer.collator.collate(TEXTS[:3])) == {"objective", "texts", "support_texts"}
    trainer.train()
    assert all(not torch.equal(b, e.embedding.weight) for b, e in zip(before, (f, g)))


# -- input ------------------------------------------------------------------------------------
def test_duplicates_are_dropped_with_a_warning(tiny_bert_model):
    with pytest.warns(UserWarning, match=r"dropped 3 exact duplicate text\(s\) of 63; 60 distinct"):
        trainer = ContrastiveTrainer(tiny_bert_model, args(), TEXTS + [TEXTS[0], TEXTS[5], TEXTS[0]])
    assert trainer.texts == TEXTS and trainer.duplicates_dropped == 3


def test_a_batch_larger_than_the_data_is_clipped(tiny_bert_model):
    with pytest.warns(UserWarning, match="larger than the 10 distinct texts; using batches of 10"):
        trainer = ContrastiveTrainer(tiny_bert_model, args(per_device_train_batch_size=64), TEXTS[:10])
    assert trainer.batch_size == 10 and trainer.args.per_device_train_batch_size == 10 and trainer.steps_per_epoch == 1


def test_a_dataset_text_column_is_read_and_labels_ignored(tiny_bert_model):
    import datasets

    ds = datasets.Dataset.from_dict({"sentence": TEXTS[:20], "label": ["x"] * 20})
    trainer = ContrastiveTrainer(tiny_bert_model, args(per_device_train_batch_size=16), ds, text_column="sentence")
    assert trainer.texts == TEXTS[:20]
    with pytest.raises(TextMatchError, match="no column 'text'"):
        ContrastiveTrainer(tiny_bert_model, args(), ds)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "got no texts"),
        ("rain today", "single string"),
        (["same text", "same text"], "at least 2 distinct texts"),
        (["rain today", 7], "unlabelled text 1 is a int"),
        (["rain today", None], "unlabelled text 1 is missing"),
        (["rain today", "  "], "unlabelled text 1 is an empty string"),
        ({"text": ["a", "b"]}, "list of texts or a datasets.Dataset, got a dict"),
        (None, "needs a train_dataset"),
    ],
)
def test_bad_input_is_refused(tiny_bert_model, data, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the duplicate warning of ["same text", "same text"]
        with pytest.raises(TextMatchError, match=re.escape(message)):
            ContrastiveTrainer(tiny_bert_model, args(), data)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("per_device_train_batch_size", 1, "an integer >= 2"),
        ("max_length", 1, "an integer >= 2"),
        ("num_train_epochs", 0, "a finite number > 0"),
        ("max_steps", 0, "or -1"),
    ],
)
def test_bad_arguments_name_the_field(field, value, message):
    with pytest.raises(TextMatchError, match=rf"ContrastiveArguments\.{field} must be .*{re.escape(message)}"):
        ContrastiveArguments(**{field: value})


def test_defaults_suit_short_texts():
    a = ContrastiveArguments()
    assert (a.per_device_train_batch_size, a.num_train_epochs, a.max_steps, a.learning_rate, a.max_length) == (64, 1, -1, 3e-5, 64)


# -- the command line -------------------------------------------------------------------------
def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_labelled(path, texts, labels):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


def test_cli_unlabeled_stage_then_episodes(tiny_bert_dir, tmp_path, capsys):
    train = write_labelled(tmp_path / "train.csv", *make_sentences(4, seed=11))
    unlabeled = tmp_path / "unlabeled.txt"
    lines = make_sentences(6, seed=12)[0]
    unlabeled.write_text("\n".join(lines + ["", lines[0]]) + "\n", encoding="utf-8")  # a blank line, a duplicate
    out_dir = tmp_path / "trained"
    code, out, err = run(["train", "--model", tiny_bert_dir, "--train", train, "--unlabeled", unlabeled,
                          "--unlabeled-max-steps", "3", "--episodes", "2", "--seed", "3", "--output", out_dir,
                          "--no-progress", "--json"], capsys)
    assert code == 0, err
    assert "dropped 1 exact duplicate" in err
    summary = json.loads(out)
    stage = summary["contrastive"]
    assert stage["steps"] == 3 and stage["n_texts"] == 36 and stage["duplicates_dropped"] == 1 and stage["batch_size"] == 36
    assert stage["train_seconds"] >= 0 and summary["train_seconds"] >= 0 and summary["episodes"] == 2
    assert len((tmp_path / "trained.run" / "contrastive" / "training_log.jsonl").read_text().splitlines()) == 3
    assert len((tmp_path / "trained.run" / "training_log.jsonl").read_text().splitlines()) == 2
    card = (out_dir / "README.md").read_text(encoding="utf-8")
    assert "The encoder was fine-tuned with episodic training" in card
    assert re.search(r"### Earlier training.*\n1\. contrastive: .*`max_steps` = 3.*`seed` = 3.*`n_texts` = 36", card, re.S), card
    saved = MatchingNetwork.from_pretrained(str(out_dir))
    earlier = saved.model_card_data.earlier_training
    assert [e["training_args"]["objective"] for e in earlier] == ["contrastive"]
    assert saved.model_card_data.training_args.get("objective", "episodes") != "contrastive"


def test_cli_unlabeled_data_file_and_text_summary(tiny_bert_dir, tmp_path, capsys):
    """A CSV with text and label columns (labels ignored); the plain summary names both stages."""
    train = write_labelled(tmp_path / "train.csv", *make_sentences(4, seed=11))
    unlabeled = write_labelled(tmp_path / "pool.csv", *make_sentences(3, seed=13))
    code, out, err = run(["train", "--model", tiny_bert_dir, "--train", train, "--unlabeled", unlabeled,
                          "--unlabeled-epochs", "2", "--episodes", "1", "--output", tmp_path / "m", "--no-progress"], capsys)
    assert code == 0, err
    first, second = out.strip().splitlines()
    assert re.match(r"contrastive stage: 2 steps on 18 unlabelled texts in \d+ s \(mean loss \d", first), first
    assert second.startswith("trained 1 episodes in ")


def test_cli_unlabeled_with_one_example_per_class_and_its_name(tiny_bert_dir, tmp_path, capsys):
    """The early check before the contrastive stage draws episodes as the Trainer will: with
    class names on (the default) one example per class trains; without them it is refused."""
    texts, labels = make_sentences(1, seed=11)
    train = write_labelled(tmp_path / "train.csv", texts, labels)
    unlabeled = write_labelled(tmp_path / "pool.csv", *make_sentences(3, seed=13))
    argv = ["train", "--model", tiny_bert_dir, "--train", train, "--unlabeled", unlabeled, "--unlabeled-max-steps", "1",
            "--episodes", "1", "--output", tmp_path / "m", "--no-progress"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    code, _, err = run([*argv, "--no-label-names"], capsys)
    assert code == 2 and "episodes need at least 2 per class" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unlabeled-max-steps", "2"], "give it with --unlabeled FILE"),
        (["--unlabeled", "{dir}/missing.txt"], "is not a file"),
        (["--unlabeled", "{dir}/pool.md"], "unknown file type '.md'"),
        (["--unlabeled", "{dir}/empty.txt"], "holds no texts"),
        (["--unlabeled", "{dir}/one.txt"], "at least 2 distinct texts"),
        (["--unlabeled", "{dir}/one.txt", "--unlabeled-epochs", "0"], "--unlabeled-epochs must be a number > 0"),
        (["--unlabeled", "{dir}/one.txt", "--k-shot", "6", "--q-query", "5"], "examples but k_shot"),
    ],
)
def test_cli_unlabeled_bad_input_exits_2(tiny_bert_dir, tmp_path, capsys, extra, message):
    train = write_labelled(tmp_path / "train.csv", *make_sentences(4, seed=11))
    (tmp_path / "pool.md").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    (tmp_path / "one.txt").write_text("rain today\nrain today\n", encoding="utf-8")
    extra = [a.format(dir=tmp_path) for a in extra]
    code, _, err = run(["train", "--model", tiny_bert_dir, "--train", train, "--output", tmp_path / "o", *extra], capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
