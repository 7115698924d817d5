"""A picture of where a captioner looked: for each generated token, its attention over the image.

One row per image (wrapped every `per_row` tiles): the image itself, then one tile per token, the image
dimmed where the model did not attend and bright where it did, the token written underneath.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from charrnn.core.files import atomic_write

TILE, LABEL = 96, 18


def _tile(image: np.ndarray, weights: np.ndarray | None) -> Image.Image:
    """The image at tile size, lit by attention `weights` (h, w) scaled so the most attended cell is full."""
    picture = Image.fromarray(image).resize((TILE, TILE), Image.Resampling.LANCZOS)
    if weights is None:
        return picture
    heat = Image.fromarray((255 * weights / max(float(weights.max()), 1e-8)).astype(np.uint8))
    heat = np.asarray(heat.resize((TILE, TILE), Image.Resampling.BILINEAR), dtype=np.float32)[:, :, None] / 255
    lit = np.asarray(picture, dtype=np.float32) * (0.15 + 0.85 * heat)  # unattended regions stay faintly visible
    return Image.fromarray(lit.astype(np.uint8))


def _label(token: str) -> str:
    return {" ": "_", "\n": "\\n", "": "<end>"}.get(token, token)  # the default font has no ␣ or ↵


def attention_grid(pictures: list[tuple[np.ndarray, list[str], torch.Tensor | None]], path: str | Path,
                   per_row: int = 12) -> Path:
    """Write a PNG for (image (S, S, 3), tokens, attention (len(tokens) + 1, N)) triples; the last attention
    row is the one that chose the end of the caption."""
    rows = []
    for image, tokens, attention in pictures:
        side = int(math.isqrt(attention.shape[1])) if attention is not None else 0
        tiles = [(_tile(image, None), "image")]
        for t, token in enumerate([*tokens, ""]):
            weights = attention[t].reshape(side, side).numpy() if attention is not None and t < len(attention) else None
            tiles.append((_tile(image, weights), _label(token)))
        rows += [tiles[k:k + per_row] for k in range(0, len(tiles), per_row)]
    width = TILE * max(len(r) for r in rows)
    canvas = Image.new("RGB", (width, (TILE + LABEL) * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, tiles in enumerate(rows):
        for c, (tile, label) in enumerate(tiles):
            x, y = c * TILE, r * (TILE + LABEL)
            canvas.paste(tile, (x, y))
            draw.text((x + TILE // 2, y + TILE + 2), label, fill="black", anchor="ma")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:  # a PNG whatever the name's extension
        canvas.save(f, format="PNG")
    return path
