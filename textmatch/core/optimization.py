"""What both trainers (episodic classification, retrieval) share: their common arguments (the
Hugging Face `TrainingArguments`, with textmatch's defaults and fields), the optimizer's
parameter groups, the `--device` mapping and the result record."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import transformers

from ..errors import TextMatchError
from .modeling import MatchingNetwork

DEVICES = ("auto", "cpu", "cuda")  # what `textmatch train --device` takes

# The Hugging Face arguments that say how a model was trained (the model card records them
# beside textmatch's own fields); the other HF fields say where and how a run happened.
RECIPE_HF_ARGS = (
    "learning_rate", "weight_decay", "warmup_steps", "lr_scheduler_type", "max_grad_norm", "seed",
    "per_device_train_batch_size", "gradient_accumulation_steps", "optim", "fp16", "bf16",
)


FREEZING_FIELDS = ("frozen_layers", "freeze_embeddings")  # textmatch's own, recorded by every trainer


@dataclass
class OptimizationArguments(transformers.TrainingArguments):
    """The arguments both trainers share: Hugging Face `TrainingArguments` (every field of it
    works: `gradient_accumulation_steps`, `fp16`/`bf16`, `report_to="tensorboard"`,
    `save_strategy="steps"` with `save_steps`, `lr_scheduler_type`, ...), with textmatch's
    defaults and fields of its own:

    head_learning_rate: the rate of the parameters outside the encoders (FCE LSTMs, a learned
        temperature); the encoders train at `learning_rate`. Weight decay applies to matrices
        only, not to biases, norms or scalars.
    encode_batch_size: texts per encoder forward pass (an episode or a batch of documents is
        encoded in length-sorted chunks of this size).
    show_progress_bar: setfit's name for `not disable_tqdm`.
    frozen_layers: freeze the embeddings and the lowest N layers of the encoders while
        training (0, the default, trains them all); the backward pass then stops at the lowest
        trained layer, which saves time (textmatch.core.freezing).
    freeze_embeddings: freeze the input embeddings only.

    Defaults that differ from Hugging Face's: learning_rate 3e-5, weight_decay 0.01,
    warmup_steps 0.1 (a ratio: the rate rises linearly over the first 10% of the steps, then
    falls linearly to 0), logging_steps 1 (one line of `training_log.jsonl` per step),
    save_strategy "no" (resume state is written only when asked for), report_to "none",
    dataloader_pin_memory False (a batch is a few token tensors).

    output_dir is the run folder: `training_log.jsonl` and, with a save_strategy, the
    Trainer's `checkpoint-N/` resume folders. It is not the model folder: save the trained
    model with `model.save_pretrained(folder)` or `trainer.save_model(folder)` (safetensors
    only). A `checkpoint-N/` folder holds optimizer, scheduler and RNG state pickled by torch:
    it is trusted local state, for `trainer.train(resume_from_checkpoint=...)` on this
    machine only; never resume from a folder you downloaded.
    """

    output_dir: str | None = None
    learning_rate: float = 3e-5
    weight_decay: float = 0.01
    warmup_steps: float = 0.1
    logging_steps: float = 1
    save_strategy: str = "no"
    report_to: Any = "none"
    dataloader_pin_memory: bool = False
    head_learning_rate: float = field(
        default=1e-3, metadata={"help": "learning rate of the parameters outside the encoders (FCE, temperature)"}
    )
    encode_batch_size: int = field(default=64, metadata={"help": "texts per encoder forward pass"})
    show_progress_bar: bool | None = field(
        default=None, metadata={"help": "setfit's name for `not disable_tqdm`; when given it sets disable_tqdm"}
    )
    frozen_layers: int = field(default=0, metadata={"help": "freeze the embeddings and the lowest N encoder layers"})
    freeze_embeddings: bool = field(default=False, metadata={"help": "freeze the encoders' input embeddings"})

    def __post_init__(self) -> None:
        self.writes_log = self.output_dir is not None  # library use without output_dir writes no files
        if self.output_dir is None and str(getattr(self.save_strategy, "value", self.save_strategy)) != "no":
            raise TextMatchError(
                f"{type(self).__name__}: save_strategy={self.save_strategy!r} writes checkpoints: give output_dir "
                "(the run folder they go to)"
            )
        if self.show_progress_bar is not None:
            self.disable_tqdm = not self.show_progress_bar
        if self.push_to_hub:
            raise TextMatchError(
                f"{type(self).__name__}.push_to_hub: push the trained model with model.push_to_hub(repo_id) "
                "or `textmatch push` (a textmatch model folder, with its model card)"
            )
        try:
            super().__post_init__()
        except ValueError as error:  # Hugging Face's own checks, reported as textmatch reports errors
            raise TextMatchError(f"{type(self).__name__}: {error}") from None
        if self.load_best_model_at_end:
            raise TextMatchError(
                f"{type(self).__name__}.load_best_model_at_end reloads weights from checkpoint folders; textmatch "
                "keeps the best validated weights in memory instead: use keep_best_model=True"
            )

    def epoch_checks(self) -> list[tuple[str, bool, str]]:
        """The `validate` checks of trainers that run for num_train_epochs or max_steps."""
        epochs = self.num_train_epochs
        return [
            ("num_train_epochs", isinstance(epochs, numbers.Real) and not isinstance(epochs, bool)
             and math.isfinite(epochs) and epochs > 0, "a finite number > 0"),
            ("max_steps", is_int(self.max_steps) and (self.max_steps == -1 or self.max_steps >= 1),
             "an integer >= 1, or -1 to train for num_train_epochs"),
        ]

    def validate(self, checks: list[tuple[str, bool, str]]) -> None:
        """Check the shared fields and the subclass's `checks` ((field, ok, what it must be));
        the first failure is a TextMatchError naming the field, its value and the rule."""
        def finite(value: Any) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        shared = [
            ("learning_rate", finite(self.learning_rate) and self.learning_rate > 0, "a finite number > 0"),
            ("head_learning_rate", finite(self.head_learning_rate) and self.head_learning_rate > 0, "a finite number > 0"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("warmup_steps", finite(self.warmup_steps) and self.warmup_steps >= 0, "a ratio in [0, 1) or a number of steps"),
            ("max_grad_norm", finite(self.max_grad_norm) and self.max_grad_norm > 0, "a finite number > 0"),
            ("seed", is_int(self.seed) and self.seed >= 0, "an integer >= 0"),
            ("encode_batch_size", is_int(self.encode_batch_size) and self.encode_batch_size >= 1, "an integer >= 1"),
            ("frozen_layers", is_int(self.frozen_layers) and self.frozen_layers >= 0, "an integer >= 0"),
            ("freeze_embeddings", isinstance(self.freeze_embeddings, bool), "True or False"),
            ("gradient_accumulation_steps", is_int(self.gradient_accumulation_steps) and self.gradient_accumulation_steps >= 1, "an integer >= 1"),
        ]
        for name, ok, expected in [*shared, *checks]:
            if not ok:
                raise TextMatchError(f"{type(self).__name__}.{name} must be {expected}, got {getattr(self, name)!r}")

    def recipe(self, own_fields: tuple[str, ...]) -> dict[str, Any]:
        """The arguments that say how a model was trained: `own_fields`, RECIPE_HF_ARGS and
        FREEZING_FIELDS, for the model card and the CLI's summary."""
        out: dict[str, Any] = {}
        for name in (*own_fields, *RECIPE_HF_ARGS, *FREEZING_FIELDS):
            value = getattr(self, name)
            out[name] = value.value if hasattr(value, "value") else value
        return out


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def cpu_flag(device: str | None) -> bool:
    """`use_cpu` of the Hugging Face arguments for a `--device` value: "cpu" -> True; "auto",
    "cuda" (or None) -> False (a GPU when there is one; under torchrun or accelerate launch the
    launcher's GPU). A single GPU other than the first is chosen with CUDA_VISIBLE_DEVICES."""
    if device in (None, "auto", "cuda"):
        if device == "cuda" and not torch.cuda.is_available():
            raise TextMatchError("device 'cuda' asked for but no CUDA GPU is available; use --device cpu")
        return False
    if device == "cpu":
        return True
    if str(device).startswith("cuda:"):
        raise TextMatchError(
            f"training picks its GPU from the launcher, not from {device!r}: run with "
            f"CUDA_VISIBLE_DEVICES={str(device)[5:]} (one GPU) or under torchrun / accelerate launch (several)"
        )
    raise TextMatchError(f"device for training must be {', '.join(repr(d) for d in DEVICES)}, got {device!r}")


@dataclass
class TrainOutput:
    global_step: int
    training_loss: float
    best_metric: float | None
    best_step: int | None
    train_runtime: float
    log_history: list[dict[str, Any]] = field(default_factory=list)


def parameter_groups(model: MatchingNetwork, learning_rate: float, head_learning_rate: float, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: encoder weights at `learning_rate`, the rest (FCE LSTMs, a learned
    temperature) at `head_learning_rate`; weight decay on matrices only, not on biases, norms
    or scalars."""
    encoder_ids = {id(p) for enc in (model.query_encoder, model.support_encoder) for p in enc.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in encoder_ids, p.ndim >= 2), []).append(p)
    if not groups:
        raise TextMatchError("the model has no trainable parameters (all have requires_grad=False)")
    return [
        {
            "params": params,
            "lr": learning_rate if is_encoder else head_learning_rate,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_encoder, decays), params in groups.items()
    ]


def make_optimizer(model: MatchingNetwork, learning_rate: float, head_learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW over `parameter_groups`."""
    return torch.optim.AdamW(parameter_groups(model, learning_rate, head_learning_rate, weight_decay))
