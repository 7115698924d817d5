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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.caption.config import CaptionerConfig
from charrnn.core.checkpoint import checked_config, load_checkpoint, require_task
from charrnn.core.rnn import CELL_CLASSES, init_forget_gate_bias, make_rnn
from charrnn.core.tokenizer import tokenizer_from_dict
from charrnn.vision.encoder import make_encoder

State = tuple[torch.Tensor, ...]  # (L, B, H) tensors: (h,) or (h, c)


@dataclass
class Encoded:
    """What the decoder reads of a batch of images."""

    grid: torch.Tensor  # (B, N, C) feature grid cells
    keys: torch.Tensor | None  # (B, N, A) the cells projected for attention, computed once per image

    def repeat(self, k: int) -> Encoded:
        """Each image `k` times in a row (for beams and samples)."""
        rep = lambda t: None if t is None else t.repeat_interleave(k, dim=0)  # noqa: E731
        return Encoded(rep(self.grid), rep(self.keys))


class Captioner(nn.Module):
    def __init__(self, config: CaptionerConfig):
        super().__init__()
        self.config = c = config
        self.encoder = make_encoder(c.encoder, c.channels)
        self.frozen_encoder = False  # set by `freeze_encoder`
        C, H, L = self.encoder.out_channels, c.hidden_size, c.num_layers
        self.n_state = 2 if c.cell == "lstm" else 1
        self.init_state = nn.Linear(C, self.n_state * L * H)
        self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(H, c.vocab_size)
        if c.attention:
            self.key = nn.Linear(C, c.attention_dim)
            self.query = nn.Linear(H, c.attention_dim)
            self.score = nn.Linear(c.attention_dim, 1)
            self.gate = nn.Linear(H, 1)
            sizes = [c.embedding_dim + C] + [H] * (L - 1)
            self.cells = nn.ModuleList(CELL_CLASSES[c.cell](n, H) for n in sizes)
            init_forget_gate_bias(self.cells, c.cell, H)
        else:
            self.rnn = make_rnn(c.cell, c.embedding_dim, H, L, c.dropout)

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

    # ----- encoding -----------------------------------------------------------------------------

    def encode(self, images: torch.Tensor) -> tuple[Encoded, State]:
        """The decoder's view of uint8 images (B, S, S, 3), and its initial state from their mean feature."""
        grid = self.encoder(images).flatten(2).transpose(1, 2)  # (B, N, C)
        keys = self.key(grid) if self.config.attention else None  # (B, N, A)
        L, H = self.config.num_layers, self.config.hidden_size
        init = torch.tanh(self.init_state(grid.mean(1)))  # (B, n_state * L * H)
        state = init.view(-1, self.n_state, L, H).permute(1, 2, 0, 3)  # (n_state, L, B, H)
        return Encoded(grid, keys), tuple(s.contiguous() for s in state)

    # ----- decoding -----------------------------------------------------------------------------

    def forward(self, images: torch.Tensor, tokens: torch.Tensor,
                sample_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced logits (B, T, V) for input tokens (B, T), and the attention weights (B, T, N).

        With `sample_prob` > 0 (scheduled sampling, Bengio et al. 2015), each step's input is, with that
        probability, the model's own most likely previous token instead of the true one."""
        enc, state = self.encode(images)
        if not self.config.attention and sample_prob == 0:
            out, _ = self.rnn(self.embedding(tokens), state if self.n_state == 2 else state[0])
            return self.head(self.drop(out)), None  # the whole sequence in one fused kernel
        logits, alphas = [], []
        token = tokens[:, 0]
        for t in range(tokens.size(1)):
            step_logits, state, alpha = self.step(token, state, enc)
            logits.append(step_logits)
            alphas.append(alpha)
            if t + 1 < tokens.size(1):
                token = tokens[:, t + 1]
                if sample_prob > 0:
                    own = torch.rand(token.shape, device=token.device) < sample_prob
                    token = torch.where(own, step_logits.argmax(1), token)
        return torch.stack(logits, 1), (torch.stack(alphas, 1) if alphas[0] is not None else None)

    def step(self, token: torch.Tensor, state: State, enc: Encoded) -> tuple[torch.Tensor, State, torch.Tensor | None]:
        """One decoding step: logits (B, V) for the next token after `token` (B,), the new state, and the
        attention weights (B, N) it used (None without attention)."""
        x = self.embedding(token)  # (B, E)
        if not self.config.attention:
            out, new = self.rnn(x[:, None], state if self.n_state == 2 else state[0])
            new = tuple(new) if isinstance(new, tuple) else (new,)
            return self.head(self.drop(out[:, 0])), new, None
        context, alpha = self.attend(state[0][-1], enc)
        x = torch.cat([x, context], dim=1)  # (B, E + C)
        hs, cs = [], []
        for layer, cell in enumerate(self.cells):
            if self.n_state == 2:
                h, c = cell(x, (state[0][layer], state[1][layer]))
                cs.append(c)
            else:
                h = cell(x, state[0][layer])
            hs.append(h)
            x = self.drop(h)
        new = (torch.stack(hs), torch.stack(cs)) if cs else (torch.stack(hs),)
        return self.head(x), new, alpha

    def attend(self, h: torch.Tensor, enc: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
        """Gated context (B, C) and weights (B, N) for the top layer's previous state h (B, H)."""
        scores = self.score(torch.tanh(enc.keys + self.query(h)[:, None])).squeeze(2)  # (B, N)
        alpha = scores.softmax(dim=1)
        context = (alpha[:, :, None] * enc.grid).sum(1)  # (B, C)
        beta = torch.sigmoid(self.gate(h))  # (B, 1): how much the image matters for this token
        return beta * context, alpha


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
