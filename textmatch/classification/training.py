"""Episodic training of a MatchingNetwork (Vinyals et al. 2016, section 2.2).

Each step samples an N-way K-shot episode, computes log P(y | x, S) of eq. 1 for its
queries and minimises the negative log-likelihood of their labels. The main path is
fine-tuning on the user's own few-shot support set, with episodes drawn from it; with an
`eval_dataset` (other examples, or other classes for meta-training) the Trainer validates on
fixed episodes, keeps the best weights and stops early.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

import numpy as np
import torch

from ..core import matching
from ..core import optimization as optim
from ..core.card_data import EXCLUDED_TRAINING_ARGS, infer_dataset_name
from ..core.episodes import EpisodeSampler
from ..core.modeling import MatchingNetwork
from ..core.optimization import OptimizationArguments, TrainOutput, is_int
from ..data.loading import as_text_label_lists
from ..errors import TextMatchError
from ..files import AtomicFile


@dataclass
class TrainingArguments(OptimizationArguments):
    """Settings of episodic training (the optimizer's are shared with retrieval training, see
    `OptimizationArguments`). n_way / k_shot / q_query left at None are chosen from the data by
    `episode_shape`: n_way = min(64, classes) and about 128 texts per episode (64-way 1 + 1 for
    77 classes, 12-way 5 + 5 for 12 classes of 10); values given explicitly are checked against
    the data."""

    num_episodes: int = 150
    n_way: int | None = None
    k_shot: int | None = None
    q_query: int | None = None
    label_smoothing: float = 0.0
    eval_steps: int = 25
    eval_episodes: int = 50
    early_stopping_patience: int | None = 4
    load_best_model_at_end: bool = True
    fit_support_at_end: bool = True
    batch_size: int = 64

    def __post_init__(self) -> None:
        def optional_int(value: Any, low: int) -> bool:
            return value is None or (is_int(value) and value >= low)

        self.validate([
            ("num_episodes", is_int(self.num_episodes) and self.num_episodes >= 1, "an integer >= 1"),
            ("n_way", optional_int(self.n_way, 2), "an integer >= 2 or None"),
            ("k_shot", optional_int(self.k_shot, 1), "an integer >= 1 or None"),
            ("q_query", optional_int(self.q_query, 1), "an integer >= 1 or None"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("eval_steps", is_int(self.eval_steps) and self.eval_steps >= 1, "an integer >= 1"),
            ("eval_episodes", is_int(self.eval_episodes) and self.eval_episodes >= 1, "an integer >= 1"),
            ("early_stopping_patience", optional_int(self.early_stopping_patience, 1), "an integer >= 1 or None"),
            ("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
        ])


MAX_WAY = 64  # classes per episode by default, at most
EPISODE_TEXTS = 128  # texts per episode the default shape aims at (support + query)


def episode_shape(labels: list[Hashable], n_way: int | None, k_shot: int | None, q_query: int | None) -> tuple[int, int, int]:
    """Fill in the n_way / k_shot / q_query left at None from the class counts of `labels`.

    As many classes as possible per episode (n_way = min(64, classes)), then about 128 texts
    per episode: each class gets per_class = max(2, 128 // n_way) texts, at most its smallest
    class's count, split into k_shot = half (at most 5) and q_query = the rest (at most 5).
    With 77 or 150 classes that is 64-way 1-shot 1-query; with 12 classes 5 + 5. Wide
    episodes raised validation accuracy over 16-way 5 + 5 on both BANKING77 and CLINC150
    (results/fewshot.md, ablation), at the same number of texts per episode.
    """
    counts: dict[Hashable, int] = {}
    for y in labels:
        counts[y] = counts.get(y, 0) + 1
    if len(counts) < 2:
        raise TextMatchError(f"training needs at least 2 classes; the data has {len(counts)}")
    smallest_class, smallest = min(counts.items(), key=lambda kv: kv[1])
    if n_way is None:
        n_way = min(MAX_WAY, len(counts))
    if k_shot is None or q_query is None:
        if smallest < 2:
            raise TextMatchError(
                f"class {smallest_class!r} has {smallest} example; episodes need at least 2 per class "
                "(one support, one query): add examples or drop the class"
            )
        per_class = min(smallest, max(2, EPISODE_TEXTS // n_way))
        if k_shot is None:
            k_shot = max(1, min(5, per_class // 2 if q_query is None else per_class - q_query))
        if q_query is None:
            q_query = max(1, min(5, per_class - k_shot))
    return n_way, k_shot, q_query


class Trainer:
    """Episodic trainer, named and shaped like setfit's / transformers' Trainer.

    train_dataset / eval_dataset: `datasets.Dataset` with text and label columns, or
    (texts, labels) pairs. train_dataset_name: what the model card names the training data
    (default: a Hub dataset's own name, from `train_dataset.info.dataset_name`).
    """

    def __init__(
        self,
        model: MatchingNetwork,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        text_column: str = "text",
        label_column: str = "label",
        train_dataset_name: str | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise TextMatchError(f"Trainer needs a MatchingNetwork, got {type(model).__name__}")
        if train_dataset is None:
            raise TextMatchError("Trainer needs a train_dataset (a datasets.Dataset or a (texts, labels) pair)")
        self.model = model
        self.args = args or TrainingArguments()
        self.train_texts, self.train_labels = as_text_label_lists(train_dataset, text_column, label_column)
        n_way, k_shot, q_query = episode_shape(self.train_labels, self.args.n_way, self.args.k_shot, self.args.q_query)
        self.train_sampler = EpisodeSampler((self.train_texts, self.train_labels), n_way, k_shot, q_query, seed=self.args.seed)
        self.eval_sampler: EpisodeSampler | None = None
        if eval_dataset is not None:
            eval_texts, eval_labels = as_text_label_lists(eval_dataset, text_column, label_column)
            e_way, e_k, e_q = episode_shape(eval_labels, None, self.args.k_shot, self.args.q_query)
            self.eval_sampler = EpisodeSampler(
                (eval_texts, eval_labels), min(n_way, e_way), e_k, e_q, seed=self.args.seed + 1_000_003
            )
        self.log_history: list[dict[str, Any]] = []
        self.train_dataset_name = train_dataset_name or infer_dataset_name(train_dataset)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, num_episodes: int | None = None) -> dict[str, float]:
        """Mean query accuracy and loss over fixed validation episodes, with a 95% CI."""
        if self.eval_sampler is None:
            raise TextMatchError("no eval_dataset was given to the Trainer")
        n = num_episodes or self.args.eval_episodes
        accs, losses = [], []
        was_training = self.model.training
        self.model.eval()
        with torch.inference_mode():
            for episode in self.eval_sampler.episodes(n):
                log_probs = self.model.episode_log_probs(episode, self.args.batch_size)
                targets = torch.tensor(episode.query_labels, device=self.model.device)
                losses.append(float(matching.matching_nll(log_probs, targets)))
                accs.append(float((log_probs.argmax(-1) == targets).float().mean()))
        self.model.train(was_training)
        acc = np.asarray(accs)
        ci = 1.96 * acc.std(ddof=1) / math.sqrt(len(acc)) if len(acc) > 1 else 0.0
        return {"eval_accuracy": float(acc.mean()), "eval_accuracy_ci95": float(ci), "eval_loss": float(np.mean(losses))}

    # -- training ---------------------------------------------------------------------------
    def _record_model_card(self) -> None:
        """Training arguments (n_way / k_shot / q_query as used) and the dataset name go on the
        model card; evaluation results of the weights before training no longer hold."""
        card = self.model.model_card_data
        training_args = {k: v for k, v in self.args.to_dict().items() if k not in EXCLUDED_TRAINING_ARGS}
        for name in ("n_way", "k_shot", "q_query"):
            training_args[name] = getattr(self.train_sampler, name)
        card.training_args = training_args
        card.eval_results = []
        if self.train_dataset_name:
            card.train_dataset_name = self.train_dataset_name

    def train(self) -> TrainOutput:
        args = self.args
        optim.set_seed(args.seed)
        device = optim.resolve_device(args.device)
        self._record_model_card()
        self.model.to(device)
        self.model.train()
        optimizer = optim.make_optimizer(self.model, args.learning_rate, args.head_learning_rate, args.weight_decay)
        scheduler = optim.linear_warmup_decay(optimizer, args.num_episodes, args.warmup_ratio)
        log_file = None
        completed = False
        if args.output_dir:
            # the log replaces the previous run's only when this run completes (textmatch.files)
            log_file = AtomicFile(Path(args.output_dir) / "training_log.jsonl")

        from tqdm.auto import tqdm

        bar = tqdm(
            total=args.num_episodes, desc="Training", unit="episode", disable=not args.show_progress_bar, file=sys.stderr
        )
        best_metric: float | None = None
        best_step: int | None = None
        best_state: dict[str, torch.Tensor] | None = None
        bad_evals = 0
        running_loss = running_acc = 0.0
        total_loss = 0.0
        step = 0
        start = time.perf_counter()
        try:
            for step in range(1, args.num_episodes + 1):
                episode = self.train_sampler.episode(step - 1)
                log_probs = self.model.episode_log_probs(episode, args.batch_size)  # (n_query, n_way)
                targets = torch.tensor(episode.query_labels, device=device)
                loss = matching.matching_nll(log_probs, targets, args.label_smoothing)
                grad_norm = optim.optimizer_step(loss, self.model.parameters(), optimizer, scheduler, args.max_grad_norm)

                loss_value = float(loss.detach())
                acc = float((log_probs.detach().argmax(-1) == targets).float().mean())
                total_loss += loss_value
                beta = 0.9 if step > 1 else 0.0
                running_loss = beta * running_loss + (1 - beta) * loss_value
                running_acc = beta * running_acc + (1 - beta) * acc
                record: dict[str, Any] = {
                    "step": step,
                    "loss": round(loss_value, 6),
                    "accuracy": round(acc, 6),
                    "learning_rate": scheduler.get_last_lr()[0],
                    "grad_norm": round(float(grad_norm), 6),
                    "temperature": round(float(self.model.temperature.detach()), 6),
                }
                bar.update(1)
                bar.set_postfix(loss=f"{running_loss:.3f}", acc=f"{running_acc:.3f}")

                stop = False
                if self.eval_sampler is not None and (step % args.eval_steps == 0 or step == args.num_episodes):
                    metrics = self.evaluate()
                    record.update(metrics)
                    bar.write(
                        f"step {step}: eval_accuracy {metrics['eval_accuracy']:.4f} "
                        f"(± {metrics['eval_accuracy_ci95']:.4f}), eval_loss {metrics['eval_loss']:.4f}",
                        file=sys.stderr,
                    )
                    if best_metric is None or metrics["eval_accuracy"] > best_metric:
                        best_metric, best_step, bad_evals = metrics["eval_accuracy"], step, 0
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                    else:
                        bad_evals += 1
                        if args.early_stopping_patience is not None and bad_evals >= args.early_stopping_patience:
                            record["early_stopped"] = True
                            stop = True
                self.log_history.append(record)
                if log_file is not None:
                    log_file.write(json.dumps(record) + "\n")
                    log_file.flush()
                if stop:
                    bar.write(f"early stopping at step {step}: no improvement in {bad_evals} evaluations", file=sys.stderr)
                    break
            completed = True
        finally:
            bar.close()
            if log_file is not None:
                log_file.commit() if completed else log_file.discard()

        if best_state is not None and args.load_best_model_at_end:
            self.model.load_state_dict(best_state)
        self.model.eval()
        self.model.reset_backend()  # the weights changed: ONNX exports are redone on next use
        if args.fit_support_at_end:
            self.model.fit(self.train_texts, self.train_labels, batch_size=args.batch_size)
        return TrainOutput(
            global_step=step,
            training_loss=total_loss / max(1, step),
            best_metric=best_metric,
            best_step=best_step,
            train_runtime=time.perf_counter() - start,
            log_history=copy.deepcopy(self.log_history),
        )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload the trained model (with its model card) to the Hub: MatchingNetwork.push_to_hub."""
        return self.model.push_to_hub(repo_id, **kwargs)
