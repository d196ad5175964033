"""The Encoder interface: texts -> fixed-size embeddings (the f' and g' of the paper).

An encoder owns its tokenizer. `forward` takes a tokenised batch and returns one embedding
per text; `save`/`from_saved` write and read everything but the weights (the tokenizer and
the encoder's own config), since the weights of a whole MatchingNetwork go to one
`model.safetensors`.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch
from torch import nn

from ...errors import TextMatchError

POOLINGS = ("mean", "cls", "max")
_TOKENIZER_LOCK = threading.RLock()


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool token states into one vector per text.

    hidden: (batch, seq, dim), mask: (batch, seq) with 1 for real tokens -> (batch, dim)
    """
    if mode == "cls":
        return hidden[:, 0]  # (batch, dim)
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (batch, seq, 1)
    if mode == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (batch, dim)
    if mode == "max":
        return hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(1).values  # (batch, dim)
    raise TextMatchError(f"unknown pooling {mode!r}; choose one of {POOLINGS}")


class Encoder(nn.Module):
    """Base class of text encoders. Subclasses set `encoder_type` and implement the hooks."""

    encoder_type: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self._warned_truncation = False

    # -- hooks -----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        """Size of the embeddings this encoder returns."""
        raise NotImplementedError

    @property
    def max_length(self) -> int:
        raise NotImplementedError

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features from `tokenize` -> (batch, dim) embeddings."""
        raise NotImplementedError

    def blocks(self) -> tuple[nn.Module, list[nn.Module]]:
        """(the input embeddings, the layers from the input up): what `frozen_layers` and
        `freeze_embeddings` of the trainers freeze."""
        raise TextMatchError(f"the {self.encoder_type or type(self).__name__} encoder does not list its layers: it cannot be partly frozen")

    def config_dict(self) -> dict[str, Any]:
        """A JSON-able description from which `from_saved` rebuilds the architecture (the
        encoder's `config` dataclass)."""
        return self.config.to_dict()

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer and architecture files (not the weights) to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_architecture(directory)
        self.tokenizer.save_pretrained(str(directory))

    def save_architecture(self, directory: Path) -> None:
        """Hook: files besides the tokenizer that `from_saved` needs (none by default)."""

    @classmethod
    def from_saved(cls, directory: str | Path, config: dict[str, Any]) -> "Encoder":
        """Rebuild the architecture from `save`'s files; weights are loaded by the caller."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise with truncation at `max_length`; warn once if any text was cut."""
        with _TOKENIZER_LOCK:  # fast tokenizers fail ("Already borrowed") when threads change their settings
            return self._tokenize(texts)

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        features = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if not self._warned_truncation:
            full = features["attention_mask"].sum(1) >= self.max_length  # (batch,)
            if bool(full.any()):
                candidates = [t for t, f in zip(texts, full.tolist()) if f]
                lengths = [len(ids) for ids in self.tokenizer(candidates, truncation=False)["input_ids"]]
                longest = max(lengths)
                if longest > self.max_length:
                    self._warned_truncation = True
                    warnings.warn(
                        f"a text has {longest} tokens, more than this encoder's limit of {self.max_length}: "
                        "texts are truncated to the limit (this warning is shown once; set max_length "
                        "to change the limit)",
                        UserWarning,
                        stacklevel=3,
                    )
        return {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    @contextlib.contextmanager
    def truncated_to(self, limit: int) -> Iterator["Encoder"]:
        """Inside the block, tokenise at most `limit` tokens per text (never more than the
        encoder's own limit) and without the truncation warning: the caller asked for the cut.
        Encoders whose limit lives elsewhere than `config.max_length` are left unchanged."""
        config = getattr(self, "config", None)
        if config is None or not hasattr(config, "max_length"):
            yield self
            return
        old_length, old_warned = config.max_length, self._warned_truncation
        config.max_length = min(int(limit), int(old_length))
        self._warned_truncation = True
        try:
            yield self
        finally:
            config.max_length = old_length
            self._warned_truncation = old_warned

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


_REGISTRY: dict[str, type[Encoder]] = {}


def register_encoder(cls: type[Encoder]) -> type[Encoder]:
    """Class decorator: make an encoder type loadable by name from a saved config."""
    _REGISTRY[cls.encoder_type] = cls
    return cls


def encoder_class(encoder_type: str) -> type[Encoder]:
    try:
        return _REGISTRY[encoder_type]
    except KeyError:
        raise TextMatchError(
            f"unknown encoder type {encoder_type!r}; known: {sorted(_REGISTRY)} (a newer textmatch saved it? upgrade)"
        ) from None
