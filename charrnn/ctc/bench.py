"""`charrnn bench --task ctc`: the line reader's training speed (lines/s) beside a plain PyTorch loop of the same
model, run side by side on the same machine.

Both loops train the same model (a `LineReader` built from the same config, from the same initial weights) on the
same batches (the same lines in the same order, padded the same way), at the same batch size and precision:
- charrnn: the real `train()` (its data reading, schedule, clipping, logging and final checkpoint), lines/s read
  from the per-step timings of its metrics.jsonl;
- plain: what a plain PyTorch user writes around that model: the padded batches and their flattened targets
  already in memory as tensors, then forward and `F.ctc_loss` under the same autocast, backward,
  `clip_grad_norm_` to the run's --grad-clip (the trainer clips, so the plain loop does too), an AdamW step
  at a constant learning rate (`torch.optim.AdamW(model.parameters())` as a user writes it: on a CPU, a Python
  loop over the tensors, where the trainer's runs torch's fused kernel, `core.trainer.fused_adam`).
The lines are rendered on the fly by `make_lines` from the bundled tiny-shakespeare (its default fonts, seed 0).
The loops take turns (`core.bench.in_turns`), each keeps its best run. Nothing here is a test: no figure is
asserted.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.core.batches import epoch_batches
from charrnn.core.bench import (
    built_task,
    check_bench_args,
    grid_rows,
    load_average,
    model_grid,
    plain_rate,
    warmup_steps,
)
from charrnn.core.device import autocast, resolve_device, resolve_precision
from charrnn.core.files import bundled
from charrnn.ctc.config import CTCTrainConfig
from charrnn.ctc.linegen import make_lines
from charrnn.ctc.model import BLANK
from charrnn.ctc.task import CTCTask, build, train

UNIT = "lines"
CORPUS = "corpora/tinyshakespeare.txt"

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # pixels, widths, targets, target lengths


def run_bench(*, steps: int = 60, repeats: int = 2, batch_size: int = CTCTrainConfig.batch_size,
              cells: Sequence[str] = (), num_layers: Sequence[int] = (), hidden_sizes: Sequence[int] = (),
              lines: int | None = None, device: str = "auto", precision: str = "fp32",
              on_run: Callable[[str, int, float], None] | None = None) -> dict:
    """Train charrnn's line reader and a plain loop of it `steps` steps each, in turns, `repeats` times, for every
    model of the grid (the run's default model where no size is given); returns {"task", "device", ...,
    "rows": [...]} (JSON-ready). `lines`: how many lines to render and train on (default 8 batches' worth).
    `on_run(loop, repeat, lines_per_s)` is called after each measurement."""
    check_bench_args(steps=steps, repeats=repeats, batch_size=batch_size)
    lines = 8 * batch_size if lines is None else lines
    # Validation of every setting by the run config, with its flags' names, before anything is made.
    base = CTCTrainConfig(batch_size=batch_size, max_steps=steps, eval_every=steps + 1, val_frac=0.0, device=device,
                          precision=precision, seed=0)
    grid = model_grid((base.cell, base.num_layers, base.hidden_size), cells=cells, num_layers=num_layers,
                      hidden_sizes=hidden_sizes)
    configs = [replace(base, cell=c, num_layers=n, hidden_size=h) for c, n, h in grid]
    dev = resolve_device(device)
    precision = resolve_precision(base.precision, dev)
    warmup = warmup_steps(steps)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="charrnn-ctc-bench-") as tmp:
        work = Path(tmp)
        make_lines(bundled(CORPUS), work / "lines", count=lines, val_count=1, val_fonts=[])
        data = work / "lines" / "train"  # its labels.tsv alone: no validation
        rows = grid_rows([replace(c, data=str(data)) for c in configs], work, train=train, build=build,
                         plain_batches=plain_batches, plain_items_per_s=plain_lines_per_s, describe=describe,
                         unit=UNIT, steps=steps, repeats=repeats, device=dev, precision=precision, on_run=on_run)
    return {"task": "ctc", "unit": UNIT, "device": str(dev), "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "precision": precision, "steps": steps, "warmup_steps": warmup,
            "repeats": repeats, "load_average_at_start": load, "train_lines": lines,
            "data": f"{lines} lines rendered from {CORPUS}", "rows": rows}


def describe(task: CTCTask) -> str:
    m = task.model.config
    return (f"CNN {'-'.join(map(str, m.channels))} on {m.height}px lines, bidirectional {m.cell} "
            f"{m.num_layers}x{m.hidden_size}")


def plain_task(config, device: torch.device) -> CTCTask:
    """The task as `train(config)` builds it (its data, tokenizer and model, from the same seed)."""
    return built_task(build, config, device)


def plain_batches(task: CTCTask, steps: int) -> list[Batch]:
    """The task's first `steps` batches, in its order (`CTCTask.loss`), as tensors in memory: pixels (B, H, W)
    padded with zeros, widths (B,), the targets one after another and their lengths (B,)."""
    out = []
    for step in range(steps):
        epoch, i = divmod(step, task.steps_per_epoch)
        rows = np.sort(epoch_batches(task.train.widths(), task.config.batch_size, task.config.seed, epoch)[i])
        pixels, widths = task.train.batch(rows)
        targets = [task.targets[r] for r in rows]
        out.append((torch.from_numpy(pixels), torch.from_numpy(widths),
                    torch.tensor([t for row in targets for t in row], dtype=torch.long),
                    torch.tensor([len(row) for row in targets], dtype=torch.long)))
    return out


def plain_lines_per_s(task: CTCTask, start: dict, batches: list[Batch], device: torch.device, precision: str,
                      warmup: int) -> float:
    """Lines/s of a plain training loop (forward, CTC loss, backward, clip, AdamW step) of the task's model, from the
    weights `start`, over `batches` after the first `warmup`."""
    task.model.load_state_dict(start)
    model, config = task.model.train(), task.config
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def step(batch: Batch) -> torch.Tensor:
        pixels, widths, targets, target_lengths = (t.to(device) for t in batch)
        with autocast(precision, device):
            log_probs, lengths = model(pixels, widths)
            loss = F.ctc_loss(log_probs, targets, lengths, target_lengths, blank=BLANK, zero_infinity=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        return loss

    return plain_rate(step, batches, warmup, config.batch_size, device)
