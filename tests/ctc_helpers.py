"""Test helpers for the CTC decoders: synthetic reader outputs, a speed check of the decoders, and the plain
per-line beam search the lockstep search must match."""

from __future__ import annotations

import time

import numpy as np
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


def reference_beam_search(lp: torch.Tensor, *, beam_size: int, lm: CharLM | None = None, lm_weight: float = 0.0,
                          char_bonus: float = 0.0, prune: float = PRUNE) -> list[tuple[tuple[int, ...], float, float]]:
    """Prefix beam search of one line (T, V) as charrnn searched before issue 19: one line at a time, a frame at
    a time, prefixes as tuples, the LM asked through `CharLM.log_probs` for every prefix of the beam. The slow,
    plain reference that the lockstep search (`charrnn.ctc.search`) must match. Returns the final beam as
    (labels, score, lm_log_prob), best first (stable: ties keep the beam's order)."""
    lp = lp.detach().double().numpy()
    chars_of = lp[:, 1:] >= prune
    chars_of[np.arange(len(lp)), lp[:, 1:].argmax(axis=1)] = True
    fused = lambda ctc, lm_part, n: ctc + (lm_weight * lm_part if lm_weight else 0.0) + char_bonus * n  # noqa: E731
    prefixes, pb, pnb, lm_total = [()], np.zeros(1), np.full(1, -np.inf), np.zeros(1)
    if lm is not None:
        lm.clear()
    for row, keep in zip(lp, chars_of):
        chars = np.flatnonzero(keep) + 1
        lm_rows = lm.log_probs(prefixes) if lm is not None else None
        K, C = len(prefixes), len(chars)
        total = np.logaddexp(pb, pnb)
        last = np.array([p[-1] if p else BLANK for p in prefixes])
        stay_b, stay_nb = row[BLANK] + total, row[last] + pnb
        ext = row[chars] + np.where(last[:, None] == chars, pb[:, None], total[:, None])  # (K, C)
        fresh = np.ones(ext.shape, dtype=bool)  # extensions already in the beam merge into it
        column, row_of = {c: j for j, c in enumerate(chars.tolist())}, {p: k for k, p in enumerate(prefixes)}
        for q, p in enumerate(prefixes):
            k, j = (row_of.get(p[:-1]), column.get(p[-1])) if p else (None, None)
            if k is not None and j is not None:
                stay_nb[q] = np.logaddexp(stay_nb[q], ext[k, j])
                fresh[k, j] = False
        ext_lm = lm_total[:, None] + (lm_rows[:, chars] if lm_rows is not None else np.zeros(C))
        lengths = np.array([len(p) for p in prefixes])
        score = np.concatenate([fused(np.logaddexp(stay_b, stay_nb), lm_total, lengths),
                                fused(ext, ext_lm, lengths[:, None] + 1).ravel()])
        kept = np.concatenate([np.ones(K, dtype=bool), fresh.ravel()]) & (score > -np.inf)
        order = np.argsort(-score, kind="stable")
        best = order[kept[order]][:beam_size]
        if not best.size:
            best = order[:1]
        prefixes = [prefixes[i] if i < K else prefixes[(i - K) // C] + (int(chars[(i - K) % C]),)
                    for i in best.tolist()]
        pb = np.concatenate([stay_b, np.full(K * C, -np.inf)])[best]
        pnb = np.concatenate([stay_nb, ext.ravel()])[best]
        lm_total = np.concatenate([lm_total, ext_lm.ravel()])[best]
    scores = fused(np.logaddexp(pb, pnb), lm_total, np.array([len(p) for p in prefixes]))
    return [(prefixes[k], float(scores[k]), float(lm_total[k])) for k in np.argsort(-scores, kind="stable")]
