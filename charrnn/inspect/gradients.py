"""How far back a prediction reaches: gradients of one prediction with respect to the characters read before it.

The prediction at position t is the log-probability the model gives the true next character after reading
characters 0..t of the text (after the start-of-document token, as training and sampling read it). Its
gradient with respect to the input vector of character t - k (the embedding, or the one-hot vector of a model
without one) says how much that character could move it: k = 0 is the character just read.

`window_gradients` computes those gradients for a batch of positions at once: each position is its own row of
the batch, a window of `length` characters ending at it, started from the hidden state the text before the
window left (`states_before`), so there is no zero-state artefact, and each row's gradient is its own (the
rows never mix, so the gradient of their summed log-probabilities is every row's own gradient). The fused
recurrent kernels do the work, in float32 and in eval mode (no dropout).

`memory_curve` averages their norms over positions spread along a text, for `charrnn gradients`.

Shapes: B positions, W window length, E input size (embedding, or V for one-hot), L layers, H hidden size.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.core.checkpoint import load_checkpoint, run_name
from charrnn.core.errors import CharRNNError
from charrnn.core.rnn import State
from charrnn.core.text import normalize_newlines
from charrnn.core.tokenizer import CharTokenizer
from charrnn.lm.config import LMTrainConfig
from charrnn.lm.model import CharRNN, check_checkpoint, model_from_checkpoint

STATE_CHUNK = 4096  # characters run at a time (no gradients) to find the states before the windows


def _no_cudnn(device: torch.device):
    """cuDNN runs an RNN's backward pass only in training mode; these gradients are taken in eval mode (no
    dropout), so on CUDA they use PyTorch's own kernels."""
    return torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else contextlib.nullcontext()


@contextlib.contextmanager
def flush_denormals():
    """Gradients that vanish pass through denormal floats (below 1e-38), which x86 CPUs compute up to 100x more
    slowly: a batch of 2x512 GRU windows took 9x longer without this on one thread (its matrix products are
    PyTorch's own; oneDNN's LSTM was as fast either way). Flushed to zero they change no curve at any threshold
    this module takes. PyTorch has no getter for the setting, so it is turned off again after, its default.

    The setting is the calling thread's: OpenMP's worker threads take the one of the thread that started them,
    so they flush only if it was on when they started (`charrnn gradients` turns it on before any other work;
    from Python, `torch.set_flush_denormal(True)` first thing does the same)."""
    flushing = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _device(model: CharRNN) -> torch.device:
    return model.head.weight.device


@torch.no_grad()
def states_before(model: CharRNN, ids: np.ndarray, starts: np.ndarray, sod_id: int,
                  chunk: int = STATE_CHUNK) -> State:
    """The state after reading the start-of-document token and ids[:s], for each s in `starts`: a tuple of
    (L, B, H) tensors in the order of `starts`. The text is run once, `chunk` characters at a time, so memory is
    bounded whatever its length."""
    starts = np.asarray(starts, dtype=np.int64)
    if len(starts) == 0:
        c = model.config
        return tuple(torch.empty(c.num_layers, 0, c.hidden_size, device=_device(model))
                     for _ in range(model.num_state_tensors))
    order = np.argsort(starts, kind="stable")
    (ascending,) = iter_states_before(model, ids, starts[order], sod_id, len(starts), chunk)
    back = torch.as_tensor(np.argsort(order, kind="stable"), device=_device(model))  # ascending -> given order
    return tuple(s[:, back] for s in ascending)


@torch.no_grad()
def iter_states_before(model: CharRNN, ids: np.ndarray, starts: np.ndarray, sod_id: int, group: int,
                       chunk: int = STATE_CHUNK) -> Iterator[State]:
    """`states_before` for ascending `starts`, `group` of them at a time ((L, group, H) tensors each; the last
    group may be smaller), from one pass over the text: only one group's states are held at once."""
    model.eval()
    device = _device(model)
    _, state = model(torch.tensor([[sod_id]], device=device), model.init_state(1, device))
    done = 0  # characters read so far, after the start-of-document token
    for first in range(0, len(starts), group):
        found = []
        for start in starts[first:first + group]:
            while done < start:  # run up to it, a chunk at a time
                stop = min(int(start), done + chunk)
                _, state = model(torch.as_tensor(ids[done:stop], device=device).long().unsqueeze(0), state)
                done = stop
            found.append(state)
        yield tuple(torch.cat(parts, dim=1) for parts in zip(*found))


def window_gradients(model: CharRNN, ids: np.ndarray, ends: np.ndarray, length: int,
                     state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position t in `ends`: the gradient of log p(ids[t + 1] | ids[..t]) with respect to the input
    vectors of ids[t - length + 1 .. t], read from `state` (the state before ids[t - length + 1], from
    `states_before`).

    Returns (gradients, inputs), each (B, length, E) float32: index j of a row is character t - length + 1 + j,
    so the last index is k = 0 (the character just read) and index length - 1 - k is k characters back.
    """
    model.eval()
    device = _device(model)
    ends = np.asarray(ends, dtype=np.int64)
    if len(ends) and (ends.min() < length - 1 or ends.max() + 1 >= len(ids)):
        raise ValueError("every position needs `length` characters up to it and a next character after it")
    index = ends[:, None] + np.arange(1 - length, 1)[None]  # (B, W)
    x = torch.as_tensor(ids[index], device=device).long()
    target = torch.as_tensor(ids[ends + 1], device=device).long()
    with torch.enable_grad(), _no_cudnn(device):
        inputs = model.embed(x).detach().float().requires_grad_(True)  # (B, W, E)
        state_in = state if model.config.cell == "lstm" else state[0]
        out, _ = model.rnn(inputs, state_in)
        logits = model.head(out[:, -1]).float()  # (B, V): only the last step's prediction
        log_prob = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).sum()
        (grads,) = torch.autograd.grad(log_prob, inputs)
    return grads, inputs.detach()


# ----- memory through time: the mean gradient norm k characters back -------------------------------------
#
# The curve of a model on a text: for positions t spread evenly over it, the L2 norm of the gradient of
# log p(true next char | text up to t) with respect to the input vector of character t - k, k = 0..K, averaged
# over the positions (the mean of the norms). Its fall says how fast a prediction stops depending on what was
# read before (vanishing gradients, Bengio, Simard & Frasconi 1994; Pascanu, Mikolov & Bengio 2013); its
# **memory length** is the first k where it falls below `threshold` x its value at k = 0.

GRADIENT_MEMORY = 2**30  # bytes the saved activations of one batch of windows may take, about (see `batch_size_for`)
FLOATS_PER_STEP = 16  # floats autograd keeps per unit, step and layer of a window (gates, states), a generous guess


def check_memory_settings(max_distance: int, positions: int, threshold: float, batch_size: int | None) -> None:
    """Refuse settings no curve can be measured with, before any work."""
    if max_distance < 1:
        raise CharRNNError(f"--max-distance must be at least 1, got {max_distance}")
    if positions < 1:
        raise CharRNNError(f"--positions must be at least 1, got {positions}")
    if not 0 < threshold < 1:  # also refuses NaN
        raise CharRNNError(f"--threshold must lie between 0 and 1 (a fraction of the value at distance 0), got "
                           f"{threshold:g}")
    if batch_size is not None and batch_size < 1:
        raise CharRNNError(f"--batch-size must be at least 1, got {batch_size}")


def spread_positions(length: int, max_distance: int, count: int) -> np.ndarray:
    """Up to `count` positions t spread evenly over a text of `length` characters, each with `max_distance`
    characters before it and a next character after it (max_distance <= t <= length - 2), ascending and
    distinct; every such position when there are no more than `count`."""
    available = length - 1 - max_distance
    if available < 1:
        raise CharRNNError(f"the text is {length:,} characters long; a distance of {max_distance:,} needs at least "
                           f"{max_distance + 2:,} (give a longer text or a lower --max-distance)")
    # Steps of at least 1 between the unrounded positions keep the rounded ones distinct.
    return np.linspace(max_distance, length - 2, min(count, available)).round().astype(np.int64)


def batch_size_for(model: CharRNN, max_distance: int) -> int:
    """Positions per forward/backward pass: 64, fewer where their saved activations would pass GRADIENT_MEMORY."""
    c = model.config
    per_window = (max_distance + 1) * c.num_layers * c.hidden_size * FLOATS_PER_STEP * 4  # bytes
    return max(1, min(64, GRADIENT_MEMORY // per_window))


def memory_curve(model: CharRNN, ids: np.ndarray, sod_id: int, *, max_distance: int = 200, positions: int = 256,
                 batch_size: int | None = None,
                 on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """The mean gradient norm k characters back, k = 0..max_distance, over up to `positions` positions of the
    text `ids` (see `spread_positions`), each read from the state the text before its window left.

    Returns (curve, n): the (max_distance + 1,) float64 curve and the number of positions it averages.
    `batch_size` positions go through one forward/backward pass (None: `batch_size_for`); `on_progress(n)` is
    called after each pass with the positions done. Memory: the model and one batch of windows with their states
    (never anything per position beyond the curve's sum, nor per character of the text).
    """
    ends = spread_positions(len(ids), max_distance, positions)
    batch_size = batch_size or batch_size_for(model, max_distance)
    states = iter_states_before(model, ids, ends - max_distance, sod_id, batch_size)  # each batch's, in one pass
    total = np.zeros(max_distance + 1)
    with flush_denormals():
        for start, state in zip(range(0, len(ends), batch_size), states):
            grads, _ = window_gradients(model, ids, ends[start:start + batch_size], max_distance + 1, state)
            norms = torch.linalg.vector_norm(grads, dim=-1).flip(1)  # (B, K + 1): column k is k characters back
            total += norms.double().sum(0).cpu().numpy()
            if on_progress is not None:
                on_progress(min(start + batch_size, len(ends)))
    return total / len(ends), len(ends)


def relative_curve(curve: Sequence[float]) -> np.ndarray:
    """The curve divided by its value at k = 0 (NaN throughout where that is 0: nothing to compare with)."""
    curve = np.asarray(curve, dtype=np.float64)
    return curve / curve[0] if curve[0] > 0 else np.full_like(curve, np.nan)


def memory_length(curve: Sequence[float], threshold: float = 1e-3) -> int | None:
    """The first distance k at which `curve` falls below `threshold` x curve[0] (strictly), or None if it never
    does within the curve (nor when curve[0] is 0 or not finite: no scale to fall from)."""
    curve = np.asarray(curve, dtype=np.float64)
    if not (curve[0] > 0 and math.isfinite(curve[0])):
        return None
    below = np.flatnonzero(curve < threshold * curve[0])
    return int(below[0]) if len(below) else None


def initial_model(ckpt: dict, device: torch.device | str = "cpu") -> tuple[CharRNN, int | None]:
    """The checkpoint's architecture at initialisation, and the seed of the run it reproduces.

    Training seeds every generator with the run's seed and builds the model first thing after (the trainer's
    `seed_everything`, then the task's `build`), on the CPU, so a run whose checkpoint records its seed gets
    exactly its own starting weights back (a test trains a run and compares). A checkpoint that records none
    gets an initialisation seeded with charrnn's default seed, and None for the seed. The global generators are
    left as they were.
    """
    recorded = (ckpt.get("meta") or {}).get("train_config") or {}
    seed = recorded.get("seed") if isinstance(recorded, dict) else None
    own = isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed if own else LMTrainConfig.seed)
        model = CharRNN(check_checkpoint(ckpt))
    return model.to(device).eval(), seed if own else None


@dataclass(frozen=True)
class MemoryRun:
    """One curve to measure: a model, the text as its tokenizer reads it, and its label."""

    name: str
    model: CharRNN
    ids: np.ndarray
    sod_id: int
    untrained: bool = False


def _read_as_language_model(path: str | os.PathLike) -> dict:
    def check(ckpt: dict) -> None:
        if ckpt.get("task") != "lm":
            raise CharRNNError(f"{str(path)!r} holds a {ckpt.get('task')!r} model; gradients reads language models")
        check_checkpoint(ckpt)

    return load_checkpoint(path, check=check)


def load_memory_runs(paths: Sequence[str | os.PathLike], text: str, *, untrained: bool = False,
                     map_unknown: bool = False, device: torch.device | str = "cpu") -> list[MemoryRun]:
    """The language models of `paths` (run directories or .pt files), each with `text` encoded by its own
    tokenizer after its line ends are read as its corpus's were; with `untrained`, each followed by the same
    architecture at initialisation (`initial_model`). Labels are run names (`run_name`), made distinct with
    " #2", " #3"; an untrained one adds " (untrained)", or " (untrained, seed N)" where its run recorded no seed.

    Characters a model's vocabulary lacks raise `CharRNNError` naming them, or become <unk> with `map_unknown`.
    """
    from charrnn.lm.task import trained_newline

    runs, seen = [], {}
    for path in paths:
        ckpt = _read_as_language_model(path)
        model, tokenizer = model_from_checkpoint(ckpt, device)
        ids = _encode(tokenizer, normalize_newlines(text, trained_newline(ckpt)), map_unknown, path)
        name = run_name(path)
        seen[name] = seen.get(name, 0) + 1
        name = name if seen[name] == 1 else f"{name} #{seen[name]}"
        runs.append(MemoryRun(name, model, ids, tokenizer.eod_id))
        if untrained:
            start, seed = initial_model(ckpt, device)
            label = "untrained" if seed is not None else f"untrained, seed {LMTrainConfig.seed}"
            runs.append(MemoryRun(f"{name} ({label})", start, ids, tokenizer.eod_id, untrained=True))
    return runs


def _encode(tokenizer: CharTokenizer, text: str, map_unknown: bool, path) -> np.ndarray:
    try:
        return tokenizer.encode(text, map_unknown=map_unknown)
    except CharRNNError as e:
        raise CharRNNError(f"{run_name(path)}: {e}") from None


def memory_report(runs: Sequence[MemoryRun], *, max_distance: int = 200, positions: int = 256,
                  threshold: float = 1e-3, batch_size: int | None = None, text_chars: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Measure every run's curve (`memory_curve`) and its memory length; the result is plain data:

    {"max_distance", "threshold", "positions" (asked for), "text_chars", "runs": [{"name", "cell", "num_layers",
    "hidden_size", "untrained", "positions" (averaged over), "curve" (K + 1 mean norms), "relative" (curve /
    curve[0]), "memory_length" (int, or None when the curve never falls that low within K)}]}.

    Every run's text is checked against `max_distance` before the first gradient; `on_progress(done, total)`
    counts positions over all runs.
    """
    check_memory_settings(max_distance, positions, threshold, batch_size)
    counts = [len(spread_positions(len(r.ids), max_distance, positions)) for r in runs]
    total, done = sum(counts), 0
    if on_progress is not None:
        on_progress(0, total)
    results = []
    for run, count in zip(runs, counts):
        progress = None if on_progress is None else lambda n, before=done: on_progress(before + n, total)
        curve, n = memory_curve(run.model, run.ids, run.sod_id, max_distance=max_distance, positions=positions,
                                batch_size=batch_size, on_progress=progress)
        done += count
        c = run.model.config
        results.append({"name": run.name, "cell": c.cell, "num_layers": c.num_layers, "hidden_size": c.hidden_size,
                        "untrained": run.untrained, "positions": n, "curve": curve.tolist(),
                        "relative": relative_curve(curve).tolist(), "memory_length": memory_length(curve, threshold)})
    return {"max_distance": max_distance, "threshold": threshold, "positions": positions, "text_chars": text_chars,
            "runs": results}
