"""CTC search for the line reader: greedy (best path) and prefix beam search with optional shallow fusion
of a language model (`decode.CharLM`, given by the caller).

The reader emits, per frame, log-probabilities over `labels`: `labels[0] == ""` is the CTC blank and
`labels[i]` (i >= 1) one character. A path of T labels means the text obtained by merging repeats, then
dropping blanks (Graves et al. 2006, "Connectionist Temporal Classification", the map B), so a doubled
letter needs a blank between its two copies. The probability of a text is the sum over all its paths.

- `greedy_decode` takes the most likely label of every frame and collapses that path (best path decoding,
  Graves 2006 section 3.2): fast, and exact when one path dominates, as it does for a trained reader.
- `prefix_beam_search` (Hannun et al. 2014, "First-Pass Large Vocabulary Continuous Speech Recognition using
  Bi-Directional Recurrent DNNs", Algorithm 1) keeps the `beam_size` best prefixes, summing over the paths
  of each, and can add a character language model's opinion of every new character (shallow fusion):

      score(prefix) = log p_ctc(prefix) + lm_weight * log p_lm(prefix) + char_bonus * len(prefix)

  With a wide beam and no pruning it is exact: the tests compare it with brute force over every path. A
  narrower beam loses the paths of prefixes that left it, so each returned hypothesis also gets its exact
  CTC log-probability, from one forward pass over all its paths (`ctc_log_probs`, torch's CTC loss).

Shapes: T frames, B lines, V reader labels (blank included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.core.errors import CharRNNError

if TYPE_CHECKING:  # the language model is only passed through: the one module that loads it is decode.py
    from charrnn.ctc.decode import CharLM

BLANK = 0
# Only characters at least this likely in a frame may start a new prefix there (the blank, and staying on
# a prefix's last character, are always followed: they add no prefix), and always the frame's most likely
# one. A character at 1e-3 adds at most 1e-3 of its parent's mass, so the beam rarely wants it, and a
# trained reader puts most of a frame's mass on one or two labels: the grid of extensions shrinks from
# K x (V - 1) to K x a few (1.5x faster measured at V = 80, beam 8). -inf considers every character.
PRUNE = math.log(1e-3)
NEG_INF = float("-inf")

Prefix = tuple[int, ...]


def collapse(path: Sequence[int] | torch.Tensor, blank: int = BLANK) -> list[int]:
    """The labelling of a CTC path: merge repeated labels, then drop blanks (Graves 2006, the map B).

    [h, e, l, l, o] -> "helo"; [h, e, l, blank, l, o] -> "hello".
    """
    if isinstance(path, torch.Tensor):
        path = path.tolist()
    return [label for label, _ in groupby(path) if label != blank]


def _check_lengths(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[int]:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (T, B, V), got shape {tuple(log_probs.shape)}")
    T, B, _ = log_probs.shape
    lengths = torch.as_tensor(lengths).reshape(-1)
    if lengths.numel() != B:
        raise ValueError(f"lengths has {lengths.numel()} entries for a batch of {B} lines")
    out = lengths.tolist()
    if any(not 0 <= n <= T for n in out):
        raise ValueError(f"every length must be in 0..{T} (the frames of log_probs), got {out}")
    return out


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    """Best path decoding of a batch: the most likely label of each valid frame, collapsed.

    log_probs (T, B, V), as torch.nn.CTCLoss takes them; lengths (B,) each line's valid frames. Frames past a
    line's length are padding the reader never trained on (their argmax is garbage), so they are cut off
    before collapsing.
    """
    valid = _check_lengths(log_probs, lengths)
    best = log_probs.argmax(dim=-1).t().tolist()  # (B, T)
    return [collapse(row[:n]) for row, n in zip(best, valid)]


@dataclass(frozen=True)
class Hypothesis:
    """One labelling found by the beam search.

    score = beam_log_prob + lm_weight * lm_log_prob + char_bonus * len(labels), the value the beam ranks by.
    beam_log_prob is log p_ctc(labels) summed over the paths the beam kept: a lower bound, short of the truth
    by the paths of prefixes that left the beam or were pruned (exact with a wide beam and no pruning).
    ctc_log_prob is the exact CTC log-probability, log p(labels | frames) over every path, as
    `-torch.nn.functional.ctc_loss` gives it. lm_log_prob is the language model's raw log-probability of the
    labels (0 without a model).
    """

    labels: Prefix
    score: float
    ctc_log_prob: float
    lm_log_prob: float
    beam_log_prob: float


def _check_beam(log_probs: torch.Tensor, beam_size: int, lm: CharLM | None, lm_weight: float,
                char_bonus: float, prune: float) -> None:
    if log_probs.dim() != 2:
        raise ValueError(f"log_probs must be (T, V) for one line, got shape {tuple(log_probs.shape)}")
    if beam_size < 1:
        raise CharRNNError(f"--beam-size must be at least 1, got {beam_size}")
    if not (lm_weight >= 0 and math.isfinite(lm_weight)):
        raise CharRNNError(f"--lm-weight must be 0 or a positive finite number, got {lm_weight}")
    if not math.isfinite(char_bonus):
        raise CharRNNError(f"--char-bonus must be a finite number, got {char_bonus}")
    if not prune <= 0:
        raise CharRNNError(f"--prune must be a log-probability (0 or below, or -inf for none), got {prune}")
    if lm is not None and log_probs.size(1) != len(lm.labels):
        raise CharRNNError(f"the language model was set up for {len(lm.labels)} reader labels, "
                           f"the reader emits {log_probs.size(1)}")


def _candidates(lp: np.ndarray, prune: float) -> list[np.ndarray]:
    """Per frame, the characters that may start a new prefix: those with log-prob >= prune, and always the
    frame's most likely character, so that beam 1 follows the best path whatever `prune` is."""
    chars = lp[:, 1:]
    keep = chars >= prune  # (T, V-1)
    keep[np.arange(len(chars)), chars.argmax(axis=1)] = True
    return [np.flatnonzero(row) + 1 for row in keep]


def prefix_beam_search(log_probs: torch.Tensor, *, beam_size: int, lm: CharLM | None = None,
                       lm_weight: float = 0.0, char_bonus: float = 0.0, prune: float = PRUNE) -> list[Hypothesis]:
    """The `beam_size` best labellings of one line, best first (Hannun et al. 2014, Algorithm 1).

    log_probs (T, V): the line's valid frames only. Each prefix keeps two log-probabilities: of the paths
    that produce it and end in a blank (p_b) and of those ending in its last character (p_nb). The split
    is what makes repeats right: a frame of c after a prefix ending in c collapses into it (from p_nb:
    the same prefix), while a new c can only follow a blank (from p_b). Paths that reach the same prefix
    are summed (merged), so a prefix's p_b + p_nb is its CTC probability (Graves 2006).

    Shallow fusion: extending a prefix by a character c adds lm_weight * log p_lm(c | prefix) + char_bonus
    to that prefix's score; a blank or a repeat that collapses adds no character, so it leaves the LM
    alone. The bonus offsets the LM's per-character cost, which would otherwise favour dropping characters.
    The ranking score of a prefix is log(p_b + p_nb) + its LM part; the CTC and LM parts are kept apart,
    which is the same as multiplying the LM factor into p_nb at the extension, as Hannun does. The beam's
    CTC part is a lower bound (`Hypothesis.beam_log_prob`); each returned hypothesis also gets the exact
    value (`ctc_log_prob`), from one batched CTC forward pass over the line at the end.

    Characters below `prune` in a frame start no new prefix there (see PRUNE); -inf follows every one.
    """
    return search_lines([log_probs], beam_size=beam_size, lm=lm, lm_weight=lm_weight, char_bonus=char_bonus,
                        prune=prune)[0]


LM_GROUP = 32  # lines searched in lockstep: their frames' LM queries share one batched step


def search_lines(lines: Sequence[torch.Tensor], *, beam_size: int, lm: CharLM | None = None,
                 lm_weight: float = 0.0, char_bonus: float = 0.0, prune: float = PRUNE,
                 group: int = LM_GROUP) -> list[list[Hypothesis]]:
    """`prefix_beam_search` of many lines (each (T_i, V), its valid frames), `group` of them in lockstep:
    frame t of every line in a group asks the LM for its beam's prefixes at once, so one batched step serves
    them all (the LM's answer depends on the prefix alone, so lines share the cache too). Without a model,
    lockstep changes nothing but is harmless. The cache is cleared between groups to bound its memory."""
    found = _search(lines, beam_size, lm, lm_weight, char_bonus, prune, group)
    return [_ranked(beam, lp, lm_weight, char_bonus) for beam, lp in found]


def best_labellings(lines: Sequence[torch.Tensor], *, beam_size: int, lm: CharLM | None = None,
                    lm_weight: float = 0.0, char_bonus: float = 0.0, prune: float = PRUNE,
                    group: int = LM_GROUP) -> list[Prefix]:
    """The best labelling of each line: the first hypothesis of `search_lines`, without the exact CTC
    log-probabilities of every hypothesis (they added 15% to 65% to the search's time on the shipped reader's
    lines here), which decoding and scoring a reading do not need."""
    found = _search(lines, beam_size, lm, lm_weight, char_bonus, prune, group)
    # argmax takes the first of equal scores, as the stable ranking does
    return [beam.prefixes[int(np.argmax(beam.scores(lm_weight, char_bonus)))] for beam, _ in found]


def _search(lines: Sequence[torch.Tensor], beam_size: int, lm: CharLM | None, lm_weight: float, char_bonus: float,
            prune: float, group: int) -> list[tuple[_Beam, np.ndarray]]:
    out: list[tuple[_Beam, np.ndarray]] = []
    for start in range(0, len(lines), group):
        out += _search_group(lines[start:start + group], beam_size, lm, lm_weight, char_bonus, prune)
    return out


def _search_group(lines: Sequence[torch.Tensor], beam_size: int, lm: CharLM | None, lm_weight: float,
                  char_bonus: float, prune: float) -> list[tuple[_Beam, np.ndarray]]:
    """The final beam of each line, with its log-probs (T, V) as float64."""
    for log_probs in lines:
        _check_beam(log_probs, beam_size, lm, lm_weight, char_bonus, prune)
    lps = [lp.detach().to("cpu", torch.float64).numpy() for lp in lines]  # float64, as exact as the brute force
    candidates = [_candidates(lp, prune) for lp in lps]
    if lm is not None:
        lm.clear()
    beams = [_Beam.start() for _ in lps]
    for t in range(max((len(lp) for lp in lps), default=0)):
        active = [k for k, lp in enumerate(lps) if t < len(lp)]
        lm_rows = None
        if lm is not None:
            asked = [p for k in active for p in beams[k].prefixes]
            lm_rows = np.split(lm.log_probs(asked), np.cumsum([len(beams[k].prefixes) for k in active])[:-1])
        for n, k in enumerate(active):
            beams[k] = _advance(beams[k], lps[k][t], candidates[k][t], lm_rows[n] if lm_rows is not None else None,
                                beam_size=beam_size, lm_weight=lm_weight, char_bonus=char_bonus)
    return list(zip(beams, lps))


def _ranked(beam: _Beam, lp: np.ndarray, lm_weight: float, char_bonus: float) -> list[Hypothesis]:
    scores = beam.scores(lm_weight, char_bonus)
    order = np.argsort(-scores, kind="stable")
    exact = ctc_log_probs(lp, [beam.prefixes[k] for k in order])
    return [Hypothesis(labels=beam.prefixes[k], score=float(scores[k]), ctc_log_prob=float(exact[n]),
                       lm_log_prob=float(beam.lm[k]), beam_log_prob=float(np.logaddexp(beam.pb[k], beam.pnb[k])))
            for n, k in enumerate(order)]


def ctc_log_probs(log_probs: np.ndarray | torch.Tensor, labellings: Sequence[Sequence[int]]) -> np.ndarray:
    """The exact CTC log-probability of each labelling (blank-free label ids) given one line's frames
    log_probs (T, V): the log of the sum over every path that collapses to it (Graves 2006), as
    `-torch.nn.functional.ctc_loss` computes it, in float64, one forward pass for all of them. (N,); -inf for
    a labelling that no path produces (longer than the frames allow)."""
    lp = torch.as_tensor(log_probs, dtype=torch.float64)  # (T, V)
    T, N = lp.size(0), len(labellings)
    if T == 0 or N == 0:  # no frames: only the empty labelling, by the empty path
        return np.array([0.0 if not labels else NEG_INF for labels in labellings])
    targets = torch.tensor([c for labels in labellings for c in labels], dtype=torch.long)
    lengths = torch.tensor([len(labels) for labels in labellings], dtype=torch.long)
    loss = F.ctc_loss(lp[:, None].expand(T, N, lp.size(1)), targets, torch.full((N,), T, dtype=torch.long),
                      lengths, blank=BLANK, reduction="none", zero_infinity=False)  # (N,) nats
    return (-loss).numpy()


@dataclass
class _Beam:
    """The K live prefixes of a line and, aligned with them, (K,) float64 arrays."""

    prefixes: list[Prefix]
    pb: np.ndarray  # log-probability of the paths that produce the prefix and end in a blank
    pnb: np.ndarray  # ... that end in the prefix's last character
    lm: np.ndarray  # log p_lm(prefix), a function of the prefix alone (0 without a model)

    @classmethod
    def start(cls) -> _Beam:
        """Before the first frame: the empty prefix, reached by the empty path (which ends in no character)."""
        return cls([()], np.zeros(1), np.full(1, NEG_INF), np.zeros(1))

    def scores(self, lm_weight: float, char_bonus: float) -> np.ndarray:
        return _fused(np.logaddexp(self.pb, self.pnb), self.lm, self.lengths(), lm_weight, char_bonus)

    def lengths(self) -> np.ndarray:
        return np.array([len(p) for p in self.prefixes])


def _fused(ctc: np.ndarray, lm: np.ndarray, lengths: np.ndarray, lm_weight: float, char_bonus: float) -> np.ndarray:
    """The ranking score. Without a weight the LM term is left out rather than multiplied by 0, so that
    lm_weight 0 ranks exactly as no model does."""
    return ctc + (lm_weight * lm if lm_weight else 0.0) + char_bonus * lengths


def _advance(beam: _Beam, row: np.ndarray, chars: np.ndarray, lm_rows: np.ndarray | None, *, beam_size: int,
             lm_weight: float, char_bonus: float) -> _Beam:
    """One frame of Algorithm 1 for every prefix at once: row (V,) the frame's log-probs, chars (C,) the
    characters that may extend a prefix, lm_rows (K, V) log p_lm(label | prefix) or None.

    Every prefix stays (through a blank, or repeating its last character) and is extended by every c, a
    (K, C) grid. An extension that is already in the beam merges into it; the others are new prefixes, all
    distinct (a prefix has one parent), so the beam_size best of stays and new ones are the next beam.
    """
    K, C = len(beam.prefixes), len(chars)
    total = np.logaddexp(beam.pb, beam.pnb)  # (K,)
    # The blank stands for "no last character": the empty prefix's p_nb is -inf, so its repeat is too.
    last = np.array([p[-1] if p else BLANK for p in beam.prefixes])  # (K,)
    stay_b = row[BLANK] + total  # (K,)
    stay_nb = row[last] + beam.pnb  # (K,) the last character again collapses into it
    # A repeat of the last character is a new character only after a blank (Hannun's special case).
    ext = row[chars] + np.where(last[:, None] == chars, beam.pb[:, None], total[:, None])  # (K, C)
    fresh = _merge_known(beam.prefixes, chars, ext, stay_nb)  # (K, C)
    ext_lm = beam.lm[:, None] + (lm_rows[:, chars] if lm_rows is not None else np.zeros(C))  # (K, C)
    lengths = beam.lengths()
    score = np.concatenate([_fused(np.logaddexp(stay_b, stay_nb), beam.lm, lengths, lm_weight, char_bonus),
                            _fused(ext, ext_lm, lengths[:, None] + 1, lm_weight, char_bonus).ravel()])
    # Merged extensions are gone, and so is a prefix no path produces (a repeat with no blank before it).
    keep = np.concatenate([np.ones(K, dtype=bool), fresh.ravel()]) & (score > NEG_INF)  # (K + K*C,)
    order = np.argsort(-score, kind="stable")  # stable: ties keep the older prefix, deterministic
    best = order[keep[order]][:beam_size]
    if not best.size:  # a frame in which every label has probability 0: nothing is possible, keep going
        best = order[:1]
    prefixes = [beam.prefixes[i] if i < K else beam.prefixes[(i - K) // C] + (int(chars[(i - K) % C]),)
                for i in best.tolist()]
    pb = np.concatenate([stay_b, np.full(K * C, NEG_INF)])  # a new prefix ends in its new character
    return _Beam(prefixes, pb[best], np.concatenate([stay_nb, ext.ravel()])[best],
                 np.concatenate([beam.lm, ext_lm.ravel()])[best])


def _merge_known(prefixes: list[Prefix], chars: np.ndarray, ext: np.ndarray, stay_nb: np.ndarray) -> np.ndarray:
    """Add each extension that is already a prefix of the beam into that prefix's p_nb (in place), and
    return the (K, C) mask of the extensions that are new prefixes."""
    fresh = np.ones(ext.shape, dtype=bool)
    column = {c: j for j, c in enumerate(chars.tolist())}
    row_of = {p: k for k, p in enumerate(prefixes)}
    for q, p in enumerate(prefixes):
        k, j = (row_of.get(p[:-1]), column.get(p[-1])) if p else (None, None)
        if k is not None and j is not None:  # p's parent is in the beam and extends to p in this frame
            stay_nb[q] = np.logaddexp(stay_nb[q], ext[k, j])
            fresh[k, j] = False
    return fresh


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, *, beam_size: int, lm: CharLM | None = None,
                lm_weight: float = 0.0, char_bonus: float = 0.0, prune: float = PRUNE) -> list[list[int]]:
    """The best labelling of every line of a batch, log_probs (T, B, V) cut to each line's valid frames."""
    valid = _check_lengths(log_probs, lengths)
    lines = log_probs.detach().to("cpu", torch.float64).unbind(1)  # B x (T, V), one copy for the batch
    found = best_labellings([line[:n] for line, n in zip(lines, valid)], beam_size=beam_size, lm=lm,
                            lm_weight=lm_weight, char_bonus=char_bonus, prune=prune)
    return [list(labels) for labels in found]


