"""The gate-saturation scatter of a trace and the memory curves of `charrnn gradients`, drawn with the SVG
primitives of `charrnn.core.svg`."""

from __future__ import annotations

import math

from charrnn.core.svg import (
    COLOURS,
    PAD_B,
    PAD_L,
    PAD_R,
    PAD_T,
    Box,
    axes,
    circle,
    document,
    legend,
    line,
    polyline,
    text,
)


def saturation_svg(saturation: dict, width: int = 640, height: int = 360) -> str:
    """The gate-saturation scatter of Karpathy, Johnson & Fei-Fei (2015), section 4.3.

    `saturation` is `activations.gate_saturation(trace)`. One square panel per gate, one dot per unit,
    coloured by layer: x = fraction of time left-saturated, y = fraction of time right-saturated. The
    picture is `width` wide and at most `height` tall.
    """
    gates = list(dict.fromkeys(g for layer in saturation.values() for g in layer))  # i, f, o: the cell's order
    if not gates:  # a plain rnn records no gates; an empty picture would look like a failure
        return document(width, height, [text(width / 2, height / 2, "no gates in an rnn cell", anchor="middle",
                                             size=14)])
    panel = width / len(gates)
    size = min(panel - 62, height - 74)  # room for tick labels and the vertical title on the left
    colours = {layer: COLOURS[n % len(COLOURS)] for n, layer in enumerate(saturation)}
    parts = []
    for n, gate in enumerate(gates):
        box = Box(n * panel + 52, 30, size, size)
        parts.append(text(box.left + size / 2, box.top - 12, f"{gate} gate", anchor="middle", size=13))
        parts += axes(box, "fraction left-saturated", "fraction right-saturated", ticks=3, x_format="{:g}",
                      y_format="{:g}")
        parts.append(line(*box.at(0, 0), *box.at(1, 1), "#ddd"))
        for layer, stats in saturation.items():
            if gate in stats:
                parts += [circle(*box.at(left, right), 1.8, colours[layer], opacity=0.6)
                          for left, right in zip(stats[gate]["left"], stats[gate]["right"])]
    parts += legend(58, 44, list(colours.items()), spacing=14)
    return document(width, round(min(height, size + 74)), parts, font_size=11)


MAX_DECADES_BELOW_THRESHOLD = 6  # a curve that vanishes further runs along the bottom edge
DASH = "6 4"  # untrained curves and the threshold


def memory_svg(report: dict, title: str, width: int = 720, height: int = 420) -> str:
    """The curves of `gradients.memory_report`: mean gradient norm against distance k, relative to k = 0, on a
    log scale; one colour per run, its untrained curve dashed in the same colour; the threshold dashed grey,
    with a dot where a curve first falls below it (its memory length)."""
    K, threshold = report["max_distance"], report["threshold"]
    curves = [r for r in report["runs"] if all(math.isfinite(v) for v in r["relative"])]
    shown = [v for r in curves for v in r["relative"] if v > 0]
    bottom = math.floor(math.log10(threshold)) - MAX_DECADES_BELOW_THRESHOLD
    lo = max(bottom, math.floor(math.log10(min(shown + [threshold]))))
    hi = max(0, math.ceil(math.log10(max(shown + [1.0]))))
    step = max(1, math.ceil((hi - lo) / 8))  # decades per tick: at most 9 labels
    lo = hi - step * math.ceil((hi - lo) / step)
    box = Box(PAD_L, PAD_T, width - PAD_L - PAD_R, height - PAD_T - PAD_B, (0, K), (lo, hi))
    parts = [text(width / 2, 20, title, anchor="middle", size=14),
             *axes(box, "distance k (characters back)", "mean |gradient|, relative to k = 0", x_format="{:.0f}",
                   y_format="1e{:.0f}", y_ticks=(hi - lo) // step + 1)]

    def at(k: int, value: float) -> tuple[float, float]:
        return box.at(k, min(max(math.log10(value), lo), hi) if value > 0 else lo)

    _, y_threshold = at(0, threshold)
    parts.append(line(box.left, y_threshold, box.left + box.width, y_threshold, "#888", dash=DASH))
    entries, colour = [], COLOURS[0]
    trained = 0
    for r in report["runs"]:
        if not r["untrained"]:
            colour, trained = COLOURS[trained % len(COLOURS)], trained + 1
        dash = DASH if r["untrained"] else None
        entries.append((f"{'- -' if dash else '—'} {r['name']}", colour))
        if r not in curves:
            continue
        parts.append(polyline([at(k, v) for k, v in enumerate(r["relative"])], colour, dash=dash))
        if r["memory_length"] is not None:
            parts.append(circle(*at(r["memory_length"], r["relative"][r["memory_length"]]), 3, colour))
    entries.append((f"- - threshold {threshold:g} (dots: memory lengths)", "#888"))  # a label on the line meets curves
    widest = max((len(label) for label, _ in entries), default=0) * 7  # pixels, about, at the default 12 px
    parts += legend(max(box.left + 8, box.left + box.width - 8 - widest), box.top + 18, entries)
    return document(width, height, parts)
