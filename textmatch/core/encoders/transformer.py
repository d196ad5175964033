"""Any Hugging Face transformer as f' / g': token states pooled into one L2-normalised vector."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...config import ConfigMixin
from ...errors import TextMatchError
from ...files import safe_relpath
from ...hub.resolution import require_safetensors, resolve_model
from .base import POOLINGS, Encoder, pool, register_encoder


@dataclass
class TransformerEncoderConfig(ConfigMixin):
    """Architecture of a TransformerEncoder.

    base_model: where the transformer came from (a Hub id or folder), recorded for model cards.
    pooling: "mean" | "cls" | "max"; max_length: tokens per text; normalize: L2-normalise.
    """

    base_model: str = ""
    pooling: str = "mean"
    max_length: int = 256
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise TextMatchError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if int(self.max_length) < 2:
            raise TextMatchError(f"max_length must be at least 2, got {self.max_length}")



def sentence_transformers_settings(folder: Path) -> dict[str, Any]:
    """Pooling, max length and transformer sub-folder declared by a sentence-transformers folder
    (empty if it is a plain transformers folder)."""
    settings: dict[str, Any] = {}
    modules = folder / "modules.json"
    if modules.is_file():
        for module in _read_json(modules, list):
            if not isinstance(module, dict):
                raise TextMatchError(f"{modules} lists {module!r}, not a module; the model folder is damaged")
            path = module.get("path") or ""
            if not isinstance(path, str):
                raise TextMatchError(f"{modules} gives the path {path!r}; the model folder is damaged")
            inside = safe_relpath(folder, path, str(modules)) if path else folder  # never outside the folder
            if str(module.get("type", "")).endswith(".Transformer") and path:
                settings["transformer_path"] = path  # older models keep it in e.g. 0_BERT/
            if str(module.get("type", "")).endswith("Pooling"):
                pooling_file = inside / "config.json"
                if pooling_file.is_file():
                    cfg = _read_json(pooling_file, dict)
                    if cfg.get("pooling_mode_cls_token"):
                        settings["pooling"] = "cls"
                    elif cfg.get("pooling_mode_max_tokens"):
                        settings["pooling"] = "max"
                    elif cfg.get("pooling_mode_mean_tokens"):
                        settings["pooling"] = "mean"
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        max_len = _read_json(st_config, dict).get("max_seq_length")
        if max_len:
            if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 2:
                raise TextMatchError(f"{st_config} gives max_seq_length {max_len!r}; it must be an integer >= 2")
            settings["max_length"] = max_len
    return settings


def _read_json(path: Path, kind: type) -> Any:
    """A JSON file of the expected top-level type, or a TextMatchError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is not valid JSON ({exc}); the model folder is damaged") from None
    if not isinstance(data, kind):
        raise TextMatchError(f"{path} holds a {type(data).__name__}, expected a {kind.__name__}; the model folder is damaged")
    return data


@register_encoder
class TransformerEncoder(Encoder):
    """A Hugging Face `AutoModel` with pooling: texts -> (batch, hidden_size), L2-normalised."""

    encoder_type = "transformer"

    def __init__(self, model: Any, tokenizer: Any, config: TransformerEncoderConfig) -> None:
        super().__init__()
        self.model = model
        self._tokenizer = tokenizer
        self.config = config

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str,
        pooling: str | None = None,
        max_length: int | None = None,
        normalize: bool = True,
        revision: str | None = None,
        token: str | bool | None = None,
        trust_remote_code: bool = False,
        cache_dir: str | Path | None = None,
        allow_pickle: bool = False,
    ) -> "TransformerEncoder":
        """Load a transformers or sentence-transformers checkpoint (Hub id or folder).

        Pooling and max length default to what a sentence-transformers folder declares, else
        mean pooling and the model's position limit (at most 512). Only safetensors weights
        are loaded unless `allow_pickle=True` (for a source you trust: unpickling runs code).
        """
        from transformers import AutoModel, AutoTokenizer

        folder = resolve_model(name_or_path, revision=revision, token=token, cache_dir=cache_dir, allow_pickle=allow_pickle)
        declared = sentence_transformers_settings(folder)
        if declared.get("transformer_path"):
            folder = safe_relpath(folder, declared["transformer_path"], str(folder / "modules.json"))
        if not (folder / "config.json").is_file():
            raise TextMatchError(f"{name_or_path!r} has no config.json: it is not a transformers model folder")
        if allow_pickle:
            warnings.warn(f"allow_pickle=True: {name_or_path!r} may be loaded from pickle files", UserWarning, stacklevel=2)
        else:
            require_safetensors(folder, allow_sharded=True)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
            model = AutoModel.from_pretrained(
                str(folder), use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code
            )
        except Exception as exc:  # noqa: BLE001 - a bad folder (or, with allow_pickle, a bad pickle) in any form
            if isinstance(exc, TextMatchError):
                raise
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TextMatchError(f"cannot load transformer {name_or_path!r}: {type(exc).__name__}: {first}") from None
        limit = min(int(getattr(model.config, "max_position_embeddings", 512) or 512), 512)
        config = TransformerEncoderConfig(
            base_model=str(name_or_path),
            pooling=pooling or declared.get("pooling", "mean"),
            max_length=int(max_length or min(declared.get("max_length", limit), limit)),
            normalize=normalize,
        )
        return cls(model, tokenizer, config)

    # -- Encoder hooks ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_length(self) -> int:
        return int(self.config.max_length)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(**features)
        hidden = out.last_hidden_state  # (batch, seq, hidden)
        emb = pool(hidden, features["attention_mask"], self.config.pooling)  # (batch, hidden)
        return F.normalize(emb, dim=-1) if self.config.normalize else emb

    def blocks(self) -> tuple[nn.Module, list[nn.Module]]:
        """The embeddings module (word, position and type embeddings with their norm) and the
        stack of `num_hidden_layers` layers (BERT, RoBERTa, MPNet, DistilBERT, ... all keep
        them in one ModuleList)."""
        embeddings = getattr(self.model, "embeddings", None)
        if not isinstance(embeddings, nn.Module):
            embeddings = self.model.get_input_embeddings()
        count = getattr(self.model.config, "num_hidden_layers", None)
        for module in self.model.modules():
            if isinstance(module, nn.ModuleList) and count is not None and len(module) == count:
                return embeddings, list(module)
        raise TextMatchError(
            f"cannot find the {count} layers of {type(self.model).__name__}: this transformer cannot be partly frozen"
        )

    def save_architecture(self, directory: Path) -> None:
        self.model.config.save_pretrained(str(directory))  # config.json: from_saved builds the model from it

    @classmethod
    def from_saved(cls, directory: str | Path, config: dict[str, Any]) -> "TransformerEncoder":
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        directory = Path(directory)
        try:
            hf_config = AutoConfig.from_pretrained(str(directory))
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
            # Weights come from the MatchingNetwork's model.safetensors; silence the init message.
            level = logging.getLogger("transformers").level
            logging.getLogger("transformers").setLevel(logging.ERROR)
            try:
                model = AutoModel.from_config(hf_config)
            finally:
                logging.getLogger("transformers").setLevel(level)
        except Exception as exc:  # noqa: BLE001 - damaged config / tokenizer files fail in many ways
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise TextMatchError(
                f"cannot read the encoder files in {directory} ({type(exc).__name__}: {first}); save the model again"
            ) from None
        return cls(model, tokenizer, TransformerEncoderConfig.from_dict(config))
