"""Inference backends for the encoders: torch, ONNX Runtime, ONNX Runtime with int8 weights."""

from .onnx import BACKENDS, check_backend, onnx_encoder

__all__ = ["BACKENDS", "check_backend", "onnx_encoder"]
