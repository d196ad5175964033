"""Full Context Embeddings (Vinyals et al. 2016, appendix A.2).

g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)                       (A.2, support side)
    a bidirectional LSTM reads the support embeddings g'(x_1..k) as a sequence, and
    its forward and backward states are added to the base embedding (skip connection).

f(x, S) = attLSTM(f'(x), g(S), K)                              (A.2, query side)
    for k = 1..K:
        h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
        h_k       = h^_k + f'(x)
        r_k       = sum_i softmax_i(h_k . g(x_i)) g(x_i)
    and f(x, S) = h_K.

One addition: the LSTM contribution is multiplied by a learned scalar `scale`
(initialised by `scale_init`). With scale_init = 1 the equations above hold exactly at
initialisation; a small value keeps a pretrained encoder's embeddings intact at the start
of training (with 0, FCE starts as the identity and learns how much context to add).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import TextMatchError


class SupportFCE(nn.Module):
    """g: a bidirectional LSTM over the support set with a skip connection to g'."""

    def __init__(self, dim: int, scale_init: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.lstm = nn.LSTM(dim, dim, bidirectional=True, batch_first=True)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, support: torch.Tensor) -> torch.Tensor:
        """support: (n_support, dim) base embeddings g'(x_i) -> (n_support, dim) g(x_i, S)."""
        out, _ = self.lstm(support.unsqueeze(0))  # (1, n_support, 2 * dim)
        h_fwd, h_bwd = out[0, :, : self.dim], out[0, :, self.dim :]  # (n_support, dim) each
        return support + self.scale * (h_fwd + h_bwd)  # (n_support, dim)


class QueryFCE(nn.Module):
    """f: an LSTM with read attention over g(S), run for K steps on each query.

    The recurrent input is [h_{k-1}, r_{k-1}] (2 * dim) while the cell state has size dim,
    so the cell is written out: gates = W_x f'(x) + W_h [h, r] + b.
    """

    def __init__(self, dim: int, steps: int = 5, scale_init: float = 1.0) -> None:
        super().__init__()
        if steps < 1:
            raise TextMatchError(f"the attention LSTM needs at least one read step, got {steps}")
        self.dim = dim
        self.steps = steps
        self.input_map = nn.Linear(dim, 4 * dim)
        self.state_map = nn.Linear(2 * dim, 4 * dim, bias=False)
        self.scale = nn.Parameter(torch.tensor(float(scale_init)))

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query: (n_query, dim) f'(x); support: (n_support, dim) g(x_i, S) -> (n_query, dim)."""
        n_query = query.shape[0]
        h = query.new_zeros(n_query, self.dim)  # (n_query, dim)
        r = query.new_zeros(n_query, self.dim)  # (n_query, dim)
        c = query.new_zeros(n_query, self.dim)  # (n_query, dim)
        x_gates = self.input_map(query)  # (n_query, 4 * dim), the same at every step
        for _ in range(self.steps):
            gates = x_gates + self.state_map(torch.cat([h, r], dim=-1))  # (n_query, 4 * dim)
            i, f, g, o = gates.chunk(4, dim=-1)  # (n_query, dim) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_hat = torch.sigmoid(o) * torch.tanh(c)  # (n_query, dim)
            h = query + self.scale * h_hat  # (n_query, dim)
            attn = (h @ support.T).softmax(dim=-1)  # (n_query, n_support)
            r = attn @ support  # (n_query, dim)
        return h
