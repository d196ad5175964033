"""What both trainers (episodic classification, retrieval) share: the optimizer, the
learning-rate schedule, the device, seeding and the result record."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import TextMatchError
from .modeling import MatchingNetwork


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
