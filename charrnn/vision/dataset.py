"""What an image dataset is to the image tasks, whatever its labels say: a directory or a .zip of one, label
files read strictly line by line, every unusable row a `BadRow` naming its file and line, and a split into
training and validation drawn by unit.

Caption and ctc datasets differ in their layouts and in what a label is (reference captions, a transcript);
the rules here are the ones they must share, so that the same bad row, stray byte or path that leaves the
dataset is found and reported in the same words by both.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

import numpy as np

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, decoded_lines

HEADER_FIELDS = {"filename", "file", "image", "image_name"}  # a first line starting with one of these is a header


# ----- splits and the dataset read ------------------------------------------------------------------------

S = TypeVar("S", bound="ImageSplit")


class ImageSplit:
    """What a task's split of a dataset has in common: `root` is the dataset's directory or .zip, `files`
    are POSIX paths inside it (read one with `open_member`), and `origins[i]` is the (label file, 1-based
    line) that first named file i, so that a problem found only when decoding it is reported where the user
    can fix it.

    A task's split is a dataclass with these fields and its own labels, every list field aligned with
    `files` by index: that is what `subset` relies on.
    """

    root: Path
    files: list[str]
    origins: list[tuple[str, int | None]]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self: S, indices: Iterable[int]) -> S:
        """The items at `indices`, in that order. Fields that are not lists (the root, an absent list) are
        kept as they are."""
        idx = list(indices)
        lists = {f.name: [value[i] for i in idx] for f in fields(self)
                 if isinstance(value := getattr(self, f.name), list)}
        return replace(self, **lists)


@dataclass
class ImageData(Generic[S]):
    """A dataset read and split: `split_rule` says in words how validation was chosen, for the user."""

    train: S
    val: S | None
    format: str  # which layout the dataset was recognised as
    skipped: list[BadRow]  # what skip_bad left out; empty otherwise
    split_rule: str


# ----- a directory or a zip, read the same way ------------------------------------------------------------

class DatasetRoot:
    """A dataset's directory or .zip file; names are POSIX paths inside it.

    Folder listings are read once and kept: checking 100k images one by one with stat() is much slower
    than one listing of their folder.
    """

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() else None
        self._files: dict[str, set[str]] = {}  # folder -> names of the files directly in it
        if self.zip:
            for info in self.zip.infolist():
                folder, base = posixpath.split(info.filename.rstrip("/"))
                self._files.setdefault(folder, set())
                if not info.is_dir():
                    self._files[folder].add(base)

    def __enter__(self) -> DatasetRoot:
        return self

    def __exit__(self, *exc) -> None:
        if self.zip:
            self.zip.close()

    def files_in(self, folder: str) -> set[str]:
        if folder not in self._files:
            if self.zip:
                return set()
            try:
                with os.scandir(self.path / folder) as entries:
                    self._files[folder] = {e.name for e in entries if e.is_file()}
            except OSError:
                self._files[folder] = set()
        return self._files[folder]

    def is_file(self, name: str) -> bool:
        folder, base = posixpath.split(name)
        return base in self.files_in(folder)

    def is_folder(self, name: str) -> bool:
        if self.zip:
            return any(k == name or k.startswith(name + "/") for k in self._files)
        return (self.path / name).is_dir()

    def subfolders(self) -> list[str]:
        """The folders at the top level."""
        if self.zip:
            return sorted({k.split("/")[0] for k in self._files if k})
        return sorted(e.name for e in os.scandir(self.path) if e.is_dir())

    def open(self, name: str) -> BinaryIO:
        if self.zip is None:
            return open(self.path / name, "rb")
        try:
            return io.BytesIO(self.zip.read(name))
        except KeyError:
            raise FileNotFoundError(f"{name} is not in {self.path.name}") from None

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def signature(self, name: str) -> list[int] | None:
        """What changes when the file does: size and mtime in a directory, size and CRC in a zip."""
        try:
            if self.zip:
                info = self.zip.getinfo(name)
                return [info.file_size, info.CRC]
            st = os.stat(self.path / name)
            return [st.st_size, st.st_mtime_ns]
        except (OSError, KeyError):
            return None


def open_root(data: str | os.PathLike) -> DatasetRoot:
    """A dataset directory or .zip opened for reading (use it in a `with`), or a `CharRNNError` saying why not."""
    p = Path(data)
    if not p.exists():
        raise CharRNNError(f"no such file or directory: {str(p)!r}; check the path")
    if p.is_file() and not zipfile.is_zipfile(p):
        raise CharRNNError(f"{str(p)!r} is neither a directory nor a .zip; give the dataset's folder or a zip of it")
    try:
        return DatasetRoot(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise CharRNNError(f"{str(p)!r} cannot be opened ({e}); check the file") from None


def open_member(root: str | os.PathLike, name: str) -> BinaryIO:
    """Open file `name` (a POSIX path) of a dataset directory or .zip for reading, in binary."""
    with open_root(root) as r:
        return r.open(name)


def path_inside(folder: str, name: str) -> str | None:
    """`name`, relative to `folder`, as a normalised POSIX path inside the root; None if it would leave the
    dataset (absolute, a drive letter, or `..`). Backslashes from Windows-made files count as slashes."""
    name = name.strip().replace("\\", "/")
    if not name or name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    name = posixpath.normpath(name)
    if name == ".." or name.startswith("../"):
        return None
    return posixpath.join(folder, name) if folder else name


# ----- label files ------------------------------------------------------------------------------------------

def _is_header(text: str) -> bool:
    return re.split(r"[\t,|]", text, maxsplit=1)[0].strip().lower() in HEADER_FIELDS


def iter_label_lines(root: DatasetRoot, name: str, bad: list[BadRow], *,
                     header: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line of a label file, strictly decoded as UTF-8; with
    `header`, a first line that names its columns (filename, image, ...) is skipped.

    Lines are decoded one by one so that a stray byte costs its own line (a bad row naming the byte), not
    the whole file; a UTF-16 or UTF-32 file (`sniff_wide_encoding`) is refused at once since none of its
    lines would decode.
    """
    for k, (number, text) in enumerate(decoded_lines(root.read_bytes(name), name, bad)):
        if not (header and k == 0 and _is_header(text)):
            yield number, text


# ----- choosing validation ----------------------------------------------------------------------------------

def split_by_unit(units: list[str], val_frac: float, seed: int, what: str) -> tuple[list[int], list[int], int, int]:
    """A reproducible random split of items into training and validation by unit (an image, a group, a
    page): a unit is never on both sides. Units are drawn in a seeded order until validation holds
    `val_frac` of the items; at least one unit stays on each side. Returns the training and validation
    item indices and how many of how many units went to validation."""
    distinct = list(dict.fromkeys(units))  # first-appearance order, so that the seed alone fixes the split
    if len(distinct) < 2:
        raise CharRNNError(f"{len(distinct)} {what} cannot be split into training and validation; add more, "
                           "give --val-dir, or set --val-frac 0")
    target = min(max(round(len(units) * val_frac), 1), len(units) - 1)
    sizes = Counter(units)
    chosen: set[str] = set()
    count = 0
    for k in np.random.default_rng(seed).permutation(len(distinct)):
        if count >= target or len(chosen) == len(distinct) - 1:
            break
        chosen.add(distinct[k])
        count += sizes[distinct[k]]
    val = [i for i, u in enumerate(units) if u in chosen]
    train = [i for i, u in enumerate(units) if u not in chosen]
    return train, val, len(chosen), len(distinct)


def relabel(prefix: str, bad: list[BadRow], splits: Iterable[ImageSplit | None]) -> list[BadRow]:
    """Name a --val-dir dataset's label files with its path, so that its bad rows cannot be mistaken for the
    training dataset's: the origins of `splits` are renamed in place, and the bad rows are returned renamed."""
    for split in splits:
        if split is not None:
            split.origins = [(f"{prefix}/{f}", line) for f, line in split.origins]
    return [BadRow(f"{prefix}/{b.file}", b.line, b.reason) for b in bad]
