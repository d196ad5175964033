"""The episodic trainer on Hugging Face's Trainer: it matches a plain torch loop (today's
semantics) step for step, two gloo processes under `accelerate launch` / `torchrun` train as
one process with gradient accumulation 2 and save once, and a run killed with SIGKILL resumes
from its checkpoint to the weights and log of an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers

from textmatch import MatchingNetwork, Trainer, TrainingArguments
from textmatch.core import matching
from textmatch.core.optimization import make_optimizer

from conftest import make_sentences, write_vocab

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory) -> Path:
    """A dropout-free tiny BERT as a textmatch model folder, and a training CSV: with no
    dropout the weights depend only on the episodes, not on each process's RNG."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("ddp")
    vocab_file = write_vocab(folder / "vocab.txt")
    vocab = {w: i for i, w in enumerate(vocab_file.read_text(encoding="utf-8").split())}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(folder / "bert"))
    tok.save_pretrained(str(folder / "bert"))
    MatchingNetwork.from_pretrained(str(folder / "bert")).save_pretrained(folder / "model")
    texts, labels = make_sentences(12, seed=1)
    with open(folder / "train.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return folder


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO)}


def train_cli(launcher: list[str], fixture_dir: Path, output: Path, *extra: str) -> dict:
    cmd = [*launcher, "-m", "textmatch.cli", "train", "--model", str(fixture_dir / "model"),
           "--train", str(fixture_dir / "train.csv"), "--output", str(output), "--episodes", "6", "--n-way", "4",
           "--lr", "1e-3", "--device", "cpu", "--no-progress", "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"output"') == 1, done.stdout  # one summary: only the main process reports
    return json.loads(done.stdout)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "training_log.jsonl").read_text(encoding="utf-8").splitlines()]


# -- the new loop equals the old one -----------------------------------------------------------
def test_matches_a_plain_torch_loop(fixture_dir):
    """Today's loop, written out: episode i at step i, AdamW over the same parameter groups,
    linear decay (no warm-up), clipping; the Trainer's per-step loss and accuracy match it."""
    from textmatch.data import load_text_dataset, texts_and_labels

    texts, labels = texts_and_labels(load_text_dataset(str(fixture_dir / "train.csv")), "text", "label")
    steps = 8
    model = MatchingNetwork.from_pretrained(str(fixture_dir / "model"))
    args = TrainingArguments(num_episodes=steps, n_way=4, learning_rate=1e-3, warmup_steps=0, seed=3,
                             optim="adamw_torch", use_cpu=True, show_progress_bar=False, fit_support_at_end=False)
    trainer = Trainer(model, args, train_dataset=(texts, labels))
    out = trainer.train()

    reference = MatchingNetwork.from_pretrained(str(fixture_dir / "model"))
    transformers.set_seed(3)
    optimizer = make_optimizer(reference, 1e-3, args.head_learning_rate, args.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (steps - s) / steps)
    reference.train()
    expected = []
    for step in range(steps):
        episode = trainer.train_sampler.episode(step)
        log_probs = reference.episode_log_probs(episode, args.encode_batch_size)  # (n_query, n_way)
        targets = torch.tensor(episode.query_labels)
        loss = matching.matching_nll(log_probs, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), args.max_grad_norm)
        expected.append((float(loss.detach()), float((log_probs.detach().argmax(-1) == targets).float().mean()), schedule.get_last_lr()[0]))
        optimizer.step()
        schedule.step()
    got = [(r["loss"], r["accuracy"], r["learning_rate"]) for r in out.log_history]
    assert len(got) == steps
    for (loss_a, acc_a, lr_a), (loss_b, acc_b, lr_b) in zip(got, expected):
        assert loss_a == pytest.approx(loss_b, abs=1e-5)
        assert acc_a == pytest.approx(acc_b, abs=1e-6)
        assert lr_a == pytest.approx(lr_b, rel=1e-9)
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        assert torch.allclose(a, b, atol=1e-5), name


# -- two processes -------------------------------------------------------------------------------
@pytest.mark.stress
@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_two_gloo_processes_equal_one_with_accumulation(launcher, fixture_dir, tmp_path):
    launch = {
        "accelerate": [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                       "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"],
    }[launcher]
    two = train_cli(launch, fixture_dir, tmp_path / "two")
    one = train_cli([sys.executable], fixture_dir, tmp_path / "one", "--gradient-accumulation-steps", "2")
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["episodes"] == one["episodes"] == 6
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    # the main process alone logged (one line per step) and saved the model folder
    assert log(tmp_path / "two.run") == log(tmp_path / "one.run")
    assert [r["step"] for r in log(tmp_path / "two.run")] == list(range(1, 7))
    trained = MatchingNetwork.from_pretrained(str(tmp_path / "two"))  # a complete model folder
    assert trained.support_texts and trained.model_card_data.training_args["processes"] == 2
    assert not any(p.name.startswith("checkpoint-") for p in (tmp_path / "two.run").iterdir())


# -- kill and resume ------------------------------------------------------------------------------
KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from textmatch import MatchingNetwork, Trainer, TrainingArguments
    from textmatch.data import load_text_dataset, texts_and_labels

    fixture, run_dir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    texts, labels = texts_and_labels(load_text_dataset(fixture + "/train.csv"), "text", "label")
    model = MatchingNetwork.from_pretrained(fixture + "/model")
    args = TrainingArguments(output_dir=run_dir, **{ARGS})
    Trainer(model, args, train_dataset=(texts[::2], labels[::2]), eval_dataset=(texts[1::2], labels[1::2]),
            callbacks=[Kill()]).train()
""")
RESUME_ARGS = dict(num_episodes=12, n_way=4, learning_rate=3e-3, seed=5, eval_steps=3, eval_episodes=4,
                   early_stopping_patience=None, save_strategy="steps", save_steps=4, use_cpu=True,
                   show_progress_bar=False)


def trainer_for(fixture_dir: Path, run_dir: Path) -> Trainer:
    from textmatch.data import load_text_dataset, texts_and_labels

    texts, labels = texts_and_labels(load_text_dataset(str(fixture_dir / "train.csv")), "text", "label")
    model = MatchingNetwork.from_pretrained(str(fixture_dir / "model"))
    args = TrainingArguments(output_dir=str(run_dir), **RESUME_ARGS)
    return Trainer(model, args, train_dataset=(texts[::2], labels[::2]), eval_dataset=(texts[1::2], labels[1::2]))


@pytest.mark.stress
def test_kill_and_resume_equals_an_uninterrupted_run(fixture_dir, tmp_path):
    whole = trainer_for(fixture_dir, tmp_path / "whole")
    whole_out = whole.train()
    assert sorted(p.name for p in (tmp_path / "whole").iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-12", "checkpoint-4", "checkpoint-8"]

    script = KILLED_RUN.replace("{ARGS}", repr(RESUME_ARGS))
    killed = subprocess.run([sys.executable, "-c", script, str(fixture_dir), str(tmp_path / "killed"), "10"],
                            capture_output=True, text=True, env=env(), timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "killed"
    assert (run_dir / "checkpoint-8" / "model.safetensors").is_file()
    assert not (run_dir / "training_log.jsonl").exists()  # the log of an unfinished run is never committed
    # the checkpoint holds weights as safetensors, never a pickled training_args.bin
    assert not (run_dir / "checkpoint-8" / "training_args.bin").exists()

    resumed = trainer_for(fixture_dir, run_dir)
    resumed_out = resumed.train(resume_from_checkpoint=True)
    assert resumed_out.global_step == whole_out.global_step == 12
    assert resumed_out.best_step == whole_out.best_step and resumed_out.best_metric == whole_out.best_metric
    for (name, a), b in zip(resumed.model.named_parameters(), whole.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert log(run_dir) == log(tmp_path / "whole")
    assert [r["step"] for r in log(run_dir)] == list(range(1, 13))


def test_resume_refuses_downloaded_or_foreign_folders(fixture_dir, tmp_path, monkeypatch):
    """Resume state is pickled by torch: never read from the Hugging Face download cache, and a
    folder that is not a trainer checkpoint (e.g. a model folder) is refused by name."""
    from huggingface_hub import constants

    from textmatch import TextMatchError

    cache = tmp_path / "hub-cache"
    downloaded = cache / "models--someone--model" / "snapshots" / "abc" / "checkpoint-4"
    downloaded.mkdir(parents=True)
    (downloaded / "trainer_state.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    trainer = trainer_for(fixture_dir, tmp_path / "run")
    with pytest.raises(TextMatchError, match="is in the Hugging Face download cache"):
        trainer.train(resume_from_checkpoint=str(downloaded))
    with pytest.raises(TextMatchError, match=r"is not a training checkpoint \(it has no trainer_state.json\)"):
        trainer.train(resume_from_checkpoint=str(fixture_dir / "model"))
    with pytest.raises(TextMatchError, match="holds no checkpoint-N folder"):
        trainer.train(resume_from_checkpoint=True)
    assert not (tmp_path / "run" / "training_log.jsonl").exists()
