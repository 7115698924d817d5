"""Decoding a step-wise decoder (one token at a time, conditioned on an encoded input): greedy, sampled, or beam
search with length normalisation, for any task whose model writes a sequence from an input it reads first
(caption's image; a source text for an encoder-decoder).

A model decodes here when it has `encode(inputs) -> (enc, state)` and `step(token (B,), state, enc) ->
(logits (B, V), state, attention (B, N) or None)`, with `enc.repeat(k)` giving each input `k` times in a row and
a state that is a tuple of (L, B, H) tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from charrnn.core.errors import check_stop


@dataclass
class Decoded:
    tokens: list[int]  # without the start and end tokens
    attention: torch.Tensor | None  # (len(tokens) + 1, N): the weights used to choose each token and the end
    score: float  # log-probability (beam search: divided by length ** length_alpha)


@torch.no_grad()
def decode(model, inputs, *, bos: int, eos: int, max_len: int, temperature: float = 0.0,
           generator: torch.Generator | None = None, should_stop: Callable[[], bool] | None = None) -> list[Decoded]:
    """One output per input: greedy (temperature 0 = always the most likely token) or sampled. `should_stop()`
    is asked before each step (`StopRequested` when it says so): an output may be long."""
    enc, state = model.encode(inputs)
    B, device = state[0].size(1), state[0].device
    token = torch.full((B,), bos, dtype=torch.long, device=device)
    out = [[] for _ in range(B)]
    attn: list[list[torch.Tensor]] = [[] for _ in range(B)]
    scores = torch.zeros(B, dtype=torch.float64)
    done = torch.zeros(B, dtype=torch.bool)
    for _ in range(max_len):
        check_stop(should_stop)
        logits, state, alpha = model.step(token, state, enc)
        logp = logits.float().log_softmax(1)
        if temperature > 0:
            token = torch.multinomial((logp / temperature).softmax(1), 1, generator=generator)[:, 0]
        else:
            token = logp.argmax(1)
        for b in torch.nonzero(~done).flatten().tolist():
            scores[b] += float(logp[b, token[b]])
            if alpha is not None:
                attn[b].append(alpha[b].cpu())
            if int(token[b]) == eos:
                done[b] = True
            else:
                out[b].append(int(token[b]))
        if bool(done.all()):
            break
    return [Decoded(out[b], torch.stack(attn[b]) if attn[b] else None, float(scores[b])) for b in range(B)]


def beam_search(model, inputs, *, bos: int, eos: int, max_len: int, beam_size: int,
                length_alpha: float = 0.0, should_stop: Callable[[], bool] | None = None) -> list[Decoded]:
    """The most likely output of each input under a beam of `beam_size` hypotheses (1 = greedy), ranked at the
    end by log-probability / length ** `length_alpha`; `should_stop()` is asked before each step, as in `decode`."""
    return [best[0] for best in beam_search_n(model, inputs, bos=bos, eos=eos, max_len=max_len, beam_size=beam_size,
                                              length_alpha=length_alpha, should_stop=should_stop)]


@torch.no_grad()
def beam_search_n(model, inputs, *, bos: int, eos: int, max_len: int, beam_size: int, n_best: int = 1,
                  length_alpha: float = 0.0, should_stop: Callable[[], bool] | None = None) -> list[list[Decoded]]:
    """The `n_best` (at most `beam_size`) best outputs of each input under a beam of `beam_size` hypotheses,
    best first, each scored by log-probability / length ** `length_alpha`. Hypotheses that the beam kept
    apart but that read the same (a finished output padded with ends) are listed once."""
    enc, state = model.encode(inputs)
    B, K, device = state[0].size(1), beam_size, state[0].device
    enc, state = enc.repeat(K), tuple(s.repeat_interleave(K, dim=1) for s in state)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start as the same empty output: keep one
    token = torch.full((B * K,), bos, dtype=torch.long, device=device)
    history = torch.zeros((B * K, 0), dtype=torch.long, device=device)
    attn: torch.Tensor | None = None  # (B*K, t, N)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    for _ in range(max_len):
        check_stop(should_stop)
        logits, state, alpha = model.step(token, state, enc)
        logp = logits.float().log_softmax(1)  # (B*K, V)
        logp[finished] = float("-inf")
        logp[finished, eos] = 0.0  # a finished output stays as it is, at no cost
        total = (scores.view(-1, 1) + logp).view(B, -1)  # (B, K*V)
        scores, flat = total.topk(K, dim=1)
        V = logp.size(1)
        rows = (flat // V + torch.arange(B, device=device)[:, None] * K).flatten()  # which beam each came from
        token = (flat % V).flatten()
        state = tuple(s[:, rows] for s in state)
        history = torch.cat([history[rows], token[:, None]], dim=1)
        if alpha is not None:
            step_alpha = alpha[rows][:, None]
            attn = step_alpha if attn is None else torch.cat([attn[rows], step_alpha], dim=1)
        finished = finished[rows] | (token == eos)
        if bool(finished.all()):
            break
    return [_best_beams(history[b * K:(b + 1) * K], scores[b], attn[b * K:(b + 1) * K] if attn is not None else None,
                        eos, length_alpha, n_best) for b in range(B)]


def _best_beams(history: torch.Tensor, scores: torch.Tensor, attn: torch.Tensor | None, eos: int,
                length_alpha: float, n_best: int) -> list[Decoded]:
    candidates = []
    for k in range(history.size(0)):
        if scores[k] == float("-inf"):
            continue  # a beam that never held a hypothesis (fewer possible outputs than beams)
        ids = history[k].tolist()
        n = ids.index(eos) if eos in ids else len(ids)
        normalised = float(scores[k]) / max(n + 1, 1) ** length_alpha
        candidates.append((normalised, -k, ids[:n], None if attn is None else attn[k, : n + 1].cpu()))
    out, seen = [], set()
    for c in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        if tuple(c[2]) not in seen:
            seen.add(tuple(c[2]))
            out.append(Decoded(c[2], c[3], c[0]))
    return out[:n_best]
