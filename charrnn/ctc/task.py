"""Reading text lines (CRNN + CTC) as a task of the shared training loop, and the functions `charrnn ctc` calls.

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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from charrnn.core.checkpoint import load_checkpoint, require_task, trained_with
from charrnn.core.errors import CharRNNError
from charrnn.core.config import DEFAULT_CHAR_BONUS, DEFAULT_LINES, DEFAULT_LM_WEIGHT, CTCConfig, CTCTrainConfig
from charrnn.ctc.decode import greedy_decode
from charrnn.core.distributed import World
from charrnn.ctc.data import LineImages, cache_lines, read_lines
from charrnn.caption.evaluate import error_rates
from charrnn.ctc.model import LineReader, ctc_loss, frames
from charrnn.core.rundir import resume_config as _resume_config
from charrnn.core.tokenizer import CharTokenizer
from charrnn.core.trainer import Event, TrainSummary, run_training

EVAL_BATCH = 64
SORT_WINDOW = 50  # batches whose lines are sorted by width together: short padding, still shuffled
CACHE_FILES = ("train-lines.npy", "train-lines.json", "val-lines.npy", "val-lines.json")


# ----- the alphabet: CTC classes <-> characters ------------------------------------------------------

def labels(tokenizer: CharTokenizer) -> list[str]:
    """The reader's classes as text: "" for the blank, then one character each."""
    return [""] + [chr(c) for c in tokenizer.codes]


def targets(tokenizer: CharTokenizer, text: str) -> list[int]:
    """The classes of `text`; characters the reader never trained on are left out (they cannot be a target)."""
    ids = tokenizer.encode_compact(text, map_unknown=True)
    return [int(i) + 1 for i in ids if i != tokenizer.unk_id]


def text_of(tokenizer: CharTokenizer, classes: list[int]) -> str:
    return "".join(chr(tokenizer.codes[k - 1]) for k in classes)


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

    def _epoch_plan(self, epoch: int) -> list[np.ndarray]:
        """The epoch's batches of line indices: a function of (seed, epoch), so the same after a resume."""
        if self._plan[0] != epoch:
            rng = np.random.default_rng([self.config.seed, epoch])
            B, widths = self.config.batch_size, self.train.widths()
            order = rng.permutation(len(self.train))[: self.steps_per_epoch * B]
            window = SORT_WINDOW * B
            for start in range(0, len(order), window):  # sort by width inside each window
                part = order[start:start + window]
                order[start:start + window] = part[np.argsort(widths[part], kind="stable")]
            batches = order.reshape(self.steps_per_epoch, B)
            self._plan = (epoch, batches[rng.permutation(self.steps_per_epoch)])
        return self._plan[1]

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        rows = self._epoch_plan(epoch)[i]
        rows = np.sort(rows[self.world.rank * self.local:(self.world.rank + 1) * self.local])
        pixels, widths = self.train.batch(rows)
        log_probs, lengths = forward(torch.from_numpy(pixels).to(self.device), torch.from_numpy(widths).to(self.device))
        return ctc_loss(log_probs, lengths, [self.targets[r] for r in rows])

    def evaluate(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        texts, loss = read_images(self.model, self.tokenizer, self.val)
        self.model.train(was_training)
        rates = error_rates(texts, self.val.split.texts)
        return {"val_loss": loss, "cer": rates["cer"], "wer": rates["wer"],
                "line_accuracy": rates["line_accuracy"]}

    def train_state(self) -> dict:
        return {}

    def load_train_state(self, state: dict) -> None:
        pass

    def meta(self) -> dict:
        return {"data": self.data_meta["data"], "split_rule": self.data_meta["split_rule"]}


# ----- reading many lines ----------------------------------------------------------------------------

@dataclass
class Outputs:
    """The reader's output on a set of lines: per line (original order) the log-probabilities of its valid
    frames (T_i, V), and the mean CTC loss per transcript character."""

    log_probs: list[torch.Tensor]
    loss: float


@torch.no_grad()
def run_reader(model: LineReader, tokenizer: CharTokenizer, images: LineImages) -> Outputs:
    """Run the reader over every line of `images`, in batches of similar widths."""
    device = model.head.weight.device
    order = np.argsort(images.widths(), kind="stable")
    per_line: list[torch.Tensor | None] = [None] * len(images)
    total, chars = 0.0, 0
    for start in range(0, len(order), EVAL_BATCH):
        rows = order[start:start + EVAL_BATCH]
        pixels, widths = images.batch(rows)
        log_probs, lengths = model(torch.from_numpy(pixels).to(device), torch.from_numpy(widths).to(device))
        log_probs, lengths = log_probs.cpu(), lengths.cpu()
        want = [targets(tokenizer, images.split.texts[r]) for r in rows]
        total += float(ctc_loss(log_probs, lengths, want, reduction="sum"))
        chars += sum(map(len, want))
        for k, r in enumerate(rows):
            per_line[r] = log_probs[: lengths[k], k].clone()  # (T_i, V)
    return Outputs(per_line, total / max(chars, 1))  # type: ignore[arg-type]


def greedy_texts(tokenizer: CharTokenizer, log_probs: list[torch.Tensor]) -> list[str]:
    """Best-path reading of each line's valid frames."""
    return [text_of(tokenizer, greedy_decode(lp[:, None], torch.tensor([len(lp)]))[0]) for lp in log_probs]


def read_images(model: LineReader, tokenizer: CharTokenizer, images: LineImages) -> tuple[list[str], float]:
    """The greedy reading of every line of `images` and the mean CTC loss per character."""
    out = run_reader(model, tokenizer, images)
    return greedy_texts(tokenizer, out.log_probs), out.loss


# ----- building, training, resuming -----------------------------------------------------------------

def load_data(config: CTCTrainConfig, run_dir: Path) -> dict:
    """Read the line dataset, split it, and decode its images once into the run directory's cache."""
    data = read_lines(config.data, val_dir=config.val_dir, val_frac=config.val_frac, seed=config.seed,
                      iam_ok_only=config.iam_ok_only, skip_bad=config.skip_bad)
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
                                                 "notes": notes}}


DEFAULT_LINE_COUNT = 20_000  # training lines of the default set (and a tenth as many in val/ and val-heldout/)


def default_lines(on_progress: Callable[[int, int], None] | None = None) -> Path:
    """The line set `ctc train` uses when given no data: rendered once from the bundled corpus (train, val
    and held-out-font val lines, default fonts, seed 0) into DEFAULT_LINES, and reused while it is complete."""
    from charrnn.core.errors import bundled
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
    if config.data is None:
        config = replace(config, data=str(default_lines().resolve()))
    data_path = Path(config.data)
    config = replace(config, data=str(data_path.resolve()) if data_path.exists() else str(data_path),
                     out=str(config.run_dir))
    data = load_data(config, config.run_dir)
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


def load_reader(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[LineReader, CharTokenizer, dict]:
    """The reader, tokenizer and checkpoint dict of a ctc checkpoint file or run directory."""
    checkpoint = load_checkpoint(path)
    require_task(checkpoint, "ctc", path)
    model = LineReader(CTCConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["model_state"])
    return model.to(device).eval(), CharTokenizer.from_dict(checkpoint["tokenizer"]), checkpoint


# ----- the commands: read image files, score a reader, tune the language model's weight -------------

@dataclass(frozen=True)
class Fusion:
    """Shallow fusion of a charrnn language model into prefix beam search: each extension by character c
    adds lm_weight * log p_LM(c | prefix) + char_bonus (the bonus offsets the LM's pull toward short texts)."""

    lm: str  # a charrnn run directory or checkpoint (task lm)
    lm_weight: float = DEFAULT_LM_WEIGHT
    char_bonus: float = DEFAULT_CHAR_BONUS
    lm_unknown: str = "error"  # reader characters the LM lacks: "error", or "floor" (a fixed low log-prob)

    def __post_init__(self):
        if self.lm_unknown not in ("error", "floor"):
            raise CharRNNError(f"--lm-unknown must be error or floor, got {self.lm_unknown!r}")
        if not (math.isfinite(self.lm_weight) and math.isfinite(self.char_bonus)) or self.lm_weight < 0:
            raise CharRNNError("--lm-weight must be a number at least 0 and --char-bonus a finite number")


def beam_texts(tokenizer: CharTokenizer, log_probs: list[torch.Tensor], *, beam_size: int, lm=None,
               lm_weight: float = 0.0, char_bonus: float = 0.0) -> list[str]:
    """Prefix beam search over each line's valid frames, fused with `lm` (a CharLM) when given."""
    from charrnn.ctc.decode import search_lines

    found = search_lines(log_probs, beam_size=beam_size, lm=lm, lm_weight=lm_weight, char_bonus=char_bonus)
    return [text_of(tokenizer, list(hypotheses[0].labels)) if hypotheses else "" for hypotheses in found]


def _char_lm(fusion: Fusion | None, tokenizer: CharTokenizer, device):
    if fusion is None:
        return None
    from charrnn.ctc.decode import load_char_lm

    return load_char_lm(fusion.lm, labels(tokenizer), unknown=fusion.lm_unknown, device=device)


def lines_from_files(paths: list[Path], height: int, max_width: int) -> LineImages:
    """Image files as a LineImages, each decoded exactly as the training cache decodes it."""
    from charrnn.ctc.data import LineSplit, load_line_image

    lines = []
    for path in paths:
        try:
            lines.append(load_line_image(path, height, max_width))
        except FileNotFoundError:
            raise CharRNNError(f"no such image: {str(path)!r}") from None
        except (OSError, ValueError) as e:  # Pillow: not an image, truncated, unsupported
            raise CharRNNError(f"{str(path)!r} cannot be read as an image ({e})") from None
    offsets = np.cumsum([0] + [line.shape[1] for line in lines]).astype(np.int64)
    split = LineSplit(Path("."), [str(p) for p in paths], [""] * len(paths), [(str(p), None) for p in paths])
    return LineImages(np.concatenate(lines, axis=1), offsets, split, list(range(len(paths))), [], False)


def decode_files(checkpoint: str | os.PathLike, paths: list[Path], *, beam_size: int = 1,
                 fusion: Fusion | None = None, device: str = "auto", alignment_png: Path | None = None) -> dict:
    """The text of each line image: {"lines": [{"image", "text"}]}; greedy with beam_size 1 and no LM,
    else prefix beam search (fused with `fusion`'s LM). Optionally a picture of each line's best path."""
    from charrnn.core.device import resolve_device

    model_device = resolve_device(device)
    model, tokenizer, ckpt = load_reader(checkpoint, model_device)
    images = lines_from_files(paths, model.config.height, trained_with(ckpt, CTCTrainConfig).max_width)
    out = run_reader(model, tokenizer, images)
    if beam_size == 1 and fusion is None:
        texts = greedy_texts(tokenizer, out.log_probs)
    elif fusion is None:
        texts = beam_texts(tokenizer, out.log_probs, beam_size=beam_size)
    else:
        texts = beam_texts(tokenizer, out.log_probs, beam_size=beam_size, lm=_char_lm(fusion, tokenizer, model_device),
                           lm_weight=fusion.lm_weight, char_bonus=fusion.char_bonus)
    if alignment_png is not None:
        from charrnn.ctc.alignment_png import alignment_picture

        pixels = [np.asarray(images.pixels[:, images.offsets[k]:images.offsets[k + 1]]) for k in range(len(images))]
        best = [lp.argmax(-1).tolist() for lp in out.log_probs]  # the best class of every frame
        alignment_picture(list(zip(pixels, best)), labels(tokenizer), alignment_png)
    return {"lines": [{"image": str(p), "text": t} for p, t in zip(paths, texts)]}


def eval_lines(ckpt: dict, data: str | None, model: LineReader, skip_bad: bool, cache: Path) -> LineImages:
    """The lines to score: the run's own validation lines, or every line of `data` (the validation part
    when `data` is a make-lines set, which names its parts)."""
    run = trained_with(ckpt, CTCTrainConfig)
    if data is None:
        read = read_lines(run.data, val_dir=run.val_dir, val_frac=run.val_frac, seed=run.seed,
                          iam_ok_only=run.iam_ok_only, skip_bad=skip_bad)
        if read.val is None:
            raise CharRNNError("this run had no validation lines; name the lines to score: charrnn ctc eval RUN DATA")
    else:
        read = read_lines(data, val_frac=0.0, skip_bad=skip_bad)
    split = read.val if read.val is not None else read.train
    return cache_lines(split, cache, height=model.config.height, max_width=run.max_width, frames=frames,
                       skip_bad=skip_bad)


def _timed(read: Callable[[], list[str]], references: list[str]) -> dict:
    import time

    start = time.perf_counter()
    texts = read()
    seconds = time.perf_counter() - start
    return {**error_rates(texts, references), "lines_per_s": len(texts) / max(seconds, 1e-9)}


def evaluate_reader(checkpoint: str | os.PathLike, data: str | None = None, *, beam_size: int = 8,
                    fusion: Fusion | None = None, skip_bad: bool = False, device: str = "auto") -> dict:
    """Corpus CER, WER and line accuracy of greedy, beam and (with `fusion`) beam + LM readings, side by
    side, with each decoder's speed in lines/s (the network's own time excluded: it is shared)."""
    import tempfile

    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_reader(checkpoint, resolve_device(device))
    with tempfile.TemporaryDirectory() as tmp:  # decode into a throw-away cache: nothing is left behind
        images = eval_lines(ckpt, data, model, skip_bad, Path(tmp) / "lines")
        out = run_reader(model, tokenizer, images)
        truth = list(images.split.texts)
    result = {"lines": len(truth), "data": str(data if data is not None else trained_with(ckpt, CTCTrainConfig).data),
              "beam_size": beam_size, "ctc_loss": out.loss,
              "greedy": _timed(lambda: greedy_texts(tokenizer, out.log_probs), truth),
              "beam": _timed(lambda: beam_texts(tokenizer, out.log_probs, beam_size=beam_size), truth)}
    if fusion is not None:
        lm = _char_lm(fusion, tokenizer, resolve_device(device))
        result["beam_lm"] = _timed(lambda: beam_texts(tokenizer, out.log_probs, beam_size=beam_size, lm=lm,
                                                      lm_weight=fusion.lm_weight, char_bonus=fusion.char_bonus), truth)
        result["lm"], result["lm_weight"], result["char_bonus"] = fusion.lm, fusion.lm_weight, fusion.char_bonus
    return result


LM_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
CHAR_BONUSES = (0.0, 0.5, 1.0, 2.0)


def tune_lm(checkpoint: str | os.PathLike, lm: str, data: str | None = None, *, beam_size: int = 8,
            lm_weights: tuple[float, ...] = LM_WEIGHTS, char_bonuses: tuple[float, ...] = CHAR_BONUSES,
            max_lines: int = 300, lm_unknown: str = "error", skip_bad: bool = False, device: str = "auto",
            on_progress: Callable[[int, int], None] | None = None) -> dict:
    """CER of beam + LM for each (lm_weight, char_bonus) of a small grid on validation lines (the first
    `max_lines`), the best pair first. Tune on lines the reader did not train on, and report on others."""
    import tempfile

    from charrnn.core.device import resolve_device

    model, tokenizer, ckpt = load_reader(checkpoint, resolve_device(device))
    with tempfile.TemporaryDirectory() as tmp:
        images = eval_lines(ckpt, data, model, skip_bad, Path(tmp) / "lines")
        out = run_reader(model, tokenizer, images)
        truth = list(images.split.texts)
    log_probs, truth = out.log_probs[:max_lines], truth[:max_lines]
    scorer = _char_lm(Fusion(lm, lm_unknown=lm_unknown), tokenizer, resolve_device(device))
    grid, pairs = [], [(a, b) for a in lm_weights for b in char_bonuses]
    for k, (a, b) in enumerate(pairs):
        texts = beam_texts(tokenizer, log_probs, beam_size=beam_size, lm=scorer, lm_weight=a, char_bonus=b)
        grid.append({"lm_weight": a, "char_bonus": b, **error_rates(texts, truth)})
        if on_progress:
            on_progress(k + 1, len(pairs))
    grid.sort(key=lambda row: (row["cer"], row["wer"]))
    greedy = error_rates(greedy_texts(tokenizer, log_probs), truth)
    return {"lines": len(truth), "beam_size": beam_size, "greedy": greedy, "grid": grid, "best": grid[0]}
