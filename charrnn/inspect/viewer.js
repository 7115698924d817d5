// charrnn cell viewer: the script of the page that charrnn/viz.py writes.
//
// The data is the JSON in <script id="data"> (see page_data in viz.py). Each entry of D.series holds one
// layer and kind: some of its units as 8-bit codes, unit after unit, T codes each, in base64, with every
// unit's lo, hi (value = lo + code / 255 * (hi - lo)), mean and standard deviation. Codes are decoded once,
// when first needed; a colour is then a lookup of 256 entries per cell, so recolouring is one pass over
// the text's spans.
"use strict";

const D = JSON.parse(document.getElementById("data").textContent);
const T = D.chars.length;
const SIGMOID = new Set(D.sigmoid);  // gates in [0, 1]; g (lstm) and n (gru) are tanh candidates
const BLUE = [31, 119, 180], RED = [214, 39, 40];  // low and high, as in Karpathy et al. (2015)
const $ = id => document.getElementById(id);

// ----- cells: names, codes, values -----------------------------------------------------------------

const cellName = (layer, kind, unit) => `layer${layer}/${kind}/${unit}`;
const CELLS = new Map();  // name -> {block, j, layer, kind, unit}: unit j of an embedded block
for (const block of D.series) {
  block.units.forEach((unit, j) =>
    CELLS.set(cellName(block.layer, block.kind, unit), {block, j, layer: block.layer, kind: block.kind, unit}));
}

function codesOf(cell) {
  const block = cell.block;
  if (!block.bytes) {  // decoded on first use, then the base64 text is dropped
    const raw = atob(block.b64), bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    block.bytes = bytes;
    block.b64 = null;
  }
  return block.bytes.subarray(cell.j * T, (cell.j + 1) * T);
}

function valueOf(cell, code) {
  const lo = cell.block.lo[cell.j], hi = cell.block.hi[cell.j];
  return lo + code / 255 * (hi - lo);
}

// ----- scales: a value to x in [-1, 1], drawn blue below 0 and red above ------------------------------

const fmt = v => Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);

// How `mode` maps this cell's values to x, and what the ends of the colour bar stand for.
function scaleOf(cell, mode) {
  const j = cell.j, b = cell.block, gate = SIGMOID.has(cell.kind);
  if (mode === "auto") mode = gate ? "tanh" : "centred";
  if (mode === "centred") {
    // Cell states carry large offsets (a quote cell at -24 inside quotes and -30 outside): centring on the
    // mean shows the signal that a scale centred on 0 hides.
    const m = b.mean[j], s = 2 * b.std[j] || 1;
    return {x: v => (v - m) / s, ticks: [fmt(m - s), fmt(m), fmt(m + s)], name: "centred on its mean, \u00b12 sd"};
  }
  if (mode === "tanh") {
    if (gate) return {x: v => 2 * v - 1, ticks: ["0 closed", "0.5", "1 open"], name: "a gate, 0 to 1"};
    if (cell.kind === "c") return {x: Math.tanh, ticks: ["tanh -1", "0", "+1"], name: "tanh(c), what h = o\u00b7tanh(c) reads"};
    return {x: v => v, ticks: ["-1", "0", "+1"], name: "its range, -1 to 1"};
  }
  const m = Math.max(Math.abs(b.lo[j]), Math.abs(b.hi[j])) || 1;
  return {x: v => v / m, ticks: [fmt(-m), "0", fmt(m)], name: "raw, white at 0"};
}

const mode = () => $("scale").value;
const clip = x => x < -1 ? -1 : x > 1 ? 1 : x;

// x for each of the 256 codes of a cell, cached per cell and mode.
const xCache = new Map();
function xLut(cell, m = mode()) {
  const key = cellName(cell.layer, cell.kind, cell.unit) + " " + m;
  if (!xCache.has(key)) {
    const scale = scaleOf(cell, m), lut = new Float32Array(256);
    for (let c = 0; c < 256; c++) lut[c] = clip(scale.x(valueOf(cell, c)) || 0);
    xCache.set(key, lut);
  }
  return xCache.get(key);
}

// The colour of x: translucent over the page's white (text stays readable), or the same colour opaque.
function colour(x) {
  const c = x < 0 ? BLUE : RED, a = Math.abs(x);
  return `rgba(${c[0]},${c[1]},${c[2]},${a.toFixed(3)})`;
}
function solid(x) {
  const c = x < 0 ? BLUE : RED, a = Math.abs(x), mix = k => Math.round(255 + (c[k] - 255) * a);
  return `rgb(${mix(0)},${mix(1)},${mix(2)})`;
}
const colours = (cell, paint = colour) => Array.from(xLut(cell), paint);  // 256 CSS colours, one per code

// ----- the text: one span per character, data-i its index ----------------------------------------------

// Control characters by their ASCII names, which every font can draw (the Control Pictures block is missing
// from many); a line break, a tab and a space by arrows.
const NAMED = {"\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\x7f": "DEL"};
const C0 = ("NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB " +
            "ESC FS GS RS US").split(" ");

// What a character looks like in a tooltip or a list: never blank, never a raw control character.
function printable(ch) {
  if (ch in NAMED) return NAMED[ch];
  const code = ch.codePointAt(0);
  if (code < 32) return C0[code];
  if (/^[\p{C}\p{Z}]/u.test(ch)) return "U+" + code.toString(16).toUpperCase().padStart(4, "0");
  if (/^\p{M}/u.test(ch)) return "\u25cc" + ch;  // a combining mark, on a dotted circle
  return ch;
}

// A short piece of the text on one line: spaces as spaces, line breaks and control characters named.
const snippet = (a, b) => D.chars.slice(a, b).map(ch => ch === " " ? " " : printable(ch)).join("");

const textEl = $("text");
const spans = [];
// The text in blocks of about BLOCK characters, each ending at a line break: the browser lays out, styles and
// paints only the blocks on screen (content-visibility: auto), so recolouring 50,000 characters stays quick.
const BLOCK = 2000;
(function drawText() {
  const frag = document.createDocumentFragment();
  let block = null;
  D.chars.forEach((ch, i) => {
    if (block === null) {
      block = frag.appendChild(document.createElement("div"));
      block.className = "block";
    }
    const s = document.createElement("span");
    const shown = ch === " " ? " " : printable(ch);
    if (shown !== ch && ch !== " ") s.className = shown.length > 1 && ch !== "\t" ? "ctl name" : "ctl";
    // A line break is drawn and then made; a tab is drawn and keeps its width.
    s.textContent = ch === "\n" ? shown + "\n" : ch === "\t" ? shown + "\t" : shown;
    s.dataset.i = i;
    block.appendChild(s);
    spans.push(s);
    if (ch === "\n" && block.childElementCount >= BLOCK) block = null;
  });
  textEl.appendChild(frag);
})();

// ----- the cell shown ------------------------------------------------------------------------------

let current = null;  // the name of the cell that colours the text

function show(name) {
  const cell = CELLS.get(name);
  if (!cell) return false;
  const lut = colours(cell), codes = codesOf(cell);
  for (let t = 0; t < T; t++) spans[t].style.backgroundColor = lut[codes[t]];
  current = name;
  $("pick").value = name;
  $("pick").classList.remove("bad");
  $("pickmsg").textContent = "";
  drawLegend(cell);
  document.querySelectorAll("button.cell").forEach(b => b.classList.toggle("active", b.dataset.name === name));
  try { history.replaceState(null, "", "#" + name); } catch (e) { /* a sandboxed frame may refuse: no matter */ }
  return true;
}

function drawLegend(cell) {
  const scale = scaleOf(cell, mode());
  [$("barlo").textContent, $("barmid").textContent, $("barhi").textContent] = scale.ticks;
  const b = cell.block, j = cell.j;
  $("legend").textContent = `Text coloured by ${current} (${KIND_NAMES[cell.kind] || cell.kind}), ${scale.name}: ` +
    `blue = lower, red = higher. Over these ${T.toLocaleString()} characters it runs from ${fmt(b.lo[j])} to ` +
    `${fmt(b.hi[j])}, mean ${fmt(b.mean[j])}.`;
  $("bar").dataset.low = `rgb(${BLUE})`;
  $("bar").dataset.high = `rgb(${RED})`;
}

// ----- the picker: every embedded unit, and a message for any other name ---------------------------

const KIND_NAMES = {
  h: "hidden state", c: "cell state", i: "input gate", f: "forget gate", g: "candidate", o: "output gate",
  r: "reset gate", z: "update gate", n: "candidate",
};

// The cell a typed name means (layer0/c/3, 0/c/3, or c/3 for a 1-layer model), or why there is none.
function resolve(text) {
  const m = text.trim().toLowerCase().match(/^(?:(?:layer)?(\d+)\/)?([a-z])\/(\d+)$/);
  const shape = `this ${D.cell_type} has ${D.num_layers} layer(s), layer0` +
    (D.num_layers > 1 ? `..layer${D.num_layers - 1}` : "") + `, of ${D.hidden_size} units (0..${D.hidden_size - 1})` +
    `, kinds ${D.recorded.join(", ")}`;
  if (!m) return {error: `Write a cell as layer/kind/unit, e.g. ${cellName(0, D.recorded[0], 0)}; ${shape}.`};
  if (m[1] === undefined && D.num_layers > 1) return {error: `Which layer? Write layerL/${m[2]}/${m[3]}; ${shape}.`};
  const layer = Number(m[1] || 0), kind = m[2], unit = Number(m[3]), name = cellName(layer, kind, unit);
  if (CELLS.has(name)) return {name};
  if (layer >= D.num_layers || unit >= D.hidden_size || !D.recorded.includes(kind)) {
    return {error: `No cell ${name}: ${shape}.`};
  }
  return {error: `${name} is in the dump but not in this page, which holds every unit of ${D.kinds.join(", ")} ` +
    `(and the probes' top cells): write the page again with --kinds all, or with --cell ${name}.`};
}

function pick(text) {
  const r = resolve(text);
  if (r.name) return show(r.name);
  $("pick").classList.add("bad");
  $("pickmsg").textContent = `${r.error} The text is still coloured by ${current}.`;
  return false;
}

// The previous or next embedded cell, in the picker's order (layer, kind, unit).
function step(delta) {
  const names = [...CELLS.keys()], k = names.indexOf(current);
  show(names[(k + delta + names.length) % names.length]);
}

// ----- the tooltip: the character, the cell's value, the true next character, the model's guesses --------

const tip = $("tip");

function tipText(i) {
  const cell = CELLS.get(current), code = codesOf(cell)[i], x = xLut(cell)[code];
  const next = i + 1 < T ? D.chars[i + 1] : null, p = D.next_prob[i];
  const lines = [`character ${i.toLocaleString()}: ${printable(D.chars[i])}`,
                 `${current} = ${fmt(valueOf(cell, code))}   (colour ${x >= 0 ? "+" : ""}${x.toFixed(2)})`];
  if (next !== null && p !== null) lines.push(`next: ${printable(next)}, given ${(100 * p).toFixed(1)}% by the model`);
  const guesses = [];
  for (let k = 0; k < D.top_k; k++) {
    const id = D.top_ids[i * D.top_k + k], sym = D.vocab[id];
    guesses.push(`${printable(sym)} ${(100 * D.top_probs[i * D.top_k + k]).toFixed(1)}%${sym === next ? " \u2713" : ""}`);
  }
  lines.push(`model's top ${D.top_k}: ${guesses.join("  ")}`);
  return lines.join("\n");
}

// Beside the pointer, but always inside the window: flipped to the left or above near an edge.
function placeTip(x, y) {
  tip.style.display = "block";
  const w = tip.offsetWidth, h = tip.offsetHeight;
  const W = document.documentElement.clientWidth, H = document.documentElement.clientHeight;
  let left = x + 14, top = y + 14;
  if (left + w > W - 4) left = x - 14 - w;
  if (top + h > H - 4) top = y - 14 - h;
  tip.style.left = Math.max(4, Math.min(left, W - w - 4)) + "px";
  tip.style.top = Math.max(4, Math.min(top, H - h - 4)) + "px";
}

textEl.addEventListener("mousemove", e => {
  const i = e.target.dataset ? e.target.dataset.i : undefined;
  if (i === undefined || current === null) { tip.style.display = "none"; $("barmark").style.display = "none"; return; }
  tip.textContent = tipText(Number(i));
  placeTip(e.clientX, e.clientY);
  const cell = CELLS.get(current), x = xLut(cell)[codesOf(cell)[Number(i)]];
  Object.assign($("barmark").style, {display: "block", left: `calc(${(x + 1) * 50}% - 1px)`});
  if (SAL && pinned === null && Number(i) !== marked) light(Number(i));
});
textEl.addEventListener("mouseleave", () => {
  tip.style.display = "none";
  $("barmark").style.display = "none";
  if (SAL && pinned === null) light(null);
});

// ----- saliency: the earlier characters each prediction used (a dump made with --saliency) ---------------
//
// D.saliency holds, for the prediction made after reading character t (of character t + 1), its N largest
// influences s(t, k) of the character k back from t: distances k, signed 8-bit codes relative to the position's
// largest |s| (s = code / 127 * scale), and that scale. Hovering character i shows the prediction *of* i, made
// after reading i - 1: the characters it used are outlined, as strongly as |s| / the largest |s|.

const SAL = D.saliency;
let salArrays = null;  // decoded on first use
let lit = [], marked = null, pinned = null;  // outlined characters, the predicted one, the one held by a click

function bytesOf(b64) {
  const raw = atob(b64), bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function saliencyArrays() {
  if (!salArrays) {
    const offsets = bytesOf(SAL.offsets), scale = bytesOf(SAL.scale);
    salArrays = {offsets: SAL.wide ? new Uint16Array(offsets.buffer) : offsets,  // little-endian, as written
                 codes: new Int8Array(bytesOf(SAL.codes).buffer), scale: new Float32Array(scale.buffer)};
  }
  return salArrays;
}

// The influences on the prediction of character i, largest first: [{at, back, strength, value}].
function influences(i) {
  if (!SAL || i < 1) return [];
  const {offsets, codes, scale} = saliencyArrays(), N = SAL.top, t = i - 1, out = [];
  for (let n = 0; n < N; n++) {
    const q = codes[t * N + n];
    if (q === 0) continue;  // no entry, or too small to show
    const k = offsets[t * N + n];
    out.push({at: t - k, back: k + 1, strength: Math.abs(q) / 127, value: q / 127 * scale[t]});
  }
  return out;
}

const quoted = ch => `'${printable(ch)}'`;

function usedText(i, list) {
  const from = Math.max(0, i - 24);
  const head = `predicting ${quoted(D.chars[i])} after '${from > 0 ? "\u2026" : ""}${snippet(from, i)}'`;
  if (i === 0) return `${head}: the first character is predicted from the start of the text alone.`;
  const used = list.map(e => `${quoted(D.chars[e.at])} ${e.back} back ${e.value >= 0 ? "+" : ""}` +
    `${e.value.toPrecision(2)}`);
  return `${head}: ${used.length ? used.join(", ") : "no influence large enough to show"}` +
    (pinned !== null ? "  (held: click it again or press Esc to let go)" : "");
}

// Outline what the prediction of character i used (null: nothing), and list it.
function light(i) {
  for (const j of lit) {
    spans[j].classList.remove("used", "usedneg");
    spans[j].style.removeProperty("--used");
  }
  if (marked !== null) spans[marked].classList.remove("predicted");
  lit = [];
  marked = i;
  if (i === null) { $("usedinfo").textContent = "Hover a character."; return; }
  const list = influences(i);
  spans[i].classList.add("predicted");
  for (const e of list) {
    spans[e.at].classList.add(e.value >= 0 ? "used" : "usedneg");
    spans[e.at].style.setProperty("--used", e.strength.toFixed(3));
    lit.push(e.at);
  }
  $("usedinfo").textContent = usedText(i, list);
}

function pin(i) {
  pinned = pinned === i ? null : i;
  light(i);
}

if (SAL) {
  $("usedsection").hidden = false;
  $("usedhint").textContent = `Hover a character: the earlier characters its prediction used are outlined, ` +
    `orange where they made it likelier and purple where they made it less likely, as strongly as they counted ` +
    `(gradient \u00d7 input, relative to the prediction's largest; its top ${SAL.top} of the last ` +
    `${SAL.window} characters). Click to hold them; click again or press Esc to let go.`;
  $("usedinfo").textContent = "Hover a character.";
  textEl.addEventListener("click", e => {
    const i = e.target.dataset ? e.target.dataset.i : undefined;
    const sel = getSelection();
    if (i === undefined || (sel && !sel.isCollapsed)) return;  // a drag selects text; it does not hold
    pin(Number(i));
  });
  document.addEventListener("keydown", e => {
    if (e.key === "Escape" && pinned !== null) { pinned = null; light(null); }
  });
}

// ----- selection: rank the cells on over the span and off around it (LSTMVis) ----------------------------

let ranked = [];  // [{name, sign, inside, around, score, contrast}] of the last selection, best first
let picked = [0, -1];  // the character range ranked

// The characters [a, b] of the page's selection, or null when it is not a span of the text.
function selectedRange() {
  const sel = getSelection();
  if (!sel || sel.isCollapsed || !sel.rangeCount) return null;
  const r = sel.getRangeAt(0);
  if (!textEl.contains(r.commonAncestorContainer)) return null;
  const a = Math.max(0, boundary(r.startContainer, r.startOffset, true));
  const b = Math.min(T - 1, boundary(r.endContainer, r.endOffset, false));
  return a <= b ? [a, b] : null;
}

// The index of the first (start) or last (end) character selected at a range boundary: a point in a span's
// text, or between the children of a span, a block or the text.
function boundary(node, offset, start) {
  if (node.nodeType === Node.TEXT_NODE) {
    const i = Number(node.parentElement.dataset.i);
    return start ? (offset >= node.length ? i + 1 : i) : (offset === 0 ? i - 1 : i);
  }
  if (node.dataset.i !== undefined) {
    const i = Number(node.dataset.i);
    return start ? (offset > 0 ? i + 1 : i) : (offset === 0 ? i - 1 : i);
  }
  const child = node.childNodes[start ? offset : offset - 1];
  if (!child) return start ? T : -1;
  const inside = child.dataset.i !== undefined ? [child] : child.querySelectorAll("[data-i]");
  return Number((start ? inside[0] : inside[inside.length - 1]).dataset.i);
}

// The fraction of characters in [a, b) where cell is on (sign * x past theta).
function onFraction(codes, lut, sign, theta, a, b) {
  let on = 0;
  for (let t = a; t < b; t++) if (sign * lut[codes[t]] > theta) on++;
  return b > a ? on / (b - a) : 0;
}

// The mean of sign * x over [a, b).
function meanX(codes, lut, sign, a, b) {
  let sum = 0;
  for (let t = a; t < b; t++) sum += lut[codes[t]];
  return b > a ? sign * sum / (b - a) : 0;
}

// Every embedded cell, in both directions (on = red, or on = blue), scored by the fraction of the selection
// [a, b] where it is on minus that fraction in the context around; ties (many cells are on over all of a short
// span) go to the larger difference of mean colour. Best first.
function rankSelection(a, b) {
  const theta = Number($("threshold").value);
  const width = Number($("context").value) || (b - a + 1);
  const [l0, l1, r0, r1] = [Math.max(0, a - width), a, b + 1, Math.min(T, b + 1 + width)];
  const n = (l1 - l0) + (r1 - r0);
  const scored = [];
  for (const [name, cell] of CELLS) {
    const codes = codesOf(cell), lut = xLut(cell);
    for (const sign of [1, -1]) {
      const inside = onFraction(codes, lut, sign, theta, a, b + 1);
      const around = n ? (onFraction(codes, lut, sign, theta, l0, l1) * (l1 - l0) +
                          onFraction(codes, lut, sign, theta, r0, r1) * (r1 - r0)) / n : 0;
      const contrast = meanX(codes, lut, sign, a, b + 1) -
        (n ? (meanX(codes, lut, sign, l0, l1) * (l1 - l0) + meanX(codes, lut, sign, r0, r1) * (r1 - r0)) / n : 0);
      scored.push({name, sign, inside, around, score: inside - around, contrast});
    }
  }
  return scored.sort((p, q) => q.score - p.score || q.contrast - p.contrast).slice(0, 10);
}

function onSelect() {
  const range = selectedRange();
  if (!range || (range[0] === picked[0] && range[1] === picked[1])) return;  // a click elsewhere keeps the ranking
  const [a, b] = range;
  for (let t = picked[0]; t <= picked[1]; t++) spans[t].classList.remove("picked");
  for (let t = a; t <= b; t++) spans[t].classList.add("picked");
  picked = range;
  ranked = rankSelection(a, b);
  drawRanking();
  $("minlen").value = Math.max(1, Math.min(20, Math.ceil((b - a + 1) / 2)));
}

function drawRanking() {
  const [a, b] = picked;
  $("selinfo").textContent = `Characters ${a.toLocaleString()} to ${b.toLocaleString()} (${b - a + 1}): ` +
    `${snippet(a, Math.min(b + 1, a + 40))}${b - a >= 40 ? "\u2026" : ""}`;
  const table = $("selrank");
  table.replaceChildren();
  const head = table.insertRow();
  ["#", "cell", "on", "inside", "around", "use"].forEach(h => head.appendChild(document.createElement("th")).textContent = h);
  ranked.forEach((r, k) => {
    const row = table.insertRow();
    row.insertCell().textContent = k + 1;
    row.insertCell().appendChild(cellButton(r.name, r.name));
    const swatch = row.insertCell().appendChild(document.createElement("span"));
    swatch.className = "swatch";
    swatch.style.background = r.sign > 0 ? `rgb(${RED})` : `rgb(${BLUE})`;
    swatch.title = r.sign > 0 ? "on = red (high)" : "on = blue (low)";
    row.insertCell().textContent = `${Math.round(100 * r.inside)}%`;
    row.insertCell().textContent = `${Math.round(100 * r.around)}%`;
    const box = row.insertCell().appendChild(document.createElement("input"));
    box.type = "checkbox";
    box.checked = k < 3;
    box.dataset.k = k;
  });
  $("selactions").hidden = false;
}

const checked = () => [...document.querySelectorAll("#selrank input:checked")].map(b => ranked[Number(b.dataset.k)]);

// ----- match search: the other places where the checked cells are all on ------------------------------

// Runs [start, end] of at least minLen characters where every cell of `chosen` is on.
function findMatches(chosen, theta, minLen) {
  const parts = chosen.map(r => ({codes: codesOf(CELLS.get(r.name)), lut: xLut(CELLS.get(r.name)), sign: r.sign}));
  const runs = [];
  let start = -1;
  for (let t = 0; t <= T; t++) {
    const all = t < T && parts.every(p => p.sign * p.lut[p.codes[t]] > theta);
    if (all && start < 0) start = t;
    if (!all && start >= 0) {
      if (t - start >= minLen) runs.push([start, t - 1]);
      start = -1;
    }
  }
  return runs;
}

let matched = [];
function drawMatches() {
  matched.forEach(([a, b]) => { for (let t = a; t <= b; t++) spans[t].classList.remove("match"); });
  const chosen = checked();
  if (!chosen.length) { $("matchinfo").textContent = "Check at least one cell to match."; return; }
  matched = findMatches(chosen, Number($("threshold").value), Number($("minlen").value) || 1);
  matched.forEach(([a, b]) => { for (let t = a; t <= b; t++) spans[t].classList.add("match"); });
  $("matchinfo").textContent = `${matched.length} place(s) where ${chosen.map(r => r.name).join(", ")} are all on ` +
    `(underlined in green); the first 200:`;
  const list = $("matches");
  list.replaceChildren();
  matched.slice(0, 200).forEach(([a, b]) => {
    const li = list.appendChild(document.createElement("li"));
    li.textContent = `${a}: ${snippet(Math.max(0, a - 12), a)}[${snippet(a, Math.min(b + 1, a + 40))}` +
      `${b - a >= 40 ? "\u2026" : ""}]`;
    li.onclick = () => {
      spans[a].scrollIntoView({block: "center"});
      spans[a].classList.add("flash");
      setTimeout(() => spans[a].classList.remove("flash"), 1200);
    };
  });
}

// ----- several cells at once: heatmap rows under every character ---------------------------------------

let rows = [];  // names of the cells drawn as rows, top to bottom

function stack(names) {
  rows = names.filter(n => CELLS.has(n)).slice(0, 10);
  textEl.style.setProperty("--rows", rows.length);
  textEl.classList.toggle("stacked", rows.length > 0);
  drawRows();
  const list = $("rows");
  list.replaceChildren();
  rows.forEach(name => list.appendChild(document.createElement("li")).appendChild(cellButton(name, name)));
  $("rowsection").hidden = rows.length === 0;
}

function drawRows() {
  if (!rows.length) { spans.forEach(s => { s.style.backgroundImage = ""; }); return; }
  // Row k's stripe for each of the 256 codes, e.g. "rgb(235,147,148) 20.00% 40.00%", built once.
  const stops = rows.map((n, k) => {
    const edges = `${(100 * k / rows.length).toFixed(2)}% ${(100 * (k + 1) / rows.length).toFixed(2)}%`;
    return colours(CELLS.get(n), solid).map(c => `${c} ${edges}`);
  });
  const codes = rows.map(n => codesOf(CELLS.get(n)));
  for (let t = 0; t < T; t++) {
    let image = "linear-gradient(" + stops[0][codes[0][t]];
    for (let k = 1; k < rows.length; k++) image += "," + stops[k][codes[k][t]];
    spans[t].style.backgroundImage = image + ")";
  }
}

// ----- the sidebar: picker, probes, glossary -------------------------------------------------------------

function cellButton(name, label) {
  const b = document.createElement("button");
  b.className = "cell";
  b.dataset.name = name;
  b.textContent = label;
  b.classList.toggle("active", name === current);
  b.onclick = () => show(name);
  return b;
}

function drawProbes() {
  const box = $("probes");
  $("probehint").textContent = `The cells that track properties of the text, ranked over ` +
    `${D.ranked_chars.toLocaleString()} characters${D.ranked_chars === T ? "" : ` (the page shows the first ${T.toLocaleString()})`}. ` +
    `r: correlation of the cell with the probe (negative: the cell falls where the probe rises). acc: accuracy of the ` +
    `best threshold on this one cell at telling the probe's two classes apart; base: accuracy of always guessing ` +
    `the commoner class, which acc must beat to mean anything.`;
  for (const [probe, cells] of Object.entries(D.probes)) {
    const head = box.appendChild(document.createElement("div"));
    head.className = "probe";
    head.innerHTML = `<span class="name"></span> <button class="rowsbtn" title="draw these cells as rows under the text">rows</button><div class="note"></div>`;
    head.querySelector(".name").textContent = probe;
    head.querySelector(".note").textContent = D.probe_notes[probe] || "";
    const names = cells.map(r => cellName(r.layer, r.kind, r.unit));
    head.querySelector("button").onclick = () => stack(names);
    cells.forEach((r, k) => {
      let label = `${names[k]}  r ${r.correlation >= 0 ? "+" : ""}${r.correlation.toFixed(2)}`;
      const weak = r.accuracy !== undefined && r.accuracy - r.base_rate < D.min_gain;
      if (r.accuracy !== undefined) label += `  acc ${r.accuracy.toFixed(3)} (base ${r.base_rate.toFixed(3)})`;
      const b = box.appendChild(cellButton(names[k], label));
      if (weak) { b.classList.add("weak"); b.title = "no better than always guessing the commoner class"; }
      box.appendChild(document.createElement("br"));
    });
  }
  if (D.constant.length) {
    box.appendChild(document.createElement("p")).textContent =
      `Not ranked, constant in this text: ${D.constant.join(", ")}.`;
  }
}

const GLOSSARY = {
  rnn: {h: "hidden state, tanh(W x + U h_prev), in -1..1: the layer's output."},
  lstm: {
    h: "hidden state o\u00b7tanh(c), in -1..1: the layer's output, read by the next layer and the prediction.",
    c: "cell state, the memory: f\u00b7c_prev + i\u00b7g, unbounded, often far from 0.",
    i: "input gate, 0..1: how much of the candidate g is written into c.",
    f: "forget gate, 0..1: how much of c is kept from the step before.",
    g: "candidate, -1..1: the value written into c.",
    o: "output gate, 0..1: how much of tanh(c) is shown as h.",
  },
  gru: {
    h: "hidden state, in -1..1: (1 - z)\u00b7n + z\u00b7h_prev.",
    r: "reset gate, 0..1: how much of h_prev the candidate reads.",
    z: "update gate, 0..1: how much of h_prev is kept.",
    n: "candidate, -1..1: the new value mixed in.",
  },
};

function drawGlossary() {
  const dl = document.createElement("dl");
  for (const [kind, text] of Object.entries(GLOSSARY[D.cell_type] || {})) {
    dl.appendChild(document.createElement("dt")).textContent = kind;
    dl.appendChild(document.createElement("dd")).textContent = text;
  }
  const more = document.createElement("p");
  more.textContent = "A cell is named layerL/kind/unit. The page holds every unit of " + D.kinds.join(", ") +
    " (--kinds) and the probes' top cells; values are stored with 8 bits, 1/255 of each cell's range. " +
    "Hover a character for the cell's value, the true next character with the probability the model gave it, " +
    "and the model's top guesses." + (SAL ? " With saliency, the info line lists what the prediction of the " +
    "hovered character used: each character, how far back (1 = just before it) and its s, the change in the log " +
    "probability of the hovered character it accounts for, to first order." : "");
  $("glossary").replaceChildren(dl, more);
}

// ----- start --------------------------------------------------------------------------------------------

function recolour() {
  if (current !== null) show(current);
  drawRows();
  if (ranked.length) { ranked = rankSelection(...picked); drawRanking(); }
}

document.title = D.title;
$("subtitle").textContent = `${D.cell_type}, ${D.num_layers} layer(s) \u00d7 ${D.hidden_size} units; ` +
  `${T.toLocaleString()} characters`;
const list = $("cells");
for (const name of CELLS.keys()) list.appendChild(document.createElement("option")).value = name;
$("pick").placeholder = `e.g. ${D.initial}`;
$("opennote").textContent = D.initial_note;
$("pick").addEventListener("change", e => pick(e.target.value));
$("pick").addEventListener("keydown", e => { if (e.key === "Enter") pick(e.target.value); });
$("prev").onclick = () => step(-1);
$("next").onclick = () => step(1);
$("scale").addEventListener("change", recolour);
$("threshold").addEventListener("input", e => { $("thresholdout").textContent = Number(e.target.value).toFixed(2); });
$("threshold").addEventListener("change", recolour);
$("context").addEventListener("change", recolour);
document.addEventListener("mouseup", onSelect);  // a drag may end outside the text
document.addEventListener("keyup", e => { if (e.shiftKey) onSelect(); });  // a selection grown with shift+arrows
$("stacksel").onclick = () => stack(checked().map(r => r.name));
$("matchbtn").onclick = drawMatches;
$("clearrows").onclick = () => stack([]);
drawProbes();
drawGlossary();
const fromHash = decodeURIComponent(location.hash.slice(1));
show(CELLS.has(fromHash) ? fromHash : D.initial) || show(CELLS.keys().next().value);
// For scripts and tests: the page's own functions.
window.charrnn = {show, pick, resolve, stack, rankSelection, findMatches, cells: CELLS, influences, light, pin};
document.documentElement.dataset.ready = "true";
