"""What every task's trainer benchmark shares: the real trainer's speed read from its metrics.jsonl, a plain
PyTorch loop's speed over the same batches, and the two taken in turns.

A figure is items per second over the steps after a warm-up (the first quarter, at least 2): the trainer's from
the per-step `elapsed_s` it logs, the plain loop's from the clock around the same steps. The loops take turns
(one of each, then the other way round) so a burst of load from elsewhere on a shared machine hits both alike,
and each keeps its best run. Nothing here is a test: no figure is asserted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from charrnn.core.config import LoopConfig
from charrnn.core.device import seed_everything
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.rundir import read_metrics


def load_average() -> float | None:
    """The system's load average over the last minute (None where the platform has none): a figure measured beside
    other work on a machine with few cores is slowed unevenly, so a result says what it ran beside."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def check_bench_args(*, steps: int, repeats: int, batch_size: int) -> None:
    if steps < 5:
        raise CharRNNError(f"--steps must be at least 5 (the first quarter, at least 2, are warm-up), got {steps}")
    if repeats < 1:
        raise CharRNNError(f"--repeats must be at least 1, got {repeats}")
    if batch_size < 1:
        raise CharRNNError(f"--batch-size must be at least 1, got {batch_size}")


def model_grid(default: tuple[str, int, int], *, cells: Sequence[str] = (), num_layers: Sequence[int] = (),
               hidden_sizes: Sequence[int] = ()) -> list[tuple[str, int, int]]:
    """The (cell, layers, hidden size) points to measure: the product of the values given, a dimension not given
    at the run's default (`default`)."""
    return [(c, n, h) for c in (cells or [default[0]]) for n in (num_layers or [default[1]])
            for h in (hidden_sizes or [default[2]])]


def warmup_steps(steps: int) -> int:
    """The untimed first steps: a quarter, at least 2."""
    return max(2, steps // 4)


def trainer_items_per_s(train: Callable[..., object], config: LoopConfig, warmup: int) -> float:
    """Items/s of a task's real `train(config)` (a new run in `config.out`, replacing the last) over its steps after
    the first `warmup`, from the per-step timings of its metrics.jsonl."""
    train(config, overwrite=True)
    records = [r for r in read_metrics(Path(config.out) / "metrics.jsonl") if r["kind"] == "train"]
    span = records[-1]["elapsed_s"] - records[warmup - 1]["elapsed_s"]
    return (len(records) - warmup) * config.batch_size / max(span, 1e-3)  # the log's resolution: milliseconds


def plain_rate(step: Callable[[object], torch.Tensor], batches: Iterable, warmup: int, items_per_step: int,
               device: torch.device) -> float:
    """Items/s of `step(batch)` (one training step of a plain loop, returning its loss) over the batches after
    the first `warmup`. The loss is read once, at the end, as a plain loop that logs nothing would."""
    loss, n, t0 = None, 0, time.perf_counter()
    for k, batch in enumerate(batches):
        if k == warmup:
            _sync(device)
            t0 = time.perf_counter()
        loss = step(batch)
        n += k >= warmup
    if loss is not None:
        loss.item()
    _sync(device)
    return n * items_per_step / (time.perf_counter() - t0)


def in_turns(ours: Callable[[], float], plain: Callable[[], float], repeats: int,
             on_run: Callable[[str, int, float], None] | None = None) -> tuple[list[float], list[float]]:
    """`ours()` and `plain()` alternately, `repeats` times each, first one then the other, then the other way
    round (ABBA: a machine that slowly warms up or settles favours neither); their figures in the order they ran.
    `on_run("charrnn" | "plain", repeat, figure)` is called after each."""
    runs: tuple[list[float], list[float]] = ([], [])
    for repeat in range(repeats):
        turn = (("charrnn", ours, runs[0]), ("plain", plain, runs[1]))
        for name, measure, out in (turn if repeat % 2 == 0 else turn[::-1]):
            out.append(measure())
            if on_run:
                on_run(name, repeat, out[-1])
    return runs


def speed_fields(unit: str, ours: list[float], plain: list[float]) -> dict:
    """The figures of one measurement, named for `unit` ("images", "lines"): each loop's best, their ratio,
    and every run."""
    best, best_plain = max(ours), max(plain)
    return {f"train_{unit}_per_s": round(best, 1), f"reference_train_{unit}_per_s": round(best_plain, 1),
            "train_ratio": round(best / best_plain, 3), "runs": [round(r, 1) for r in ours],
            "reference_runs": [round(r, 1) for r in plain]}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def built_task(build: Callable, config: LoopConfig, device: torch.device):
    """The task as `train(config)` builds it (its data, tokenizer and model, from the same seed), for a plain loop
    of its model to train on."""
    seed_everything(config.seed)
    return build(config, checkpoint=None, world=World(), device=device)


def grid_rows(configs: Sequence[LoopConfig], work: Path, *, train: Callable, build: Callable,
              plain_batches: Callable, plain_items_per_s: Callable, describe: Callable, unit: str, steps: int,
              repeats: int, device: torch.device, precision: str,
              on_run: Callable[[str, int, float], None] | None = None) -> list[dict]:
    """One row per run config: the real trainer (`trainer_items_per_s`) against the task's plain loop
    (`plain_items_per_s(task, start_weights, batches, device, precision, warmup)` over `plain_batches(task,
    steps)`), both from the same initial weights, in turns (`in_turns`); run directories go under `work`."""
    warmup = warmup_steps(steps)
    rows = []
    for k, config in enumerate(configs):
        task = built_task(build, replace(config, out=str(work / f"plain-{k}")), device)
        batches = plain_batches(task, steps)
        start = {name: t.clone() for name, t in task.model.state_dict().items()}
        ours = partial(trainer_items_per_s, train, replace(config, out=str(work / f"run-{k}")), warmup)
        plain = partial(plain_items_per_s, task, start, batches, device, precision, warmup)
        ours_runs, plain_runs = in_turns(ours, plain, repeats, on_run)
        m = task.model.config
        rows.append({"cell": m.cell, "num_layers": m.num_layers, "hidden_size": m.hidden_size,
                     "model": describe(task), "batch_size": config.batch_size, "precision": precision,
                     **speed_fields(unit, ours_runs, plain_runs)})
    return rows
