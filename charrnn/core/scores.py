"""Scores of predicted labels against true ones: the confusion matrix, and per-label precision, recall and F1
with their macro average. Shared by the tasks that label things (texts, characters)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth, predicted, K: int) -> np.ndarray:
    """(K, K) counts: row = the true label, column = the predicted one."""
    matrix = np.zeros((K, K), dtype=np.int64)
    np.add.at(matrix, (np.asarray(truth, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def per_label_scores(matrix: np.ndarray, labels) -> tuple[dict, float]:
    """({label: precision, recall, f1, support}, macro-F1 over the labels that occur in the truth or the
    predictions)."""
    per_label, f1s = {}, []
    for k, label in enumerate(labels):
        tp, predicted_k, actual_k = int(matrix[k, k]), int(matrix[:, k].sum()), int(matrix[k].sum())
        precision = tp / predicted_k if predicted_k else 0.0
        recall = tp / actual_k if actual_k else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "f1": f1(precision, recall),
                            "support": actual_k}
        if actual_k or predicted_k:
            f1s.append(per_label[label]["f1"])
    return per_label, float(np.mean(f1s)) if f1s else 0.0
