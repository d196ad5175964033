"""Encoders supply the base embedding functions f' (queries) and g' (support examples)."""

from .base import Encoder, encoder_class, pool, register_encoder
from .bilstm import BiLSTMEncoder, BiLSTMEncoderConfig
from .fce import QueryFCE, SupportFCE
from .transformer import TransformerEncoder, TransformerEncoderConfig

__all__ = [
    "BiLSTMEncoder",
    "BiLSTMEncoderConfig",
    "Encoder",
    "QueryFCE",
    "SupportFCE",
    "TransformerEncoder",
    "TransformerEncoderConfig",
    "encoder_class",
    "pool",
    "register_encoder",
]
