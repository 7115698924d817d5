"""Hand-written RNN / LSTM / GRU steps that expose every hidden state, cell state and gate.

They read the weights of the `torch.nn` layer in place, in PyTorch's gate order (LSTM: i, f, g, o;
GRU: r, z, n), so a model trained with the fused kernels is traced without any conversion, and the
tests can compare the two paths value for value.

Shapes: B batch, T time, I input size, H hidden size, G = gates * H.
"""

from __future__ import annotations

import torch
from torch import nn

GATES = {"rnn": (), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}


def layer_weights(rnn: nn.RNNBase, layer: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_ih (G, I), W_hh (G, H), b_ih (G,), b_hh (G,)) of one layer of a `torch.nn` recurrent module."""
    return (getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"weight_hh_l{layer}"),
            getattr(rnn, f"bias_ih_l{layer}"), getattr(rnn, f"bias_hh_l{layer}"))


def rnn_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
    """Elman step: h' = tanh(gi + W_hh h + b_hh), with gi = W_ih x + b_ih precomputed. (B, H)"""
    return torch.tanh(torch.addmm(b_hh, h, w_hh.t()) + gi)


def lstm_step(gi: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor):
    """LSTM step (Hochreiter & Schmidhuber 1997, PyTorch's formulation): returns h', c', (i, f, g, o)."""
    gates = torch.addmm(b_hh, h, w_hh.t()) + gi  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    return h, c, (i, f, g, o)


def gru_step(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor):
    """GRU step (Cho et al. 2014, PyTorch's formulation, reset applied after W_hn h): returns h', (r, z, n)."""
    gh = torch.addmm(b_hh, h, w_hh.t())  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, (r, z, n)
