"""Batches of items of different sizes (texts, line images): shuffled every epoch, then sorted by size within
windows of a few dozen batches, so that a batch holds items of similar sizes (little padding) while the
batches still come in a random order. A function of (seed, epoch) alone, so a resumed run reads exactly the
batches it would have read."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from charrnn.core.errors import CharRNNError

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


class ExampleBatches:
    """What a task trained on separate examples of different lengths shares (classify, tag, translate): the epoch's
    length-sorted batches (`epoch_batches`, a function of (seed, epoch), so nothing to keep for a resume) and this
    process's share of each, and the parts of the trainer's task protocol that follow from that. A task sets
    `config`, `data` (with `val`) and `world`, then calls `_plan_batches` with its examples' lengths."""

    def _plan_batches(self, lengths: Sequence[int], examples: str, more: str) -> None:
        """`examples`: what the data holds ("training pairs"), `more`: what to add ("pairs"), for the error."""
        batch_size = self.config.batch_size
        if len(lengths) < batch_size:
            raise CharRNNError(f"{len(lengths)} {examples} are fewer than one batch of --batch-size {batch_size}; "
                               f"lower it or add {more}")
        self.lengths = np.asarray(lengths)
        self.steps_per_epoch = len(lengths) // batch_size
        self.items_per_step = batch_size
        self.local = batch_size // self.world.size
        self._plan: tuple = (None, None)

    def batch_rows(self, epoch: int, i: int) -> np.ndarray:
        """The examples of batch `i` of `epoch` that this process trains on."""
        if self._plan[0] != epoch:
            self._plan = (epoch, epoch_batches(self.lengths, self.config.batch_size, self.config.seed, epoch))
        return self._plan[1][i][self.world.rank * self.local:(self.world.rank + 1) * self.local]

    @property
    def has_validation(self) -> bool:
        return self.data.val is not None and len(self.data.val) > 0

    def start_epoch(self, epoch: int) -> None:
        pass  # batches are a function of (epoch, i)

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass


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
