"""What both trainers (episodic classification, retrieval) share: their common arguments, the
optimizer, the learning-rate schedule, the device, seeding and the result record."""

from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import ConfigMixin
from ..errors import TextMatchError
from .modeling import MatchingNetwork

DEVICES = ("auto", "cpu", "cuda", "mps")  # and "cuda:<i>"


@dataclass
class OptimizationArguments(ConfigMixin):
    """The arguments both trainers share. AdamW: the encoders at `learning_rate`, the rest (FCE
    LSTMs, a learned temperature) at `head_learning_rate`, weight decay on matrices only; the
    rate rises linearly over the first `warmup_ratio` of the steps, then falls linearly to 0;
    gradients are clipped at `max_grad_norm`. `device`: "auto" (a GPU when there is one),
    "cpu", "cuda[:i]" or "mps". Subclasses add their own fields and checks (`validate`)."""

    output_dir: str | None = None
    learning_rate: float = 3e-5
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"
    show_progress_bar: bool = True

    def validate(self, checks: list[tuple[str, bool, str]]) -> None:
        """Check the shared fields and the subclass's `checks` ((field, ok, what it must be));
        the first failure is a TextMatchError naming the field, its value and the rule."""
        def finite(value: Any) -> bool:
            return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)

        shared = [
            ("learning_rate", finite(self.learning_rate) and self.learning_rate > 0, "a finite number > 0"),
            ("head_learning_rate", finite(self.head_learning_rate) and self.head_learning_rate > 0, "a finite number > 0"),
            ("weight_decay", finite(self.weight_decay) and self.weight_decay >= 0, "a finite number >= 0"),
            ("warmup_ratio", finite(self.warmup_ratio) and 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_grad_norm", finite(self.max_grad_norm) and self.max_grad_norm > 0, "a finite number > 0"),
            ("seed", is_int(self.seed) and self.seed >= 0, "an integer >= 0"),
        ]
        for name, ok, expected in [*shared, *checks]:
            if not ok:
                raise TextMatchError(f"{type(self).__name__}.{name} must be {expected}, got {getattr(self, name)!r}")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise TextMatchError(f"device must be 'auto', 'cpu', 'cuda[:i]' or 'mps', got {self.device!r}")


def is_int(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass
class TrainOutput:
    global_step: int
    training_loss: float
    best_metric: float | None
    best_step: int | None
    train_runtime: float
    log_history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TextMatchError(f"device {device!r} asked for but no CUDA GPU is available; use device='cpu'")
    return torch.device(device)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: MatchingNetwork, learning_rate: float, head_learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW: encoder weights at `learning_rate`, the rest (FCE LSTMs, a learned temperature) at
    `head_learning_rate`; weight decay on matrices only, not on biases, norms or scalars."""
    encoder_ids = {id(p) for enc in (model.query_encoder, model.support_encoder) for p in enc.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault((id(p) in encoder_ids, p.ndim >= 2), []).append(p)
    if not groups:
        raise TextMatchError("the model has no trainable parameters (all have requires_grad=False)")
    return torch.optim.AdamW([
        {
            "params": params,
            "lr": learning_rate if is_encoder else head_learning_rate,
            "weight_decay": weight_decay if decays else 0.0,
        }
        for (is_encoder, decays), params in groups.items()
    ])


def linear_warmup_decay(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning-rate factor rising linearly over the first `warmup_ratio` of the steps, then
    falling linearly to 0 at `total_steps`."""
    warmup = int(round(warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(
    loss: torch.Tensor, parameters: Any, optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float
) -> float:
    """One update: clear the gradients, back-propagate `loss`, clip the gradient norm of
    `parameters` at `max_grad_norm`, step the optimizer and the schedule. Returns the gradient
    norm before clipping."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()
    scheduler.step()
    return float(grad_norm)
