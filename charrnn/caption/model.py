"""Captioner: a CNN encoder and charrnn's recurrent core as a decoder that describes an image.

Shapes: B images, T tokens, V vocabulary, E embedding, H hidden, L layers, C channels, N = h*w grid cells,
A attention size.

As in the CS231n captioning model, the image's average feature vector sets the decoder's initial state
(h0 = tanh(W v), and c0 likewise for an LSTM). With `attention` (Xu et al. 2015, "Show, Attend and Tell"),
every step also attends over the N grid cells (additive attention on the top layer's previous state), gates
the context with a learned scalar beta = sigmoid(f(h)), and feeds [embedding; beta * context] to the first
layer. A caption is read between two `<eod>` tokens: the first starts it, the second ends it.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.caption.config import CaptionerConfig
from charrnn.core.attention import AttendingDecoder, Memory
from charrnn.core.checkpoint import checked_config, load_checkpoint, require_task
from charrnn.core.rnn import State
from charrnn.core.tokenizer import tokenizer_from_dict
from charrnn.vision.encoder import make_encoder


class Captioner(AttendingDecoder):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = make_encoder(c.encoder, c.channels)
        self.frozen_encoder = False  # set by `freeze_encoder`
        self.build_decoder(cell=c.cell, vocab_size=c.vocab_size, embedding_dim=c.embedding_dim,
                           hidden_size=c.hidden_size, num_layers=c.num_layers, dropout=c.dropout,
                           memory_size=self.encoder.out_channels, attention="additive" if c.attention else None,
                           attention_dim=c.attention_dim)

    def freeze_encoder(self) -> None:
        """Train the decoder only: the encoder's weights get no gradient and its BatchNorm statistics stay."""
        self.frozen_encoder = True
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> tuple[Memory, State]:
        """The decoder's view of uint8 images (B, S, S, 3): their feature grids (B, N, C), and its initial state
        from their mean feature."""
        return self.memory(self.encoder(images).flatten(2).transpose(1, 2))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                sample_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits (B, T, V) for input tokens (B, T), and the attention weights (B, T, N)
        (`AttendingDecoder.teacher_forced`)."""
        memory, state = self.encode(images)
        return self.teacher_forced(memory, state, tokens, sample_prob)


def caption_loss(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor, pad: int, *,
                 doubly_stochastic: float = 0.0, sample_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to minimise, mean cross-entropy per token) for captions `tokens` (B, T+1) padded with `pad`.

    With attention, a length-normalised form of Show-Attend-Tell's doubly stochastic penalty asks every grid
    cell for its share of attention over the caption: coverage_i = sum_t alpha_ti * N / T (1 everywhere
    when attention is spread evenly) and penalty = mean_i (1 - coverage_i)^2. (Their sum_i (1 - sum_t
    alpha_ti)^2 assumes captions about as long as the grid is big; character captions are longer, and
    the raw form then outweighed the caption loss 20 to 1 at the first step.)"""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits, alphas = model(images, inputs, sample_prob)
    ce = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=pad)
    if alphas is None or doubly_stochastic == 0:
        return ce, ce.detach()
    real = (targets != pad).float()  # (B, T): padding attends to nothing
    coverage = (alphas.float() * real[:, :, None]).sum(1) * alphas.size(2) / real.sum(1, keepdim=True)  # (B, N)
    penalty = ((1.0 - coverage) ** 2).mean()
    return ce + doubly_stochastic * penalty, ce.detach()


def encode_captions(tokenizer, captions: list[str]) -> torch.Tensor:
    """(B, T+2) ids: `<eod>` caption `<eod>`, padded with `<unk>` (never a target: the loss ignores it)."""
    rows = [[tokenizer.eod_id, *tokenizer.encode(c, map_unknown=True).tolist(), tokenizer.eod_id] for c in captions]
    out = torch.full((len(rows), max(map(len, rows))), tokenizer.unk_id, dtype=torch.long)
    for k, row in enumerate(rows):
        out[k, : len(row)] = torch.tensor(row)
    return out


def check_checkpoint(checkpoint: dict) -> CaptionerConfig:
    """The model config of a loaded caption checkpoint, checked against its tokenizer and weights before
    anything is built (see `checked_config`)."""
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    return checked_config(checkpoint, CaptionerConfig, Captioner, tokenizer.vocab_size)


def load_captioner(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Captioner, object, dict]:
    """The captioner, tokenizer and checkpoint dict of a caption checkpoint file or run directory (whose
    last.pt is read, with a warning, when its best.pt is damaged)."""
    checkpoint = load_checkpoint(path, check=lambda c: (require_task(c, "caption", path), check_checkpoint(c)))
    model = Captioner(check_checkpoint(checkpoint))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), tokenizer_from_dict(checkpoint["tokenizer"]), checkpoint
