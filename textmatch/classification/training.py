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

Meta-training over several datasets: `train_dataset` as a dict {source name: dataset}. Each
episode comes from one source, in that source's own episode shape, the source drawn with
probability proportional to sqrt(its texts) (`MultiSourceEpisodeSampler`); the model is
saved without a support set, for fine-tuning on the user's few-shot data afterwards.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from transformers.trainer_callback import ExportableState, TrainerCallback

from ..core.card_data import infer_dataset_name
from ..core.episodes import EpisodeSampler, MultiSourceEpisodeSampler
from ..core.modeling import MatchingNetwork, read_weights, tokenize_chunks
from ..core.optimization import OptimizationArguments, TrainOutput, is_int
from ..core.trainer_base import MatchingTrainerBase
from ..data.loading import as_text_label_lists
from ..data.validation import sorted_classes
from ..errors import TextMatchError
from .fewshot import evaluate_episodes

BEST_WEIGHTS_NAME = "best_model.safetensors"  # in a checkpoint-N folder: the best weights so far


@dataclass
class TrainingArguments(OptimizationArguments):
    """Settings of episodic training: Hugging Face's TrainingArguments (see
    `OptimizationArguments` for textmatch's defaults) and these fields.

    num_episodes: optimizer steps (it sets Hugging Face's max_steps); None (the default): from
        the data, `default_episodes`: `episode_passes` passes over the training texts, between
        30 and 100 episodes (400 when meta-training on several sources).
    episode_passes: with num_episodes=None, how many times the episodes go over the training
        texts, on average (default 15).
    n_way / k_shot / q_query: the episode shape; left at None they are chosen from the data by
        `episode_shape`: n_way = min(64, classes) and about 128 texts per episode (64-way 1 + 1
        for 77 classes, 12-way 5 + 5 for 12 classes of 10); values given are checked against
        the data. With several training sources each source gets its own shape, n_way capped
        at its class count.
    per_device_train_batch_size: episodes per step and process (default 1); their losses are
        averaged.
    label_smoothing_factor: label smoothing of the matching NLL (Hugging Face's field).
    eval_steps: validate every this many steps when the trainer has an eval_dataset.
    eval_episodes: validation episodes per validation (fixed: the same episodes every time).
    early_stopping_patience: stop after this many validations without a new best accuracy
        (None: never stop early).
    keep_best_model: at the end, restore the weights of the best validation (kept in memory;
        Hugging Face's load_best_model_at_end would need checkpoint folders).
    fit_support_at_end: store the training data as the model's support set after training
        (not with several training sources: a meta-trained model is saved without one).
    """

    num_episodes: int | None = None
    episode_passes: float = 15.0
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
            ("num_episodes", optional_int(self.num_episodes, 1), "an integer >= 1 or None (from the data)"),
            ("episode_passes", isinstance(self.episode_passes, (int, float)) and not isinstance(self.episode_passes, bool)
             and 0 < self.episode_passes < math.inf, "a positive number"),
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
        self.max_steps = -1 if self.num_episodes is None else self.num_episodes  # None: the Trainer sets it
        super().__post_init__()


# The model settings of the few-shot recipe that `textmatch train` and `pretrain` apply unless
# told otherwise, chosen on the valid splits of BANKING77 and CLINC150 (results/recipe_search.md):
# the logistic-regression head read together with eq. 1, and class names as support examples.
# In Python: MatchingNetwork.from_pretrained(name, **RECIPE_MODEL_SETTINGS).
RECIPE_MODEL_SETTINGS: dict[str, Any] = {"head": "ensemble", "label_names": True}

RECIPE_FIELDS = ("num_episodes", "episode_passes", "n_way", "k_shot", "q_query", "label_smoothing_factor", "head_learning_rate")

MAX_WAY = 64  # classes per episode by default, at most
MIN_EPISODES, MAX_EPISODES = 30, 100  # bounds of default_episodes
META_EPISODES = 400  # the default number of episodes when meta-training on several sources


def default_episodes(n_texts: int, texts_per_step: int, passes: float) -> int:
    """Optimizer steps for `passes` passes over `n_texts` training texts at `texts_per_step`
    texts a step (episode texts x episodes per step), between MIN_EPISODES and MAX_EPISODES.

    On the valid splits the accuracy of 64-way 1 + 1 fine-tuning stopped rising after about
    100 episodes (15 passes) on BANKING77 10-shot and CLINC150 5-shot (results/recipe_search.md);
    small data (the demo's 12 intents of 10) needs far fewer than a fixed 150, large data no
    more than 100.
    """
    wanted = math.ceil(passes * n_texts / max(1, texts_per_step))
    return int(min(MAX_EPISODES, max(MIN_EPISODES, wanted)))
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


# -- several sources (meta-training over datasets) ---------------------------------------------
META_OBJECTIVE = "meta-training"  # the recipe's "objective" when training on several sources


def is_column(value: Any) -> bool:
    """A flat sequence of values (a column), not a (texts, labels) pair nor a dataset."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    nested = (list, tuple, np.ndarray)
    return isinstance(value, nested) and (not value or any(not isinstance(x, nested) for x in value))


def is_source_dict(data: Any) -> bool:
    """Whether `data` is a dict of sources {name: dataset or (texts, labels)} rather than one
    dataset given as a dict of columns {"text": [...], "label": [...]}: a dict is read as
    columns when one of its values is a flat sequence. A `datasets.DatasetDict` (the splits of
    one dataset) is not a dict of sources."""
    import datasets

    if not isinstance(data, Mapping) or isinstance(data, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return False
    return not any(is_column(v) for v in data.values())


def read_sources(
    data: Mapping[str, Any], text_column: str, label_column: str, what: str
) -> dict[str, tuple[list[str], list[Hashable]]]:
    """{name: (texts, labels)} of a dict of sources (`as_text_label_lists` on each); errors
    name the source."""
    if not data:
        raise TextMatchError(
            f"{what} is an empty dict: give at least one source, e.g. {{'banking77': dataset, 'clinc150': (texts, labels)}}"
        )
    out: dict[str, tuple[list[str], list[Hashable]]] = {}
    for name, source in data.items():
        if not isinstance(name, str) or not name.strip():
            raise TextMatchError(f"{what}: source names must be non-empty strings, got {name!r}; name each dataset")
        try:
            out[name] = as_text_label_lists(source, text_column, label_column)
        except TextMatchError as exc:
            raise TextMatchError(f"{what} source {name!r}: {exc}") from None
    return out


def source_sampler(
    name: str, data: tuple[list[str], list[Hashable]], args: TrainingArguments, seed: int, what: str
) -> EpisodeSampler:
    """The EpisodeSampler of one source, in its own `episode_shape`: a user's n_way is capped
    at the source's class count (7 classes: 7-way episodes). Classes with fewer examples than
    an episode takes from a class (k_shot + q_query, at least 2) are left out of the source's
    episodes, with a warning: public intent sets have such classes (ATIS: 1 to 3309 examples a
    class), and the rest of the source is still worth meta-training on."""
    try:
        counts = Counter(data[1])
        need = max(2, (args.k_shot or 1) + (args.q_query or 1))
        kept = [c for c in counts if counts[c] >= need]
        if len(kept) < 2:
            raise TextMatchError(
                f"{len(kept)} of its {len(counts)} classes have at least {need} examples; episodes need 2 such "
                "classes: drop the source, add examples, or lower k_shot / q_query"
            )
        if len(kept) < len(counts):
            small = sorted((c for c in counts if counts[c] < need), key=str)
            warnings.warn(
                f"{what} source {name!r}: {len(small)} of its {len(counts)} classes have fewer than {need} examples "
                f"and are left out of its episodes (e.g. {small[0]!r})",
                stacklevel=4,
            )
        n_way = min(args.n_way, len(kept)) if args.n_way is not None else None
        shape = episode_shape([y for y in data[1] if counts[y] >= need], n_way, args.k_shot, args.q_query)
        return EpisodeSampler(data, *shape, seed=seed, classes=kept)
    except TextMatchError as exc:
        raise TextMatchError(f"{what} source {name!r}: {exc}") from None


def sampler_shape(sampler: EpisodeSampler) -> dict[str, int]:
    return {"n_way": sampler.n_way, "k_shot": sampler.k_shot, "q_query": sampler.q_query}


def check_episode_widths(sampler: MultiSourceEpisodeSampler, batch: int) -> None:
    """Episodes batched together must have one width (their logits are concatenated)."""
    widths = {name: s.n_way for name, s in sampler.samplers.items()}
    if batch > 1 and len(set(widths.values())) > 1:
        listed = ", ".join(f"{name}: {n}-way" for name, n in widths.items())
        raise TextMatchError(
            f"per_device_train_batch_size={batch} would batch episodes of different widths ({listed}); "
            "keep per_device_train_batch_size=1 and raise gradient_accumulation_steps instead "
            "(the same episodes per optimizer step), or set an n_way that every source reaches"
        )


def with_label_examples(model: MatchingNetwork, texts: list[str], labels: list[Hashable]) -> tuple[list[str], list[Hashable]]:
    """The episodes' data: with `model.config.label_names`, each class's name joins its
    examples (one more text per class), as it joins the support set at prediction."""
    classes = sorted_classes(labels)
    name_texts, name_ids = model.label_examples(classes)
    return texts + name_texts, labels + [classes[j] for j in name_ids]


class EpisodeDataset(torch.utils.data.Dataset):
    """Item i = episode i of the sampler (it depends only on the sampler's seed and i)."""

    def __init__(self, sampler: EpisodeSampler | MultiSourceEpisodeSampler, length: int) -> None:
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

    Meta-training: `train_dataset` as a dict {source name: dataset or (texts, labels)}. Each
    episode comes from one source (`MultiSourceEpisodeSampler`: sources drawn in proportion to
    sqrt(texts)), in the source's own `episode_shape` (args.n_way capped at its class count);
    the card names the data "A + B" and records objective "meta-training", the sources, their
    episode shapes and probabilities. fit_support_at_end stores no support set (a support set
    the model already had is re-encoded with the new weights, and a warning says so).
    per_device_train_batch_size > 1 needs sources of one episode width. `eval_dataset` may be
    a dict of sources too: each is validated on its own episodes (never mixed with another
    source's classes) and eval_accuracy is the mean over sources (each source weighs the same),
    also logged per source as eval_<source>_accuracy.
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
        self.train_sources: dict[str, tuple[list[str], list[Hashable]]] | None = None  # meta-training
        self.train_sampler: EpisodeSampler | MultiSourceEpisodeSampler
        if is_source_dict(train_dataset):
            self.train_sources = read_sources(train_dataset, text_column, label_column, "train_dataset")
            self.train_texts, self.train_labels = [], []  # no single training set: nothing to fit at the end
            self.train_sampler = MultiSourceEpisodeSampler(
                {name: source_sampler(name, with_label_examples(model, *data), args, args.seed, "train_dataset")
                 for name, data in self.train_sources.items()},
                seed=args.seed,
            )
            n_way = args.n_way  # eval episodes of one eval_dataset: capped at the user's n_way only
        else:
            self.train_texts, self.train_labels = as_text_label_lists(train_dataset, text_column, label_column)
            episode_data = with_label_examples(model, self.train_texts, self.train_labels)
            n_way, k_shot, q_query = episode_shape(episode_data[1], args.n_way, args.k_shot, args.q_query)
            self.train_sampler = EpisodeSampler(episode_data, n_way, k_shot, q_query, seed=args.seed)
        self.eval_data: tuple[list[str], list[Hashable]] | None = None
        self.eval_shape: tuple[int, int, int] | None = None
        # a dict eval_dataset: {source: ((texts, labels), its episode shape)}
        self.eval_sources: dict[str, tuple[tuple[list[str], list[Hashable]], tuple[int, int, int]]] | None = None
        if eval_dataset is not None and is_source_dict(eval_dataset):
            self.eval_sources = {}
            for name, data in read_sources(eval_dataset, text_column, label_column, "eval_dataset").items():
                sampler = source_sampler(name, data, args, args.seed, "eval_dataset")  # the data fits its shape
                self.eval_sources[name] = (data, (sampler.n_way, sampler.k_shot, sampler.q_query))
        elif eval_dataset is not None:
            self.eval_data = as_text_label_lists(eval_dataset, text_column, label_column)
            e_way, e_k, e_q = episode_shape(self.eval_data[1], None, args.k_shot, args.q_query)
            self.eval_shape = (min(n_way or e_way, e_way), e_k, e_q)
            EpisodeSampler(self.eval_data, *self.eval_shape, seed=args.seed)  # the validation data fits its shape
        if self.train_sources is not None:
            self.train_dataset_name = train_dataset_name or " + ".join(self.train_sources)
        else:
            self.train_dataset_name = train_dataset_name or infer_dataset_name(train_dataset)
        validating = self.eval_data is not None or self.eval_sources is not None
        own = self.own_copy(args, eval_strategy="steps" if validating else "no")
        per_step = own.per_device_train_batch_size * own.gradient_accumulation_steps * own.world_size
        if own.num_episodes is None:  # from the data
            if isinstance(self.train_sampler, MultiSourceEpisodeSampler):
                own.num_episodes = META_EPISODES
            else:
                texts = self.train_sampler.n_way * (self.train_sampler.k_shot + self.train_sampler.q_query)
                own.num_episodes = default_episodes(len(self.train_sampler.texts), texts * per_step, own.episode_passes)
            own.max_steps = own.num_episodes
        card_args = own.recipe(RECIPE_FIELDS)
        if isinstance(self.train_sampler, MultiSourceEpisodeSampler):
            check_episode_widths(self.train_sampler, own.per_device_train_batch_size)
            card_args = self.meta_training_recipe(self.train_sampler, card_args)
        else:
            card_args.update(n_way=n_way, k_shot=k_shot, q_query=q_query)
        self.early_stopping = EpisodicEarlyStoppingCallback(model, own.early_stopping_patience, own.keep_best_model)
        super().__init__(
            model,
            own,
            EpisodeDataset(self.train_sampler, own.num_episodes * per_step),
            EpisodeCollator(model, own.encode_batch_size, own.label_smoothing_factor),
            card_args,
            eval_dataset=self.eval_data if self.eval_sources is None else self.eval_sources,
            dataset_name=self.train_dataset_name,
            callbacks=[self.early_stopping, *(callbacks or [])],
        )

    @staticmethod
    def meta_training_recipe(sampler: MultiSourceEpisodeSampler, recipe: dict[str, Any]) -> dict[str, Any]:
        """The card's record of meta-training: objective, sources, the recipe (its n_way /
        k_shot / q_query replaced by each source's episode shape) and the source probabilities."""
        recipe = {k: v for k, v in recipe.items() if k not in ("n_way", "k_shot", "q_query")}
        return {
            "objective": META_OBJECTIVE,
            "sources": list(sampler.sources),
            **recipe,
            "episode_shapes": {name: sampler_shape(s) for name, s in sampler.samplers.items()},
            "source_probabilities": {name: round(p, 4) for name, p in sampler.probabilities.items()},
        }

    def refit_earlier_support(self) -> None:
        """After meta-training: a support set the model had before is not the training data;
        it is kept, re-encoded with the new weights (its cached g(S) would be stale)."""
        model = self.matching_model
        warnings.warn(
            f"the model had a support set of {len(model.support_texts)} examples before meta-training; it is kept, "
            "re-encoded with the meta-trained weights (fit your own few-shot data, or fine-tune with it)",
            stacklevel=3,
        )
        model.fit(list(model.support_texts), list(model.support_labels), batch_size=self.args.encode_batch_size)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Mean query accuracy and loss over `args.eval_episodes` fixed validation episodes,
        with a 95% CI (`fewshot.evaluate_episodes`: each validation text is encoded once).
        With a dict eval_dataset: `evaluate_sources`."""
        if self.eval_sources is not None:
            metrics = self.evaluate_sources(metric_key_prefix)
        elif self.eval_data is None or self.eval_shape is None:
            raise TextMatchError("no eval_dataset was given to the Trainer")
        else:
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

    def evaluate_sources(self, prefix: str = "eval") -> dict[str, float]:
        """Validation on several sources: `args.eval_episodes` fixed episodes of each source,
        in its own shape and never mixing two sources' classes (concatenating the sources would
        make mixed episodes, easy by dataset style alone). Accuracy and loss are the means over
        sources, each source weighing the same; the CI of that mean of independent means is
        sqrt(sum of the squared per-source CIs) / number of sources. Per source:
        <prefix>_<source>_accuracy."""
        if self.eval_sources is None:
            raise TextMatchError("no eval_dataset dict of sources was given to the Trainer")
        results = {
            name: evaluate_episodes(
                self.matching_model, data, *shape, num_episodes=self.args.eval_episodes,
                seed=self.args.seed + 1_000_003, batch_size=self.args.encode_batch_size,
            )
            for name, (data, shape) in self.eval_sources.items()
        }
        n = len(results)
        metrics = {
            f"{prefix}_accuracy": sum(r.accuracy for r in results.values()) / n,
            f"{prefix}_accuracy_ci95": math.sqrt(sum(r.ci95 ** 2 for r in results.values())) / n,
            f"{prefix}_loss": sum(r.loss for r in results.values()) / n,
        }
        metrics.update({f"{prefix}_{name}_accuracy": r.accuracy for name, r in results.items()})
        return metrics

    # -- training ---------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any) -> TrainOutput:  # type: ignore[override]
        """Train; resume_from_checkpoint: True for the last checkpoint-N of output_dir, or a
        checkpoint folder (trusted local state: never one you downloaded)."""
        if kwargs:
            raise TextMatchError(f"Trainer.train takes resume_from_checkpoint only, got {sorted(kwargs)}")
        self.matching_model.train()
        output, runtime = self.run(resume_from_checkpoint)
        if self.args.fit_support_at_end and self.train_sources is None:
            self.matching_model.fit(self.train_texts, self.train_labels, batch_size=self.args.encode_batch_size)
        elif self.args.fit_support_at_end and self.matching_model.classes_:
            self.refit_earlier_support()
        es = self.early_stopping
        return self.train_output(output, runtime, es.best_metric, es.best_step)
