"""Probes: properties of a text computed from the text alone, one value per character, and the search for
the cells that track them (Karpathy, Johnson & Fei-Fei 2015: quote, line-length, bracket-depth cells).

Each probe gives, for character t, the property *after reading* character t, aligned with the hidden
state recorded after reading it.
"""

from __future__ import annotations

import numpy as np

from charrnn.inspect.activations import Trace, gate_saturation

OPENING, CLOSING = "([{", ")]}"
TAB_WIDTH = 4


def in_double_quotes(chars: list[str]) -> np.ndarray:
    """1 from an opening double quote up to (not including) its closing one.

    A straight quote opens when it follows the start, whitespace, an opening bracket or "=", and closes
    otherwise (after a letter or punctuation, as in `too," said`), so a text cut in the middle of a quotation
    is read right from its next quote on (counting quotes would invert the whole text).
    """
    out = np.zeros(len(chars), dtype=np.float32)
    inside = False
    prev = ""
    for t, ch in enumerate(chars):
        if ch == '"':
            inside = prev == "" or prev.isspace() or prev in "([{<="
        out[t] = inside
        prev = ch
    return out


def bracket_depth(chars: list[str]) -> np.ndarray:
    """Nesting depth of (), [] and {} (never below 0)."""
    out = np.zeros(len(chars), dtype=np.float32)
    depth = 0
    for t, ch in enumerate(chars):
        if ch in OPENING:
            depth += 1
        elif ch in CLOSING:
            depth = max(0, depth - 1)
        out[t] = depth
    return out


def in_brackets(chars: list[str]) -> np.ndarray:
    """1 inside any (), [] or {}."""
    return (bracket_depth(chars) > 0).astype(np.float32)


def line_position(chars: list[str]) -> np.ndarray:
    """Characters since the last line break (0 at the line break itself)."""
    out = np.zeros(len(chars), dtype=np.float32)
    pos = 0
    for t, ch in enumerate(chars):
        pos = 0 if ch == "\n" else pos + 1
        out[t] = pos
    return out


def indent_depth(chars: list[str]) -> np.ndarray:
    """Width of the current line's leading whitespace (a tab counts 4), as far as it has been read."""
    out = np.zeros(len(chars), dtype=np.float32)
    width, leading = 0, True
    for t, ch in enumerate(chars):
        if ch == "\n":
            width, leading = 0, True
        elif leading and ch in " \t":
            width += TAB_WIDTH if ch == "\t" else 1
        else:
            leading = False
        out[t] = width
    return out


def in_comment(chars: list[str]) -> np.ndarray:
    """1 inside a line comment (# or //) up to the end of its line, outside double-quoted strings."""
    out = np.zeros(len(chars), dtype=np.float32)
    comment = quoted = False
    prev = ""
    for t, ch in enumerate(chars):
        if ch == "\n":
            comment = quoted = False
        elif not comment:
            if ch == '"':
                quoted = not quoted
            elif not quoted and (ch == "#" or (ch == "/" and prev == "/")):
                comment = True
        out[t] = comment
        prev = ch
    return out


def word_start(chars: list[str]) -> np.ndarray:
    """1 at a letter or digit that follows something else."""
    out = np.zeros(len(chars), dtype=np.float32)
    prev_word = False
    for t, ch in enumerate(chars):
        word = ch.isalnum()
        out[t] = word and not prev_word
        prev_word = word
    return out


def after_newline(chars: list[str]) -> np.ndarray:
    """1 where the character just read is a line break."""
    return np.array([ch == "\n" for ch in chars], dtype=np.float32)


PROBES = {
    "in_quotes": in_double_quotes,
    "in_brackets": in_brackets,
    "bracket_depth": bracket_depth,
    "line_position": line_position,
    "indent_depth": indent_depth,
    "in_comment": in_comment,
    "word_start": word_start,
    "after_newline": after_newline,
}
BINARY = {"in_quotes", "in_brackets", "in_comment", "word_start", "after_newline"}


# ----- pairs: which opening character each closing one closes -------------------------------------------

PAIRS = {"quotes": '""', "parentheses": "()", "brackets": "[]", "braces": "{}"}


def quote_pairs(chars: list[str]) -> list[tuple[int, int]]:
    """(opening, closing) indices of the double quotes, read as `in_double_quotes` reads them: a quote after the
    start, whitespace, an opening bracket or "=" opens (a second one opening again moves the start), any other
    closes the open one. A closing quote with none open (a text cut inside a quotation) is left out."""
    pairs, opened, prev = [], None, ""
    for t, ch in enumerate(chars):
        if ch == '"':
            if prev == "" or prev.isspace() or prev in "([{<=":
                opened = t
            elif opened is not None:
                pairs.append((opened, t))
                opened = None
        prev = ch
    return pairs


def bracket_pairs(chars: list[str], opening: str, closing: str) -> list[tuple[int, int]]:
    """(opening, closing) indices of one kind of bracket, "(" and ")" say. Brackets of every kind nest on one
    stack, and a closing bracket closes the innermost open one only when it is of its kind: a stray one (`(a]`,
    or a closing bracket with none open) is left out, and leaves the open ones open."""
    pairs, stack = [], []
    for t, ch in enumerate(chars):
        if ch in OPENING:
            stack.append((ch, t))
        elif ch in CLOSING and stack and OPENING.index(stack[-1][0]) == CLOSING.index(ch):
            ch_open, start = stack.pop()
            if ch_open == opening and ch == closing:
                pairs.append((start, t))
    return pairs


def closing_pairs(chars: list[str]) -> dict[str, list[tuple[int, int]]]:
    """The (opening, closing) pairs of every kind of `PAIRS`, in the order of their closing characters."""
    return {name: quote_pairs(chars) if pair == '""' else bracket_pairs(chars, pair[0], pair[1])
            for name, pair in PAIRS.items()}


def influence_summary(trace: Trace, top: int = 5) -> dict:
    """For each kind of pair: how often the prediction of a closing character (made after reading the character
    before it) has its opening character among its `top` influences (saliency, largest |s|), against chance.

    Returns {"window", "top", "pairs": {name: {"closing", "in_window", "opening_in_top", "fraction",
    "chance"}}}: the closing characters, those whose opening one lies within the saliency window of their
    prediction, how many of those have it among the top, that as a fraction, and the fraction a top chosen at
    random among the characters in each window would give (top / characters in the window, averaged). The
    fractions are None where no opening character lies within the window.
    """
    saliency = trace.saliency
    if saliency is None:
        raise ValueError("the trace has no saliency")
    top = min(top, saliency.top)
    out: dict = {"window": saliency.window, "top": top, "pairs": {}}
    for name, pairs in closing_pairs(trace.chars).items():
        within, hits, chance = 0, 0, 0.0
        for opening, closing in pairs:
            t = closing - 1  # the position whose prediction is the closing character
            k = t - opening
            if k >= saliency.window:
                continue
            within += 1
            kept = ~np.isnan(np.asarray(saliency.values[t, :top], dtype=np.float32))
            hits += bool((saliency.offsets[t, :top][kept] == k).any())
            chance += min(1.0, top / min(saliency.window, t + 1))
        out["pairs"][name] = {"closing": len(pairs), "in_window": within, "opening_in_top": hits,
                              "fraction": hits / within if within else None,
                              "chance": chance / within if within else None}
    return out


def threshold_accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    """Best accuracy of a one-unit classifier `value > threshold` (or `<`) for binary labels."""
    order = np.argsort(values, kind="stable")
    y = labels[order].astype(np.int64)
    n, positives = len(y), int(y.sum())
    # Cut after position k: predict 0 for the k smallest values and 1 for the rest, or the reverse.
    negatives_below = np.concatenate([[0], np.cumsum(1 - y)])
    positives_above = positives - np.concatenate([[0], np.cumsum(y)])
    correct = negatives_below + positives_above
    # A threshold can only fall between two different values: tied values get the same prediction.
    v = values[order]
    cuttable = np.concatenate([[True], v[1:] != v[:-1], [True]])
    correct = correct[cuttable]
    best = max(correct.max(), (n - correct).max())
    return float(best / n)


# A cell whose threshold accuracy beats its probe's base rate by less than this says nothing about the probe
# (the viewer greys such rows): accuracy 0.998 is no signal where always guessing the commoner class gets 0.998.
MIN_GAIN = 0.02


def best_probe_cell(ranking: dict) -> tuple[str, dict] | None:
    """The binary probe of a `rank_cells` result whose best-ranked cell beats the probe's base rate by the
    most (at least MIN_GAIN), with that cell's row; None when no cell of any probe does. Among a probe's
    ranked cells the one with the best accuracy counts; ties go to the earlier probe and cell."""
    best, best_gain = None, MIN_GAIN
    for name, rows in ranking["probes"].items():
        for row in rows:
            gain = row["accuracy"] - row["base_rate"] if "accuracy" in row else -1.0
            if gain > best_gain or (best is None and gain >= best_gain):
                best, best_gain = (name, row), gain
    return best


def rank_cells(trace: Trace, top: int = 5, probes: dict | None = None) -> dict:
    """For every probe, the cells (any layer, any recorded kind) with the largest |correlation| with it.

    Returns {"probes": {name: [{"layer", "kind", "unit", "correlation", "accuracy"?}, ...]},
             "constant": [probes that do not vary in this text], "gate_saturation": {...}}.
    The recorded arrays are read a block of rows at a time, so memory-mapped ones are never loaded whole.
    """
    probes = probes or PROBES
    result: dict = {"probes": {}, "constant": [], "gate_saturation": gate_saturation(trace)}
    standardized = {}
    for name, probe in probes.items():
        p = probe(trace.chars).astype(np.float64)
        if p.std() == 0:
            result["constant"].append(name)
            continue
        standardized[name] = (p, (p - p.mean()) / p.std())
    if not standardized:
        return result
    P = np.stack([pz for _, pz in standardized.values()], axis=1)  # (T, probes)
    blocks = [(l, k) for l, layer in enumerate(trace.layers) for k in layer]
    C = np.concatenate([correlations(trace.layers[l][k], P) for l, k in blocks])  # (N, probes)
    labels = [(l, k, u) for l, k in blocks for u in range(trace.layers[l][k].shape[1])]
    for j_probe, (name, (p, _)) in enumerate(standardized.items()):
        corr = C[:, j_probe]
        best = np.argsort(-np.abs(corr), kind="stable")[:top]
        rows = []
        for j in best:
            l, k, u = labels[j]
            row = {"layer": l, "kind": k, "unit": u, "correlation": round(float(corr[j]), 4)}
            if name in BINARY:
                row["accuracy"] = round(threshold_accuracy(np.asarray(trace.layers[l][k][:, u]), p), 4)
                row["base_rate"] = round(float(max(p.mean(), 1 - p.mean())), 4)
            rows.append(row)
        result["probes"][name] = rows
    return result


def correlations(values: np.ndarray, P: np.ndarray, rows: int = 4096) -> np.ndarray:
    """Pearson correlation of every column of `values` (T, H) with every standardized probe of P (T, m): (H, m).

    Two passes over `rows` rows at a time, centred in float64 as `numpy.std` does, so that neither a
    memory-mapped array nor its float64 copy is ever whole in memory.
    """
    T = len(values)
    mean = sum(values[a:a + rows].sum(axis=0, dtype=np.float64) for a in range(0, T, rows)) / T
    squares = np.zeros(values.shape[1])
    C = np.zeros((values.shape[1], P.shape[1]))
    for a in range(0, T, rows):
        block = values[a:a + rows].astype(np.float64) - mean  # (rows, H)
        squares += np.einsum("th,th->h", block, block)
        C += block.T @ P[a:a + rows]
    std = np.sqrt(squares / T)
    # A unit that never moves (a gate stuck at 1, say) correlates with nothing; float32 noise on such a
    # unit must not pass for a signal.
    std[std < 1e-6] = np.inf
    C /= T * std[:, None]
    return np.clip(C, -1.0, 1.0, out=C)
