"""Tagging as a task of the shared training loop: `build`, `train`, `resume_config`.

A batch is B texts of similar lengths with a tag per character, scored by the cross-entropy of every character
(padding left out). Validation tags every validation text and reports character accuracy, macro-F1 over the
tags and, for truecasing, the F1 of finding the capitalised words (the selection metric there; macro-F1
elsewhere).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from charrnn.core.batches import ExampleBatches, pad
from charrnn.core.distributed import World
from charrnn.core.files import bundled
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer
from charrnn.core.trainer import Event, TrainSummary, run_training
from charrnn.tag.config import DEFAULT_DATA, TagTrainConfig
from charrnn.tag.data import TagData, case_data, tsv_data
from charrnn.tag.evaluate import predict_tags, tag_scores
from charrnn.tag.model import Tagger, tag_loss


class TagTask(ExampleBatches):
    """Shuffled, length-sorted batches of tagged texts; tag accuracy and F1 for validation."""

    name, unit, lower_is_better = "tag", "chars", False

    def __init__(self, config: TagTrainConfig, data: TagData, tokenizer: CharTokenizer, model: Tagger, world: World,
                 device: torch.device):
        self.config, self.data, self.tokenizer, self.model = config, data, tokenizer, model
        self.world, self.device = world, device
        self.selection = "word_f1" if config.derive == "case" else "macro_f1"
        index = {t: k for k, t in enumerate(model.config.tags)}
        self.train_ids = [tokenizer.encode(t, map_unknown=True) for t in data.train.texts]
        self.train_tags = [np.array([index.get(t, 0) for t in row]) for row in data.train.tags]
        self._plan_batches([len(t) for t in self.train_ids], "training texts", "text")
        self.items_per_step = int(self.lengths.mean() * config.batch_size)  # characters
        self.loss_at_chance = math.log(len(model.config.tags))

    def describe(self) -> tuple[str, list[str]]:
        m = self.model.config
        what = "truecaser" if self.config.derive == "case" else "tagger"
        line = (f"{what}: {'bidirectional ' if m.bidirectional else ''}{m.cell} {m.num_layers}x{m.hidden_size} | "
                f"{len(m.tags)} tags, {m.vocab_size} symbols | train {sum(self.lengths):,} characters in "
                f"{len(self.train_ids):,} texts")
        return line, [self.data.split_rule]

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        rows = self.batch_rows(epoch, i)
        ids, lengths = pad([self.train_ids[r] for r in rows], self.tokenizer.eod_id)
        targets, _ = pad([self.train_tags[r] for r in rows], 0)
        logits = forward(ids.to(self.device), lengths.to(self.device))
        return tag_loss(logits, targets.to(self.device), lengths.to(self.device))

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        val = self.data.val
        predicted, loss = predict_tags(self.model, self.tokenizer, val.texts, truth=val.tags, should_stop=should_stop)
        self.model.train(was_training)
        scores = tag_scores(val.texts, val.tags, predicted, self.model.config.tags, self.config.derive == "case")
        out = {"val_loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
        if "words" in scores:
            out["word_f1"] = scores["words"]["f1"]
        return out

    def meta(self) -> dict:
        return {"data": str(self.config.data), "split_rule": self.data.split_rule}


# ----- building, training, resuming -----------------------------------------------------------------

def read_run_data(config: TagTrainConfig) -> TagData:
    """The run's data, split as its settings say."""
    if config.derive == "case":
        return case_data(config.data, max_chars=config.max_chars, val_frac=config.val_frac,
                         test_frac=config.test_frac, encoding=config.encoding)
    return tsv_data(config.data, max_chars=config.max_chars, val_frac=config.val_frac, test_frac=config.test_frac,
                    seed=config.seed, skip_bad=config.skip_bad)


def build(config: TagTrainConfig, *, checkpoint: dict | None, world: World, device: torch.device) -> TagTask:
    data = Path(config.data)
    if checkpoint is None and config.data == DEFAULT_DATA:
        data = bundled(DEFAULT_DATA)
    config = replace(config, data=str(data.resolve()) if data.exists() else str(data), out=str(config.run_dir))
    tag_data = read_run_data(config)
    if checkpoint is not None:
        tokenizer = CharTokenizer.from_dict(checkpoint["tokenizer"])
        tags = tuple(checkpoint["model_config"]["tags"])
    else:
        tokenizer = CharTokenizer.from_text("".join(tag_data.train.texts))
        tags = tag_data.tags
    model = Tagger(config.model_config(tokenizer.vocab_size, tags))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
    return TagTask(config, tag_data, tokenizer, model.to(device), world, device)


def train(config: TagTrainConfig, on_event: Event | None = None, *, resume: bool = False, overwrite: bool = False,
          stop: threading.Event | None = None) -> TrainSummary:
    """Train a tagger as `config` says, in its run directory; with `resume`, continue it exactly."""
    return run_training(config, build, task_files=(), inputs=(config.data,), on_event=on_event, resume=resume,
                        overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> TagTrainConfig:
    return _resume_config(run_dir, TagTrainConfig, overrides)
