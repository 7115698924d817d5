"""Using a classifier: the label of each text (`charrnn classify predict`), and how each label's probability
moves as a text is read, character by character (`charrnn classify trace`), with its picture."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from charrnn.classify.evaluate import predict_ids
from charrnn.classify.model import Classifier, load_classifier
from charrnn.core import svg
from charrnn.core.batches import in_batches, pad
from charrnn.core.errors import CharRNNError
from charrnn.core.tokenizer import CharTokenizer

PREDICT_BATCH = 512  # texts read from a file or stdin are classified this many at a time, as they come
MAX_TRACE_CHARS = 2000  # a trace reads every prefix of the text: its cost grows with the square of the length


def check_top_k(top_k: int, labels: tuple[str, ...]) -> int:
    if top_k < 1:
        raise CharRNNError(f"--top-k must be at least 1, got {top_k}")
    return min(top_k, len(labels))


def _ranked(probs: np.ndarray, labels: tuple[str, ...], top_k: int) -> list[dict]:
    order = np.argsort(-probs, kind="stable")[:top_k]
    return [{"label": labels[k], "probability": float(probs[k])} for k in order]


def iter_predictions(model: Classifier, tokenizer: CharTokenizer, texts: Iterable[str], *, top_k: int = 1,
                     max_chars: int = 1000) -> Iterator[dict]:
    """{"text", "label", "probability", "top": [...]} of each text, in order, classified a batch at a time so
    that a long stream of texts answers as it goes."""
    top_k = check_top_k(top_k, model.config.labels)
    for batch in in_batches(texts, PREDICT_BATCH):
        if not all(batch):
            raise CharRNNError("an empty text has no label; give at least one character")
        ids = [tokenizer.encode(t[:max_chars], map_unknown=True) for t in batch]
        for text, probs in zip(batch, predict_ids(model, ids, tokenizer.eod_id)):
            top = _ranked(probs, model.config.labels, top_k)
            yield {"text": text, "label": top[0]["label"], "probability": top[0]["probability"], "top": top}


def predict_texts(checkpoint: str | os.PathLike, texts: list[str], *, top_k: int = 1,
                  device: str = "auto") -> list[dict]:
    """The label (and the `top_k` most likely labels with their probabilities) of each text."""
    from charrnn.classify.config import ClassifyTrainConfig
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_classifier(checkpoint, resolve_device(device))
    max_chars = trained_with(ckpt, ClassifyTrainConfig).max_chars
    return list(iter_predictions(model, tokenizer, texts, top_k=top_k, max_chars=max_chars))


@torch.no_grad()
def trace_probabilities(model: Classifier, tokenizer: CharTokenizer, text: str) -> np.ndarray:
    """(T, K): row t is each label's probability after reading the first t + 1 characters (every prefix is
    classified as a text of its own, so a bidirectional model's trace is what it says of that prefix)."""
    if not text:
        raise CharRNNError("an empty text has no trace; give at least one character")
    if len(text) > MAX_TRACE_CHARS:
        raise CharRNNError(f"the text has {len(text):,} characters; a trace reads every prefix, so it takes at most "
                           f"{MAX_TRACE_CHARS:,}: trace a part of it")
    ids = tokenizer.encode(text, map_unknown=True)
    device = model.head.weight.device
    out = []
    for start in range(0, len(ids), 256):
        rows = [ids[: t + 1] for t in range(start, min(start + 256, len(ids)))]
        batch, lengths = pad(rows, tokenizer.eod_id)
        out.append(model(batch.to(device), lengths.to(device)).float().softmax(-1).cpu().numpy())
    return np.concatenate(out)


def trace_svg(text: str, probs: np.ndarray, labels: tuple[str, ...], *, show: int = 6, title: str = "") -> str:
    """Each label's probability (the `show` labels most likely at any point) against the characters read."""
    T = len(text)
    shown = sorted(np.argsort(-probs.max(0), kind="stable")[:show])
    width = min(max(480, 70 + 9 * T), 4000)
    box = svg.Box(56, 36, width - 80, 220, x_range=(0, max(T - 1, 1)), y_range=(0.0, 1.0))
    parts = [svg.text(width / 2, 20, title or "label probability as the text is read", anchor="middle", size=14)]
    parts += svg.axes(box, "characters read", "probability", ticks=5, x_format="{:.0f}")
    for n, k in enumerate(shown):
        points = [box.at(t, float(probs[t, k])) for t in range(T)]
        parts.append(svg.polyline(points, svg.COLOURS[n % len(svg.COLOURS)]))
    parts += svg.legend(box.left + 8, box.top + 16, [(labels[k], svg.COLOURS[n % len(svg.COLOURS)])
                                                     for n, k in enumerate(shown)])
    if T <= 400:  # the characters under the axis, where the plot has room for them
        step = box.width / max(T - 1, 1)
        parts += [svg.text(box.at(t, 0)[0], box.bottom + 52, c if c.strip() else "·", anchor="middle",
                           size=max(6, min(12, int(step))))
                  for t, c in enumerate(text)]
    return svg.document(width, 330, parts)


def trace_text(checkpoint: str | os.PathLike, text: str, *, device: str = "auto",
               svg_path: Path | None = None) -> dict:
    """{"text", "labels", "probabilities": (T, K) as lists, "final": the label after the whole text}; with
    `svg_path`, the picture of it."""
    from charrnn.core.device import resolve_device
    from charrnn.core.files import write_text_atomic

    model, tokenizer, _ = load_classifier(checkpoint, resolve_device(device))
    probs = trace_probabilities(model, tokenizer, text)
    labels = model.config.labels
    if svg_path is not None:
        write_text_atomic(svg_path, trace_svg(text, probs, labels))
    final = int(probs[-1].argmax())
    return {"text": text, "labels": list(labels), "probabilities": probs.round(6).tolist(), "final": labels[final]}
