"""`charrnn viz`: one self-contained HTML page to look at what each cell does.

The text is drawn character by character, coloured by the chosen cell on a scale that shows its signal
(blue low, red high, as in Karpathy, Johnson & Fei-Fei 2015): cell states centred on their mean or through
tanh, gates on 0 to 1. Any embedded cell can be picked by name; the top cells of every probe are one click
away; selecting a span of text ranks the cells that are on over it and off around it, and match search finds
the other places where those cells are on together (the two core views of LSTMVis, Strobelt et al. 2017);
several cells can be drawn at once as heatmap rows under the text; hovering a character shows the cell's
value, the true next character with its probability and the model's top guesses. A trace with saliency
(`dump --saliency`) also lights up, on hover, the earlier characters the prediction of the hovered character
used (`saliency_data`); a click holds them.

Everything (data, script, style) is inside the file: it opens offline, with no network. The page's script
and style are `viewer.js` and `viewer.css` beside this module; the data is one JSON object (see `page_data`)
whose series are 8-bit codes, unit after unit, in base64.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from importlib.resources import files

import numpy as np

from charrnn.core.errors import CharRNNError
from charrnn.inspect.activations import SIGMOID_GATES, Trace
from charrnn.inspect.probes import MIN_GAIN, PROBES, best_probe_cell, rank_cells
from charrnn.inspect.saliency import Saliency

# The page embeds every recorded kind while it holds at most this many values (1 byte each, 4/3 in base64),
# else only h and c: a 1x128 LSTM with all six kinds fits 20,000 characters.
MAX_EMBEDDED_VALUES = 16_000_000
_CELL_NAME = re.compile(r"layer(\d+)/([a-z])/(\d+)")


def cell_name(layer: int, kind: str, unit: int) -> str:
    """The name `charrnn cells` prints and the page's picker reads: layer0/c/110."""
    return f"layer{layer}/{kind}/{unit}"


def parse_cell(name: str, trace: Trace) -> tuple[int, str, int]:
    """(layer, kind, unit) of a cell named like `layer0/c/110`, checked against the trace."""
    match = _CELL_NAME.fullmatch(name.strip())
    layers, recorded, units = len(trace.layers), list(trace.layers[0]), trace.layers[0]["h"].shape[1]
    shape = (f"this {trace.cell} has {layers} layer(s) (layer0..layer{layers - 1}) of {units} units (0..{units - 1}), "
             f"kinds {', '.join(recorded)}")
    if match is None:
        raise CharRNNError(f"--cell {name!r}: name a cell as layerL/kind/unit, e.g. layer0/h/0; {shape}")
    l, k, u = int(match[1]), match[2], int(match[3])
    if l >= layers or k not in recorded or u >= units:
        raise CharRNNError(f"--cell {name}: no such cell; {shape}")
    return l, k, u


def default_kinds(trace: Trace, chars: int) -> tuple[str, ...]:
    """Every recorded kind if the page stays under MAX_EMBEDDED_VALUES, else h and c (of an LSTM)."""
    recorded = tuple(trace.layers[0])
    units = sum(v.shape[1] for layer in trace.layers for v in layer.values())
    if chars * units <= MAX_EMBEDDED_VALUES:
        return recorded
    return tuple(k for k in ("h", "c") if k in recorded)


def quantise(values: np.ndarray) -> dict:
    """(T, U) values as 8-bit codes, unit after unit: value ~= lo + code / 255 * (hi - lo), per unit.

    Also each unit's mean and standard deviation (of the float values), which the page centres on.
    """
    # In float32 whatever the dump's dtype; a float16 cell state past 65504 reads inf, shown as 0, not a broken page.
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)  # (T, U)
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    codes = np.round((v - lo) / span * 255).astype(np.uint8)  # (T, U)
    return {"lo": lo.tolist(), "hi": hi.tolist(), "mean": v.mean(axis=0, dtype=np.float64).tolist(),
            "std": v.std(axis=0, dtype=np.float64).tolist(),
            "b64": base64.b64encode(np.ascontiguousarray(codes.T).tobytes()).decode("ascii")}


def _blocks(window: Trace, kinds: Sequence[str], extra: Sequence[tuple[int, str, int]]) -> list[dict]:
    """The embedded series: every unit of `kinds` in every layer, and the `extra` cells of other kinds."""
    blocks = []
    for l, layer in enumerate(window.layers):
        for k, values in layer.items():
            units = list(range(values.shape[1])) if k in kinds else sorted({u for el, ek, u in extra
                                                                          if (el, ek) == (l, k)})
            if units:
                # The rows shown, read at once (not a column at a time, which a memory map would make slow).
                rows = np.asarray(values, dtype=np.float32)
                blocks.append({"layer": l, "kind": k, "units": units, **quantise(rows[:, units])})
    return blocks


def saliency_data(saliency: Saliency) -> dict:
    """What the page needs to light up the characters each prediction used, in base64: for every position, its
    N distances k (uint8, or little-endian uint16 when `wide`), its N values as signed 8-bit codes relative to
    the position's largest |s| (s ~= code / 127 * scale; 0 where there is no entry), and that scale (float32)."""
    values = np.asarray(saliency.values, dtype=np.float32)  # (T, N)
    values = np.where(np.isfinite(values), values, 0.0)  # no entry (NaN) shows nothing
    scale = np.abs(values).max(axis=1) if values.size else np.zeros(len(values), np.float32)  # (T,)
    codes = np.round(values / np.where(scale > 0, scale, 1.0)[:, None] * 127).astype(np.int8)  # (T, N)
    wide = saliency.offsets.dtype.itemsize > 1
    offsets = np.asarray(saliency.offsets, dtype="<u2" if wide else np.uint8)

    def b64(a: np.ndarray) -> str:
        return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")

    return {"window": saliency.window, "top": saliency.top, "wide": wide, "offsets": b64(offsets),
            "codes": b64(codes), "scale": b64(scale.astype("<f4"))}


def _probe_notes() -> dict[str, str]:
    """What each probe measures: the first line of its function's docstring."""
    return {name: (probe.__doc__ or name).strip().splitlines()[0] for name, probe in PROBES.items()}


def _rounded(values: np.ndarray, digits: int = 4) -> list:
    """A float array as a JSON list, NaN as null."""
    return [None if np.isnan(x) else x for x in np.round(np.asarray(values, dtype=np.float64), digits).ravel().tolist()]


def page_data(trace: Trace, *, max_chars: int | None = None, kinds: Sequence[str] | None = None, top: int = 5,
              title: str = "charrnn cells", ranking: dict | None = None, ranked_chars: int | None = None,
              cell: str | None = None) -> dict:
    """Everything the page shows, as one JSON-ready dict. See `render_html`."""
    window = trace.head(trace.length if max_chars is None else max_chars)  # of a memory-mapped trace, only these rows
    if ranking is None:
        ranking, ranked_chars = rank_cells(window, top=top), window.length
    kinds = default_kinds(window, window.length) if kinds is None else tuple(kinds)
    extra = [(r["layer"], r["kind"], r["unit"]) for rows in ranking["probes"].values() for r in rows]
    if cell is not None:
        first, note = parse_cell(cell, window), ""
    else:
        first, note = _opening_cell(ranking, kinds[0] if kinds else "h")
    extra.append(first)
    initial = cell_name(*first)
    return {
        "title": title, "cell_type": window.cell, "num_layers": len(window.layers),
        "hidden_size": window.layers[0]["h"].shape[1], "recorded": list(window.layers[0]), "kinds": list(kinds),
        "sigmoid": [k for k in window.layers[0] if k in SIGMOID_GATES],
        "chars": window.chars, "vocab": window.vocabulary, "top_k": int(window.top_ids.shape[1]),
        "top_ids": window.top_ids.ravel().tolist(), "top_probs": _rounded(window.top_probs),
        "next_prob": _rounded(window.next_prob),
        "series": _blocks(window, kinds, extra),
        "probes": ranking["probes"], "constant": ranking["constant"], "probe_notes": _probe_notes(),
        "ranked_chars": ranked_chars or trace.length, "initial": initial, "initial_note": note, "min_gain": MIN_GAIN,
        "saliency": saliency_data(window.saliency) if window.saliency is not None else None,
    }


def _opening_cell(ranking: dict, first_kind: str) -> tuple[tuple[int, str, int], str]:
    """The cell a page opens on, and why: the cell that tracks a probe best beyond its base rate (a probe
    with no signal in the text, such as quotes in Python source, is passed over); else the first cell."""
    found = best_probe_cell(ranking)
    if found is None:
        return (0, first_kind, 0), (f"No probe's cell beats its base rate by {MIN_GAIN:g} in this text, so the page "
                                    "opens on the first cell: select text to find the cells that track it.")
    probe, r = found
    return (r["layer"], r["kind"], r["unit"]), (f"Opened on the cell that tracks {probe} best: accuracy "
                                                f"{r['accuracy']:.3f} against a base rate of {r['base_rate']:.3f}.")


def render_html(trace: Trace, *, max_chars: int | None = None, kinds: Sequence[str] | None = None, top: int = 5,
                title: str = "charrnn cells", ranking: dict | None = None, ranked_chars: int | None = None,
                cell: str | None = None) -> str:
    """The page for the first `max_chars` characters of a trace (all if None).

    `kinds` are the series embedded for every unit of every layer (default: `default_kinds`); the top cells
    of every probe and `cell` are embedded whatever their kind. `ranking` (what `probes.rank_cells`
    returned, over `ranked_chars` characters) is shown as it is, so the page agrees with the table of
    `charrnn cells`; without it, the `top` cells per probe are ranked on the characters shown. The page
    opens on `cell` (a name like `layer0/c/110`), else on the ranked cell whose threshold accuracy beats its
    probe's base rate by the most (`probes.best_probe_cell`), else on the first cell, with a note saying so.
    """
    return html_page(page_data(trace, max_chars=max_chars, kinds=kinds, top=top, title=title, ranking=ranking,
                               ranked_chars=ranked_chars, cell=cell))


def html_page(data: dict) -> str:
    """The page showing `data` (what `page_data` returned)."""
    # "<" escaped everywhere, so nothing in the text (a "</script>", a "<!--") can end the script element.
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    assets = files("charrnn.inspect")
    parts = {"TITLE": html.escape(data["title"]), "STYLE": (assets / "viewer.css").read_text(encoding="utf-8"),
             "SCRIPT": (assets / "viewer.js").read_text(encoding="utf-8"), "DATA": payload}
    return re.sub(r"__(TITLE|STYLE|SCRIPT|DATA)__", lambda m: parts[m[1]], _PAGE)  # one pass: nothing is replaced twice


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
__STYLE__
</style></head><body>
<div id="side">
<h1 id="title">__TITLE__</h1>
<p id="subtitle" class="hint"></p>

<section>
<label for="pick">Cell <span class="hint">(layer/kind/unit, as <code>charrnn cells</code> prints)</span></label>
<div class="row"><button id="prev" title="previous unit" aria-label="previous unit">&#9664;</button>
<input id="pick" list="cells" autocomplete="off" spellcheck="false">
<button id="next" title="next unit" aria-label="next unit">&#9654;</button></div>
<datalist id="cells"></datalist>
<div id="pickmsg" role="alert"></div>
<div id="opennote" class="hint"></div>
<label for="scale">Colour scale</label>
<select id="scale">
<option value="auto">auto: states centred, gates 0 to 1</option>
<option value="centred">centred on the mean, &plusmn;2 sd</option>
<option value="tanh">tanh: c through tanh, gates 0 to 1</option>
<option value="raw">raw: white at 0, &plusmn; largest |value|</option>
</select>
<div id="bar"><div id="barmark"></div></div>
<div id="barlabels"><span id="barlo"></span><span id="barmid"></span><span id="barhi"></span></div>
<div id="legend" class="hint"></div>
</section>

<section id="usedsection" hidden>
<h2>What each prediction used</h2>
<p class="hint" id="usedhint"></p>
<div id="usedinfo" aria-live="polite"></div>
</section>

<section>
<h2>Select text to find its cells</h2>
<p class="hint">Drag over a span of the text. Cells are ranked by how much more often they are <em>on</em>
(coloured past the threshold, red or blue) inside the span than in the context around it, as in LSTMVis.</p>
<div class="row"><label for="threshold">on past</label>
<input id="threshold" type="range" min="0" max="0.95" step="0.05" value="0.3">
<output id="thresholdout">0.30</output></div>
<div class="row"><label for="context">context each side</label>
<input id="context" type="number" min="1" placeholder="selection's length"></div>
<div id="selinfo" class="hint"></div>
<table id="selrank"></table>
<div id="selactions" class="row" hidden>
<button id="stacksel" title="draw the checked cells as heatmap rows under the text">rows under text</button>
<button id="matchbtn" title="find where all the checked cells are on together">find matches</button>
<label for="minlen">min</label><input id="minlen" type="number" min="1" title="shortest match, in characters"></div>
<div id="matchinfo" class="hint"></div>
<ol id="matches"></ol>
</section>

<section id="rowsection" hidden>
<h2>Rows under each character</h2>
<ol id="rows"></ol>
<button id="clearrows">clear rows</button>
</section>

<section>
<h2>Probes</h2>
<p class="hint" id="probehint"></p>
<div id="probes"></div>
</section>

<details>
<summary>What the names mean</summary>
<div id="glossary"></div>
</details>
</div>
<div id="main"><div id="text"></div></div>
<div id="tip" role="tooltip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
__SCRIPT__
</script></body></html>
"""
