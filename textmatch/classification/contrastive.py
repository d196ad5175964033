"""An unsupervised contrastive stage on unlabelled in-domain text, before few-shot training, on
Hugging Face's Trainer (textmatch.core.trainer_base).

Unsupervised SimCSE (Gao et al. 2021): each text of a batch is encoded twice in train mode, so
two dropout masks give two views h_i, h'_i of it; text i's second view is its positive and the
other texts' second views are its negatives. In the words of Matching Networks (Vinyals et al.
2016) this is eq. 2 with each text its own class:

    P(i | x_i, S) = softmax_{j in batch}( cos(f'(x_i), g'(x_j)) / tau )         (eq. 2)

with tau the model's temperature (`model.temperature`; 0.05 by default, SimCSE's value), and
the loss the mean -log P(i | x_i, S) (textmatch.core.objectives.contrastive_loss). CPFT
(Zhang et al. 2021) uses this stage to adapt an encoder to a domain's intents before few-shot
fine-tuning; sentence-transformers calls it MultipleNegativesRankingLoss on (text, text) pairs.
Only f' and g' train (and a learned temperature); Full Context Embedding layers, if the model
has them, are left to the episodic stage.

Data: exact duplicate texts are dropped first (with a warning that counts them): a duplicate
in a batch would be a negative that is the same text. Epoch e (1-based) shuffles the texts
with `random.Random(f"{seed}:{e}")` and cuts them into steps_per_epoch batches of near-equal
size (see `ContrastiveTrainer.steps_per_epoch`); batch i of the run is batch
i % steps_per_epoch of epoch i // steps_per_epoch + 1, so it depends only on (seed, i), and a
resumed run trains on the batches an uninterrupted one would. Under torchrun / accelerate
launch each process trains on its own batches (process r takes batches r, r + W, ... of a
step), and a text's negatives are those of its own process's batch.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from transformers import TrainerCallback

from ..core.card_data import infer_dataset_name
from ..core.modeling import MatchingNetwork, tokenize_chunks
from ..core.optimization import OptimizationArguments, is_int
from ..core.trainer_base import EpochBatchDataset, EpochBatchTrainer
from ..data.loading import as_map_dataset, check_columns, column_values
from ..data.validation import as_list, validate_texts
from ..errors import TextMatchError


@dataclass
class ContrastiveArguments(OptimizationArguments):
    """Settings of the contrastive stage: Hugging Face's TrainingArguments (see
    `OptimizationArguments` for textmatch's defaults and fields) and these fields.

    per_device_train_batch_size: texts per batch and process (default 64); each text's
        negatives are the batch's other texts, so larger batches give more of them. A value
        larger than the number of distinct texts is clipped to it, with a warning.
    num_train_epochs: passes over the texts (default 1; a fraction trains on the first batches
        of the last epoch).
    max_steps: when > 0, the number of optimizer steps instead (epochs repeat as needed);
        -1 (the default): from num_train_epochs.
    max_length: tokens kept per text (default 64, for short texts such as utterances; at most
        the encoder's own limit).
    learning_rate: the encoders' rate (default 3e-5, SimCSE's for BERT-base); a learned
        temperature trains at `head_learning_rate`.

    The temperature tau is the model's (`MatchingNetworkConfig.temperature`, default 0.05 as
    in SimCSE): the stage trains the embeddings the matching layer will compare. The schedule
    is Hugging Face's (`lr_scheduler_type`, default linear, with `warmup_steps` 0.1 of the
    steps); gradients clipped at `max_grad_norm`.
    """

    num_train_epochs: float = 1
    per_device_train_batch_size: int = 64
    max_length: int = 64

    def __post_init__(self) -> None:
        self.validate([
            *self.epoch_checks(),
            ("per_device_train_batch_size", is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 2,
             "an integer >= 2 (a text's negatives are the batch's other texts)"),
            ("max_length", is_int(self.max_length) and self.max_length >= 2, "an integer >= 2"),
        ])
        super().__post_init__()


# The fields of ContrastiveArguments the model card records (with OptimizationArguments'
# RECIPE_HF_ARGS: learning rate, batch size, seed, ...).
RECIPE_FIELDS = ("num_train_epochs", "max_steps", "max_length", "head_learning_rate")


@dataclass
class ContrastiveBatch:
    """One batch: its texts and the (1-based) epoch it belongs to."""

    texts: list[str]
    epoch: int = 1


def unique_texts(texts: Sequence[str]) -> tuple[list[str], int]:
    """`texts` without exact duplicates, in first-seen order, and how many were dropped."""
    unique = list(dict.fromkeys(texts))
    return unique, len(texts) - len(unique)


def batch_sizes(n_texts: int, batch_size: int) -> list[int]:
    """An epoch's batch sizes: ceil(n / B) batches of near-equal size (they differ by at most
    one), so no batch is a small remainder; never a batch of one text, which would have nothing
    to contrast (with B = 2 and an odd n a batch holds 3). n >= 2, B >= 2."""
    n_batches = max(1, min(-(-n_texts // batch_size), n_texts // 2))
    base, extra = divmod(n_texts, n_batches)
    return [base + 1 if b < extra else base for b in range(n_batches)]


def epoch_batches(texts: Sequence[str], batch_size: int, seed: int, epoch: int) -> list[ContrastiveBatch]:
    """Epoch `epoch` (1-based): the texts shuffled with random.Random(f"{seed}:{epoch}") and
    cut into `batch_sizes` batches."""
    order = list(range(len(texts)))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    batches, start = [], 0
    for size in batch_sizes(len(texts), batch_size):
        batches.append(ContrastiveBatch([texts[i] for i in order[start : start + size]], epoch))
        start += size
    return batches


@dataclass
class ContrastiveCollator:
    """Tokenises one batch once (the dataloader's batch size is 1 batch), cut at `max_length`
    tokens and sorted by length in chunks of `encode_batch_size`; the objective encodes it
    twice. When f and g are separate encoders, g's tokenizer tokenises it too."""

    model: MatchingNetwork = field(repr=False)
    max_length: int
    encode_batch_size: int

    def tokenize(self, encoder: Any, texts: Sequence[str]) -> dict[str, Any]:
        with encoder.truncated_to(self.max_length):
            return tokenize_chunks(encoder, texts, self.encode_batch_size)

    def collate(self, texts: Sequence[str]) -> dict[str, Any]:
        """-> the keyword arguments of MatchingNetwork.forward (objectives.contrastive_loss)."""
        inputs: dict[str, Any] = {"objective": "contrastive", "texts": self.tokenize(self.model.query_encoder, texts)}
        if self.model.support_encoder is not self.model.query_encoder:
            inputs["support_texts"] = self.tokenize(self.model.support_encoder, texts)
        return inputs

    def __call__(self, items: list[ContrastiveBatch]) -> dict[str, Any]:
        if len(items) != 1:
            raise TextMatchError(f"ContrastiveCollator takes one batch at a time, got {len(items)}")
        return self.collate(items[0].texts)


def read_texts(train_dataset: Any, text_column: str = "text") -> list[str]:
    """The texts of a list of strings or of a `datasets.Dataset`'s `text_column` (a label
    column, if any, is ignored), validated: strings, none missing or empty."""
    import datasets

    if isinstance(train_dataset, (datasets.Dataset, datasets.DatasetDict, datasets.IterableDataset, datasets.IterableDatasetDict)):
        ds = as_map_dataset(train_dataset, "ContrastiveTrainer")
        check_columns(ds, text_column, None)
        raw = column_values(ds, text_column)
    elif isinstance(train_dataset, Mapping):
        raise TextMatchError(
            f"the contrastive stage takes a list of texts or a datasets.Dataset, got a {type(train_dataset).__name__}; "
            f"pass its text list (e.g. data[{text_column!r}])"
        )
    else:
        raw = as_list(train_dataset, "a list of unlabelled texts or a datasets.Dataset with a text column")
    return validate_texts(raw, "unlabelled text")


def check_dropout(model: MatchingNetwork, texts: Sequence[str], max_length: int = 64) -> None:
    """Raise unless dropout makes two train-mode encodings of the same token ids differ, for f'
    and for g': without it the two views are the same vector and the stage learns only to
    spread texts apart. The model's train / eval mode is left as it was."""
    was_training = model.training
    model.train()
    try:
        with torch.no_grad():
            for role, encoder in (("f'", model.query_encoder), ("g'", model.support_encoder)):
                with encoder.truncated_to(max_length):
                    features = encoder.tokenize(list(texts))
                features = {k: v.to(encoder.device) for k, v in features.items()}
                view1, view2 = encoder(features), encoder(features)  # (n, dim) each
                if torch.equal(view1, view2):
                    raise TextMatchError(
                        f"the contrastive stage needs dropout: the encoder {role} ({type(encoder).__name__}) gave the "
                        "same vectors for the same text twice in train mode, so the two views (SimCSE) would be "
                        "identical. Use an encoder with dropout (a transformer with hidden_dropout_prob > 0, or "
                        "BiLSTMEncoder.from_tokenizer(..., dropout=0.1))"
                    )
                if encoder is model.support_encoder:  # f = g: checked once
                    break
    finally:
        model.train(was_training)


class ContrastiveTrainer(EpochBatchTrainer):
    """Adapts f' and g' of a MatchingNetwork to unlabelled in-domain texts with the unsupervised
    contrastive objective of SimCSE (see the module docstring), on Hugging Face's Trainer; run
    it before the episodic `Trainer`, which records this stage on the model card under
    "Earlier training".

    train_dataset: a list of strings, or a `datasets.Dataset` whose `text_column` holds the
    texts (a label column is ignored). train_dataset_name: what the model card names the data
    (default: a Hub dataset's own name). callbacks: more Hugging Face TrainerCallbacks.

    Raises TextMatchError for input that is empty, not strings, or has fewer than 2 distinct
    texts, and for encoders without dropout (`check_dropout`). Exact duplicates are dropped
    with a warning (`duplicates_dropped` counts them); a batch size larger than the distinct
    texts is clipped to their number, with a warning (the card records the size used).

    `train(resume_from_checkpoint=...)` returns a TrainOutput; `log_history` holds one record
    per step (as `output_dir/training_log.jsonl`): step, epoch (of the step's batch, 1-based),
    loss, accuracy (texts whose own second view is their best match), batch_size (texts in the
    batch), learning_rate, grad_norm, temperature.
    """

    log_order = ("epoch", "loss", "accuracy", "batch_size", "learning_rate", "grad_norm", "temperature")
    progress_unit = "step"

    def __init__(
        self,
        model: MatchingNetwork,
        args: ContrastiveArguments | None = None,
        train_dataset: Any = None,
        text_column: str = "text",
        train_dataset_name: str | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise TextMatchError(f"ContrastiveTrainer needs a MatchingNetwork, got {type(model).__name__}")
        if train_dataset is None:
            raise TextMatchError("ContrastiveTrainer needs a train_dataset: a list of texts or a datasets.Dataset with a text column")
        args = args if args is not None else ContrastiveArguments()
        if not isinstance(args, ContrastiveArguments):
            raise TextMatchError(f"ContrastiveTrainer needs ContrastiveArguments, got {type(args).__name__}")
        self.texts, self.duplicates_dropped = self._distinct_texts(read_texts(train_dataset, text_column))
        self.batch_size: int = self._clipped_batch_size(args.per_device_train_batch_size)
        self.seed: int = args.seed
        check_dropout(model, self.texts[:8], args.max_length)  # before Hugging Face's set_seed: no RNG left used

        per_step = args.world_size * args.gradient_accumulation_steps  # batches per optimizer step
        if args.max_steps > 0:
            total_steps = args.max_steps
        else:  # the epsilon keeps 0.3 * 10 batches at 3 steps, not 4
            total_steps = max(1, math.ceil(args.num_train_epochs * self.steps_per_epoch / per_step - 1e-9))
        own = self.own_copy(args, max_steps=total_steps, eval_strategy="no", per_device_train_batch_size=self.batch_size)
        self.collator = ContrastiveCollator(model, own.max_length, own.encode_batch_size)
        card_args = own.recipe(RECIPE_FIELDS)
        card_args.update(objective="contrastive", n_texts=len(self.texts))
        self._batch_texts: int | None = None
        super().__init__(
            model,
            own,
            EpochBatchDataset(self._draw_epoch, self.steps_per_epoch, total_steps * per_step),
            self.collator,
            card_args,
            dataset_name=train_dataset_name or infer_dataset_name(train_dataset),
            callbacks=callbacks,
        )

    # -- the training data ------------------------------------------------------------------
    @staticmethod
    def _distinct_texts(texts: list[str]) -> tuple[list[str], int]:
        if not texts:
            raise TextMatchError("the contrastive stage got no texts; give a list of unlabelled in-domain texts")
        unique, dropped = unique_texts(texts)
        if dropped:
            warnings.warn(
                f"contrastive stage: dropped {dropped} exact duplicate text(s) of {len(texts)}; "
                f"{len(unique)} distinct texts remain (a duplicate in a batch would be its own negative)",
                UserWarning,
                stacklevel=3,
            )
        if len(unique) < 2:
            raise TextMatchError(
                f"the contrastive stage needs at least 2 distinct texts (each text's negatives are the others), "
                f"got {len(unique)}"
            )
        return unique, dropped

    def _clipped_batch_size(self, batch_size: int) -> int:
        if batch_size <= len(self.texts):
            return batch_size
        warnings.warn(
            f"contrastive stage: per_device_train_batch_size {batch_size} is larger than the {len(self.texts)} "
            f"distinct texts; using batches of {len(self.texts)} (all the texts)",
            UserWarning,
            stacklevel=3,
        )
        return len(self.texts)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (`batch_sizes`): ceil(texts / batch size), fewer only where a batch
        would hold a single text. (An optimizer step takes processes * accumulation of them.)"""
        return len(batch_sizes(len(self.texts), self.batch_size))

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run (`max_steps` when > 0, else from num_train_epochs)."""
        return int(self.args.max_steps)

    def _draw_epoch(self, epoch: int) -> list[ContrastiveBatch]:
        return epoch_batches(self.texts, self.batch_size, self.seed, epoch)

    # -- the loss ---------------------------------------------------------------------------
    def batch_outputs(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The training objective on one batch of texts, as a step computes it (the collator,
        then `model(objective="contrastive", ...)`): {"loss", "logits" (B, B), "targets" (B,)}.
        Gradients flow when grad mode is on; the model's train / eval mode is left as it is
        (in eval mode the two views are equal)."""
        return self.matching_model(**self.collator.collate(list(texts)))

    def batch_loss(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean -log P(own second view | text, batch) (eq. 2, each text its own class)."""
        return self.batch_outputs(texts)["loss"]

    # -- the Trainer's hooks ----------------------------------------------------------------
    def note_batch(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        self._batch_texts = int(outputs["targets"].shape[0])

    def batch_extras(self) -> dict[str, Any]:
        """batch_size: the texts of the step's last batch."""
        return {} if self._batch_texts is None else {"batch_size": self._batch_texts}
