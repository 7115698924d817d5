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
mapped and reused while the image files are unchanged. What ctc reads the same way (the dataset root, label
lines, bad rows, the decode cache) is `charrnn.vision`'s; this module holds what only captions have.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message, in_file_order
from charrnn.vision.cache import Stacked, cache_decoded
from charrnn.vision.dataset import (
    DatasetRoot,
    ImageData,
    ImageSplit,
    iter_label_lines,
    open_member,  # noqa: F401  (the caption API's way to read a split's file)
    open_root,
    path_inside,
    relabel,
    split_by_unit,
)
from charrnn.vision.image import decode_member, flatten, open_image, undecodable

# Bump when the decoding recipe below changes: older caches are then rebuilt. 2: 16-bit grey is scaled to 8
# bits (version 1 decoded it as pure white).
CACHE_VERSION = 2
SIDES = ("train", "val", "test")  # values in splits.tsv; test images are used by neither side


# ----- public data types ----------------------------------------------------------------------------

@dataclass
class CaptionSplit(ImageSplit):
    """Images and their reference captions, aligned by index (see `ImageSplit` for `root`, `files`, `origins`)."""

    root: Path
    files: list[str]
    captions: list[list[str]]  # every reference caption of each image, at least one
    groups: list[str] | None  # from groups.tsv; an image it does not list is a group of its own
    origins: list[tuple[str, int | None]]


@dataclass
class CaptionData(ImageData[CaptionSplit]):
    """A caption dataset read and split; `format` is "tsv", "flickr" or "coco"."""


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


def _row(folder: str, image: str, caption: str, origin: tuple[str, int | None], bad: list[BadRow]) -> _Row | None:
    path = path_inside(folder, image)
    if path is None:
        bad.append(BadRow(*origin, f"{image.strip()!r} is not a relative path inside the dataset"))
        return None
    if not caption.strip():
        bad.append(BadRow(*origin, f"empty caption for {path}"))
        return None
    return _Row(path, caption.strip(), origin)


def _caption_rows(root: DatasetRoot, name: str, folder: str, parse_line: Callable[[str], tuple[str, str]],
                  bad: list[BadRow]) -> list[_Row]:
    """The rows of a caption file whose lines `parse_line` turns into (image name, caption); a first line
    that names columns is a header."""
    rows = []
    for line, text in iter_label_lines(root, name, bad, header=True):
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

def _read_groups(root: DatasetRoot, top: str, bad: list[BadRow]) -> dict[str, str] | None:
    name = posixpath.join(top, "groups.tsv")
    if not root.is_file(name):
        return None
    groups = {}
    for line, text in iter_label_lines(root, name, bad, header=True):
        image, tab, group = text.partition("\t")
        path = path_inside(top, image)
        if not tab or path is None or not group.strip():
            bad.append(BadRow(name, line, "expected filename<TAB>group"))
            continue
        groups[path] = group.strip()
    return groups


def _read_splits(root: DatasetRoot, top: str, bad: list[BadRow]) -> dict[str, _NamedSplit]:
    name = posixpath.join(top, "splits.tsv")
    if not root.is_file(name):
        return {}
    lines = iter_label_lines(root, name, bad)
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
        path = path_inside(top, fields[0])
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


def _parse_tsv(root: DatasetRoot, top: str) -> _Parsed:
    bad: list[BadRow] = []
    rows = _caption_rows(root, posixpath.join(top, "captions.tsv"), top, _tsv_line, bad)
    return _Parsed("tsv", rows, bad, _read_splits(root, top, bad), _read_groups(root, top, bad))


FLICKR_CAPTIONS = {"Flickr8k.token.txt": _token_line, "results_20130124.token": _token_line,
                   "results.csv": _results_csv_line, "captions.txt": _kaggle_line}
FLICKR_IMAGES = ("Flicker8k_Dataset", "Flickr8k_Dataset", "Images", "flickr30k_images", "flickr30k-images")
FLICKR_LISTS = (("train", "Flickr_8k.trainImages.txt"), ("val", "Flickr_8k.devImages.txt"),
                ("test", "Flickr_8k.testImages.txt"))


def _flickr_images(root: DatasetRoot, top: str, captions: str) -> str:
    """The images folder: beside the caption file, or one level up (the official Flickr8k comes as two zips,
    Flickr8k_text/ and Flicker8k_Dataset/, often unpacked side by side)."""
    for base in dict.fromkeys([top, posixpath.dirname(top)]):
        for folder in FLICKR_IMAGES:
            if root.is_folder(posixpath.join(base, folder)):
                return posixpath.join(base, folder)
    raise CharRNNError(f"{captions} has no images folder beside it; expected one of "
                       f"{', '.join(f + '/' for f in FLICKR_IMAGES)}")


def _flickr_lists(root: DatasetRoot, top: str, images: str, rows: list[_Row], captions: str,
                  bad: list[BadRow]) -> dict[str, _NamedSplit]:
    """Flickr8k's own split from its three image lists, when they are there."""
    found = [(side, posixpath.join(top, n)) for side, n in FLICKR_LISTS if root.is_file(posixpath.join(top, n))]
    if not found:
        return {}
    captioned = {r.file for r in rows}
    sides: dict[str, str] = {}
    for side, name in found:
        for line, text in iter_label_lines(root, name, bad):
            path = path_inside(images, text)
            if path is None or path not in captioned:
                bad.append(BadRow(name, line, f"{text.strip()} has no caption in {captions}"))
            elif path in sides:
                bad.append(BadRow(name, line, f"{text.strip()} is also in the {sides[path]} list"))
            else:
                sides[path] = side
    words = {"train": "training", "val": "validation", "test": "unused"}
    rule = "the dataset's own split: " + ", ".join(f"{posixpath.basename(n)} for {words[s]}" for s, n in found)
    return {"official": _NamedSplit(sides, rule, found[0][1])}


def _parse_flickr(root: DatasetRoot, top: str) -> _Parsed:
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


def _load_json(root: DatasetRoot, name: str):
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


def _coco_rows(root: DatasetRoot, name: str, folder: str, bad: list[BadRow]) -> list[_Row]:
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


def _parse_coco(root: DatasetRoot, top: str) -> _Parsed:
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


def _parse(root: DatasetRoot) -> _Parsed:
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
    with open_root(data) as root:
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


def _by_named(whole: CaptionSplit, named: _NamedSplit) -> tuple[CaptionSplit, CaptionSplit | None, str]:
    train = [i for i, f in enumerate(whole.files) if named.sides[f] == "train"]
    val = [i for i, f in enumerate(whole.files) if named.sides[f] == "val"]
    if not train:
        raise CharRNNError(f"{named.rule} puts no usable image in training; mark some rows train")
    return whole.subset(train), whole.subset(val) if val else None, named.rule


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


def read_captions(data: str | os.PathLike, *, split: str | None = None, val_dir: str | os.PathLike | None = None,
                  val_frac: float = 0.1, seed: int = 0, skip_bad: bool = False) -> CaptionData:
    """Read a caption dataset (directory or .zip) and split it into training and validation images.

    Validation is the dataset's own split where it has one (Flickr8k's lists, COCO's val file, the first
    column of splits.tsv; `split` names another column, or "random" / "grouped" for a seeded split by image
    or by group), else all of `val_dir`, else a seeded `val_frac` of the images. Bad rows raise one
    `CharRNNError` line, or with `skip_bad` are left out and listed in `skipped`. When there are bad rows,
    the images of the others are decoded as well, and the error counts those that fail among them (else
    `cache_images` finds them, and a user would fix the dataset in two rounds).
    """
    if not 0.0 <= val_frac < 1.0:
        raise CharRNNError(f"--val-frac {val_frac} must be in [0, 1)")
    if split is not None and val_dir is not None:
        raise CharRNNError("--split and --val-dir both choose the validation set; pass only one")
    main = _load(data, split, ("train",) if val_dir is not None else ("train", "val"))
    other = _load(val_dir, None, None) if val_dir is not None else None
    if other:
        other.bad = relabel(str(Path(val_dir)), other.bad, [other.whole])
    bad = main.bad + (other.bad if other else [])
    if bad and not skip_bad:  # with the images that would fail next, so that one error lists every problem
        raise CharRNNError(bad_rows_message(bad + undecodable([x.whole for x in (main, other) if x])))
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
    return CaptionData(train, val, main.format, in_file_order(bad), rule)


# ----- decoding and caching images ---------------------------------------------------------------------

def decode_image(f: BinaryIO, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: EXIF orientation applied, transparency over white, resized (aspect not
    kept) with Lanczos, which keeps thin strokes that bilinear would blur away at small sizes."""
    with open_image(f) as im:
        # JPEG only: decode at 1/2, 1/4 or 1/8 scale while that still leaves twice the target resolution.
        # Several times faster on photos; after the Lanczos filter the difference is a level or two.
        im.draft(None, (2 * size, 2 * size))
        im = ImageOps.exif_transpose(im)
        im = flatten(im).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


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
    with open_root(split.root) as root:
        # everything the cached pixels depend on: the cache is reused only when all of it is equal
        key = {"cache_version": CACHE_VERSION, "size": size, "root": str(root.path.resolve()), "files": split.files,
               "signatures": [root.signature(f) for f in split.files]}

        def decode(i: int) -> np.ndarray | BadRow:
            return decode_member(root, split.files[i], split.origins[i], lambda f: decode_image(f, size))

        cached = cache_decoded(cache_path, Stacked((size, size, 3)), key, len(split), decode, skip_bad=skip_bad,
                               progress=progress, none_kept="images could be decoded")
    return ImageArray(cached.pixels, split.subset(cached.kept), cached.kept, cached.skipped, cached.reused)
