"""Freezing the lowest parts of the encoders while a trainer runs.

A frozen block keeps its pretrained weights and, because nothing below it needs a gradient,
autograd records none of its operations: the backward pass stops at the lowest trained layer
and the optimizer holds only the trained parameters. With all-MiniLM-L6-v2 (6 layers), freezing
the embeddings and the lowest 3 layers took 0.62 of the seconds per training episode
(results/trainer_frozen_layers.md).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn

from ..errors import TextMatchError
from .modeling import MatchingNetwork


def blocks_to_freeze(model: MatchingNetwork, frozen_layers: int, freeze_embeddings: bool) -> list[nn.Module]:
    """The modules to freeze in f' and g' (each encoder once when they are shared): the
    embeddings when `freeze_embeddings` or `frozen_layers` > 0, and the lowest `frozen_layers`
    layers. An encoder with fewer layers than asked for is an error that names its count."""
    if frozen_layers == 0 and not freeze_embeddings:
        return []
    out: list[nn.Module] = []
    depths: list[int] = []
    encoders = [model.query_encoder] if model.support_encoder is model.query_encoder else [model.query_encoder, model.support_encoder]
    for encoder in encoders:
        embeddings, layers = encoder.blocks()
        if frozen_layers > len(layers):
            raise TextMatchError(
                f"frozen_layers={frozen_layers}, but the {encoder.encoder_type} encoder has {len(layers)} layers: "
                f"freeze at most {len(layers)} (0 trains them all)"
            )
        out.append(embeddings)
        out.extend(layers[:frozen_layers])
        depths.append(len(layers))
    encoder_ids = {id(p) for encoder in encoders for p in encoder.parameters()}
    if frozen_layers and all(frozen_layers == depth for depth in depths) and not any(
        p.requires_grad for p in model.parameters() if id(p) not in encoder_ids
    ):
        raise TextMatchError(
            f"frozen_layers={frozen_layers} freezes every layer of the encoders and the model has nothing else to "
            f"train (no FCE, a fixed temperature): freeze at most {frozen_layers - 1}"
        )
    return out


@contextlib.contextmanager
def frozen(model: MatchingNetwork, frozen_layers: int = 0, freeze_embeddings: bool = False) -> Iterator[list[nn.Module]]:
    """Inside the block the parameters of `blocks_to_freeze` have requires_grad=False; on exit
    each parameter gets back the flag it had (the model is the user's object)."""
    blocks = blocks_to_freeze(model, frozen_layers, freeze_embeddings)
    saved = [(p, p.requires_grad) for block in blocks for p in block.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield blocks
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
