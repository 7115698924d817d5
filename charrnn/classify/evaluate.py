"""Scoring a classifier: accuracy (a fraction, 0-1), macro-F1, per-label precision and recall, the confusion
matrix (as numbers and as a picture), and `charrnn classify eval`."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch

from charrnn.classify.model import Classifier
from charrnn.core.batches import pad
from charrnn.core.errors import check_stop
from charrnn.core.scores import confusion_matrix, per_label_scores

EVAL_BATCH = 256


@torch.no_grad()
def predict_ids(model: Classifier, ids: list[np.ndarray], pad_id: int, *,
                should_stop: Callable[[], bool] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Label probabilities (N, K) of texts given as ids, in batches of similar lengths."""
    device = model.head.weight.device
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = np.zeros((len(ids), len(model.config.labels)), dtype=np.float64)
    for start in range(0, len(order), EVAL_BATCH):
        check_stop(should_stop)
        rows = order[start:start + EVAL_BATCH]
        batch, lengths = pad([ids[r] for r in rows], pad_id)
        logits = model(batch.to(device), lengths.to(device))
        out[rows] = logits.float().softmax(-1).cpu().numpy()
        if on_progress is not None:
            on_progress(min(start + EVAL_BATCH, len(order)), len(order))
    return out


def classification_scores(probs: np.ndarray, truth: list[str], labels: tuple[str, ...]) -> dict:
    """Accuracy, macro-F1 (over the labels that occur in `truth` or the predictions), per-label precision,
    recall and F1, the confusion matrix and the mean cross-entropy. A true label the model does not know counts
    as wrong (and as infinite loss, left out of the mean)."""
    index = {label: k for k, label in enumerate(labels)}
    known = [k for k, t in enumerate(truth) if t in index]
    predicted = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    correct = sum(1 for k in known if predicted[k] == index[truth[k]])
    y = [index[truth[k]] for k in known]
    matrix = confusion_matrix(y, [int(predicted[k]) for k in known], len(labels))
    per_label, macro_f1 = per_label_scores(matrix, labels)
    losses = [-math.log(max(float(probs[k, index[truth[k]]]), 1e-30)) for k in known]
    return {"examples": len(truth), "accuracy": correct / len(truth) if truth else 0.0,
            "macro_f1": macro_f1, "loss": float(np.mean(losses)) if losses else 0.0,
            "per_label": per_label, "confusion": matrix.tolist(), "labels": list(labels)}


def majority_baseline(train_labels: list[str], truth: list[str]) -> float:
    """The accuracy of always answering the most frequent training label."""
    if not truth:
        return 0.0
    most = max(set(train_labels), key=lambda label: (train_labels.count(label), label))
    return sum(1 for t in truth if t == most) / len(truth)


def evaluate_classifier(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "test",
                        skip_bad: bool = False, baseline: bool = False, device: str = "auto",
                        on_progress: Callable[[int, int], None] | None = None) -> dict:
    """Accuracy, macro-F1, per-label precision/recall and the confusion matrix on `data` (every example of it),
    or, without `data`, on the run's own held-out part (`part`: "test", "val" or "train", split as the run was).
    Beside them, the accuracy of always answering the most frequent training label and, with `baseline`, of a
    character n-gram linear classifier trained on the run's training part (`baseline.ngram_baseline`)."""
    from charrnn.classify.config import ClassifyTrainConfig
    from charrnn.classify.data import read_classify_data
    from charrnn.classify.model import load_classifier
    from charrnn.classify.task import encode_texts, read_run_data
    from charrnn.core.checkpoint import trained_with
    from charrnn.core.device import resolve_device
    from charrnn.core.errors import CharRNNError

    model, tokenizer, ckpt = load_classifier(checkpoint, resolve_device(device))
    run = trained_with(ckpt, ClassifyTrainConfig)
    split = read_run_data(run)
    if data is None:
        examples = {"test": split.test, "val": split.val, "train": split.train}[part]
        if examples is None:
            raise CharRNNError(f"this run held out no {part} examples (--{part}-frac 0); name the examples to score: "
                               "charrnn classify eval RUN DATA")
        where = f"{run.data} ({part})"
    else:
        read = read_classify_data(data, format=run.format, text_column=run.text_column, label_column=run.label_column,
                                  val_frac=0.0, test_frac=0.0, skip_bad=skip_bad)
        examples, where = read.train, str(data)
    ids = encode_texts(tokenizer, examples.texts, run.max_chars)
    probs = predict_ids(model, ids, tokenizer.eod_id, on_progress=on_progress)
    scores = classification_scores(probs, examples.labels, model.config.labels)
    scores["data"] = where
    scores["majority_baseline"] = majority_baseline(split.train.labels, examples.labels)
    if baseline:
        from charrnn.classify.baseline import ngram_baseline

        scores["ngram_baseline"] = ngram_baseline(split.train.texts, split.train.labels, examples.texts,
                                                  examples.labels, model.config.labels, seed=run.seed)
    return scores


def confusion_svg(matrix: list[list[int]], labels: list[str]) -> str:
    """The confusion matrix as a picture: rows are the true labels, columns the predicted ones, each cell shaded
    by the share of its row (so a small class reads as clearly as a big one) and labelled with its count."""
    from charrnn.core import svg

    K = len(labels)
    cell = max(18, min(44, 640 // max(K, 1)))
    left, top = 12 + 7 * max((len(label) for label in labels), default=4), 40
    width, height = left + cell * K + 24, top + cell * K + 7 * max((len(label) for label in labels), default=4) + 30
    parts = [svg.text(width / 2, 20, "confusion matrix (rows: true label, columns: predicted)", anchor="middle",
                      size=13)]
    for i, row in enumerate(matrix):
        total = max(sum(row), 1)
        parts.append(svg.text(left - 6, top + cell * i + cell / 2 + 4, labels[i], anchor="end", size=11))
        for j, count in enumerate(row):
            shade = count / total
            colour = f"rgb({255 - int(200 * shade)},{255 - int(140 * shade)},255)"
            x, y = left + cell * j, top + cell * i
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{colour}" stroke="#ddd"/>')
            if count:
                parts.append(svg.text(x + cell / 2, y + cell / 2 + 4, str(count), anchor="middle",
                                      size=max(7, min(11, cell // 3)), fill="white" if shade > 0.6 else None))
    for j, label in enumerate(labels):
        x = left + cell * j + cell / 2 + 4
        parts.append(svg.text(x, top + cell * K + 8, label, anchor="end", size=11, vertical=True))
    return svg.document(width, height, parts)
