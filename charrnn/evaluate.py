"""Scoring text with a model: nats per character over a whole text, hidden state carried.

Used for the validation split during training and by `charrnn eval` for any file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.common import CharRNNError
from charrnn.data import iter_encoded
from charrnn.model import CharRNN
from charrnn.tokenizer import CharTokenizer


@dataclass
class EvalResult:
    nats_per_char: float
    chars: int  # characters scored
    unknown_chars: int  # targets that were <unk> (not scored)

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char) if self.nats_per_char < 700 else math.inf

    def to_dict(self) -> dict:
        return {"nats_per_char": self.nats_per_char, "bits_per_char": self.bits_per_char,
                "perplexity": self.perplexity, "chars": self.chars, "unknown_chars": self.unknown_chars}


@torch.no_grad()
def evaluate(model: CharRNN, ids: np.ndarray | torch.Tensor, streams: int = 16, seq_len: int = 256,
             burn_in: int = 256, unk_id: int | None = None) -> EvalResult:
    """Mean cross-entropy (nats/char) of predicting every character of `ids` from the ones before it.

    Every character after the first is scored exactly once, with the hidden state carried. To use more
    than one core the text is cut into `streams` contiguous pieces run side by side; each piece first
    reads (unscored) the `burn_in` characters before it, so it starts with a warm state, not a cold one.
    `streams=1` is a single pass over the whole text. Targets equal to `unk_id` are not scored.
    """
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    ids = torch.as_tensor(np.asarray(ids).astype(np.int64)) if not isinstance(ids, torch.Tensor) else ids.long()
    M = len(ids) - 1  # number of (input, target) pairs
    if M < 1:
        raise CharRNNError("the text to evaluate needs at least 2 characters")
    S = max(1, min(streams, M))
    chunk = math.ceil(M / S)
    S = math.ceil(M / chunk)
    burn = min(burn_in, chunk)
    inputs = torch.zeros(S, chunk, dtype=torch.long)
    targets = torch.zeros(S, chunk, dtype=torch.long)
    mask = torch.zeros(S, chunk, dtype=torch.bool)
    for k in range(S):
        a, b = k * chunk, min((k + 1) * chunk, M)
        inputs[k, : b - a] = ids[a:b]
        targets[k, : b - a] = ids[a + 1 : b + 1]
        mask[k, : b - a] = True
    unknown = 0
    if unk_id is not None:
        is_unk = (targets == unk_id) & mask
        unknown = int(is_unk.sum())
        mask &= ~is_unk
    state = model.init_state(S, device)
    if burn > 0 and S > 1:
        warm = torch.stack([ids[k * chunk - burn : k * chunk] if k else ids[:burn] for k in range(S)])
        _, state = model(warm.to(device), state)
        state = tuple(s.clone() for s in state)
        for s in state:
            s[:, 0] = 0.0  # the first piece has nothing before it: it starts cold, like a single pass
    total = torch.zeros((), dtype=torch.float64, device=device)
    for t in range(0, chunk, seq_len):
        x = inputs[:, t : t + seq_len].to(device)
        logits, state = model(x, state)
        losses = F.cross_entropy(logits.float().transpose(1, 2), targets[:, t : t + seq_len].to(device),
                                 reduction="none")  # (S, T)
        total += (losses * mask[:, t : t + seq_len].to(device)).sum(dtype=torch.float64)
    model.train(was_training)
    scored = int(mask.sum())
    return EvalResult(float(total) / max(scored, 1), scored, unknown)


def evaluate_file(model: CharRNN, tokenizer: CharTokenizer, path: str | os.PathLike, encoding: str = "utf-8",
                  map_unknown: bool = False, streams: int = 16) -> EvalResult:
    """Score every character of a text file, starting from the start-of-document state.

    Characters the model never saw raise a `CharRNNError` listing them, or with `map_unknown` are read
    as `<unk>` and left out of the score (counted in `unknown_chars`).
    """
    ids = np.concatenate(list(iter_encoded(path, tokenizer, encoding, map_unknown=map_unknown)))
    if len(ids) < 2:
        raise CharRNNError(f"{str(path)!r} has no characters to score")
    return evaluate(model, ids, streams=streams, unk_id=tokenizer.unk_id if map_unknown else None)
