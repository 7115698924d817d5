"""Reading text lines (CRNN + CTC) as a task of the shared training loop: `build`, `train`, `resume_config`.

A batch is B line images of similar widths (an epoch's lines are shuffled, then sorted by width within
windows of a few dozen batches, so little of a batch is padding) with their transcripts. The reader's
classes are the blank (0) and the training transcripts' characters: class k is the tokenizer's id k - 1.
Validation reads every validation line greedily and scores it with the character error rate, the
selection metric, plus the word error rate, line accuracy and the CTC loss.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from charrnn.core.batches import epoch_batches
from charrnn.core.checkpoint import check_weights
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer
from charrnn.core.trainer import Event, TrainSummary, run_training
from charrnn.ctc.config import DEFAULT_LINES, CTCTrainConfig
from charrnn.ctc.data import LineImages, cache_lines, read_lines
from charrnn.ctc.decode import read_images
from charrnn.ctc.evaluate import error_rates
from charrnn.ctc.model import LineReader, check_checkpoint, ctc_loss, frames, targets
from charrnn.vision.fingerprint import check_fingerprint

CACHE_FILES = ("train-lines.npy", "train-lines.json", "val-lines.npy", "val-lines.json")


# ----- the task --------------------------------------------------------------------------------------

class CTCTask:
    """Shuffled, width-sorted batches of lines scored by CTC; greedy reading scored by CER for validation."""

    name, unit, selection, lower_is_better = "ctc", "lines", "cer", True

    def __init__(self, config: CTCTrainConfig, data: dict, tokenizer: CharTokenizer, model: LineReader,
                 world: World, device: torch.device):
        self.config, self.tokenizer, self.model, self.world, self.device = config, tokenizer, model, world, device
        self.train: LineImages = data["train"]
        self.val: LineImages | None = data["val"]
        self.data_meta = data["meta"]
        if len(self.train) < config.batch_size:
            raise CharRNNError(f"{len(self.train)} training lines are fewer than one batch of --batch-size "
                               f"{config.batch_size}; lower it or add lines")
        self.targets = [targets(tokenizer, t) for t in self.train.split.texts]
        self.steps_per_epoch = len(self.train) // config.batch_size
        self.items_per_step = config.batch_size
        self.local = config.batch_size // world.size
        # The divergence scale: guessing uniformly costs ln V per frame, and the loss is per target character.
        widths = self.train.widths()
        per_char = float(np.mean([frames(int(w)) for w in widths])) / max(np.mean([len(t) for t in self.targets]), 1)
        self.loss_at_chance = max(per_char, 1.0) * math.log(model.config.vocab_size)
        self._plan: tuple = (None, None)

    @property
    def has_validation(self) -> bool:
        return self.val is not None and len(self.val) > 0

    def describe(self) -> tuple[str, list[str]]:
        m = self.model.config
        n_val = len(self.val) if self.has_validation else 0
        line = (f"line reader: CNN {'-'.join(map(str, m.channels))} on {m.height}px lines, bidirectional "
                f"{m.cell} {m.num_layers}x{m.hidden_size} | {m.vocab_size - 1} characters + blank | "
                f"train {len(self.train):,} lines, val {n_val:,}")
        return line, [self.data_meta["split_rule"]] + self.data_meta["notes"]

    def start_epoch(self, epoch: int) -> None:
        pass  # batches are a function of (epoch, i)

    def _epoch_plan(self, epoch: int) -> np.ndarray:
        """The epoch's batches of line indices, lines of similar widths together (`core.batches`)."""
        if self._plan[0] != epoch:
            self._plan = (epoch, epoch_batches(self.train.widths(), self.config.batch_size, self.config.seed, epoch))
        return self._plan[1]

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        rows = self._epoch_plan(epoch)[i]
        rows = np.sort(rows[self.world.rank * self.local:(self.world.rank + 1) * self.local])
        pixels, widths = self.train.batch(rows)
        log_probs, lengths = forward(torch.from_numpy(pixels).to(self.device), torch.from_numpy(widths).to(self.device))
        return ctc_loss(log_probs, lengths, [self.targets[r] for r in rows])

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            texts, loss = read_images(self.model, self.tokenizer, self.val, should_stop=should_stop)
        finally:
            self.model.train(was_training)
        rates = error_rates(texts, self.val.split.texts)
        return {"val_loss": loss, "cer": rates["cer"], "wer": rates["wer"],
                "line_accuracy": rates["line_accuracy"]}

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"data": self.data_meta["data"], "split_rule": self.data_meta["split_rule"],
                "data_fingerprint": self.data_meta["fingerprint"]}


# ----- building, training, resuming -----------------------------------------------------------------

def load_data(config: CTCTrainConfig, run_dir: Path, trained_on: dict | None = None) -> dict:
    """Read the line dataset, split it, and decode its images once into the run directory's cache. `trained_on`
    is the fingerprint of the data a resumed run was trained on: data changed since is refused before anything
    is decoded (`check_fingerprint`)."""
    data = read_lines(config.data, val_dir=config.val_dir, val_frac=config.val_frac, seed=config.seed,
                      iam_ok_only=config.iam_ok_only, skip_bad=config.skip_bad)
    sides = {"train": (data.train, data.train.texts), "val": (data.val, data.val.texts) if data.val else None}
    fingerprint = check_fingerprint(trained_on, sides, items="line images", labels="transcripts")
    sizes = dict(height=config.height, max_width=config.max_width, frames=frames, skip_bad=config.skip_bad)
    train = cache_lines(data.train, run_dir / "train-lines", **sizes)
    val = cache_lines(data.val, run_dir / "val-lines", **sizes) if data.val is not None else None
    skipped = len(data.skipped) + len(train.skipped) + (len(val.skipped) if val else 0)
    notes = [f"skipped {skipped} bad rows (--skip-bad)"] if skipped else []
    if data.unseen:
        shown = ", ".join(f"{c!r} ({n}x)" for c, n in sorted(data.unseen.items(), key=lambda kv: -kv[1])[:10])
        notes.append(f"validation transcripts hold {len(data.unseen)} characters no training line has, which the "
                     f"reader can never output: {shown}")
    return {"train": train, "val": val, "meta": {"data": str(config.data), "split_rule": data.split_rule,
                                                 "notes": notes, "fingerprint": fingerprint}}


DEFAULT_LINE_COUNT = 20_000  # training lines of the default set (and a tenth as many in val/ and val-heldout/)


def default_lines(on_progress: Callable[[int, int], None] | None = None) -> Path:
    """The line set `ctc train` uses when given no data: rendered once from the bundled corpus (train, val
    and held-out-font val lines, default fonts, seed 0) into DEFAULT_LINES, and reused while it is complete."""
    from charrnn.core.files import bundled
    from charrnn.ctc.linegen import SETTINGS, make_lines

    out, corpus = Path(DEFAULT_LINES), bundled("corpora/tinyshakespeare.txt")
    try:
        settings = json.loads((out / SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    if not (settings.get("complete") and settings.get("count") == DEFAULT_LINE_COUNT
            and Path(settings.get("text_file", "")).name == corpus.name):
        make_lines(corpus, out, count=DEFAULT_LINE_COUNT, workers=os.cpu_count() or 1, on_progress=on_progress)
    return out


def build(config: CTCTrainConfig, *, checkpoint: dict | None, world: World, device: torch.device) -> CTCTask:
    if checkpoint is not None:  # the weights against the model this run's settings build, before any data is read
        vocab_size = check_checkpoint(checkpoint).vocab_size
        check_weights(checkpoint["model_state"], lambda: LineReader(config.model_config(vocab_size)),
                      checkpoint.get("source", config.run_dir))
        if config.data is None:  # every run records its data; the default lines are rendered for new runs only
            raise CharRNNError(f"the settings of the run in {str(config.run_dir)!r} do not say what data it trained "
                               "on; it cannot be resumed: start a new run with --out")
    if config.data is None:
        config = replace(config, data=str(default_lines().resolve()))
    data_path = Path(config.data)
    config = replace(config, data=str(data_path.resolve()) if data_path.exists() else str(data_path),
                     out=str(config.run_dir))
    trained_on = (checkpoint.get("meta") or {}).get("data_fingerprint") if checkpoint is not None else None
    data = load_data(config, config.run_dir, trained_on)
    if checkpoint is not None:
        tokenizer = CharTokenizer.from_dict(checkpoint["tokenizer"])
    else:
        tokenizer = CharTokenizer.from_text("".join(data["train"].split.texts))
    model = LineReader(config.model_config(len(tokenizer.codes) + 1))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
    else:
        columns = np.asarray(data["train"].pixels[:, : 1 << 17])  # a sample of the lines' pixels
        model.encoder.fit_normalisation(columns.reshape(1, -1, 1))
    return CTCTask(config, data, tokenizer, model.to(device), world, device)


def train(config: CTCTrainConfig, on_event: Event | None = None, *, resume: bool = False,
          overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train a line reader as `config` says, in its run directory; with `resume`, continue it exactly."""
    inputs = (config.data,) if config.data is not None else ()
    return run_training(config, build, task_files=CACHE_FILES, inputs=inputs, on_event=on_event,
                        resume=resume, overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> CTCTrainConfig:
    return _resume_config(run_dir, CTCTrainConfig, overrides)
