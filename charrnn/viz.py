"""`charrnn viz`: one self-contained HTML page to look at what each cell does.

The text is drawn character by character, coloured by the chosen cell's activation (blue negative, red
positive, as in Karpathy, Johnson & Fei-Fei 2015); a picker with search selects any cell; the top
cells of every probe are one click away; hovering a character shows the model's top-5 guesses for the
next one. Everything (data, script, style) is inside the file: it opens offline, with no network.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np

from charrnn.activations import Trace
from charrnn.probes import rank_cells


def _quantise(values: np.ndarray) -> tuple[str, float]:
    """int8 codes (base64) and the scale that maps them back: value ~= code / 127 * scale."""
    # In float32 whatever the dump's dtype; a float16 cell state past 65504 reads inf, shown as 0, not a broken page.
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    scale = float(np.abs(values).max()) or 1.0
    codes = np.clip(np.round(values / scale * 127), -127, 127).astype(np.int8)
    return base64.b64encode(codes.tobytes()).decode("ascii"), scale


def render_html(trace: Trace, max_chars: int = 3000, kinds: tuple[str, ...] = ("h", "c"), top: int = 5,
                title: str = "charrnn cells", *, ranking: dict | None = None) -> str:
    """The page for the first `max_chars` characters of a trace, showing the `kinds` series of every layer.

    `ranking` (what `probes.rank_cells` returned) gives the top cells per probe, shown as they are, so the
    page agrees with the table of `charrnn cells`, which ranks every character analysed and not only those
    shown. Without it, the `top` cells per probe are ranked on the characters shown.
    """
    window = trace.head(max_chars)  # of a memory-mapped trace, only these rows are ever read
    if ranking is None:
        ranking = rank_cells(window, top=top)
    series = {}
    for l, layer in enumerate(window.layers):
        for k, values in layer.items():
            if k not in kinds:
                continue
            values = np.array(values, dtype=np.float32)  # the rows shown, read at once (not a column at a time)
            for u in range(values.shape[1]):
                series[f"layer{l}/{k}/{u}"] = _quantise(values[:, u])
    for name, rows in ranking["probes"].items():  # a probe's top cells are shown even if of another kind
        for r in rows:
            key = f"layer{r['layer']}/{r['kind']}/{r['unit']}"
            if key not in series:
                series[key] = _quantise(window.layers[r["layer"]][r["kind"]][:, r["unit"]])
    data = {
        "chars": window.chars,
        "vocab": window.vocabulary,
        "top_ids": window.top_ids.tolist(),
        "top_probs": np.round(window.top_probs, 3).tolist(),
        "series": {k: {"b64": b, "scale": s} for k, (b, s) in series.items()},
        "probes": ranking["probes"],
        "constant": ranking["constant"],
        "cell": window.cell,
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#side{width:300px;overflow:auto;border-right:1px solid #ccc;padding:10px;box-sizing:border-box;font-size:13px}
#main{flex:1;overflow:auto;padding:14px}
#text{font-family:ui-monospace,monospace;font-size:14px;line-height:1.6;white-space:pre-wrap;word-break:break-all}
#text span{border-radius:2px}
.probe{margin:8px 0 2px;font-weight:600}
button.cellbtn{font:12px ui-monospace,monospace;margin:1px;cursor:pointer;border:1px solid #bbb;background:#f7f7f7}
button.cellbtn.active{background:#333;color:#fff}
#tip{position:fixed;display:none;background:#222;color:#eee;font:12px ui-monospace,monospace;padding:6px 8px;border-radius:4px;pointer-events:none;white-space:pre}
#legend{margin:6px 0 12px;font-size:12px;color:#555}
input{width:100%;box-sizing:border-box}
</style></head><body>
<div id="side">
<h3 style="margin:4px 0">__TITLE__</h3>
<label>cell (layer/kind/unit) <input id="pick" list="cells" placeholder="search, e.g. layer1/h/42"></label>
<datalist id="cells"></datalist>
<div id="legend"></div>
<div id="probes"></div>
</div>
<div id="main"><div id="text"></div></div>
<div id="tip"></div>
<script id="data" type="application/json">__DATA__</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("data").textContent);
const names = Object.keys(D.series);
const cache = {};
function values(name) {
  if (cache[name]) return cache[name];
  const s = D.series[name], raw = atob(s.b64), out = new Float32Array(raw.length);
  for (let i = 0; i < raw.length; i++) { let b = raw.charCodeAt(i); if (b > 127) b -= 256; out[i] = b / 127; }
  return (cache[name] = out);
}
const text = document.getElementById("text"), tip = document.getElementById("tip");
const spans = D.chars.map((ch, t) => {
  const s = document.createElement("span");
  s.textContent = ch === "\\n" ? "\\u21b5\\n" : ch;
  s.dataset.t = t;
  text.appendChild(s);
  return s;
});
function show(name) {
  if (!D.series[name]) return;
  const v = values(name);
  for (let t = 0; t < spans.length; t++) {
    const a = Math.min(1, Math.abs(v[t]));
    spans[t].style.background = v[t] >= 0 ? `rgba(214,39,40,${a})` : `rgba(31,119,180,${a})`;
  }
  document.getElementById("pick").value = name;
  document.getElementById("legend").textContent =
    `${name}: blue = negative, red = positive (scale ±${D.series[name].scale.toFixed(3)})`;
  document.querySelectorAll("button.cellbtn").forEach(b => b.classList.toggle("active", b.dataset.name === name));
}
const list = document.getElementById("cells");
names.forEach(n => { const o = document.createElement("option"); o.value = n; list.appendChild(o); });
document.getElementById("pick").addEventListener("change", e => show(e.target.value.trim()));
const probes = document.getElementById("probes");
for (const [probe, rows] of Object.entries(D.probes)) {
  const h = document.createElement("div"); h.className = "probe"; h.textContent = probe; probes.appendChild(h);
  rows.forEach(r => {
    const b = document.createElement("button"), name = `layer${r.layer}/${r.kind}/${r.unit}`;
    b.className = "cellbtn"; b.dataset.name = name;
    b.textContent = `${name} r=${r.correlation.toFixed(2)}` + (r.accuracy !== undefined ? ` acc=${r.accuracy.toFixed(2)}` : "");
    b.onclick = () => show(name);
    probes.appendChild(b);
  });
}
if (D.constant.length) {
  const c = document.createElement("div"); c.style.color = "#777"; c.style.marginTop = "10px";
  c.textContent = "constant in this text: " + D.constant.join(", "); probes.appendChild(c);
}
const printable = s => ({" ": "\\u2423", "\\n": "\\u21b5", "\\t": "\\u21e5"}[s] || s);
text.addEventListener("mousemove", e => {
  const t = e.target.dataset && e.target.dataset.t;
  if (t === undefined) { tip.style.display = "none"; return; }
  const ids = D.top_ids[t], ps = D.top_probs[t];
  tip.textContent = "next: " + ids.map((id, k) => `${printable(D.vocab[id])} ${(ps[k] * 100).toFixed(1)}%`).join("\\n      ");
  tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px"; tip.style.display = "block";
});
text.addEventListener("mouseleave", () => { tip.style.display = "none"; });
const first = Object.values(D.probes)[0];
show(first && first.length ? `layer${first[0].layer}/${first[0].kind}/${first[0].unit}` : names[0]);
</script></body></html>
"""
