"""Test helpers for the CTC decoders: synthetic reader outputs, and a speed check of the decoders."""

from __future__ import annotations

import time

import torch

from charrnn.core.tokenizer import CharTokenizer
from charrnn.ctc.decode import CharLM
from charrnn.ctc.search import BLANK, PRUNE, beam_decode, greedy_decode
from charrnn.lm.config import CharRNNConfig
from charrnn.lm.model import CharRNN


def peaked_log_probs(T: int, B: int, V: int, *, peak: float = 8.0, blank_share: float = 0.5,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """Random reader-like log-probabilities (T, B, V): each frame puts most of its mass on one label (the
    blank half the time), as a trained reader does, with logits N(0, 1) + `peak` at that label."""
    logits = torch.randn(T, B, V, generator=generator)
    is_blank = torch.rand(T, B, generator=generator) < blank_share
    label = torch.randint(1, V, (T, B), generator=generator).masked_fill(is_blank, BLANK)
    logits.scatter_add_(-1, label.unsqueeze(-1), torch.full((T, B, 1), peak))
    return logits.log_softmax(-1)


def benchmark(*, T: int = 100, V: int = 80, lines: int = 32, beam_size: int = 8, hidden_size: int = 256,
              num_layers: int = 1, cell: str = "lstm", lm_weight: float = 0.5, peak: float = 8.0,
              prune: float = PRUNE, seed: int = 0) -> dict[str, float]:
    """Lines per second of greedy, beam and beam + LM decoding of `peaked_log_probs`, on the CPU.

    The LM has random weights (its speed, not its opinion, is measured) and a vocabulary of the V - 1
    reader characters. Returns {"greedy", "beam", "beam_lm"} in lines/s, and "lm_rows_per_line", the
    prefixes the LM stepped for the last line.
    """
    generator = torch.Generator().manual_seed(seed)
    log_probs = peaked_log_probs(T, lines, V, peak=peak, generator=generator)
    lengths = torch.full((lines,), T)
    labels = [""] + [chr(33 + i) for i in range(V - 1)]
    tokenizer = CharTokenizer(labels[1:])
    with torch.random.fork_rng():  # the model's initialisation draws from the global generator: leave it be
        torch.manual_seed(seed)
        model = CharRNN(CharRNNConfig(vocab_size=tokenizer.vocab_size, cell=cell, num_layers=num_layers,
                                      hidden_size=hidden_size, embedding_dim=64))
    lm = CharLM(model, tokenizer, labels)
    runs = {"greedy": lambda: greedy_decode(log_probs, lengths),
            "beam": lambda: beam_decode(log_probs, lengths, beam_size=beam_size, prune=prune),
            "beam_lm": lambda: beam_decode(log_probs, lengths, beam_size=beam_size, lm=lm, lm_weight=lm_weight,
                                           prune=prune)}
    speeds: dict[str, float] = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        speeds[name] = lines / (time.perf_counter() - start)
    speeds["lm_rows_per_line"] = float(lm.rows)
    return speeds
