"""Opening a dataset's image files with Pillow: what counts as unreadable, how it is told to the user, and
transparency flattened the same way for every task. Each task's decoding recipe (a square RGB image for
captions, an inverted grayscale line for ctc) is built on these and kept beside its cache version.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from charrnn.vision.dataset import BadRow, DatasetRoot

# What Pillow raises on a file that is not an image, is truncated, is corrupt or is absurdly large.
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def flatten(im: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white: convert("RGB") alone would keep whatever colour
    the transparent pixels happen to store (often black), and an emoji's outline would vanish into it."""
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
    detail = " ".join(str(e).split())  # Pillow's messages may span lines; ours are one
    if "truncated" in detail or isinstance(e, EOFError):
        return f"{name} is truncated ({detail}); download or save it again"
    return f"{name} cannot be decoded ({type(e).__name__}: {detail})"


def decode_member(root: DatasetRoot, name: str, origin: tuple[str, int | None],
                  decode: Callable[[BinaryIO], np.ndarray]) -> np.ndarray | BadRow:
    """`decode` applied to file `name` of the dataset, or the bad row (at `origin`, the label line that names
    the file) saying why Pillow could not read it."""
    try:
        with root.open(name) as f:
            return decode(f)
    except UNREADABLE as e:
        return BadRow(*origin, decode_problem(name, e))
