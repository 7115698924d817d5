"""Sampling: temperature, top-k, top-p (nucleus), greedy, beam search; priming, stop strings, streaming.

Every sample starts from the `<eod>` state, the state the model learned for the start of a document,
then reads the prime. Randomness comes only from the `torch.Generator` passed in, so a seed fixes the text.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from charrnn.core.config import check_length_alpha, check_seed  # noqa: F401 - check_seed: part of sampling's API
from charrnn.core.errors import CharRNNError
from charrnn.core.rnn import State
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.model import CharRNN
from charrnn.lm.stepper import Stepper

PRIME_CHUNK = 2048  # prime characters per fused-kernel call: it holds (T, 3H or 4H) input projections at once
GREEDY_BELOW = 1e-30  # a temperature below this is greedy: exp(-gap / T) is 0 in float32 for any gap over 1e-28
SHIFT_BELOW = 1e-3  # from here up, logits / T overflows only past 3.4e35 (no model's): no shift per character
UNIFORM_ABOVE = 1e30  # a temperature above this is uniform: exp(-gap / T) is 1 in float32 for any gap under 1e22


@dataclass(frozen=True)
class SampleSettings:
    """How to pick each next character."""

    temperature: float = 1.0  # 0 (or below GREEDY_BELOW) = always the most likely character (greedy, argmax)
    top_k: int | None = None  # sample only among the k most likely characters
    top_p: float | None = None  # sample only among the most likely characters whose mass reaches p

    def __post_init__(self):
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise CharRNNError(f"--temperature must be 0 (greedy) or a positive finite number, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise CharRNNError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharRNNError(f"--top-p must be in (0, 1], got {self.top_p}")


def next_token_distribution(logits: torch.Tensor, settings: SampleSettings) -> torch.Tensor:
    """Probabilities (N, V) after top-k, temperature and top-p; excluded characters get exactly 0.

    Any finite temperature is safe, in float32 (MPS has no float64). Below GREEDY_BELOW it is greedy, its
    limit; above UNIFORM_ABOVE it is UNIFORM_ABOVE, already uniform over the characters still allowed. Below
    SHIFT_BELOW the logits are shifted so that the largest is 0 before dividing: every value then lands in
    [-inf, 0], so an overflow is -inf (probability 0), never inf (NaN after softmax). A banned -inf stays -inf.
    """
    if settings.temperature < GREEDY_BELOW:
        return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).float()
    logits = logits.float()
    # Top-k before the temperature: the same ranking, without ties that rounding could make.
    if settings.top_k is not None and settings.top_k < logits.size(-1):
        kth = torch.topk(logits, settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.temperature < SHIFT_BELOW:
        logits = logits - logits.amax(dim=-1, keepdim=True)
    if settings.temperature != 1:
        logits = logits / min(settings.temperature, UNIFORM_ABOVE)
    if settings.top_p is not None and settings.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a character when the mass of the ones strictly before it already reaches p; the first stays.
        drop_sorted = (probs.cumsum(-1) - probs) >= settings.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return torch.softmax(logits, dim=-1)


def choose(logits: torch.Tensor, settings: SampleSettings, generator: torch.Generator | None) -> torch.Tensor:
    """Next ids (N,) from logits (N, V)."""
    if settings.temperature < GREEDY_BELOW:
        return logits.argmax(dim=-1)  # temperature 0 is the limit of sharpening: argmax
    probs = next_token_distribution(logits, settings)
    # Inverse-CDF sampling: a third of torch.multinomial's time per call at batch 1. With right=True the
    # first index whose cumulative mass exceeds u is taken, so a zero-probability character never is
    # (u < total: rand < 1, and rounding to nearest cannot lift rand * total to total; a NaN could).
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(cdf.size(0), 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.size(-1) - 1)


def prime_ids(tokenizer: CharTokenizer, prime: str, map_unknown: bool = False) -> torch.Tensor:
    """`<eod>` followed by the prime's ids; unknown characters raise the tokenizer's clear error."""
    ids = tokenizer.encode(prime, map_unknown=map_unknown) if prime else []
    return torch.tensor([tokenizer.eod_id, *list(ids)], dtype=torch.long)


def read_prime(model: CharRNN, ids: torch.Tensor) -> tuple[torch.Tensor, State]:
    """Run the recurrent layers over ids (T,) as one stream, PRIME_CHUNK characters per fused-kernel call,
    the state carried between calls; return the top layer's last output (1, H) and the state ((L, 1, H) each).

    No logits: only the last position's are needed, and all of them would cost T x V floats.
    """
    cell_state = None
    for chunk in ids.split(PRIME_CHUNK):
        out, cell_state = model.rnn(model.embed(chunk.unsqueeze(0)), cell_state)  # (1, t, H)
    state = cell_state if isinstance(cell_state, tuple) else (cell_state,)
    return out[:, -1], state


def primed(model: CharRNN, tokenizer: CharTokenizer, prime: str, batch: int, *,
           map_unknown: bool = False) -> tuple[torch.Tensor, Stepper]:
    """Read `<eod>` + prime; return the next-character logits (batch, V) and a `Stepper` holding `batch`
    copies of the state, to go on one character at a time.

    Every stream reads the same prime, so it is read once, and its memory grows with neither the prime's
    length times the streams nor the vocabulary. `<unk>` means "some character the corpus never had", so it
    is never produced: its logit is -inf.
    """
    model.eval()
    device = model.head.weight.device
    ids = prime_ids(tokenizer, prime, map_unknown).to(device)
    with torch.no_grad():
        last, state = read_prime(model, ids)
        logits = model.head(model.drop(last)).expand(batch, -1).clone()  # (batch, V)
    logits[:, tokenizer.unk_id] = float("-inf")
    stepper = Stepper(model, batch, banned=[tokenizer.unk_id])
    stepper.load_state(state)  # (L, 1, H) copied into every stream
    return logits, stepper


class _Detokenizer:
    """Turns ids into text one at a time; for byte-level models, waits for complete UTF-8 sequences."""

    def __init__(self, tokenizer: CharTokenizer):
        self.bytes = codecs.getincrementaldecoder("utf-8")(errors="replace") if tokenizer.byte_level else None
        # The text of every id, computed once: this runs once per generated character.
        self.pieces = [tokenizer.decode_bytes([i]) if tokenizer.byte_level else tokenizer.decode([i])
                       for i in range(tokenizer.vocab_size)]

    def __call__(self, i: int) -> str:
        if self.bytes is not None:
            return self.bytes.decode(self.pieces[i])
        return self.pieces[i]

    def flush(self) -> str:
        return self.bytes.decode(b"", final=True) if self.bytes is not None else ""


class _StopWatcher:
    """Holds back text that could be the start of a stop string, and cuts the text where one appears."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.text = ""
        self.emitted = 0
        self.done = False

    def push(self, piece: str) -> str:
        """Add generated text; return what is now safe to show."""
        if not self.stops:
            return piece
        self.text += piece
        for s in self.stops:
            at = self.text.find(s, max(0, len(self.text) - len(piece) - len(s) + 1))
            if at != -1:
                self.text = self.text[:at]
                self.done = True
        if self.done:
            return self.flush()
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        out = self.text[self.emitted : len(self.text) - hold]
        self.emitted += len(out)
        return out

    def flush(self) -> str:
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out


def check_sample_options(length: int, num_samples: int = 1) -> None:
    """Refuse a length or sample count that makes no sense, before any work or output."""
    if length < 0:
        raise CharRNNError(f"--length must be 0 or more, got {length}")
    if num_samples < 1:
        raise CharRNNError(f"--num-samples must be at least 1, got {num_samples}")


def check_beam_options(length: int, beam_size: int, length_alpha: float) -> None:
    """Refuse beam-search settings that make no sense, before any work or output."""
    if beam_size < 1:
        raise CharRNNError(f"--beam-size must be at least 1, got {beam_size}")
    if length < 1:
        raise CharRNNError(f"--length must be at least 1 for beam search, got {length}")
    # Below 0 would favour short texts even more than raw log-probability; `not` also refuses NaN.
    check_length_alpha(length_alpha)


def iter_sample(model: CharRNN, tokenizer: CharTokenizer, *, prime: str = "", length: int = 500,
                settings: SampleSettings = SampleSettings(), num_samples: int = 1, stop: Sequence[str] = (),
                stop_at_eod: bool = True, generator: torch.Generator | None = None,
                map_unknown: bool = False) -> Iterator[list[str]]:
    """Generate `num_samples` continuations of `prime` side by side, one character per step.

    Yields, per step, the list of new text pieces (one per sample; "" while a sample is finished or
    holding back a possible stop string). A sample ends after `length` characters, at a stop string
    (which is not included), or at `<eod>` when `stop_at_eod`. The options are checked and the prime
    read here, at the call, so a bad option or prime fails before a caller shows anything.
    """
    check_sample_options(length, num_samples)
    with torch.inference_mode():
        logits, stepper = primed(model, tokenizer, prime, num_samples, map_unknown=map_unknown)
    return _generate(logits, stepper, tokenizer, length=length, settings=settings, num_samples=num_samples,
                     stop=stop, stop_at_eod=stop_at_eod, generator=generator)


@torch.inference_mode()
def _generate(logits: torch.Tensor, stepper: Stepper, tokenizer: CharTokenizer, *, length: int,
              settings: SampleSettings, num_samples: int, stop: Sequence[str], stop_at_eod: bool,
              generator: torch.Generator | None) -> Iterator[list[str]]:
    """The steps of `iter_sample`, from the primed logits (num_samples, V) and state."""
    detok = [_Detokenizer(tokenizer) for _ in range(num_samples)]
    watch = [_StopWatcher(stop) for _ in range(num_samples)]
    finished = [False] * num_samples
    for _ in range(length):
        nxt = choose(logits, settings, generator)
        pieces = []
        for k, i in enumerate(nxt.tolist()):
            if finished[k]:
                pieces.append("")
                continue
            if i == tokenizer.eod_id and stop_at_eod:
                finished[k] = True
                pieces.append(watch[k].push(detok[k].flush()) + watch[k].flush())
                continue
            pieces.append(watch[k].push(detok[k](i)))
            finished[k] = watch[k].done
        yield pieces
        if all(finished):
            return
        logits = stepper.step(nxt)
    tails = [("" if finished[k] else watch[k].push(detok[k].flush()) + watch[k].flush()) for k in range(num_samples)]
    if any(tails):
        yield tails


def sample(model: CharRNN, tokenizer: CharTokenizer, *, prime: str = "", length: int = 500,
           settings: SampleSettings = SampleSettings(), num_samples: int = 1, stop: Sequence[str] = (),
           stop_at_eod: bool = True, seed: int | None = None, map_unknown: bool = False) -> list[str]:
    """The generated continuations (without the prime), as whole strings."""
    out = [""] * num_samples
    for pieces in iter_sample(model, tokenizer, prime=prime, length=length, settings=settings,
                              num_samples=num_samples, stop=stop, stop_at_eod=stop_at_eod,
                              generator=make_generator(model, seed), map_unknown=map_unknown):
        for k, piece in enumerate(pieces):
            out[k] += piece
    return out


def make_generator(model: CharRNN, seed: int | None) -> torch.Generator:
    """A generator on the model's device, seeded (or from fresh entropy when `seed` is None)."""
    check_seed(seed)
    generator = torch.Generator(device=model.head.weight.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


@torch.inference_mode()
def beam_search(model: CharRNN, tokenizer: CharTokenizer, *, prime: str = "", length: int = 200,
                beam_size: int = 5, length_alpha: float = 1.0, stop_at_eod: bool = True,
                map_unknown: bool = False) -> tuple[str, float]:
    """The continuation of `prime` with the highest length-normalised log-probability, and that score.

    Hypotheses are ranked by sum(log p) / len**length_alpha, so one that ends early at `<eod>` is not
    preferred merely for being short. Deterministic: no sampling.
    """
    check_beam_options(length, beam_size, length_alpha)
    device = model.head.weight.device
    logits, stepper = primed(model, tokenizer, prime, beam_size, map_unknown=map_unknown)
    logp = torch.log_softmax(logits[:1].float(), dim=-1)  # (1, V): every beam starts the same
    scores = torch.zeros(1, device=device)  # cumulative log-probability of each live beam
    seqs: list[list[int]] = [[]]
    done: list[tuple[float, list[int]]] = []

    def normalised(total: float, n: int) -> float:
        return total / max(n, 1) ** length_alpha

    for t in range(length):
        V = logp.size(-1)
        cand = (scores.unsqueeze(1) + logp).reshape(-1)  # (K*V,)
        top = torch.topk(cand, min(beam_size, cand.numel()))
        beams, tokens = top.indices // V, top.indices % V
        keep_rows, keep_tokens, new_scores, new_seqs = [], [], [], []
        for score, b, tok in zip(top.values.tolist(), beams.tolist(), tokens.tolist()):
            if score == float("-inf"):
                continue
            if tok == tokenizer.eod_id and stop_at_eod:
                done.append((normalised(score, t + 1), seqs[b]))
                continue
            keep_rows.append(b)
            keep_tokens.append(tok)
            new_scores.append(score)
            new_seqs.append(seqs[b] + [tok])
        if not keep_rows:
            break
        index = torch.tensor(keep_rows + [keep_rows[0]] * (beam_size - len(keep_rows)), device=device)
        stepper.reorder(index)
        scores = torch.tensor(new_scores, device=device)
        seqs = new_seqs
        if t == length - 1:
            break
        tokens_in = torch.tensor(keep_tokens + [keep_tokens[0]] * (beam_size - len(keep_tokens)), device=device)
        logp = torch.log_softmax(stepper.step(tokens_in).float(), dim=-1)[: len(keep_rows)]
    finals = done + [(normalised(s, len(q)), q) for s, q in zip(scores.tolist(), seqs)]
    best_score, best_seq = max(finals, key=lambda d: d[0])
    return tokenizer.decode(best_seq), best_score
