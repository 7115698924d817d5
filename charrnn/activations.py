"""Tracing a text through a model: every hidden state, cell state and gate, per character and layer.

`collect_activations` runs the text (after the start-of-document token, hidden state carried, no
dropout) through the hand-written layers of `layers.py`, which read the trained weights in place, and
records for every character t:
- per layer: h (and c for LSTM) after reading character t, and the gates that produced them
  (LSTM i, f, g, o; GRU r, z, n), each a (T, H) float32 array;
- the model's probability of the true next character, and its top-k predictions.
The text is processed in chunks into preallocated arrays, so memory stays bounded by the output itself.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from charrnn.common import CharRNNError
from charrnn.layers import GATES, trace_layer
from charrnn.model import CharRNN
from charrnn.tokenizer import CharTokenizer

FORMAT = "charrnn-activations"
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9  # Karpathy, Johnson & Fei-Fei (2015), section 4.3


def kinds_of(cell: str) -> tuple[str, ...]:
    """The recorded arrays per layer: h, c (lstm), then the gates."""
    return ("h", *(["c"] if cell == "lstm" else []), *GATES[cell])


@dataclass
class Trace:
    """The activations of one text: `layers[l][kind]` is a (T, H) array."""

    chars: list[str]  # the T characters of the text (one symbol per id)
    ids: np.ndarray  # (T,)
    cell: str
    layers: list[dict[str, np.ndarray]]
    next_prob: np.ndarray  # (T,) probability given to the true next character; NaN for the last
    top_ids: np.ndarray  # (T, K) most likely next characters after reading character t
    top_probs: np.ndarray  # (T, K)
    vocabulary: list[str] = field(default_factory=list)  # printable symbol of every id

    @property
    def length(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> Trace:
        """The first `n` characters of this trace (views, no copies)."""
        return Trace(self.chars[:n], self.ids[:n], self.cell, [{k: v[:n] for k, v in layer.items()} for layer in self.layers],
                     self.next_prob[:n], self.top_ids[:n], self.top_probs[:n], self.vocabulary)

    def units(self) -> list[tuple[int, str, int]]:
        """(layer, kind, unit) of every recorded series, in a fixed order."""
        return [(l, k, u) for l, layer in enumerate(self.layers) for k in layer for u in range(layer[k].shape[1])]

    def matrix(self) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """All series side by side as a (T, N) array, with the (layer, kind) of each block of columns."""
        blocks = [(l, k) for l, layer in enumerate(self.layers) for k in layer]
        return np.concatenate([self.layers[l][k] for l, k in blocks], axis=1), blocks


@torch.no_grad()
def collect_activations(model: CharRNN, tokenizer: CharTokenizer, text: str | bytes, chunk: int = 2048,
                        top_k: int = 5, map_unknown: bool = False) -> Trace:
    """Trace `text` through `model` from the start-of-document state. See the module docstring."""
    model.eval()
    device = model.head.weight.device
    ids = tokenizer.encode(text, map_unknown=map_unknown)
    if len(ids) == 0:
        raise CharRNNError("the text to trace is empty")
    T, L, H, cell = len(ids), model.config.num_layers, model.config.hidden_size, model.config.cell
    kinds = kinds_of(cell)
    layers = [{k: np.empty((T, H), dtype=np.float32) for k in kinds} for _ in range(L)]
    k_top = min(top_k, tokenizer.vocab_size)
    next_prob = np.full(T, np.nan, dtype=np.float32)
    top_ids = np.empty((T, k_top), dtype=np.int32)
    top_probs = np.empty((T, k_top), dtype=np.float32)
    all_ids = torch.as_tensor(np.concatenate([[tokenizer.eod_id], ids]), device=device).long()
    # The start-of-document token is read first, as in training and sampling; it is not recorded.
    _, state = model(all_ids[:1].unsqueeze(0), model.init_state(1, device))
    h = [state[0][l] for l in range(L)]  # each (1, H)
    c = [state[1][l] for l in range(L)] if cell == "lstm" else [None] * L
    for start in range(0, T, chunk):
        x = all_ids[1 + start: 1 + start + chunk].unsqueeze(0)  # (1, t)
        inputs = model.embed(x)
        for l in range(L):
            rec = trace_layer(cell, model.rnn, l, inputs, h[l], c[l])
            for k in kinds:
                layers[l][k][start:start + x.size(1)] = rec[k][0].float().cpu().numpy()
            h[l] = rec["h"][:, -1]
            if cell == "lstm":
                c[l] = rec["c"][:, -1]
            inputs = rec["h"]
        probs = torch.softmax(model.head(inputs[0]).float(), dim=-1)  # (t, V)
        p, i = torch.topk(probs, k_top, dim=-1)
        top_ids[start:start + x.size(1)] = i.cpu().numpy()
        top_probs[start:start + x.size(1)] = p.cpu().numpy()
        following = all_ids[2 + start: 2 + start + x.size(1)]  # the true next characters
        n = len(following)
        next_prob[start:start + n] = probs[torch.arange(n, device=device), following].cpu().numpy()
    vocabulary = [tokenizer.symbol(i) for i in range(tokenizer.vocab_size)]
    chars = [vocabulary[i] if i < len(tokenizer.codes) else "\ufffd" for i in ids.tolist()]
    if not tokenizer.byte_level:
        chars = [tokenizer.decode([i]) if i != tokenizer.eod_id else "\n" for i in ids.tolist()]
    return Trace(chars, ids.astype(np.int32), cell, layers, next_prob, top_ids, top_probs, vocabulary)


# ----- files ----------------------------------------------------------------------------------------

def save_npz(trace: Trace, path: str | os.PathLike) -> Path:
    """One compressed .npz: `layer{l}_{kind}` arrays (T, H), `chars`, `ids`, `vocabulary`, predictions."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    arrays = {f"layer{l}_{k}": v for l, layer in enumerate(trace.layers) for k, v in layer.items()}
    meta = {"format": FORMAT, "version": 1, "cell": trace.cell, "num_layers": len(trace.layers)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, chars=np.array(trace.chars, dtype=object).astype(str), ids=trace.ids,
                        vocabulary=np.array(trace.vocabulary, dtype=str), next_prob=trace.next_prob,
                        top_ids=trace.top_ids, top_probs=trace.top_probs, meta=np.array(json.dumps(meta)), **arrays)
    return path


def load_npz(path: str | os.PathLike) -> Trace:
    """Read a dump written by `save_npz` (no pickled objects are allowed in it)."""
    p = Path(path)
    if not p.is_file():
        raise CharRNNError(f"no such activations file: {str(p)!r}; make one with charrnn dump")
    try:
        with np.load(p, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                raise KeyError("format")
            layers = [{k: z[f"layer{l}_{k}"] for k in kinds_of(meta["cell"])} for l in range(meta["num_layers"])]
            return Trace([str(c) for c in z["chars"]], z["ids"], meta["cell"], layers, z["next_prob"], z["top_ids"],
                         z["top_probs"], [str(v) for v in z["vocabulary"]])
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        raise CharRNNError(f"{str(p)!r} is not an activations file written by charrnn dump") from None


def save_lstmvis(trace: Trace, out_dir: str | os.PathLike, name: str = "charrnn") -> Path:
    """A directory LSTMVis opens as a project: states.hdf5, train.hdf5, train.dict and lstm.yml."""
    try:
        import h5py
    except ImportError:
        raise CharRNNError("--format lstmvis needs h5py: pip install 'charrnn[lstmvis]' (or pip install h5py)") from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    types = []
    with h5py.File(out / "states.hdf5", "w") as f:
        for l, layer in enumerate(trace.layers):
            for k, values in layer.items():
                f.create_dataset(f"{k}{l + 1}", data=values)
                # h is tanh-bounded; c is not (LSTMVis squashes it with tanh); gates are in [0, 1].
                kind = {"h": "output", "c": "state"}.get(k, "state")
                extra = ", transform: none" if k == "h" else (", unsigned: true, transform: none"
                                                              if k in ("i", "f", "o", "r", "z") else "")
                types.append(f"  {{type: {kind}, layer: {l + 1}, path: {k}{l + 1}{extra}}}")
    with h5py.File(out / "train.hdf5", "w") as f:
        f.create_dataset("words", data=trace.ids.astype(np.int64))
    printable = {" ": "<space>", "\n": "<newline>", "\t": "<tab>", "\r": "<cr>"}
    with open(out / "train.dict", "w", encoding="utf-8") as f:
        for i, symbol in enumerate(trace.vocabulary):
            f.write(f"{printable.get(symbol, symbol)} {i}\n")
    (out / "lstm.yml").write_text(
        f"name: {name}\n"
        "description: activations dumped by charrnn\n"
        "files:\n  states: states.hdf5\n  train: train.hdf5\n  words: train.dict\n"
        "word_sequence:\n  file: train\n  path: words\n  dict_file: words\n"
        "states:\n  file: states\n  types: [\n" + ",\n".join(types) + "\n  ]\n", encoding="utf-8")
    return out


def gate_saturation(trace: Trace) -> dict:
    """Per layer and sigmoid gate, each unit's fraction of time left- (< 0.1) and right-saturated (> 0.9)."""
    out: dict = {}
    for l, layer in enumerate(trace.layers):
        for gate in [g for g in GATES[trace.cell] if g not in ("g", "n")]:  # the tanh candidates are no gates
            values = layer[gate]
            left = (values < SATURATION_LOW).mean(axis=0)
            right = (values > SATURATION_HIGH).mean(axis=0)
            out.setdefault(f"layer{l}", {})[gate] = {
                "left": left.round(4).tolist(), "right": right.round(4).tolist(),
                "mean_left": float(left.mean()), "mean_right": float(right.mean())}
    return out


def saturation_svg(saturation: dict, width: int = 640, height: int = 360) -> str:
    """The scatter plot of the 2015 paper: one dot per unit, x = left-saturated, y = right-saturated."""
    gates = sorted({g for layer in saturation.values() for g in layer})
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    panel = width // max(len(gates), 1)
    pad = 36
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    size = min(panel - 2 * pad + 20, height - 2 * pad)
    for g_index, gate in enumerate(gates):
        x0, y0 = g_index * panel + pad, pad
        parts.append(f'<text x="{x0 + size / 2}" y="{pad - 12}" text-anchor="middle" font-size="13">{gate} gate</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{size}" height="{size}" fill="none" stroke="#999"/>')
        parts.append(f'<line x1="{x0}" y1="{y0 + size}" x2="{x0 + size}" y2="{y0}" stroke="#ddd"/>')
        parts.append(f'<text x="{x0 + size / 2}" y="{y0 + size + 26}" text-anchor="middle">fraction left-saturated</text>')
        parts.append(f'<text x="{x0 - 24}" y="{y0 + size / 2}" transform="rotate(-90 {x0 - 24} {y0 + size / 2})" '
                     'text-anchor="middle">fraction right-saturated</text>')
        for l_index, (layer, gates_of_layer) in enumerate(sorted(saturation.items())):
            if gate not in gates_of_layer:
                continue
            colour = colours[l_index % len(colours)]
            for left, right in zip(gates_of_layer[gate]["left"], gates_of_layer[gate]["right"]):
                parts.append(f'<circle cx="{x0 + left * size:.1f}" cy="{y0 + (1 - right) * size:.1f}" r="1.8" '
                             f'fill="{colour}" fill-opacity="0.6"/>')
            if g_index == 0:
                parts.append(f'<text x="{x0 + 6}" y="{y0 + 14 + 14 * l_index}" fill="{colour}">{layer}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def describe(trace: Trace) -> dict:
    """A short JSON-ready summary of a trace (for `dump --json`)."""
    mean_nats = float(-np.nanmean(np.log(np.maximum(trace.next_prob[:-1], 1e-12)))) if trace.length > 1 else math.nan
    return {"chars": trace.length, "cell": trace.cell, "num_layers": len(trace.layers),
            "hidden_size": trace.layers[0]["h"].shape[1], "kinds": list(trace.layers[0]),
            "nats_per_char": mean_nats}
