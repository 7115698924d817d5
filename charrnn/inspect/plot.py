"""The gate-saturation scatter of a trace, drawn with the SVG primitives of `charrnn.core.svg`."""

from __future__ import annotations

from charrnn.core.svg import COLOURS, Box, axes, circle, document, legend, line, text


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
