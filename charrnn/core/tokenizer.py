"""CharTokenizer: Unicode code points (or bytes) to integer ids and back.

Ids 0..n-1 are the corpus symbols in sorted order, so the vocabulary of a text is the same on every run.
Two special ids follow them:
- `<eod>` (end of document) separates documents and starts every corpus, so an empty prime means
  "the state at the start of a document" and samples can stop where a document would end;
- `<unk>` stands for a character the corpus never had, used only when unknown characters are mapped
  instead of refused. It is never sampled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from charrnn.core.errors import CharRNNError

EOD = "<eod>"
UNK = "<unk>"


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds every id of a vocabulary."""
    if vocab_size <= 2**8:
        return np.dtype(np.uint8)
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def code_points(text: str) -> np.ndarray:
    """The code points of `text` as a uint8 (pure ASCII) or uint32 array, without a per-character loop."""
    if text.isascii():  # the common case: one byte per character, a quarter of UTF-32's memory
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


class CharTokenizer:
    """Maps characters (code points) or, with `byte_level`, bytes to ids.

    `document_separator`, when set, is a string of the corpus (say a blank line, "\\n\\n") that `encode`
    turns into the `<eod>` id and `decode` turns back, so `decode(encode(s)) == s` still holds.
    """

    def __init__(self, symbols: Sequence[str] | Sequence[int], byte_level: bool = False,
                 document_separator: str | None = None):
        if byte_level:
            values = sorted({int(b) for b in symbols})
            if values and not (0 <= values[0] and values[-1] <= 255):
                raise ValueError("byte-level symbols must be integers 0..255")
            codes = values
        else:
            chars = sorted(set(symbols))
            if any(len(c) != 1 for c in chars):
                raise ValueError("character symbols must be single code points")
            codes = [ord(c) for c in chars]
        self.byte_level = byte_level
        self.document_separator = document_separator or None
        self.codes: list[int] = codes  # code point (or byte value) of each ordinary id
        self.eod_id = len(codes)
        self.unk_id = len(codes) + 1
        self.vocab_size = len(codes) + 2
        # Dense lookup table code -> id, one entry past the largest code; -1 = unknown. Codes beyond
        # the table are clipped onto that last entry, so encoding a big text is two numpy passes.
        self._lookup = np.full((max(codes) + 2) if codes else 1, -1, dtype=np.int32)
        self._lookup[codes] = np.arange(len(codes), dtype=np.int32)
        self.dtype = dtype_for_vocab(self.vocab_size)

    # ----- construction and serialisation -------------------------------------------------------

    @classmethod
    def from_text(cls, text: str | bytes, byte_level: bool = False,
                  document_separator: str | None = None) -> CharTokenizer:
        """Build the vocabulary of one text."""
        if byte_level:
            data = text.encode("utf-8") if isinstance(text, str) else text
            return cls(np.unique(np.frombuffer(data, dtype=np.uint8)).tolist(), True, document_separator)
        return cls(sorted(set(text)), False, document_separator)

    def to_dict(self) -> dict:
        """Plain types only, so a checkpoint holding it loads with `weights_only=True`."""
        return {"codes": list(self.codes), "byte_level": self.byte_level,
                "document_separator": self.document_separator}

    @classmethod
    def from_dict(cls, d: dict) -> CharTokenizer:
        codes = [int(c) for c in d["codes"]]
        symbols = codes if d["byte_level"] else [chr(c) for c in codes]
        return cls(symbols, bool(d["byte_level"]), d.get("document_separator"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        kind = "bytes" if self.byte_level else "characters"
        return f"CharTokenizer({len(self.codes)} {kind} + <eod>, <unk>)"

    # ----- encoding -----------------------------------------------------------------------------

    def _codes_of(self, text: str | bytes) -> np.ndarray:
        """Code points (or byte values) of `text` as a uint8 or uint32 array, without a per-character loop."""
        if self.byte_level:
            data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
            return np.frombuffer(data, dtype=np.uint8)
        if not isinstance(text, str):
            raise TypeError("a character-level tokenizer encodes str, not bytes")
        return code_points(text)

    def encode_compact(self, text: str | bytes, map_unknown: bool = False) -> np.ndarray:
        """Ids of `text` (no document-separator handling) in the vocabulary's compact dtype."""
        codes = self._codes_of(text)
        limit = len(self._lookup) - 1
        if limit < np.iinfo(codes.dtype).max:
            codes = np.minimum(codes, codes.dtype.type(limit))
        ids = self._lookup[codes]  # (N,) int32
        missing = ids < 0
        if missing.any():
            if not map_unknown:
                raise CharRNNError(self._unknown_message(self._codes_of(text)[missing]))
            ids[missing] = self.unk_id
        return ids.astype(self.dtype, copy=False)

    def _unknown_message(self, codes: np.ndarray) -> str:
        unique = np.unique(codes)
        if self.byte_level:
            shown = ", ".join(f"0x{int(c):02x}" for c in unique[:12])
            what = "byte values"
        else:
            shown = ", ".join(repr(chr(int(c))) for c in unique[:12])
            what = "characters"
        more = f" and {len(unique) - 12} more" if len(unique) > 12 else ""
        return (f"{len(unique)} {what} not in the model's vocabulary: {shown}{more}; "
                "remove them or pass --map-unknown to read them as <unk>")

    def encode(self, text: str | bytes, map_unknown: bool = False) -> np.ndarray:
        """Ids of `text` as an int64 array; document separators become `<eod>`.

        Characters outside the vocabulary raise `CharRNNError` listing them, or become `<unk>` with
        `map_unknown=True`.
        """
        sep = self.document_separator
        if not sep:
            return self.encode_compact(text, map_unknown).astype(np.int64)
        sep_ = sep.encode("utf-8") if isinstance(text, bytes) else sep
        parts = text.split(sep_)
        pieces: list[np.ndarray] = []
        eod = np.array([self.eod_id], dtype=np.int64)
        for i, part in enumerate(parts):
            if i:
                pieces.append(eod)
            pieces.append(self.encode_compact(part, map_unknown).astype(np.int64))
        return np.concatenate(pieces)

    def unknown_symbols(self, text: str | bytes) -> list[str]:
        """The distinct characters of `text` (or byte values, as "0xNN") that the vocabulary lacks."""
        codes = np.unique(self._codes_of(text)).astype(np.int64)
        known = set(self.codes)
        return [f"0x{c:02x}" if self.byte_level else chr(c) for c in codes.tolist() if c not in known]

    # ----- decoding -----------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Byte-level decoding without loss (invalid UTF-8 stays as it is)."""
        sep = (self.document_separator or "").encode("utf-8")
        out = bytearray()
        for i in ids:
            i = int(i)
            if i < len(self.codes):
                out.append(self.codes[i])
            elif i == self.eod_id:
                out += sep
            else:
                out += b"?"
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; `<eod>` becomes the document separator (or nothing), `<unk>` becomes U+FFFD."""
        if self.byte_level:
            return self.decode_bytes(ids).decode("utf-8", errors="replace")
        sep = self.document_separator or ""
        n = len(self.codes)
        return "".join(chr(self.codes[i]) if i < n else (sep if i == self.eod_id else "\ufffd")
                       for i in map(int, ids))

    def symbol(self, i: int) -> str:
        """A printable name of one id, for tables: the character itself, `<eod>`, `<unk>`, or 0xNN."""
        if i == self.eod_id:
            return EOD
        if i == self.unk_id:
            return UNK
        c = self.codes[i]
        return f"0x{c:02x}" if self.byte_level else chr(c)


class WordTokenizer:
    """Words to ids and back, with the same special ids as `CharTokenizer`: `<eod>` after the words, then `<unk>`.

    `split` says what a word is: "words" (`charrnn caption --tokens word`), runs of word characters and each
    punctuation mark, joined back with spaces except before punctuation; "spaces" (`charrnn translate
    --target-tokens words`), whatever stands between whitespace (phones, morphemes, words), joined back with one
    space."""

    _TOKEN = re.compile(r"\w+|[^\w\s]")
    _NO_SPACE_BEFORE = set(",.:;!?)'")
    SPLITS = ("words", "spaces")

    def __init__(self, words: Sequence[str], split: str = "words"):
        if split not in self.SPLITS:
            raise ValueError(f"unknown split {split!r}")
        self.split = split
        self.words: list[str] = sorted(set(words))
        self._ids = {w: i for i, w in enumerate(self.words)}
        self.eod_id = len(self.words)
        self.unk_id = len(self.words) + 1
        self.vocab_size = len(self.words) + 2

    @classmethod
    def from_texts(cls, texts: Iterable[str], split: str = "words") -> WordTokenizer:
        return cls([w for t in texts for w in cls.tokens_of(t, split)], split)

    @classmethod
    def tokens_of(cls, text: str, split: str = "words") -> list[str]:
        """The words of `text` as `split` cuts them."""
        return text.split() if split == "spaces" else cls._TOKEN.findall(text)

    def to_dict(self) -> dict:
        return {"kind": "word", "words": list(self.words), **({"split": self.split} if self.split != "words" else {})}

    @classmethod
    def from_dict(cls, d: dict) -> WordTokenizer:
        return cls(list(d["words"]), d.get("split", "words"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and self.to_dict() == other.to_dict()

    def encode(self, text: str, map_unknown: bool = False) -> np.ndarray:
        tokens = self.tokens_of(text, self.split)
        unknown = [t for t in tokens if t not in self._ids]
        if unknown and not map_unknown:
            raise CharRNNError(f"words the model never saw: {', '.join(map(repr, unknown[:5]))}")
        return np.array([self._ids.get(t, self.unk_id) for t in tokens], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """Words joined by spaces (split "words": punctuation attached to the word before it); `<unk>` becomes
        U+FFFD."""
        out = ""
        for i in map(int, ids):
            if i == self.eod_id:
                continue
            word = self.words[i] if i < len(self.words) else "\ufffd"
            attach = not out or (self.split == "words" and word[0] in self._NO_SPACE_BEFORE)
            out += word if attach else " " + word
        return out

    def symbol(self, i: int) -> str:
        return EOD if i == self.eod_id else UNK if i == self.unk_id else self.words[i]


class PairTokenizer:
    """The two vocabularies of a model that reads one kind of text and writes another (`charrnn translate`):
    `source` and `target`, each a `CharTokenizer` or a `WordTokenizer`. Saved in a checkpoint as one entry; its
    vocabulary size and special ids are the target's (what the model's softmax covers)."""

    def __init__(self, source: CharTokenizer | WordTokenizer, target: CharTokenizer | WordTokenizer):
        self.source, self.target = source, target
        self.vocab_size, self.eod_id, self.unk_id = target.vocab_size, target.eod_id, target.unk_id

    def to_dict(self) -> dict:
        return {"kind": "pair", "source": self.source.to_dict(), "target": self.target.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> PairTokenizer:
        return cls(tokenizer_from_dict(d["source"]), tokenizer_from_dict(d["target"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PairTokenizer) and self.to_dict() == other.to_dict()

    def symbol(self, i: int) -> str:
        return self.target.symbol(i)


def tokenizer_from_dict(d: dict) -> CharTokenizer | WordTokenizer | PairTokenizer:
    """Whichever tokenizer a checkpoint's `tokenizer` entry describes."""
    if d.get("kind") == "pair":
        return PairTokenizer.from_dict(d)
    return WordTokenizer.from_dict(d) if d.get("kind") == "word" else CharTokenizer.from_dict(d)
