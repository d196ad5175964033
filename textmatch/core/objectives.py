"""The training objectives of a MatchingNetwork, on batches a trainer's collator tokenised.

`MatchingNetwork.forward(objective=..., **batch)` dispatches here, so one call of the model
(through DDP's wrapper when distributed) computes a whole step's loss. Each returns
{"loss": scalar, "logits": (n_query, n_candidates) scores, "targets": (n_query,)}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from . import matching

if TYPE_CHECKING:
    from .modeling import MatchingNetwork


def episodic_loss(model: "MatchingNetwork", episodes: list[dict[str, Any]], label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Eq. 1 on each episode: P(y | x, S) = sum_i a(x, x_i) y_i with a the softmax over the
    support of cos(f(x, S), g(x_i, S)) / tau (eq. 2); the loss is the mean over episodes of the
    queries' mean -log P(y | x, S) (with label smoothing when > 0).

    episodes: [{"support", "query": tokenize_chunks output, "support_labels" (n_way*k,),
    "query_labels" (n_way*q,), "n_way": int}]. logits: the log-probabilities (n_q_total, n_way).
    """
    losses, log_probs_all, targets_all = [], [], []
    for episode in episodes:
        g = model.support_embeddings(model.embed_tokenized(model.support_encoder, episode["support"]))  # (n_s, dim)
        f = model.query_embeddings(model.embed_tokenized(model.query_encoder, episode["query"]), g)  # (n_q, dim)
        log_probs = model.log_probs(f, g, episode["support_labels"], episode["n_way"])  # (n_q, n_way)
        losses.append(matching.matching_nll(log_probs, episode["query_labels"], label_smoothing))
        log_probs_all.append(log_probs)
        targets_all.append(episode["query_labels"])
    return {"loss": torch.stack(losses).mean(), "logits": torch.cat(log_probs_all), "targets": torch.cat(targets_all)}


def retrieval_loss(model: "MatchingNetwork", queries: dict[str, Any], documents: dict[str, Any], targets: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 2 with each document its own class: logits cos(f'(q), g'(d)) / tau over the batch's
    documents, a query's other relevant documents masked to -inf (neither target nor negative),
    loss the mean -log P(positive | q, S).

    queries / documents: tokenize_chunks output; targets (n_q,): index of each query's positive
    among the documents; mask (n_q, n_docs): True where left out of the query's softmax.
    """
    f = model.embed_tokenized(model.query_encoder, queries)  # (n_q, dim)
    g = model.embed_tokenized(model.support_encoder, documents)  # (n_docs, dim)
    logits = matching.attention_logits(f, g, model.temperature, model.config.metric)  # type: ignore[arg-type]
    logits = logits.masked_fill(mask, float("-inf"))  # (n_q, n_docs)
    loss = matching.matching_nll(logits.log_softmax(dim=-1), targets)
    return {"loss": loss, "logits": logits, "targets": targets}


def paired_views_loss(view1: torch.Tensor, view2: torch.Tensor, temperature: float | torch.Tensor = 0.05, metric: str = "cosine") -> dict[str, torch.Tensor]:
    """Eq. 2 with each text's second view as its class among the batch's second views: the
    unsupervised SimCSE loss (Gao et al. 2021, section 3; sentence-transformers'
    MultipleNegativesRankingLoss on (text, text) pairs, scale = 1 / tau). Pure tensor code.

    view1, view2: (B, dim), row i of both embeds text i. logits (B, B): c(h_i, h'_j) / tau;
    targets (B,): i; loss: mean_i -log softmax_j(logits)[i, i].
    """
    logits = matching.attention_logits(view1, view2, temperature, metric)  # type: ignore[arg-type]  # (B, B)
    targets = torch.arange(len(view1), device=logits.device)  # (B,) row i's partner is column i
    loss = matching.matching_nll(logits.log_softmax(dim=-1), targets)
    return {"loss": loss, "logits": logits, "targets": targets}


def contrastive_loss(model: "MatchingNetwork", texts: dict[str, Any], support_texts: dict[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Unsupervised contrastive loss on dropout views (SimCSE): the batch, tokenised once, is
    encoded twice in train mode, by f' (view 1) then g' (view 2); the two dropout masks make
    the views differ, and `paired_views_loss` contrasts them (the other texts' views are the
    negatives). With f = g (shared weights) both passes run the same encoder.

    texts: tokenize_chunks output (f's tokenizer); support_texts: the same texts tokenised by
    g's tokenizer when f and g are separate encoders (None: `texts`, tokenised once).
    """
    h1 = model.embed_tokenized(model.query_encoder, texts)  # (B, dim), one dropout mask
    h2 = model.embed_tokenized(model.support_encoder, support_texts if support_texts is not None else texts)  # (B, dim), another
    return paired_views_loss(h1, h2, model.temperature, model.config.metric)


OBJECTIVES = {"episodes": episodic_loss, "retrieval": retrieval_loss, "contrastive": contrastive_loss}
