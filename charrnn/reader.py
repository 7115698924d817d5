"""LineReader: a CRNN (Shi, Bai & Yao 2015) that reads a text line, trained with CTC (Graves et al. 2006).

Shapes: B lines, H image height, W image width, C channels, T frames (= W // 4), V characters + blank.

    pixels (B, H, W) uint8, ink high  ->  ConvEncoder (the caption model's blocks; the first two halve both
    axes, the rest only the height)  ->  (B, C, h, T)  ->  columns (B, T, C*h)  ->  bidirectional rnn/lstm/gru
    (charrnn's core)  ->  linear  ->  log-probabilities (T, B, V), the layout torch.nn.CTCLoss takes.

Lines in a batch have different widths: each line's frame count is tracked through the pooling
(`frames`), the recurrent layers read each line only as far as its own frames (a packed sequence, so the
backward direction starts at the line's end, not in the padding), and the loss and the decoders use only
those frames.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from charrnn.config import WIDTH_POOLS, CTCConfig
from charrnn.encoder import ConvEncoder
from charrnn.model import make_rnn

BLANK = 0


def frames(width: int) -> int:
    """The number of time frames the reader makes of a line `width` pixels wide: each halving floors, and
    floor(floor(w / 2) / 2) = floor(w / 4)."""
    return width // 2 ** WIDTH_POOLS


class LineReader(nn.Module):
    def __init__(self, config: CTCConfig):
        super().__init__()
        self.config = c = config
        pools = tuple((2, 2) if k < WIDTH_POOLS else (2, 1) for k in range(len(c.channels)))
        self.encoder = ConvEncoder(c.channels, in_channels=1, pools=pools)
        features = self.encoder.out_channels * (c.height // 2 ** len(c.channels))
        self.rnn = make_rnn(c.cell, features, c.hidden_size, c.num_layers, c.dropout, bidirectional=True)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(2 * c.hidden_size, c.vocab_size)

    def forward(self, pixels: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (T, B, V) of uint8 lines (B, H, W), and each line's valid frames (B,)."""
        grid = self.encoder(pixels.unsqueeze(-1))  # (B, C, h, T)
        B, C, h, T = grid.shape
        columns = grid.permute(0, 3, 1, 2).reshape(B, T, C * h)  # (B, T, C*h)
        lengths = frames(widths).clamp(1, T)
        packed = pack_padded_sequence(columns, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2H), zeros past each end
        logits = self.head(self.drop(out))  # (B, T, V)
        return logits.float().log_softmax(-1).transpose(0, 1), lengths


def ctc_loss(log_probs: torch.Tensor, lengths: torch.Tensor, targets: list[list[int]],
             reduction: str = "mean") -> torch.Tensor:
    """CTC loss of a batch: "mean" is each line's loss per target character, averaged over the lines
    (torch's "mean"); "sum" adds the lines' losses. A line no alignment can produce (too few frames) would
    be infinite; `zero_infinity` drops it instead of the whole batch."""
    flat = torch.tensor([t for row in targets for t in row], dtype=torch.long)
    target_lengths = torch.tensor([len(row) for row in targets], dtype=torch.long)
    return F.ctc_loss(log_probs, flat.to(log_probs.device), lengths, target_lengths.to(log_probs.device),
                      blank=BLANK, reduction=reduction, zero_infinity=True)
