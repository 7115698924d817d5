"""Scoring text with a model: nats per character over a whole text, hidden state carried.

Used for the validation split during training and by `charrnn eval` for any file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.core.config import Newline
from charrnn.core.errors import CharRNNError, check_stop
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.data import iter_encoded
from charrnn.lm.model import CharRNN


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
             burn_in: int = 256, unk_id: int | None = None,
             should_stop: Callable[[], bool] | None = None,
             on_progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Mean cross-entropy (nats/char) of predicting every character of `ids` from the ones before it.

    Every character after the first is scored exactly once, with the hidden state carried. To use more
    than one core the text is cut into `streams` contiguous pieces run side by side; each piece first
    reads (unscored) the `burn_in` characters before it, so it starts with a warm state, not a cold one.
    `streams=1` is a single pass over the whole text. Targets equal to `unk_id` are not scored.
    `should_stop()` is asked before each chunk of `seq_len` characters; when it says so, `StopRequested`.
    `on_progress(done, total)` is called after each chunk with the characters scored so far (about) and in all.
    """
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    ids = ids.cpu().numpy() if isinstance(ids, torch.Tensor) else ids  # a (memory-mapped) array is fine
    M = len(ids) - 1  # number of (input, target) pairs
    if M < 1:
        raise CharRNNError("the text to evaluate needs at least 2 characters")
    S = max(1, min(streams, M))
    chunk = math.ceil(M / S)
    S = math.ceil(M / chunk)
    burn = min(burn_in, chunk)

    def window(offset: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs (S, width) at positions [k*chunk + offset, ...) of every piece, and which are real."""
        x = np.zeros((S, width + 1), dtype=np.int64)
        real = np.zeros((S, width), dtype=bool)
        for k in range(S):
            a = k * chunk + offset
            b = min(a + width, (k + 1) * chunk, M)
            if b > a:
                x[k, : b - a + 1] = ids[a : b + 1]
                real[k, : b - a] = True
        return torch.from_numpy(x), torch.from_numpy(real)

    state = model.init_state(S, device)
    if burn > 0 and S > 1:
        warm = torch.stack([torch.as_tensor(np.asarray(ids[k * chunk - burn : k * chunk] if k else ids[:burn],
                                                        dtype=np.int64)) for k in range(S)])
        _, state = model(warm.to(device), state)
        state = tuple(s.clone() for s in state)
        for s in state:
            s[:, 0] = 0.0  # the first piece has nothing before it: it starts cold, like a single pass
    total = torch.zeros((), dtype=torch.float64, device=device)
    scored = unknown = 0
    for t in range(0, chunk, seq_len):
        check_stop(should_stop)
        # Built chunk by chunk from the array, so memory does not grow with the text.
        xy, real = window(t, min(seq_len, chunk - t))
        x, y = xy[:, :-1].to(device), xy[:, 1:].to(device)
        if unk_id is not None:
            is_unk = (xy[:, 1:] == unk_id) & real
            unknown += int(is_unk.sum())
            real &= ~is_unk
        logits, state = model(x, state)
        losses = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (S, T)
        total += (losses * real.to(device)).sum(dtype=torch.float64)
        scored += int(real.sum())
        if on_progress is not None:
            on_progress(min(M, S * (t + seq_len)), M)
    model.train(was_training)
    return EvalResult(float(total) / max(scored, 1), scored, unknown)


def evaluate_file(model: CharRNN, tokenizer: CharTokenizer, path: str | os.PathLike, encoding: str = "utf-8",
                  map_unknown: bool = False, streams: int = 16, newline: Newline = "keep",
                  on_progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score every character of a text file, starting from the start-of-document state, its line ends read as
    `newline` says (as the model's corpus was: see `lm.trained_newline`).

    Characters the model never saw raise a `CharRNNError` listing them, or with `map_unknown` are read
    as `<unk>` and left out of the score (counted in `unknown_chars`). `on_progress(done, total)`: characters
    scored so far and in all, after each chunk of the text.
    """
    if streams < 1:
        raise CharRNNError(f"--streams must be at least 1, got {streams}")
    ids = np.concatenate(list(iter_encoded(path, tokenizer, encoding, map_unknown=map_unknown, newline=newline)))
    if len(ids) < 2:
        raise CharRNNError(f"{str(path)!r} has no characters to score")
    result = evaluate(model, ids, streams=streams, unk_id=tokenizer.unk_id if map_unknown else None,
                      on_progress=on_progress)
    if result.chars == 0:  # a loss of 0 over nothing scored would read as a perfect model
        raise CharRNNError(f"every character of {str(path)!r} is unknown to this model, so nothing can be scored; "
                           "evaluate a text in the model's own alphabet (see charrnn info)")
    return result
