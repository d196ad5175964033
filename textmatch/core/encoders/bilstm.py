"""A BiLSTM sentence encoder trained from scratch: token embedding + BiLSTM + pooling.

Its vocabulary comes from a Hugging Face tokenizer, and its token embedding may be
initialised from a transformer's input embedding matrix. It trains on a CPU in minutes
and needs no download when the tokenizer is local.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ...config import ConfigMixin
from ...errors import TextMatchError
from .base import POOLINGS, Encoder, pool, register_encoder


@dataclass
class BiLSTMEncoderConfig(ConfigMixin):
    """Architecture of a BiLSTMEncoder. Output size is 2 * hidden_size."""

    vocab_size: int = 0
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.1
    pooling: str = "mean"
    max_length: int = 128
    normalize: bool = True
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise TextMatchError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        for name in ("vocab_size", "embedding_dim", "hidden_size", "num_layers", "max_length"):
            if int(getattr(self, name)) < 1:
                raise TextMatchError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise TextMatchError(f"dropout must be in [0, 1), got {self.dropout}")



@register_encoder
class BiLSTMEncoder(Encoder):
    """Embedding -> BiLSTM -> pooling ("mean", "max", or "cls" = the first position's state)."""

    encoder_type = "bilstm"

    def __init__(self, tokenizer: Any, config: BiLSTMEncoderConfig) -> None:
        super().__init__()
        self._tokenizer = tokenizer
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.dropout = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(
            config.embedding_dim,
            config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=True,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.1,
        pooling: str = "mean",
        max_length: int = 128,
        normalize: bool = True,
        init_embeddings: torch.Tensor | nn.Embedding | None = None,
    ) -> "BiLSTMEncoder":
        """Build a fresh encoder over `tokenizer`'s vocabulary (a tokenizer object, Hub id or folder).

        init_embeddings: a (vocab_size, embedding_dim) matrix, e.g. a transformer's
        `get_input_embeddings()`, copied into the token embedding.
        """
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            from ...hub.resolution import resolve_model

            tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(str(tokenizer))))
        if init_embeddings is not None:
            weight = init_embeddings.weight if isinstance(init_embeddings, nn.Embedding) else init_embeddings
            embedding_dim = int(weight.shape[1])
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        config = BiLSTMEncoderConfig(
            vocab_size=len(tokenizer),
            embedding_dim=embedding_dim,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout,
            pooling=pooling,
            max_length=max_length,
            normalize=normalize,
            pad_token_id=int(pad),
        )
        encoder = cls(tokenizer, config)
        if init_embeddings is not None:
            if weight.shape[0] < config.vocab_size:
                raise TextMatchError(
                    f"init_embeddings has {weight.shape[0]} rows but the tokenizer has {config.vocab_size} tokens; "
                    "use the embedding matrix of the model this tokenizer belongs to"
                )
            with torch.no_grad():
                encoder.embedding.weight.copy_(weight[: config.vocab_size].detach())
        return encoder

    # -- Encoder hooks ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def dim(self) -> int:
        return 2 * self.config.hidden_size

    @property
    def max_length(self) -> int:
        return int(self.config.max_length)

    def blocks(self) -> tuple[nn.Module, list[nn.Module]]:
        """The token embedding and the LSTM (its stacked layers are one module)."""
        return self.embedding, [self.lstm]

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, mask = features["input_ids"], features["attention_mask"]  # (batch, seq) each
        lengths = mask.sum(1).clamp_min(1).cpu()  # (batch,)
        x = self.dropout(self.embedding(ids))  # (batch, seq, emb)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        hidden, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (batch, seq, 2*hid)
        emb = pool(self.dropout(hidden), mask, self.config.pooling)  # (batch, 2*hid)
        return F.normalize(emb, dim=-1) if self.config.normalize else emb

    @classmethod
    def from_saved(cls, directory: str | Path, config: dict[str, Any]) -> "BiLSTMEncoder":
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as exc:  # noqa: BLE001 - damaged tokenizer files fail in many ways
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise TextMatchError(f"cannot read the tokenizer in {directory} ({type(exc).__name__}: {first})") from None
        return cls(tokenizer, BiLSTMEncoderConfig.from_dict(config))
