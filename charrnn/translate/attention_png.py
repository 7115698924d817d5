"""A picture of how a translator aligned its output with its source: the attention heatmap.

One cell per (output token, source token): its row is the output token being written, its column the
source token attended, white for no weight through to dark blue for all of it (the weight as it is, not
rescaled per row, so a sharp alignment reads as one dark cell and a hesitant one as a pale smear). Source
tokens label the columns along the top, output tokens the rows on the left, the last row the end of the
output "</s>", as in Bahdanau et al. 2015, figure 3: a monotone alignment runs down the diagonal, and a
letter that makes two sounds ("x" -> K S) shows as one column dark in two rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from charrnn.core.files import atomic_write

CELL = 28  # px: a two-letter phone name ("OW") fits upright over its column; a 20-token word stays under 700 px
FONT_SIZE = 14
PAD, GAP = 6, 18  # px around the labels; between two stacked examples
WHITE, DARK = np.array([255, 255, 255]), np.array([8, 48, 107])  # matplotlib's "Blues" ends
GRID, INK, FAINT = (225, 225, 225), (0, 0, 0), (150, 150, 150)
END = "</s>"


def _font() -> ImageFont.FreeTypeFont:
    # DejaVu Sans where the system has it (Debian, Ubuntu, most Linux desktops): the scalable font that
    # Pillow ships (Aileron) covers ASCII only, and the sources and outputs of translation are often not.
    try:
        return ImageFont.truetype("DejaVuSans.ttf", FONT_SIZE)
    except OSError:
        return ImageFont.load_default(size=FONT_SIZE)


def _shown(token: str) -> str:
    # A space is drawn as the open box "␣" by _draw_label (not every font has the glyph); other control
    # characters are spelled out.
    return {"\t": "\\t", "\n": "\\n"}.get(token, token)


def _label_size(token: str, font: ImageFont.FreeTypeFont) -> int:
    return int(np.ceil(font.getlength(_shown(token)))) if token != " " else FONT_SIZE // 2 + 2


def _draw_label(draw: ImageDraw.ImageDraw, x: float, y: float, token: str, font, anchor: str, fill=INK) -> None:
    """`token` anchored at (x, y) as Pillow's `anchor` ("ms": middle, baseline; "rm": right, middle), a space
    as the open box "␣" (a line with two short ticks up), which marks where a space was read or written."""
    if token != " ":
        draw.text((x, y), _shown(token), fill=fill, font=font, anchor=anchor)
        return
    w, h = FONT_SIZE // 2, FONT_SIZE // 4
    left = x - w / 2 if anchor[0] == "m" else x - w
    bottom = y if anchor[1] == "s" else y + h / 2
    draw.line([(left, bottom - h), (left, bottom), (left + w, bottom), (left + w, bottom - h)], fill=fill, width=1)


def _colour(weight: float) -> tuple[int, int, int]:
    w = min(max(float(weight), 0.0), 1.0)
    return tuple(int(round(c)) for c in WHITE + (DARK - WHITE) * w)


def _heatmap(source_tokens: list[str], output_tokens: list[str], attention, font) -> Image.Image:
    """One example's panel: the labels and the grid of cells."""
    weights = np.asarray(attention, dtype=np.float64)
    rows, cols = len(output_tokens) + 1, len(source_tokens)
    if weights.shape != (rows, cols):
        raise ValueError(f"attention of shape {weights.shape}, expected (output tokens + 1, source tokens) = "
                         f"{(rows, cols)}: one row per output token and one for {END}")
    row_labels = [*output_tokens, END]
    left = PAD + max(_label_size(t, font) for t in row_labels) + PAD
    widest = max((_label_size(t, font) for t in source_tokens), default=0)
    upright = widest <= CELL - 3  # characters and phone names fit over their columns; words are turned
    top = PAD + (FONT_SIZE + 4 if upright else widest) + PAD
    panel = Image.new("RGB", (left + cols * CELL + PAD, top + rows * CELL + PAD), "white")
    draw = ImageDraw.Draw(panel)
    for j, token in enumerate(source_tokens):
        x = left + j * CELL + CELL // 2
        if upright:
            _draw_label(draw, x, top - PAD, token, font, anchor="ms")
        else:
            panel.paste(_turned_label(token, font, widest), (x - (FONT_SIZE + 4) // 2, PAD))
    for i, token in enumerate(row_labels):
        y = top + i * CELL + CELL // 2
        _draw_label(draw, left - PAD, y, token, font, anchor="rm", fill=FAINT if i == rows - 1 else INK)
        for j in range(cols):
            x = left + j * CELL
            draw.rectangle([x, top + i * CELL, x + CELL, top + (i + 1) * CELL], fill=_colour(weights[i, j]),
                           outline=GRID)
    return panel


def _turned_label(token: str, font, height: int) -> Image.Image:
    """A label written bottom-to-top (turned 90 degrees), its end against the grid, as a column header."""
    strip = Image.new("RGB", (height, FONT_SIZE + 4), "white")
    _draw_label(ImageDraw.Draw(strip), height, (FONT_SIZE + 4) // 2, token, font, anchor="rm")
    return strip.rotate(90, expand=True)


def attention_pngs(path: str | os.PathLike, items: list[tuple[list[str], list[str], object]]) -> None:
    """Write one PNG of (source tokens, output tokens, attention) examples, their heatmaps stacked top to
    bottom. `attention` is (len(output tokens) + 1, len(source tokens)) weights, anything `np.asarray`
    takes (a numpy array, a CPU tensor, nested lists): one row per output token, the last for "</s>"."""
    if not items:
        raise ValueError("no examples to draw")
    font = _font()
    panels = [_heatmap(source, output, attention, font) for source, output, attention in items]
    canvas = Image.new("RGB", (max(p.width for p in panels), sum(p.height for p in panels) + GAP * (len(panels) - 1)),
                       "white")
    y = 0
    for panel in panels:
        canvas.paste(panel, (0, y))
        y += panel.height + GAP
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:  # a PNG whatever the name's extension
        canvas.save(f, format="PNG")


def attention_png(path: str | os.PathLike, source_tokens: list[str], output_tokens: list[str], attention) -> None:
    """Write the heatmap of one example: see `attention_pngs`."""
    attention_pngs(path, [(source_tokens, output_tokens, attention)])
