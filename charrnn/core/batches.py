"""Batches of items of different sizes (texts, line images): shuffled every epoch, then sorted by size within
windows of a few dozen batches, so that a batch holds items of similar sizes (little padding) while the
batches still come in a random order. A function of (seed, epoch) alone, so a resumed run reads exactly the
batches it would have read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch

SORT_WINDOW = 50  # batches whose items are sorted by size together: short padding, still shuffled


def epoch_batches(sizes: np.ndarray, batch_size: int, seed: int, epoch: int, window: int = SORT_WINDOW) -> np.ndarray:
    """(steps, batch_size) item indices of `epoch`: every item at most once (the remainder of a division by
    `batch_size` waits for another epoch)."""
    rng = np.random.default_rng([seed, epoch])
    steps = len(sizes) // batch_size
    order = rng.permutation(len(sizes))[: steps * batch_size]
    span = window * batch_size
    for start in range(0, len(order), span):  # sort by size inside each window
        part = order[start:start + span]
        order[start:start + span] = part[np.argsort(sizes[part], kind="stable")]
    batches = order.reshape(steps, batch_size)
    return batches[rng.permutation(steps)]


def in_batches(items: Iterable, size: int) -> Iterator[list]:
    """`items` (any iterable, a stream of stdin lines included) in lists of `size`, the last one shorter: a long
    stream is answered a batch at a time, as it comes."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def pad(rows: list, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, T) of sequences of ids, padded at the end with `pad_id`, and each one's length (B,)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    ids = torch.full((len(rows), int(lengths.max()) if rows else 0), pad_id, dtype=torch.long)
    for k, row in enumerate(rows):
        ids[k, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return ids, lengths


def valid_mask(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) True at each sequence's own positions."""
    return torch.arange(T, device=lengths.device)[None] < lengths[:, None]
