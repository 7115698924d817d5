"""Pairs of texts for `charrnn translate` (a source and the target it turns into), read as people have them, and
split into training, validation and test by source.

Formats:

    tsv      DATA, one pair a line, columns separated by TABs: source<TAB>target, or the columns named by
             --source-column and --target-column (1-based); further columns are ignored, so Tatoeba and Anki
             exports read as they are (Anki's header lines "#separator:tab", "#html:false", ... are skipped)
    aligned  --source FILE --target FILE: two plain-text files, line k of one turned into line k of the other
             (the raw text that OpenNMT and fairseq read)

A source or target is characters (`--source-tokens chars`, the default) or words (`words`: split on spaces, for
phones, morphemes or words). Every unusable row (too few columns, an empty source or target, a byte that is not
UTF-8, a target longer than --max-target-len) is a `BadRow` naming its file and line; they are reported together
in one line or, with `skip_bad`, skipped.

The split is by source: every pair of one source (a word with two pronunciations, a sentence with two
translations) goes to the same side, so validation measures sources the model never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from charrnn.core.config import check_split
from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message, decoded_lines, numbered_lines
from charrnn.translate.config import TOKENS


def split_tokens(text: str, tokens: str) -> list[str]:
    """The symbols of a text: its characters (`chars`) or its words, split on any whitespace (`words`)."""
    if tokens == "chars":
        return list(text)
    if tokens == "words":
        return text.split()
    raise CharRNNError(f"tokens must be one of {', '.join(TOKENS)}, got {tokens!r}")


@dataclass
class Pairs:
    """Sources with their targets, and where each pair came from: (file, 1-based line)."""

    sources: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    origins: list[tuple[str, int | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sources)

    def add(self, source: str, target: str, origin: tuple[str, int | None]) -> None:
        self.sources.append(source)
        self.targets.append(target)
        self.origins.append(origin)

    def subset(self, rows) -> Pairs:
        return Pairs([self.sources[i] for i in rows], [self.targets[i] for i in rows], [self.origins[i] for i in rows])

    def references(self) -> dict[str, list[str]]:
        """Every distinct target of each source, in the order first seen: all count as right answers."""
        refs: dict[str, list[str]] = {}
        for source, target in zip(self.sources, self.targets):
            targets = refs.setdefault(source, [])
            if target not in targets:
                targets.append(target)
        return refs


@dataclass
class PairData:
    """A data set split three ways by source; `split_rule` says how, in one line for the user."""

    train: Pairs
    val: Pairs | None
    test: Pairs | None
    split_rule: str
    skipped: list[BadRow]
    notes: list[str]


# ----- reading ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Rules:
    """What makes a pair usable: how its target is counted and how long it may be."""

    target_tokens: str
    max_target_len: int

    def check(self, source: str, target: str, source_at: tuple[str, int], target_at: tuple[str, int],
              bad: list[BadRow]) -> bool:
        if not source:
            bad.append(BadRow(*source_at, "empty source"))
        elif not target:
            bad.append(BadRow(*target_at, "empty target"))
        elif (n := len(split_tokens(target, self.target_tokens))) > self.max_target_len:
            unit = "characters" if self.target_tokens == "chars" else "tokens"
            bad.append(BadRow(*target_at, f"target of {n} {unit}, more than --max-target-len "
                                          f"{self.max_target_len} (raise it to keep such rows)"))
        else:
            return True
        return False


def _anki_header(line: str) -> bool:
    """Anki's export header: "#separator:tab", "#html:false", "#tags column:3" at the top of the file."""
    return line.startswith("#") and ":" in line.split("\t", 1)[0]


def _read_tsv(path: Path, out: Pairs, bad: list[BadRow], source_column: int, target_column: int,
              rules: _Rules) -> None:
    name, at_top = path.name, True
    for number, line in decoded_lines(path.read_bytes(), name, bad):
        if at_top and _anki_header(line):
            continue
        at_top = False
        columns = line.split("\t")
        if len(columns) < max(source_column, target_column):
            flag, column = (("--target-column", target_column) if target_column > len(columns) else
                            ("--source-column", source_column))
            count = "1 column (no TAB)" if len(columns) == 1 else f"{len(columns)} columns"
            bad.append(BadRow(name, number, f"{count}, {flag} is {column}"))
            continue
        source, target = columns[source_column - 1].strip(), columns[target_column - 1].strip()
        if rules.check(source, target, (name, number), (name, number), bad):
            out.add(source, target, (name, number))


def _read_aligned(source: Path, target: Path, out: Pairs, bad: list[BadRow], rules: _Rules) -> None:
    sources = list(numbered_lines(source.read_bytes(), source.name, bad))
    targets = list(numbered_lines(target.read_bytes(), target.name, bad))
    if len(sources) != len(targets):
        raise CharRNNError(f"{str(source)!r} has {len(sources):,} lines and {str(target)!r} has {len(targets):,}; "
                           "--source and --target must be aligned files, one example a line, line k of one "
                           "turned into line k of the other")
    for (number, src), (_, tgt) in zip(sources, targets):
        if src is None or tgt is None:
            continue  # the undecodable line is already a bad row
        if rules.check(src.strip(), tgt.strip(), (source.name, number), (target.name, number), bad):
            out.add(src.strip(), tgt.strip(), (source.name, number))


def _existing_file(path: str | os.PathLike, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise CharRNNError(f"no such file: {str(p)!r}; give {what}")
    if not p.is_file():
        raise CharRNNError(f"{str(p)!r} is not a file; give {what}")
    return p


def _check_column(column: int, flag: str) -> None:
    if isinstance(column, bool) or not isinstance(column, int) or column < 1:
        raise CharRNNError(f"{flag} is a column number counted from 1, got {column!r}")


def read_pairs(path: str | os.PathLike | None, *, source: str | os.PathLike | None = None,
               target: str | os.PathLike | None = None, source_column: int = 1, target_column: int = 2,
               source_tokens: str = "chars", target_tokens: str = "chars", max_target_len: int = 256,
               bad: list[BadRow]) -> Pairs:
    """Every usable pair of a TSV file (`path`) or of two aligned files (`source` and `target`), appending
    the bad rows to `bad`."""
    _check_column(source_column, "--source-column")
    _check_column(target_column, "--target-column")
    for tokens, flag in ((source_tokens, "--source-tokens"), (target_tokens, "--target-tokens")):
        if tokens not in TOKENS:
            raise CharRNNError(f"{flag} must be one of {', '.join(TOKENS)}, got {tokens!r}")
    if isinstance(max_target_len, bool) or not isinstance(max_target_len, int) or max_target_len < 1:
        raise CharRNNError(f"--max-target-len must be a positive integer, got {max_target_len!r}")
    rules = _Rules(target_tokens, max_target_len)
    out = Pairs()
    if path is not None:
        p = _existing_file(path, "a TSV file of source<TAB>target, or --source FILE --target FILE")
        _read_tsv(p, out, bad, source_column, target_column, rules)
    else:
        what = "--source FILE --target FILE, two aligned text files, one example a line"
        _read_aligned(_existing_file(source, what), _existing_file(target, what), out, bad, rules)
    return out


# ----- validation files of their own -------------------------------------------------------------------------

def _val_files(val_dir: str | os.PathLike, source: str | None, target: str | None) -> dict:
    """What `read_pairs` reads for --val-dir: a TSV file, the one .tsv file of a directory, or (with aligned
    training files) the directory's one file with the --source file's suffix and one with the --target's."""
    p = Path(val_dir)
    if not p.exists():
        raise CharRNNError(f"no such --val-dir: {str(p)!r}; give a TSV file of validation pairs or a directory "
                           "holding one")
    if p.is_file():
        return {"path": p}
    files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
    want = "one .tsv file"
    if source is not None and target is not None:
        src_suffix, tgt_suffix = Path(source).suffix, Path(target).suffix
        if src_suffix and tgt_suffix and src_suffix != tgt_suffix:
            srcs = [f for f in files if f.suffix == src_suffix]
            tgts = [f for f in files if f.suffix == tgt_suffix]
            if len(srcs) == 1 and len(tgts) == 1:
                return {"path": None, "source": srcs[0], "target": tgts[0]}
            want += f", or one *{src_suffix} and one *{tgt_suffix} file (the suffixes of --source and --target)"
    tsvs = [f for f in files if f.suffix.lower() == ".tsv"]
    if len(tsvs) == 1:
        return {"path": tsvs[0]}
    held = f"{len(tsvs)} .tsv files" if tsvs else f"{len(files)} files, none of them .tsv"
    raise CharRNNError(f"--val-dir {str(p)!r} holds {held}; it should hold {want}")


# ----- splitting ----------------------------------------------------------------------------------------------

def split_by_source(sources: list[str], fracs: tuple[float, ...], seed: int) -> list[list[int]]:
    """Row indices of the training part and of each further part (validation, test), in file order: the distinct
    sources are shuffled (seeded) and part k takes the next round(n_sources * fracs[k]) of them, training the
    rest, so all the pairs of one source are on one side."""
    distinct = list(dict.fromkeys(sources))
    order = np.random.default_rng(seed).permutation(len(distinct))
    side: dict[str, int] = {}
    start = 0
    for k, frac in enumerate(fracs, 1):
        take = round(len(distinct) * frac)
        side.update((distinct[i], k) for i in order[start:start + take])
        start += take
    parts: list[list[int]] = [[] for _ in range(len(fracs) + 1)]
    for row, source in enumerate(sources):
        parts[side.get(source, 0)].append(row)
    return parts


def _count(pairs: Pairs) -> str:
    return f"{len(pairs):,} pairs of {len(set(pairs.sources)):,} sources"


def _check_given(data, source, target) -> None:
    if data is not None and (source is not None or target is not None):
        raise CharRNNError("give DATA (a TSV file) or --source FILE --target FILE, not both")
    if data is None and source is None and target is None:
        raise CharRNNError("give DATA (a TSV file of source<TAB>target) or --source FILE --target FILE")
    if data is None and (source is None or target is None):
        raise CharRNNError("--source and --target go together: give both, two aligned text files, one example a line")


def read_pair_data(data: str | os.PathLike | None = None, *, source: str | os.PathLike | None = None,
                   target: str | os.PathLike | None = None, source_column: int = 1, target_column: int = 2,
                   source_tokens: str = "chars", target_tokens: str = "chars",
                   val_dir: str | os.PathLike | None = None, val_frac: float = 0.05, test_frac: float = 0.05,
                   seed: int = 0, skip_bad: bool = False, max_target_len: int = 256) -> PairData:
    """Read a data set (a TSV file, or aligned --source and --target files) and split it by source into
    training, validation and test pairs; --val-dir gives validation pairs of their own."""
    _check_given(data, source, target)
    check_split(0.0 if val_dir is not None else val_frac, test_frac)
    bad: list[BadRow] = []
    settings = dict(source_column=source_column, target_column=target_column, source_tokens=source_tokens,
                    target_tokens=target_tokens, max_target_len=max_target_len, bad=bad)
    pairs = read_pairs(data, source=source, target=target, **settings)
    val_given = read_pairs(**_val_files(val_dir, source, target), **settings) if val_dir is not None else None
    if bad and not skip_bad:
        raise CharRNNError(bad_rows_message(bad))
    if not pairs:
        given = str(data) if data is not None else f"{str(source)!r} and {str(target)!r}"
        raise CharRNNError(f"{given} holds no usable pairs")
    if val_given is not None and not val_given:
        raise CharRNNError(f"--val-dir {str(val_dir)!r} holds no usable pairs")
    fracs = (0.0 if val_given is not None else val_frac, test_frac)
    train, val, test = split_by_source(pairs.sources, fracs, seed)
    if not train:
        raise CharRNNError(f"no training pairs are left of {len(set(pairs.sources)):,} sources; lower --val-frac or "
                           "--test-frac")
    train_pairs = pairs.subset(train)
    val_pairs = val_given if val_given is not None else (pairs.subset(val) if val else None)
    test_pairs = pairs.subset(test) if test else None
    notes = []
    if val_given is not None:
        seen = set(train_pairs.sources)
        shared = [s for s in dict.fromkeys(val_given.sources) if s in seen]
        if shared:
            one = len(shared) == 1
            notes.append(f"{len(shared):,} validation source{'' if one else 's'} also occur{'s' if one else ''} in "
                         f"training (e.g. {shared[0]!r}); validation scores {'it' if one else 'them'} as seen input")
    rule = f"by source (seed {seed}): training {_count(train_pairs)}"
    rule += (f", validation {val_dir} ({_count(val_pairs)})" if val_given is not None else
             f", validation {_count(val_pairs)}" if val_pairs is not None else ", no validation")
    if test_pairs is not None:
        rule += f", test {_count(test_pairs)}"
    return PairData(train_pairs, val_pairs, test_pairs, rule, bad, notes)
