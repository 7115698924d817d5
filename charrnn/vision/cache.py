"""The decode cache: a split's images decoded once into one array file beside the run, memory-mapped, and a
JSON sidecar saying what it was made from.

`x` (or `x.u8`, `x.npy`) names two files: the array `x.u8` or `x.npy` (by layout) and the sidecar `x.json`,
{"key": ..., the layout's own fields, "kept": [...], "skipped": [...]}. The key is everything the pixels
depend on (the decoding settings, the dataset's path, a signature of each file); a cache is reused only when
its key is equal and its array complete, and is otherwise decoded again. Two layouts:

    Stacked     images of one shape one after another, (N, *shape) uint8 in a raw .u8 file (caption)
    SideBySide  images of one height and any width side by side, (height, total width) uint8 in a column-major
                .npy file whose sidecar has the `offsets` where each starts (ctc's text lines)
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from charrnn.core.errors import CharRNNError
from charrnn.core.files import atomic_write, write_text_atomic
from charrnn.core.rows import BadRow, bad_rows_message

NPY_HEADER = 128  # bytes; fixed so that it can be rewritten once the total width is known (a multiple of 64)


def npy_header(shape: tuple[int, ...], *, fortran_order: bool) -> bytes:
    """A .npy (version 1.0) header for a uint8 array, always NPY_HEADER bytes long so that the real one can
    replace a placeholder without moving the pixels after it."""
    shape = tuple(int(n) for n in shape)  # repr of a numpy integer is not what np.load parses
    text = repr({"descr": "|u1", "fortran_order": fortran_order, "shape": shape})
    text = text.ljust(NPY_HEADER - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


class Layout(Protocol):
    """How decoded images are laid out in the array file; a fresh one for every cache written."""

    suffix: str

    def begin(self, out: BinaryIO) -> None: ...

    def add(self, out: BinaryIO, pixels: np.ndarray) -> None: ...

    def end(self, out: BinaryIO) -> dict:
        """Finish the file; the fields this layout adds to the sidecar."""

    def is_complete(self, array_path: Path, meta: dict) -> bool: ...

    def load(self, array_path: Path, meta: dict) -> np.ndarray: ...


class Stacked:
    """Images of one shape one after another: (N, *shape) uint8 in a raw file with nothing else in it."""

    suffix = ".u8"

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def begin(self, out: BinaryIO) -> None:
        pass

    def add(self, out: BinaryIO, pixels: np.ndarray) -> None:
        out.write(pixels.tobytes())

    def end(self, out: BinaryIO) -> dict:
        return {}

    def is_complete(self, array_path: Path, meta: dict) -> bool:
        return array_path.stat().st_size == len(meta["kept"]) * math.prod(self.shape)

    def load(self, array_path: Path, meta: dict) -> np.ndarray:
        return np.memmap(array_path, dtype=np.uint8, mode="r", shape=(len(meta["kept"]), *self.shape))


class SideBySide:
    """Images of one height and any width side by side along x: (height, total width) uint8 in a .npy file,
    column-major so that each image's columns are contiguous. Image i is `pixels[:, offsets[i]:offsets[i + 1]]`.

    The .npy header goes first as a placeholder and is rewritten at the end with the total width.
    """

    suffix = ".npy"

    def __init__(self, height: int):
        self.height = height
        self.offsets = [0]

    def begin(self, out: BinaryIO) -> None:
        out.write(npy_header((self.height, 0), fortran_order=True))

    def add(self, out: BinaryIO, pixels: np.ndarray) -> None:
        out.write(np.ascontiguousarray(pixels.T).tobytes())  # (w, height): column-major on disk
        self.offsets.append(self.offsets[-1] + pixels.shape[1])

    def end(self, out: BinaryIO) -> dict:
        out.seek(0)
        out.write(npy_header((self.height, self.offsets[-1]), fortran_order=True))
        return {"offsets": self.offsets}

    def is_complete(self, array_path: Path, meta: dict) -> bool:
        pixels, offsets = np.load(array_path, mmap_mode="r"), meta["offsets"]
        return (pixels.shape == (self.height, offsets[-1]) and len(offsets) == len(meta["kept"]) + 1
                and offsets[0] == 0 and all(type(o) is int for o in offsets)
                and all(a < b for a, b in zip(offsets, offsets[1:])))  # every line at least a pixel wide

    def load(self, array_path: Path, meta: dict) -> np.ndarray:
        return np.load(array_path, mmap_mode="r")


@dataclass
class Cached:
    """A decode cache opened: the pixels, memory-mapped, of the items kept."""

    pixels: np.ndarray
    sidecar: dict  # as written: "key", the layout's fields, "kept", "skipped"
    kept: list[int]  # indices of the items decoded, in the order given
    skipped: list[BadRow]  # items skip_bad left out
    reused: bool  # True when an up-to-date cache was found and nothing was decoded


def cache_files(cache_path: Path, suffix: str) -> tuple[Path, Path]:
    """The array and its JSON sidecar: `x` or `x<suffix>` gives x<suffix> and x.json."""
    stem = cache_path.with_suffix("") if cache_path.suffix == suffix else cache_path
    return stem.with_name(stem.name + suffix), stem.with_name(stem.name + ".json")


def _accounts_for(meta: dict, count: int) -> bool:
    """Whether the sidecar's items add up: `kept` is increasing indices below `count`, and every other item
    is a well-formed bad row in `skipped` (what `_decode_into` writes). An edited one is not trusted."""
    kept, skipped = meta["kept"], meta["skipped"]
    return (isinstance(kept, list) and isinstance(skipped, list) and len(kept) + len(skipped) == count
            and all(type(i) is int and 0 <= i < count for i in kept) and all(a < b for a, b in zip(kept, kept[1:]))
            and all(isinstance(b, dict) and set(b) == {"file", "line", "reason"} and isinstance(b["file"], str)
                    and isinstance(b["reason"], str) and (b["line"] is None or type(b["line"]) is int)
                    for b in skipped))


def read_sidecar(array_path: Path, meta_path: Path, key: dict, layout: Layout, count: int) -> dict | None:
    """The sidecar of a complete cache of `count` items made from `key`, or None (missing, torn, edited, out of
    date, or not matching its array): the cache is then decoded again."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta["key"] != key or not _accounts_for(meta, count) or not layout.is_complete(array_path, meta):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def _decode_into(array_path: Path, meta_path: Path, key: dict, layout: Layout, count: int,
                 decode: Callable[[int], np.ndarray | BadRow], skip_bad: bool,
                 progress: Callable[[int, int], None] | None, none_kept: str) -> dict:
    """Decode every item straight to the file, one at a time (memory stays one image, whatever N is).

    A bad item without `skip_bad` stops the writing but not the checking, so the error counts them all;
    then the exception inside `atomic_write` removes the temporary file and nothing is left behind.
    """
    kept: list[int] = []
    bad: list[BadRow] = []
    # Remove the old sidecar first: a crash after the new array is renamed into place must not leave a
    # sidecar that describes the old one.
    meta_path.unlink(missing_ok=True)
    with atomic_write(array_path, "wb") as out:
        layout.begin(out)
        for i in range(count):
            pixels = decode(i)
            if isinstance(pixels, BadRow):
                bad.append(pixels)
            elif skip_bad or not bad:
                layout.add(out, pixels)
                kept.append(i)
            if progress:
                progress(i + 1, count)
        if bad and not skip_bad:
            raise CharRNNError(bad_rows_message(bad))
        if not kept:
            raise CharRNNError(f"none of the {count} {none_kept}: {bad_rows_message(bad)}")
        fields = layout.end(out)
    meta = {"key": key, **fields, "kept": kept, "skipped": [asdict(b) for b in bad]}
    write_text_atomic(meta_path, json.dumps(meta))
    return meta


def cache_decoded(cache_path: str | os.PathLike, layout: Layout, key: dict, count: int,
                  decode: Callable[[int], np.ndarray | BadRow], *, skip_bad: bool,
                  progress: Callable[[int, int], None] | None, none_kept: str) -> Cached:
    """Memory-map the cache at `cache_path` when it was made from `key`; else first decode `count` items into
    it, `decode(i)` giving item i's pixels or the `BadRow` that says why it is unusable.

    A bad item raises one `CharRNNError` line naming the label lines of the first two, leaving no cache
    behind; with `skip_bad` it is left out and `kept`, `skipped` say which. When nothing is usable the error
    says "none of the {count} {none_kept}". `progress(done, total)` is called after each item decoded.
    """
    array_path, meta_path = cache_files(Path(cache_path), layout.suffix)
    array_path.parent.mkdir(parents=True, exist_ok=True)
    meta = read_sidecar(array_path, meta_path, key, layout, count)
    reused = meta is not None
    if not reused:
        meta = _decode_into(array_path, meta_path, key, layout, count, decode, skip_bad, progress, none_kept)
    skipped = [BadRow(**b) for b in meta["skipped"]]
    if skipped and not skip_bad:  # a cache made with skip_bad obeys the same rule when reused without it
        raise CharRNNError(bad_rows_message(skipped))
    return Cached(layout.load(array_path, meta), meta, meta["kept"], skipped, reused)
