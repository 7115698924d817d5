"""Texts with one tag per character, for `charrnn tag`: read from a TSV file, or derived from any text.

    tsv   text<TAB>tags, one example a line, exactly one tag character per text character (the tags are any
          characters: "BIIO", "-U", ...); rows are split into training, validation and test at random (seeded)
    case  (truecasing, `--derive case`) any text file: the model reads the text lower-cased and tags each
          character U where the text had it in upper case, - elsewhere. The text is cut into pieces of about
          --max-chars characters (at a space or line end where one is near) and split by position: training
          first, then validation, then test, the text's last part, so no sentence is on two sides.

Every unusable row (no TAB, tags of another length than the text, an empty text, a byte that is not UTF-8) is a
`BadRow` naming its file and line, reported together in one line or skipped with `skip_bad`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message, decoded_lines
from charrnn.core.text import check_text_file, iter_text

UPPER, SAME = "U", "-"
CASE_TAGS = (SAME, UPPER)


@dataclass
class Tagged:
    """Texts (as the model reads them) with their tags, one character each, and where each came from."""

    texts: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    origins: list[tuple[str, int | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows) -> Tagged:
        return Tagged([self.texts[i] for i in rows], [self.tags[i] for i in rows], [self.origins[i] for i in rows])


@dataclass
class TagData:
    train: Tagged
    val: Tagged | None
    test: Tagged | None
    tags: tuple[str, ...]
    split_rule: str
    skipped: list[BadRow]


# ----- truecasing ---------------------------------------------------------------------------------------------

def lower_and_case_tags(text: str) -> tuple[str, str]:
    """The text lower-cased character by character, and its case tags: U where lower-casing changed the
    character. A character whose lower case is not one character (İ) is kept as it is, tagged -."""
    lowered, tags = [], []
    for c in text:
        low = c.lower()
        if low != c and len(low) == 1:
            lowered.append(low)
            tags.append(UPPER)
        else:
            lowered.append(c)
            tags.append(SAME)
    return "".join(lowered), "".join(tags)


def restore_case(text: str, tags: str) -> str:
    """`text` with the characters tagged U in upper case (a character whose upper case is not one character
    stays as it is)."""
    return "".join(c.upper() if t == UPPER and len(c.upper()) == 1 else c for c, t in zip(text, tags))


def cut_pieces(text: str, size: int) -> list[str]:
    """`text` cut into pieces of at most `size` characters, each ending after a space or
    line end in its last quarter where there is one."""
    pieces, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start + size * 3 // 4, end), text.rfind("\n", start + size * 3 // 4, end))
            end = cut + 1 if cut >= 0 else end
        pieces.append(text[start:end])
        start = end
    return pieces


def case_data(path: str | os.PathLike, *, max_chars: int, val_frac: float, test_frac: float,
              encoding: str = "utf-8") -> TagData:
    """Truecasing examples from any text file, split by position (training, validation, then test last)."""
    p = check_text_file(path)
    text = "".join(iter_text(p, encoding=encoding, newline="lf"))
    if not any(c.isupper() for c in text):
        raise CharRNNError(f"{str(p)!r} has no upper-case letters, so there is no case to learn; give a text with "
                           "its capitals")
    n = len(text)
    bounds = [0, round(n * (1 - val_frac - test_frac)), round(n * (1 - test_frac)), n]
    parts = []
    for k in range(3):
        tagged = Tagged()
        for piece in cut_pieces(text[bounds[k]:bounds[k + 1]], max_chars):
            lowered, tags = lower_and_case_tags(piece)
            tagged.texts.append(lowered)
            tagged.tags.append(tags)
            tagged.origins.append((p.name, None))
        parts.append(tagged if len(tagged) else None)
    if parts[0] is None:
        raise CharRNNError(f"{str(p)!r} leaves no training text; lower --val-frac or --test-frac")
    rule = (f"by position: training the first {1 - val_frac - test_frac:.0%} of the text, validation the next "
            f"{val_frac:.0%}, test the last {test_frac:.0%}")
    return TagData(parts[0], parts[1], parts[2], CASE_TAGS, rule, [])


# ----- text<TAB>tags files --------------------------------------------------------------------------------------

def read_tagged(path: str | os.PathLike, bad: list[BadRow], max_chars: int) -> Tagged:
    p = Path(path)
    if not p.is_file():
        raise CharRNNError(f"no such file: {str(p)!r}; give a TSV file of text<TAB>tags, or --derive case and a text")
    out = Tagged()
    for number, line in decoded_lines(p.read_bytes(), p.name, bad):
        text, tab, tags = line.rpartition("\t")
        if not tab:
            bad.append(BadRow(p.name, number, "no TAB between the text and its tags (text<TAB>tags)"))
        elif not text:
            bad.append(BadRow(p.name, number, "empty text"))
        elif len(tags) != len(text):
            bad.append(BadRow(p.name, number, f"{len(tags)} tags for {len(text)} characters; give one tag "
                                              "character per text character"))
        else:
            out.texts.append(text[:max_chars])
            out.tags.append(tags[:max_chars])
            out.origins.append((p.name, number))
    return out


def tsv_data(path: str | os.PathLike, *, max_chars: int, val_frac: float, test_frac: float, seed: int = 0,
             skip_bad: bool = False) -> TagData:
    bad: list[BadRow] = []
    rows = read_tagged(path, bad, max_chars)
    if bad and not skip_bad:
        raise CharRNNError(bad_rows_message(bad))
    if not rows:
        raise CharRNNError(f"{str(path)!r} holds no tagged texts")
    order = np.random.default_rng(seed).permutation(len(rows))
    n_val, n_test = round(len(rows) * val_frac), round(len(rows) * test_frac)
    if n_val + n_test >= len(rows):
        raise CharRNNError(f"{len(rows)} rows leave none to train on; lower --val-frac or --test-frac")
    val, test, train = (sorted(order[:n_val]), sorted(order[n_val:n_val + n_test]),
                        sorted(order[n_val + n_test:]))
    tags = tuple(sorted({t for row in rows.subset(train).tags for t in row}))
    if len(tags) < 2:
        raise CharRNNError(f"the training rows of {str(path)!r} use a single tag ({tags[0]!r}); there is nothing to "
                           "learn")
    rule = f"random rows (seed {seed}): validation {len(val)}, test {len(test)}"
    return TagData(rows.subset(train), rows.subset(val) if val else None, rows.subset(test) if test else None,
                   tags, rule, bad)
