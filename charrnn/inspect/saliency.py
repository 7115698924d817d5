"""Which earlier characters each prediction used: gradient x input over a window, the top entries per character.

Position t of a traced text is the prediction of character t + 1 after reading character t (the last
character has none). The influence of character t - k on it, k = 0..W - 1 (W, the window), is gradient x input
of that character's input vector (its embedding, or its one-hot vector in a model without one), summed over
the vector's dimensions:

    s(t, k) = grad_{x_{t-k}} log p(c_{t+1} | c_0..c_t) . x_{t-k}

(gradient x input: Shrikumar et al. 2016; Ancona et al. 2018). Positive s: the character made the true next
character likelier, to first order; negative: less likely. Summed over every input, s is the first-order
(Taylor) share of each input in log p: exact for a function linear in its inputs (Euler), which is what a test
checks on a model made linear.

Each position keeps its N largest |s| (N, the top), sorted by |s|: the signed values as float16, the distances
k as uint8 (uint16 for windows over 256). Entries that do not exist (near the start of the text, where only
characters 0..t can be used, and on the last character) hold NaN with k = 0.

The gradients come from `gradients.window_gradients`, a batch of positions per forward/backward pass, each
window started from the state the text before it left. Those states are the tracer's own: `SaliencyTracer`
follows a trace chunk by chunk (every layer's h, and c for an LSTM, after each character) and keeps the last W
rows, so the text is run only once however long it is, and memory is bounded by a chunk, a window of states
and a batch of windows. The positions in the first window, which need shorter windows, go one by one.

Shapes: T characters, N entries kept per position, W window, L layers, H hidden size, S state tensors (2 for
an LSTM: h and c; 1 otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from charrnn.core.errors import CharRNNError
from charrnn.inspect.gradients import batch_size_for, flush_denormals, states_before, window_gradients
from charrnn.lm.model import CharRNN

if TYPE_CHECKING:
    from charrnn.inspect.activations import Trace, TraceChunk

WINDOW, TOP = 100, 10  # the defaults of --saliency-window and --saliency-top
MAX_WINDOW = 65536  # distances k up to 65535 fit uint16
FLOAT16_MAX = float(np.finfo(np.float16).max)


def offset_dtype(window: int) -> np.dtype:
    """The dtype of the distances k < window: one byte while they fit."""
    return np.dtype(np.uint8 if window <= 256 else np.uint16)


@dataclass(frozen=True)
class SaliencySettings:
    """What a saliency pass keeps: the `top` largest |s| of the last `window` characters of each position."""

    window: int = WINDOW
    top: int = TOP

    def __post_init__(self) -> None:
        if not 1 <= self.window <= MAX_WINDOW:
            raise CharRNNError(f"--saliency-window must be 1 to {MAX_WINDOW:,} characters, got {self.window}")
        if not 1 <= self.top <= self.window:
            raise CharRNNError(f"--saliency-top must be 1 to the window's {self.window} characters "
                               f"(--saliency-window), got {self.top}")

    def meta(self) -> dict:
        return {"window": self.window, "top": self.top}


@dataclass
class SaliencyChunk:
    """Rows [start, start + t) of a text's saliency."""

    start: int
    offsets: np.ndarray  # (t, N) uint8 or uint16: k, characters back from the position
    values: np.ndarray  # (t, N) float16: s(t, k), largest |s| first; NaN where there is no entry


@dataclass
class Saliency:
    """The saliency of a whole text (in memory or memory-mapped): row t is the prediction after character t."""

    window: int
    offsets: np.ndarray  # (T, N)
    values: np.ndarray  # (T, N)

    @property
    def top(self) -> int:
        return self.offsets.shape[1]

    @property
    def settings(self) -> SaliencySettings:
        return SaliencySettings(self.window, self.top)

    def head(self, n: int) -> Saliency:
        return Saliency(self.window, self.offsets[:n], self.values[:n])


class SaliencyTracer:
    """The saliency of a text whose trace passes by, chunk by chunk (`trace` each chunk in order).

    `on_progress(done, total)` is called after each forward/backward pass with the positions done.
    """

    def __init__(self, model: CharRNN, ids: np.ndarray, sod_id: int, settings: SaliencySettings,
                 on_progress: Callable[[int, int], None] | None = None):
        self.model, self.ids, self.settings, self.on_progress = model, np.asarray(ids), settings, on_progress
        self.total, self.done = max(0, len(ids) - 1), 0  # positions with a next character
        self.batch = batch_size_for(model, settings.window - 1)
        self.device = model.head.weight.device
        start = states_before(model, self.ids, np.zeros(1, np.int64), sod_id)  # after the start-of-document token
        # The states after reading characters first, first + 1, ...: (S, L, rows, H) on the CPU. Row -1 is the
        # state before character 0, so the state before character s is always row s - 1.
        self._kept = torch.stack([s.float().cpu() for s in start])  # (S, L, 1, H)
        self._first = -1
        self._start = tuple(s.contiguous() for s in start)  # each (L, 1, H)

    def trace(self, part: TraceChunk) -> SaliencyChunk:
        """The saliency of the rows of `part` (the next chunk of the trace)."""
        a, b = part.start, part.start + len(part.next_prob)
        kinds = ("h", "c") if self.model.config.cell == "lstm" else ("h",)
        new = torch.stack([torch.stack([torch.as_tensor(np.asarray(layer[k], dtype=np.float32))
                                        for layer in part.layers]) for k in kinds])  # (S, L, t, H)
        self._kept = torch.cat([self._kept, new], dim=2)
        W, N = self.settings.window, self.settings.top
        offsets = np.zeros((b - a, N), offset_dtype(W))
        values = np.full((b - a, N), np.nan, np.float16)
        positions = np.arange(a, min(b, self.total))
        full = positions[positions >= W - 1]
        for t in positions[positions < W - 1]:  # shorter windows: only characters 0..t exist
            self._store(offsets, values, t - a, *self._gradients(np.array([t]), int(t) + 1, self._start))
        for i in range(0, len(full), self.batch):
            ends = full[i:i + self.batch]
            rows = torch.as_tensor(ends - W - self._first)  # the state before character t - W + 1
            state = tuple(s.to(self.device) for s in self._kept[:, :, rows].unbind(0))  # each (L, B, H)
            self._store(offsets, values, ends - a, *self._gradients(ends, W, state))
        keep = max(self._first, b - W) - self._first  # rows the next chunk's windows may still start from
        self._kept, self._first = self._kept[:, :, keep:], self._first + keep
        return SaliencyChunk(a, offsets, values)

    def _gradients(self, ends: np.ndarray, length: int, state) -> tuple[np.ndarray, np.ndarray]:
        """The top entries of the positions `ends`: (B, n) distances k and signed s, largest |s| first."""
        with flush_denormals():  # vanishing gradients: an rnn's windows took 5x longer in denormal arithmetic
            grads, inputs = window_gradients(self.model, self.ids, ends, length, state)
        s = (grads * inputs).sum(-1).flip(1)  # (B, length): column k is k characters back
        n = min(self.settings.top, length)
        k = torch.topk(s.abs(), n, dim=1).indices  # (B, n), sorted
        self.done += len(ends)
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)
        return k.cpu().numpy(), s.gather(1, k).cpu().numpy()

    @staticmethod
    def _store(offsets: np.ndarray, values: np.ndarray, rows, k: np.ndarray, s: np.ndarray) -> None:
        n = k.shape[1]
        offsets[rows, :n] = k
        values[rows, :n] = np.clip(s, -FLOAT16_MAX, FLOAT16_MAX)  # a float16 past 65504 would read inf


def collect_saliency(model: CharRNN, trace: Trace, sod_id: int, settings: SaliencySettings, *, rows: int = 2048,
                     on_progress: Callable[[int, int], None] | None = None) -> Saliency:
    """The saliency of a trace in memory (what `activations.collect_activations` returned for `model`)."""
    tracer = SaliencyTracer(model, trace.ids, sod_id, settings, on_progress)
    offsets = np.zeros((trace.length, settings.top), offset_dtype(settings.window))
    values = np.empty((trace.length, settings.top), np.float16)
    for part in trace.chunks(rows):
        chunk = tracer.trace(part)
        offsets[chunk.start:chunk.start + len(chunk.offsets)] = chunk.offsets
        values[chunk.start:chunk.start + len(chunk.values)] = chunk.values
    return Saliency(settings.window, offsets, values)


def check_saliency(offsets: np.ndarray, values: np.ndarray, window: int, rows: int = 65536) -> str | None:
    """What is wrong with stored saliency (None: nothing): a distance k outside the window, or before the text
    (k > t), where an entry exists. Read `rows` rows at a time, so memory-mapped arrays are never read whole."""
    for a in range(0, len(offsets), rows):
        k = np.asarray(offsets[a:a + rows], dtype=np.int64)
        present = ~np.isnan(np.asarray(values[a:a + rows], dtype=np.float32))
        if (k >= window).any():
            return f"saliency_offsets holds distances up to {int(k.max())}, outside its window of {window}"
        t = np.arange(a, a + len(k))[:, None]
        if ((k > t) & present).any():
            row = int(np.flatnonzero(((k > t) & present).any(axis=1))[0]) + a
            return f"saliency_offsets points before the start of the text at character {row}"
    return None
