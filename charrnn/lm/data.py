"""Corpus reading, encoding into a compact cached array, splitting, and truncated-BPTT batches.

A corpus is read in chunks twice: once to find its vocabulary (so a rare character at the very end is
still in it), once to encode it into the smallest integer type that fits, written to a flat file beside
the run and memory-mapped for training. Peak memory is a few chunks, not a multiple of the text.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charrnn.core.config import Newline
from charrnn.core.errors import CharRNNError
from charrnn.core.files import atomic_write, write_text_atomic
from charrnn.core.text import CHUNK_BYTES, check_text_file, iter_text, normalize_newlines
from charrnn.core.tokenizer import CharTokenizer, code_points

CACHE_VERSION = 1
CACHE_FILES = ("corpus.bin", "corpus.json")  # the encoded corpus, kept in the run directory


def build_tokenizer(path: str | os.PathLike, encoding: str = "utf-8", byte_level: bool = False,
                    document_separator: str | None = None, newline: Newline = "keep") -> CharTokenizer:
    """The vocabulary of a whole file, found in one streaming pass. The document separator is read with the
    text's line ends (with `newline="lf"`, "\\r\\n\\r\\n" means the blank line it has become)."""
    if document_separator:
        document_separator = normalize_newlines(document_separator, newline)
    if byte_level:
        seen = np.zeros(256, dtype=bool)
        for block in iter_text(path, encoding, True, newline=newline):
            seen[np.frombuffer(block, dtype=np.uint8)] = True
        return CharTokenizer(np.flatnonzero(seen).tolist(), True, document_separator)
    seen = np.zeros(0x110000, dtype=bool)  # one flag per Unicode code point
    for text in iter_text(path, encoding, False, newline=newline):
        seen[code_points(text)] = True
    return CharTokenizer([chr(c) for c in np.flatnonzero(seen)], False, document_separator)


def iter_encoded(path: str | os.PathLike, tokenizer: CharTokenizer, encoding: str = "utf-8",
                 chunk_bytes: int = CHUNK_BYTES, map_unknown: bool = False,
                 newline: Newline = "keep") -> Iterator[np.ndarray]:
    """Yield the ids (in the vocabulary's compact dtype) of a file chunk by chunk, `<eod>` first and in place
    of every document separator.

    A separator split across two chunks is still found: the tail that could begin one is held back.
    """
    eod = np.array([tokenizer.eod_id], dtype=tokenizer.dtype)
    yield eod
    sep = tokenizer.document_separator
    plain = CharTokenizer.from_dict({**tokenizer.to_dict(), "document_separator": None})
    if tokenizer.byte_level and sep:
        sep = sep.encode("utf-8")
    carry = sep[:0] if sep else None
    for piece in iter_text(path, encoding, tokenizer.byte_level, chunk_bytes, newline):
        if not sep:
            yield plain.encode_compact(piece, map_unknown)
            continue
        parts = (carry + piece).split(sep)
        keep = len(sep) - 1
        last = parts.pop()
        carry = last[len(last) - keep:] if keep and len(last) > keep else (last if keep else last[:0])
        done = last[: len(last) - len(carry)]
        for part in parts:
            yield plain.encode_compact(part, map_unknown)
            yield eod
        if done:
            yield plain.encode_compact(done, map_unknown)
    if sep and carry:
        yield plain.encode_compact(carry, map_unknown)


def file_signature(p: Path) -> dict:
    st = p.stat()
    return {"source": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class EncodedCorpus:
    """A corpus as one memory-mapped id array (starting with `<eod>`) and its tokenizer."""

    ids: np.ndarray
    tokenizer: CharTokenizer
    source: str
    reused: bool  # True when an up-to-date cached encoding was found
    sha256: str  # of the id array: what the text was, whatever happens to the file later
    signature: dict  # the source file's path, size and modification time when it was encoded

    def split(self, val_frac: float, test_frac: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return split_ids(self.ids, val_frac, test_frac)


def _settings(encoding: str, byte_level: bool, document_separator: str | None, newline: Newline) -> dict:
    return {"encoding": encoding, "byte_level": byte_level, "document_separator": document_separator or None,
            "newline": newline}


def cached_corpus(cache_dir: str | os.PathLike, *, encoding: str = "utf-8", byte_level: bool = False,
                  document_separator: str | None = None, newline: Newline = "keep",
                  tokenizer: CharTokenizer | None = None) -> EncodedCorpus | None:
    """The encoded corpus kept in `cache_dir`, if it is complete and was made with these settings (and, when
    given, this vocabulary); None otherwise."""
    bin_path, meta_path = (Path(cache_dir) / name for name in CACHE_FILES)
    try:
        meta = json.loads(meta_path.read_text())
        same = (meta["cache_version"] == CACHE_VERSION
                # caches written before --newline existed kept every line end
                and {"newline": "keep", **meta["settings"]} == _settings(encoding, byte_level, document_separator,
                                                                         newline)
                and (tokenizer is None or meta["tokenizer"] == tokenizer.to_dict()))
        dtype = np.dtype(meta["dtype"])
        if not same or bin_path.stat().st_size != meta["length"] * dtype.itemsize:
            return None
        ids = np.memmap(bin_path, dtype=dtype, mode="r", shape=(meta["length"],))
        return EncodedCorpus(ids, CharTokenizer.from_dict(meta["tokenizer"]), meta["signature"]["source"], True,
                             meta["sha256_of_ids"], meta["signature"])
    except (OSError, ValueError, KeyError, TypeError):  # missing, torn or edited: encode again
        return None


def ids_sha256(path: str | os.PathLike, tokenizer: CharTokenizer, encoding: str = "utf-8",
               newline: Newline = "keep") -> str:
    """The digest `encode_corpus` would record for `path`, computed without writing anything."""
    digest = hashlib.sha256()
    for ids in iter_encoded(path, tokenizer, encoding, newline=newline):
        digest.update(memoryview(ids))
    return digest.hexdigest()


def encode_corpus(path: str | os.PathLike, cache_dir: str | os.PathLike, *, encoding: str = "utf-8",
                  byte_level: bool = False, document_separator: str | None = None, newline: Newline = "keep",
                  tokenizer: CharTokenizer | None = None) -> EncodedCorpus:
    """Encode `path` into `cache_dir/corpus.bin` (+ `corpus.json`), or reuse that cache when unchanged.

    With `tokenizer` given (resuming a run), the file must fit that vocabulary; otherwise one is built.
    """
    p = check_text_file(path)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    signature = file_signature(p)
    hit = cached_corpus(cache, encoding=encoding, byte_level=byte_level, document_separator=document_separator,
                        newline=newline, tokenizer=tokenizer)
    if hit is not None and hit.signature == signature:
        return hit
    if tokenizer is None:
        tokenizer = build_tokenizer(p, encoding, byte_level, document_separator, newline)
    elif tokenizer.byte_level != byte_level:
        raise CharRNNError("the corpus settings differ from the checkpoint's tokenizer (--byte-level)")
    bin_path, meta_path = (cache / name for name in CACHE_FILES)
    meta_path.unlink(missing_ok=True)  # a crash before the new sidecar is written must not pair it with the old
    length = 0
    digest = hashlib.sha256()
    with atomic_write(bin_path, "wb") as f:
        for ids in iter_encoded(p, tokenizer, encoding, newline=newline):
            block = memoryview(ids)  # already in the compact dtype
            digest.update(block)
            f.write(block)
            length += len(ids)
    meta = {"cache_version": CACHE_VERSION, "signature": signature,
            "settings": _settings(encoding, byte_level, document_separator, newline), "tokenizer": tokenizer.to_dict(),
            "length": length, "dtype": tokenizer.dtype.name, "sha256_of_ids": digest.hexdigest()}
    write_text_atomic(meta_path, json.dumps(meta))
    ids = np.memmap(bin_path, dtype=tokenizer.dtype, mode="r", shape=(length,))
    return EncodedCorpus(ids, tokenizer, str(p), False, meta["sha256_of_ids"], signature)


def split_ids(ids: np.ndarray, val_frac: float, test_frac: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contiguous train / validation / test views: the first part trains, the last parts evaluate.

    The fractions apply to the text after the leading `<eod>`, so with `val_frac=0.1` the validation
    split is exactly the last 10% of the file, as in nanoGPT's shakespeare_char.
    """
    if not (0.0 <= val_frac < 1.0 and 0.0 <= test_frac < 1.0 and val_frac + test_frac < 1.0):
        raise CharRNNError(f"--val-frac {val_frac} and --test-frac {test_frac} must be in [0, 1) and sum below 1")
    n = len(ids) - 1
    train_end = 1 + int(n * (1.0 - val_frac - test_frac))
    val_end = 1 + int(n * (1.0 - test_frac))
    return ids[:train_end], ids[train_end:val_end], ids[val_end:]


class StreamBatches:
    """Truncated-BPTT batches: the text is cut into `batch_size` contiguous streams.

    Batch i holds characters [i*T, (i+1)*T) of every stream, so row k of batch i+1 continues row k of
    batch i and the hidden state can be carried from one to the next. Targets are the inputs shifted by
    one character. `rows` selects a subset of the streams (one rank's share under DDP).
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int, rows: slice | None = None):
        if batch_size < 1 or seq_len < 1:
            raise CharRNNError("--batch-size and --seq-len must be at least 1")
        stream_len = (len(ids) - 1) // batch_size
        if stream_len < seq_len:
            need = batch_size * seq_len + 1
            raise CharRNNError(
                f"the training text has {len(ids) - 1} characters, too short for one batch of "
                f"--batch-size {batch_size} x --seq-len {seq_len} (needs {need}); lower them or use a longer file")
        self.batch_size, self.seq_len, self.stream_len = batch_size, seq_len, stream_len
        self.steps_per_epoch = stream_len // seq_len
        used = batch_size * stream_len
        rows = rows or slice(None)
        self._x = np.asarray(ids[:used]).reshape(batch_size, stream_len)[rows]
        self._y = np.asarray(ids[1:used + 1]).reshape(batch_size, stream_len)[rows]

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of step `i` of an epoch, each (B, T) int64."""
        s = slice(i * self.seq_len, (i + 1) * self.seq_len)
        x = torch.from_numpy(self._x[:, s].astype(np.int64))
        y = torch.from_numpy(self._y[:, s].astype(np.int64))
        return x, y
