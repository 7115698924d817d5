"""Image captioning as a task of the shared training loop, and the functions `charrnn caption` calls.

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

from charrnn.caption.model import Captioner, Decoded, beam_search, caption_loss, decode
from charrnn.core.checkpoint import load_checkpoint, require_task, trained_with
from charrnn.core.errors import CharRNNError, bundled
from charrnn.core.config import DEFAULT_CAPTION_DATA, CaptionConfig, CaptionTrainConfig
from charrnn.core.distributed import World
from charrnn.caption.data import CaptionSplit, cache_images, read_captions
from charrnn.caption.evaluate import caption_scores
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.core.trainer import Event, TrainSummary, run_training

EVAL_BATCH = 128
CACHE_FILES = ("train-images.u8", "train-images.json", "val-images.u8", "val-images.json")


def make_tokenizer(captions: list[list[str]], kind: str):
    if kind == "word":
        return WordTokenizer.from_texts(c for refs in captions for c in refs)
    return CharTokenizer.from_text("".join(c for refs in captions for c in refs))


def encode_captions(tokenizer, captions: list[str]) -> torch.Tensor:
    """(B, T+2) ids: `<eod>` caption `<eod>`, padded with `<unk>` (never a target: the loss ignores it)."""
    rows = [[tokenizer.eod_id, *tokenizer.encode(c, map_unknown=True).tolist(), tokenizer.eod_id] for c in captions]
    out = torch.full((len(rows), max(map(len, rows))), tokenizer.unk_id, dtype=torch.long)
    for k, row in enumerate(rows):
        out[k, : len(row)] = torch.tensor(row)
    return out


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

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        hypotheses = [self.tokenizer.decode(d.tokens) for d in
                      caption_images(self.model, self.tokenizer, self.val_images, max_len=self.config.max_caption_len)]
        val_loss = teacher_forced_loss(self.model, self.tokenizer, self.val_images, self.val_captions)
        self.model.train(was_training)
        scores = caption_scores(hypotheses, self.val_captions)
        return {"val_loss": val_loss, "bleu4": scores["bleu4"], "bleu1": scores["bleu1"], "cider": scores["cider"],
                "exact_match": scores["exact_match"]}

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"data": self.data_meta["data"], "split_rule": self.data_meta["split_rule"]}


# ----- decoding and scoring many images -----------------------------------------------------------

def caption_images(model: Captioner, tokenizer, images, *, max_len: int, beam_size: int = 1,
                   length_alpha: float = 0.0, temperature: float = 0.0,
                   generator: torch.Generator | None = None) -> list[Decoded]:
    """A caption for each of `images` (N, S, S, 3) uint8, decoded in batches (greedy, sampled or beam)."""
    device = model.head.weight.device
    out: list[Decoded] = []
    ends = dict(bos=tokenizer.eod_id, eos=tokenizer.eod_id, max_len=max_len)
    for start in range(0, len(images), EVAL_BATCH):
        batch = torch.from_numpy(np.array(images[start:start + EVAL_BATCH])).to(device)
        if beam_size > 1:
            out += beam_search(model, batch, beam_size=beam_size, length_alpha=length_alpha, **ends)
        else:
            out += decode(model, batch, temperature=temperature, generator=generator, **ends)
    return out


@torch.no_grad()
def teacher_forced_loss(model: Captioner, tokenizer, images, captions: list[list[str]]) -> float:
    """Mean cross-entropy per token of every reference caption given its image."""
    device = model.head.weight.device
    pairs = [(k, c) for k, refs in enumerate(captions) for c in refs]
    total, count = 0.0, 0
    for start in range(0, len(pairs), EVAL_BATCH):
        chunk = pairs[start:start + EVAL_BATCH]
        images_ = torch.from_numpy(np.array(images[[k for k, _ in chunk]])).to(device)
        tokens = encode_captions(tokenizer, [c for _, c in chunk]).to(device)
        _, ce = caption_loss(model, images_, tokens, tokenizer.unk_id)
        n = int((tokens[:, 1:] != tokenizer.unk_id).sum())
        total, count = total + float(ce) * n, count + n
    return total / max(count, 1)


# ----- building, training, resuming -----------------------------------------------------------------

def load_data(config: CaptionTrainConfig, run_dir: Path) -> dict:
    """Read the dataset, split it, and decode its images once into the run directory's cache."""
    data = read_captions(config.data, split=config.split, val_dir=config.val_dir, val_frac=config.val_frac,
                         seed=config.seed, skip_bad=config.skip_bad)
    train = cache_images(data.train, run_dir / "train-images", size=config.image_size, skip_bad=config.skip_bad)
    val = (cache_images(data.val, run_dir / "val-images", size=config.image_size, skip_bad=config.skip_bad)
           if data.val is not None else None)
    skipped = len(data.skipped) + len(train.skipped) + (len(val.skipped) if val else 0)
    notes = [f"skipped {skipped} bad rows (--skip-bad)"] if skipped else []
    return {"train_images": train.pixels, "train_captions": train.captions,
            "val_images": val.pixels if val else None, "val_captions": val.captions if val else [],
            "meta": {"data": str(config.data), "split_rule": data.split_rule, "notes": notes}}


def build(config: CaptionTrainConfig, *, checkpoint: dict | None, world: World, device: torch.device) -> CaptionTask:
    data_path = Path(config.data)
    if checkpoint is None and config.data == DEFAULT_CAPTION_DATA:
        data_path = bundled(DEFAULT_CAPTION_DATA)
    config = replace(config, data=str(data_path.resolve()) if data_path.exists() else str(data_path),
                     out=str(config.run_dir))
    data = load_data(config, config.run_dir)
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


def load_captioner(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[Captioner, object, dict]:
    """The captioner, tokenizer and checkpoint dict of a caption checkpoint file or run directory."""
    checkpoint = load_checkpoint(path)
    require_task(checkpoint, "caption", path)
    model = Captioner(CaptionConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), tokenizer_from_dict(checkpoint["tokenizer"]), checkpoint


# ----- the commands: describe images, score a model -------------------------------------------------

def read_image_files(paths: list[Path], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8, each file decoded exactly as the training cache decodes it."""
    from charrnn.caption.data import decode_image

    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    for k, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                out[k] = decode_image(f, size)
        except FileNotFoundError:
            raise CharRNNError(f"no such image: {str(path)!r}") from None
        except (OSError, ValueError) as e:  # Pillow: not an image, truncated, unsupported
            raise CharRNNError(f"{str(path)!r} cannot be read as an image ({e})") from None
    return out


def describe_images(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                    length_alpha: float = 0.0, temperature: float = 0.0, num_samples: int = 1,
                    seed: int | None = None, device: str = "auto", attention_png: Path | None = None) -> dict:
    """Captions for image files: {"images": [{"image", "captions": [...]}]}; optionally a picture of where
    the model looked for each token of each image's first caption."""
    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_captioner(checkpoint, resolve_device(device))
    if attention_png is not None and not model.config.attention:
        raise CharRNNError("--show-attention needs a model trained with attention (this one was not)")
    pixels = read_image_files(paths, model.config.image_size)
    max_len = (ckpt["meta"].get("train_config") or {}).get("max_caption_len", CaptionTrainConfig.max_caption_len)
    generator = torch.Generator(device=model.head.weight.device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    runs = [caption_images(model, tokenizer, pixels, max_len=max_len, beam_size=beam_size, length_alpha=length_alpha,
                           temperature=temperature, generator=generator) for _ in range(num_samples)]
    if attention_png is not None:
        from charrnn.caption.attention_png import attention_grid

        pictures = [(pixels[k], [tokenizer.decode([t]) for t in d.tokens], d.attention) for k, d in enumerate(runs[0])]
        attention_grid(pictures, attention_png)
    return {"images": [{"image": str(p), "captions": [tokenizer.decode(run[k].tokens) for run in runs]}
                       for k, p in enumerate(paths)]}


def evaluate_captioner(checkpoint: str | os.PathLike, data: str | None = None, *, part: str = "val",
                       beam_size: int = 3, length_alpha: float = 0.0, skip_bad: bool = False,
                       device: str = "auto") -> dict:
    """Corpus BLEU-1..4, CIDEr-D and exact match of greedy and beam-search captions on `data` (the run's own
    data by default): its validation side as the run split it (`part="val"`) or every image (`"all"`)."""
    import tempfile

    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_captioner(checkpoint, resolve_device(device))
    run = trained_with(ckpt, CaptionTrainConfig)
    data_path = data if data is not None else run.data
    read = read_captions(data_path, split=run.split if data is None else None, val_frac=run.val_frac,
                         seed=run.seed, skip_bad=skip_bad)
    split = read.val if part == "val" and read.val is not None else read.train
    if part == "all" and read.val is not None:
        split = _joined(read.train, read.val)
    with tempfile.TemporaryDirectory() as tmp:  # decode into a throw-away cache: nothing is left behind
        images = cache_images(split, Path(tmp) / "images", size=model.config.image_size, skip_bad=skip_bad)
        pixels = np.array(images.pixels)
    references = images.captions
    result = {"images": len(pixels), "references": sum(map(len, references)), "data": str(data_path), "part": part}
    for name, beam in (("greedy", 1), ("beam", beam_size)):
        decoded = caption_images(model, tokenizer, pixels, max_len=run.max_caption_len, beam_size=beam,
                                 length_alpha=length_alpha)
        result[name] = caption_scores([tokenizer.decode(d.tokens) for d in decoded], references)
    result["beam_size"] = beam_size
    return result


def _joined(a: CaptionSplit, b: CaptionSplit) -> CaptionSplit:
    """Two splits of one dataset as one."""
    groups = None if a.groups is None or b.groups is None else a.groups + b.groups
    return CaptionSplit(a.root, a.files + b.files, a.captions + b.captions, groups, a.origins + b.origins)
