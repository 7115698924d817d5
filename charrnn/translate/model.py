"""Translator: a character-level encoder-decoder with attention (many-to-many, of different lengths).

Shapes: B pairs, S source tokens (the longest in the batch; shorter sources padded at the end), T target tokens,
H hidden, V target vocabulary.

    source ids (B, S), lengths (B,)  ->  TextEncoder (embedding, bidirectional rnn/lstm/gru, H/2 each way)
    ->  memory (B, S, H), padding masked  ->  AttendingDecoder (core.attention): state from the memory's mean,
    each step attends over the source and writes one token  ->  logits (B, T, V)

A target is read between two `<eod>` tokens: the first starts it, the second ends it; padding is `<unk>`, never
a target (the loss ignores it). A source's output never depends on its padding: the encoder's states do not
(`core.rnn.TextEncoder`) and attention gives the padding weight 0.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from charrnn.core.attention import AttendingDecoder, Memory
from charrnn.core.batches import pad, valid_mask
from charrnn.core.checkpoint import checked_config, load_checkpoint, require_task
from charrnn.core.errors import CharRNNError
from charrnn.core.rnn import State, TextEncoder
from charrnn.core.tokenizer import PairTokenizer, tokenizer_from_dict
from charrnn.translate.config import TranslatorConfig

Source = tuple[torch.Tensor, torch.Tensor]  # ids (B, S), lengths (B,)


class Translator(AttendingDecoder):
    def __init__(self, config: TranslatorConfig):
        super().__init__()
        self.config = c = config
        self.encoder = TextEncoder(c.cell, c.source_vocab_size, c.embedding_dim, c.hidden_size // 2, c.num_layers,
                                   c.dropout, bidirectional=True)
        self.build_decoder(cell=c.cell, vocab_size=c.vocab_size, embedding_dim=c.embedding_dim,
                           hidden_size=c.hidden_size, num_layers=c.num_layers, dropout=c.dropout,
                           memory_size=self.encoder.out_size, attention=c.attention, attention_dim=c.attention_dim,
                           input_feeding=c.input_feeding)

    def encode(self, source: Source) -> tuple[Memory, State]:
        """The decoder's view of a batch of sources: the encoder's states (B, S, H) and their mask, and its
        initial state from their mean over each source's own tokens."""
        ids, lengths = source
        return self.memory(self.encoder(ids, lengths), valid_mask(lengths, ids.size(1)))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor,
                sample_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced logits (B, T, V) for target input tokens (B, T), and the attention weights (B, T, S)."""
        memory, state = self.encode((ids, lengths))
        return self.teacher_forced(memory, state, tokens, sample_prob)


def encode_targets(rows: list, eod: int, unk: int) -> torch.Tensor:
    """(B, T+2) ids: `<eod>` target `<eod>`, padded with `<unk>` (never a target: the loss ignores it)."""
    ids, _ = pad([[eod, *row, eod] for row in rows], unk)
    return ids


def translate_loss(model, ids: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, pad_id: int,
                   sample_prob: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy per target token (the end included) of targets (B, T+2) from `encode_targets`."""
    logits, _ = model(ids, lengths, targets[:, :-1], sample_prob)
    gold = targets[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), gold.reshape(-1), ignore_index=pad_id)


def check_checkpoint(checkpoint: dict) -> TranslatorConfig:
    """The model config of a loaded translate checkpoint, checked against its vocabularies and weights before
    anything is built (see `checked_config`)."""
    tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    if not isinstance(tokenizer, PairTokenizer):
        raise CharRNNError(f"{str(checkpoint.get('source'))!r} is damaged: its tokenizer is not a source and "
                           "target vocabulary")
    config = checked_config(checkpoint, TranslatorConfig, Translator, tokenizer.vocab_size)
    if config.source_vocab_size != tokenizer.source.vocab_size:
        raise CharRNNError(f"{str(checkpoint.get('source'))!r} is damaged: its model config has source_vocab_size "
                           f"{config.source_vocab_size}, but its source vocabulary makes {tokenizer.source.vocab_size}")
    return config


def load_translator(path: str | os.PathLike,
                    device: torch.device | str = "cpu") -> tuple[Translator, PairTokenizer, dict]:
    """The translator, its vocabularies and the checkpoint dict of a translate checkpoint file or run
    directory."""
    checkpoint = load_checkpoint(path, check=lambda c: (require_task(c, "translate", path), check_checkpoint(c)))
    model = Translator(check_checkpoint(checkpoint))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), tokenizer_from_dict(checkpoint["tokenizer"]), checkpoint
