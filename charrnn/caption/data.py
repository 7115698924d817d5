"""Caption datasets: reading the formats people have, choosing train / validation, and caching decoded images.

A dataset is a directory, or a .zip of one, in one of three layouts recognised from its files:

    tsv     captions.tsv (filename<TAB>caption, one line per reference caption) beside the images, which may
            sit in subfolders; optional groups.tsv (filename<TAB>group) and splits.tsv (a header line
            filename<TAB>name..., then one of train|val|test per named split).
    flickr  Flickr8k (Flickr8k.token.txt, Flickr_8k.{train,dev,test}Images.txt, Flicker8k_Dataset/ or
            Images/), Flickr8k from Kaggle (captions.txt "image,caption" + Images/), Flickr30k
            (results_20130124.token or results.csv "image_name| comment_number| comment" + flickr30k_images/).
    coco    annotations/captions_{train,val}2017.json with train2017/ and val2017/ (or the 2014 names).

Every problem with a row (a missing image, an empty caption, a line without a TAB, bytes that are not UTF-8,
and later an image Pillow cannot decode) becomes a `BadRow` naming the caption file and its line. They are
reported together in one error line or, with `skip_bad`, skipped and returned, so a run never silently
trains on less than the user thinks. Images are decoded once into one uint8 array beside the run, memory-
mapped and reused while the image files are unchanged.
"""

from __future__ import annotations

import codecs
import io
import json
import os
import posixpath
import re
import struct
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from charrnn.core.errors import CharRNNError, atomic_write, write_text_atomic

CACHE_VERSION = 1  # bump when the decoding recipe below changes: older caches are then rebuilt
SIDES = ("train", "val", "test")  # values in splits.tsv; test images are used by neither side
HEADER_FIELDS = {"filename", "file", "image", "image_name"}  # a first line starting with one of these is a header


# ----- public data types ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BadRow:
    """One unusable row: the caption file it is in (a path inside the dataset), its 1-based line (None in a
    JSON file, whose lines mean nothing), and what is wrong with it."""

    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file} line {self.line}: {self.reason}" if self.line else f"{self.file}: {self.reason}"


@dataclass
class CaptionSplit:
    """Images and their reference captions, aligned by index.

    `root` is the dataset's directory or .zip file and `files` are POSIX paths inside it (read one with
    `open_member`). `origins[i]` is the (caption file, line) that first named image i, so that a problem
    found only when decoding it is reported where the user can fix it.
    """

    root: Path
    files: list[str]
    captions: list[list[str]]  # every reference caption of each image, at least one
    groups: list[str] | None  # from groups.tsv; an image it does not list is a group of its own
    origins: list[tuple[str, int | None]]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Iterable[int]) -> CaptionSplit:
        idx = list(indices)
        return CaptionSplit(self.root, [self.files[i] for i in idx], [self.captions[i] for i in idx],
                            None if self.groups is None else [self.groups[i] for i in idx],
                            [self.origins[i] for i in idx])


@dataclass
class CaptionData:
    """A dataset read and split: `split_rule` says in words how validation was chosen, for the user."""

    train: CaptionSplit
    val: CaptionSplit | None
    format: str  # "tsv", "flickr" or "coco"
    skipped: list[BadRow]  # what skip_bad left out; empty otherwise
    split_rule: str


@dataclass
class ImageArray:
    """A split's images decoded: `pixels[i]` (S, S, 3) uint8 RGB is image `split.files[i]`."""

    pixels: np.ndarray  # (N, S, S, 3) uint8, memory-mapped from the cache
    split: CaptionSplit  # the images kept, aligned with `pixels`
    kept: list[int]  # their indices in the split given to `cache_images`
    skipped: list[BadRow]  # images skip_bad left out because Pillow could not decode them
    reused: bool  # True when an up-to-date cache was found and nothing was decoded

    @property
    def captions(self) -> list[list[str]]:
        return self.split.captions


# ----- a directory or a zip, read the same way --------------------------------------------------------

class _Root:
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

    def __enter__(self) -> _Root:
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


def _open_root(data: str | os.PathLike) -> _Root:
    p = Path(data)
    if not p.exists():
        raise CharRNNError(f"no such file or directory: {str(p)!r}; check the path")
    if p.is_file() and not zipfile.is_zipfile(p):
        raise CharRNNError(f"{str(p)!r} is neither a directory nor a .zip; give the dataset's folder or a zip of it")
    try:
        return _Root(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise CharRNNError(f"{str(p)!r} cannot be opened ({e}); check the file") from None


def open_member(root: str | os.PathLike, name: str) -> BinaryIO:
    """Open file `name` (a POSIX path) of a dataset directory or .zip for reading, in binary."""
    with _open_root(root) as r:
        return r.open(name)


# ----- reading caption files ------------------------------------------------------------------------

class _BadLine(ValueError):
    """A line that cannot be parsed; its message is the reason shown to the user."""


@dataclass
class _Row:
    file: str  # path inside the root
    caption: str
    origin: tuple[str, int | None]  # (caption file, line)


@dataclass
class _NamedSplit:
    sides: dict[str, str]  # file -> "train" | "val" | "test"
    rule: str  # how it was made, in words
    source: str  # the file that defines it, for "has no row in ..." messages


@dataclass
class _Parsed:
    """What a format reader found: caption rows in file order, bad rows, and the splits the dataset names."""

    format: str
    rows: list[_Row]
    bad: list[BadRow]
    named: dict[str, _NamedSplit] = field(default_factory=dict)  # the first is the dataset's own split
    groups: dict[str, str] | None = None


_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16 or UTF-32 when a file starts with their byte-order mark or is full of NUL bytes (which text in
    any 8-bit encoding never has); None otherwise."""
    for bom, name in _WIDE_BOMS:  # UTF-32 first: its little-endian mark starts with UTF-16's
        if head.startswith(bom):
            return name
    return "UTF-16" if head.count(0) > len(head) // 4 else None


def _guess_encoding(data: bytes) -> str:
    """The 8-bit encoding a non-UTF-8 file is most likely in: cp1252 (Windows) unless it has bytes cp1252
    leaves undefined."""
    try:
        data.decode("cp1252")
        return "cp1252"
    except UnicodeDecodeError:
        return "latin-1"


def _lines(root: _Root, name: str, bad: list[BadRow]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of each non-blank line of a caption file, strictly decoded as UTF-8.

    Lines are decoded one by one so that a stray byte costs its own line (a bad row naming the byte), not
    the whole file; a UTF-16 file is refused at once since none of its lines would decode.
    """
    data = root.read_bytes(name)
    wide = _wide_encoding(data[:4096])
    if wide:
        raise CharRNNError(f"{name} is {wide} text, not UTF-8; re-save it as UTF-8 "
                           f"(e.g. iconv -f {wide} -t UTF-8)")
    data = data.removeprefix(codecs.BOM_UTF8)
    guess = None
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            guess = guess or _guess_encoding(data)
            bad.append(BadRow(name, number, f"byte 0x{raw[e.start]:02x} (byte {e.start + 1} of the line) is not "
                                            f"UTF-8; the file looks like {guess}: convert it with "
                                            f"iconv -f {guess} -t UTF-8"))
            continue
        text = text.rstrip("\r")
        if text.strip():
            yield number, text


def _is_header(text: str) -> bool:
    return re.split(r"[\t,|]", text, maxsplit=1)[0].strip().lower() in HEADER_FIELDS


def _inside(folder: str, name: str) -> str | None:
    """`name`, relative to `folder`, as a normalised POSIX path inside the root; None if it would leave the
    dataset (absolute, a drive letter, or `..`). Backslashes from Windows-made files count as slashes."""
    name = name.strip().replace("\\", "/")
    if not name or name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return None
    name = posixpath.normpath(name)
    if name == ".." or name.startswith("../"):
        return None
    return posixpath.join(folder, name) if folder else name


def _row(folder: str, image: str, caption: str, origin: tuple[str, int | None], bad: list[BadRow]) -> _Row | None:
    path = _inside(folder, image)
    if path is None:
        bad.append(BadRow(*origin, f"{image.strip()!r} is not a relative path inside the dataset"))
        return None
    if not caption.strip():
        bad.append(BadRow(*origin, f"empty caption for {path}"))
        return None
    return _Row(path, caption.strip(), origin)


def _caption_rows(root: _Root, name: str, folder: str, parse_line: Callable[[str], tuple[str, str]],
                  bad: list[BadRow]) -> list[_Row]:
    """The rows of a caption file whose lines `parse_line` turns into (image name, caption); a first line
    that names columns is a header."""
    rows = []
    for k, (line, text) in enumerate(_lines(root, name, bad)):
        if k == 0 and _is_header(text):
            continue
        try:
            image, caption = parse_line(text)
        except _BadLine as e:
            bad.append(BadRow(name, line, str(e)))
            continue
        row = _row(folder, image, caption, (name, line), bad)
        if row:
            rows.append(row)
    return rows


def _tsv_line(text: str) -> tuple[str, str]:
    image, tab, caption = text.partition("\t")
    if not tab:
        raise _BadLine("no TAB between the file name and the caption")
    return image, caption


def _token_line(text: str) -> tuple[str, str]:
    """Flickr's 'name.jpg#2<TAB>caption': the number after # is which reference this is."""
    image, tab, caption = text.partition("\t")
    if not tab:
        raise _BadLine("no TAB between the image name and the caption")
    return image.rpartition("#")[0] or image, caption


def _results_csv_line(text: str) -> tuple[str, str]:
    """Flickr30k from Kaggle: 'name.jpg| 0| caption'."""
    fields = text.split("|", 2)
    if len(fields) != 3:
        raise _BadLine("expected image_name| comment_number| comment")
    return fields[0], fields[2]


def _kaggle_line(text: str) -> tuple[str, str]:
    """Flickr8k from Kaggle: 'name.jpg,caption', the caption CSV-quoted when it holds a comma."""
    image, comma, caption = text.partition(",")
    if not comma:
        raise _BadLine("no comma between the image name and the caption")
    caption = caption.strip()
    if len(caption) >= 2 and caption[0] == caption[-1] == '"':
        caption = caption[1:-1].replace('""', '"')
    return image, caption


# ----- the three formats -------------------------------------------------------------------------------

def _read_groups(root: _Root, top: str, bad: list[BadRow]) -> dict[str, str] | None:
    name = posixpath.join(top, "groups.tsv")
    if not root.is_file(name):
        return None
    groups = {}
    for k, (line, text) in enumerate(_lines(root, name, bad)):
        if k == 0 and _is_header(text):
            continue
        image, tab, group = text.partition("\t")
        path = _inside(top, image)
        if not tab or path is None or not group.strip():
            bad.append(BadRow(name, line, "expected filename<TAB>group"))
            continue
        groups[path] = group.strip()
    return groups


def _read_splits(root: _Root, top: str, bad: list[BadRow]) -> dict[str, _NamedSplit]:
    name = posixpath.join(top, "splits.tsv")
    if not root.is_file(name):
        return {}
    lines = _lines(root, name, bad)
    _, header = next(lines, (0, ""))
    columns = [c.strip() for c in header.split("\t")]
    if columns[0].lower() != "filename" or len(columns) < 2 or not all(columns[1:]) or \
            len(set(columns)) != len(columns):
        raise CharRNNError(f"{name} must start with a header line filename<TAB>name<TAB>... naming each split "
                           "once, e.g. filename<TAB>random<TAB>grouped")
    columns = columns[1:]
    sides: dict[str, dict[str, str]] = {c: {} for c in columns}
    for line, text in lines:
        fields = text.split("\t")
        path = _inside(top, fields[0])
        values = [v.strip().lower() for v in fields[1:]]
        if path is None or len(values) != len(columns):
            bad.append(BadRow(name, line, f"expected a file name and {len(columns)} of train, val or test"))
        elif any(v not in SIDES for v in values):
            wrong = next(v for v in values if v not in SIDES)
            bad.append(BadRow(name, line, f"{wrong!r} is not train, val or test"))
        elif path in sides[columns[0]]:
            bad.append(BadRow(name, line, f"{path} is listed twice"))
        else:
            for column, value in zip(columns, values):
                sides[column][path] = value
    return {c: _NamedSplit(sides[c], f"{name} column {c!r} (test rows unused)", name) for c in columns}


def _parse_tsv(root: _Root, top: str) -> _Parsed:
    bad: list[BadRow] = []
    rows = _caption_rows(root, posixpath.join(top, "captions.tsv"), top, _tsv_line, bad)
    return _Parsed("tsv", rows, bad, _read_splits(root, top, bad), _read_groups(root, top, bad))


FLICKR_CAPTIONS = {"Flickr8k.token.txt": _token_line, "results_20130124.token": _token_line,
                   "results.csv": _results_csv_line, "captions.txt": _kaggle_line}
FLICKR_IMAGES = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "flickr30k_images", "flickr30k-images")
FLICKR_LISTS = (("train", "Flickr_8k.trainImages.txt"), ("val", "Flickr_8k.devImages.txt"),
                ("test", "Flickr_8k.testImages.txt"))


def _flickr_images(root: _Root, top: str, captions: str) -> str:
    """The images folder: beside the caption file, or one level up (the official Flickr8k comes as two zips,
    Flickr8k_text/ and Flicker8k_Dataset/, often unpacked side by side)."""
    for base in dict.fromkeys([top, posixpath.dirname(top)]):
        for folder in FLICKR_IMAGES:
            if root.is_folder(posixpath.join(base, folder)):
                return posixpath.join(base, folder)
    raise CharRNNError(f"{captions} has no images folder beside it; expected one of "
                       f"{', '.join(f + '/' for f in FLICKR_IMAGES)}")


def _flickr_lists(root: _Root, top: str, images: str, rows: list[_Row], captions: str,
                  bad: list[BadRow]) -> dict[str, _NamedSplit]:
    """Flickr8k's own split from its three image lists, when they are there."""
    found = [(side, posixpath.join(top, n)) for side, n in FLICKR_LISTS if root.is_file(posixpath.join(top, n))]
    if not found:
        return {}
    captioned = {r.file for r in rows}
    sides: dict[str, str] = {}
    for side, name in found:
        for line, text in _lines(root, name, bad):
            path = _inside(images, text)
            if path is None or path not in captioned:
                bad.append(BadRow(name, line, f"{text.strip()} has no caption in {captions}"))
            elif path in sides:
                bad.append(BadRow(name, line, f"{text.strip()} is also in the {sides[path]} list"))
            else:
                sides[path] = side
    words = {"train": "training", "val": "validation", "test": "unused"}
    rule = "the dataset's own split: " + ", ".join(f"{posixpath.basename(n)} for {words[s]}" for s, n in found)
    return {"official": _NamedSplit(sides, rule, found[0][1])}


def _parse_flickr(root: _Root, top: str) -> _Parsed:
    name = next(posixpath.join(top, n) for n in FLICKR_CAPTIONS if root.is_file(posixpath.join(top, n)))
    images = _flickr_images(root, top, name)
    bad: list[BadRow] = []
    rows = _caption_rows(root, name, images, FLICKR_CAPTIONS[posixpath.basename(name)], bad)
    named = _flickr_lists(root, top, images, rows, name, bad)
    if named:
        # The token file captions 8,092 images, the lists name 8,000: the rest (among them the notorious
        # "2258277193_586949ec62.jpg.1", which does not exist) are not part of the dataset as published.
        rows = [r for r in rows if r.file in named["official"].sides]
    return _Parsed("flickr", rows, bad, named)


COCO_YEARS = ("2017", "2014")


def _load_json(root: _Root, name: str):
    data = root.read_bytes(name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CharRNNError(f"{name} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
                           "download it again") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CharRNNError(f"{name} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           "download it again") from None


def _coco_rows(root: _Root, name: str, folder: str, bad: list[BadRow]) -> list[_Row]:
    doc = _load_json(root, name)
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise CharRNNError(f'{name} is not a COCO captions file: it needs "images" and "annotations" lists')
    files = {}
    for k, image in enumerate(doc["images"]):
        try:
            files[image["id"]] = str(image["file_name"])
        except (TypeError, KeyError):
            bad.append(BadRow(name, None, f"images[{k}] has no id or file_name"))
    rows = []
    for k, note in enumerate(doc["annotations"]):
        image_id = note.get("image_id") if isinstance(note, dict) else None
        if not isinstance(image_id, (int, str)) or image_id not in files:
            bad.append(BadRow(name, None, f'annotations[{k}] names image id {image_id!r}, which is not in "images"'))
            continue
        caption = note.get("caption")
        row = _row(folder, files[image_id], caption if isinstance(caption, str) else "", (name, None), bad)
        if row:
            rows.append(row)
    return rows


def _parse_coco(root: _Root, top: str) -> _Parsed:
    def annotations(side: str, year: str) -> str:
        return posixpath.join(top, f"annotations/captions_{side}{year}.json")

    year = next(y for y in COCO_YEARS if root.is_file(annotations("train", y)) or root.is_file(annotations("val", y)))
    rows: list[_Row] = []
    bad: list[BadRow] = []
    sides: dict[str, str] = {}
    used = []
    for side in ("train", "val"):
        name = annotations(side, year)
        if root.is_file(name):
            part = _coco_rows(root, name, posixpath.join(top, f"{side}{year}"), bad)
            rows += part
            sides.update((r.file, side) for r in part)
            used.append(name)
    named = {}
    if len(used) == 2:  # with one file only, the seeded split applies
        rule = f"the dataset's own split: {used[0]} for training, {used[1]} for validation"
        named["official"] = _NamedSplit(sides, rule, used[0])
    return _Parsed("coco", rows, bad, named)


MARKERS = (("captions.tsv", _parse_tsv),
           *((f"annotations/captions_{s}{y}.json", _parse_coco) for y in COCO_YEARS for s in ("train", "val")),
           *((name, _parse_flickr) for name in FLICKR_CAPTIONS))


def _parse(root: _Root) -> _Parsed:
    """Recognise the format from its files at the top level, or in a single folder inside (a zip of a folder,
    Kaggle's flickr30k_images/ inside flickr30k_images/), and read it."""
    for top in ["", *root.subfolders()]:
        for marker, reader in MARKERS:
            if root.is_file(posixpath.join(top, marker)):
                return reader(root, top)
    raise CharRNNError(f"no captions found in {str(root.path)!r}: expected captions.tsv (filename<TAB>caption), "
                       "a Flickr8k/Flickr30k caption file (Flickr8k.token.txt, results_20130124.token, "
                       "results.csv) or COCO's annotations/captions_train2017.json")


# ----- choosing the split ------------------------------------------------------------------------------

@dataclass
class _Loaded:
    format: str
    whole: CaptionSplit
    bad: list[BadRow]
    named: _NamedSplit | None


def _group_rows(root: Path, rows: list[_Row], groups: dict[str, str] | None) -> CaptionSplit:
    """One entry per image, in the order images are first named, with all its captions."""
    index: dict[str, int] = {}
    out = CaptionSplit(root, [], [], None, [])
    for r in rows:
        if r.file not in index:
            index[r.file] = len(out.files)
            out.files.append(r.file)
            out.captions.append([])
            out.origins.append(r.origin)
        out.captions[index[r.file]].append(r.caption)
    if groups is not None:
        out.groups = [groups.get(f, f) for f in out.files]
    return out


def _choose_named(parsed: _Parsed, split: str | None, data) -> _NamedSplit | None:
    """The named split to use; None when a seeded one is asked for or the dataset has none."""
    if split is None:
        return next(iter(parsed.named.values()), None)
    if split in parsed.named:
        return parsed.named[split]
    if split in ("random", "grouped"):
        if split == "grouped" and parsed.groups is None:
            raise CharRNNError(f"--split grouped needs groups.tsv (filename<TAB>group) in {str(data)!r}")
        return None
    raise CharRNNError(f"--split {split!r} is not a split of {str(data)!r}; choose one of "
                       f"{', '.join([*parsed.named, 'random', 'grouped'])}")


def _load(data, split: str | None, sides: tuple[str, ...] | None) -> _Loaded:
    """Read a dataset and keep the rows whose images exist and lie on `sides` of its chosen named split
    (every row when `sides` is None: a --val-dir dataset is used whole)."""
    with _open_root(data) as root:
        parsed = _parse(root)
        named = _choose_named(parsed, split, data) if sides is not None else None
        bad = list(parsed.bad)
        rows = []
        for r in parsed.rows:
            side = named.sides.get(r.file) if named else "train"
            if side is None:
                bad.append(BadRow(*r.origin, f"{r.file} has no row in {named.source}"))
            elif not named or side in sides:
                # only the images that will be used must exist: an unused test image may be absent
                if root.is_file(r.file):
                    rows.append(r)
                else:
                    bad.append(BadRow(*r.origin, f"{r.file} does not exist"))
        return _Loaded(parsed.format, _group_rows(root.path, rows, parsed.groups), bad, named)


def _bad_message(bad: list[BadRow]) -> str:
    """One line: the first two bad rows (in file and line order) and how many more there are."""
    first = sorted(bad, key=lambda b: (b.file, b.line or 0))
    if len(first) == 1:
        return f"{first[0]}; fix it or pass --skip-bad"
    more = f" (and {len(first) - 2} more)" if len(first) > 2 else ""
    return f"{len(first)} bad rows: {first[0]}; {first[1]}{more}; fix them or pass --skip-bad"


def _by_named(whole: CaptionSplit, named: _NamedSplit) -> tuple[CaptionSplit, CaptionSplit | None, str]:
    train = [i for i, f in enumerate(whole.files) if named.sides[f] == "train"]
    val = [i for i, f in enumerate(whole.files) if named.sides[f] == "val"]
    if not train:
        raise CharRNNError(f"{named.rule} puts no usable image in training; mark some rows train")
    return whole.subset(train), whole.subset(val) if val else None, named.rule


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


def _seeded(whole: CaptionSplit, val_frac: float, seed: int,
            by_group: bool) -> tuple[CaptionSplit, CaptionSplit | None, str]:
    """A reproducible random split by image (or by group): an image, and with `by_group` a whole group,
    is never on both sides, or validation would score captions the model was trained on."""
    if val_frac == 0:
        return whole, None, "no validation set (val_frac 0)"
    units = whole.groups if by_group else whole.files
    train, val, chosen, distinct = split_by_unit(units, val_frac, seed, "group" if by_group else "image")
    by = f"by group (groups.tsv, {chosen} of {distinct} groups)" if by_group else "by image"
    rule = (f"seeded random split {by}: {len(val)} of {len(whole)} images for validation "
            f"(val_frac {val_frac}, seed {seed})")
    return whole.subset(train), whole.subset(val), rule


def _relabel(loaded: _Loaded, prefix: str) -> None:
    """Name a --val-dir dataset's caption files with its path, so its bad rows cannot be mistaken for the
    training dataset's."""
    loaded.bad = [BadRow(f"{prefix}/{b.file}", b.line, b.reason) for b in loaded.bad]
    loaded.whole.origins = [(f"{prefix}/{f}", line) for f, line in loaded.whole.origins]


def read_captions(data: str | os.PathLike, *, split: str | None = None, val_dir: str | os.PathLike | None = None,
                  val_frac: float = 0.1, seed: int = 0, skip_bad: bool = False) -> CaptionData:
    """Read a caption dataset (directory or .zip) and split it into training and validation images.

    Validation is the dataset's own split where it has one (Flickr8k's lists, COCO's val file, the first
    column of splits.tsv; `split` names another column, or "random" / "grouped" for a seeded split by image
    or by group), else all of `val_dir`, else a seeded `val_frac` of the images. Bad rows raise one
    `CharRNNError` line, or with `skip_bad` are left out and listed in `skipped`.
    """
    if not 0.0 <= val_frac < 1.0:
        raise CharRNNError(f"--val-frac {val_frac} must be in [0, 1)")
    if split is not None and val_dir is not None:
        raise CharRNNError("--split and --val-dir both choose the validation set; pass only one")
    main = _load(data, split, ("train",) if val_dir is not None else ("train", "val"))
    other = _load(val_dir, None, None) if val_dir is not None else None
    if other:
        _relabel(other, str(Path(val_dir)))
    bad = main.bad + (other.bad if other else [])
    if bad and not skip_bad:
        raise CharRNNError(_bad_message(bad))
    for loaded, where in ((main, data), (other, val_dir)):
        if loaded and not len(loaded.whole):
            skipped = f" ({len(loaded.bad)} bad rows skipped)" if loaded.bad else ""
            raise CharRNNError(f"{str(where)!r} has no usable image with a caption{skipped}")
    if other:
        trained_on = "its own training part" if main.named else "all of it"
        train, val = main.whole, other.whole
        rule = f"validation: all {len(val)} images of --val-dir {str(val_dir)!r}; training: {trained_on}"
    elif main.named:
        train, val, rule = _by_named(main.whole, main.named)
    else:
        train, val, rule = _seeded(main.whole, val_frac, seed, split == "grouped")
    return CaptionData(train, val, main.format, sorted(bad, key=lambda b: (b.file, b.line or 0)), rule)


# ----- decoding and caching images ---------------------------------------------------------------------

# What Pillow raises on a file that is not an image, is truncated, is corrupt or is absurdly large.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def _flatten(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white: convert("RGB") alone would keep whatever colour
    the transparent pixels happen to store (often black), and an emoji's outline would vanish into it."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_image(f: BinaryIO, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: EXIF orientation applied, transparency over white, resized (aspect not
    kept) with Lanczos, which keeps thin strokes that bilinear would blur away at small sizes."""
    with Image.open(f) as im:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale while that still leaves twice the target resolution.
        # Several times faster on photos; after the Lanczos filter the difference is a level or two.
        im.draft(None, (2 * size, 2 * size))
        im = ImageOps.exif_transpose(im)
        im = _flatten(im).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def _decode_problem(name: str, e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return f"{name} does not exist"
    if isinstance(e, UnidentifiedImageError):
        return f"{name} is not an image Pillow can read"
    detail = " ".join(str(e).split())  # Pillow's messages may span lines; ours are one
    if "truncated" in detail or isinstance(e, EOFError):
        return f"{name} is truncated ({detail}); download or save it again"
    return f"{name} cannot be decoded ({type(e).__name__}: {detail})"


def _cache_files(cache_path: Path) -> tuple[Path, Path]:
    """The array and its JSON sidecar: `x` or `x.u8` gives x.u8 and x.json."""
    stem = cache_path.with_suffix("") if cache_path.suffix == ".u8" else cache_path
    return stem.with_name(stem.name + ".u8"), stem.with_name(stem.name + ".json")


def _cache_key(root: _Root, split: CaptionSplit, size: int) -> dict:
    """Everything the cached pixels depend on; the cache is reused only when all of it is equal."""
    return {"cache_version": CACHE_VERSION, "size": size, "root": str(root.path.resolve()), "files": split.files,
            "signatures": [root.signature(f) for f in split.files]}


def _cached(array_path: Path, meta_path: Path, key: dict) -> dict | None:
    """The sidecar of a complete cache made from `key`, or None (missing, torn, edited or out of date)."""
    try:
        meta = json.loads(meta_path.read_text())
        size = key["size"]
        if meta["key"] != key or array_path.stat().st_size != len(meta["kept"]) * size * size * 3:
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _decode_into_cache(root: _Root, split: CaptionSplit, array_path: Path, meta_path: Path, key: dict,
                       skip_bad: bool, progress: Callable[[int, int], None] | None) -> dict:
    """Decode every image, one row at a time straight to the file (memory stays one image, whatever N is).

    A bad image without `skip_bad` stops the writing but not the checking, so the error counts them all;
    then the exception inside `atomic_write` removes the temporary file and nothing is left behind.
    """
    size = key["size"]
    kept: list[int] = []
    bad: list[BadRow] = []
    # Remove the old sidecar first: a crash after the new array is renamed into place must not leave a
    # sidecar that describes the old one.
    meta_path.unlink(missing_ok=True)
    with atomic_write(array_path, "wb") as out:
        for i, name in enumerate(split.files):
            try:
                with root.open(name) as f:
                    pixels = decode_image(f, size)
            except UNREADABLE as e:
                bad.append(BadRow(*split.origins[i], _decode_problem(name, e)))
            else:
                if skip_bad or not bad:
                    out.write(pixels.tobytes())
                    kept.append(i)
            if progress:
                progress(i + 1, len(split.files))
        if bad and not skip_bad:
            raise CharRNNError(_bad_message(bad))
        if not kept:
            raise CharRNNError(f"none of the {len(split)} images could be decoded: {_bad_message(bad)}")
    meta = {"key": key, "kept": kept, "skipped": [asdict(b) for b in bad]}
    write_text_atomic(meta_path, json.dumps(meta))
    return meta


def cache_images(split: CaptionSplit, cache_path: str | os.PathLike, *, size: int, skip_bad: bool = False,
                 progress: Callable[[int, int], None] | None = None) -> ImageArray:
    """Decode a split's images once into `cache_path`.u8 (N, size, size, 3) uint8 plus a `.json` sidecar,
    and memory-map them; a later call with the same files (same sizes and mtimes, or CRCs in a zip) and
    size decodes nothing.

    An image Pillow cannot decode raises one `CharRNNError` line naming the caption line that lists it,
    leaving no cache behind; with `skip_bad` it is dropped and `split`, `kept`, `skipped` say which.
    `progress(done, total)` is called after each image decoded.
    """
    if size < 1:
        raise CharRNNError(f"--image-size {size} must be at least 1")
    array_path, meta_path = _cache_files(Path(cache_path))
    array_path.parent.mkdir(parents=True, exist_ok=True)
    with _open_root(split.root) as root:
        key = _cache_key(root, split, size)
        meta = _cached(array_path, meta_path, key)
        reused = meta is not None
        if not reused:
            meta = _decode_into_cache(root, split, array_path, meta_path, key, skip_bad, progress)
    skipped = [BadRow(**b) for b in meta["skipped"]]
    if skipped and not skip_bad:  # a cache made with skip_bad obeys the same rule when reused without it
        raise CharRNNError(_bad_message(skipped))
    kept = meta["kept"]
    pixels = np.memmap(array_path, dtype=np.uint8, mode="r", shape=(len(kept), size, size, 3))
    return ImageArray(pixels, split.subset(kept), kept, skipped, reused)
