"""Tagger: characters -> charrnn's recurrent core (bidirectional by default) -> a tag for every character.

Shapes: B texts, T characters (the longest in the batch; shorter texts padded at the end), D = H or 2H, K tags.

    ids (B, T), lengths (B,)  ->  TextEncoder (embedding, rnn/lstm/gru)  ->  states (B, T, D)  ->  linear
    ->  logits (B, T, K)

A text's tags never depend on its padding (`core.rnn.TextEncoder`), and the loss reads only its own positions.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.core.batches import valid_mask
from charrnn.core.checkpoint import load_checkpoint, require_task
from charrnn.core.rnn import TextEncoder
from charrnn.core.tokenizer import CharTokenizer
from charrnn.tag.config import TaggerConfig


class Tagger(nn.Module):
    def __init__(self, config: TaggerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = TextEncoder(c.cell, c.vocab_size, c.embedding_dim, c.hidden_size, c.num_layers, c.dropout,
                                   c.bidirectional)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.encoder.out_size, len(c.tags))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, K) of each character's tag."""
        return self.head(self.drop(self.encoder(ids, lengths)))


def tag_loss(logits: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every text's own characters (padding left out)."""
    mask = valid_mask(lengths, logits.size(1))
    return F.cross_entropy(logits.float()[mask], targets[mask])


def load_tagger(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Tagger, CharTokenizer, dict]:
    """The tagger, tokenizer and checkpoint dict of a tag checkpoint file or run directory."""
    checkpoint = load_checkpoint(path)
    require_task(checkpoint, "tag", path)
    model = Tagger(TaggerConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), CharTokenizer.from_dict(checkpoint["tokenizer"]), checkpoint
