"""LineReader: a CRNN (Shi, Bai & Yao 2015) that reads a text line, trained with CTC (Graves et al. 2006).

Shapes: B lines, H image height, W image width, C channels, T frames (= W // 4), V characters + blank.

    pixels (B, H, W) uint8, ink high  ->  ConvEncoder (the caption model's blocks; the first two halve both
    axes, the rest only the height)  ->  (B, C, h, T)  ->  columns (B, T, C*h)  ->  bidirectional rnn/lstm/gru
    (charrnn's core)  ->  linear  ->  log-probabilities (T, B, V), the layout torch.nn.CTCLoss takes.

Lines in a batch have different widths: each line's frame count is tracked through the pooling
(`frames`), the backward direction starts at each line's own end, not in the padding, and the loss and the
decoders use only each line's frames.

The bidirectional layers are the core's `BidirectionalRNN` (each direction its own layer over the padded
batch, the backward one reading every line reversed within its own length: exact, and 2.3x faster on a CPU
than a packed sequence; see `charrnn.core.rnn`).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from charrnn.core.checkpoint import CheckpointError, checked_config, load_checkpoint, require_task
from charrnn.core.rnn import BidirectionalRNN
from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.config import WIDTH_POOLS, LineReaderConfig
from charrnn.vision.encoder import ConvEncoder

BLANK = 0


def frames(width: int) -> int:
    """The number of time frames the reader makes of a line `width` pixels wide: each halving floors, and
    floor(floor(w / 2) / 2) = floor(w / 4)."""
    return width // 2 ** WIDTH_POOLS


class LineReader(nn.Module):
    def __init__(self, config: LineReaderConfig):
        super().__init__()
        self.config = c = config
        pools = tuple((2, 2) if k < WIDTH_POOLS else (2, 1) for k in range(len(c.channels)))
        self.encoder = ConvEncoder(c.channels, in_channels=1, pools=pools)
        features = self.encoder.out_channels * (c.height // 2 ** len(c.channels))
        self.rnn = BidirectionalRNN(c.cell, features, c.hidden_size, c.num_layers, c.dropout)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(2 * c.hidden_size, c.vocab_size)

    def forward(self, pixels: torch.Tensor, widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities (T, B, V) of uint8 lines (B, H, W), and each line's valid frames (B,)."""
        grid = self.encoder(pixels.unsqueeze(-1))  # (B, C, h, T)
        B, C, h, T = grid.shape
        columns = grid.permute(0, 3, 1, 2).reshape(B, T, C * h)  # (B, T, C*h)
        lengths = frames(widths).clamp(1, T)
        logits = self.head(self.drop(self.rnn(columns, lengths)))  # (B, T, V)
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


def labels(tokenizer: CharTokenizer) -> list[str]:
    """The reader's classes as text: "" for the blank, then one character each."""
    return [""] + [chr(c) for c in tokenizer.codes]


def targets(tokenizer: CharTokenizer, text: str) -> list[int]:
    """The classes of `text`; characters the reader never trained on are left out (they cannot be a target)."""
    ids = tokenizer.encode_compact(text, map_unknown=True)
    return [int(i) + 1 for i in ids if i != tokenizer.unk_id]


def text_of(tokenizer: CharTokenizer, classes: list[int]) -> str:
    return "".join(chr(tokenizer.codes[k - 1]) for k in classes)


def check_checkpoint(checkpoint: dict) -> LineReaderConfig:
    """The model config of a loaded ctc checkpoint, checked against its tokenizer (its characters + the blank)
    and its weights before anything is built (see `checked_config`)."""
    if checkpoint["tokenizer"].get("kind", "char") != "char":
        raise CheckpointError(checkpoint.get("source", "the checkpoint"),
                              "is damaged: its tokenizer is not a character tokenizer, which a line reader reads")
    tokenizer = CharTokenizer.from_dict(checkpoint["tokenizer"])
    return checked_config(checkpoint, LineReaderConfig, LineReader, len(tokenizer.codes) + 1)


def load_reader(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[LineReader, CharTokenizer, dict]:
    """The reader, tokenizer and checkpoint dict of a ctc checkpoint file or run directory (whose last.pt is
    read, with a warning, when its best.pt is damaged)."""
    checkpoint = load_checkpoint(path, check=lambda c: (require_task(c, "ctc", path), check_checkpoint(c)))
    model = LineReader(check_checkpoint(checkpoint))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), CharTokenizer.from_dict(checkpoint["tokenizer"]), checkpoint
