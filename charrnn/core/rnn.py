"""charrnn's recurrent core, shared by every task: the stacked torch.nn RNN/LSTM/GRU, its cells, and the
helpers for its state.

Shapes: B batch, L layers, H hidden size.
"""

from __future__ import annotations

import torch
from torch import nn

# The recurrent state is always a tuple of (L, B, H) tensors: (h,) for rnn and gru, (h, c) for lstm.
State = tuple[torch.Tensor, ...]

RNN_CLASSES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
CELL_CLASSES = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}


def make_rnn(cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float) -> nn.RNNBase:
    """charrnn's recurrent core: a stacked batch-first torch.nn RNN/LSTM/GRU (cuDNN on a GPU)."""
    rnn = RNN_CLASSES[cell](input_size, hidden_size, num_layers=num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
    init_forget_gate_bias(rnn, cell, hidden_size)
    return rnn


def init_forget_gate_bias(module: nn.Module, cell: str, hidden_size: int) -> None:
    """Forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): an LSTM remembers by default early on.
    PyTorch's gate order is i, f, g, o and it adds bias_ih and bias_hh, so one of them is set to 1."""
    if cell != "lstm":
        return
    with torch.no_grad():
        for name, p in module.named_parameters():
            name = name.rsplit(".", 1)[-1]  # "bias_ih_l0", or "0.bias_ih" in a list of cells
            if name.startswith("bias_"):
                p[hidden_size:2 * hidden_size] = 1.0 if name.startswith("bias_ih") else 0.0


def detach_state(state: State) -> State:
    """Cut the graph at a chunk boundary: truncated BPTT keeps the values, drops the history."""
    return tuple(s.detach() for s in state)
