"""A picture of how a line reader aligned its output: each line image with its best path underneath.

The reader makes one frame per 4 pixel columns. Under the image, each frame's most likely class is drawn
at that frame's position: a character where the path emits one (bold black when it starts a new character,
grey when it repeats the previous frame's, which CTC merges), a small dot for the blank. The collapsed
text is written below in a legible size, each space drawn as a pale box one letter wide (a space in a
proportional font is a few pixels, and a missing or doubled space is a common reading error), so a user sees
where each character was read, which frames were wasted and what was read.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from charrnn.core.files import atomic_write
from charrnn.ctc.config import WIDTH_POOLS

SCALE = 3  # the default font is ~6 px wide: at 3x a 4-pixel frame is 12 px, room for one character
ROW = 14
READ_SIZE = 20  # px, the reading's font (Pillow's own scalable font): spaces and punctuation legible
READ_INK, SPACE_BOX = (20, 60, 160), (200, 215, 245)


def _label(ch: str) -> str:
    return {" ": "_", "\t": "\\t"}.get(ch, ch)


def _draw_path(draw: ImageDraw.ImageDraw, top: int, path: list[int], labels: list[str]) -> None:
    """Each frame's class under its columns."""
    step = SCALE * 2 ** WIDTH_POOLS
    previous = 0
    for t, k in enumerate(path):
        x = t * step + step // 2
        if k == 0:
            draw.point((x, top + ROW // 2), fill=(160, 160, 160))
        else:
            draw.text((x, top), _label(labels[k]), fill="black" if k != previous else (170, 170, 170), anchor="ma")
        previous = k


def _draw_reading(draw: ImageDraw.ImageDraw, top: int, text: str, font) -> None:
    """`read: TEXT` at `top`, character by character, each space as a pale box as wide as an "n"."""
    draw.text((4, top), "read:", fill=READ_INK, font=font)
    x = 4 + font.getlength("read: ")
    _, box_top, box_width, box_bottom = font.getbbox("n")
    for ch in text:
        if ch == " ":
            draw.rectangle([x + 1, top + box_top, x + box_width - 1, top + box_bottom], fill=SPACE_BOX)
            x += box_width
        else:
            draw.text((x, top), _label(ch), fill=READ_INK, font=font)
            x += font.getlength(_label(ch))


def _reading_width(text: str, font) -> int:
    box_width = font.getbbox("n")[2]
    return int(8 + font.getlength("read: ") + sum(box_width if ch == " " else font.getlength(_label(ch))
                                                  for ch in text))


def alignment_picture(lines: list[tuple[np.ndarray, list[int]]], labels: list[str], path: str | Path) -> Path:
    """Write a PNG for (line pixels (H, W) uint8 with ink high, best class per frame) pairs, one under another."""
    font = ImageFont.load_default(size=READ_SIZE)
    panels = []
    for pixels, frames in lines:
        h, w = pixels.shape
        image = Image.fromarray(255 - pixels).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST)
        text = "".join(labels[k] for k, _ in groupby(frames) if k != 0)  # CTC's collapse: what was read
        panel = Image.new("RGB", (max(image.width, 40, _reading_width(text, font)),
                                  image.height + ROW + READ_SIZE + 14), "white")
        panel.paste(image.convert("RGB"), (0, 0))
        draw = ImageDraw.Draw(panel)
        _draw_path(draw, image.height + 2, frames, labels)
        _draw_reading(draw, image.height + ROW + 6, text, font)
        panels.append(panel)
    canvas = Image.new("RGB", (max(p.width for p in panels), sum(p.height + 8 for p in panels)), "white")
    y = 0
    for panel in panels:
        canvas.paste(panel, (0, y))
        y += panel.height + 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:  # a PNG whatever the name's extension
        canvas.save(f, format="PNG")
    return path
