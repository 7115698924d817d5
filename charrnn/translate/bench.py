"""`charrnn translate bench`: the translator's training speed (pairs/s) beside plain PyTorch loops of the same size,
run side by side on the same machine.

Four loops train on the same batches of the bundled pronouncing dictionary (the same pairs in the same order,
padded the same way), at the same sizes and precision, with AdamW and the same gradient clipping:
- charrnn: the real `train()` (its data reading, schedule, clipping, logging and final checkpoint), decoder
  attending after its recurrent layer (Luong; the whole target in one fused kernel), pairs/s read from the
  per-step timings of its metrics.jsonl;
- plain, same architecture: what a plain PyTorch user writes for that model: nn.Embedding and a bidirectional
  nn.LSTM over `pack_padded_sequence`, an nn.LSTM decoder over the embedded target, attention after it, masked
  softmax over the source padding, tanh(W [h; context]), a linear head, cross-entropy ignoring padding;
- charrnn --input-feeding: the decoder a step at a time, the context fed into its first layer (Bahdanau);
- plain, PyTorch tutorial style: the same encoder, then an nn.LSTMCell a step at a time with the context in its
  input, as the PyTorch seq2seq tutorial writes it (its attention keys computed once per batch, not every step).
Each charrnn loop is compared with the plain loop of its own kind. The loops take turns (one of each, then
again, `repeats` times) so load from elsewhere on the machine hits them alike; a figure is the median of its
repeats. The first quarter of the steps (at least one) is warm-up, not timed. Nothing here is a test: no
figure is asserted.

Both plain loops use the same initial decoder state as charrnn (tanh of a linear map of the source states'
mean), so they differ from it in how they run, not in what they compute. Under bf16 autocast on a CPU, PyTorch
(2.13) runs an LSTM over a packed sequence in float32 (it casts the LSTM over a padded batch, which charrnn's
encoder reads, to bfloat16); that is what a plain loop gets, and it is kept.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from charrnn.core.batches import epoch_batches
from charrnn.core.bench import load_average, plain_rate, trainer_items_per_s
from charrnn.core.device import autocast, resolve_device, resolve_precision
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled
from charrnn.core.rnn import CELL_CLASSES, RNN_CLASSES
from charrnn.translate.config import DEFAULT_DATA, TranslateTrainConfig
from charrnn.translate.task import TranslateTask, build, train

CHARRNN, PLAIN, CHARRNN_FED, TUTORIAL = ("charrnn", "plain PyTorch, same architecture", "charrnn --input-feeding",
                                         "plain PyTorch, tutorial style")
LOOPS = (CHARRNN, PLAIN, CHARRNN_FED, TUTORIAL)  # the order they take turns in
AGAINST = {CHARRNN: PLAIN, CHARRNN_FED: TUTORIAL}  # each charrnn loop's like-for-like plain loop


@dataclass(kw_only=True)
class LoopSpeed:
    loop: str
    decoder: str
    pairs_per_s: float  # the median of `runs`
    runs: list[float]  # one figure per repeat, in the order they ran
    against: str | None = None  # the plain loop this one is compared with
    ratio: float | None = None  # pairs_per_s / the plain loop's


def check_bench_args(*, steps: int, repeats: int, max_pairs: int | None) -> None:
    if steps < 2:
        raise CharRNNError(f"--steps must be at least 2 (the first quarter, at least 1, is warm-up), got {steps}")
    if repeats < 1:
        raise CharRNNError(f"--repeats must be at least 1, got {repeats}")
    if max_pairs is not None and max_pairs < 1:
        raise CharRNNError(f"--max-pairs must be at least 1, got {max_pairs}")


def warmup_steps(steps: int) -> int:
    """The untimed first steps: a quarter, at least 1, leaving at least 1 timed."""
    return min(steps - 1, max(1, steps // 4))


def run_bench(*, steps: int = 60, repeats: int = 3, batch_size: int = TranslateTrainConfig.batch_size,
              hidden_size: int = TranslateTrainConfig.hidden_size, cell: str = TranslateTrainConfig.cell,
              attention: str = TranslateTrainConfig.attention, device: str = "auto", precision: str = "auto",
              max_pairs: int | None = None, on_run: Callable[[str, int, float], None] | None = None) -> dict:
    """Train each loop `steps` steps, `repeats` times in turn; returns {"device", ..., "rows": [...]} (JSON-ready).

    `max_pairs`: train on that many pairs drawn (seeded) from the bundled dictionary instead of all of it (a
    quicker start, the same lengths). `on_run(loop, repeat, pairs_per_s)` is called after each measurement."""
    check_bench_args(steps=steps, repeats=repeats, max_pairs=max_pairs)
    load = load_average()  # work already running here, before ours
    # Validation (cell, sizes, precision) by the run config, with its flags' names; evaluation never comes.
    config = TranslateTrainConfig(cell=cell, hidden_size=hidden_size, attention=attention, batch_size=batch_size,
                                  max_steps=steps, eval_every=steps + 1, val_frac=0.0, test_frac=0.0,
                                  device=device, precision=precision, target_tokens="words")
    dev = resolve_device(device)
    precision = resolve_precision(config.precision, dev)
    warmup = warmup_steps(steps)
    runs: dict[str, list[float]] = {loop: [] for loop in LOOPS}
    with tempfile.TemporaryDirectory(prefix="charrnn-translate-bench-") as tmp:
        work = Path(tmp)
        if max_pairs is not None:
            config = replace(config, data=str(sample_pairs(work / "pairs.tsv", max_pairs, config.seed)))
        task = build(config, checkpoint=None, world=World(), device=torch.device("cpu"))
        batches = list(plain_batches(task, steps))
        vocab = (task.tokenizer.source.vocab_size, task.tokenizer.vocab_size)
        pads = (task.tokenizer.source.eod_id, task.tokenizer.unk_id)  # as `TranslateTask.loss` pads
        for repeat in range(repeats):
            for loop in LOOPS:
                if loop in (CHARRNN, CHARRNN_FED):
                    fed = replace(config, input_feeding=loop == CHARRNN_FED, out=str(work / f"run-{repeat}-{loop}"))
                    speed = trainer_items_per_s(train, fed, warmup)
                else:
                    model = plain_model(loop == TUTORIAL, config, *vocab)
                    speed = plain_pairs_per_s(model, batches, pads, config, dev, precision, warmup)
                runs[loop].append(speed)
                if on_run:
                    on_run(loop, repeat, speed)
    rows = _rows(runs, config)
    return {"device": str(dev), "torch": str(torch.__version__), "threads": torch.get_num_threads(),
            "precision": precision, "load_average_before": load, "cell": cell, "num_layers": config.num_layers,
            "hidden_size": hidden_size, "embedding_dim": config.embedding_dim, "attention": attention,
            "attention_dim": config.attention_dim, "batch_size": batch_size, "steps": steps, "warmup_steps": warmup,
            "repeats": repeats, "train_pairs": len(task.data.train),
            "data": DEFAULT_DATA if max_pairs is None else f"{max_pairs} pairs of {DEFAULT_DATA}",
            "rows": [asdict(r) for r in rows]}


def _rows(runs: dict[str, list[float]], config: TranslateTrainConfig) -> list[LoopSpeed]:
    cell = config.cell
    decoders = {CHARRNN: f"nn.{RNN_CLASSES[cell].__name__}, attention after it (Luong), fused",
                PLAIN: f"nn.{RNN_CLASSES[cell].__name__}, attention after it (Luong), fused",
                CHARRNN_FED: f"nn.{CELL_CLASSES[cell].__name__} a step at a time, context fed in (Bahdanau)",
                TUTORIAL: f"nn.{CELL_CLASSES[cell].__name__} a step at a time, context fed in (Bahdanau)"}
    medians = {loop: statistics.median(r) for loop, r in runs.items()}
    rows = []
    for loop in LOOPS:
        against = AGAINST.get(loop)
        rows.append(LoopSpeed(loop=loop, decoder=decoders[loop], pairs_per_s=round(medians[loop], 1),
                              runs=[round(r, 1) for r in runs[loop]], against=against,
                              ratio=round(medians[loop] / medians[against], 3) if against else None))
    return rows


def sample_pairs(path: Path, n: int, seed: int) -> Path:
    """Write `n` lines of the bundled dictionary, drawn without replacement (seeded), in its order, to `path`."""
    lines = bundled(DEFAULT_DATA).read_text(encoding="utf-8").splitlines(keepends=True)
    if n < len(lines):
        keep = np.sort(np.random.default_rng(seed).choice(len(lines), n, replace=False))
        lines = [lines[k] for k in keep]
    path.write_text("".join(lines), encoding="utf-8")
    return path


# ----- the plain loops ----------------------------------------------------------------------------------

Batch = tuple[list[torch.Tensor], list[torch.Tensor]]  # the sources' ids, the targets' `<eod>` ids `<eod>`


def plain_batches(task: TranslateTask, steps: int) -> Iterator[Batch]:
    """The pairs of the task's first `steps` batches, in its order (`TranslateTask.loss`), as tensors a plain
    loop pads itself."""
    eod = task.tokenizer.eod_id
    size = task.config.batch_size
    for step in range(steps):
        epoch, i = divmod(step, task.steps_per_epoch)
        rows = epoch_batches(task.lengths, size, task.config.seed, epoch)[i]
        yield ([torch.as_tensor(np.asarray(task.sources[r]), dtype=torch.long) for r in rows],
               [torch.tensor([eod, *task.targets[r], eod], dtype=torch.long) for r in rows])


def pad_batch(batch: Batch, source_pad: int, target_pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source ids (B, S), their lengths (B,) and target ids (B, T+2), padded at the end as charrnn pads them."""
    sources, targets = batch
    lengths = torch.tensor([len(s) for s in sources])
    return (pad_sequence(sources, batch_first=True, padding_value=source_pad), lengths,
            pad_sequence(targets, batch_first=True, padding_value=target_pad))


class PlainEncoder(nn.Module):
    """ids (B, S), lengths (B,) -> states (B, S, H): an embedding and a bidirectional nn.LSTM (H/2 each way) over a
    packed sequence."""

    def __init__(self, cell: str, vocab_size: int, embedding_dim: int, hidden_size: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = RNN_CLASSES[cell](embedding_dim, hidden_size // 2, batch_first=True, bidirectional=True)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))[0]  # (B, S, H)


class PlainAttention(nn.Module):
    """queries (B, T, H) over states (B, S, H) -> contexts (B, T, H); additive (Bahdanau) or dot (Luong's
    general score), softmax masked over the source padding."""

    def __init__(self, kind: str, hidden_size: int, attention_dim: int):
        super().__init__()
        self.kind = kind
        if kind == "additive":
            self.key = nn.Linear(hidden_size, attention_dim)
            self.query = nn.Linear(hidden_size, attention_dim)
            self.score = nn.Linear(attention_dim, 1)
        else:
            self.query = nn.Linear(hidden_size, hidden_size, bias=False)

    def keys(self, states: torch.Tensor) -> torch.Tensor | None:
        return self.key(states) if self.kind == "additive" else None  # (B, S, A), once per batch

    def forward(self, queries: torch.Tensor, states: torch.Tensor, keys: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "additive":
            scores = self.score(torch.tanh(keys[:, None] + self.query(queries)[:, :, None])).squeeze(3)  # (B, T, S)
        else:
            q = self.query(queries)
            scores = torch.bmm(q, states.transpose(1, 2)) / math.sqrt(q.size(2))  # (B, T, S)
        weights = scores.masked_fill(~mask[:, None], float("-inf")).softmax(dim=2)
        return torch.bmm(weights.to(states.dtype), states)  # (B, T, H)


class PlainTranslator(nn.Module):
    """The plain encoder-decoder: logits (B, T, V) for source ids (B, S), lengths (B,) and target inputs (B, T).
    Fused: an nn.LSTM over the embedded target, attention after it, tanh(W [h; context]), the head. Tutorial
    style: an nn.LSTMCell a step at a time, attending with its previous state and reading [embedding; context]."""

    def __init__(self, tutorial: bool, cell: str, source_vocab: int, vocab: int, embedding_dim: int,
                 hidden_size: int, attention: str, attention_dim: int):
        super().__init__()
        H = hidden_size
        self.tutorial, self.lstm = tutorial, cell == "lstm"
        self.encoder = PlainEncoder(cell, source_vocab, embedding_dim, H)
        self.init_state = nn.Linear(H, (2 if self.lstm else 1) * H)
        self.embedding = nn.Embedding(vocab, embedding_dim)
        self.attention = PlainAttention(attention, H, attention_dim)
        if tutorial:
            self.cell = CELL_CLASSES[cell](embedding_dim + H, H)
        else:
            self.rnn = RNN_CLASSES[cell](embedding_dim, H, batch_first=True)
            self.combine = nn.Linear(2 * H, H)
        self.head = nn.Linear(H, vocab)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        states = self.encoder(ids, lengths)  # (B, S, H)
        mask = torch.arange(ids.size(1), device=ids.device)[None] < lengths.to(ids.device)[:, None]  # (B, S)
        m = mask[:, :, None].to(states.dtype)
        init = torch.tanh(self.init_state((states * m).sum(1) / m.sum(1))).chunk(2 if self.lstm else 1, dim=1)
        keys = self.attention.keys(states)
        x = self.embedding(tokens)  # (B, T, E)
        if not self.tutorial:
            out, _ = self.rnn(x, tuple(s[None].contiguous() for s in init) if self.lstm else init[0][None])
            context = self.attention(out, states, keys, mask)  # (B, T, H)
            return self.head(torch.tanh(self.combine(torch.cat([out, context.to(out.dtype)], dim=2))))
        state = init if self.lstm else init[0]
        outs = []
        for t in range(tokens.size(1)):
            h = state[0] if self.lstm else state
            context = self.attention(h[:, None], states, keys, mask)[:, 0]  # (B, H)
            state = self.cell(torch.cat([x[:, t], context.to(x.dtype)], dim=1), state)
            outs.append(state[0] if self.lstm else state)
        return self.head(torch.stack(outs, 1))  # (B, T, V)


def plain_model(tutorial: bool, config: TranslateTrainConfig, source_vocab: int, vocab: int) -> PlainTranslator:
    torch.manual_seed(config.seed)
    return PlainTranslator(tutorial, config.cell, source_vocab, vocab, config.embedding_dim, config.hidden_size,
                           config.attention, config.attention_dim)


def plain_pairs_per_s(model: PlainTranslator, batches: list[Batch], pads: tuple[int, int],
                      config: TranslateTrainConfig, device: torch.device, precision: str, warmup: int) -> float:
    """Pairs/s of a plain training loop (pad, forward, cross-entropy, backward, clip, AdamW step) over its
    batches after the first `warmup`; `pads`: the source and target padding ids (the loss ignores the latter)."""
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    source_pad, target_pad = pads

    def step(batch: Batch) -> torch.Tensor:
        ids, lengths, targets = pad_batch(batch, source_pad, target_pad)
        ids, targets = ids.to(device), targets.to(device)
        with autocast(precision, device):
            logits = model(ids, lengths, targets[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets[:, 1:].reshape(-1),
                                   ignore_index=target_pad)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        return loss

    return plain_rate(step, batches, warmup, config.batch_size, device)
