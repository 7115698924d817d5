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
- `search_lines` runs the beam search of many lines at once: a group of lines advances frame by frame in
  lockstep, every prefix of every line in one set of numpy arrays, and the LM's steps of a frame are one
  batched call, skipped for a new prefix none of whose extensions can enter the beam. Neither changes a
  result: the tests compare every hypothesis with a plain search of one line at a time.

Shapes: T frames, B lines, V reader labels (blank included).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby, repeat
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


def _candidates(lp: np.ndarray, prune: float) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the characters that may start a new prefix: those with log-prob >= prune, and always the
    frame's most likely character, so that beam 1 follows the best path whatever `prune` is. Returns their
    ids (T, C) in increasing order, each frame's first counts[t] valid (the rest padding), and counts (T,)."""
    chars = lp[:, 1:]
    keep = chars >= prune  # (T, V-1)
    keep[np.arange(len(chars)), chars.argmax(axis=1)] = True
    counts = keep.sum(axis=1)
    return np.argsort(~keep, axis=1, kind="stable")[:, :max(int(counts.max(initial=1)), 1)] + 1, counts


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


LM_GROUP = 64  # lines searched in lockstep: their frames' LM queries share one batched step
# torch threads for the LM's per-frame steps, whatever the caller's setting. They are small (a few hundred rows
# of about 1 MFLOP each), and on a machine whose cores are busy with other work, OpenMP threads that must all
# arrive at each matrix product wait for one another: beam 8 + the shipped LM on 64 lines of a 2-core machine
# running two busy loops read 37-39 lines/s with 2 threads against 147-200 with 1. (On the quiet machine 2
# threads were 1.26x faster.)
LM_THREADS = 1


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
    """The final beam of each line, with its log-probs (T, V) as float64.

    Lines are searched longest first (the order changes no line's result), so the lines of a group end close
    together and those still reading at frame t are the group's first rows. The LM's steps are small matrix
    products, a few hundred rows each: they run on LM_THREADS torch threads whatever the caller's setting.
    """
    for log_probs in lines:
        _check_beam(log_probs, beam_size, lm, lm_weight, char_bonus, prune)
    lps = [lp.detach().to("cpu", torch.float64).numpy() for lp in lines]  # float64, as exact as the brute force
    by_labels: dict[int, list[int]] = {}  # the lines of a group share one (G, T, V) array
    for k in sorted(range(len(lps)), key=lambda k: -len(lps[k])):
        by_labels.setdefault(lps[k].shape[1], []).append(k)
    found: list[_Beam | None] = [None] * len(lps)
    with _torch_threads(LM_THREADS if lm is not None else None):
        for order in by_labels.values():
            for start in range(0, len(order), group):
                chunk = order[start:start + group]
                beams = _Lockstep([lps[k] for k in chunk], beam_size, lm, lm_weight, char_bonus, prune).run()
                for k, beam in zip(chunk, beams):
                    found[k] = beam
    return list(zip(found, lps))  # type: ignore[arg-type]


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to n for the block (None: left alone), then restored."""
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

    def scores(self, lm_weight: float, char_bonus: float) -> np.ndarray:
        return _fused(np.logaddexp(self.pb, self.pnb), self.lm, self.lengths(), lm_weight, char_bonus)

    def lengths(self) -> np.ndarray:
        return np.array([len(p) for p in self.prefixes])


def _fused(ctc: np.ndarray, lm: np.ndarray, lengths: np.ndarray, lm_weight: float, char_bonus: float) -> np.ndarray:
    """The ranking score. Without a weight the LM term is left out rather than multiplied by 0, so that
    lm_weight 0 ranks exactly as no model does."""
    return ctc + (lm_weight * lm if lm_weight else 0.0) + char_bonus * lengths


class _Trie:
    """Every prefix a group of lines has held, once, as a node: its parent node, last label and length. Node 1
    is the empty prefix; node 0 stands for "no prefix" (an empty beam slot): no node is its child and it is no
    node's parent. Children are looked up by (parent, label), so a prefix is one node across the lines and
    frames of the group, which is what merging extensions into the beam and the LM's cache need.
    `lm_row[node]` is the prefix's row in the LM's tables (`CharLM.extend`), -1 until it is stepped."""

    def __init__(self, num_labels: int):
        self.V, self.size = num_labels, 2
        self.parent = np.array([-3, -2], dtype=np.int64)  # match no node: the empty prefix has no parent
        self.last = np.zeros(2, dtype=np.int64)  # BLANK: "no last character", as the search reads it
        self.length = np.zeros(2, dtype=np.int64)
        self.lm_row = np.zeros(2, dtype=np.int64)  # row 0 of the LM's tables: the `<eod>` state
        self._children: dict[int, int] = {}  # parent * V + label -> node

    def children(self, parents: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The node of each parent's prefix extended by its label, added where new. (n,)"""
        keys = parents * self.V + labels
        nodes = np.fromiter(map(self._children.get, keys.tolist(), repeat(0)), np.int64, len(keys))
        new = nodes == 0
        if new.any():
            added = np.unique(keys[new])  # the same prefix may be new in two lines at once: one node for both
            ids = np.arange(self.size, self.size + len(added))
            if ids[-1] >= len(self.parent):  # doubling
                grow = max(len(self.parent), len(added))
                self.parent, self.last, self.length, self.lm_row = (
                    np.concatenate([a, np.empty(grow, a.dtype)]) for a in (self.parent, self.last, self.length,
                                                                          self.lm_row))
            self.parent[ids], self.last[ids] = np.divmod(added, self.V)
            self.length[ids] = self.length[self.parent[ids]] + 1
            self.lm_row[ids] = -1
            self._children.update(zip(added.tolist(), ids.tolist()))
            self.size += len(added)
            nodes[new] = ids[np.searchsorted(added, keys[new])]
        return nodes

    def prefixes(self, nodes: list[int]) -> list[Prefix]:
        """The label tuples of `nodes`; each ancestor is built once (the hypotheses of a line share most)."""
        parent, last = self.parent[:self.size].tolist(), self.last[:self.size].tolist()
        built: dict[int, Prefix] = {1: ()}
        for node in nodes:
            path = []
            while node not in built:
                path.append(node)
                node = parent[node]
            for n in reversed(path):
                built[n] = built[parent[n]] + (last[n],)
        return [built[node] for node in nodes]


class _Lockstep:
    """Algorithm 1 for a group of G lines at once, frame by frame, every prefix of every line in one set of
    arrays: a row per line (longest first, so the lines still reading at frame t are rows :A) and a column per
    beam slot (K = beam_size), holding the slot's node in the group's `_Trie`, p_b, p_nb and log p_lm. An
    empty slot is node 0 with p_b = p_nb = -inf, so all it produces scores -inf and is never kept. Each
    frame does, for all lines together, what the per-line search did for one, with the same float64
    operations in the same order, so every line's beam is what searching it alone gives (and the group's LM
    steps are batched).
    """

    def __init__(self, lps: list[np.ndarray], beam_size: int, lm: CharLM | None, lm_weight: float,
                 char_bonus: float, prune: float):
        G, K, V = len(lps), beam_size, lps[0].shape[1]
        self.K, self.lm, self.lm_weight, self.char_bonus = K, lm, lm_weight, char_bonus
        self.lengths = np.array([len(lp) for lp in lps])  # descending
        T = int(self.lengths.max(initial=0))
        found = [_candidates(lp, prune) for lp in lps]
        C = max((chars.shape[1] for chars, _ in found), default=1)
        self.lp = np.zeros((T, G, V))  # frame-major: the lines' frame t is one block
        self.chars = np.ones((T, G, C), dtype=np.int64)  # padding: any label, never valid
        self.counts = np.zeros((T, G), dtype=np.int64)
        for g, (lp, (chars, counts)) in enumerate(zip(lps, found)):
            self.lp[:len(lp), g], self.chars[:len(lp), g, :chars.shape[1]], self.counts[:len(lp), g] = (lp, chars,
                                                                                                      counts)
        self.lines, self.columns = np.arange(G)[:, None], np.arange(C)
        self.trie = _Trie(V)
        self.node = np.zeros((G, K), dtype=np.int64)
        self.node[:, 0] = 1  # before the first frame: the empty prefix, reached by the empty path
        self.pb, self.pnb, self.lm_total = np.full((G, K), NEG_INF), np.full((G, K), NEG_INF), np.zeros((G, K))
        self.pb[:, 0] = 0.0
        if lm is not None:
            lm.clear()

    def run(self) -> list[_Beam]:
        for t in range(len(self.lp)):
            self._frame(t, int(np.count_nonzero(self.lengths > t)))
        kept = self.node > 0  # (G, K): a beam's slots in use come first
        prefixes = iter(self.trie.prefixes(self.node[kept].tolist()))
        return [_Beam([next(prefixes) for _ in range(int(n))], self.pb[g, :n], self.pnb[g, :n], self.lm_total[g, :n])
                for g, n in enumerate(kept.sum(1))]

    def _frame(self, t: int, A: int) -> None:
        """One frame for the A lines still reading: every prefix stays (through a blank, or repeating its last
        character) and is extended by every candidate c, an (A, K, C) grid; an extension already in its beam
        merges into it, the others are new prefixes, and the beam_size best of each line's stays and new ones
        are its next beam."""
        K, lines, w, bonus = self.K, self.lines[:A], self.lm_weight, self.char_bonus
        counts = self.counts[t, :A]
        C = int(counts.max())
        row, chars = self.lp[t, :A], self.chars[t, :A, :C]  # (A, V), (A, C)
        node, pb, pnb, lm = self.node[:A], self.pb[:A], self.pnb[:A], self.lm_total[:A]  # (A, K)
        last, lengths = self.trie.last[node], self.trie.length[node]
        total = np.logaddexp(pb, pnb)
        stay_b = row[:, :BLANK + 1] + total
        stay_nb = row[lines, last] + pnb  # the last character again collapses into it
        # A repeat of the last character is a new character only after a blank (Hannun's special case).
        again = last[..., None] == chars[:, None]  # (A, K, C)
        ext = row[lines, chars][:, None] + np.where(again, pb[..., None], total[..., None])  # (A, K, C)
        fresh = self._merge(node, again, self.columns[:C] < counts[:, None], ext, stay_nb)  # (A, K, C)
        stay = _fused(np.logaddexp(stay_b, stay_nb), lm, lengths, w, bonus)  # (A, K)
        if self.lm is None:
            ext_lm = np.broadcast_to(lm[..., None], ext.shape)
            score = _fused(ext, ext_lm, lengths[..., None] + 1, w, bonus)
        else:
            ext_lm, score = self._fused_lm(node, chars, ext, fresh, stay, lm, lengths)
        score[~fresh] = NEG_INF  # merged extensions are gone, and so are padding candidates
        score = np.concatenate([stay, score.reshape(A, -1)], 1)  # (A, K + K*C)
        # stable: ties keep the older prefix, deterministic. A prefix no path produces (a repeat with no blank
        # before it) scores -inf and is not kept; a line that kept nothing (a frame in which every label has
        # probability 0) keeps its first prefix and goes on.
        best = np.argsort(-score, axis=1, kind="stable")[:, :K]  # (A, K)
        flat = best + lines * score.shape[1]
        kept = score.ravel()[flat] > NEG_INF
        kept[:, 0] = True
        is_stay, slot = best < K, np.minimum(best, K - 1)
        self.pb[:A] = np.where(kept & is_stay, stay_b[lines, slot], NEG_INF)  # a new prefix ends in its char
        self.pnb[:A] = np.where(kept, np.concatenate([stay_nb, ext.reshape(A, -1)], 1).ravel()[flat], NEG_INF)
        self.lm_total[:A] = np.where(kept, np.concatenate([lm, ext_lm.reshape(A, -1)], 1).ravel()[flat], 0.0)
        nodes = np.where(kept & is_stay, node[lines, slot], 0)
        a, s = np.nonzero(kept & ~is_stay)  # extension (k, j): slot k's prefix extended by chars[j]
        k, j = np.divmod(best[a, s] - K, C)
        nodes[a, s] = self.trie.children(node[a, k], chars[a, j])
        self.node[:A] = nodes

    def _merge(self, node: np.ndarray, again: np.ndarray, valid: np.ndarray, ext: np.ndarray,
               stay_nb: np.ndarray) -> np.ndarray:
        """Add each extension that is already a prefix of its beam into that prefix's p_nb (in place), and
        return the (A, K, C) mask of the extensions that are new prefixes (of valid candidates)."""
        at = self.trie.parent[node][..., None] == node[:, None]  # (A, K, K): slot q's parent is in slot k
        column = again & valid[:, None]  # (A, K, C): slot q's last label is candidate j
        a, q = np.nonzero(at.any(2) & column.any(2))
        if not a.size:
            return np.broadcast_to(valid[:, None], ext.shape)
        k, j = at[a, q].argmax(1), column[a, q].argmax(1)
        stay_nb[a, q] = np.logaddexp(stay_nb[a, q], ext[a, k, j])
        fresh = np.broadcast_to(valid[:, None], ext.shape).copy()
        fresh[a, k, j] = False
        return fresh

    def _fused_lm(self, node: np.ndarray, chars: np.ndarray, ext: np.ndarray, fresh: np.ndarray, stay: np.ndarray,
                  lm: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The extensions' LM totals and fused scores (A, K, C), stepping the LM only for the new prefixes
        (those it has not read: new in the last frame) whose extensions can enter the beam.

        An LM log-probability is at most 0, so an extension scores at most what it would with log p_lm = 0
        (the same float operations, each monotone). The stays and the extensions of prefixes the LM has read
        are scored exactly first; a new prefix none of whose extensions can reach the beam_size-th best of
        those gives none of the next beam's prefixes (at least beam_size scores beat each of its extensions),
        so it is not stepped and its extensions score -inf. The others are stepped in one batch (their
        parents were read to score them). No beam changes: every extension that can be kept scores exactly.
        """
        trie, K, w, bonus = self.trie, self.K, self.lm_weight, self.char_bonus
        rows = trie.lm_row[node]  # (A, K); -1: not read yet
        ext_lm = lm[..., None] + self._lm_log_probs(rows, chars)
        score = _fused(ext, ext_lm, lengths[..., None] + 1, w, bonus)
        new = rows < 0
        if not new.any():
            return ext_lm, score
        known = np.where(new[..., None] | ~fresh, NEG_INF, score).reshape(len(node), -1)
        entries = np.concatenate([stay, known], 1)
        least = -np.partition(-entries, K - 1, axis=1)[:, K - 1, None, None]  # the K-th best; -inf if fewer
        bound = _fused(ext, lm[..., None], lengths[..., None] + 1, w, bonus)  # (A, K, C)
        todo = np.unique(node[new & (fresh & (bound >= least) & (bound > NEG_INF)).any(2)])
        if todo.size:
            trie.lm_row[todo] = self.lm.extend(trie.lm_row[trie.parent[todo]], trie.last[todo])
            rows = trie.lm_row[node]
        ext_lm = lm[..., None] + self._lm_log_probs(rows, chars)
        score = _fused(ext, ext_lm, lengths[..., None] + 1, w, bonus)
        score[rows < 0] = NEG_INF
        return ext_lm, score

    def _lm_log_probs(self, rows: np.ndarray, chars: np.ndarray) -> np.ndarray:
        """log p_lm(c | prefix) (A, K, C) for the slots' LM rows (A, K) and candidates (A, C); any value where
        a row is -1."""
        return self.lm.label_log_probs(np.maximum(rows, 0)[..., None], chars[:, None])


def beam_decode(log_probs: torch.Tensor, lengths: torch.Tensor, *, beam_size: int, lm: CharLM | None = None,
                lm_weight: float = 0.0, char_bonus: float = 0.0, prune: float = PRUNE) -> list[list[int]]:
    """The best labelling of every line of a batch, log_probs (T, B, V) cut to each line's valid frames."""
    valid = _check_lengths(log_probs, lengths)
    lines = log_probs.detach().to("cpu", torch.float64).unbind(1)  # B x (T, V), one copy for the batch
    found = best_labellings([line[:n] for line, n in zip(lines, valid)], beam_size=beam_size, lm=lm,
                            lm_weight=lm_weight, char_bonus=char_bonus, prune=prune)
    return [list(labels) for labels in found]


