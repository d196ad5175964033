"""Training a MatchingNetwork for retrieval on (query, relevant document) pairs.

The matching loss of Vinyals et al. 2016 with each document its own class: for a batch of B
queries the support set S is the batch's positive documents (each query's positive is a
negative for the others: in-batch negatives) plus the queries' hard negatives, and

    P(d | q, S) = softmax_{d in S}( cos(f(q), g(d)) / tau )                      (eq. 2)

The loss is the mean negative log-likelihood of each query's positive. A query with several
relevant documents trains on one of them per epoch, drawn at random; every other document
of the batch that is relevant to it is masked out of its softmax (it is neither its target
nor a negative), so a document relevant to two queries of a batch never pushes either away.
f' embeds queries (`model.query_encoder`), g' documents (`model.support_encoder`); at
inference `model.encode(queries, role="query")` and `model.encode(docs, role="support")`.

Hard negatives come from the caller as {query_id: [doc_id, ...]} (for instance from a BM25
miner); `hard_negatives=n` in the arguments draws n of each query's list per epoch.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import matching
from ..core import optimization as optim
from ..core.card_data import EXCLUDED_TRAINING_ARGS
from ..core.modeling import MatchingNetwork
from ..core.optimization import OptimizationArguments, TrainOutput, is_int
from ..errors import TextMatchError
from ..files import AtomicFile


@dataclass
class RetrievalTrainingArguments(OptimizationArguments):
    """Settings of retrieval training.

    num_epochs: passes over the training queries; max_steps: when set, the number of steps
    (epochs repeat as needed) instead. batch_size: queries per step (their positives are each
    other's in-batch negatives). hard_negatives: hard negatives per query per step, drawn
    from the mapping given to the trainer (0: in-batch negatives only). query_max_length /
    doc_max_length: tokens kept per query / document while training (at most the encoder's
    own limit). encode_batch_size: texts per encoder forward pass. AdamW with linear warm-up
    over `warmup_ratio` of the steps then linear decay to 0, gradient clipping at
    `max_grad_norm`; the encoders train at `learning_rate`, a learned temperature (if any) at
    `head_learning_rate`.
    """

    learning_rate: float = 2e-5
    num_epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    hard_negatives: int = 1
    query_max_length: int = 64
    doc_max_length: int = 256
    encode_batch_size: int = 32

    def __post_init__(self) -> None:
        self.validate([
            ("num_epochs", is_int(self.num_epochs) and self.num_epochs >= 1, "an integer >= 1"),
            ("max_steps", self.max_steps is None or (is_int(self.max_steps) and self.max_steps >= 1), "an integer >= 1 or None"),
            ("batch_size", is_int(self.batch_size) and self.batch_size >= 1, "an integer >= 1"),
            ("hard_negatives", is_int(self.hard_negatives) and self.hard_negatives >= 0, "an integer >= 0"),
            ("query_max_length", is_int(self.query_max_length) and self.query_max_length >= 2, "an integer >= 2"),
            ("doc_max_length", is_int(self.doc_max_length) and self.doc_max_length >= 2, "an integer >= 2"),
            ("encode_batch_size", is_int(self.encode_batch_size) and self.encode_batch_size >= 1, "an integer >= 1"),
        ])


@dataclass
class RetrievalBatch:
    """One training step: query ids, the positive drawn for each, and each query's hard negatives."""

    query_ids: list[str]
    positive_ids: list[str]
    negative_ids: list[list[str]]


class RetrievalTrainer:
    """Fine-tunes f' and g' of a MatchingNetwork on (query, relevant document) pairs.

    queries: {query_id: text}; corpus: {doc_id: text} (e.g. title + " " + text);
    qrels: {query_id: {doc_id: score}}, score > 0 = relevant (others are ignored);
    hard_negatives: {query_id: [doc_id, ...]}, best first, or None for in-batch negatives only.
    Qrels or hard negatives naming unknown ids are dropped with a warning that counts them.
    A query's own relevant documents are never used as its hard negatives.

    Only the base encoders (and a learned temperature) are trained: retrieval embeds queries
    and documents one by one, so Full Context Embedding layers, if the model has them, are
    left as they are.
    """

    def __init__(
        self,
        model: MatchingNetwork,
        args: RetrievalTrainingArguments | None = None,
        queries: Mapping[str, str] | None = None,
        corpus: Mapping[str, str] | None = None,
        qrels: Mapping[str, Mapping[str, int]] | None = None,
        hard_negatives: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise TextMatchError(f"RetrievalTrainer needs a MatchingNetwork, got {type(model).__name__}")
        for name, value in (("queries", queries), ("corpus", corpus), ("qrels", qrels)):
            if not isinstance(value, Mapping):
                raise TextMatchError(
                    f"RetrievalTrainer needs `{name}` as a mapping of ids ({name} = {type(value).__name__}); "
                    "see load_beir for reading a BEIR folder"
                )
        self.model = model
        self.args = args or RetrievalTrainingArguments()
        self.queries: Mapping[str, str] = queries  # type: ignore[assignment]
        self.corpus: Mapping[str, str] = corpus  # type: ignore[assignment]
        self.log_history: list[dict[str, Any]] = []
        if model.config.fce:
            warnings.warn(
                "retrieval training updates f' and g' only; the model's FCE layers are not used and stay as they are",
                UserWarning,
                stacklevel=2,
            )

        # Training pairs: every query with at least one relevant document, both ids known.
        self.positives: dict[str, list[str]] = {}
        unknown_queries: set[str] = set()
        unknown_docs: set[str] = set()
        dropped_pairs = 0
        for qid, docs in qrels.items():  # type: ignore[union-attr]
            for did, score in docs.items():
                if score is None or score <= 0:
                    continue
                if qid not in self.queries or did not in self.corpus:
                    dropped_pairs += 1
                    if qid not in self.queries:
                        unknown_queries.add(qid)
                    if did not in self.corpus:
                        unknown_docs.add(did)
                    continue
                self.positives.setdefault(qid, []).append(did)
        if dropped_pairs:
            warnings.warn(
                f"qrels: dropped {dropped_pairs} relevant pair(s) naming {len(unknown_queries)} unknown query id(s) "
                f"(e.g. {sorted(unknown_queries)[:3]}) and {len(unknown_docs)} unknown doc id(s) "
                f"(e.g. {sorted(unknown_docs)[:3]}); check that queries, corpus and qrels belong together",
                UserWarning,
                stacklevel=2,
            )
        if not self.positives:
            raise TextMatchError(
                "no training pairs: the qrels name no (query, document) pair with score > 0 whose query is in "
                "`queries` and whose document is in `corpus`"
            )
        self.query_ids: list[str] = list(self.positives)

        # Hard negatives: known docs only, never one of the query's own positives.
        self.hard_negatives: dict[str, list[str]] = {}
        if hard_negatives is not None:
            if not isinstance(hard_negatives, Mapping):
                raise TextMatchError(
                    f"hard_negatives must map query ids to lists of doc ids, got {type(hard_negatives).__name__}"
                )
            if self.args.hard_negatives == 0:
                warnings.warn(
                    "hard negatives were given but args.hard_negatives is 0: they are not used "
                    "(set hard_negatives=n to draw n per query)",
                    UserWarning,
                    stacklevel=2,
                )
            unknown = 0
            for qid, dids in hard_negatives.items():
                if isinstance(dids, str):
                    raise TextMatchError(f"hard_negatives[{qid!r}] must be a list of doc ids, got a string")
                if qid not in self.positives:
                    continue
                own = set(self.positives[qid])
                kept: list[str] = []
                for did in dids:
                    if did not in self.corpus:
                        unknown += 1
                    elif did not in own and did not in kept:
                        kept.append(did)
                if kept:
                    self.hard_negatives[qid] = kept
            if unknown:
                warnings.warn(
                    f"hard_negatives: dropped {unknown} doc id(s) that are not in the corpus", UserWarning, stacklevel=2
                )
        if self.args.batch_size < 2 and not (self.args.hard_negatives and self.hard_negatives):
            raise TextMatchError(
                "batch_size 1 without hard negatives leaves nothing to contrast (the loss is 0): "
                "use batch_size >= 2 or give hard negatives"
            )

    # -- batches ----------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.query_ids) // self.args.batch_size)

    @property
    def total_steps(self) -> int:
        return self.args.max_steps or self.args.num_epochs * self.steps_per_epoch

    def epoch_batches(self, rng: random.Random) -> list[RetrievalBatch]:
        """One epoch: the training queries shuffled into batches, each with one of its positives
        and up to `args.hard_negatives` of its hard negatives drawn at random."""
        order = list(self.query_ids)
        rng.shuffle(order)
        n_neg = self.args.hard_negatives
        batches = []
        for start in range(0, len(order), self.args.batch_size):
            qids = order[start : start + self.args.batch_size]
            positives = [rng.choice(self.positives[q]) for q in qids]
            negatives = []
            for q in qids:
                pool = self.hard_negatives.get(q, []) if n_neg else []
                negatives.append(rng.sample(pool, min(n_neg, len(pool))))
            batches.append(RetrievalBatch(qids, positives, negatives))
        return batches

    def support_set(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """The batch's support set and what each query may attend to.

        Returns doc_ids (the batch's positives, then its hard negatives, each document once),
        targets (n_query,): the index of each query's positive in doc_ids, and mask
        (n_query, n_docs): True where a document is relevant to the query but is not its target
        (left out of its softmax).
        """
        if len(query_ids) != len(positive_ids):
            raise TextMatchError(f"{len(query_ids)} query ids but {len(positive_ids)} positives")
        negative_ids = negative_ids if negative_ids is not None else [[] for _ in query_ids]
        if len(negative_ids) != len(query_ids):
            raise TextMatchError(f"{len(query_ids)} query ids but {len(negative_ids)} lists of negatives")
        index: dict[str, int] = {}
        for did in list(positive_ids) + [d for negs in negative_ids for d in negs]:
            index.setdefault(did, len(index))
        doc_ids = list(index)
        targets = torch.tensor([index[d] for d in positive_ids], dtype=torch.long)
        mask = torch.zeros(len(query_ids), len(doc_ids), dtype=torch.bool)
        for i, qid in enumerate(query_ids):
            for did in self.positives.get(qid, ()):
                j = index.get(did)
                if j is not None and j != int(targets[i]):
                    mask[i, j] = True
        return doc_ids, targets, mask

    # -- the loss ---------------------------------------------------------------------------
    def batch_logits(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Attention logits cos(f(q), g(d)) / tau over the batch's support set, with each query's
        other relevant documents masked to -inf: (logits (n_query, n_docs), targets, doc_ids).
        Gradients flow when grad mode is on; the model's train / eval mode is left as it is."""
        model, args = self.model, self.args
        doc_ids, targets, mask = self.support_set(query_ids, positive_ids, negative_ids)
        with model.query_encoder.truncated_to(args.query_max_length):
            f = model.embed(model.query_encoder, [self.queries[q] for q in query_ids], args.encode_batch_size)
        with model.support_encoder.truncated_to(args.doc_max_length):
            g = model.embed(model.support_encoder, [self.corpus[d] for d in doc_ids], args.encode_batch_size)
        logits = matching.attention_logits(f, g, model.temperature, model.config.metric)  # type: ignore[arg-type]
        logits = logits.masked_fill(mask.to(logits.device), float("-inf"))  # (n_query, n_docs)
        return logits, targets.to(logits.device), doc_ids

    def compute_loss(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> torch.Tensor:
        """Mean -log P(positive | query, S) over the batch (eq. 2, each document its own class)."""
        logits, targets, _ = self.batch_logits(query_ids, positive_ids, negative_ids)
        return matching.matching_nll(logits.log_softmax(dim=-1), targets)

    # -- training ---------------------------------------------------------------------------
    def _record_model_card(self) -> None:
        card = self.model.model_card_data
        training_args = {k: v for k, v in self.args.to_dict().items() if k not in EXCLUDED_TRAINING_ARGS}
        training_args["objective"] = "retrieval"
        card.training_args = training_args
        card.eval_results = []  # results of the weights before training no longer hold

    def train(self) -> TrainOutput:
        args, model = self.args, self.model
        optim.set_seed(args.seed)
        rng = random.Random(args.seed)
        device = optim.resolve_device(args.device)
        model.to(device)
        model.train()
        optimizer = optim.make_optimizer(self.model, self.args.learning_rate, self.args.head_learning_rate, self.args.weight_decay)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        total = self.total_steps
        scheduler = optim.linear_warmup_decay(optimizer, total, self.args.warmup_ratio)
        self.log_history = []
        self._record_model_card()
        log_file = None
        completed = False
        if args.output_dir:
            # the log replaces the previous run's only when this run completes (textmatch.files)
            log_file = AtomicFile(Path(args.output_dir) / "training_log.jsonl")

        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="Training", unit="step", disable=not args.show_progress_bar, file=sys.stderr)
        step, epoch = 0, 0
        total_loss = running_loss = 0.0
        start = time.perf_counter()
        try:
            while step < total:
                epoch += 1
                for batch in self.epoch_batches(rng):
                    if step >= total:
                        break
                    step += 1
                    logits, targets, doc_ids = self.batch_logits(batch.query_ids, batch.positive_ids, batch.negative_ids)
                    loss = matching.matching_nll(logits.log_softmax(dim=-1), targets)
                    learning_rate = optimizer.param_groups[0]["lr"]  # the rate this step uses
                    grad_norm = optim.optimizer_step(loss, params, optimizer, scheduler, args.max_grad_norm)

                    loss_value = float(loss.detach())
                    acc = float((logits.detach().argmax(-1) == targets).float().mean())
                    total_loss += loss_value
                    beta = 0.9 if step > 1 else 0.0
                    running_loss = beta * running_loss + (1 - beta) * loss_value
                    record: dict[str, Any] = {
                        "step": step,
                        "epoch": epoch,
                        "loss": round(loss_value, 6),
                        "accuracy": round(acc, 6),
                        "support_size": len(doc_ids),
                        "learning_rate": learning_rate,
                        "grad_norm": round(float(grad_norm), 6),
                        "temperature": round(float(model.temperature.detach()), 6),
                    }
                    self.log_history.append(record)
                    if log_file is not None:
                        log_file.write(json.dumps(record) + "\n")
                        log_file.flush()
                    bar.update(1)
                    bar.set_postfix(loss=f"{running_loss:.3f}", epoch=epoch)
            completed = True
        finally:
            bar.close()
            if log_file is not None:
                log_file.commit() if completed else log_file.discard()
            model.eval()
            model.reset_backend()  # the weights changed: ONNX exports are redone on next use
        runtime = time.perf_counter() - start

        if model.support_embeddings_ is not None:  # a stored support set: re-encode it with the new g'
            model.fit(model.support_texts, model.support_labels, batch_size=args.encode_batch_size)
        return TrainOutput(
            global_step=step,
            training_loss=total_loss / max(1, step),
            best_metric=None,
            best_step=None,
            train_runtime=runtime,
            log_history=copy.deepcopy(self.log_history),
        )
