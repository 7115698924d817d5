"""The alignment picture: its reading is legible, spaces included."""

import numpy as np
from PIL import Image

from charrnn.ctc.alignment_png import READ_INK, SPACE_BOX, alignment_picture


def test_the_reading_is_legible_and_shows_each_space(tmp_path):
    labels = ["", "a", "b", " "]
    path = [1, 0, 3, 3, 0, 3, 2, 0, 0, 0]  # "a", a space held two frames (one), a blank, another space, "b"
    out = alignment_picture([(np.zeros((32, 40), np.uint8), path)], labels, tmp_path / "align.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    reading = image[32 * 3:]  # under the line image
    ink_rows = np.flatnonzero((reading == READ_INK).all(axis=-1).any(axis=1))
    assert ink_rows.max() - ink_rows.min() >= 14  # "read: a  b" at 20 px, not the 10 px default bitmap font
    boxed = (reading == SPACE_BOX).all(axis=-1).any(axis=0)  # (W,) columns holding a space's box
    starts = np.flatnonzero(boxed[1:] & ~boxed[:-1])
    assert len(starts) == 2 and boxed.sum() >= 2 * 8  # "a  b": two spaces, two boxes, each a letter wide
