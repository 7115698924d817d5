"""Image captioning as a task of the shared training loop: `build`, `train`, `resume_config`.

A batch is B images, each with one of its reference captions (drawn afresh every epoch, so every reference
is learned), as characters (or words) between two `<eod>` tokens, padded with `<unk>` and scored per token.
Validation decodes every validation image freely (greedy) and scores the captions with corpus BLEU-4, the
selection metric, plus BLEU-1, CIDEr-D, exact match and the teacher-forced loss.
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

from charrnn.caption.config import DEFAULT_CAPTION_DATA, CaptionTrainConfig
from charrnn.caption.data import cache_images, read_captions
from charrnn.caption.decode import caption_images
from charrnn.caption.evaluate import caption_scores, teacher_forced_loss
from charrnn.caption.model import Captioner, caption_loss, check_checkpoint, encode_captions
from charrnn.core.checkpoint import check_weights
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.core.trainer import Event, TrainSummary, run_training
from charrnn.vision.fingerprint import check_fingerprint

CACHE_FILES = ("train-images.u8", "train-images.json", "val-images.u8", "val-images.json")


def make_tokenizer(captions: list[list[str]], kind: str):
    if kind == "word":
        return WordTokenizer.from_texts(c for refs in captions for c in refs)
    return CharTokenizer.from_text("".join(c for refs in captions for c in refs))


class CaptionTask:
    """Teacher-forced captioning of shuffled batches; free-running decoding scored with BLEU for validation."""

    name, unit, selection, lower_is_better = "caption", "images", "bleu4", False

    def __init__(self, config: CaptionTrainConfig, data: dict, tokenizer, model: Captioner, world: World,
                 device: torch.device):
        self.config, self.tokenizer, self.model, self.world, self.device = config, tokenizer, model, world, device
        self.train_images, self.train_captions = data["train_images"], data["train_captions"]
        self.val_images, self.val_captions = data["val_images"], data["val_captions"]
        self.data_meta = data["meta"]
        if len(self.train_images) < config.batch_size:
            raise CharRNNError(f"{len(self.train_images)} training images are fewer than one batch of --batch-size "
                               f"{config.batch_size}; lower it or add images")
        self.steps_per_epoch = len(self.train_images) // config.batch_size
        self.items_per_step = config.batch_size
        self.loss_at_chance = math.log(tokenizer.vocab_size)
        self.local = config.batch_size // world.size
        self._plan: tuple = (None, None, None)  # (epoch, order, picks) of the current epoch

    @property
    def has_validation(self) -> bool:
        return self.val_images is not None and len(self.val_images) > 0

    def describe(self) -> tuple[str, list[str]]:
        c, m = self.config, self.model.config
        what = f"{m.cell} {m.num_layers}x{m.hidden_size}" + (" with attention" if m.attention else "")
        n_val = len(self.val_images) if self.has_validation else 0
        encoder = f"CNN {'-'.join(map(str, m.channels))}" if m.encoder == "cnn" else m.encoder
        line = (f"captioner: {encoder} on {m.image_size}px, {what} | "
                f"{c.tokens} vocab {self.tokenizer.vocab_size} | train {len(self.train_images):,} images, "
                f"val {n_val:,}")
        return line, [self.data_meta["split_rule"]] + self.data_meta["notes"]

    def start_epoch(self, epoch: int) -> None:
        pass  # batches are a function of (epoch, i)

    def _epoch_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's image order and reference choices: a function of (seed, epoch), so the same after a
        resume; drawn once per epoch, not once per step."""
        if self._plan[0] != epoch:
            rng = np.random.default_rng([self.config.seed, epoch])
            n = len(self.train_images)
            self._plan = (epoch, rng.permutation(n), rng.integers(0, 1 << 30, size=n))
        return self._plan[1], self._plan[2]

    def batch(self, epoch: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's images (b, S, S, 3) and captions (b, T) of batch i of `epoch`."""
        order, picks = self._epoch_plan(epoch)
        start = i * self.config.batch_size + self.world.rank * self.local
        rows = np.sort(order[start:start + self.local])  # sorted: memory-mapped reads go forwards
        images = torch.from_numpy(np.array(self.train_images[rows]))
        refs = [self.train_captions[r][picks[r] % len(self.train_captions[r])] for r in rows]
        return images, encode_captions(self.tokenizer, refs)

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        images, tokens = self.batch(epoch, i)
        loss, _ = caption_loss(forward, images.to(self.device), tokens.to(self.device), self.tokenizer.unk_id,
                               doubly_stochastic=self.config.doubly_stochastic,
                               sample_prob=self.config.scheduled_sampling)
        return loss

    def evaluate(self, should_stop: Callable[[], bool] | None = None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        try:
            hypotheses = [self.tokenizer.decode(d.tokens) for d in
                          caption_images(self.model, self.tokenizer, self.val_images,
                                         max_len=self.config.max_caption_len, should_stop=should_stop)]
            val_loss = teacher_forced_loss(self.model, self.tokenizer, self.val_images, self.val_captions,
                                           should_stop=should_stop)
        finally:
            self.model.train(was_training)
        scores = caption_scores(hypotheses, self.val_captions)
        return {"val_loss": val_loss, "bleu4": scores["bleu4"], "bleu1": scores["bleu1"], "cider": scores["cider"],
                "exact_match": scores["exact_match"]}

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"data": self.data_meta["data"], "split_rule": self.data_meta["split_rule"],
                "data_fingerprint": self.data_meta["fingerprint"]}


# ----- building, training, resuming -----------------------------------------------------------------

def load_data(config: CaptionTrainConfig, run_dir: Path, trained_on: dict | None = None) -> dict:
    """Read the dataset, split it, and decode its images once into the run directory's cache. `trained_on` is
    the fingerprint of the data a resumed run was trained on: data changed since is refused before anything
    is decoded (`check_fingerprint`)."""
    data = read_captions(config.data, split=config.split, val_dir=config.val_dir, val_frac=config.val_frac,
                         seed=config.seed, skip_bad=config.skip_bad)
    sides = {"train": (data.train, data.train.captions), "val": (data.val, data.val.captions) if data.val else None}
    fingerprint = check_fingerprint(trained_on, sides, items="images", labels="captions")
    train = cache_images(data.train, run_dir / "train-images", size=config.image_size, skip_bad=config.skip_bad)
    val = (cache_images(data.val, run_dir / "val-images", size=config.image_size, skip_bad=config.skip_bad)
           if data.val is not None else None)
    skipped = len(data.skipped) + len(train.skipped) + (len(val.skipped) if val else 0)
    notes = [f"skipped {skipped} bad rows (--skip-bad)"] if skipped else []
    return {"train_images": train.pixels, "train_captions": train.captions,
            "val_images": val.pixels if val else None, "val_captions": val.captions if val else [],
            "meta": {"data": str(config.data), "split_rule": data.split_rule, "notes": notes,
                     "fingerprint": fingerprint}}


def build(config: CaptionTrainConfig, *, checkpoint: dict | None, world: World, device: torch.device) -> CaptionTask:
    data_path = Path(config.data)
    if checkpoint is None and config.data == DEFAULT_CAPTION_DATA:
        data_path = bundled(DEFAULT_CAPTION_DATA)
    config = replace(config, data=str(data_path.resolve()) if data_path.exists() else str(data_path),
                     out=str(config.run_dir))
    if checkpoint is not None:  # the weights against the model this run's settings build, before the data is read
        vocab_size = check_checkpoint(checkpoint).vocab_size
        check_weights(checkpoint["model_state"], lambda: Captioner(config.model_config(vocab_size)),
                      checkpoint.get("source", config.run_dir))
    trained_on = (checkpoint.get("meta") or {}).get("data_fingerprint") if checkpoint is not None else None
    data = load_data(config, config.run_dir, trained_on)
    if checkpoint is not None:
        tokenizer = tokenizer_from_dict(checkpoint["tokenizer"])
    else:
        tokenizer = make_tokenizer(data["train_captions"], config.tokens)
    model = Captioner(config.model_config(tokenizer.vocab_size))
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model_state"])
    elif config.encoder_weights is not None:
        model.encoder.load_weights(config.encoder_weights)  # with the normalisation it was trained with
    else:
        model.encoder.fit_normalisation(data["train_images"])
    if config.freeze_encoder:
        model.freeze_encoder()
    return CaptionTask(config, data, tokenizer, model.to(device), world, device)


def train(config: CaptionTrainConfig, on_event: Event | None = None, *, resume: bool = False,
          overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train a captioner as `config` says, in its run directory; with `resume`, continue it exactly."""
    return run_training(config, build, task_files=CACHE_FILES, inputs=(config.data,), on_event=on_event,
                        resume=resume, overwrite=overwrite, stop=stop)


def resume_config(run_dir: str | os.PathLike, **overrides) -> CaptionTrainConfig:
    return _resume_config(run_dir, CaptionTrainConfig, overrides)
