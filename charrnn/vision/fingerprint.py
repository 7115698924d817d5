"""A fingerprint of the data an image run trains on, kept in its checkpoints, so that a resume notices a data
set that changed under the run (a caption edited, an image replaced, lines added) instead of quietly training
on other data; the language model does the same for its corpus.

Per split: how many items, a digest of their file names, one of their labels (captions or transcripts, as
read), and one of the files' signatures, the ones the decode caches key on (`DatasetRoot.signature`: size and
CRC in a zip, size and mtime in a directory). Copying or touching a directory changes mtimes but not pixels,
so for a directory the fingerprint also holds a digest of the files' bytes (CRC-32, read when the run starts),
which a resume reads only when the signatures differ. Only the data set's own files are read.
"""

from __future__ import annotations

import hashlib
import json
import zlib

from charrnn.core.errors import CharRNNError
from charrnn.vision.dataset import DatasetRoot, ImageSplit, open_root

CHUNK = 1 << 20


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()[:32]


def _content(root: DatasetRoot, files: list[str]) -> str:
    """A digest of the bytes of `files` (size and CRC-32 of each, as a zip records them)."""
    sums = []
    for name in files:
        crc = size = 0
        try:
            with root.open(name) as f:
                while block := f.read(CHUNK):
                    crc, size = zlib.crc32(block, crc), size + len(block)
        except OSError:
            crc = size = -1
        sums.append([size, crc])
    return _digest(sums)


def split_fingerprint(split: ImageSplit, labels: list, *, content: bool) -> dict:
    """What a split is made of (see the module's docstring); `content`: also digest a directory's bytes."""
    with open_root(split.root) as root:
        fp = {"items": len(split), "names": _digest(split.files), "labels": _digest(labels),
              "files": _digest([root.signature(f) for f in split.files])}
        if root.zip is None and content:
            fp["content"] = _content(root, split.files)
    return fp


def check_fingerprint(saved: dict | None, splits: dict[str, tuple[ImageSplit, list] | None], *, items: str,
                      labels: str) -> dict:
    """The fingerprint of `splits` ({"train": (split, its labels), "val": ... or None}) to keep in the run's
    checkpoints. With `saved`, the fingerprint the run was trained on (None for a run from before fingerprints,
    which resumes as it did), refuse with one line, naming what changed, data that differs from it. `items`
    and `labels` name them for that line ("images", "captions")."""
    if not isinstance(saved, dict):
        return {side: split_fingerprint(*pair, content=True) if pair else None for side, pair in splits.items()}
    out = {}
    for side, pair in splits.items():
        before = saved.get(side)
        now = split_fingerprint(*pair, content=False) if pair else None
        problem = _difference(before, now, pair, items, labels)
        if problem:
            where = f"{str(pair[0].root)!r}" if pair else "the data set"
            what = "training" if side == "train" else "validation"
            raise CharRNNError(f"the {what} data in {where} changed since this run started ({problem}), so resuming "
                               "would train on other data; put the original files back, or start a new run on "
                               "the data as it is now with --out")
        if now is not None and isinstance(before, dict) and "content" in before:
            now["content"] = before["content"]  # checked equal when the signatures differed; else unchanged
        out[side] = now
    return out


def _difference(before, now: dict | None, pair, items: str, labels: str) -> str | None:
    """What differs between a split's fingerprint then and now, in words (None: nothing)."""
    if before is None or now is None:
        return None if before is now else "it has a validation split now" if before is None else "it has none now"
    if not isinstance(before, dict):  # not a fingerprint this reads: nothing to compare
        return None
    if before.get("items") != now["items"]:
        return f"{now['items']} {items} now, {before.get('items')} then"
    if before.get("names") != now["names"]:
        return f"other {items}: some were renamed, added or removed"
    if before.get("labels") != now["labels"]:
        return f"the {labels} were edited"
    if before.get("files") != now["files"]:
        if before.get("content") is None or split_fingerprint(*pair, content=True).get("content") != before["content"]:
            return f"{items} were replaced or edited"
    return None
