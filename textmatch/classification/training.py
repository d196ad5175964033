"""Episodic training of a MatchingNetwork (Vinyals et al. 2016, section 2.2), on Hugging Face's
Trainer (textmatch.core.trainer_base).

Each step samples an N-way K-shot episode, computes log P(y | x, S) of eq. 1 for its queries
and minimises the negative log-likelihood of their labels. The main path is fine-tuning on the
user's own few-shot support set, with episodes drawn from it; with an `eval_dataset` (other
examples, or other classes for meta-training) the Trainer validates on fixed episodes
(`fewshot.evaluate_episodes`: each validation text encoded once), keeps the best weights and
stops early.

Episode i depends only on (seed, i). A step trains on per_device_train_batch_size episodes per
process, times gradient_accumulation_steps; under torchrun / accelerate launch process r
trains on episodes r, r + W, ... of each step's block, and DDP averages the gradients, so W
processes train as one process with W times the accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable

import torch
from transformers.trainer_callback import ExportableState, TrainerCallback

from ..core.card_data import infer_dataset_name
from ..core.episodes import EpisodeSampler
from ..core.modeling import MatchingNetwork, read_weights, tokenize_chunks
from ..core.optimization import OptimizationArguments, TrainOutput, is_int
from ..core.trainer_base import MatchingTrainerBase
from ..data.loading import as_text_label_lists
from ..errors import TextMatchError
from .fewshot import evaluate_episodes

BEST_WEIGHTS_NAME = "best_model.safetensors"  # in a checkpoint-N folder: the best weights so far


@dataclass
class TrainingArguments(OptimizationArguments):
    """Settings of episodic training: Hugging Face's TrainingArguments (see
    `OptimizationArguments` for textmatch's defaults) and these fields.

    num_episodes: optimizer steps (it sets Hugging Face's max_steps).
    n_way / k_shot / q_query: the episode shape; left at None they are chosen from the data by
        `episode_shape`: n_way = min(64, classes) and about 128 texts per episode (64-way 1 + 1
        for 77 classes, 12-way 5 + 5 for 12 classes of 10); values given are checked against
        the data.
    per_device_train_batch_size: episodes per step and process (default 1); their losses are
        averaged.
    label_smoothing_factor: label smoothing of the matching NLL (Hugging Face's field).
    eval_steps: validate every this many steps when the trainer has an eval_dataset.
    eval_episodes: validation episodes per validation (fixed: the same episodes every time).
    early_stopping_patience: stop after this many validations without a new best accuracy
        (None: never stop early).
    keep_best_model: at the end, restore the weights of the best validation (kept in memory;
        Hugging Face's load_best_model_at_end would need checkpoint folders).
    fit_support_at_end: store the training data as the model's support set after training.
    """

    num_episodes: int = 150
    n_way: int | None = None
    k_shot: int | None = None
    q_query: int | None = None
    per_device_train_batch_size: int = 1
    eval_steps: float | None = 25
    eval_episodes: int = 50
    early_stopping_patience: int | None = 4
    keep_best_model: bool = True
    fit_support_at_end: bool = True

    def __post_init__(self) -> None:
        def optional_int(value: Any, low: int) -> bool:
            return value is None or (is_int(value) and value >= low)

        self.validate([
            ("num_episodes", is_int(self.num_episodes) and self.num_episodes >= 1, "an integer >= 1"),
            ("n_way", optional_int(self.n_way, 2), "an integer >= 2 or None"),
            ("k_shot", optional_int(self.k_shot, 1), "an integer >= 1 or None"),
            ("q_query", optional_int(self.q_query, 1), "an integer >= 1 or None"),
            ("label_smoothing_factor", 0 <= self.label_smoothing_factor < 1, "in [0, 1)"),
            ("eval_steps", is_int(self.eval_steps) and self.eval_steps >= 1, "an integer >= 1"),
            ("eval_episodes", is_int(self.eval_episodes) and self.eval_episodes >= 1, "an integer >= 1"),
            ("early_stopping_patience", optional_int(self.early_stopping_patience, 1), "an integer >= 1 or None"),
            ("per_device_train_batch_size", is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 1, "an integer >= 1"),
        ])
        if self.max_steps not in (-1, self.num_episodes):
            raise TextMatchError(
                f"TrainingArguments: set the number of steps with num_episodes (got max_steps={self.max_steps} "
                f"and num_episodes={self.num_episodes})"
            )
        self.max_steps = self.num_episodes
        super().__post_init__()


RECIPE_FIELDS = ("num_episodes", "n_way", "k_shot", "q_query", "label_smoothing_factor", "head_learning_rate")

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


class EpisodeDataset(torch.utils.data.Dataset):
    """Item i = episode i of the sampler (it depends only on the sampler's seed and i)."""

    def __init__(self, sampler: EpisodeSampler, length: int) -> None:
        self.sampler = sampler
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.sampler.episode(index)


class EpisodeCollator:
    """Tokenises a list of episodes: support texts with g's tokenizer, queries with f's, each
    sorted by length and cut into chunks of `encode_batch_size` (as MatchingNetwork.embed does)."""

    def __init__(self, model: MatchingNetwork, encode_batch_size: int, label_smoothing: float = 0.0) -> None:
        self.support_encoder = model.support_encoder
        self.query_encoder = model.query_encoder
        self.encode_batch_size = encode_batch_size
        self.label_smoothing = label_smoothing

    def __call__(self, episodes: list[Any]) -> dict[str, Any]:
        """-> the keyword arguments of MatchingNetwork.forward (objectives.episodic_loss)."""
        return {"objective": "episodes", "label_smoothing": self.label_smoothing, "episodes": [
            {
                "support": tokenize_chunks(self.support_encoder, e.support_texts, self.encode_batch_size),
                "query": tokenize_chunks(self.query_encoder, e.query_texts, self.encode_batch_size),
                "support_labels": torch.tensor(e.support_labels, dtype=torch.long),  # (n_way * k,)
                "query_labels": torch.tensor(e.query_labels, dtype=torch.long),  # (n_way * q,)
                "n_way": e.n_way,
            }
            for e in episodes
        ]}


class EpisodicEarlyStoppingCallback(TrainerCallback, ExportableState):
    """Tracks the best validation accuracy: keeps its weights in memory (and, when checkpoints
    are written, in each checkpoint as best_model.safetensors, so a resumed run knows them),
    stops after `patience` validations without a new best, and at the end restores the best
    weights when `keep_best`."""

    def __init__(self, model: MatchingNetwork, patience: int | None, keep_best: bool) -> None:
        self.model = model
        self.patience = patience
        self.keep_best = keep_best
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def state(self) -> dict[str, Any]:
        return {"args": {"patience": self.patience, "keep_best": self.keep_best},
                "attributes": {"best_metric": self.best_metric, "best_step": self.best_step, "bad_evals": self.bad_evals}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.best_metric, self.best_step, self.bad_evals, self.best_state = None, None, 0, None
        saved = state.stateful_callbacks.get(type(self).__name__) if state.global_step > 0 else None
        if isinstance(saved, dict) and saved.get("attributes"):  # resumed from a checkpoint
            attrs = saved["attributes"]
            self.best_metric, self.best_step, self.bad_evals = attrs["best_metric"], attrs["best_step"], attrs["bad_evals"]
            best_file = Path(args.output_dir) / f"checkpoint-{state.global_step}" / BEST_WEIGHTS_NAME
            if self.best_step is not None and best_file.is_file():
                self.best_state = read_weights(best_file)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        accuracy = (metrics or {}).get("eval_accuracy")
        if accuracy is None:
            return
        if self.best_metric is None or accuracy > self.best_metric:
            self.best_metric, self.best_step, self.bad_evals = accuracy, state.global_step, 0
            self.best_state = {k: v.clone() for k, v in self.model.weights_state().items()}  # a CPU copy
        else:
            self.bad_evals += 1
            if self.patience is not None and self.bad_evals >= self.patience:
                control.should_training_stop = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.best_state is not None and state.is_world_process_zero and folder.is_dir():
            self.model.save_weights(folder / BEST_WEIGHTS_NAME, self.best_state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.keep_best and self.best_state is not None:
            self.model.load_weights_state(self.best_state)


class Trainer(MatchingTrainerBase):
    """Episodic trainer on Hugging Face's Trainer, named and shaped like setfit's.

    train_dataset / eval_dataset: `datasets.Dataset` with text and label columns, or
    (texts, labels) pairs. train_dataset_name: what the model card names the training data
    (default: a Hub dataset's own name, from `train_dataset.info.dataset_name`).
    callbacks: more Hugging Face TrainerCallbacks.
    """

    progress_unit = "episode"

    def __init__(
        self,
        model: MatchingNetwork,
        args: TrainingArguments | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        text_column: str = "text",
        label_column: str = "label",
        train_dataset_name: str | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise TextMatchError(f"Trainer needs a MatchingNetwork, got {type(model).__name__}")
        if train_dataset is None:
            raise TextMatchError("Trainer needs a train_dataset (a datasets.Dataset or a (texts, labels) pair)")
        args = args if args is not None else TrainingArguments()
        if not isinstance(args, TrainingArguments):
            raise TextMatchError(f"Trainer needs textmatch.TrainingArguments, got {type(args).__name__}")
        self.train_texts, self.train_labels = as_text_label_lists(train_dataset, text_column, label_column)
        n_way, k_shot, q_query = episode_shape(self.train_labels, args.n_way, args.k_shot, args.q_query)
        self.train_sampler = EpisodeSampler((self.train_texts, self.train_labels), n_way, k_shot, q_query, seed=args.seed)
        self.eval_data: tuple[list[str], list[Hashable]] | None = None
        self.eval_shape: tuple[int, int, int] | None = None
        if eval_dataset is not None:
            self.eval_data = as_text_label_lists(eval_dataset, text_column, label_column)
            e_way, e_k, e_q = episode_shape(self.eval_data[1], None, args.k_shot, args.q_query)
            self.eval_shape = (min(n_way, e_way), e_k, e_q)
            EpisodeSampler(self.eval_data, *self.eval_shape, seed=args.seed)  # the validation data fits its shape
        self.train_dataset_name = train_dataset_name or infer_dataset_name(train_dataset)
        own = self.own_copy(args, eval_strategy="steps" if self.eval_data is not None else "no")
        per_step = own.per_device_train_batch_size * own.gradient_accumulation_steps * own.world_size
        card_args = own.recipe(RECIPE_FIELDS)
        card_args.update(n_way=n_way, k_shot=k_shot, q_query=q_query)
        self.early_stopping = EpisodicEarlyStoppingCallback(model, own.early_stopping_patience, own.keep_best_model)
        super().__init__(
            model,
            own,
            EpisodeDataset(self.train_sampler, own.num_episodes * per_step),
            EpisodeCollator(model, own.encode_batch_size, own.label_smoothing_factor),
            card_args,
            eval_dataset=self.eval_data,
            dataset_name=self.train_dataset_name,
            callbacks=[self.early_stopping, *(callbacks or [])],
        )

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Mean query accuracy and loss over `args.eval_episodes` fixed validation episodes,
        with a 95% CI (`fewshot.evaluate_episodes`: each validation text is encoded once)."""
        if self.eval_data is None or self.eval_shape is None:
            raise TextMatchError("no eval_dataset was given to the Trainer")
        n_way, k_shot, q_query = self.eval_shape
        result = evaluate_episodes(
            self.matching_model, self.eval_data, n_way, k_shot, q_query,
            num_episodes=self.args.eval_episodes, seed=self.args.seed + 1_000_003, batch_size=self.args.encode_batch_size,
        )
        metrics = {
            f"{metric_key_prefix}_accuracy": result.accuracy,
            f"{metric_key_prefix}_accuracy_ci95": result.ci95,
            f"{metric_key_prefix}_loss": result.loss,
        }
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # -- training ---------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> TrainOutput:  # type: ignore[override]
        """Train; resume_from_checkpoint: True for the last checkpoint-N of output_dir, or a
        checkpoint folder (trusted local state: never one you downloaded)."""
        if kwargs:
            raise TextMatchError(f"Trainer.train takes resume_from_checkpoint only, got {sorted(kwargs)}")
        self.matching_model.train()
        output, runtime = self.run(resume_from_checkpoint)
        if self.args.fit_support_at_end:
            self.matching_model.fit(self.train_texts, self.train_labels, batch_size=self.args.encode_batch_size)
        es = self.early_stopping
        return self.train_output(output, runtime, es.best_metric, es.best_step)
