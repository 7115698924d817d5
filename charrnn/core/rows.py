"""Data files read strictly, row by row: every unusable row a `BadRow` naming its file and 1-based line, and
the one line that reports them. Every task that reads labelled rows (captions, transcripts, classes, tags)
shares these, so the same problem is found and told in the same words everywhere."""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from charrnn.core.errors import CharRNNError
from charrnn.core.text import SNIFF_BYTES, guess_8bit_encoding, sniff_wide_encoding


@dataclass(frozen=True)
class BadRow:
    """One unusable row: the file it is in (as the user knows it), its 1-based line (None in a file whose
    lines mean nothing, like JSON), and what is wrong with it."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


def in_file_order(bad: Iterable[BadRow]) -> list[BadRow]:
    return sorted(bad, key=lambda b: (b.file, b.line or 0))


def bad_rows_message(bad: list[BadRow]) -> str:
    """One line: the first two bad rows (in file and line order) and how many more there are."""
    first = in_file_order(bad)
    if len(first) == 1:
        return f"{first[0]}; fix it or pass --skip-bad"
    more = f" (and {len(first) - 2} more)" if len(first) > 2 else ""
    return f"{len(first)} bad rows: {first[0]}; {first[1]}{more}; fix them or pass --skip-bad"


def iconv_name(codec: str) -> str:
    return codec.upper().replace("-LE", "LE").replace("-BE", "BE")


def numbered_lines(data: bytes, name: str, bad: list[BadRow]) -> Iterator[tuple[int, str | None]]:
    """(1-based line number, text) of every line of a file's bytes, blank ones included, strictly decoded as
    UTF-8; the text is None for a line that does not decode (a bad row naming the byte is added for it).

    Lines are decoded one by one so that a stray byte costs its own line, not the whole file; a UTF-16 or
    UTF-32 file (`sniff_wide_encoding`) is refused at once since none of its lines would decode. A UTF-8
    byte-order mark and CR line ends are dropped; a last line end does not start another line. Two files read
    this way keep their line numbers aligned (a source and a target file, one example a line).
    """
    wide = sniff_wide_encoding(data[:SNIFF_BYTES])
    if wide:
        raise CharRNNError(f"{name} is {wide.upper()} text, not UTF-8; re-save it as UTF-8 "
                           f"(e.g. iconv -f {iconv_name(wide)} -t UTF-8)")
    data = data.removeprefix(codecs.BOM_UTF8)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    guess = None
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            guess = guess or guess_8bit_encoding(data)
            bad.append(BadRow(name, number, f"byte 0x{raw[e.start]:02x} (byte {e.start + 1} of the line) is not "
                                            f"UTF-8; the file looks like {guess}: convert it with "
                                            f"iconv -f {guess} -t UTF-8"))
            yield number, None
            continue
        yield number, text.rstrip("\r")


def decoded_lines(data: bytes, name: str, bad: list[BadRow]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line of a file's bytes, strictly decoded as UTF-8
    (`numbered_lines`: a bad row per line that does not decode, UTF-16 refused, BOM and CR dropped)."""
    for number, text in numbered_lines(data, name, bad):
        if text is not None and text.strip():
            yield number, text
