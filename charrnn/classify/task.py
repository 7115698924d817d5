"""Text classification as a task of the shared training loop: `build`, `train`, `resume_config`.

A batch is B texts of similar lengths (an epoch's texts are shuffled, then sorted by length within windows of
a few dozen batches, so little of a batch is padding) with their labels, scored by cross-entropy. Validation
classifies every validation text and reports accuracy (the selection metric), macro-F1 and the loss.
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

from charrnn.classify.config import DEFAULT_DATA, ClassifyTrainConfig
from charrnn.classify.data import ClassifyData, read_classify_data
from charrnn.classify.evaluate import classification_scores, predict_ids
from charrnn.classify.model import Classifier, classify_loss
from charrnn.core.batches import ExampleBatches, pad
from charrnn.core.checkpoint import load_checkpoint, require_task
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer
from charrnn.core.trainer import Event, TrainSummary, run_training


def encode_texts(tokenizer: CharTokenizer, texts: list[str], max_chars: int) -> list[np.ndarray]:
    """Each text's ids, cut to its first `max_chars` characters; unknown characters become `<unk>`."""
    return [tokenizer.encode(t[:max_chars], map_unknown=True) for t in texts]


class ClassifyTask(ExampleBatches):
    """Shuffled, length-sorted batches of texts scored by cross-entropy; accuracy for validation."""

    name, unit, selection, lower_is_better = "classify", "texts", "accuracy", False

    def __init__(self, config: ClassifyTrainConfig, data: ClassifyData, tokenizer: CharTokenizer, model: Classifier,
                 world: World, device: torch.device):
        self.config, self.data, self.tokenizer, self.model = config, data, tokenizer, model
        self.world, self.device = world, device
        index = {label: k for k, label in enumerate(model.config.labels)}
        self.train_ids = encode_texts(tokenizer, data.train.texts, config.max_chars)
        self.train_targets = np.array([index[label] for label in data.train.labels])
        self._plan_batches([len(ids) for ids in self.train_ids], "training examples", "examples")
        self.loss_at_chance = math.log(len(model.config.labels))

    def describe(self) -> tuple[str, list[str]]:
        m = self.model.config
        n_val = len(self.data.val) if self.has_validation else 0
        line = (f"classifier: {'bidirectional ' if m.bidirectional else ''}{m.cell} {m.num_layers}x{m.hidden_size}, "
                f"{m.pool} pooling | {len(m.labels)} labels, {m.vocab_size} symbols | "
                f"train {len(self.data.train):,} texts, val {n_val:,}")
        notes = [self.data.split_rule] + self.data.notes
        if self.config.init_from:
            notes.append(f"embedding and recurrent layers from {self.config.init_from}"
                         + (" (frozen)" if self.config.freeze else ""))
        return line, notes

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        rows = self.batch_rows(epoch, i)
        ids, lengths = pad([self.train_ids[r] for r in rows], self.tokenizer.eod_id)
        targets = torch.from_numpy(self.train_targets[rows]).to(self.device)
        return classify_loss(forward(ids.to(self.device), lengths.to(self.device)), targets)

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        val = self.data.val
        ids = encode_texts(self.tokenizer, val.texts, self.config.max_chars)
        probs = predict_ids(self.model, ids, self.tokenizer.eod_id, should_stop=should_stop)
        self.model.train(was_training)
        scores = classification_scores(probs, val.labels, self.model.config.labels)
        return {"val_loss": scores["loss"], "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}

    def meta(self) -> dict:
        return {"data": str(self.config.data), "split_rule": self.data.split_rule,
                "labels": {label: self.data.train.labels.count(label) for label in self.model.config.labels}}


# ----- building, training, resuming -----------------------------------------------------------------

def read_run_data(config: ClassifyTrainConfig) -> ClassifyData:
    """The run's data, split as its settings say (the same split every time: the seed fixes it)."""
    return read_classify_data(config.data, format=config.format, text_column=config.text_column,
                              label_column=config.label_column, val_dir=config.val_dir, val_frac=config.val_frac,
                              test_frac=config.test_frac, seed=config.seed, skip_bad=config.skip_bad)


def language_model_start(path: str, config: ClassifyTrainConfig) -> tuple[CharTokenizer, dict]:
    """The tokenizer and weights of the language model `--init-from` names, checked against the classifier's
    settings (the same cell, embedding and hidden size, and unidirectional, as many layers)."""
    ckpt = load_checkpoint(path)
    require_task(ckpt, "lm", path)
    lm = ckpt["model_config"]
    wanted = {"cell": config.cell, "embedding_dim": config.embedding_dim, "hidden_size": config.hidden_size}
    if not config.bidirectional:
        wanted["num_layers"] = config.num_layers
    differ = [f"--{k.replace('_', '-')} {lm.get(k)}" for k, v in wanted.items() if lm.get(k) != v]
    if differ:
        shape = f"{lm.get('cell')} {lm.get('num_layers')}x{lm.get('hidden_size')}"
        raise CharRNNError(f"--init-from {path!r} is a {shape} with embedding {lm.get('embedding_dim')}; give the "
                           f"classifier the same: {' '.join(differ)}")
    return CharTokenizer.from_dict(ckpt["tokenizer"]), ckpt["model_state"]


def _resolved(config: ClassifyTrainConfig, checkpoint: dict | None) -> ClassifyTrainConfig:
    data = Path(config.data)
    if checkpoint is None and config.data == DEFAULT_DATA:
        data = bundled(DEFAULT_DATA)
    return replace(config, data=str(data.resolve()) if data.exists() else str(data), out=str(config.run_dir))


def build(config: ClassifyTrainConfig, *, checkpoint: dict | None, world: World,
          device: torch.device) -> ClassifyTask:
    config = _resolved(config, checkpoint)
    data = read_run_data(config)
    lm_state = None
    if checkpoint is not None:
        tokenizer = CharTokenizer.from_dict(checkpoint["tokenizer"])
    elif config.init_from is not None:
        tokenizer, lm_state = language_model_start(config.init_from, config)
    else:
        tokenizer = CharTokenizer.from_text("".join(data.train.texts))
    labels = tuple(checkpoint["model_config"]["labels"]) if checkpoint is not None else data.labels
    model = Classifier(config.model_config(tokenizer.vocab_size, labels))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
    elif lm_state is not None:
        model.encoder.load_language_model(lm_state)
    if config.freeze:
        model.freeze_encoder()
    return ClassifyTask(config, data, tokenizer, model.to(device), world, device)


def train(config: ClassifyTrainConfig, on_event: Event | None = None, *, resume: bool = False,
          overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train a classifier as `config` says, in its run directory; with `resume`, continue it exactly."""
    inputs = tuple(p for p in (config.data, config.val_dir, config.init_from) if p is not None)
    return run_training(config, build, task_files=(), inputs=inputs, on_event=on_event, resume=resume,
                        overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> ClassifyTrainConfig:
    return _resume_config(run_dir, ClassifyTrainConfig, overrides)
