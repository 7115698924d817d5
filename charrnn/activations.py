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
SIGMOID_GATES = ("i", "f", "o", "r", "z")  # g (lstm) and n (gru) are tanh candidates, not gates


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
    eod = "\ufffd" if tokenizer.byte_level else "\n"
    chars = [vocabulary[i] if i < len(tokenizer.codes) else (eod if i == tokenizer.eod_id else "\ufffd")
             for i in ids.tolist()]
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
    with h5py.File(out / "states.hdf5", "w") as f:
        for l, layer in enumerate(trace.layers):
            for k, values in layer.items():
                f.create_dataset(f"{k}{l + 1}", data=values)
    with h5py.File(out / "train.hdf5", "w") as f:
        f.create_dataset("words", data=trace.ids.astype(np.int64))
    with open(out / "train.dict", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(f"{escape_symbol(symbol)} {i}\n" for i, symbol in enumerate(trace.vocabulary))
    (out / "lstm.yml").write_text(_lstmvis_config(trace, name), encoding="utf-8")
    return out


def escape_symbol(symbol: str) -> str:
    """`symbol` as one readable field free of whitespace, for the `.dict` LSTMVis reads with `line.split()`.

    A backslash, any character `str.split` splits on (form feed, U+00A0, U+3000, ...) and any other
    invisible character is written as a Python escape (`\\\\`, `\\n`, `\\f`, `\\u3000`), so no symbol loses
    its line and no two symbols are written alike.
    """
    return "".join(_escape_char(ch) for ch in symbol)


_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\f": "\\f", "\v": "\\v"}


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if ch.isprintable() and not ch.isspace():
        return ch
    return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"


def _lstmvis_config(trace: Trace, name: str) -> str:
    """lstm.yml, every string a double-quoted scalar: a run named `exp: lr 0.01 #x` must stay a name."""
    types = []
    for l, layer in enumerate(trace.layers):
        for k in layer:
            fields = {"type": "output" if k == "h" else "state", "layer": l + 1, "path": f"{k}{l + 1}"}
            # h is tanh-bounded and gates lie in [0, 1]: neither is squashed again. c is unbounded, so LSTMVis
            # applies its default tanh.
            if k == "h":
                fields["transform"] = "none"
            elif k in SIGMOID_GATES:
                fields.update(unsigned=True, transform="none")
            types.append("    - {" + ", ".join(f"{key}: {_yaml_scalar(v)}" for key, v in fields.items()) + "}")
    return "\n".join([
        f"name: {_yaml_scalar(name)}",
        f"description: {_yaml_scalar('activations dumped by charrnn')}",
        "files:", '  states: "states.hdf5"', '  train: "train.hdf5"', '  words: "train.dict"',
        "word_sequence:", '  file: "train"', '  path: "words"', '  dict_file: "words"',
        "states:", '  file: "states"', "  types:", *types, ""])


def _yaml_scalar(value: str | int | bool) -> str:
    """A YAML scalar. Strings are JSON strings, which are YAML double-quoted scalars, in plain ASCII; but
    YAML readers do not join JSON's surrogate pairs, so characters beyond U+FFFF are written as \\UXXXXXXXX."""
    if not isinstance(value, str):
        return json.dumps(value)
    return '"' + "".join(f"\\U{ord(ch):08x}" if ord(ch) > 0xFFFF else json.dumps(ch)[1:-1] for ch in value) + '"'


def gate_saturation(trace: Trace) -> dict:
    """Per layer and sigmoid gate, each unit's fraction of time left- (< 0.1) and right-saturated (> 0.9)."""
    out: dict = {}
    for l, layer in enumerate(trace.layers):
        for gate in [g for g in GATES[trace.cell] if g in SIGMOID_GATES]:
            values = layer[gate]
            left = (values < SATURATION_LOW).mean(axis=0)
            right = (values > SATURATION_HIGH).mean(axis=0)
            out.setdefault(f"layer{l}", {})[gate] = {
                "left": left.round(4).tolist(), "right": right.round(4).tolist(),
                "mean_left": float(left.mean()), "mean_right": float(right.mean())}
    return out


def describe(trace: Trace) -> dict:
    """A short JSON-ready summary of a trace (for `dump --json`)."""
    mean_nats = float(-np.nanmean(np.log(np.maximum(trace.next_prob[:-1], 1e-12)))) if trace.length > 1 else math.nan
    return {"chars": trace.length, "cell": trace.cell, "num_layers": len(trace.layers),
            "hidden_size": trace.layers[0]["h"].shape[1], "kinds": list(trace.layers[0]),
            "nats_per_char": mean_nats}
