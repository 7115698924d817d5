"""Classifier: characters -> charrnn's recurrent core (uni- or bidirectional) -> pooled over the text -> a label.

Shapes: B texts, T characters (the longest in the batch; shorter texts are padded at the end), H hidden size,
D = H or 2H (bidirectional), K labels.

    ids (B, T), lengths (B,)  ->  TextEncoder (embedding, rnn/lstm/gru)  ->  states (B, T, D)
    ->  pool over each text's own characters (last | mean | max | attention)  ->  linear  ->  logits (B, K)

Padding never changes a text's result: the forward direction is causal, the backward one starts at each
text's own end (`core.rnn.BidirectionalRNN`), and every pool reads only a text's own positions.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.classify.config import ClassifierConfig
from charrnn.core.batches import valid_mask
from charrnn.core.checkpoint import load_checkpoint, require_task
from charrnn.core.rnn import TextEncoder
from charrnn.core.tokenizer import CharTokenizer


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = c = config
        self.encoder = TextEncoder(c.cell, c.vocab_size, c.embedding_dim, c.hidden_size, c.num_layers, c.dropout,
                                   c.bidirectional)
        D = self.encoder.out_size
        self.attention = nn.Linear(D, 1) if c.pool == "attention" else None
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(D, len(c.labels))

    def pool(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D) over each text's own positions."""
        mask = valid_mask(lengths, states.size(1))[..., None]  # (B, T, 1)
        kind = self.config.pool
        if kind == "last":
            if self.config.bidirectional:  # the forward direction's last state and the backward one's first
                H = self.config.hidden_size
                ahead = states[torch.arange(len(states)), lengths - 1, :H]
                return torch.cat([ahead, states[:, 0, H:]], dim=-1)
            return states[torch.arange(len(states)), lengths - 1]
        if kind == "mean":
            return (states * mask).sum(1) / lengths[:, None].to(states.dtype)
        if kind == "max":
            return states.masked_fill(~mask, float("-inf")).amax(1)
        scores = self.attention(states).masked_fill(~mask, float("-inf"))  # (B, T, 1)
        return (scores.softmax(1) * states).sum(1)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of texts `ids` (B, T) with `lengths` (B,)."""
        states = self.encoder(ids, lengths)  # (B, T, D)
        return self.head(self.drop(self.pool(states, lengths)))  # (B, K)

    def freeze_encoder(self) -> None:
        """Train the pooling and the head only (after `--init-from`): the sentiment-neuron recipe."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)


def classify_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets)


def load_classifier(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Classifier, CharTokenizer,
                                                                                         dict]:
    """The classifier, tokenizer and checkpoint dict of a classify checkpoint file or run directory."""
    checkpoint = load_checkpoint(path)
    require_task(checkpoint, "classify", path)
    model = Classifier(ClassifierConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), CharTokenizer.from_dict(checkpoint["tokenizer"]), checkpoint
