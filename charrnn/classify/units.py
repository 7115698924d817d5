"""Which single unit tracks the label: the "sentiment neuron" of Radford, Jozefowicz & Sutskever (2017), looked
for in any classifier. Each unit of the pooled vector the head reads (for a unidirectional GRU with last
pooling, the final hidden state) is scored, for every label, by how well one threshold on that unit alone
separates the label's texts from the rest: the best such accuracy, beside the rate a constant guess gets."""

from __future__ import annotations

import os

import numpy as np
import torch

from charrnn.classify.model import Classifier
from charrnn.core.batches import pad


@torch.no_grad()
def pooled_features(model: Classifier, ids: list[np.ndarray], pad_id: int, batch: int = 256) -> np.ndarray:
    """(N, D): the vector the head reads, for each text."""
    device = model.head.weight.device
    out = []
    for start in range(0, len(ids), batch):
        x, lengths = pad(ids[start:start + batch], pad_id)
        x, lengths = x.to(device), lengths.to(device)
        out.append(model.pool(model.encoder(x, lengths), lengths).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.encoder.out_size))


def threshold_accuracies(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """(D,): for each column of `values` (N, D), the best accuracy of one threshold telling `positive` (N,)
    from the rest, on either side."""
    N = len(positive)
    order = np.argsort(values, axis=0, kind="stable")  # (N, D)
    pos = positive[order].astype(np.int64)  # labels in each unit's sorted order
    pos_below = np.vstack([np.zeros((1, values.shape[1]), dtype=np.int64), np.cumsum(pos, axis=0)])  # (N+1, D)
    neg_below = np.arange(N + 1)[:, None] - pos_below
    total_pos = int(positive.sum())
    above_is_positive = (neg_below + (total_pos - pos_below)) / N  # threshold after k items: above = positive
    return np.maximum(above_is_positive, 1 - above_is_positive).max(0)


def rank_label_units(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "test", top: int = 5,
                     device: str = "auto") -> dict:
    """For each label, the `top` units whose single threshold best separates its texts from the others', on
    `data` (every example) or the run's own `part`: {"examples", "data", "units": D, "labels": {label: [{"unit",
    "accuracy", "base_rate", "correlation"}]}}."""
    from charrnn.classify.config import ClassifyTrainConfig
    from charrnn.classify.data import read_classify_data
    from charrnn.classify.model import load_classifier
    from charrnn.classify.task import encode_texts, read_run_data
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.core.errors import CharRNNError

    model, tokenizer, ckpt = load_classifier(checkpoint, resolve_device(device))
    run = trained_with(ckpt, ClassifyTrainConfig)
    if data is None:
        examples = getattr(read_run_data(run), part)
        if examples is None:
            raise CharRNNError(f"this run held out no {part} examples; name labelled texts: charrnn cells RUN DATA")
        where = f"{run.data} ({part})"
    else:
        examples = read_classify_data(data, format=run.format, text_column=run.text_column,
                                      label_column=run.label_column, val_frac=0.0).train
        where = str(data)
    features = pooled_features(model, encode_texts(tokenizer, examples.texts, run.max_chars), tokenizer.eod_id)
    truth = np.array(examples.labels)
    ranking = {}
    centred = features - features.mean(0)
    for label in model.config.labels:
        positive = truth == label
        if not positive.any():
            continue
        accuracy = threshold_accuracies(features, positive)
        y = positive - positive.mean()
        corr = (centred * y[:, None]).sum(0) / np.maximum(np.sqrt((centred ** 2).sum(0) * (y ** 2).sum()), 1e-12)
        base = max(positive.mean(), 1 - positive.mean())
        best = np.argsort(-accuracy, kind="stable")[:top]
        ranking[label] = [{"unit": int(u), "accuracy": float(accuracy[u]), "base_rate": float(base),
                           "correlation": float(corr[u])} for u in best]
    return {"examples": len(examples), "data": where, "units": int(features.shape[1]), "labels": ranking}
