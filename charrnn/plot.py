"""A dependency-free SVG loss curve for a run directory (train loss and validation loss per step)."""

from __future__ import annotations

import json
import math
from pathlib import Path

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 420, 64, 24, 36, 48


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a `metrics.jsonl`, skipping a torn last line."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_curve_svg(records: list[dict], title: str = "charrnn") -> str:
    """An SVG document plotting smoothed train loss and validation loss (nats/char) against step."""
    train = [(r["step"], r["loss"]) for r in records if r.get("kind") == "train" and math.isfinite(r["loss"])]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("kind") == "eval"]
    if train:
        window = max(1, len(train) // 100)
        train = list(zip([s for s, _ in train], _smooth([v for _, v in train], window)))
    points = train + val
    if not points:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}"><text x="20" y="40">no data yet</text></svg>'
    x_max = max(s for s, _ in points) or 1
    ys = [v for _, v in points]
    y_lo, y_hi = min(ys), max(ys)
    if y_hi - y_lo < 1e-6:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def xy(step: float, v: float) -> str:
        return f"{PAD_L + pw * step / x_max:.1f},{PAD_T + ph * (1 - (v - y_lo) / (y_hi - y_lo)):.1f}"

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{_escape(title)}</text>',
             f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for k in range(5):
        v = y_lo + (y_hi - y_lo) * k / 4
        y = PAD_T + ph * (1 - k / 4)
        parts.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{PAD_L + pw}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
        s = x_max * k / 4
        x = PAD_L + pw * k / 4
        parts.append(f'<text x="{x:.1f}" y="{PAD_T + ph + 18}" text-anchor="middle">{int(s)}</text>')
    parts.append(f'<text x="{PAD_L + pw / 2}" y="{H - 8}" text-anchor="middle">step</text>')
    parts.append(f'<text x="14" y="{PAD_T + ph / 2}" transform="rotate(-90 14 {PAD_T + ph / 2})" '
                 'text-anchor="middle">loss (nats/char)</text>')
    if train:
        parts.append('<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="'
                     + " ".join(xy(s, v) for s, v in train) + '"/>')
    if val:
        parts.append('<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="'
                     + " ".join(xy(s, v) for s, v in val) + '"/>')
        for s, v in val:
            x, y = xy(s, v).split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="#d62728"/>')
    parts.append(f'<text x="{PAD_L + pw - 150}" y="{PAD_T + 16}" fill="#1f77b4">— train (smoothed)</text>')
    parts.append(f'<text x="{PAD_L + pw - 150}" y="{PAD_T + 32}" fill="#d62728">— validation</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def write_loss_curve(metrics_path: str | Path, out_path: str | Path, title: str = "charrnn") -> None:
    """Render `metrics.jsonl` to an SVG file next to it."""
    Path(out_path).write_text(loss_curve_svg(read_metrics(metrics_path), title))
