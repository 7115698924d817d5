"""Tracing a text through a model: every hidden state, cell state and gate, per character and layer.

`iter_activations` runs the text (after the start-of-document token, hidden state carried, no dropout)
through the hand-written layers of `layers.py`, which read the trained weights in place, and yields, a
chunk of characters at a time, for every character t:
- per layer: h (and c for LSTM) after reading character t, and the gates that produced them
  (LSTM i, f, g, o; GRU r, z, n), each a (t, H) float32 array;
- the model's probability of the true next character, and its top-k predictions.
`collect_activations` gathers the chunks into one in-memory `Trace`; `dump_activations` writes each
chunk straight to its place in an .npz or LSTMVis file, so its memory is bounded by a few chunks and the
model whatever the length of the text. `load_npz` maps a dump back without reading it: the arrays of the
`Trace` it returns are memory-mapped, and only the rows a reader touches are read from disk. Asked for, the
same pass records which earlier characters each prediction used (`saliency.py`), from the states it traces.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from charrnn.core.cells import GATES, gru_step, layer_weights, lstm_step, rnn_step
from charrnn.core.errors import CharRNNError
from charrnn.core.files import replace_directory
from charrnn.core.signals import raise_on_signals
from charrnn.core.tokenizer import CharTokenizer
from charrnn.inspect.npz import NpzArchive, NpzFormatError, write_npz
from charrnn.inspect.saliency import (
    MAX_WINDOW,
    Saliency,
    SaliencyChunk,
    SaliencySettings,
    SaliencyTracer,
    check_saliency,
    collect_saliency,
    offset_dtype,
)
from charrnn.lm.model import CharRNN

FORMAT = "charrnn-activations"
VERSION = 2  # 2: uncompressed (memory-mappable) and `dtype` in the metadata; 1 was compressed float32
DTYPES = ("float32", "float16")
CHUNK = 2048  # characters traced, and rows written, at a time
SATURATION_LOW, SATURATION_HIGH = 0.1, 0.9  # Karpathy, Johnson & Fei-Fei (2015), section 4.3
SIGMOID_GATES = ("i", "f", "o", "r", "z")  # g (lstm) and n (gru) are tanh candidates, not gates
TANH_CANDIDATES = ("g", "n")
LSTMVIS_FILES = ("states.hdf5", "train.hdf5", "train.dict", "lstm.yml")


def trace_layer(cell: str, rnn: nn.RNNBase, layer: int, x: torch.Tensor, h: torch.Tensor,
                c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Run one layer over x (B, T, I) from state h (B, H) [and c], recording every step.

    Returns {"h": (B, T, H), "c": ... (lstm), and one (B, T, H) tensor per gate}.
    """
    w_ih, w_hh, b_ih, b_hh = layer_weights(rnn, layer)
    gi_all = torch.addmm(b_ih, x.reshape(-1, x.size(-1)), w_ih.t()).view(x.size(0), x.size(1), -1)  # (B, T, G)
    names = GATES[cell]
    out: dict[str, list[torch.Tensor]] = {"h": [], **({"c": []} if cell == "lstm" else {}), **{g: [] for g in names}}
    for t in range(x.size(1)):
        gi = gi_all[:, t]
        if cell == "lstm":
            h, c, gates = lstm_step(gi, h, c, w_hh, b_hh)
            out["c"].append(c)
        elif cell == "gru":
            h, gates = gru_step(gi, h, w_hh, b_hh)
        else:
            h, gates = rnn_step(gi, h, w_hh, b_hh), ()
        out["h"].append(h)
        for name, value in zip(names, gates):
            out[name].append(value)
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


def kinds_of(cell: str) -> tuple[str, ...]:
    """The recorded arrays per layer: h, c (lstm), then the gates."""
    return ("h", *(["c"] if cell == "lstm" else []), *GATES[cell])


@dataclass
class TraceChunk:
    """Rows [start, start + t) of a trace's per-character arrays: what the tracer yields at each step."""

    start: int
    layers: list[dict[str, np.ndarray]]  # layers[l][kind]: (t, H)
    next_prob: np.ndarray  # (t,)
    top_ids: np.ndarray  # (t, K)
    top_probs: np.ndarray  # (t, K)


@dataclass(frozen=True)
class TraceOutline:
    """What a trace holds besides its per-character values: all known before the first character is traced,
    so a file can be laid out, and written row block by row block, before the values exist."""

    chars: list[str]
    ids: np.ndarray  # (T,) int32
    vocabulary: list[str]
    cell: str
    num_layers: int
    hidden_size: int
    top_k: int  # K, the predictions kept per character
    source: dict = field(default_factory=dict)  # what was traced through what: {"checkpoint": ..., "text": ...}
    saliency: SaliencySettings | None = None  # what saliency the trace keeps, if any

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def kinds(self) -> tuple[str, ...]:
        return kinds_of(self.cell)


@dataclass
class Trace:
    """The activations of one text: `layers[l][kind]` is a (T, H) array, in memory or memory-mapped."""

    chars: list[str]  # the T characters of the text (one symbol per id)
    ids: np.ndarray  # (T,)
    cell: str
    layers: list[dict[str, np.ndarray]]
    next_prob: np.ndarray  # (T,) probability given to the true next character; NaN for the last
    top_ids: np.ndarray  # (T, K) most likely next characters after reading character t
    top_probs: np.ndarray  # (T, K)
    vocabulary: list[str] = field(default_factory=list)  # printable symbol of every id
    source: dict = field(default_factory=dict)  # what was traced through what: {"checkpoint": ..., "text": ...}
    saliency: Saliency | None = None  # which earlier characters each prediction used (see saliency.py)

    @property
    def length(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> Trace:
        """The first `n` characters of this trace (views, no copies)."""
        layers = [{k: v[:n] for k, v in layer.items()} for layer in self.layers]
        return Trace(self.chars[:n], self.ids[:n], self.cell, layers, self.next_prob[:n], self.top_ids[:n],
                     self.top_probs[:n], self.vocabulary, self.source,
                     self.saliency.head(n) if self.saliency is not None else None)

    def matrix(self) -> tuple[np.ndarray, list[tuple[int, str]]]:
        """All series side by side as a (T, N) array, with the (layer, kind) of each block of columns."""
        blocks = [(l, k) for l, layer in enumerate(self.layers) for k in layer]
        return np.concatenate([self.layers[l][k] for l, k in blocks], axis=1), blocks

    def outline(self) -> TraceOutline:
        return TraceOutline(self.chars, self.ids, self.vocabulary, self.cell, len(self.layers),
                            self.layers[0]["h"].shape[1], self.top_ids.shape[1], self.source,
                            self.saliency.settings if self.saliency is not None else None)

    def saliency_rows(self, part: TraceChunk) -> SaliencyChunk:
        """The stored saliency of the rows of `part`, one of this trace's `chunks`."""
        rows = slice(part.start, part.start + len(part.next_prob))
        return SaliencyChunk(part.start, self.saliency.offsets[rows], self.saliency.values[rows])

    def chunks(self, rows: int = CHUNK) -> Iterator[TraceChunk]:
        """This trace as the tracer would have yielded it, `rows` characters at a time (views)."""
        for a in range(0, self.length, rows):
            b = a + rows
            yield TraceChunk(a, [{k: v[a:b] for k, v in layer.items()} for layer in self.layers],
                             self.next_prob[a:b], self.top_ids[a:b], self.top_probs[a:b])


# ----- tracing ----------------------------------------------------------------------------------------

def outline_text(model: CharRNN, tokenizer: CharTokenizer, text: str | bytes, top_k: int = 5,
                 map_unknown: bool = False) -> TraceOutline:
    """Encode `text` and describe the trace `model` will make of it."""
    ids = tokenizer.encode(text, map_unknown=map_unknown)
    if len(ids) == 0:
        raise CharRNNError("the text to trace is empty")
    vocabulary = [tokenizer.symbol(i) for i in range(tokenizer.vocab_size)]
    eod = "\ufffd" if tokenizer.byte_level else "\n"
    chars = [vocabulary[i] if i < len(tokenizer.codes) else (eod if i == tokenizer.eod_id else "\ufffd")
             for i in ids.tolist()]
    config = model.config
    return TraceOutline(chars, ids.astype(np.int32), vocabulary, config.cell, config.num_layers, config.hidden_size,
                        min(top_k, tokenizer.vocab_size))


@torch.no_grad()
def iter_activations(model: CharRNN, tokenizer: CharTokenizer, ids: np.ndarray, chunk: int = CHUNK,
                     top_k: int = 5) -> Iterator[TraceChunk]:
    """Trace the token ids from the start-of-document state, `chunk` characters at a time, the state carried
    from one chunk to the next. See the module docstring."""
    model.eval()
    device = model.head.weight.device
    L, cell = model.config.num_layers, model.config.cell
    k_top = min(top_k, tokenizer.vocab_size)
    all_ids = torch.as_tensor(np.concatenate([[tokenizer.eod_id], ids]), device=device).long()
    # The start-of-document token is read first, as in training and sampling; it is not recorded.
    _, state = model(all_ids[:1].unsqueeze(0), model.init_state(1, device))
    h = [state[0][l] for l in range(L)]  # each (1, H)
    c = [state[1][l] for l in range(L)] if cell == "lstm" else [None] * L
    for start in range(0, len(ids), chunk):
        x = all_ids[1 + start: 1 + start + chunk].unsqueeze(0)  # (1, t)
        inputs = model.embed(x)
        layers = []
        for l in range(L):
            rec = trace_layer(cell, model.rnn, l, inputs, h[l], c[l])
            layers.append({k: v[0].float().cpu().numpy() for k, v in rec.items()})
            h[l] = rec["h"][:, -1]
            if cell == "lstm":
                c[l] = rec["c"][:, -1]
            inputs = rec["h"]
        probs = torch.softmax(model.head(inputs[0]).float(), dim=-1)  # (t, V)
        p, i = torch.topk(probs, k_top, dim=-1)
        following = all_ids[2 + start: 2 + start + x.size(1)]  # the true next characters
        next_prob = np.full(x.size(1), np.nan, dtype=np.float32)  # the last character has none
        next_prob[:len(following)] = probs[torch.arange(len(following), device=device), following].cpu().numpy()
        yield TraceChunk(start, layers, next_prob, i.cpu().numpy().astype(np.int32), p.cpu().numpy())


def collect_activations(model: CharRNN, tokenizer: CharTokenizer, text: str | bytes, chunk: int = CHUNK,
                        top_k: int = 5, map_unknown: bool = False, *, saliency: SaliencySettings | None = None,
                        on_progress: Callable[[int, int], None] | None = None) -> Trace:
    """Trace `text` through `model` into one in-memory `Trace` (preallocated, filled chunk by chunk), with the
    saliency of every prediction when `saliency` says how much to keep (`on_progress(done, total)` follows it)."""
    outline = outline_text(model, tokenizer, text, top_k, map_unknown)
    trace = _allocate(outline)
    for part in iter_activations(model, tokenizer, outline.ids, chunk, top_k):
        _store(trace, part)
    if saliency is not None:
        trace.saliency = collect_saliency(model, trace, tokenizer.eod_id, saliency, rows=chunk,
                                          on_progress=on_progress)
    return trace


def _allocate(o: TraceOutline) -> Trace:
    T, H = o.length, o.hidden_size
    layers = [{k: np.empty((T, H), dtype=np.float32) for k in o.kinds} for _ in range(o.num_layers)]
    return Trace(o.chars, o.ids, o.cell, layers, np.empty(T, np.float32), np.empty((T, o.top_k), np.int32),
                 np.empty((T, o.top_k), np.float32), o.vocabulary)


def _store(trace: Trace, part: TraceChunk) -> None:
    rows = slice(part.start, part.start + len(part.next_prob))
    for layer, values in zip(trace.layers, part.layers):
        for k, v in values.items():
            layer[k][rows] = v
    trace.next_prob[rows], trace.top_ids[rows], trace.top_probs[rows] = part.next_prob, part.top_ids, part.top_probs


def dump_activations(model: CharRNN, tokenizer: CharTokenizer, text: str | bytes, out: str | os.PathLike, *,
                     fmt: str = "npz", dtype: str = "float32", name: str = "charrnn", top_k: int = 5,
                     map_unknown: bool = False, chunk: int = CHUNK, source: dict | None = None,
                     saliency: SaliencySettings | None = None,
                     on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Trace `text` straight into a file, `chunk` characters at a time: memory stays bounded by a few chunks
    and the model, whatever the length of the text.

    `fmt` is "npz" (see `save_npz`) or "lstmvis" (a project directory, see `save_lstmvis`, which `name`
    names); `dtype` float16 halves the file; `source` (the checkpoint and text traced, by name) is kept in the
    .npz's metadata for the viewer's title. `saliency` adds which earlier characters each prediction used
    (`saliency.SaliencyTracer`, in the same pass; .npz only, always float16), and `on_progress(done, total)`
    follows its positions, which take most of the time. Returns the summary of `describe`, with "out",
    "format" and "dtype".

    The file (or the LSTMVis directory) appears whole or not at all: until the trace is complete it is
    written beside `out` under a temporary name, and Ctrl-C, SIGTERM or SIGHUP remove it (they raise
    KeyboardInterrupt here), leaving an earlier `out` as it was.
    """
    if fmt not in ("npz", "lstmvis"):
        raise CharRNNError(f"format {fmt!r}: choose npz or lstmvis")
    if fmt == "lstmvis" and saliency is not None:
        raise CharRNNError("--saliency is kept in the .npz only (an LSTMVis project has no place for it): "
                           "leave out --format lstmvis or --saliency")
    _check_dtype(dtype)
    outline = replace(outline_text(model, tokenizer, text, top_k, map_unknown), source=source or {},
                      saliency=saliency)
    surprisal = _Surprisal()
    parts = surprisal.tally(iter_activations(model, tokenizer, outline.ids, chunk, top_k))
    if fmt == "npz":
        tracer = None if saliency is None else SaliencyTracer(model, outline.ids, tokenizer.eod_id, saliency,
                                                              on_progress)
        written = _write_npz(outline, parts, npz_path(out), dtype, tracer.trace if tracer is not None else None)
    else:
        written = _write_lstmvis(outline, parts, Path(out), name, dtype)
    return {**_summary(outline, surprisal.mean), "out": str(written), "format": fmt, "dtype": dtype}


class _Surprisal:
    """The mean of -ln p(true next character) over the chunks of a trace, counted as they pass by."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def tally(self, parts: Iterable[TraceChunk]) -> Iterator[TraceChunk]:
        for part in parts:
            p = part.next_prob[~np.isnan(part.next_prob)]
            self.total -= float(np.log(np.maximum(p, 1e-12)).sum(dtype=np.float64))
            self.count += len(p)
            yield part

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise CharRNNError(f"dtype {dtype!r}: choose float32 or float16 (half the size, about 3 significant digits)")
    return np.dtype(dtype)


# ----- the .npz file ----------------------------------------------------------------------------------

def npz_path(path: str | os.PathLike) -> Path:
    """`path`, with `.npz` added unless it ends so."""
    path = Path(path)
    if path.suffix == ".npz":
        return path
    return path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")


def save_npz(trace: Trace, path: str | os.PathLike, dtype: str = "float32", *, chunk: int = CHUNK) -> Path:
    """One uncompressed .npz, written `chunk` rows at a time: `layer{l}_{kind}` arrays (T, H) in `dtype`,
    `chars`, `ids`, `vocabulary`, `next_prob`, `top_ids`, `top_probs`, and `meta` (JSON: format, version,
    cell, num_layers, hidden_size, dtype, and the source traced when known). `numpy.load` reads it; `load_npz`
    maps it. A trace with saliency also gets `saliency_offsets` and `saliency_values` (T, N), uint8 (uint16 for
    windows over 256) and float16, and its window and top in the metadata."""
    return _write_npz(trace.outline(), trace.chunks(chunk), npz_path(path), dtype,
                      trace.saliency_rows if trace.saliency is not None else None)


def _whole_arrays(o: TraceOutline, dtype: str) -> dict[str, np.ndarray]:
    """The arrays known before tracing starts, written at once."""
    meta = {"format": FORMAT, "version": VERSION, "cell": o.cell, "num_layers": o.num_layers,
            "hidden_size": o.hidden_size, "dtype": dtype, **({"source": o.source} if o.source else {}),
            **({"saliency": o.saliency.meta()} if o.saliency is not None else {})}
    return {"meta": np.array(json.dumps(meta)), "vocabulary": np.array(o.vocabulary, dtype=str),
            "chars": np.array(o.chars, dtype=str), "ids": o.ids}


def _write_npz(o: TraceOutline, parts: Iterable[TraceChunk], path: Path, dtype: str,
               saliency_of: Callable[[TraceChunk], SaliencyChunk] | None = None) -> Path:
    """Lay the file out (every shape is known from the outline), then write each chunk's rows in place, and
    the saliency of the same rows (`saliency_of` each chunk) when the outline keeps saliency."""
    _check_dtype(dtype)
    assert (o.saliency is None) == (saliency_of is None)
    whole = _whole_arrays(o, dtype)
    T, K, H = o.length, o.top_k, o.hidden_size
    layout = {**{name: (a.shape, a.dtype) for name, a in whole.items()},
              "next_prob": ((T,), np.dtype(np.float32)), "top_ids": ((T, K), np.dtype(np.int32)),
              "top_probs": ((T, K), np.dtype(np.float32)),
              **{f"layer{l}_{k}": ((T, H), np.dtype(dtype)) for l in range(o.num_layers) for k in o.kinds}}
    if o.saliency is not None:
        N = o.saliency.top
        layout["saliency_offsets"] = ((T, N), offset_dtype(o.saliency.window))
        layout["saliency_values"] = ((T, N), np.dtype(np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    with raise_on_signals(), write_npz(path, layout) as f:
        for name, values in whole.items():
            f.write(name, values)
        for part in parts:
            for l, layer in enumerate(part.layers):
                for k, values in layer.items():
                    f.write(f"layer{l}_{k}", values)
            f.write("next_prob", part.next_prob)
            f.write("top_ids", part.top_ids)
            f.write("top_probs", part.top_probs)
            if saliency_of is not None:
                rows = saliency_of(part)
                f.write("saliency_offsets", rows.offsets)
                f.write("saliency_values", rows.values)
    return path


def load_npz(path: str | os.PathLike, max_chars: int | None = None) -> Trace:
    """The first `max_chars` characters (all if None) of a dump written by `save_npz` or `dump_activations`.

    The (T, H) arrays are memory-mapped where the file stores them uncompressed (files of format version 1,
    compressed, are decompressed as far as `max_chars`), so only what is read is read. Everything is checked
    against the metadata first, and nothing pickled is ever loaded: a damaged or foreign file raises a
    `CharRNNError` saying what is wrong with it.
    """
    p = Path(path)
    if not p.is_file():
        raise CharRNNError(f"no such activations file: {str(p)!r}; make one with charrnn dump")
    try:
        with NpzArchive(p) as archive:
            return _read_trace(archive, max_chars)
    except NpzFormatError as err:
        raise CharRNNError(f"{str(p)!r} is not an activations file written by charrnn dump: {err}") from None
    except OSError as err:
        raise CharRNNError(f"cannot read {str(p)!r}: {err.strerror or err}") from None


def _read_trace(archive: NpzArchive, max_chars: int | None) -> Trace:
    """Check the file's metadata and shapes, then map its first `max_chars` rows."""
    meta = _read_meta(archive)
    kinds = kinds_of(meta["cell"])
    T = _check_arrays(archive, meta["num_layers"], kinds, meta.get("saliency"))
    n = T if max_chars is None else max(0, min(max_chars, T))
    vocabulary = [str(v) for v in archive.read("vocabulary")]
    ids, top_ids = archive.rows("ids", n, mapped=False), archive.rows("top_ids", n, mapped=False)
    for name, values in (("ids", ids), ("top_ids", top_ids)):
        if values.size and (values.min() < 0 or values.max() >= len(vocabulary)):
            raise NpzFormatError(f"{name} holds ids outside its vocabulary of {len(vocabulary)} symbols")
    layers = [{k: archive.rows(f"layer{l}_{k}", n) for k in kinds} for l in range(meta["num_layers"])]
    return Trace([str(c) for c in archive.rows("chars", n, mapped=False)], ids, meta["cell"], layers,
                 archive.rows("next_prob", n), top_ids, archive.rows("top_probs", n), vocabulary,
                 meta["source"] if isinstance(meta.get("source"), dict) else {}, _read_saliency(archive, meta, n))


def _read_saliency(archive: NpzArchive, meta: dict, n: int) -> Saliency | None:
    """The first `n` rows of the saliency (None in a dump without), its distances checked."""
    if "saliency" not in meta:
        return None
    window = meta["saliency"]["window"]
    saliency = Saliency(window, archive.rows("saliency_offsets", n), archive.rows("saliency_values", n))
    problem = check_saliency(saliency.offsets, saliency.values, window)
    if problem is not None:
        raise NpzFormatError(problem)
    return saliency


def _read_meta(archive: NpzArchive) -> dict:
    try:
        meta = json.loads(str(archive.read("meta")))
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise NpzFormatError(f"its meta array does not name the format {FORMAT!r}")
    if not isinstance(meta.get("version"), int):
        raise NpzFormatError("its meta array has no format version")
    if meta["version"] > VERSION:
        raise NpzFormatError(f"format version {meta['version']} is newer than this charrnn reads ({VERSION}); "
                             "upgrade charrnn")
    if meta.get("cell") not in GATES or not isinstance(meta.get("num_layers"), int) or meta["num_layers"] < 1:
        raise NpzFormatError(f"its meta array names no known cell and layer count: {json.dumps(meta)[:200]}")
    if meta.get("dtype", "float32") not in DTYPES:
        raise NpzFormatError(f"its meta array names an unknown dtype {meta['dtype']!r}")
    if "saliency" in meta:
        saliency = meta["saliency"]
        if not (isinstance(saliency, dict) and all(type(saliency.get(key)) is int for key in ("window", "top"))
                and 1 <= saliency["top"] <= saliency["window"] <= MAX_WINDOW):
            raise NpzFormatError(f"its meta array names no saliency window and top: {json.dumps(saliency)[:200]}")
    return meta


def _check_arrays(archive: NpzArchive, num_layers: int, kinds: tuple[str, ...], saliency: dict | None = None) -> int:
    """Check every array's shape and kind of values against the others' (and the saliency's against its
    window and top, when the metadata names them); returns T, the characters."""
    (T,), (V,) = _dims(archive, "ids", 1), _dims(archive, "vocabulary", 1)
    (_, K), (_, H) = _dims(archive, "top_ids", 2), _dims(archive, "layer0_h", 2)
    if T == 0:
        raise NpzFormatError("it holds no characters")
    expected = {"vocabulary": ((V,), "U"), "chars": ((T,), "U"), "ids": ((T,), "iu"), "next_prob": ((T,), "f"),
                "top_ids": ((T, K), "iu"), "top_probs": ((T, K), "f"),
                **{f"layer{l}_{k}": ((T, H), "f") for l in range(num_layers) for k in kinds}}
    if saliency is not None:
        expected.update(saliency_offsets=((T, saliency["top"]), "u"), saliency_values=((T, saliency["top"]), "f"))
    for name, (shape, value_kinds) in expected.items():
        got, dtype = archive.header(name)
        if got != shape:
            raise NpzFormatError(f"{name} has shape {got}, where the other arrays call for {shape}")
        if dtype.kind not in value_kinds:
            raise NpzFormatError(f"{name} holds {dtype} values, which no dump writes there")
    return T


def _dims(archive: NpzArchive, name: str, ndim: int) -> tuple[int, ...]:
    shape, _ = archive.header(name)
    if len(shape) != ndim:
        raise NpzFormatError(f"{name} has shape {shape}, where {ndim} dimension(s) were expected")
    return shape


# ----- LSTMVis ----------------------------------------------------------------------------------------

def save_lstmvis(trace: Trace, out_dir: str | os.PathLike, name: str = "charrnn", dtype: str = "float32", *,
                 chunk: int = CHUNK) -> Path:
    """A directory LSTMVis opens as a project: states.hdf5, train.hdf5, train.dict and lstm.yml."""
    return _write_lstmvis(trace.outline(), trace.chunks(chunk), Path(out_dir), name, dtype)


def check_lstmvis_dir(out: str | os.PathLike) -> None:
    """Refuse an LSTMVis output that is a file, or a directory holding anything but an earlier export (the
    export replaces the whole directory, so a file of the user's there would be lost)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CharRNNError(f"--out {str(out)!r} is a file; --format lstmvis writes a directory")
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if p.name not in LSTMVIS_FILES)
        if others:
            raise CharRNNError(f"--out {str(out)!r} holds {others[0]!r}, which is no part of an LSTMVis export; "
                               "an export replaces its whole directory: give a new one (or an earlier export)")


def _write_lstmvis(o: TraceOutline, parts: Iterable[TraceChunk], out: Path, name: str, dtype: str) -> Path:
    """The project directory, written beside `out` under a temporary name, then put in its place whole."""
    _check_dtype(dtype)
    try:
        import h5py  # noqa: F401 - checked before any work
    except ImportError:
        raise CharRNNError("--format lstmvis needs h5py: pip install 'charrnn[lstmvis]' (or h5py)") from None
    check_lstmvis_dir(out)
    out = out.resolve() if out.is_symlink() else out  # a link to a directory: replace what it points to
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with raise_on_signals():
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process of the same id
        try:
            tmp.mkdir()
            _write_lstmvis_files(o, parts, tmp, name, dtype)
            replace_directory(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_lstmvis_files(o: TraceOutline, parts: Iterable[TraceChunk], out: Path, name: str, dtype: str) -> None:
    """states.hdf5 has one (T, H) dataset per layer and kind, created at full size and filled a chunk at a time."""
    import h5py

    with h5py.File(out / "states.hdf5", "w") as f:
        datasets = [{k: f.create_dataset(f"{k}{l + 1}", shape=(o.length, o.hidden_size), dtype=dtype) for k in o.kinds}
                    for l in range(o.num_layers)]
        for part in parts:
            for written, layer in zip(datasets, part.layers):
                for k, values in layer.items():
                    written[k][part.start:part.start + len(values)] = values.astype(dtype, copy=False)
    with h5py.File(out / "train.hdf5", "w") as f:
        f.create_dataset("words", data=o.ids.astype(np.int64))
    with open(out / "train.dict", "w", encoding="utf-8", newline="\n") as f:
        f.writelines(dict_line(symbol, i) for i, symbol in enumerate(o.vocabulary))
    (out / "lstm.yml").write_text(_lstmvis_config(o, name), encoding="utf-8")


def dict_line(symbol: str, i: int) -> str:
    """One line of train.dict: the symbol, a space, its id. LSTMVis splits a line on whitespace, except one
    that starts with a space, which its loader reads as the space symbol: so the space is written as itself
    (escaped, it showed as `\\u0020` in every word), and every other symbol with `escape_symbol`."""
    return f"{symbol if symbol == ' ' else escape_symbol(symbol)} {i}\n"


def escape_symbol(symbol: str) -> str:
    """`symbol` as one readable field free of whitespace, for the `.dict` LSTMVis reads with `line.split()`
    (the space alone is written as itself: see `dict_line`).

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


def _lstmvis_config(o: TraceOutline, name: str) -> str:
    """lstm.yml, every string a double-quoted scalar: a run named `exp: lr 0.01 #x` must stay a name."""
    types = []
    for l in range(o.num_layers):
        for k in o.kinds:
            fields = {"type": "output" if k == "h" else "state", "layer": l + 1, "path": f"{k}{l + 1}"}
            # h and the tanh candidates (g, n) lie in [-1, 1] and the gates in [0, 1]: none is squashed again.
            # c is unbounded, so LSTMVis applies its default tanh.
            if k == "h" or k in TANH_CANDIDATES:
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
            left, right = _saturated_fractions(layer[gate])
            out.setdefault(f"layer{l}", {})[gate] = {
                "left": left.round(4).tolist(), "right": right.round(4).tolist(),
                "mean_left": float(left.mean()), "mean_right": float(right.mean())}
    return out


def _saturated_fractions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per unit of (T, H) `values`, the fractions below 0.1 and above 0.9, counted a block of rows at a time so a
    memory-mapped array is never compared whole."""
    left, right = np.zeros(values.shape[1], np.int64), np.zeros(values.shape[1], np.int64)
    for a in range(0, len(values), CHUNK):
        block = values[a:a + CHUNK]
        left += (block < SATURATION_LOW).sum(axis=0)
        right += (block > SATURATION_HIGH).sum(axis=0)
    return left / len(values), right / len(values)


def describe(trace: Trace) -> dict:
    """A short JSON-ready summary of a trace (for `dump --json`)."""
    mean_nats = float(-np.nanmean(np.log(np.maximum(trace.next_prob[:-1], 1e-12)))) if trace.length > 1 else math.nan
    return _summary(trace.outline(), mean_nats)


def _summary(o: TraceOutline, nats_per_char: float) -> dict:
    return {"chars": o.length, "cell": o.cell, "num_layers": o.num_layers, "hidden_size": o.hidden_size,
            "kinds": list(o.kinds), "nats_per_char": nats_per_char,
            "saliency": o.saliency.meta() if o.saliency is not None else None}
