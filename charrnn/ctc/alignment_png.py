"""A picture of how a line reader aligned its output: each line image with its best path underneath.

The reader makes one frame per 4 pixel columns. Under the image, each frame's most likely class is drawn
at that frame's position: a character where the path emits one (bold black when it starts a new character,
grey when it repeats the previous frame's, which CTC merges), a small dot for the blank. The collapsed
text is written below, so a user sees where each character was read and which frames were wasted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from charrnn.ctc.config import WIDTH_POOLS

SCALE = 3  # the default font is ~6 px wide: at 3x a 4-pixel frame is 12 px, room for one character
ROW = 14


def _label(ch: str) -> str:
    return {" ": "_", "\t": "\\t"}.get(ch, ch)


def _draw_path(draw: ImageDraw.ImageDraw, top: int, path: list[int], labels: list[str]) -> str:
    """Each frame's class under its columns; returns the collapsed text."""
    step = SCALE * 2 ** WIDTH_POOLS
    text, previous = [], 0
    for t, k in enumerate(path):
        x = t * step + step // 2
        if k == 0:
            draw.point((x, top + ROW // 2), fill=(160, 160, 160))
        else:
            new = k != previous
            draw.text((x, top), _label(labels[k]), fill="black" if new else (170, 170, 170), anchor="ma")
            if new:
                text.append(labels[k])
        previous = k
    return "".join(text)


def alignment_picture(lines: list[tuple[np.ndarray, list[int]]], labels: list[str], path: str | Path) -> Path:
    """Write a PNG for (line pixels (H, W) uint8 with ink high, best class per frame) pairs, one under another."""
    panels = []
    for pixels, frames in lines:
        h, w = pixels.shape
        image = Image.fromarray(255 - pixels).resize((w * SCALE, h * SCALE), Image.Resampling.NEAREST)
        panel = Image.new("RGB", (max(image.width, 40), image.height + 2 * ROW + 6), "white")
        panel.paste(image.convert("RGB"), (0, 0))
        draw = ImageDraw.Draw(panel)
        text = _draw_path(draw, image.height + 2, frames, labels)
        draw.text((2, image.height + ROW + 4), f"read: {text}", fill=(20, 60, 160))
        panels.append(panel)
    canvas = Image.new("RGB", (max(p.width for p in panels), sum(p.height + 8 for p in panels)), "white")
    y = 0
    for panel in panels:
        canvas.paste(panel, (0, y))
        y += panel.height + 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
