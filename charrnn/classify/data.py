"""Labelled texts for `charrnn classify`, read as people have them, and split into training, validation and
test, stratified by label.

Formats (`--format auto` tells them apart: a directory is `dir`, a .csv file `csv`, a file whose first line
starts with `__label__` `fasttext`, anything else `tsv`):

    tsv       label<TAB>text, one example a line
    csv       a header line, then rows; the text and label columns are named by --text-column, --label-column
    fasttext  __label__X text (fastText's format; one label a line)
    dir       a directory with one file per label, one example a line, label = the file's name without .txt
              (the layout of PyTorch's "classifying names with a character-level RNN" tutorial)

Every unusable row (no TAB, an empty text or label, a byte that is not UTF-8, a row with two labels) is a
`BadRow` naming its file and line; they are reported together in one line or, with `skip_bad`, skipped.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message, decoded_lines

FASTTEXT_PREFIX = "__label__"


@dataclass
class Examples:
    """Texts with their labels (names), and where each came from: (file, 1-based line)."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    origins: list[tuple[str, int | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, text: str, label: str, origin: tuple[str, int | None]) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.origins.append(origin)

    def subset(self, rows) -> Examples:
        return Examples([self.texts[i] for i in rows], [self.labels[i] for i in rows], [self.origins[i] for i in rows])


@dataclass
class ClassifyData:
    """A data set split three ways; `labels` are the training labels, sorted (a model's classes)."""

    train: Examples
    val: Examples | None
    test: Examples | None
    labels: tuple[str, ...]
    split_rule: str
    skipped: list[BadRow]
    notes: list[str]


# ----- reading one file or directory ---------------------------------------------------------------------

def detect_format(path: Path) -> str:
    if path.is_dir():
        return "dir"
    if path.suffix.lower() == ".csv":
        return "csv"
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    return "fasttext" if head.startswith(FASTTEXT_PREFIX.encode()) else "tsv"


def _read_tsv(data: bytes, name: str, out: Examples, bad: list[BadRow]) -> None:
    for number, line in decoded_lines(data, name, bad):
        label, tab, text = line.partition("\t")
        if not tab:
            bad.append(BadRow(name, number, "no TAB between the label and the text (label<TAB>text)"))
        elif not label.strip() or not text.strip():
            bad.append(BadRow(name, number, f"empty {'label' if not label.strip() else 'text'}"))
        else:
            out.add(text, label.strip(), (name, number))


def _read_fasttext(data: bytes, name: str, out: Examples, bad: list[BadRow]) -> None:
    for number, line in decoded_lines(data, name, bad):
        words = line.split(" ")
        labels = [w[len(FASTTEXT_PREFIX):] for w in words if w.startswith(FASTTEXT_PREFIX)]
        text = " ".join(w for w in words if not w.startswith(FASTTEXT_PREFIX)).strip()
        if not labels or not labels[0]:
            bad.append(BadRow(name, number, f"no {FASTTEXT_PREFIX}LABEL"))
        elif len(labels) > 1:
            bad.append(BadRow(name, number, f"{len(labels)} labels; charrnn classify takes one label per text"))
        elif not text:
            bad.append(BadRow(name, number, "empty text"))
        else:
            out.add(text, labels[0], (name, number))


def _read_csv(data: bytes, name: str, out: Examples, bad: list[BadRow], text_column: str,
              label_column: str) -> None:
    lines = list(decoded_lines(data, name, bad))  # refuses UTF-16, reports stray bytes by line
    if bad and any(b.file == name for b in bad):
        return  # a row with a stray byte may hold a quote: the rest of the file cannot be read safely
    text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    if not lines:
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as e:
        raise CharRNNError(f"{name}: not a CSV file with a header ({e})") from None
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
        raise CharRNNError(f"{name} has no column {missing[0]!r} (its columns: {', '.join(header)}); name the "
                           "columns with --text-column and --label-column")
    t, lab = header.index(text_column), header.index(label_column)
    start = reader.line_num
    try:
        for row in reader:
            number, start = start + 1, reader.line_num  # a row's first line (a quoted field may span several)
            if not row:
                continue
            if len(row) != len(header):
                bad.append(BadRow(name, number, f"{len(row)} fields where the header has {len(header)}"))
            elif not row[t].strip() or not row[lab].strip():
                bad.append(BadRow(name, number, f"empty {'label' if not row[lab].strip() else 'text'}"))
            else:
                out.add(row[t], row[lab].strip(), (name, number))
    except csv.Error as e:
        bad.append(BadRow(name, reader.line_num, f"not valid CSV ({e})"))


def _read_dir(path: Path, out: Examples, bad: list[BadRow]) -> None:
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise CharRNNError(f"{str(path)!r} holds no files; a directory data set has one file per label "
                           "(label.txt), one example a line")
    for file in files:
        label = file.name[:-4] if file.suffix == ".txt" else file.name
        name = f"{path.name}/{file.name}"
        for number, line in decoded_lines(file.read_bytes(), name, bad):
            out.add(line.strip(), label, (name, number))


def read_examples(path: str | os.PathLike, *, format: str = "auto", text_column: str = "text",
                  label_column: str = "label", bad: list[BadRow]) -> Examples:
    """Every example of a data set (a file or a directory), appending its bad rows to `bad`."""
    p = Path(path)
    if not p.exists():
        raise CharRNNError(f"no such data set: {str(p)!r}; give a TSV, CSV or fastText file, or a directory with "
                           "one file per label")
    kind = detect_format(p) if format == "auto" else format
    out = Examples()
    if kind == "dir":
        if not p.is_dir():
            raise CharRNNError(f"--format dir needs a directory, and {str(p)!r} is a file")
        _read_dir(p, out, bad)
        return out
    if p.is_dir():
        raise CharRNNError(f"{str(p)!r} is a directory; --format {kind} reads a file (or use --format dir)")
    data = p.read_bytes()
    if kind == "csv":
        _read_csv(data, p.name, out, bad, text_column, label_column)
    elif kind == "fasttext":
        _read_fasttext(data, p.name, out, bad)
    else:
        _read_tsv(data, p.name, out, bad)
    return out


# ----- splitting ---------------------------------------------------------------------------------------------

def stratified_split(labels: list[str], fracs: tuple[float, ...], seed: int) -> list[list[int]]:
    """Indices of the parts after the first (e.g. validation, test) and the first (training), each label's
    examples drawn in a seeded order: part k gets round(n * fracs[k]) of every label with n examples, the
    training part at least one. Returned as [train, part 1, part 2, ...]."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fracs) + 1)]
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for label in sorted(by_label):
        rows = [by_label[label][k] for k in rng.permutation(len(by_label[label]))]
        start = 0
        for k, frac in enumerate(fracs):
            take = min(round(len(rows) * frac), len(rows) - 1 - start)
            parts[k + 1] += rows[start:start + max(take, 0)]
            start += max(take, 0)
        parts[0] += rows[start:]
    return [sorted(p) for p in parts]


def _check_counts(examples: Examples, bad: list[BadRow], skip_bad: bool, what: str) -> Examples:
    """Labels with a single example cannot be both learned and checked: report them (or skip them)."""
    counts = Counter(examples.labels)
    lonely = sorted(label for label, n in counts.items() if n < 2)
    if not lonely:
        return examples
    if not skip_bad:
        shown = ", ".join(repr(label) for label in lonely[:5]) + (f" (and {len(lonely) - 5} more)" if len(lonely) > 5
                                                                  else "")
        raise CharRNNError(f"{len(lonely)} labels of {what} have a single example: {shown}; add examples, fix the "
                           "label, or pass --skip-bad to leave them out")
    keep = [i for i, label in enumerate(examples.labels) if counts[label] >= 2]
    bad += [BadRow(*examples.origins[i], f"label {examples.labels[i]!r} has a single example")
            for i, label in enumerate(examples.labels) if counts[label] < 2]
    return examples.subset(keep)


def read_classify_data(data: str | os.PathLike, *, format: str = "auto", text_column: str = "text",
                       label_column: str = "label", val_dir: str | os.PathLike | None = None, val_frac: float = 0.1,
                       test_frac: float = 0.0, seed: int = 0, skip_bad: bool = False) -> ClassifyData:
    """Read a data set and split it into training, validation and test examples, stratified by label."""
    bad: list[BadRow] = []
    columns = dict(format=format, text_column=text_column, label_column=label_column)
    examples = read_examples(data, bad=bad, **columns)
    val_given = read_examples(val_dir, bad=bad, **columns) if val_dir is not None else None
    if bad and not skip_bad:
        raise CharRNNError(bad_rows_message(bad))
    if not examples:
        raise CharRNNError(f"{str(data)!r} holds no examples")
    examples = _check_counts(examples, bad, skip_bad, str(data))
    fracs = (0.0 if val_given is not None else val_frac, test_frac)
    train, val, test = stratified_split(examples.labels, fracs, seed)
    if not train:
        raise CharRNNError("no training examples are left; lower --val-frac or --test-frac")
    labels = tuple(sorted(set(examples.subset(train).labels)))
    notes = []
    val_part = val_given if val_given is not None else (examples.subset(val) if val else None)
    if val_part is not None:
        unseen = sorted(set(val_part.labels) - set(labels))
        if unseen:
            notes.append(f"{len(unseen)} validation labels never occur in training: {', '.join(unseen[:5])}")
    rule = (f"validation: {val_dir}" if val_given is not None else
            f"validation: {len(val)} examples ({val_frac:.0%} of each label, seed {seed})")
    if test:
        rule += f"; test: {len(test)} held out ({test_frac:.0%} of each label)"
    return ClassifyData(examples.subset(train), val_part, examples.subset(test) if test else None, labels, rule,
                        bad, notes)
