"""MatchingNetwork: f and g over a text encoder, a stored support set, and the classifier API.

    P(y | x, S) = sum_i a(x, x_i) y_i,  a = softmax_i(cos(f(x, S), g(x_i, S)) / tau)   (eqs. 1-2)

`fit` stores the support set S and caches g(S); `predict_proba` evaluates eq. 1 for new
queries. New classes need no retraining: they only have to be in the support set.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ClassVar,
    Hashable,
    NamedTuple,
    Sequence,
)

import numpy as np
import torch
from torch import nn

from ..config import ConfigMixin
from ..data.validation import (
    check_conflicts,
    sorted_classes,
    validate_support,
    validate_texts,
)
from ..errors import TextMatchError
from ..files import (
    atomic_path,
    check_target,
    files_under,
    read_consistent,
    write_folder,
)
from ..hub.resolution import DEFAULT_MODEL, require_safetensors, resolve_model
from . import heads, label_names, matching
from .card_data import ModelCardData
from .encoders import Encoder, QueryFCE, SupportFCE, TransformerEncoder, encoder_class

if TYPE_CHECKING:
    from .explanations import Explanation

FORMAT_VERSION = 1
LIBRARY_NAME = "textmatch"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
SUPPORT_NAME = "support_set.json"
SUPPORT_EMBEDDINGS_NAME = "support_embeddings.safetensors"
MODEL_CARD_NAME = "README.md"
# Everything save_pretrained writes; a new save replaces all of them (stale ones disappear).
OWN_FILES = {
    CONFIG_NAME, WEIGHTS_NAME, SUPPORT_NAME, SUPPORT_EMBEDDINGS_NAME, MODEL_CARD_NAME, "query_encoder", "support_encoder"
}


@dataclass
class MatchingNetworkConfig(ConfigMixin):
    """How f, g and the matching layer are set up (everything but the encoders' own configs).

    share_weights: f' and g' are one encoder (True) or two copies trained apart (False).
    fce: Full Context Embeddings (appendix A.2); fce_steps: K read steps of the attention LSTM;
    fce_scale_init: initial weight of the LSTM terms (1 = the paper's equations at start).
    metric: "cosine" (the paper) or "euclidean"; aggregation: "none" (eq. 1 over every
    support example) or "prototype" (class means, Snell et al. 2017).
    temperature: tau of eq. 2; learn_temperature: make log(tau) a trained parameter.
    threshold: out-of-scope threshold on the best class probability ("probability") or the
    best support similarity ("similarity"); queries below it get `oos_label`.
    head: how class probabilities are read from the embeddings (textmatch.core.heads):
    "matching" (eq. 1), "logreg" (a logistic regression fitted on the support set whenever it
    changes) or "ensemble" (the mean of the two); logreg_c: the regression's inverse L2
    strength (scikit-learn's C).
    label_names: each class's name ("card_arrival" -> "card arrival") is one more support
    example of it (textmatch.core.label_names), also while training; label_descriptions:
    {label: text} to use instead of a class's name (e.g. for labels like "A12" or ints).
    """

    share_weights: bool = True
    fce: bool = False
    fce_steps: int = 5
    fce_scale_init: float = 0.1
    metric: str = "cosine"
    aggregation: str = "none"
    temperature: float = 0.05
    learn_temperature: bool = False
    threshold: float | None = None
    threshold_metric: str = "probability"
    oos_label: str = "oos"
    head: str = "matching"
    logreg_c: float = 10.0
    label_names: bool = False
    label_descriptions: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if self.metric not in matching.METRICS:
            raise TextMatchError(f"metric must be one of {matching.METRICS}, got {self.metric!r}")
        if self.aggregation not in ("none", "prototype"):
            raise TextMatchError(f"aggregation must be 'none' or 'prototype', got {self.aggregation!r}")
        if not (isinstance(self.temperature, (int, float)) and 0 < self.temperature < math.inf):
            raise TextMatchError(f"temperature must be a positive finite number, got {self.temperature!r}")
        if int(self.fce_steps) < 1:
            raise TextMatchError(f"fce_steps must be at least 1, got {self.fce_steps}")
        if self.threshold_metric not in ("probability", "similarity"):
            raise TextMatchError(
                f"threshold_metric must be 'probability' or 'similarity', got {self.threshold_metric!r}"
            )
        check_threshold(self.threshold, self.threshold_metric, self.metric)
        heads.check_head(self.head, self.logreg_c)
        if not isinstance(self.label_names, bool):
            raise TextMatchError(f"label_names must be True or False, got {self.label_names!r}")
        self.label_descriptions = label_names.check_descriptions(self.label_descriptions)



def check_threshold(threshold: Any, threshold_metric: str, metric: str) -> None:
    """An out-of-scope threshold must be None or a finite number in the range its score takes:
    [0, 1] for a probability, [-1, 1] for a cosine similarity, <= 0 for a negative squared
    distance. Outside it every text (or none) would be out of scope: a silent wrong result."""
    if threshold is None:
        return
    if not isinstance(threshold, (int, float, np.floating, np.integer)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise TextMatchError(f"threshold must be a finite number or None, got {threshold!r}")
    low, high = (0.0, 1.0) if threshold_metric == "probability" else ((-1.0, 1.0) if metric == "cosine" else (-math.inf, 0.0))
    if not low <= threshold <= high:
        what = "a probability" if threshold_metric == "probability" else f"a {metric} similarity"
        raise TextMatchError(f"threshold {threshold} is outside [{low:g}, {high:g}], the range of {what}; choose one inside")


@dataclass
class Prediction:
    """What `MatchingNetwork.classify` returns for n texts, from one encoding of each.

    labels: the predicted class of each text (`oos_label` below the threshold), (n,).
    probabilities: P(y | x, S) of eq. 1, (n, n_classes), columns in `classes` order.
    best_similarity: each text's highest similarity to any support example, (n,).
    """

    labels: list[Hashable]
    probabilities: np.ndarray
    best_similarity: np.ndarray
    classes: list[Hashable]


class SupportView(NamedTuple):
    """One consistent support set, read at once: what a prediction uses from start to end."""

    classes: list[Hashable]
    emb: torch.Tensor  # g(S), (n_support + n_names, dim): the examples, then the class names (label_names)
    label_ids: torch.Tensor  # (n_support + n_names,)
    head: tuple[torch.Tensor, torch.Tensor] | None = None  # logistic regression W (n_classes, dim), b (n_classes,)
    texts: tuple[str, ...] = ()  # the text of each row of emb: the support examples, then the class names
    n_examples: int = 0  # rows [0, n_examples) are support examples (positions in support_texts); the rest class names


class ScoreDetails(NamedTuple):
    """What `MatchingNetwork.score_details` computes for n queries against one support view."""

    query: torch.Tensor  # f(x, S), (n, dim)
    similarity: torch.Tensor  # c(f(x), g(x_i)) for every support row, (n, n_rows)
    matching: torch.Tensor  # P(y | x, S) of eq. 1, (n, n_classes)
    logreg: torch.Tensor | None  # the logistic regression's probabilities, (n, n_classes), or None
    probabilities: torch.Tensor  # the head's (config.head), (n, n_classes)


def tokenize_chunks(encoder: Encoder, texts: Sequence[str], batch_size: int) -> dict[str, Any]:
    """`texts` sorted by length and tokenised in chunks of `batch_size`, each chunk padded to
    its own longest text: {"order": (n,) input index of each sorted position, "batches": [features]}.
    `MatchingNetwork.embed_tokenized` encodes them; the split lets a collator tokenise."""
    if batch_size < 1:
        raise TextMatchError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [encoder.tokenize([texts[i] for i in order[start : start + batch_size]]) for start in range(0, len(texts), batch_size)]
    return {"order": torch.tensor(order, dtype=torch.long), "batches": batches}


class MatchingNetwork(nn.Module):
    """A Matching Network for text.

    Thread-safe for prediction: any number of threads may predict while another one fits or
    adds examples; each prediction uses one whole support set (the one before the change, or
    the one after).

    >>> model = MatchingNetwork.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    >>> model.fit(["hi there", "bye now", ...], ["greet", "bye", ...])
    >>> model.predict(["hello!"])
    """

    # Renders README.md for save_pretrained: (model, model_path) -> Markdown. The hub sets it
    # (textmatch.hub.model_card, imported by `import textmatch`), so the core never imports the
    # card; None saves no card.
    model_card_writer: ClassVar[Callable[["MatchingNetwork", str], str] | None] = None

    def __init__(
        self,
        query_encoder: Encoder,
        support_encoder: Encoder | None = None,
        config: MatchingNetworkConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config or MatchingNetworkConfig(share_weights=support_encoder is None)
        if support_encoder is None or self.config.share_weights:
            support_encoder = query_encoder
            self.config.share_weights = True
        if support_encoder.dim != query_encoder.dim:
            raise TextMatchError(
                f"f' and g' must have the same size, got {query_encoder.dim} and {support_encoder.dim}"
            )
        self.query_encoder = query_encoder  # f'
        self.support_encoder = support_encoder  # g' (the same module when weights are shared)
        dim = query_encoder.dim
        self.support_fce = SupportFCE(dim, self.config.fce_scale_init) if self.config.fce else None
        self.query_fce = (
            QueryFCE(dim, self.config.fce_steps, self.config.fce_scale_init) if self.config.fce else None
        )
        self.log_temperature = nn.Parameter(
            torch.tensor(math.log(self.config.temperature)), requires_grad=self.config.learn_temperature
        )
        self.base_model: str = ""
        self.backend = "torch"  # inference backend, see set_backend
        self._backend_options: dict[str, Any] = {}
        self._runners: dict[int, Any] = {}  # id(encoder) -> ONNX Runtime runner
        self.model_dir: Path | None = None  # the textmatch folder this model was loaded from, if any
        self.model_card_data = ModelCardData()  # what README.md says beyond the model itself
        self._make_locks()
        self._clear_support()

    def _make_locks(self) -> None:
        self._support_lock = threading.RLock()  # held while the support set is read or swapped
        self._fit_lock = threading.RLock()  # fits take turns (an append reads the set it extends)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model_name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        pooling: str | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        backend: str = "torch",
        num_threads: int | None = None,
        **config_kwargs: Any,
    ) -> "MatchingNetwork":
        """Load a model saved by textmatch, or build one over a transformers / sentence-transformers
        checkpoint: a local folder or a Hub repo id (at `revision`, with `token` for private
        repos; the Hugging Face cache serves it offline). `config_kwargs` set
        MatchingNetworkConfig fields (for a saved model they override the saved values:
        threshold, temperature, ...). Weights load from safetensors only; `allow_pickle=True`
        lets a plain transformers checkpoint you trust load from pickle files. `backend`
        ("torch", "onnx", "onnx-int8") picks the inference engine, see `set_backend`."""
        name = str(model_name_or_path)
        folder = resolve_model(name, revision=revision, token=token, cache_dir=cache_dir, allow_pickle=allow_pickle)
        if read_textmatch_config(folder) is not None:
            model = read_consistent(
                folder, lambda: cls._from_saved(folder, read_textmatch_config(folder) or {}, config_kwargs), "model"
            )
            model.model_dir = folder
        else:
            encoder = TransformerEncoder.from_pretrained(
                str(folder),
                pooling=pooling,
                max_length=max_length,
                trust_remote_code=trust_remote_code,
                allow_pickle=allow_pickle,
            )
            encoder.config.base_model = name
            config = MatchingNetworkConfig(**config_kwargs)
            support = None if config.share_weights else copy.deepcopy(encoder)
            model = cls(encoder, support, config)
            model.base_model = name
        model.eval()
        if device is not None:
            model.to(device)
        if backend != "torch":
            model.set_backend(backend, num_threads=num_threads)
        return model

    # -- inference backends -----------------------------------------------------------------
    def set_backend(self, backend: str = "torch", num_threads: int | None = None, cache_dir: str | os.PathLike | None = None) -> "MatchingNetwork":
        """Choose how encoders run at inference: "torch", "onnx" (ONNX Runtime, fused graph) or
        "onnx-int8" (dynamically quantised weights). Training always uses torch. The ONNX export
        happens here (cached; redone when the weights change). Returns self."""
        from ..backends.onnx import check_backend, onnx_encoder

        check_backend(backend)
        if backend != "torch" and self.device.type != "cpu":
            raise TextMatchError(f"backend {backend!r} runs on the CPU; move the model with model.to('cpu') first")
        self.backend = backend
        self._backend_options = {"num_threads": num_threads, "cache_dir": Path(cache_dir) if cache_dir else None}
        self._runners = {}
        if backend != "torch":
            for encoder in {id(e): e for e in (self.query_encoder, self.support_encoder)}.values():
                self._runners[id(encoder)] = onnx_encoder(encoder, backend, model_dir=self.model_dir, **self._backend_options)
        return self

    def reset_backend(self) -> None:
        """Forget ONNX sessions after the weights changed (training); they are rebuilt on next use."""
        self._runners = {}

    def backend_runner(self, encoder: Encoder) -> Any:
        """The callable that runs `encoder` (tokenised features -> (batch, dim) embeddings) on the
        current inference backend: the encoder itself for "torch", else its ONNX Runtime runner
        (built on first use; its `session` is the onnxruntime.InferenceSession)."""
        if self.backend == "torch":
            return encoder
        runner = self._runners.get(id(encoder))
        if runner is None:
            from ..backends.onnx import onnx_encoder

            runner = onnx_encoder(encoder, self.backend, model_dir=self.model_dir, **self._backend_options)
            self._runners[id(encoder)] = runner
        return runner

    def _forward_for(self, encoder: Encoder) -> Any:
        """The encoder's forward at inference for the current backend (torch when gradients flow)."""
        return encoder if torch.is_grad_enabled() else self.backend_runner(encoder)

    def __getstate__(self) -> dict[str, Any]:  # copies and pickles drop ONNX sessions (rebuilt on use)
        state = self.__dict__.copy()
        state["_runners"] = {}
        state.pop("_support_lock", None)
        state.pop("_fit_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._make_locks()

    @classmethod
    def _from_saved(cls, folder: Path, saved: dict[str, Any], overrides: dict[str, Any]) -> "MatchingNetwork":
        version = saved.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise TextMatchError(
                f"{folder / CONFIG_NAME} has format version {version!r}; this textmatch reads versions "
                f"1..{FORMAT_VERSION}. Upgrade textmatch (pip install -U textmatch) or save the model again"
            )
        try:
            config = MatchingNetworkConfig.from_dict({**saved["matching"], **overrides})
            encoders = {}
            for role in ("query_encoder", "support_encoder"):
                spec = saved.get(role)
                if spec is None:
                    continue
                encoders[role] = encoder_class(spec["type"]).from_saved(folder / role, spec["config"])
            model = cls(encoders["query_encoder"], encoders.get("support_encoder"), config)
        except TextMatchError:
            raise
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise TextMatchError(
                f"{folder / CONFIG_NAME} is malformed ({type(exc).__name__}: {exc}); save the model again"
            ) from None
        except ValueError as exc:
            raise TextMatchError(f"{folder / CONFIG_NAME}: {exc}") from None
        model.base_model = saved.get("base_model", "")
        try:  # folders saved before model cards have no "model_card_data": defaults
            model.model_card_data = ModelCardData.from_dict(saved.get("model_card_data"))
        except TextMatchError as exc:
            warnings.warn(f"{folder / CONFIG_NAME}: ignoring its model card data ({exc})", stacklevel=3)

        model.load_weights(require_safetensors(folder, WEIGHTS_NAME), keep_temperature="temperature" in overrides)
        support_file = folder / SUPPORT_NAME
        if support_file.is_file():
            texts, labels = _read_support_file(support_file)
            model._load_support(texts, labels, folder / SUPPORT_EMBEDDINGS_NAME)
        return model

    # -- embeddings -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.log_temperature.device

    @property
    def temperature(self) -> torch.Tensor:
        """tau of eq. 2 (a tensor: trained when learn_temperature is set)."""
        return self.log_temperature.exp()

    def embed(self, encoder: Encoder, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
        """Base embeddings f'(x) or g'(x) of `texts` in length-sorted batches: (n, dim).

        Gradients flow when grad mode is on (training); callers wrap inference in
        torch.inference_mode.
        """
        return self.embed_tokenized(encoder, tokenize_chunks(encoder, texts, batch_size), show_progress_bar)

    def embed_tokenized(self, encoder: Encoder, chunks: dict[str, Any], show_progress_bar: bool = False) -> torch.Tensor:
        """Base embeddings of texts tokenised by `tokenize_chunks` (e.g. in a training
        collator): each chunk through the encoder, then back in input order. (n, dim)"""
        order: torch.Tensor = chunks["order"]  # (n,) input index of each length-sorted position
        if len(order) == 0:
            return torch.zeros(0, encoder.dim, device=self.device)
        forward = self._forward_for(encoder)
        batches = chunks["batches"]
        if show_progress_bar:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="Encoding", unit="batch")
        parts = [forward({k: v.to(self.device) for k, v in features.items()}).to(self.device) for features in batches]
        emb = torch.cat(parts)  # (n, dim), in length order
        order = order.to(emb.device)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=emb.device)
        return emb[inverse]  # (n, dim), in input order

    def support_embeddings(self, base: torch.Tensor) -> torch.Tensor:
        """g(x_i, S) from g'(x_i): the FCE BiLSTM when enabled, else the identity. (n_support, dim)"""
        return self.support_fce(base) if self.support_fce is not None else base

    def query_embeddings(self, base: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """f(x, S) from f'(x) and g(S): the attention LSTM when FCE is on. (n_query, dim)"""
        return self.query_fce(base, support) if self.query_fce is not None else base

    def log_probs(self, query: torch.Tensor, support: torch.Tensor, support_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
        """log P(y | x, S) of eq. 1 for f(x, S) (n_query, dim) and g(S) (n_support, dim) -> (n_query, n_classes)."""
        return matching.matching_log_probs(
            query,
            support,
            support_labels,
            n_classes,
            temperature=self.temperature,
            metric=self.config.metric,  # type: ignore[arg-type]
            aggregation=self.config.aggregation,  # type: ignore[arg-type]
        )

    def forward(self, objective: str, **batch: Any) -> dict[str, torch.Tensor]:
        """The training loss of one collated batch (textmatch.core.objectives): objective
        "episodes" (eq. 1 over N-way K-shot episodes) or "retrieval" (eq. 2 over a batch's
        documents). One call per step, so DDP sees one forward per backward. Returns
        {"loss", "logits", "targets"}."""
        from .objectives import OBJECTIVES

        if objective not in OBJECTIVES:
            raise TextMatchError(f"unknown training objective {objective!r}; choose one of {sorted(OBJECTIVES)}")
        return OBJECTIVES[objective](self, **batch)

    def episode_log_probs(self, episode: Any, batch_size: int = 64) -> torch.Tensor:
        """Eq. 1 on one episode's queries, with gradients: (n_query, n_way)."""
        g_base = self.embed(self.support_encoder, episode.support_texts, batch_size)  # (k, dim)
        g = self.support_embeddings(g_base)
        f_base = self.embed(self.query_encoder, episode.query_texts, batch_size)  # (q, dim)
        f = self.query_embeddings(f_base, g)
        labels = torch.tensor(episode.support_labels, device=self.device)
        return self.log_probs(f, g, labels, episode.n_way)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int = 32,
        show_progress_bar: bool = False,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        role: str = "query",
    ) -> np.ndarray | torch.Tensor:
        """Embed sentences with f' (role="query") or g' (role="support"), like
        sentence-transformers' `encode`: a string gives (dim,), a list (n, dim)."""
        if role not in ("query", "support"):
            raise TextMatchError(f"role must be 'query' or 'support', got {role!r}")
        single = isinstance(sentences, str)
        texts = validate_texts([sentences] if single else sentences, "sentence")
        encoder = self.query_encoder if role == "query" else self.support_encoder
        with torch.inference_mode(), _eval_mode(self):
            emb = self.embed(encoder, texts, batch_size, show_progress_bar)
            if normalize_embeddings:
                emb = torch.nn.functional.normalize(emb, dim=-1)
        emb = emb[0] if single else emb
        if convert_to_tensor or not convert_to_numpy:
            return emb.clone()
        return emb.cpu().numpy()

    # -- the support set --------------------------------------------------------------------
    def _clear_support(self) -> None:
        self.support_texts: list[str] = []
        self.support_labels: list[Hashable] = []
        self.classes_: list[Hashable] = []
        # Non-persistent buffers: they follow model.to(device) but stay out of model.safetensors.
        self.register_buffer("_support_base", None, persistent=False)  # g'(S), (n_support, dim)
        self.register_buffer("_support_emb", None, persistent=False)  # g(S), (n_support, dim)
        self.register_buffer("_support_label_ids", None, persistent=False)  # (n_support,)
        self._head: tuple[torch.Tensor, torch.Tensor] | None = None  # heads.fit_logistic_regression on S

    @property
    def support_embeddings_(self) -> torch.Tensor | None:
        """g(x_i, S) of the stored support set, (n_support, dim), rows in `support_texts` order;
        None before `fit`. With FCE off it equals `support_base_embeddings_`. (With
        label_names, the class names' rows follow them in the matching layer.)"""
        return None if self._support_emb is None else self._support_emb[: len(self.support_texts)]

    @property
    def support_base_embeddings_(self) -> torch.Tensor | None:
        """g'(x_i) of the stored support set (before FCE), (n_support, dim); None before `fit`."""
        return self._support_base

    @property
    def support_label_ids_(self) -> torch.Tensor | None:
        """Each support example's class as a position in `classes_`, (n_support,); None before `fit`."""
        return None if self._support_label_ids is None else self._support_label_ids[: len(self.support_texts)]

    @property
    def head_(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fitted logistic regression of head="logreg" / "ensemble": weight (n_classes, dim)
        and bias (n_classes,), columns in `classes_` order; None with the matching head or before `fit`."""
        return self._head

    def fit(self, texts: Sequence[str], labels: Sequence[Hashable], append: bool = False, batch_size: int = 32,
            show_progress_bar: bool = False, strict: bool = False) -> "MatchingNetwork":
        """Set the support set S (no training) and cache g(S).

        append=True adds the examples to the current support set, so new classes (or more
        examples of old ones) are used at once without retraining; only the new texts are
        encoded. The same text under two labels is warned about, or refused with strict=True.
        Returns self.
        """
        new_texts, new_labels = validate_support(texts, labels, min_classes=1)
        check_conflicts(new_texts, new_labels, strict=strict)
        with self._fit_lock:
            if append and self._support_base is not None:
                all_texts, all_labels = self.support_texts + new_texts, self.support_labels + new_labels
            else:
                all_texts, all_labels = new_texts, new_labels
            validate_support(all_texts, all_labels, min_classes=2)
            with torch.inference_mode(), _eval_mode(self):
                base = self.embed(self.support_encoder, new_texts, batch_size, show_progress_bar)
            if append and self._support_base is not None:
                base = torch.cat([self._support_base, base])
            self._set_support(all_texts, all_labels, base)
        return self

    def add_examples(self, texts: Sequence[str], labels: Sequence[Hashable]) -> "MatchingNetwork":
        """Add labelled examples (possibly of new classes) to the support set: fit(append=True)."""
        return self.fit(texts, labels, append=True)

    def _set_support(self, texts: list[str], labels: list[Hashable], base: torch.Tensor,
                     head: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        classes = sorted_classes(labels)
        index = {c: i for i, c in enumerate(classes)}
        label_ids = torch.tensor([index[y] for y in labels], device=self.device)
        texts, base = list(texts), base.detach()
        name_texts, name_ids = self.label_examples(classes)
        all_base, all_ids = base, label_ids  # (n_support, dim), (n_support,)
        if name_texts:  # the class names join the examples: (n_support + n_names, dim)
            with torch.inference_mode(), _eval_mode(self):
                name_base = self.embed(self.support_encoder, name_texts, 64)  # (n_names, dim)
            all_base = torch.cat([base, name_base.to(base.dtype)])
            all_ids = torch.cat([label_ids, torch.tensor(name_ids, device=self.device, dtype=label_ids.dtype)])
        with torch.inference_mode(), _eval_mode(self):
            emb = self.support_embeddings(all_base).detach()
        if head is None and self.config.head != "matching":
            head = self._fit_head(texts + name_texts, all_base, all_ids, len(classes))
        with self._support_lock:  # all at once: a prediction sees the old set or the new one
            self.support_texts, self.support_labels, self.classes_ = texts, list(labels), classes
            self._support_label_ids, self._support_base, self._support_emb = all_ids, base, emb
            self._head = head

    def label_examples(self, classes: Sequence[Hashable]) -> tuple[list[str], list[int]]:
        """With `config.label_names`: the class-name examples of `classes` (texts and class
        positions; textmatch.core.label_names), else none."""
        if not self.config.label_names:
            return [], []
        return label_names.label_examples(classes, self.config.label_descriptions)

    def _fit_head(self, texts: list[str], base: torch.Tensor, label_ids: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The logistic regression of `head="logreg"` / `"ensemble"` on f'(x_i) of the support
        examples (g'(x_i) when f' and g' are one encoder; else the texts are encoded with f')."""
        if self.config.share_weights:
            features = base
        else:
            with torch.inference_mode(), _eval_mode(self):
                features = self.embed(self.query_encoder, texts, 64)  # (n_support, dim)
        return heads.fit_logistic_regression(heads.head_features(features.detach()), label_ids, n_classes, self.config.logreg_c)

    def support_view(self) -> SupportView:
        """The support set as the matching layer reads it, taken at once under the lock: the
        classes, g(S) with the class-name rows after the examples (label_names), each row's class
        position and the logistic regression. One view serves a whole prediction (or explanation,
        or diagnosis), so a concurrent `fit` cannot mix two support sets into it."""
        with self._support_lock:
            if self._support_emb is None or self._support_label_ids is None or self._support_base is None:
                raise TextMatchError("the model has no support set yet; call model.fit(texts, labels) first")
            stale_names = len(self._support_emb) != len(self.support_texts) + len(self.label_examples(self.classes_)[0])
            if stale_names or (self.config.head != "matching" and self._head is None):  # config changed after fit
                self._set_support(self.support_texts, self.support_labels, self._support_base)
            texts = tuple(self.support_texts) + tuple(self.label_examples(self.classes_)[0])
            return SupportView(list(self.classes_), self._support_emb, self._support_label_ids, self._head, texts,
                               len(self.support_texts))

    def _load_support(self, texts: list[str], labels: list[Hashable], embeddings_file: Path) -> None:
        base = None
        if embeddings_file.is_file():
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(embeddings_file))
                cached = tensors["support_base"]
            except Exception as exc:  # noqa: BLE001
                raise TextMatchError(
                    f"{embeddings_file} is corrupt ({type(exc).__name__}); delete it to re-encode the support set"
                ) from None
            if cached.shape == (len(texts), self.support_encoder.dim) and cached.is_floating_point():
                base = cached.to(self.device, self.log_temperature.dtype)
        if base is None:
            self.fit(texts, labels)
            return
        head = None  # the saved logistic regression, when it fits this support set (else refitted)
        n_classes, dim = len(sorted_classes(labels)), self.query_encoder.dim
        w, b = tensors.get("head_weight"), tensors.get("head_bias")
        if self.config.head != "matching" and w is not None and b is not None and w.shape == (n_classes, dim) and b.shape == (n_classes,):
            head = (w.to(self.device, self.log_temperature.dtype), b.to(self.device, self.log_temperature.dtype))
        self._set_support(texts, labels, base, head)

    # -- prediction -------------------------------------------------------------------------
    def score_embeddings(self, query_base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1 for precomputed f'(x) embeddings (n, dim), e.g. from `encode(..., normalize_embeddings=False)`:
        class probabilities (n, n_classes) in `classes_` order and each query's best raw
        similarity to any support example (n,). FCE, when on, is applied here."""
        return self._score_view(query_base, self.support_view())

    def _score_view(self, query_base: torch.Tensor, view: SupportView) -> tuple[torch.Tensor, torch.Tensor]:
        details = self.score_details(query_base, view)
        return details.probabilities, details.similarity.max(dim=-1).values  # (n, n_classes), (n,)

    def score_details(self, query_base: torch.Tensor, view: SupportView) -> "ScoreDetails":
        """Everything the heads compute for f'(x) embeddings (n, dim) against one support view:
        f(x, S), the similarities c(f(x), g(x_i)) to every support row, eq. 1's probabilities,
        the logistic regression's (None with the matching head) and the head's combination."""
        if query_base.ndim != 2 or query_base.shape[-1] != view.emb.shape[-1]:
            raise TextMatchError(
                f"query embeddings must have shape (n, {view.emb.shape[-1]}), got {tuple(query_base.shape)}"
            )
        with torch.inference_mode(), _eval_mode(self):
            f_base = query_base.to(self.device, view.emb.dtype)
            f = self.query_embeddings(f_base, view.emb)  # (n, dim)
            lp = self.log_probs(f, view.emb, view.label_ids, len(view.classes))  # (n, n_classes)
            sim = matching.similarity(f, view.emb, self.config.metric)  # type: ignore[arg-type]  # (n, n_rows)
            lr = heads.logreg_probs(heads.head_features(f_base), *view.head) if view.head is not None else None  # (n, n_classes)
            probs = heads.combine(self.config.head, lp.exp(), lr)
            return ScoreDetails(f, sim, lp.exp(), lr, probs)

    def _scores(self, texts: Sequence[str], batch_size: int) -> tuple[torch.Tensor, torch.Tensor, list[Hashable]]:
        """Class probabilities (n, n_classes), best raw similarity to any support (n,), and the
        classes of the columns: all from one support set."""
        view = self.support_view()
        queries = validate_texts(texts, "query")
        probs, best_sim = [], []
        with torch.inference_mode(), _eval_mode(self):
            for start in range(0, len(queries), batch_size):
                f_base = self.embed(self.query_encoder, queries[start : start + batch_size], batch_size)  # (batch, dim)
                p, sim = self._score_view(f_base, view)
                probs.append(p)
                best_sim.append(sim)
        if not probs:
            return torch.zeros(0, len(view.classes)), torch.zeros(0), view.classes
        return torch.cat(probs).cpu(), torch.cat(best_sim).cpu(), view.classes

    def classify(self, texts: Sequence[str], batch_size: int = 64, threshold: float | None = None) -> Prediction:
        """Labels, probabilities and best similarities of `texts` from one encoding of each:
        what `predict` and `predict_proba` return together. With a threshold (argument or
        config), texts whose best probability (or similarity, see `threshold_metric`) is below
        it get `oos_label`."""
        probs, best_sim, classes = self._scores(texts, batch_size)
        return self._labelled(probs, best_sim, classes, threshold)

    def classify_embeddings(self, query_base: torch.Tensor, threshold: float | None = None) -> Prediction:
        """`classify` for precomputed f'(x) embeddings (n, dim), e.g. `encode(texts,
        normalize_embeddings=False, convert_to_tensor=True)` kept for plots: the same labels,
        probabilities and best similarities, without encoding the texts again."""
        view = self.support_view()
        probs, best_sim = self._score_view(query_base, view)
        return self._labelled(probs.cpu(), best_sim.cpu(), view.classes, threshold)

    def _labelled(self, probs: torch.Tensor, best_sim: torch.Tensor, classes: list[Hashable],
                  threshold: float | None) -> Prediction:
        threshold = self.config.threshold if threshold is None else threshold
        check_threshold(threshold, self.config.threshold_metric, self.config.metric)
        top = probs.argmax(dim=-1).tolist() if len(probs) else []
        labels: list[Hashable] = [classes[i] for i in top]
        if threshold is not None:
            score = probs.max(dim=-1).values if self.config.threshold_metric == "probability" else best_sim
            labels = [self.config.oos_label if s < threshold else y for y, s in zip(labels, score.tolist())]
        return Prediction(labels, probs.numpy(), best_sim.numpy(), classes)

    def explain(self, texts: Sequence[str], top_k: int = 3, batch_size: int = 64, threshold: float | None = None,
                nearest_examples: int = 2) -> list["Explanation"]:
        """Why each text gets its label: the predicted label and its probability, the `top_k`
        support examples by attention weight a(x, x_i) of eq. 2 (text, label, weight, cosine),
        and the best example of the runner-up class; with another head than eq. 1, that head's
        probabilities beside eq. 1's and which one decided; with prototypes, the class
        prototypes and their `nearest_examples` nearest support examples. See
        textmatch.core.explanations."""
        from .explanations import explain

        return explain(self, texts, top_k=top_k, batch_size=batch_size, threshold=threshold,
                       nearest_examples=nearest_examples)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """P(y | x, S) of eq. 1 for each text: (n_texts, n_classes), columns in `classes_` order."""
        return self._scores(texts, batch_size)[0].numpy()

    def predict(self, texts: Sequence[str], batch_size: int = 64, threshold: float | None = None) -> list[Hashable]:
        """The most probable class of each text; with a threshold (argument or config), texts whose
        best probability (or similarity, see `threshold_metric`) is below it get `oos_label`."""
        return self.classify(texts, batch_size, threshold).labels

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # model(texts) predicts, as in setfit
        if args and (isinstance(args[0], str) or (isinstance(args[0], (list, tuple)) and args[0] and isinstance(args[0][0], str))):
            texts = [args[0]] if isinstance(args[0], str) else args[0]
            out = self.predict(texts, **kwargs)
            return out[0] if isinstance(args[0], str) else out
        return super().__call__(*args, **kwargs)

    # -- saving -----------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "library_name": LIBRARY_NAME,
            "format_version": FORMAT_VERSION,
            "base_model": self.base_model,
            "matching": self.config.to_dict(),
            "query_encoder": {"type": self.query_encoder.encoder_type, "config": self.query_encoder.config_dict()},
            "classes": [_jsonable(c) for c in self.classes_],
            "model_card_data": self.model_card_data.to_dict(),
        }
        out["matching"]["temperature"] = float(self.temperature.detach())
        if not self.config.share_weights:
            out["support_encoder"] = {
                "type": self.support_encoder.encoder_type,
                "config": self.support_encoder.config_dict(),
            }
        return out

    def save_pretrained(self, save_directory: str | os.PathLike) -> Path:
        """Write config.json, model.safetensors, the encoders' tokenizer/config files, the
        support set and a model card (README.md), so the folder predicts on its own. Written
        through textmatch.files.write_folder: the previous save is replaced as a whole (an
        interrupted save leaves it intact), files textmatch did not write are kept, and one of
        them in the way of a model file is an error."""
        from safetensors.torch import save_file

        with write_folder(save_directory, "model", legacy_model_files, caches=[SUPPORT_EMBEDDINGS_NAME]) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config_dict(), indent=2) + "\n", encoding="utf-8")
            self.query_encoder.save(tmp / "query_encoder")
            if not self.config.share_weights:
                self.support_encoder.save(tmp / "support_encoder")
            # one metadata key (see save_weights)
            save_file(self.weights_state(), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            if self._support_base is not None:
                support = {"texts": self.support_texts, "labels": [_jsonable(y) for y in self.support_labels]}
                (tmp / SUPPORT_NAME).write_text(json.dumps(support, ensure_ascii=False) + "\n", encoding="utf-8")
                cache = {"support_base": self._support_base.cpu().contiguous()}
                if self._head is not None and self.config.head != "matching":
                    cache.update(head_weight=self._head[0].cpu().contiguous(), head_bias=self._head[1].cpu().contiguous())
                save_file(cache, str(tmp / SUPPORT_EMBEDDINGS_NAME))
            writer = type(self).model_card_writer
            if writer is not None:
                (tmp / MODEL_CARD_NAME).write_text(writer(self, str(save_directory)), encoding="utf-8")
        return Path(save_directory).expanduser().resolve()

    def weights_state(self) -> dict[str, torch.Tensor]:
        """The weights as saved: CPU tensors, shared encoder weights once (under query_encoder.)."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not _is_shared_key(k, self)}

    def save_weights(self, path: str | os.PathLike, state: dict[str, torch.Tensor] | None = None) -> None:
        """Write `state` (default: `weights_state()`) to one safetensors file, atomically
        (textmatch.files)."""
        from safetensors.torch import save_file

        with atomic_path(path) as tmp:
            # one metadata key: safetensors writes several in no fixed order, and byte-identical
            # files for identical weights keep Hub uploads deduplicated and diffs honest
            save_file(self.weights_state() if state is None else state, str(tmp), metadata={"format": "pt"})

    def load_weights(self, path: str | os.PathLike, keep_temperature: bool = False) -> None:
        """Load a safetensors file written by `save_weights` (or a model folder's weights):
        `load_weights_state(read_weights(path))`."""
        self.load_weights_state(read_weights(path), keep_temperature, source=str(path))

    def load_weights_state(self, state: dict[str, torch.Tensor], keep_temperature: bool = False,
                           source: str = "the weights") -> None:
        """Load weights as `weights_state()` returns them, strictly: weights of another
        architecture are an error, not a partial load. keep_temperature: keep this model's tau
        (an explicit temperature= override)."""
        state = dict(state)
        if keep_temperature:
            state["log_temperature"] = self.log_temperature.detach().clone()
        state.setdefault("log_temperature", self.log_temperature.detach().clone())
        try:
            self.load_state_dict(_expand_shared(state, self), strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TextMatchError(
                f"{source} does not match the architecture of the model it is loaded into ({first}); save the model again"
            ) from None
        self.reset_backend()  # the weights changed: ONNX exports are redone on next use

    def check_save_directory(self, save_directory: str | os.PathLike) -> None:
        """Raise now the error `save_pretrained(save_directory)` would meet (a file in the way
        that textmatch did not write, another kind of textmatch folder, no permission), e.g.
        before training for minutes; writes nothing."""
        folders = {"query_encoder"} | (set() if self.config.share_weights else {"support_encoder"})
        names = [n for n in OWN_FILES if not n.endswith("_encoder")] + [f"{n}/" for n in sorted(folders)]
        check_target(save_directory, "model", names, legacy_model_files)

    def push_to_hub(self, repo_id: str, **options: Any) -> Any:
        """Save the model (weights as safetensors, config, tokenizer, support set, model card) and
        upload it to the Hub repo `repo_id` in one commit, creating the repo if needed.

        options: `token`, `private`, `commit_message`, `revision`, `create_pr`, as
        `textmatch.hub.push_folder_to_hub` takes them. Log in first with `hf auth login` (or
        set HF_TOKEN), or pass `token=`. Returns huggingface_hub's CommitInfo."""
        from ..hub.push import push_folder_to_hub

        self.model_card_data.model_id = repo_id
        with tempfile.TemporaryDirectory(prefix="textmatch-push-") as tmp:
            return push_folder_to_hub(self.save_pretrained(Path(tmp) / "model"), repo_id, **options)


# -- helpers -----------------------------------------------------------------------------------
def read_textmatch_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The textmatch config in `folder`, or None for a plain transformers folder (or no folder);
    a config.json that is not JSON is an error."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextMatchError(f"{path} is not valid JSON ({exc}); the model folder is corrupt") from None
    if isinstance(data, dict) and data.get("library_name") == LIBRARY_NAME:
        return data
    return None


def _read_support_file(path: Path) -> tuple[list[str], list[Hashable]]:
    """The saved support set (texts, labels), or a TextMatchError naming what is wrong with it."""
    try:
        support = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextMatchError(f"{path} is corrupt ({exc}); save the model again, or delete it and fit a support set") from None
    if not isinstance(support, dict) or "texts" not in support or "labels" not in support:
        raise TextMatchError(f"{path} must hold {{\"texts\": [...], \"labels\": [...]}}; save the model again")
    try:
        return validate_support(support["texts"], support["labels"], min_classes=1)
    except TextMatchError as exc:
        raise TextMatchError(f"{path}: {exc}") from None


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors weights file; a corrupt or truncated one is a clear error."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise TextMatchError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); download or save the model again"
        ) from None


def legacy_model_files(folder: Path) -> list[str]:
    """What a save from before manifests owns in `folder`: the files under OWN_FILES names, when
    its config.json says textmatch. A textmatch index there is not a model folder: an error."""
    if (folder / "index.json").is_file():
        raise TextMatchError(f"{folder} holds a textmatch index; save the model in a folder of its own")
    try:
        if not is_textmatch_folder(folder):
            return []
    except TextMatchError:
        return []  # an unreadable config.json is not ours: it stays, and blocks the save with an error
    return files_under(folder, sorted(OWN_FILES))


def is_textmatch_folder(folder: str | os.PathLike) -> bool:
    """True when `folder` holds a model saved by textmatch (its config.json says so)."""
    return read_textmatch_config(folder) is not None


def _is_shared_key(key: str, model: MatchingNetwork) -> bool:
    return model.config.share_weights and key.startswith("support_encoder.")


def _expand_shared(state: dict[str, torch.Tensor], model: MatchingNetwork) -> dict[str, torch.Tensor]:
    """Saved files hold shared encoder weights once; load_state_dict wants both names."""
    if not model.config.share_weights:
        return state
    out = dict(state)
    for k, v in state.items():
        if k.startswith("query_encoder."):
            out["support_encoder." + k[len("query_encoder.") :]] = v
    return out


def _jsonable(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


class _eval_mode:
    """Context manager: module in eval mode inside, previous mode restored after."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __enter__(self) -> None:
        self.was_training = self.module.training
        self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        self.module.train(self.was_training)

