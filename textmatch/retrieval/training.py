"""Training a MatchingNetwork for retrieval on (query, relevant document) pairs, on Hugging
Face's Trainer (textmatch.core.trainer_base).

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

Data order: the training run is unrolled into a sequence of batches. Epoch e (1-based)
shuffles the training queries with `random.Random(f"{seed}:{e}")` and cuts them into
ceil(n_queries / B) batches (the last one may be smaller; a batch never spans two epochs);
batch i of the run is batch i % steps_per_epoch of epoch i // steps_per_epoch + 1, so it
depends only on (seed, i), and a resumed run trains on the batches an uninterrupted one would.
Under torchrun / accelerate launch with W processes and gradient_accumulation_steps G, one
optimizer step takes W * G consecutive batches, process r the batches r, r + W, ... of them
(Accelerate's sharding), and DDP averages the gradients. In-batch negatives are per process:
a query's softmax runs over its own process's batch, not over the documents of all ranks.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback

from ..core.modeling import MatchingNetwork, tokenize_chunks
from ..core.optimization import OptimizationArguments, is_int
from ..core.trainer_base import EpochBatchDataset, EpochBatchTrainer
from ..errors import TextMatchError


@dataclass
class RetrievalTrainingArguments(OptimizationArguments):
    """Settings of retrieval training: Hugging Face's TrainingArguments (see
    `OptimizationArguments` for textmatch's defaults and fields) and these fields.

    num_train_epochs: passes over the training queries (default 2; a fraction trains on the
        first batches of the last epoch). Two passes beat one on held-out SciFact train
        queries (hybrid nDCG@10 76.40 vs 75.59, dense 70.65 vs 70.04; results/retrieval_dev.md).
    max_steps: when > 0, the number of optimizer steps instead (epochs repeat as needed);
        -1 (the default): from num_train_epochs.
    per_device_train_batch_size: queries per batch and process (default 16): their positives
        are each other's in-batch negatives. Under torchrun / accelerate launch each process
        trains on its own batches and its queries are contrasted with its own batch only
        (negatives are not gathered across processes).
    hard_negatives: hard negatives per query per epoch, drawn from the mapping given to the
        trainer (0: in-batch negatives only).
    model_negatives: more hard negatives per query per epoch, mined by the model being trained
        (textmatch.retrieval.mining): at the start of every epoch the corpus is encoded with the
        current g' (documents cut at `mining_max_length` tokens) and each query's
        `mining_depth` best non-relevant documents form its pool (ANCE's refresh). 0 (the
        default): none. On held-out SciFact train queries, 1 raised dense nDCG@10 (72.20 vs
        70.65) but lowered the hybrid search, the default (75.96 vs 76.40), and cost 270 s
        of mining per run (results/retrieval_dev.md).
    query_max_length / doc_max_length: tokens kept per query / document while training (at most
        the encoder's own limit).
    learning_rate: the encoders' rate (default 2e-5); a learned temperature trains at
        `head_learning_rate`.
    encode_batch_size: texts per encoder forward pass (a batch's queries, and its documents,
        are encoded in length-sorted chunks of this size).

    The schedule is Hugging Face's (`lr_scheduler_type`, default linear): warm-up over
    `warmup_steps` (a ratio when < 1, default 0.1 of the steps), then linear decay to 0;
    gradients clipped at `max_grad_norm`.
    """

    learning_rate: float = 2e-5
    num_train_epochs: float = 2
    per_device_train_batch_size: int = 16
    hard_negatives: int = 1
    model_negatives: int = 0
    mining_depth: int = 30
    mining_max_length: int = 128
    query_max_length: int = 64
    doc_max_length: int = 256

    def __post_init__(self) -> None:
        self.validate([
            *self.epoch_checks(),
            ("per_device_train_batch_size", is_int(self.per_device_train_batch_size) and self.per_device_train_batch_size >= 1,
             "an integer >= 1"),
            ("hard_negatives", is_int(self.hard_negatives) and self.hard_negatives >= 0, "an integer >= 0"),
            ("model_negatives", is_int(self.model_negatives) and self.model_negatives >= 0, "an integer >= 0"),
            ("mining_depth", is_int(self.mining_depth) and self.mining_depth >= max(1, self.model_negatives),
             f"an integer >= model_negatives ({self.model_negatives}) and >= 1"),
            ("mining_max_length", is_int(self.mining_max_length) and self.mining_max_length >= 2, "an integer >= 2"),
            ("query_max_length", is_int(self.query_max_length) and self.query_max_length >= 2, "an integer >= 2"),
            ("doc_max_length", is_int(self.doc_max_length) and self.doc_max_length >= 2, "an integer >= 2"),
        ])
        super().__post_init__()


# The fields of RetrievalTrainingArguments the model card records (with OptimizationArguments'
# RECIPE_HF_ARGS: learning rate, batch size, seed, ...).
RECIPE_FIELDS = ("num_train_epochs", "max_steps", "hard_negatives", "model_negatives", "mining_depth", "mining_max_length",
                 "query_max_length", "doc_max_length", "head_learning_rate")


@dataclass
class RetrievalBatch:
    """One batch: query ids, the positive drawn for each, each query's hard negatives, and the
    (1-based) epoch the batch belongs to."""

    query_ids: list[str]
    positive_ids: list[str]
    negative_ids: list[list[str]]
    epoch: int = 1


def support_set(
    positives: Mapping[str, Sequence[str]],
    query_ids: Sequence[str],
    positive_ids: Sequence[str],
    negative_ids: Sequence[Sequence[str]] | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """The batch's support set and what each query may attend to (`positives`: each query's
    relevant documents). Returns doc_ids (the batch's positives, then its hard negatives, each
    document once), targets (n_query,): the index of each query's positive in doc_ids, and mask
    (n_query, n_docs): True where a document is relevant to the query but is not its target
    (left out of its softmax)."""
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
        for did in positives.get(qid, ()):
            j = index.get(did)
            if j is not None and j != int(targets[i]):
                mask[i, j] = True
    return doc_ids, targets, mask


@dataclass
class RetrievalCollator:
    """Tokenises one batch (the dataloader's batch size is 1 batch): its queries with f's
    tokenizer cut at `query_max_length` tokens, its support set (`support_set`) with g's cut at
    `doc_max_length`, each sorted by length in chunks of `encode_batch_size`."""

    model: MatchingNetwork = field(repr=False)
    queries: Mapping[str, str] = field(repr=False)
    corpus: Mapping[str, str] = field(repr=False)
    positives: Mapping[str, Sequence[str]] = field(repr=False)
    query_max_length: int
    doc_max_length: int
    encode_batch_size: int

    @property
    def query_encoder(self) -> Any:
        return self.model.query_encoder

    @property
    def support_encoder(self) -> Any:
        return self.model.support_encoder

    def collate(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        """-> (the keyword arguments of MatchingNetwork.forward (objectives.retrieval_loss), doc_ids)."""
        doc_ids, targets, mask = support_set(self.positives, query_ids, positive_ids, negative_ids)
        with self.query_encoder.truncated_to(self.query_max_length):
            queries = tokenize_chunks(self.query_encoder, [self.queries[q] for q in query_ids], self.encode_batch_size)
        with self.support_encoder.truncated_to(self.doc_max_length):
            documents = tokenize_chunks(self.support_encoder, [self.corpus[d] for d in doc_ids], self.encode_batch_size)
        inputs = {"objective": "retrieval", "queries": queries, "documents": documents, "targets": targets, "mask": mask}
        return inputs, doc_ids

    def __call__(self, items: list[RetrievalBatch]) -> dict[str, Any]:
        """-> the keyword arguments of MatchingNetwork.forward."""
        if len(items) != 1:
            raise TextMatchError(f"RetrievalCollator takes one batch at a time, got {len(items)}")
        batch = items[0]
        return self.collate(batch.query_ids, batch.positive_ids, batch.negative_ids)[0]


class RetrievalTrainer(EpochBatchTrainer):
    """Fine-tunes f' and g' of a MatchingNetwork on (query, relevant document) pairs, on
    Hugging Face's Trainer.

    queries: {query_id: text}; corpus: {doc_id: text} (e.g. title + " " + text);
    qrels: {query_id: {doc_id: score}}, score > 0 = relevant (others are ignored);
    hard_negatives: {query_id: [doc_id, ...]}, best first, or None for in-batch negatives only.
    Qrels or hard negatives naming unknown ids are dropped with a warning that counts them.
    A query's own relevant documents are never used as its hard negatives.
    train_dataset_name: what the model card names the training data. callbacks: more Hugging
    Face TrainerCallbacks.

    Only the base encoders (and a learned temperature) are trained: retrieval embeds queries
    and documents one by one, so Full Context Embedding layers, if the model has them, are
    left as they are.

    `train(resume_from_checkpoint=...)` returns a TrainOutput; `log_history` holds one record
    per step (as `output_dir/training_log.jsonl`): step, epoch (of the step's batch, 1-based),
    loss, accuracy (of the queries' top document), support_size (documents in the batch),
    learning_rate (the rate the step used), grad_norm (before clipping), temperature. With
    gradient accumulation or several processes, loss and accuracy are means over the step's
    batches, epoch and support_size those of the main process's last batch of the step.
    """

    log_order = ("epoch", "loss", "accuracy", "support_size", "learning_rate", "grad_norm", "temperature")
    progress_unit = "step"

    def __init__(
        self,
        model: MatchingNetwork,
        args: RetrievalTrainingArguments | None = None,
        queries: Mapping[str, str] | None = None,
        corpus: Mapping[str, str] | None = None,
        qrels: Mapping[str, Mapping[str, int]] | None = None,
        hard_negatives: Mapping[str, Sequence[str]] | None = None,
        train_dataset_name: str | None = None,
        callbacks: list[TrainerCallback] | None = None,
    ) -> None:
        if not isinstance(model, MatchingNetwork):
            raise TextMatchError(f"RetrievalTrainer needs a MatchingNetwork, got {type(model).__name__}")
        for name, value in (("queries", queries), ("corpus", corpus), ("qrels", qrels)):
            if not isinstance(value, Mapping):
                raise TextMatchError(
                    f"RetrievalTrainer needs `{name}` as a mapping of ids ({name} = {type(value).__name__}); "
                    "see load_beir for reading a BEIR folder"
                )
        args = args if args is not None else RetrievalTrainingArguments()
        if not isinstance(args, RetrievalTrainingArguments):
            raise TextMatchError(f"RetrievalTrainer needs RetrievalTrainingArguments, got {type(args).__name__}")
        self.queries: Mapping[str, str] = queries  # type: ignore[assignment]
        self.corpus: Mapping[str, str] = corpus  # type: ignore[assignment]
        if model.config.fce:
            warnings.warn(
                "retrieval training updates f' and g' only; the model's FCE layers are not used and stay as they are",
                UserWarning,
                stacklevel=2,
            )
        self.positives = self._training_pairs(qrels)  # type: ignore[arg-type]
        self.query_ids: list[str] = list(self.positives)
        self.hard_negatives = self._hard_negatives(hard_negatives, args.hard_negatives)
        self.batch_size: int = args.per_device_train_batch_size
        self.n_hard_negatives: int = args.hard_negatives
        self.n_model_negatives: int = args.model_negatives
        self.mined_negatives: dict[str, list[str]] = {}  # the model's pool of the epoch drawn last
        self.mining_seconds: float = 0.0  # spent mining with the model, all epochs
        self.seed: int = args.seed
        if self.batch_size < 2 and not ((self.n_hard_negatives and self.hard_negatives) or self.n_model_negatives):
            raise TextMatchError(
                "per_device_train_batch_size 1 without hard negatives leaves nothing to contrast (the loss is 0): "
                "use per_device_train_batch_size >= 2 or give hard negatives"
            )

        per_step = args.world_size * args.gradient_accumulation_steps  # batches per optimizer step
        if args.max_steps > 0:
            total_steps = args.max_steps
        else:  # the epsilon keeps 0.3 * 10 batches at 3 steps, not 4
            total_steps = max(1, math.ceil(args.num_train_epochs * self.steps_per_epoch / per_step - 1e-9))
        own = self.own_copy(args, max_steps=total_steps, eval_strategy="no")
        self.collator = RetrievalCollator(
            model, self.queries, self.corpus, self.positives, own.query_max_length, own.doc_max_length, own.encode_batch_size
        )
        card_args = own.recipe(RECIPE_FIELDS)
        card_args["objective"] = "retrieval"
        self._support_size: int | None = None
        super().__init__(
            model,
            own,
            EpochBatchDataset(self._draw_epoch, self.steps_per_epoch, total_steps * per_step),
            self.collator,
            card_args,
            dataset_name=train_dataset_name,
            callbacks=callbacks,
        )

    # -- the training data ------------------------------------------------------------------
    def _training_pairs(self, qrels: Mapping[str, Mapping[str, int]]) -> dict[str, list[str]]:
        """Every query with at least one relevant document, both ids known."""
        positives: dict[str, list[str]] = {}
        unknown_queries: set[str] = set()
        unknown_docs: set[str] = set()
        dropped_pairs = 0
        for qid, docs in qrels.items():
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
                positives.setdefault(qid, []).append(did)
        if dropped_pairs:
            warnings.warn(
                f"qrels: dropped {dropped_pairs} relevant pair(s) naming {len(unknown_queries)} unknown query id(s) "
                f"(e.g. {sorted(unknown_queries)[:3]}) and {len(unknown_docs)} unknown doc id(s) "
                f"(e.g. {sorted(unknown_docs)[:3]}); check that queries, corpus and qrels belong together",
                UserWarning,
                stacklevel=3,
            )
        if not positives:
            raise TextMatchError(
                "no training pairs: the qrels name no (query, document) pair with score > 0 whose query is in "
                "`queries` and whose document is in `corpus`"
            )
        return positives

    def _hard_negatives(self, hard_negatives: Mapping[str, Sequence[str]] | None, n_per_query: int) -> dict[str, list[str]]:
        """Known docs only, never one of the query's own positives."""
        kept_negatives: dict[str, list[str]] = {}
        if hard_negatives is None:
            return kept_negatives
        if not isinstance(hard_negatives, Mapping):
            raise TextMatchError(f"hard_negatives must map query ids to lists of doc ids, got {type(hard_negatives).__name__}")
        if n_per_query == 0:
            warnings.warn(
                "hard negatives were given but args.hard_negatives is 0: they are not used "
                "(set hard_negatives=n to draw n per query)",
                UserWarning,
                stacklevel=3,
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
                kept_negatives[qid] = kept
        if unknown:
            warnings.warn(f"hard_negatives: dropped {unknown} doc id(s) that are not in the corpus", UserWarning, stacklevel=3)
        return kept_negatives

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch: ceil(training queries / per_device_train_batch_size). (An optimizer
        step takes processes * gradient_accumulation_steps of them.)"""
        return -(-len(self.query_ids) // self.batch_size)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the run (`max_steps` when > 0, else from num_train_epochs)."""
        return int(self.args.max_steps)

    def epoch_batches(self, rng: random.Random, epoch: int = 1) -> list[RetrievalBatch]:
        """One epoch: the training queries shuffled into batches, each with one of its positives,
        up to `hard_negatives` of its given hard negatives and up to `model_negatives` of the
        model's pool (`mined_negatives`, when mined), drawn at random."""
        order = list(self.query_ids)
        rng.shuffle(order)
        n_neg, n_model = self.n_hard_negatives, self.n_model_negatives
        batches = []
        for start in range(0, len(order), self.batch_size):
            qids = order[start : start + self.batch_size]
            positives = [rng.choice(self.positives[q]) for q in qids]
            negatives = []
            for q in qids:
                pool = self.hard_negatives.get(q, []) if n_neg else []
                drawn = rng.sample(pool, min(n_neg, len(pool)))
                mined = [d for d in self.mined_negatives.get(q, []) if d not in drawn] if n_model else []
                negatives.append(drawn + rng.sample(mined, min(n_model, len(mined))))
            batches.append(RetrievalBatch(qids, positives, negatives, epoch))
        return batches

    def _draw_epoch(self, epoch: int) -> list[RetrievalBatch]:
        if self.n_model_negatives:
            self.mine_negatives()
        return self.epoch_batches(random.Random(f"{self.seed}:{epoch}"), epoch)

    def mine_negatives(self) -> dict[str, list[str]]:
        """Refresh `mined_negatives` with the model as it is now (see `model_negatives`): each
        training query's `mining_depth` best non-relevant documents. Called at the start of every
        epoch when model_negatives > 0; a resumed run mines with the resumed model."""
        import time

        from .mining import mine_model_negatives

        start = time.perf_counter()
        args = self.args
        self.mined_negatives = mine_model_negatives(
            self.matching_model, self.queries, self.corpus, self.positives, n=args.mining_depth,
            depth=args.mining_depth, max_length=args.mining_max_length, batch_size=args.encode_batch_size, seed=None)
        self.mining_seconds += time.perf_counter() - start
        return self.mined_negatives

    def support_set(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """The batch's support set: `support_set` with this trainer's relevant documents."""
        return support_set(self.positives, query_ids, positive_ids, negative_ids)

    # -- the loss ---------------------------------------------------------------------------
    def batch_outputs(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[dict[str, torch.Tensor], list[str]]:
        """The training objective on one batch, as a step computes it (the collator, then
        `model(objective="retrieval", ...)`): ({"loss", "logits", "targets"}, doc_ids)."""
        inputs, doc_ids = self.collator.collate(query_ids, positive_ids, negative_ids)
        model = self.matching_model
        inputs["targets"] = inputs["targets"].to(model.device)
        inputs["mask"] = inputs["mask"].to(model.device)
        return model(**inputs), doc_ids

    def batch_logits(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """Attention logits cos(f(q), g(d)) / tau over the batch's support set, with each query's
        other relevant documents masked to -inf: (logits (n_query, n_docs), targets, doc_ids).
        Gradients flow when grad mode is on; the model's train / eval mode is left as it is."""
        outputs, doc_ids = self.batch_outputs(query_ids, positive_ids, negative_ids)
        return outputs["logits"], outputs["targets"], doc_ids

    def batch_loss(
        self, query_ids: Sequence[str], positive_ids: Sequence[str], negative_ids: Sequence[Sequence[str]] | None = None
    ) -> torch.Tensor:
        """Mean -log P(positive | query, S) over the batch (eq. 2, each document its own class)."""
        return self.batch_outputs(query_ids, positive_ids, negative_ids)[0]["loss"]

    # -- the Trainer's hooks ----------------------------------------------------------------
    def note_batch(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        self._support_size = int(inputs["mask"].shape[1])

    def batch_extras(self) -> dict[str, Any]:
        """support_size: the documents of the step's last batch."""
        return {} if self._support_size is None else {"support_size": self._support_size}
