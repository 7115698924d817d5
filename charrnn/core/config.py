"""The settings of charrnn, as frozen dataclasses: the model, the training loop every task shares, and the
language-model run. Free of torch, so the command line can show every default without loading it.

Field names mirror `torch.nn` arguments; a field `hidden_size` is the flag `--hidden-size` and the key
`hidden_size` in `run.json` and in checkpoints, so one grep finds all three.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args

from charrnn.core.errors import CharRNNError

Cell = Literal["rnn", "lstm", "gru"]
Optimizer = Literal["adamw", "adam", "rmsprop", "sgd", "adagrad"]
Schedule = Literal["constant", "cosine", "exponential"]
Precision = Literal["auto", "fp32", "bf16"]
Newline = Literal["keep", "lf"]
CELLS: tuple[str, ...] = get_args(Cell)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
PRECISIONS: tuple[str, ...] = get_args(Precision)
NEWLINES: tuple[str, ...] = get_args(Newline)

DEFAULT_CORPUS = "corpora/tinyshakespeare.txt"
DEFAULT_TIME_BUDGET = 5.0  # minutes, when no other stopping rule is given


def _choice(value: str, options: tuple[str, ...], flag: str) -> None:
    if value not in options:
        raise CharRNNError(f"unknown {flag} {value!r}: choose one of {', '.join(options)}")


@dataclass(frozen=True)
class CharRNNConfig:
    """Everything needed to rebuild a CharRNN; saved with `asdict` in every checkpoint."""

    vocab_size: int
    cell: Cell = "gru"
    num_layers: int = 2
    hidden_size: int = 512
    embedding_dim: int = 64  # 0 = one-hot input, as in the original char-rnn
    dropout: float = 0.0  # between recurrent layers and before the head

    def __post_init__(self):
        _choice(self.cell, CELLS, "--cell")
        if self.num_layers < 1:
            raise CharRNNError(f"--num-layers must be at least 1, got {self.num_layers}")
        if self.hidden_size < 1:
            raise CharRNNError(f"--hidden-size must be at least 1, got {self.hidden_size}")
        if self.embedding_dim < 0:
            raise CharRNNError(f"--embedding-dim must be 0 (one-hot) or more, got {self.embedding_dim}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharRNNError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")

    @classmethod
    def from_dict(cls, d: dict) -> CharRNNConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LoopConfig:
    """The settings of the training loop that every task shares: optimisation, stopping, the machine.

    A task's run config extends this with its data and model fields; the whole is saved as `run.json`.
    """

    out: str = ""  # run directory; "" = the task's default
    batch_size: int = 32
    optimizer: Optimizer = "adamw"
    lr: float = 5e-3
    weight_decay: float = 0.01  # on weight matrices only, never on biases or embeddings
    momentum: float = 0.9  # sgd and rmsprop
    nesterov: bool = False
    schedule: Schedule = "cosine"
    warmup_steps: int = 20
    min_lr_frac: float = 0.05  # cosine ends at lr * min_lr_frac
    lr_decay: float = 0.97  # exponential: multiply by this each epoch ...
    lr_decay_after: int = 1  # ... once this many epochs are done
    grad_clip: float = 1.0  # global L2 norm; 0 = off
    max_steps: int | None = None
    epochs: float | None = None
    time_budget: float | None = None  # minutes
    eval_every: int = 500
    patience: int | None = None  # evaluations without improvement before stopping
    explode_factor: float = 3.0  # stop when the loss exceeds this times the loss of guessing; 0 = never
    seed: int = 1337
    device: str = "auto"
    precision: Precision = "auto"
    compile: bool = False

    # Options that may change when a run is resumed; everything else is fixed by the run directory.
    RESUMABLE = ("max_steps", "epochs", "time_budget", "eval_every", "patience", "device", "precision",
                 "compile", "explode_factor")

    def __post_init__(self):
        _choice(self.optimizer, OPTIMIZERS, "--optimizer")
        _choice(self.schedule, SCHEDULES, "--schedule")
        _choice(self.precision, PRECISIONS, "--precision")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CharRNNError(f"--lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise CharRNNError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise CharRNNError(f"--max-steps must be at least 1, got {self.max_steps}")
        if self.epochs is not None and not self.epochs > 0:
            raise CharRNNError(f"--epochs must be positive, got {self.epochs}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise CharRNNError(f"--time-budget must be a positive number of minutes, got {self.time_budget}")
        if self.eval_every < 1:
            raise CharRNNError(f"--eval-every must be at least 1, got {self.eval_every}")
        if self.patience is not None and self.patience < 1:
            raise CharRNNError(f"--patience must be at least 1, got {self.patience}")
        if self.grad_clip < 0 or self.weight_decay < 0 or self.warmup_steps < 0 or self.explode_factor < 0:
            raise CharRNNError("--grad-clip, --weight-decay, --warmup-steps and --explode-factor cannot be negative")
        if not 0 <= self.min_lr_frac <= 1 or not 0 < self.lr_decay <= 1:
            raise CharRNNError("--min-lr-frac must be in [0, 1] and --lr-decay in (0, 1]")
        if not 0 <= self.seed < 2**64:  # what torch.manual_seed accepts
            raise CharRNNError(f"--seed must be between 0 and 2**64 - 1, got {self.seed}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    def with_default_stop(self):
        """This config, with a time budget when no stopping rule was given."""
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            return replace(self, time_budget=DEFAULT_TIME_BUDGET)
        return self


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """A character language-model run: the corpus, the model and the loop; saved as `run.json`."""

    corpus: str = DEFAULT_CORPUS
    encoding: str = "utf-8"
    byte_level: bool = False
    document_separator: str | None = None
    # "lf" reads CRLF and lone CR line ends as LF; "keep" reads the file as it is. "lf" by default, measured on
    # War and Peace (CRLF; GRU 2x256, 300 steps, two seeds): with "keep" samples held a "\r" every 50-70
    # characters, and the "\n" after each "\r" (1 character in 53) costs 0.003 nats, so the validation loss read
    # 1.9% lower than the same model's loss per character of the text; that loss itself differed between the
    # two settings by less than between the two seeds (README, Training).
    newline: Newline = "lf"
    val_frac: float = 0.1
    test_frac: float = 0.0
    cell: Cell = CharRNNConfig.cell
    num_layers: int = CharRNNConfig.num_layers
    hidden_size: int = CharRNNConfig.hidden_size
    embedding_dim: int = CharRNNConfig.embedding_dim
    dropout: float = CharRNNConfig.dropout
    seq_len: int = 128
    eval_streams: int = 16
    use_cached_corpus: bool = False  # on resume: train on the run's encoded copy even if the file has changed

    RESUMABLE = LoopConfig.RESUMABLE + ("use_cached_corpus",)

    def __post_init__(self):
        super().__post_init__()
        if self.seq_len < 1:
            raise CharRNNError(f"--seq-len must be at least 1, got {self.seq_len}")
        if self.eval_streams < 1:
            raise CharRNNError(f"--eval-streams must be at least 1, got {self.eval_streams}")
        if not (0.0 <= self.val_frac < 1.0 and 0.0 <= self.test_frac < 1.0 and self.val_frac + self.test_frac < 1.0):
            raise CharRNNError(f"--val-frac {self.val_frac} and --test-frac {self.test_frac} must each be in [0, 1) "
                               "and leave some text to train on (their sum below 1)")
        if self.patience is not None and self.val_frac == 0:
            raise CharRNNError("--patience needs a validation split to watch; give --val-frac above 0 "
                               "or drop --patience")
        if self.document_separator == "":
            raise CharRNNError("--document-separator cannot be empty; give the string that separates documents, "
                               "e.g. $'\\n\\n'")
        _choice(self.newline, NEWLINES, "--newline")
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> CharRNNConfig:
        return CharRNNConfig(vocab_size=vocab_size, cell=self.cell, num_layers=self.num_layers,
                             hidden_size=self.hidden_size, embedding_dim=self.embedding_dim, dropout=self.dropout)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("checkpoints") / Path(self.corpus).stem


# ----- caption ----------------------------------------------------------------------------------------

Tokens = Literal["char", "word"]
TOKENS: tuple[str, ...] = get_args(Tokens)
Encoder = Literal["cnn", "resnet18", "resnet34", "resnet50"]
ENCODERS: tuple[str, ...] = get_args(Encoder)
DEFAULT_CAPTION_DATA = "corpora/emoji.zip"


def _int_tuple(value, flag: str) -> tuple[int, ...]:
    """A tuple of positive ints from a tuple, a list (run.json) or "32,64,128" (the command line)."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        out = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise CharRNNError(f"{flag} must be comma-separated positive integers, e.g. 32,64,128; got {value!r}") from None
    if not out or min(out) < 1:
        raise CharRNNError(f"{flag} must be comma-separated positive integers, e.g. 32,64,128; got {value!r}")
    return out


@dataclass(frozen=True)
class CaptionConfig:
    """Everything needed to rebuild a Captioner (CNN encoder + recurrent decoder); saved in every checkpoint."""

    vocab_size: int
    image_size: int = 48
    encoder: Encoder = "cnn"  # the project's CNN, or a torchvision ResNet (when torchvision is installed)
    channels: tuple[int, ...] = (32, 64, 128, 256)  # the CNN's blocks, each halving the grid
    cell: Cell = "lstm"
    num_layers: int = 1
    hidden_size: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    attention: bool = True  # soft attention over the grid (Show, Attend and Tell); else the image only starts it
    attention_dim: int = 128

    def __post_init__(self):
        object.__setattr__(self, "channels", _int_tuple(self.channels, "--channels"))
        _choice(self.cell, CELLS, "--cell")
        _choice(self.encoder, ENCODERS, "--encoder")
        smallest = 2 ** len(self.channels) if self.encoder == "cnn" else 32
        if self.image_size < smallest:
            raise CharRNNError(f"--image-size {self.image_size} is too small for the {self.encoder} encoder, which "
                               f"shrinks it {smallest}-fold; use at least {smallest}"
                               + (" or fewer --channels" if self.encoder == "cnn" else ""))
        for name in ("num_layers", "hidden_size", "embedding_dim", "attention_dim"):
            if getattr(self, name) < 1:
                raise CharRNNError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharRNNError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least 2 symbols")

    @classmethod
    def from_dict(cls, d: dict) -> CaptionConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


@dataclass(frozen=True)
class CaptionTrainConfig(LoopConfig):
    """A captioning run: the data, the model and the loop; saved as `run.json`."""

    data: str = DEFAULT_CAPTION_DATA
    split: str | None = None  # a split named by the dataset (the emoji set has "random" and "grouped")
    val_dir: str | None = None
    val_frac: float = 0.1
    skip_bad: bool = False
    tokens: Tokens = "char"
    image_size: int = CaptionConfig.image_size
    encoder: Encoder = CaptionConfig.encoder
    encoder_weights: str | None = None  # a local torchvision state dict for a ResNet encoder
    freeze_encoder: bool = False  # train the decoder only (with --encoder-weights)
    channels: tuple[int, ...] = CaptionConfig.channels
    cell: Cell = CaptionConfig.cell
    num_layers: int = CaptionConfig.num_layers
    hidden_size: int = CaptionConfig.hidden_size
    embedding_dim: int = CaptionConfig.embedding_dim
    dropout: float = CaptionConfig.dropout
    attention: bool = CaptionConfig.attention
    attention_dim: int = CaptionConfig.attention_dim
    doubly_stochastic: float = 1.0  # weight of Show-Attend-Tell's penalty for image regions never attended to
    scheduled_sampling: float = 0.0  # probability of feeding the model's own previous token instead of the truth
    max_caption_len: int = 80  # tokens, when decoding
    batch_size: int = 64
    lr: float = 3e-3
    eval_every: int = 200

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "channels", _int_tuple(self.channels, "--channels"))
        _choice(self.tokens, TOKENS, "--tokens")
        if not 0.0 <= self.val_frac < 1.0:
            raise CharRNNError(f"--val-frac must be in [0, 1), got {self.val_frac}")
        if not 0.0 <= self.scheduled_sampling <= 1.0 or self.doubly_stochastic < 0:
            raise CharRNNError("--scheduled-sampling must be in [0, 1] and --doubly-stochastic at least 0")
        if self.max_caption_len < 1:
            raise CharRNNError(f"--max-caption-len must be at least 1, got {self.max_caption_len}")
        if self.encoder_weights is not None and self.encoder == "cnn":
            raise CharRNNError("--encoder-weights is for a ResNet encoder: add --encoder resnet18 (or 34, 50)")
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> CaptionConfig:
        return CaptionConfig(vocab_size=vocab_size, image_size=self.image_size, encoder=self.encoder,
                             channels=self.channels,
                             cell=self.cell, num_layers=self.num_layers, hidden_size=self.hidden_size,
                             embedding_dim=self.embedding_dim, dropout=self.dropout, attention=self.attention,
                             attention_dim=self.attention_dim)

    @property
    def run_dir(self) -> Path:
        return Path(self.out) if self.out else Path("checkpoints") / f"{Path(self.data).stem}-caption"


# ----- ctc ------------------------------------------------------------------------------------------

DEFAULT_LINES = "checkpoints/tinyshakespeare-lines"  # where `ctc train` renders lines when given no data
# Shallow fusion's defaults: what `ctc tune-lm` chose for the shipped reader and LM (README, ctc results).
DEFAULT_LM_WEIGHT, DEFAULT_CHAR_BONUS = 0.25, 2.0
WIDTH_POOLS = 2  # the reader's first two blocks halve the width, the rest keep it: a frame per 4 pixel columns


@dataclass(frozen=True)
class CTCConfig:
    """Everything needed to rebuild a LineReader (CRNN: CNN + bidirectional RNN + CTC); saved in checkpoints."""

    vocab_size: int  # the characters + the CTC blank (id 0)
    height: int = 32  # every line is resized to this height, keeping its aspect ratio
    channels: tuple[int, ...] = (16, 32, 64, 96)  # the CNN's blocks, each halving the height
    cell: Cell = "lstm"
    num_layers: int = 2
    hidden_size: int = 128  # per direction
    dropout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "channels", _int_tuple(self.channels, "--channels"))
        _choice(self.cell, CELLS, "--cell")
        if len(self.channels) < WIDTH_POOLS:
            raise CharRNNError(f"--channels needs at least {WIDTH_POOLS} blocks, got {len(self.channels)}")
        if self.height < 2 ** len(self.channels):
            raise CharRNNError(f"--height {self.height} is too small for {len(self.channels)} --channels blocks, "
                               f"which halve it each; use at least {2 ** len(self.channels)} or fewer blocks")
        for name in ("num_layers", "hidden_size"):
            if getattr(self, name) < 1:
                raise CharRNNError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise CharRNNError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.vocab_size < 2:
            raise CharRNNError("the vocabulary needs at least one character besides the blank")

    @classmethod
    def from_dict(cls, d: dict) -> CTCConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


@dataclass(frozen=True)
class CTCTrainConfig(LoopConfig):
    """A line-reader run: the data, the model and the loop; saved as `run.json`."""

    data: str | None = None  # None: lines rendered from the bundled corpus into DEFAULT_LINES
    val_dir: str | None = None
    val_frac: float = 0.1
    skip_bad: bool = False
    iam_ok_only: bool = False  # IAM: drop the lines whose word segmentation IAM marked "err"
    height: int = CTCConfig.height
    max_width: int = 1600  # pixels at --height; a wider line is squeezed to this width
    channels: tuple[int, ...] = CTCConfig.channels
    cell: Cell = CTCConfig.cell
    num_layers: int = CTCConfig.num_layers
    hidden_size: int = CTCConfig.hidden_size
    dropout: float = CTCConfig.dropout
    batch_size: int = 32
    # 6e-3 leaves CTC's all-blank plateau sooner: in 2.5 minutes (with a slower reader then) it reached
    # CER 16.5% where 3e-3 reached 25.5%.
    lr: float = 6e-3
    eval_every: int = 200

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "channels", _int_tuple(self.channels, "--channels"))
        if not 0.0 <= self.val_frac < 1.0:
            raise CharRNNError(f"--val-frac must be in [0, 1), got {self.val_frac}")
        if self.max_width < 2 ** WIDTH_POOLS:
            raise CharRNNError(f"--max-width must be at least {2 ** WIDTH_POOLS} pixels, got {self.max_width}")
        self.model_config(2)  # validates the model fields

    def model_config(self, vocab_size: int) -> CTCConfig:
        return CTCConfig(vocab_size=vocab_size, height=self.height, channels=self.channels, cell=self.cell,
                         num_layers=self.num_layers, hidden_size=self.hidden_size, dropout=self.dropout)

    @property
    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        data = Path(self.data or DEFAULT_LINES)
        return Path("checkpoints") / f"{data.stem if data.name not in ('', 'train') else data.parent.name}-ctc"
