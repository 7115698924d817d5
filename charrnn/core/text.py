"""Reading text files: checking the path and the codec, recognising UTF-16 and UTF-32, and streaming the text.

One sniffer for every reader: the language model's corpus, the line renderer's text and the image tasks'
label files (captions.tsv, labels.tsv) recognise the same file as the same encoding. Torch-free, so that
`charrnn --help` stays fast.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterator
from pathlib import Path

from charrnn.core.config import Newline
from charrnn.core.errors import CharRNNError

CHUNK_BYTES = 1 << 22  # 4 MiB per read: large enough for numpy to stream, small enough to bound memory
SNIFF_BYTES = 4096  # how much of a file's start the encoding is guessed from

WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
             (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def check_text_file(path: str | os.PathLike) -> Path:
    """The path of a readable, non-empty file, or a `CharRNNError` saying what is wrong with it."""
    p = Path(path)
    if str(path) == "-":
        raise CharRNNError("a text cannot come from standard input: charrnn reads a corpus twice (vocabulary, then "
                           "encoding); save it to a file and give its path")
    if not p.exists():
        raise CharRNNError(f"no such file: {str(p)!r}; check the path")
    if p.is_dir():
        raise CharRNNError(f"{str(p)!r} is a directory; give a text file")
    if not p.is_file():
        raise CharRNNError(f"{str(p)!r} is not a regular file (a pipe or a device?); save the text to a file first")
    if p.stat().st_size == 0:
        raise CharRNNError(f"{str(p)!r} is empty; give a file with some text in it")
    return p


def check_encoding(encoding: str) -> str:
    """The codec's canonical name, refusing unknown codecs and those that do not turn bytes into text."""
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        raise CharRNNError(f"unknown text encoding {encoding!r}; try utf-8, latin-1 or cp1252") from None
    if not getattr(info, "_is_text_encoding", True):  # rot13, hex, zlib, base64: bytes to bytes, str to str
        raise CharRNNError(f"--encoding {encoding!r} is not a text encoding; try utf-8, latin-1 or cp1252")
    return info.name


def _nul_share(sample: bytes) -> float:
    return sample.count(0) / len(sample) if sample else 0.0


def _has_blank(sample: bytes, codec: str) -> bool:
    """Whether `sample`, read as UTF-16 `codec`, holds a space, TAB or line feed."""
    units = {sample[i:i + 2] for i in range(0, len(sample) - 1, 2)}
    return any(c.encode(codec) in units for c in " \t\n")


def sniff_wide_encoding(head: bytes) -> str | None:
    """The codec name of a file starting with `head` when it is UTF-16 or UTF-32, else None.

    A byte-order mark gives "utf-16" or "utf-32" (those codecs read the mark). Without one, NUL bytes tell,
    since UTF-8 and 8-bit text have none. UTF-32 has one in the top byte of every character (and, below
    U+10000, in the byte before it). UTF-16 has one in the high byte of every character below U+0100, so in
    one parity of positions; a tenth of such characters is enough, which catches Cyrillic or Greek text by
    its spaces and punctuation. A space, TAB or line feed must be among them: Chinese in UTF-16-LE has NUL
    low bytes (一 is U+4E00) that would otherwise pass for Latin characters in UTF-16-BE. UTF-16 text with
    no character below U+0100 is not recognised; it then fails to decode as UTF-8.
    """
    for bom, name in WIDE_BOMS:  # UTF-32 first: its little-endian mark starts with UTF-16's
        if head.startswith(bom):
            return name
    sample = head[:SNIFF_BYTES]
    nul = [_nul_share(sample[k::4]) for k in range(4)]  # NUL share at each position modulo 4
    if nul[3] == 1.0 and nul[2] >= 0.5 and nul[0] < 0.5:  # the last: not a file of NULs
        return "utf-32-le"
    if nul[0] == 1.0 and nul[1] >= 0.5 and nul[3] < 0.5:
        return "utf-32-be"
    even, odd = _nul_share(sample[0::2]), _nul_share(sample[1::2])
    if odd >= 0.1 and odd > 2 * even and _has_blank(sample, "utf-16-le"):
        return "utf-16-le"
    if even >= 0.1 and even > 2 * odd and _has_blank(sample, "utf-16-be"):
        return "utf-16-be"
    return None


def guess_8bit_encoding(data: bytes) -> str:
    """The 8-bit encoding a non-UTF-8 file is most likely in: cp1252 (Windows) unless it has bytes cp1252
    leaves undefined."""
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def normalize_newlines(text: str | bytes, newline: Newline) -> str | bytes:
    """`text` with its line ends as a model trained with `--newline` reads them: "keep" leaves them alone, "lf"
    turns CRLF (Windows) and a lone CR (classic Mac OS) into LF. Works on bytes too (byte-level models)."""
    if newline == "keep":
        return text
    cr, lf = ("\r", "\n") if isinstance(text, str) else (b"\r", b"\n")
    return text.replace(cr + lf, lf).replace(cr, lf)


def iter_text(path: str | os.PathLike, encoding: str = "utf-8", byte_level: bool = False,
              chunk_bytes: int = CHUNK_BYTES, newline: Newline = "keep") -> Iterator[str | bytes]:
    """Yield a file's contents chunk by chunk: bytes when `byte_level`, else strictly decoded text, with line
    ends normalised as `newline` says (see `normalize_newlines`).

    A leading UTF-8 byte-order mark is dropped. An undecodable byte raises a `CharRNNError` naming its
    offset in the file.
    """
    chunks = _read_chunks(path, encoding, byte_level, chunk_bytes)
    if newline == "keep":
        yield from chunks
        return
    held = None  # a chunk's last CR waits for the next chunk: it may be the first half of a CRLF
    for piece in chunks:
        if held:
            piece = held + piece
        held = piece[-1:] if piece.endswith("\r" if isinstance(piece, str) else b"\r") else None
        if held:
            piece = piece[:-1]
        if piece:
            yield normalize_newlines(piece, newline)
    if held:
        yield normalize_newlines(held, newline)


def _read_chunks(path: str | os.PathLike, encoding: str, byte_level: bool, chunk_bytes: int) -> Iterator[str | bytes]:
    """`iter_text` without the line-end handling."""
    p = check_text_file(path)
    if not byte_level:
        name = check_encoding(encoding)
        if not name.startswith(("utf-16", "utf-32")):
            with open(p, "rb") as f:
                wide = sniff_wide_encoding(f.read(SNIFF_BYTES))
            if wide:
                raise CharRNNError(f"{str(p)!r} looks like {wide.upper()} text; pass --encoding {wide}")
        decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    first = True
    with open(p, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            final = len(block) < chunk_bytes
            if byte_level:
                if block:
                    yield block
            else:
                if first and name == "utf-8":
                    if block.startswith(codecs.BOM_UTF8):
                        block = block[len(codecs.BOM_UTF8):]
                        offset += len(codecs.BOM_UTF8)
                try:
                    pending = len(decoder.getstate()[0])
                    text = decoder.decode(block, final=final)
                except UnicodeDecodeError as e:
                    at = offset - pending + e.start
                    raise CharRNNError(
                        f"{str(p)!r} is not valid {encoding} (byte 0x{e.object[e.start]:02x} at offset {at}); "
                        "pass --encoding (e.g. latin-1) or --byte-level") from None
                except UnicodeError as e:  # e.g. "UTF-16 stream does not start with BOM"
                    raise CharRNNError(f"{str(p)!r} cannot be read as {encoding}: {e}; without a byte-order mark, "
                                       "name the byte order: --encoding utf-16-le or utf-16-be") from None
                if text:
                    yield text
            first = False
            offset += len(block)
            if final:
                return
