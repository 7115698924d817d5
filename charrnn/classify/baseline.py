"""What a user would pick instead of a recurrent classifier: a linear classifier over hashed character n-grams,
as fastText does (Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification": a text is the mean of
its n-grams' embeddings, then a linear layer). Trained here on the run's own training part and scored on the
same part as the model, so `classify eval --baseline` compares like with like."""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

BUCKETS = 1 << 19  # hashed n-gram vocabulary: collisions are rare at these data sizes


def ngram_ids(text: str, orders: tuple[int, ...] = (1, 2, 3, 4, 5)) -> np.ndarray:
    """The hashed ids of a text's character n-grams, the text padded with a space on each side (so word
    starts and ends are n-grams of their own). crc32, not Python's `hash`, so the ids are the same every run."""
    padded = f" {text} ".encode()
    grams = [padded[i:i + n] + bytes([n]) for n in orders for i in range(max(len(padded) - n + 1, 1))]
    return np.fromiter((zlib.crc32(g) % BUCKETS for g in grams), dtype=np.int64, count=len(grams))


class NgramClassifier(nn.Module):
    def __init__(self, num_labels: int, dim: int = 32):
        super().__init__()
        self.bag = nn.EmbeddingBag(BUCKETS, dim, mode="mean", sparse=True)  # a step touches only its n-grams' rows
        self.head = nn.Linear(dim, num_labels)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(ids, offsets))


def _batch(grams: list[np.ndarray], rows) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [grams[r] for r in rows]
    offsets = torch.tensor(np.cumsum([0] + [len(p) for p in parts[:-1]]), dtype=torch.long)
    return torch.from_numpy(np.concatenate(parts)), offsets


def ngram_baseline(train_texts: list[str], train_labels: list[str], test_texts: list[str], test_labels: list[str],
                   labels: tuple[str, ...], *, epochs: int = 10, seed: int = 0) -> float:
    """The test accuracy (0-1) of a fastText-style classifier trained on the training texts (`epochs` passes,
    batch 32, Adam with lr 0.05 decayed linearly to 0, as fastText's defaults do)."""
    torch.manual_seed(seed)
    index = {label: k for k, label in enumerate(labels)}
    grams = [ngram_ids(t) for t in train_texts]
    y = torch.tensor([index[label] for label in train_labels])
    model = NgramClassifier(len(labels))
    optimizers = [torch.optim.SparseAdam(model.bag.parameters(), lr=0.05),
                  torch.optim.Adam(model.head.parameters(), lr=0.05)]
    steps = epochs * ((len(grams) + 31) // 32)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1 - s / steps) for o in optimizers]
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(grams))
        for start in range(0, len(order), 32):
            rows = order[start:start + 32]
            loss = nn.functional.cross_entropy(model(*_batch(grams, rows)), y[rows])
            for o in optimizers:
                o.zero_grad()
            loss.backward()
            for o, s in zip(optimizers, schedules):
                o.step()
                s.step()
    test = [ngram_ids(t) for t in test_texts]
    with torch.no_grad():
        predicted = model(*_batch(test, range(len(test)))).argmax(1).numpy()
    truth = [index.get(label, -1) for label in test_labels]
    return float(np.mean([p == t for p, t in zip(predicted, truth)])) if truth else 0.0
