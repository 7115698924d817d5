"""CharRNNConfig and CharRNN: embedding (or one-hot) -> stacked RNN/LSTM/GRU -> linear head.

Shapes: B batch, T time steps, E embedding size, H hidden size, L layers, V vocabulary size.
Training and sampling use the fused `torch.nn` recurrent kernels (cuDNN on a GPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.core.config import CELLS, CharRNNConfig  # noqa: F401 - re-exported for callers of the model

# The recurrent state is always a tuple of (L, B, H) tensors: (h,) for rnn and gru, (h, c) for lstm.
State = tuple[torch.Tensor, ...]


class CharRNN(nn.Module):
    """A character-level recurrent language model."""

    def __init__(self, config: CharRNNConfig):
        super().__init__()
        self.config = config
        V, E, H, L = config.vocab_size, config.embedding_dim, config.hidden_size, config.num_layers
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        self.rnn = make_rnn(config.cell, E if E > 0 else V, H, L, config.dropout)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(H, V)

    @property
    def num_state_tensors(self) -> int:
        return 2 if self.config.cell == "lstm" else 1

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The zero state for `batch_size` streams: a tuple of (L, B, H) tensors."""
        device = device if device is not None else self.head.weight.device
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        return tuple(torch.zeros(shape, device=device) for _ in range(self.num_state_tensors))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding is None:
            return F.one_hot(x, self.config.vocab_size).to(self.head.weight.dtype)  # (B, T, V)
        return self.embedding(x)  # (B, T, E)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Logits (B, T, V) for ids `x` (B, T), and the state after the last step."""
        inputs = self.embed(x)
        if state is None:
            out, new = self.rnn(inputs)
        else:
            out, new = self.rnn(inputs, state if self.config.cell == "lstm" else state[0])
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits, (tuple(new) if isinstance(new, tuple) else (new,))


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def detach_state(state: State) -> State:
    """Cut the graph at a chunk boundary: truncated BPTT keeps the values, drops the history."""
    return tuple(s.detach() for s in state)
