"""Inference backends for the encoders: plain torch, ONNX Runtime, ONNX Runtime with int8 weights.

The torch modules stay the source of truth (training, saving); a backend only replaces the
encoder's forward pass at inference time. For "onnx" and "onnx-int8" the encoder (transformer
+ pooling + L2 normalisation) is exported once to ONNX with dynamic batch and sequence axes,
its graph fused by ONNX Runtime's transformer optimiser, and (for int8) its weights quantised
dynamically. Exports are cached under a fingerprint of the weights and settings, next to the
model when its folder is writable, else in the user cache, and redone when the model changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TextMatchError
from ..files import atomic_path, write_text_atomic

BACKENDS = ("torch", "onnx", "onnx-int8")
EXPORT_FORMAT = 1  # bump when the export recipe changes, so old caches are redone


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise TextMatchError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def default_cache_dir() -> Path:
    return Path(os.environ.get("TEXTMATCH_CACHE", Path.home() / ".cache" / "textmatch"))


def fingerprint(encoder: Any) -> str:
    """sha256 over the encoder's weights, architecture settings and the export recipe."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"config": encoder.config_dict(), "export": EXPORT_FORMAT}, sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class _ExportWrapper(torch.nn.Module):
    """Positional inputs for the ONNX exporter: (input_ids, attention_mask[, token_type_ids])."""

    def __init__(self, encoder: Any, names: list[str]) -> None:
        super().__init__()
        self.encoder = encoder
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(dict(zip(self.names, inputs)))  # (batch, dim)


def export_onnx(encoder: Any, path: Path) -> None:
    """Export a TransformerEncoder (with pooling and normalisation) to `path`, atomically."""
    features = encoder.tokenize(["an example sentence for tracing", "short"])
    names = list(features)
    wrapper = _ExportWrapper(encoder, names).eval()
    dynamic = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic["embedding"] = {0: "batch"}
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # tracer chatter about shapes; checked below instead
        torch.onnx.export(
            wrapper,
            tuple(features[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes=dynamic,
            opset_version=17,
            dynamo=False,
        )


def optimize_onnx(src: Path, dst: Path, encoder: Any) -> None:
    """Fuse attention, LayerNorm and GELU with ONNX Runtime's transformer optimiser."""
    from onnxruntime.transformers import optimizer

    hf_config = encoder.model.config
    model_type = "bert" if hf_config.model_type in ("bert", "roberta", "xlm-roberta", "distilbert", "mpnet") else None
    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized = optimizer.optimize_model(
            str(src),
            model_type=model_type or "bert",
            num_heads=int(getattr(hf_config, "num_attention_heads", 0) or 0),
            hidden_size=int(getattr(hf_config, "hidden_size", 0) or 0),
            opt_level=1,
        )
        optimized.save_model_to_file(str(tmp))


def quantize_onnx(src: Path, dst: Path) -> None:
    """Dynamic int8 quantisation of the weights (activations quantised on the fly)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # fused (com.microsoft) nodes defeat shape inference; their outputs are float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


class OnnxRuntimeEncoder:
    """Runs an exported encoder with ONNX Runtime: features (torch) -> (batch, dim) torch tensor."""

    def __init__(self, path: Path, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ORT's worker threads spin after each run by default; torch (the matching layer) then
        # fights them for the cores and a single query got 20x slower. Let them sleep instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {n: features[n].cpu().numpy().astype(np.int64, copy=False) for n in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])  # (batch, dim)


def onnx_encoder(
    encoder: Any,
    backend: str,
    model_dir: Path | None = None,
    cache_dir: Path | None = None,
    num_threads: int | None = None,
) -> OnnxRuntimeEncoder:
    """Export (or reuse the cached export of) `encoder` for `backend` and open a session."""
    check_backend(backend)
    if encoder.encoder_type != "transformer":
        raise TextMatchError(
            f"backend {backend!r} runs transformer encoders; this model's encoder is {encoder.encoder_type!r}: "
            "use backend='torch'"
        )
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise TextMatchError(
            f"backend {backend!r} needs ONNX Runtime: pip install 'textmatch[onnx]'"
        ) from None
    key = fingerprint(encoder)
    folder = _cache_folder(model_dir, cache_dir, key)
    raw, fused, int8 = folder / "encoder.onnx", folder / "encoder-optimized.onnx", folder / "encoder-int8.onnx"
    target = fused if backend == "onnx" else int8
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        was_training = encoder.training
        encoder.eval()
        try:
            # each file is written whole (textmatch.files.atomic_path): an interrupted export resumes
            if not raw.is_file():
                export_onnx(encoder, raw)
            if not fused.is_file():
                optimize_onnx(raw, fused, encoder)
            if backend == "onnx-int8" and not int8.is_file():
                quantize_onnx(fused, int8)
        finally:
            encoder.train(was_training)
        write_text_atomic(folder / "fingerprint.json", json.dumps({"fingerprint": key, "format": EXPORT_FORMAT}) + "\n")
    return OnnxRuntimeEncoder(target, num_threads)


def _cache_folder(model_dir: Path | None, cache_dir: Path | None, key: str) -> Path:
    """`<model_dir>/.textmatch-onnx/<key>` when the model folder is writable, else
    `<cache>/onnx/<key>`. Exports of older fingerprints next to the model are removed (the model
    changed); the hidden name keeps clear of a user's own `onnx/` folder."""
    if cache_dir is None and model_dir is not None and os.access(model_dir, os.W_OK):
        base = Path(model_dir) / ".textmatch-onnx"
        if base.is_dir():
            for old in base.iterdir():
                if old.is_dir() and old.name != key:
                    shutil.rmtree(old, ignore_errors=True)
        return base / key
    return Path(cache_dir or default_cache_dir()) / "onnx" / key
