"""Full Context Embeddings (textmatch.core.encoders.fce, appendix A.2 of Vinyals et al. 2016)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from textmatch import BiLSTMEncoder, Episode, MatchingNetwork, MatchingNetworkConfig, TextMatchError
from textmatch.core.encoders.fce import QueryFCE, SupportFCE
from textmatch.core.matching import matching_nll

DIM = 6


def _inputs(n_query=4, n_support=5, dim=DIM, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n_query, dim, generator=gen, dtype=dtype)
    s = torch.randn(n_support, dim, generator=gen, dtype=dtype)
    return q, s


def _randomise(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial weights everywhere (biases included) so no term can hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name != "scale":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.5)


# -- shapes and identity -------------------------------------------------------------------
@pytest.mark.parametrize("n_support", [1, 2, 7])
def test_support_fce_shape(n_support):
    torch.manual_seed(0)
    fce = SupportFCE(DIM).double()
    _, s = _inputs(n_support=n_support)
    out = fce(s)
    assert out.shape == (n_support, DIM)
    assert out.dtype == torch.float64


@pytest.mark.parametrize("n_query,n_support,steps", [(1, 1, 1), (3, 5, 2), (8, 4, 5)])
def test_query_fce_shape(n_query, n_support, steps):
    torch.manual_seed(0)
    fce = QueryFCE(DIM, steps=steps).double()
    q, s = _inputs(n_query, n_support)
    out = fce(q, s)
    assert out.shape == (n_query, DIM)


def test_scale_zero_is_the_identity():
    torch.manual_seed(0)
    g_fce = SupportFCE(DIM, scale_init=0.0).double()
    f_fce = QueryFCE(DIM, steps=3, scale_init=0.0).double()
    _randomise(g_fce, 1)
    _randomise(f_fce, 2)
    q, s = _inputs()
    g = g_fce(s)
    assert torch.equal(g, s)  # g(x_i, S) = g'(x_i)
    assert torch.equal(f_fce(q, g), q)  # f(x, S) = f'(x)


def test_nonzero_scale_is_not_the_identity():
    torch.manual_seed(0)
    q, s = _inputs()
    assert not torch.allclose(SupportFCE(DIM, 1.0).double()(s), s)
    assert not torch.allclose(QueryFCE(DIM, 2, 1.0).double()(q, s), q)


def test_steps_below_one_raise():
    for steps in (0, -1):
        with pytest.raises(TextMatchError, match="at least one read step"):
            QueryFCE(DIM, steps=steps)


# -- gradients -----------------------------------------------------------------------------
def _assert_all_grads(module: nn.Module) -> None:
    names = [n for n, _ in module.named_parameters()]
    assert names, "module has no parameters"
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert bool((p.grad != 0).any()), f"{name} has an all-zero gradient"


def test_support_fce_gradient_reaches_every_parameter_and_the_input():
    torch.manual_seed(0)
    fce = SupportFCE(DIM, scale_init=1.0).double()
    _, s = _inputs(n_support=5)
    s.requires_grad_(True)
    fce(s).sum().backward()
    _assert_all_grads(fce)
    names = {n for n, _ in fce.named_parameters()}
    assert {"scale", "lstm.weight_hh_l0", "lstm.weight_hh_l0_reverse"} <= names
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # beyond the skip connection's ones: the LSTM contributes to d out / d input
    assert not torch.allclose(s.grad, torch.ones_like(s))


def test_query_fce_gradient_reaches_every_parameter_and_both_inputs():
    torch.manual_seed(0)
    fce = QueryFCE(DIM, steps=3, scale_init=1.0).double()
    q, s = _inputs()
    q.requires_grad_(True)
    s.requires_grad_(True)
    fce(q, s).sum().backward()
    _assert_all_grads(fce)
    assert {n for n, _ in fce.named_parameters()} == {"input_map.weight", "input_map.bias", "state_map.weight", "scale"}
    assert torch.isfinite(q.grad).all() and bool((q.grad != 0).any())
    # the support set only enters through the read vector r: it must still get a gradient
    assert torch.isfinite(s.grad).all() and bool((s.grad != 0).any())


# -- the equations of the module docstring, by hand ----------------------------------------
def _sigmoid(x):
    return 1.0 / (1.0 + torch.exp(-x))


def hand_query_fce(fce: QueryFCE, query: torch.Tensor, support: torch.Tensor, steps: int) -> torch.Tensor:
    """attLSTM written out per query from appendix A.2, with the module's weights:

        h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
        h_k       = h^_k + f'(x)          (times the learned scale)
        r_k       = sum_i softmax_i(h_k . g(x_i)) g(x_i)
    """
    d = fce.dim
    W_x, b_x = fce.input_map.weight, fce.input_map.bias  # (4d, d), (4d,)
    W_hr = fce.state_map.weight  # (4d, 2d)
    W_h, W_r = W_hr[:, :d], W_hr[:, d:]
    scale = fce.scale
    outs = []
    for x in query:  # one query at a time
        h = torch.zeros(d, dtype=query.dtype)
        r = torch.zeros(d, dtype=query.dtype)
        c = torch.zeros(d, dtype=query.dtype)
        for _ in range(steps):
            z = W_x @ x + b_x + W_h @ h + W_r @ r  # (4d,)
            i_gate, f_gate, g_gate, o_gate = z[:d], z[d : 2 * d], z[2 * d : 3 * d], z[3 * d :]
            c = _sigmoid(f_gate) * c + _sigmoid(i_gate) * torch.tanh(g_gate)
            h_hat = _sigmoid(o_gate) * torch.tanh(c)
            h = h_hat * scale + x
            scores = torch.stack([h @ g_i for g_i in support])  # (n_support,)
            weights = torch.exp(scores - scores.max())
            weights = weights / weights.sum()
            r = sum(w * g_i for w, g_i in zip(weights, support))
        outs.append(h)
    return torch.stack(outs)


def test_query_fce_one_step_equals_the_hand_written_step():
    torch.manual_seed(0)
    fce = QueryFCE(DIM, steps=1, scale_init=0.7).double()
    _randomise(fce, 3)
    q, s = _inputs(n_query=3, n_support=4, seed=4)
    assert fce.scale.item() == pytest.approx(0.7)
    with torch.no_grad():
        got = fce(q, s)
        # one step from h_0 = r_0 = c_0 = 0 only sees f'(x): h_1 = f'(x) + scale * o * tanh(i * g)
        W, b = fce.input_map.weight, fce.input_map.bias
        z = q @ W.T + b
        i_gate, _f_gate, g_gate, o_gate = z.chunk(4, dim=-1)
        c1 = _sigmoid(i_gate) * torch.tanh(g_gate)
        h1 = q + fce.scale * _sigmoid(o_gate) * torch.tanh(c1)
        torch.testing.assert_close(got, h1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got, hand_query_fce(fce, q, s, steps=1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [2, 4])
def test_query_fce_several_steps_equal_the_hand_written_recurrence(steps):
    torch.manual_seed(0)
    fce = QueryFCE(DIM, steps=steps, scale_init=1.0).double()
    _randomise(fce, 5)
    q, s = _inputs(n_query=3, n_support=5, seed=6)
    with torch.no_grad():
        got = fce(q, s)
        torch.testing.assert_close(got, hand_query_fce(fce, q, s, steps), rtol=1e-10, atol=1e-12)
        # the read vector matters: a different support set changes the output
        assert not torch.allclose(got, fce(q, s.flip(0) * 2.0 + 1.0))


def test_support_fce_equals_forward_plus_backward_lstm_by_hand():
    """g(x_i, S) = g'(x_i) + scale * (h_fwd_i + h_bwd_i), each direction run as its own LSTM."""
    torch.manual_seed(0)
    fce = SupportFCE(DIM, scale_init=0.6).double()
    _randomise(fce, 7)
    _, s = _inputs(n_support=5, seed=8)
    fwd = nn.LSTM(DIM, DIM, batch_first=True).double()
    bwd = nn.LSTM(DIM, DIM, batch_first=True).double()
    assert fce.scale.item() == pytest.approx(0.6)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(fwd, name).copy_(getattr(fce.lstm, name))
            getattr(bwd, name).copy_(getattr(fce.lstm, name + "_reverse"))
        h_fwd = fwd(s.unsqueeze(0))[0][0]  # reads x_1 .. x_k
        h_bwd = bwd(s.flip(0).unsqueeze(0))[0][0].flip(0)  # reads x_k .. x_1, back in order
        expected = s + fce.scale * (h_fwd + h_bwd)
        torch.testing.assert_close(fce(s), expected, rtol=1e-12, atol=1e-12)
        # the support set is a context: changing one example changes another's embedding
        s2 = s.clone()
        s2[0] += 1.0
        assert not torch.allclose(fce(s2)[-1], fce(s)[-1])


# -- inside a MatchingNetwork --------------------------------------------------------------
def test_matching_network_with_fce_trains_fce_and_encoder(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    encoder = BiLSTMEncoder.from_tokenizer(tok, embedding_dim=32, hidden_size=32, dropout=0.0, max_length=32)
    model = MatchingNetwork(encoder, config=MatchingNetworkConfig(fce=True, fce_scale_init=1.0))
    assert model.support_fce is not None and model.query_fce is not None
    model.train()
    episode = Episode(
        support_texts=["rain forecast today", "song on my playlist", "pizza for dinner", "snow and wind now"],
        support_labels=[0, 1, 2, 0],
        query_texts=["is it sunny", "play the album", "want a burger", "the guitar track"],
        query_labels=[0, 1, 2, 1],
        classes=["weather", "music", "food"],
    )
    lp = model.episode_log_probs(episode)
    assert lp.shape == (4, 3)
    assert torch.isfinite(lp).all()
    loss = matching_nll(lp, torch.tensor(episode.query_labels))
    loss.backward()

    for prefix, module in (("support_fce", model.support_fce), ("query_fce", model.query_fce)):
        for name, p in module.named_parameters():
            assert p.grad is not None, f"{prefix}.{name} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{prefix}.{name}"
            assert bool((p.grad != 0).any()), f"{prefix}.{name} has an all-zero gradient"
    for name in ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse"):
        p = dict(model.support_fce.named_parameters())[name]
        assert bool((p.grad != 0).any())
    enc_params = dict(encoder.named_parameters())
    for name in ("embedding.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l0_reverse"):
        g = enc_params[name].grad
        assert g is not None and torch.isfinite(g).all() and bool((g != 0).any()), name
    # the FCE changes the probabilities relative to the same model without it
    with torch.no_grad():
        model.support_fce.scale.zero_()
        model.query_fce.scale.zero_()
        plain = model.episode_log_probs(episode)
    assert not torch.allclose(plain, lp.detach())
