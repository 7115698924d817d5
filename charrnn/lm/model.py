"""CharRNN: embedding (or one-hot) -> stacked RNN/LSTM/GRU -> linear head.

Shapes: B batch, T time steps, E embedding size, H hidden size, L layers, V vocabulary size.
Training and sampling use the fused `torch.nn` recurrent kernels (cuDNN on a GPU).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.core.checkpoint import CheckpointError, checked_config, load_checkpoint, require_task
from charrnn.core.rnn import State, make_rnn
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import CharRNNConfig


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


def check_checkpoint(ckpt: dict) -> CharRNNConfig:
    """The model config of a loaded language-model checkpoint, checked against its tokenizer and weights
    before anything is built (see `checked_config`)."""
    if ckpt["tokenizer"].get("kind", "char") != "char":
        raise CheckpointError(ckpt.get("source", "the checkpoint"), "is damaged: its tokenizer is not a character "
                                                                     "tokenizer, which a language model reads")
    tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"])
    return checked_config(ckpt, CharRNNConfig, CharRNN, tokenizer.vocab_size)


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu") -> tuple[CharRNN, CharTokenizer]:
    """Rebuild the model (in eval mode, on `device`) and tokenizer stored in a loaded checkpoint."""
    model = CharRNN(check_checkpoint(ckpt))
    model.load_state_dict(ckpt["model_state"])
    model.to(device).eval()
    return model, CharTokenizer.from_dict(ckpt["tokenizer"])


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[CharRNN, CharTokenizer, dict]:
    """The language model, tokenizer and checkpoint dict from a checkpoint file or run directory (whose
    last.pt is read, with a warning, when its best.pt is damaged)."""
    ckpt = load_checkpoint(path, check=lambda c: (require_task(c, "lm", path), check_checkpoint(c)))
    model, tokenizer = model_from_checkpoint(ckpt, device)
    return model, tokenizer, ckpt
