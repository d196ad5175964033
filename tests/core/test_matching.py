"""textmatch.core.matching against naive pure-Python loop implementations (torchmeta style).

Every reference below is written with Python floats and the `math` module only, straight
from the equations of Vinyals et al. 2016 (eqs. 1-2) and Snell et al. 2017, so that a
vectorisation or masking mistake in the library cannot be reproduced by the reference.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from textmatch import TextMatchError
from textmatch.core import matching

DT = torch.float64

# (n_query, n_support, dim, n_classes)
SHAPES = [(1, 2, 3, 2), (4, 7, 5, 3), (6, 10, 16, 5), (3, 12, 8, 4)]


# -- naive references ----------------------------------------------------------------------
def naive_cosine(queries, supports):
    out = []
    for q in queries:
        row = []
        for s in supports:
            dot = sum(a * b for a, b in zip(q, s))
            nq = math.sqrt(sum(a * a for a in q))
            ns = math.sqrt(sum(b * b for b in s))
            row.append(dot / (nq * ns))
        out.append(row)
    return out


def naive_neg_sq_euclidean(queries, supports):
    return [[-sum((a - b) ** 2 for a, b in zip(q, s)) for s in supports] for q in queries]


def naive_similarity(queries, supports, metric):
    return naive_cosine(queries, supports) if metric == "cosine" else naive_neg_sq_euclidean(queries, supports)


def naive_softmax_rows(logits):
    out = []
    for row in logits:
        exps = [math.exp(v) for v in row]
        total = sum(exps)
        out.append([e / total for e in exps])
    return out


def naive_attention(queries, supports, temperature, metric):
    sims = naive_similarity(queries, supports, metric)
    return naive_softmax_rows([[s / temperature for s in row] for row in sims])


def naive_class_log_probs(logits, labels, n_classes):
    """log sum_{i: y_i = c} a(x, x_i), a = softmax of the logits; -inf for an empty class."""
    out = []
    for row in naive_softmax_rows(logits):
        per_class = []
        for c in range(n_classes):
            p = 0.0
            for a, y in zip(row, labels):
                if y == c:
                    p += a
            per_class.append(math.log(p) if p > 0 else float("-inf"))
        out.append(per_class)
    return out


def naive_prototypes(embeddings, labels, n_classes):
    dim = len(embeddings[0])
    protos = []
    for c in range(n_classes):
        members = [e for e, y in zip(embeddings, labels) if y == c]
        protos.append([sum(m[d] for m in members) / len(members) for d in range(dim)])
    return protos


def naive_matching_log_probs(queries, supports, labels, n_classes, temperature, metric, aggregation):
    if aggregation == "prototype":
        protos = naive_prototypes(supports, labels, n_classes)
        att = naive_attention(queries, protos, temperature, metric)
        return [[math.log(a) for a in row] for row in att]
    sims = naive_similarity(queries, supports, metric)
    logits = [[s / temperature for s in row] for row in sims]
    return naive_class_log_probs(logits, labels, n_classes)


def naive_nll(log_probs, targets, eps=0.0):
    """Cross-entropy against (1 - eps) one-hot + eps / C uniform, averaged over queries."""
    total = 0.0
    for row, t in zip(log_probs, targets):
        n_classes = len(row)
        loss = 0.0
        for c, lp in enumerate(row):
            weight = (1.0 - eps) * (1.0 if c == t else 0.0) + eps / n_classes
            if weight:
                loss -= weight * lp
        total += loss
    return total / len(targets)


# -- helpers -------------------------------------------------------------------------------
def rand(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=DT)


def labels_covering(gen, n_support, n_classes):
    """Support labels in [0, n_classes) with every class present, in shuffled order."""
    assert n_support >= n_classes
    base = list(range(n_classes)) + torch.randint(0, n_classes, (n_support - n_classes,), generator=gen).tolist()
    perm = torch.randperm(n_support, generator=gen).tolist()
    return torch.tensor([base[i] for i in perm])


def t64(values):
    return torch.tensor(values, dtype=DT)


# -- similarity ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_cosine_similarity_matrix_matches_loop(shape):
    n_q, n_s, dim, _ = shape
    gen = torch.Generator().manual_seed(1)
    q, s = rand(gen, n_q, dim) * 3.0, rand(gen, n_s, dim) * 0.2
    got = matching.cosine_similarity_matrix(q, s)
    assert got.shape == (n_q, n_s)
    torch.testing.assert_close(got, t64(naive_cosine(q.tolist(), s.tolist())), rtol=1e-12, atol=1e-12)
    assert bool((got.abs() <= 1.0 + 1e-12).all())


def test_cosine_of_a_zero_vector_is_zero_not_nan():
    q = torch.zeros(2, 4, dtype=DT)
    s = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    got = matching.cosine_similarity_matrix(q, s)
    assert torch.equal(got, torch.zeros(2, 3, dtype=DT))


@pytest.mark.parametrize("shape", SHAPES)
def test_neg_squared_euclidean_matches_loop(shape):
    n_q, n_s, dim, _ = shape
    gen = torch.Generator().manual_seed(2)
    q, s = rand(gen, n_q, dim), rand(gen, n_s, dim) + 0.5
    got = matching.neg_squared_euclidean(q, s)
    assert got.shape == (n_q, n_s)
    torch.testing.assert_close(got, t64(naive_neg_sq_euclidean(q.tolist(), s.tolist())), rtol=1e-10, atol=1e-10)


def test_neg_squared_euclidean_of_identical_points_is_zero_and_never_positive():
    gen = torch.Generator().manual_seed(3)
    x = rand(gen, 5, 7) * 100.0  # large norms: q2 - 2 q.s + s2 cancels badly
    got = matching.neg_squared_euclidean(x, x)
    assert bool((got <= 0).all())
    torch.testing.assert_close(got.diagonal(), torch.zeros(5, dtype=DT), rtol=0, atol=1e-8)


def test_similarity_dispatch_and_unknown_metric():
    gen = torch.Generator().manual_seed(4)
    q, s = rand(gen, 2, 3), rand(gen, 4, 3)
    torch.testing.assert_close(matching.similarity(q, s, "cosine"), t64(naive_cosine(q.tolist(), s.tolist())))
    torch.testing.assert_close(
        matching.similarity(q, s, "euclidean"), t64(naive_neg_sq_euclidean(q.tolist(), s.tolist()))
    )
    with pytest.raises(TextMatchError, match="unknown metric 'dot'"):
        matching.similarity(q, s, "dot")  # type: ignore[arg-type]


# -- attention (eq. 2) ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("metric,temperature", [("cosine", 0.05), ("cosine", 1.0), ("euclidean", 0.5), ("euclidean", 3.0)])
def test_attention_matches_exp_over_sum_loop(shape, metric, temperature):
    n_q, n_s, dim, _ = shape
    gen = torch.Generator().manual_seed(5)
    q, s = rand(gen, n_q, dim), rand(gen, n_s, dim)
    got = matching.attention(q, s, temperature=temperature, metric=metric)
    assert got.shape == (n_q, n_s)
    torch.testing.assert_close(got.sum(-1), torch.ones(n_q, dtype=DT), rtol=0, atol=1e-12)
    assert bool((got >= 0).all())
    expected = naive_attention(q.tolist(), s.tolist(), temperature, metric)
    torch.testing.assert_close(got, t64(expected), rtol=1e-9, atol=1e-12)


def test_attention_accepts_a_tensor_temperature():
    gen = torch.Generator().manual_seed(6)
    q, s = rand(gen, 3, 4), rand(gen, 5, 4)
    tau = torch.tensor(0.2, dtype=DT)
    got = matching.attention(q, s, temperature=tau)
    torch.testing.assert_close(got, t64(naive_attention(q.tolist(), s.tolist(), 0.2, "cosine")))


def test_attention_logits_are_similarity_over_temperature():
    gen = torch.Generator().manual_seed(7)
    q, s = rand(gen, 3, 4), rand(gen, 5, 4)
    got = matching.attention_logits(q, s, temperature=0.25, metric="euclidean")
    expected = [[v / 0.25 for v in row] for row in naive_neg_sq_euclidean(q.tolist(), s.tolist())]
    torch.testing.assert_close(got, t64(expected))


# -- class_log_probs (eq. 1) ---------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_class_log_probs_matches_loop(shape):
    n_q, n_s, _, n_classes = shape
    gen = torch.Generator().manual_seed(8)
    logits = rand(gen, n_q, n_s) * 4.0
    labels = labels_covering(gen, n_s, n_classes)
    got = matching.class_log_probs(logits, labels, n_classes)
    assert got.shape == (n_q, n_classes)
    expected = naive_class_log_probs(logits.tolist(), labels.tolist(), n_classes)
    torch.testing.assert_close(got, t64(expected), rtol=1e-10, atol=1e-12)
    # P(y | x, S) is a distribution over classes
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(n_q, dtype=DT), rtol=0, atol=1e-12)


def test_class_log_probs_of_a_class_without_support_is_minus_inf():
    gen = torch.Generator().manual_seed(9)
    logits = rand(gen, 4, 6)
    labels = torch.tensor([0, 2, 0, 3, 2, 0])  # class 1 (and 4) have no support example
    got = matching.class_log_probs(logits, labels, 5)
    expected = naive_class_log_probs(logits.tolist(), labels.tolist(), 5)
    assert torch.isneginf(got[:, 1]).all() and torch.isneginf(got[:, 4]).all()
    assert torch.isfinite(got[:, [0, 2, 3]]).all()
    torch.testing.assert_close(got, t64(expected), rtol=1e-10, atol=1e-12)


def test_class_log_probs_gradient_is_finite_with_an_empty_class():
    gen = torch.Generator().manual_seed(10)
    logits = rand(gen, 3, 4).requires_grad_(True)
    labels = torch.tensor([0, 0, 2, 2])  # class 1 is empty
    lp = matching.class_log_probs(logits, labels, 3)
    matching.matching_nll(lp, torch.tensor([0, 2, 0])).backward()
    assert torch.isfinite(logits.grad).all()
    assert bool((logits.grad != 0).any())


def test_class_log_probs_with_one_support_per_class_is_log_softmax():
    gen = torch.Generator().manual_seed(11)
    logits = rand(gen, 5, 4)
    labels = torch.tensor([2, 0, 3, 1])
    got = matching.class_log_probs(logits, labels, 4)
    # class c's only support is at position labels.index(c)
    reordered = [[row[labels.tolist().index(c)] for c in range(4)] for row in logits.tolist()]
    expected = [[math.log(p) for p in row] for row in naive_softmax_rows(reordered)]
    torch.testing.assert_close(got, t64(expected))


# -- prototypes ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_prototypes_are_class_means(shape):
    _, n_s, dim, n_classes = shape
    gen = torch.Generator().manual_seed(12)
    emb = rand(gen, n_s, dim)
    labels = labels_covering(gen, n_s, n_classes)
    got = matching.prototypes(emb, labels, n_classes)
    assert got.shape == (n_classes, dim)
    torch.testing.assert_close(got, t64(naive_prototypes(emb.tolist(), labels.tolist(), n_classes)))


def test_prototypes_raise_when_a_class_is_empty():
    emb = torch.randn(4, 3, dtype=DT)
    with pytest.raises(TextMatchError, match="class has no support example"):
        matching.prototypes(emb, torch.tensor([0, 0, 2, 2]), 3)
    with pytest.raises(TextMatchError, match="class has no support example"):
        matching.prototypes(emb, torch.tensor([0, 1, 1, 0]), 3)  # the last class is missing


# -- matching_log_probs --------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("aggregation", ["none", "prototype"])
@pytest.mark.parametrize("metric,temperature", [("cosine", 0.1), ("euclidean", 2.0)])
def test_matching_log_probs_matches_loop(shape, aggregation, metric, temperature):
    n_q, n_s, dim, n_classes = shape
    gen = torch.Generator().manual_seed(13)
    q, s = rand(gen, n_q, dim), rand(gen, n_s, dim)
    labels = labels_covering(gen, n_s, n_classes)
    got = matching.matching_log_probs(
        q, s, labels, n_classes, temperature=temperature, metric=metric, aggregation=aggregation
    )
    assert got.shape == (n_q, n_classes)
    expected = naive_matching_log_probs(
        q.tolist(), s.tolist(), labels.tolist(), n_classes, temperature, metric, aggregation
    )
    torch.testing.assert_close(got, t64(expected), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got.exp().sum(-1), torch.ones(n_q, dtype=DT), rtol=0, atol=1e-12)


def test_prototype_and_none_differ_with_several_shots_but_agree_with_one_shot():
    gen = torch.Generator().manual_seed(14)
    q, s = rand(gen, 4, 6), rand(gen, 6, 6)
    several = torch.tensor([0, 1, 2, 0, 1, 2])
    a = matching.matching_log_probs(q, s, several, 3, 0.3, "euclidean", "none")
    b = matching.matching_log_probs(q, s, several, 3, 0.3, "euclidean", "prototype")
    assert not torch.allclose(a, b)
    one = torch.tensor([0, 1, 2])
    a1 = matching.matching_log_probs(q, s[:3], one, 3, 0.3, "euclidean", "none")
    b1 = matching.matching_log_probs(q, s[:3], one, 3, 0.3, "euclidean", "prototype")
    torch.testing.assert_close(a1, b1)


def test_matching_log_probs_unknown_aggregation():
    q, s = torch.randn(2, 3), torch.randn(4, 3)
    with pytest.raises(TextMatchError, match="unknown aggregation 'mean'"):
        matching.matching_log_probs(q, s, torch.tensor([0, 1, 0, 1]), 2, aggregation="mean")  # type: ignore[arg-type]


# -- matching_nll --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_matching_nll_matches_loop(shape, eps):
    n_q, n_s, dim, n_classes = shape
    gen = torch.Generator().manual_seed(15)
    q, s = rand(gen, n_q, dim), rand(gen, n_s, dim)
    labels = labels_covering(gen, n_s, n_classes)
    targets = torch.randint(0, n_classes, (n_q,), generator=gen)
    lp = matching.matching_log_probs(q, s, labels, n_classes, temperature=0.2)
    got = matching.matching_nll(lp, targets, label_smoothing=eps)
    assert got.dim() == 0
    expected = naive_nll(lp.tolist(), targets.tolist(), eps)
    assert got.item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
    # the same objective as torch's label-smoothed cross-entropy on the log-probabilities
    torch.testing.assert_close(got, F.cross_entropy(lp, targets, label_smoothing=eps))


def test_label_smoothing_changes_the_loss():
    lp = torch.log_softmax(torch.tensor([[3.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=DT), dim=-1)
    targets = torch.tensor([0, 1])
    plain = matching.matching_nll(lp, targets)
    smooth = matching.matching_nll(lp, targets, label_smoothing=0.2)
    assert plain.item() == pytest.approx(naive_nll(lp.tolist(), [0, 1]))
    assert smooth.item() == pytest.approx(naive_nll(lp.tolist(), [0, 1], 0.2))
    assert smooth.item() > plain.item()  # the targets are the argmax, smoothing costs something


# -- numerical stability -------------------------------------------------------------------
@pytest.mark.parametrize("aggregation", ["none", "prototype"])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_huge_logits_give_finite_log_probs_loss_and_gradients(aggregation, metric, eps):
    gen = torch.Generator().manual_seed(16)
    n_classes = 3
    q = torch.randn(5, 8, generator=gen).requires_grad_(True)
    s = torch.randn(9, 8, generator=gen).requires_grad_(True)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    temperature = 1e-4  # cosine / tau ~ 1e4; exp(1e4) overflows even in float64
    logits = matching.attention_logits(q, s, temperature, metric)
    assert logits.abs().max().item() > 1e3
    with torch.no_grad():  # what a naive exp-then-log would do
        naive = torch.log(torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True))
    assert not torch.isfinite(naive).all()

    lp = matching.matching_log_probs(q, s, labels, n_classes, temperature, metric, aggregation)
    assert torch.isfinite(lp).all()
    assert bool((lp <= 0).all())
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(5), rtol=0, atol=1e-5)
    # the winner takes (almost) all: the best class has log-prob ~ 0
    assert bool((lp.max(-1).values > -1e-3).all())
    targets = torch.tensor([0, 1, 2, 0, 1])
    loss = matching.matching_nll(lp, targets, label_smoothing=eps)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(s.grad).all()
    assert bool((q.grad != 0).any()) and bool((s.grad != 0).any())


def test_huge_logits_log_probs_match_a_shifted_loop():
    """With logits ~1e4 the library's values equal the max-shifted (stable) loop reference."""
    gen = torch.Generator().manual_seed(17)
    logits = rand(gen, 4, 6) * 1e4
    labels = [0, 1, 2, 0, 1, 2]
    got = matching.class_log_probs(logits, torch.tensor(labels), 3)
    expected = []
    for row in logits.tolist():
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        per_class = []
        for c in range(3):
            vals = [v for v, y in zip(row, labels) if y == c]
            mc = max(vals)
            per_class.append(mc + math.log(sum(math.exp(v - mc) for v in vals)) - log_z)
        expected.append(per_class)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, t64(expected), rtol=1e-12, atol=1e-9)
