"""Text-line datasets for `charrnn ctc`: reading line images and their transcripts, choosing validation, and
caching the decoded lines.

A dataset is a directory, or a .zip of one, in one of these layouts, recognised from its files:

    tsv        labels.tsv (filename<TAB>transcript, an optional header line) beside the line images, which
               may sit in subfolders; file names are relative to the folder of labels.tsv.
    make-lines train/labels.tsv and val/labels.tsv (what our renderer writes; val-heldout/ is not used
               unless given as `val_dir`): train/ trains and val/ validates.
    iam        the IAM Handwriting Database as downloaded: lines.txt ("a01-000u-00 ok 154 19 408 746 1661 89
               A|MOVE|to|stop", `|` between words) beside lines/a01/a01-000u/a01-000u-00.png, or inside
               ascii/ beside lines/.

Every problem with a line (a missing image, an empty transcript, a bad TAB layout, and later an image Pillow
cannot decode or one too narrow for CTC to spell its transcript) becomes a `BadRow` naming the label file
and its line; they are reported together or, with `skip_bad`, skipped and returned. Lines are decoded once
into one uint8 array, memory-mapped and reused while the images are unchanged. What captions read the same
way (the dataset root, label lines, bad rows, the decode cache) is `charrnn.vision`'s.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message, in_file_order
from charrnn.vision.cache import SideBySide, cache_decoded
from charrnn.vision.dataset import (
    DatasetRoot,
    ImageData,
    ImageSplit,
    iter_label_lines,
    open_root,
    path_inside,
    relabel,
    split_by_unit,
)
from charrnn.vision.image import decode_member, flatten, open_image, undecodable

CACHE_VERSION = 1  # bump when the decoding recipe below changes: older caches are then rebuilt
LABELS = "labels.tsv"
IAM_LABELS = ("lines.txt", "ascii/lines.txt")


# ----- public data types ----------------------------------------------------------------------------

@dataclass
class LineSplit(ImageSplit):
    """Line images and their transcripts, aligned by index (see `ImageSplit` for `root`, `files`, `origins`)."""

    root: Path
    files: list[str]
    texts: list[str]
    origins: list[tuple[str, int | None]]


@dataclass
class LineData(ImageData[LineSplit]):
    """A line dataset read and split; `format` is "tsv" or "iam". `unseen` counts the validation characters
    that training never shows: the model cannot get those right."""

    unseen: dict[str, int]


@dataclass
class LineImages:
    """A split's lines decoded side by side: line i is `pixels[:, offsets[i]:offsets[i + 1]]`.

    Pixels are inverted (ink high, paper 0) so that zero padding is blank paper.
    """

    pixels: np.ndarray  # (height, total_width) uint8, memory-mapped, column-major so a line is contiguous
    offsets: np.ndarray  # (N + 1,) int64
    split: LineSplit  # the lines kept, aligned with `offsets`
    kept: list[int]  # their indices in the split given to `cache_lines`
    skipped: list[BadRow]  # lines skip_bad left out: undecodable or too narrow
    reused: bool  # True when an up-to-date cache was found and nothing was decoded

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def widths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def batch(self, indices: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """(B, height, max width) uint8 lines padded with zeros on the right, and their widths (B,)."""
        idx = np.asarray(list(indices), dtype=np.int64)
        widths = self.widths()[idx]
        out = np.zeros((len(idx), self.pixels.shape[0], int(widths.max(initial=0))), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k, :, :widths[k]] = self.pixels[:, self.offsets[i]:self.offsets[i + 1]]
        return out, widths


# ----- reading label files ------------------------------------------------------------------------------

class _Rows:
    """The lines of one dataset as they are read, with the bad rows found on the way."""

    def __init__(self, root: DatasetRoot):
        self.root = root
        self.split = LineSplit(root.path, [], [], [])
        self.bad: list[BadRow] = []
        self._seen: dict[str, tuple[str, int | None]] = {}

    def add(self, folder: str, name: str, text: str, origin: tuple[str, int]) -> None:
        path = path_inside(folder, name)
        if path is None:
            self.bad.append(BadRow(*origin, f"{name.strip()!r} is not a relative path inside the dataset"))
        elif not text.strip():  # CTC cannot learn from an image whose target is nothing
            self.bad.append(BadRow(*origin, f"empty transcript for {path}"))
        elif path in self._seen:  # two transcripts for one image: which is right is the user's call
            self.bad.append(BadRow(*origin, f"{path} is also listed at {self._seen[path][0]} line "
                                            f"{self._seen[path][1]}"))
        elif not self.root.is_file(path):
            self.bad.append(BadRow(*origin, f"{path} does not exist"))
        else:
            self._seen[path] = origin
            self.split.files.append(path)
            self.split.texts.append(text)
            self.split.origins.append(origin)


def _read_tsv(rows: _Rows, name: str) -> None:
    """labels.tsv: filename<TAB>transcript. The transcript is kept as written (only the line end goes):
    spaces are characters the model must learn to place."""
    folder = posixpath.dirname(name)
    for line, text in iter_label_lines(rows.root, name, rows.bad, header=True):
        fields = text.split("\t")
        if len(fields) != 2:
            tabs = "no TAB" if len(fields) == 1 else f"{len(fields) - 1} TABs"
            rows.bad.append(BadRow(name, line, f"{tabs}: expected filename<TAB>transcript"))
            continue
        rows.add(folder, fields[0], fields[1], (name, line))


def _iam_images(root: DatasetRoot, name: str) -> str:
    """IAM's lines/ folder: beside lines.txt, or one level up when lines.txt is in ascii/ (the two archives
    ascii.tgz and lines.tgz unpacked side by side)."""
    folder = posixpath.dirname(name)
    for base in dict.fromkeys([folder, posixpath.dirname(folder)]):
        if root.is_folder(posixpath.join(base, "lines")):
            return posixpath.join(base, "lines")
    raise CharRNNError(f"{name} has no lines/ folder beside it or one level up; unpack IAM's lines.tgz there")


def _read_iam(rows: _Rows, name: str, ok_only: bool) -> None:
    """IAM lines.txt. Fields are separated by spaces and words by `|`; the transcript is everything after
    the eighth field. `err` only says IAM's word segmentation of the line failed: the line transcript
    itself is still right, hence kept unless `ok_only`."""
    images = _iam_images(rows.root, name)
    for line, text in iter_label_lines(rows.root, name, rows.bad):
        if text.startswith("#"):
            continue
        fields = text.split(maxsplit=8)
        parts = fields[0].split("-")
        if len(fields) != 9 or fields[1] not in ("ok", "err") or len(parts) != 3:
            rows.bad.append(BadRow(name, line, "expected 'a01-000u-00 ok|err graylevel components x y w h "
                                               "word|word|...'"))
        elif not (ok_only and fields[1] == "err"):
            image = f"{parts[0]}/{parts[0]}-{parts[1]}/{fields[0]}.png"
            rows.add(images, image, fields[8].replace("|", " "), (name, line))


@dataclass
class _Loaded:
    format: str
    train: LineSplit
    val: LineSplit | None  # a make-lines set's val/
    bad: list[BadRow]


def _find(root: DatasetRoot) -> tuple[str, str]:
    """(layout, label file) recognised at the top, or in a single folder inside (a zip of a folder)."""
    for top in ["", *root.subfolders()]:
        if root.is_file(posixpath.join(top, "train", LABELS)):
            return "make-lines", posixpath.join(top, "train", LABELS)
        if root.is_file(posixpath.join(top, LABELS)):
            return "tsv", posixpath.join(top, LABELS)
        for name in IAM_LABELS:
            if root.is_file(posixpath.join(top, name)):
                return "iam", posixpath.join(top, name)
    raise CharRNNError(f"no line labels found in {str(root.path)!r}: expected labels.tsv (filename<TAB>transcript) "
                       "beside the line images, a make-lines set (train/labels.tsv, val/labels.tsv), or IAM's "
                       "lines.txt (or ascii/lines.txt) with its lines/ folder")


def _load(data: str | os.PathLike, iam_ok_only: bool) -> _Loaded:
    with open_root(data) as root:
        layout, labels = _find(root)
        rows = _Rows(root)
        if layout == "iam":
            _read_iam(rows, labels, iam_ok_only)
            return _Loaded("iam", rows.split, None, rows.bad)
        _read_tsv(rows, labels)
        val_labels = posixpath.join(posixpath.dirname(posixpath.dirname(labels)), "val", LABELS)
        if layout == "tsv" or not root.is_file(val_labels):
            return _Loaded("tsv", rows.split, None, rows.bad)
        val = _Rows(root)
        _read_tsv(val, val_labels)
        return _Loaded("tsv", rows.split, val.split, rows.bad + val.bad)


# ----- choosing the split ------------------------------------------------------------------------------

def _seeded(whole: LineSplit, val_frac: float, seed: int, by_form: bool) -> tuple[LineSplit, LineSplit | None, str]:
    """A reproducible random split of the lines. IAM's are drawn a whole form at a time (the folder of the
    image): a page's lines share a writer and a text, and validating on its neighbours flatters the model."""
    if val_frac == 0:
        return whole, None, "no validation set (val_frac 0)"
    units = [posixpath.dirname(f) if by_form else f for f in whole.files]
    train, val, chosen, distinct = split_by_unit(units, val_frac, seed, "form" if by_form else "line")
    forms = f", whole forms ({chosen} of {distinct})" if by_form else ""
    rule = f"a seeded {val_frac * 100:g}% of the lines{forms}: {len(val)} of {len(whole)} (seed {seed})"
    return whole.subset(train), whole.subset(val), rule


def _unseen(train: LineSplit, val: LineSplit | None) -> dict[str, int]:
    if val is None:
        return {}
    known = set("".join(train.texts))
    counts = Counter(c for text in val.texts for c in text if c not in known)
    return dict(counts.most_common())


def read_lines(data: str | os.PathLike, *, val_dir: str | os.PathLike | None = None, val_frac: float = 0.1,
               seed: int = 0, iam_ok_only: bool = False, skip_bad: bool = False) -> LineData:
    """Read a line dataset (directory or .zip) and split it into training and validation lines.

    Validation is a make-lines set's val/ when it has one, else `val_dir` (its val/ if it is a make-lines
    set, all of it otherwise; training then uses all of `data`, or its train/), else a seeded `val_frac` of
    the lines (whole forms for IAM). Bad rows raise one `CharRNNError` line, or with `skip_bad` are left
    out and listed in `skipped`. When there are bad rows, the images of the lines that would be used are
    decoded as well, and the error counts those that fail among them (else `cache_lines` finds them, and a
    user would fix the dataset in two rounds); whether a line is too narrow depends on the reader's
    --height, so that is still found by `cache_lines`.
    """
    if not 0.0 <= val_frac < 1.0:
        raise CharRNNError(f"--val-frac {val_frac} must be in [0, 1)")
    main = _load(data, iam_ok_only)
    other = _load(val_dir, iam_ok_only) if val_dir is not None else None
    if other:
        other.bad = relabel(str(Path(val_dir)), other.bad, [other.train, other.val])
    bad = in_file_order(main.bad + (other.bad if other else []))
    if bad and not skip_bad:  # with the images that would fail next, so that one error lists every problem
        used = [main.train, (other.train if other.val is None else other.val) if other else main.val]
        raise CharRNNError(bad_rows_message(bad + undecodable([s for s in used if s is not None])))
    for loaded, where in ((main, data), (other, val_dir)):
        if loaded and not len(loaded.train):
            skipped = f" ({len(loaded.bad)} bad rows skipped)" if loaded.bad else ""
            raise CharRNNError(f"{str(where)!r} has no usable line with a transcript{skipped}")
    if other:
        val = other.val if other.val is not None else other.train
        whose = "val/ of the make-lines set" if other.val is not None else "all of"
        train, rule = main.train, f"{whose} --val-dir {str(val_dir)!r} ({len(val)} lines)"
    elif main.val is not None:
        train, val, rule = main.train, main.val, f"val/ of the make-lines set ({len(main.val)} lines)"
    else:
        train, val, rule = _seeded(main.train, val_frac, seed, main.format == "iam")
    if val is not None and not len(val):
        val, rule = None, f"{rule}: none usable, so no validation set"
    return LineData(train, val, main.format, bad, rule, _unseen(train, val))


# ----- decoding and caching lines ----------------------------------------------------------------------

def load_line_image(f_or_path: BinaryIO | str | os.PathLike, height: int, max_width: int) -> np.ndarray:
    """(height, w) uint8, inverted grayscale (ink high, paper 0): EXIF orientation applied, transparency over
    white, resized with Lanczos to `height` keeping the aspect ratio, w = round(W * height / H) (at least
    1). A line wider than `max_width` is squeezed to it, not cropped: cropping would cut off characters
    that the transcript still names."""
    with open_image(f_or_path) as im:
        im = ImageOps.exif_transpose(im)
        im = flatten(im).convert("L")  # 16-bit grey scaled, transparency over white
        width = min(max(round(im.width * height / im.height), 1), max_width)
        im = im.resize((width, height), Image.Resampling.LANCZOS)
    return 255 - np.asarray(im, dtype=np.uint8)


def frames_needed(text: str) -> int:
    """The fewest CTC frames that can spell `text`: one per character, plus a blank between two equal
    neighbours, since CTC merges repeats ("hello" needs 6: h e l _ l o). Graves et al. 2006, section 3.1."""
    return len(text) + sum(a == b for a, b in pairwise(text))


def _too_narrow(width: int, text: str, frames: Callable[[int], int], max_width: int) -> str | None:
    need, have = frames_needed(text), int(frames(width))
    if have >= need:
        return None
    fix = ("raise --max-width" if width == max_width else
           "check the image: a line of text is wider than it is tall" if have == 0 else "check its transcript")
    return (f"{width} pixels wide gives {have} CTC frames, but its {len(text)}-character transcript needs "
            f"{need}; {fix}")


def _cache_key(root: DatasetRoot, split: LineSplit, height: int, max_width: int, frames: Callable[[int], int]) -> dict:
    """Everything the cache depends on; it is reused only when all of it is equal. Which lines are too
    narrow depends on the transcripts and on `frames`, which is known by its values at every width a line
    can have."""
    table = [int(frames(w)) for w in range(1, max_width + 1)]
    inputs = [split.files, split.texts, [root.signature(f) for f in split.files], table]
    digest = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
    return {"cache_version": CACHE_VERSION, "height": height, "max_width": max_width,
            "root": str(root.path.resolve()), "lines": len(split), "digest": digest}


def _decode_line(root: DatasetRoot, split: LineSplit, i: int, height: int, max_width: int,
                 frames: Callable[[int], int]) -> np.ndarray | BadRow:
    name = split.files[i]
    line = decode_member(root, name, split.origins[i], lambda f: load_line_image(f, height, max_width))
    if isinstance(line, BadRow):
        return line
    problem = _too_narrow(line.shape[1], split.texts[i], frames, max_width)
    return BadRow(*split.origins[i], f"{name} is too narrow at height {height}: {problem}") if problem else line


def cache_lines(split: LineSplit, cache_path: str | os.PathLike, *, height: int, max_width: int,
                frames: Callable[[int], int], skip_bad: bool = False,
                progress: Callable[[int, int], None] | None = None) -> LineImages:
    """Decode a split's lines once into `cache_path`.npy (height, total width) uint8 plus a `.json` sidecar,
    and memory-map them; a later call with the same files (sizes and mtimes, or CRCs in a zip), transcripts,
    height, max_width and `frames` decodes nothing.

    `frames(width)` is how many CTC frames the model makes of a line that wide. A line Pillow cannot decode,
    or one with fewer frames than its transcript needs (`frames_needed`), raises one `CharRNNError` line
    naming its label line, leaving no cache behind; with `skip_bad` it is dropped and `split`, `kept`,
    `skipped` say which. `progress(done, total)` is called after each line decoded.
    """
    if height < 1 or max_width < 1:
        raise CharRNNError(f"--height {height} and --max-width {max_width} must be at least 1")
    with open_root(split.root) as root:
        key = _cache_key(root, split, height, max_width, frames)
        cached = cache_decoded(cache_path, SideBySide(height), key, len(split),
                               lambda i: _decode_line(root, split, i, height, max_width, frames),
                               skip_bad=skip_bad, progress=progress, none_kept="lines is usable")
    offsets = np.asarray(cached.sidecar["offsets"], dtype=np.int64)
    return LineImages(cached.pixels, offsets, split.subset(cached.kept), cached.kept, cached.skipped, cached.reused)
