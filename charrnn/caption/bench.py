"""`charrnn bench --task caption`: the captioner's training speed (images/s) beside a plain PyTorch loop of the same
model, run side by side on the same machine.

Both loops train the same model (a `Captioner` built from the same config, from the same initial weights) on the
same batches, at the same batch size and precision:
- charrnn: the real `train()` (its data reading, schedule, clipping, logging and final checkpoint), images/s read
  from the per-step timings of its metrics.jsonl;
- plain: what a plain PyTorch user writes around that model: the batches already in memory as tensors, then
  forward and `caption_loss` (the same cross-entropy and attention penalty) under the same autocast, backward,
  `clip_grad_norm_` to the run's --grad-clip (the trainer clips, so the plain loop does too), an AdamW step
  at a constant learning rate (`torch.optim.AdamW(model.parameters())` as a user writes it: on a CPU, a Python
  loop over the tensors, where the trainer's runs torch's fused kernel, `core.trainer.fused_adam`).
The data is made on the fly: random-noise images (speed does not depend on what they show) at the run's image
size, each with one to three captions drawn from the bundled emoji set's, so captions are as long as real ones.
The loops take turns (`core.bench.in_turns`), each keeps its best run. Nothing here is a test: no figure is
asserted.
"""

from __future__ import annotations

import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from charrnn.caption.config import DEFAULT_CAPTION_DATA, CaptionTrainConfig
from charrnn.caption.model import caption_loss
from charrnn.caption.task import CaptionTask, build, train
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

UNIT = "images"


def run_bench(*, steps: int = 24, repeats: int = 2, batch_size: int = CaptionTrainConfig.batch_size,
              cells: Sequence[str] = (), num_layers: Sequence[int] = (), hidden_sizes: Sequence[int] = (),
              image_size: int = CaptionTrainConfig.image_size, images: int | None = None, device: str = "auto",
              precision: str = "fp32", on_run: Callable[[str, int, float], None] | None = None) -> dict:
    """Train charrnn's captioner and a plain loop of it `steps` steps each, in turns, `repeats` times, for every
    model of the grid (the run's default model where no size is given); returns {"task", "device", ...,
    "rows": [...]} (JSON-ready). `images`: how many random images to train on (default 8 batches' worth).
    `on_run(loop, repeat, images_per_s)` is called after each measurement."""
    check_bench_args(steps=steps, repeats=repeats, batch_size=batch_size)
    images = 8 * batch_size if images is None else images
    # Validation of every setting by the run config, with its flags' names, before anything is made.
    base = CaptionTrainConfig(batch_size=batch_size, image_size=image_size, max_steps=steps, eval_every=steps + 1,
                              val_frac=0.0, device=device, precision=precision, seed=0)
    grid = model_grid((base.cell, base.num_layers, base.hidden_size), cells=cells, num_layers=num_layers,
                      hidden_sizes=hidden_sizes)
    configs = [replace(base, cell=c, num_layers=n, hidden_size=h) for c, n, h in grid]
    dev = resolve_device(device)
    precision = resolve_precision(base.precision, dev)
    warmup = warmup_steps(steps)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="charrnn-caption-bench-") as tmp:
        work = Path(tmp)
        data = synthetic_captions(work / "data", images, image_size, seed=0)
        rows = grid_rows([replace(c, data=str(data)) for c in configs], work, train=train, build=build,
                         plain_batches=plain_batches, plain_items_per_s=plain_images_per_s, describe=describe,
                         unit=UNIT, steps=steps, repeats=repeats, device=dev, precision=precision, on_run=on_run)
    return {"task": "caption", "unit": UNIT, "device": str(dev), "torch": str(torch.__version__),
            "threads": torch.get_num_threads(), "precision": precision, "steps": steps, "warmup_steps": warmup,
            "repeats": repeats, "load_average_at_start": load, "train_images": images,
            "data": f"{images} random images of {image_size}px with captions of {DEFAULT_CAPTION_DATA}",
            "rows": rows}


def describe(task: CaptionTask) -> str:
    m = task.model.config
    encoder = f"CNN {'-'.join(map(str, m.channels))}" if m.encoder == "cnn" else m.encoder
    attention = " + attention" if m.attention else ""
    return f"{encoder} on {m.image_size}px, {m.cell} {m.num_layers}x{m.hidden_size}{attention}"


def synthetic_captions(out: Path, count: int, size: int, seed: int = 0) -> Path:
    """A caption dataset (captions.tsv beside images/) of `count` random-noise PNG images `size` pixels square,
    each with one to three captions drawn from the bundled emoji set's."""
    with zipfile.ZipFile(bundled(DEFAULT_CAPTION_DATA)) as z:
        pool = [line.split("\t", 1)[1] for line in z.read("captions.tsv").decode("utf-8").splitlines()
                if "\t" in line]
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True)
    lines = []
    for k in range(count):
        name = f"images/{k:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(out / name)
        lines += [f"{name}\t{pool[j]}" for j in rng.choice(len(pool), rng.integers(1, 4), replace=False)]
    (out / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def plain_task(config, device: torch.device) -> CaptionTask:
    """The task as `train(config)` builds it (its data, tokenizer and model, from the same seed)."""
    return built_task(build, config, device)


def plain_batches(task: CaptionTask, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The images and captions of the task's first `steps` batches, in its order, as tensors in memory."""
    return [task.batch(*divmod(step, task.steps_per_epoch)) for step in range(steps)]


def plain_images_per_s(task: CaptionTask, start: dict, batches: list[tuple[torch.Tensor, torch.Tensor]],
                       device: torch.device, precision: str, warmup: int) -> float:
    """Images/s of a plain training loop (forward, loss, backward, clip, AdamW step) of the task's model, from the
    weights `start`, over `batches` after the first `warmup`."""
    task.model.load_state_dict(start)
    model, config, pad = task.model.train(), task.config, task.tokenizer.unk_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        images, tokens = batch
        with autocast(precision, device):
            loss, _ = caption_loss(model, images.to(device), tokens.to(device), pad,
                                   doubly_stochastic=config.doubly_stochastic, sample_prob=config.scheduled_sampling)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        return loss

    return plain_rate(step, batches, warmup, config.batch_size, device)
