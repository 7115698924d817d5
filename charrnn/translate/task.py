"""Translation as a task of the shared training loop: `build`, `train`, `resume_config`.

A batch is B pairs of similar source lengths (an epoch's pairs are shuffled, then sorted by length within
windows of a few dozen batches), scored by the teacher-forced cross-entropy of every target token and the end
(with --scheduled-sampling, some inputs are the model's own previous guesses). Validation reports that loss and
what greedy decoding of every validation source gets right: the token error rate (the selection metric: the
phone error rate of a pronouncing dictionary), exact match and CER.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from charrnn.core.batches import ExampleBatches, pad
from charrnn.core.distributed import World
from charrnn.core.files import bundled
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import PairTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.core.trainer import Event, TrainSummary, run_training
from charrnn.translate.config import DEFAULT_DATA, TranslateTrainConfig
from charrnn.translate.data import PairData, read_pair_data
from charrnn.translate.decode import pair_tokenizer, source_ids
from charrnn.translate.evaluate import score_outputs, teacher_forced_loss, translate_references
from charrnn.translate.model import Translator, encode_targets, translate_loss


class TranslateTask(ExampleBatches):
    """Shuffled, length-sorted batches of pairs scored by cross-entropy; greedy token error rate for validation."""

    name, unit, selection, lower_is_better = "translate", "pairs", "token_error_rate", True

    def __init__(self, config: TranslateTrainConfig, data: PairData, tokenizer: PairTokenizer, model: Translator,
                 world: World, device: torch.device):
        self.config, self.data, self.tokenizer, self.model = config, data, tokenizer, model
        self.world, self.device = world, device
        self.sources = source_ids(tokenizer, data.train.sources)
        self.targets = [tokenizer.target.encode(t, map_unknown=True) for t in data.train.targets]
        self._plan_batches([len(s) for s in self.sources], "training pairs", "pairs")
        self.loss_at_chance = math.log(tokenizer.vocab_size)

    def describe(self) -> tuple[str, list[str]]:
        m = self.model.config
        side = lambda t: "words" if isinstance(t, WordTokenizer) else "characters"  # noqa: E731
        line = (f"translator: bidirectional {m.cell} {m.num_layers}x{m.hidden_size // 2} encoder, {m.cell} "
                f"{m.num_layers}x{m.hidden_size} decoder, {m.attention} attention | {m.source_vocab_size - 2} source "
                f"{side(self.tokenizer.source)} -> {m.vocab_size - 2} target {side(self.tokenizer.target)} | "
                f"train {len(self.data.train):,} pairs")
        return line, [self.data.split_rule] + self.data.notes

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        rows = self.batch_rows(epoch, i)
        ids, lengths = pad([self.sources[r] for r in rows], self.tokenizer.source.eod_id)
        gold = encode_targets([self.targets[r] for r in rows], self.tokenizer.eod_id, self.tokenizer.unk_id)
        return translate_loss(forward, ids.to(self.device), lengths.to(self.device), gold.to(self.device),
                              self.tokenizer.unk_id, self.config.scheduled_sampling)

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        val = self.data.val
        loss = teacher_forced_loss(self.model, self.tokenizer, val, should_stop=should_stop)
        references = val.references()
        outputs = translate_references(self.model, self.tokenizer, references,
                                       max_target_len=self.config.max_target_len, should_stop=should_stop)
        self.model.train(was_training)
        scores = score_outputs(self.tokenizer, references, outputs)
        return {"val_loss": loss, "token_error_rate": scores["token_error_rate"],
                "exact_match": scores["exact_match"], "cer": scores["cer"]}

    def meta(self) -> dict:
        c = self.config
        return {"data": c.source or c.data or f"{DEFAULT_DATA} (bundled)", "split_rule": self.data.split_rule}


# ----- building, training, resuming -----------------------------------------------------------------

def read_run_data(config: TranslateTrainConfig) -> PairData:
    """The run's data, split as its settings say (the same split every time: the seed fixes it); no DATA and no
    --source: the bundled pronouncing dictionary, wherever charrnn is installed."""
    data = str(bundled(DEFAULT_DATA)) if config.data is None and config.source is None else config.data
    return read_pair_data(data, source=config.source, target=config.target, source_column=config.source_column,
                          target_column=config.target_column, source_tokens=config.source_tokens,
                          target_tokens=config.target_kind, val_dir=config.val_dir, val_frac=config.val_frac,
                          test_frac=config.test_frac, seed=config.seed, skip_bad=config.skip_bad,
                          max_target_len=config.max_target_len)


def _resolved(config: TranslateTrainConfig) -> TranslateTrainConfig:
    """Paths made absolute (a run keeps working from another directory; the bundled data stays unnamed, found
    wherever charrnn is installed), the run directory fixed, and --target-tokens auto decided."""
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path is not None and Path(path).exists() else path

    data = None if config.bundled else absolute(config.data)
    return replace(config, data=data, source=absolute(config.source), target=absolute(config.target),
                   val_dir=absolute(config.val_dir), out=str(config.run_dir), target_tokens=config.target_kind)


def build(config: TranslateTrainConfig, *, checkpoint: dict | None, world: World,
          device: torch.device) -> TranslateTask:
    config = _resolved(config)
    data = read_run_data(config)
    if checkpoint is not None:
        tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    else:
        tokenizer = pair_tokenizer(data.train.sources, data.train.targets, config.source_tokens, config.target_kind)
    model = Translator(config.model_config(tokenizer.vocab_size, tokenizer.source.vocab_size))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
    return TranslateTask(config, data, tokenizer, model.to(device), world, device)


def train(config: TranslateTrainConfig, on_event: Event | None = None, *, resume: bool = False,
          overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train a translator as `config` says, in its run directory; with `resume`, continue it exactly."""
    inputs = tuple(p for p in (config.data, config.source, config.target, config.val_dir) if p is not None)
    return run_training(config, build, task_files=(), inputs=inputs, on_event=on_event, resume=resume,
                        overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> TranslateTrainConfig:
    return _resume_config(run_dir, TranslateTrainConfig, overrides)
