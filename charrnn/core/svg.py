"""Dependency-free SVG: the primitives every plot uses (a document, a plotting box with axes, text, lines, dots)
and the loss curve of a run; `inspect/plot.py` draws the gate-saturation scatter and the memory curves with them.

The only user text in a plot (a title, a layer name) goes through `_escape`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 420, 64, 24, 36, 48
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
# Characters XML 1.0 does not allow in a document (C0 controls but tab and line breaks, lone surrogates, ...).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# ----- SVG helpers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Box:
    """A plotting area in pixels and the data ranges it shows."""

    left: float
    top: float
    width: float
    height: float
    x_range: tuple[float, float] = (0.0, 1.0)
    y_range: tuple[float, float] = (0.0, 1.0)

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def at(self, x: float, y: float) -> tuple[float, float]:
        """The pixel of data point (x, y); y grows upwards."""
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return self.left + self.width * (x - x0) / (x1 - x0), self.top + self.height * (1 - (y - y0) / (y1 - y0))


def _escape(s: str) -> str:
    return _NOT_XML.sub("\ufffd", s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def document(width: int, height: int, elements: list[str], font_size: int = 12) -> str:
    """A standalone SVG document: a white background, then `elements` in order."""
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                      f'font-family="sans-serif" font-size="{font_size}">',
                      f'<rect width="{width}" height="{height}" fill="white"/>', *elements, "</svg>"])


def text(x: float, y: float, content: str, anchor: str = "start", size: int | None = None,
         fill: str | None = None, vertical: bool = False) -> str:
    """A line of text at (x, y); `vertical` turns it a quarter to the left, around (x, y)."""
    extra = (f' font-size="{size}"' if size else "") + (f' fill="{fill}"' if fill else "")
    if vertical:
        extra += f' transform="rotate(-90 {x:.1f} {y:.1f})"'
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{_escape(content)}</text>'


def _dashed(dash: str | None) -> str:
    return f' stroke-dasharray="{dash}"' if dash else ""


def line(x1: float, y1: float, x2: float, y2: float, colour: str, dash: str | None = None) -> str:
    """A line; `dash` is an SVG dash pattern ("6 4": 6 pixels drawn, 4 left out), None for a solid one."""
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}"{_dashed(dash)}/>'


def polyline(points: list[tuple[float, float]], colour: str, width: float = 1.5, dash: str | None = None) -> str:
    return (f'<polyline fill="none" stroke="{colour}" stroke-width="{width}"{_dashed(dash)} points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in points) + '"/>')


def circle(x: float, y: float, r: float, colour: str, opacity: float = 1.0) -> str:
    alpha = f' fill-opacity="{opacity}"' if opacity < 1 else ""
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}"{alpha}/>'


def axes(box: Box, x_label: str, y_label: str, ticks: int = 5, x_format: str = "{:.0f}",
         y_format: str = "{:.2f}", y_ticks: int | None = None) -> list[str]:
    """Grid lines, the frame of `box`, `ticks` evenly spaced values labelled on each axis (`y_ticks` on the
    vertical one where given), both axis titles."""
    (x0, x1), (y0, y1) = box.x_range, box.y_range
    parts, labels = [], []
    y_ticks = y_ticks or ticks
    for k in range(max(ticks, y_ticks)):
        if k < y_ticks:
            y_value = y0 + (y1 - y0) * k / (y_ticks - 1)
            _, py = box.at(x0, y_value)
            parts.append(line(box.left, py, box.left + box.width, py, "#eee"))
            labels.append(text(box.left - 6, py + 4, y_format.format(y_value), anchor="end"))
        if k < ticks:
            x_value = x0 + (x1 - x0) * k / (ticks - 1)
            px, _ = box.at(x_value, y0)
            labels.append(text(px, box.bottom + 16, x_format.format(x_value), anchor="middle"))
    parts.append(f'<rect x="{box.left:.1f}" y="{box.top:.1f}" width="{box.width:.1f}" height="{box.height:.1f}" '
                 'fill="none" stroke="#999"/>')
    return [*parts, *labels, text(box.left + box.width / 2, box.bottom + 34, x_label, anchor="middle"),
            text(box.left - 44, box.top + box.height / 2, y_label, anchor="middle", vertical=True)]


def legend(x: float, y: float, entries: list[tuple[str, str]], spacing: float = 16) -> list[str]:
    """(label, colour) entries, one under the other, the first with its baseline at y."""
    return [text(x, y + spacing * k, label, fill=colour) for k, (label, colour) in enumerate(entries)]


# ----- the plots ------------------------------------------------------------------------------------

def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _series(records: list[dict], kind: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of the records of `kind`, skipping any a hand edit or a torn line left malformed."""
    out = []
    for r in records:
        step, value = r.get("step"), r.get(key)
        if (r.get("kind") == kind and isinstance(step, int) and isinstance(value, (int, float))
                and math.isfinite(value)):
            out.append((step, float(value)))
    return out


def loss_curve_svg(records: list[dict], title: str = "charrnn") -> str:
    """An SVG document plotting smoothed train loss and validation loss (nats/char) against step."""
    train, val = _series(records, "train", "loss"), _series(records, "eval", "val_loss")
    if train:
        window = max(1, len(train) // 100)
        train = list(zip([s for s, _ in train], _smooth([v for _, v in train], window)))
    points = train + val
    if not points:
        return document(W, H, [text(20, 40, "no data yet")])
    ys = [v for _, v in points]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-6:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    box = Box(PAD_L, PAD_T, W - PAD_L - PAD_R, H - PAD_T - PAD_B, (0, max(s for s, _ in points) or 1), (y_lo, y_hi))
    parts = [text(W / 2, 20, title, anchor="middle", size=14), *axes(box, "step", "loss (nats/char)")]
    if train:
        parts.append(polyline([box.at(s, v) for s, v in train], COLOURS[0]))
    if val:
        parts.append(polyline([box.at(s, v) for s, v in val], COLOURS[1]))
        parts += [circle(*box.at(s, v), 3, COLOURS[1]) for s, v in val]
    parts += legend(box.left + box.width - 150, box.top + 16,
                    [("— train (smoothed)", COLOURS[0]), ("— validation", COLOURS[1])])
    return document(W, H, parts)


