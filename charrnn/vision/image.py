"""Opening image files with Pillow: the largest image decoded, what counts as unreadable, how it is told to
the user, and 16-bit grey and transparency flattened the same way for every task. Each task's decoding
recipe (a square RGB image for captions, an inverted grayscale line for ctc) is built on these and kept
beside its cache version.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from PIL import Image, UnidentifiedImageError

from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow
from charrnn.vision.dataset import DatasetRoot, ImageSplit, open_root

# The most pixels (width x height) charrnn decodes; checked from the header, before any pixel is decoded.
# Ours rather than Pillow's MAX_IMAGE_PIXELS (89.5 Mpx, warned about on stderr, refused at twice that) so that
# what a dataset accepts does not move with Pillow: 100 Mpx admits the photos of every phone and nearly every
# camera and costs at most ~0.8 GB while decoding, where a single-colour 30000x30000 PNG of under a megabyte
# (a decompression bomb) would take 2.7 GB as grey, 3.6 GB as RGB.
MAX_PIXELS = 100_000_000


class TooManyPixels(ValueError):
    """An image larger than MAX_PIXELS; `size` is (width, height), or None where Pillow refused it on opening
    and said only its pixel count."""

    def __init__(self, pixels: int, size: tuple[int, int] | None):
        super().__init__(f"{pixels} pixels")
        self.pixels, self.size = pixels, size


# What Pillow raises on a file that is not an image, is truncated, is corrupt or is absurdly large.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)
T = TypeVar("T")


@contextlib.contextmanager
def open_image(fp: BinaryIO | str | os.PathLike) -> Iterator[Image.Image]:
    """`Image.open`, which reads only the header, refusing an image above MAX_PIXELS (`TooManyPixels`) before
    anything is decoded. Pillow's DecompressionBombWarning (its own limit, below ours) is not printed: the
    limit that applies is MAX_PIXELS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(fp)
        except Image.DecompressionBombError as e:  # above twice Pillow's limit, refused before we see the size
            count = re.search(r"\((\d+) pixels\)", str(e))
            raise TooManyPixels(int(count.group(1)) if count else MAX_PIXELS + 1, None) from None
        with im:
            if im.width * im.height > MAX_PIXELS:
                raise TooManyPixels(im.width * im.height, im.size)
            yield im


def eight_bit(im: Image.Image) -> Image.Image:
    """16-bit grey (mode I;16*, or I as older Pillow opens such a PNG) scaled to 8-bit L; convert("L") or
    convert("RGB") would clip every level above 255 to white, and a whole image to pure white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return im.convert("I").point(lambda v: v / 256).convert("L")
    return im


def flatten(im: Image.Image) -> Image.Image:
    """RGB, 16-bit grey scaled to 8 bits (`eight_bit`), with any transparency composited over white:
    convert("RGB") alone would keep whatever colour the transparent pixels happen to store (often black),
    and an emoji's outline would vanish into it."""
    im = eight_bit(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def decode_problem(name: str, e: Exception) -> str:
    """What is wrong with image `name`, from what Pillow (or opening it) raised, in one line."""
    if isinstance(e, FileNotFoundError):
        return f"{name} does not exist"
    if isinstance(e, UnidentifiedImageError):
        return f"{name} is not an image Pillow can read"
    if isinstance(e, TooManyPixels):
        size = f"{e.size[0]}x{e.size[1]} = {e.pixels:,} pixels" if e.size else f"{e.pixels:,} pixels"
        return (f"{name} is {size}, more than the {MAX_PIXELS:,} charrnn decodes (an image that large is a "
                "decompression bomb or far more than a model sees); shrink it")
    detail = " ".join(str(e).split())  # Pillow's messages may span lines; ours are one
    if "truncated" in detail or isinstance(e, EOFError):
        return f"{name} is truncated ({detail}); download or save it again"
    return f"{name} cannot be decoded ({type(e).__name__}: {detail})"


def decode_member(root: DatasetRoot, name: str, origin: tuple[str, int | None],
                  decode: Callable[[BinaryIO], T]) -> T | BadRow:
    """`decode` applied to file `name` of the dataset, or the bad row (at `origin`, the label line that names
    the file) saying why Pillow could not read it."""
    try:
        with root.open(name) as f:
            return decode(f)
    except UNREADABLE as e:
        return BadRow(*origin, decode_problem(name, e))


def read_image_file(path: str | os.PathLike, decode: Callable[[BinaryIO], T]) -> T:
    """`decode` applied to an image file named on the command line, or one `CharRNNError` line saying why
    it cannot be read (missing, not an image, truncated, too large)."""
    try:
        with open(path, "rb") as f:
            return decode(f)
    except FileNotFoundError:
        raise CharRNNError(f"no such image: {str(path)!r}") from None
    except UNREADABLE as e:
        raise CharRNNError(decode_problem(repr(str(path)), e)) from None


def _load(f: BinaryIO) -> None:
    with open_image(f) as im:
        im.draft(None, (1, 1))  # a JPEG at 1/8 scale: every byte is still read, so a truncated one still fails
        im.load()


def undecodable(splits: list[ImageSplit]) -> list[BadRow]:
    """The items of `splits` whose image Pillow cannot decode, as bad rows at their label lines.

    Decoding every image (a JPEG at 1/8 scale), this costs about what caching them does; a reader calls it
    only when it already has bad rows to report, so that one error lists the label files' problems and the
    images' together instead of the second only after the first are fixed."""
    bad = []
    for split in splits:
        with open_root(split.root) as root:
            for name, origin in zip(split.files, split.origins):
                if isinstance(problem := decode_member(root, name, origin, _load), BadRow):
                    bad.append(problem)
    return bad
