"""The settings every task shares, as frozen dataclasses: the training loop (`LoopConfig`), the base of every
model config (`ModelConfig`) and the validators the tasks' configs use. Free of torch, so the command line
can show every default without loading it; each task's own settings sit in its package (`lm/config.py`, ...).

Field names mirror `torch.nn` arguments; a field `hidden_size` is the flag `--hidden-size` and the key
`hidden_size` in `run.json` and in checkpoints, so one grep finds all three.
"""

from __future__ import annotations

import math
import os
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, get_args, get_origin

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

DEFAULT_TIME_BUDGET = 5.0  # minutes, when no other stopping rule is given
SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
MAX_LENGTH_ALPHA = 10.0  # 0 ranks by raw log-probability, 1 per character; far above, every score rounds to 0

# Upper bounds of the size settings every task shares (each task's own sit in its config.py): generous, what
# the largest GPU could still hold, but finite, so that a typo such as --hidden-size 1000000 is one line at
# once instead of minutes of allocating and then a MemoryError. The command line shows them as ranges.
MAX_HIDDEN_SIZE = 65536  # an LSTM layer this wide holds 34 billion weights (137 GB in fp32): past any one GPU
MAX_NUM_LAYERS = 256  # ten times the deepest recurrent stacks in use (GNMT: 8 + 8 layers)
MAX_EMBEDDING_DIM = 65536  # as wide as a recurrent layer may be; the embedding feeds one
MAX_ATTENTION_DIM = 65536  # an attention layer as wide as a recurrent layer may be (caption, translate)
MAX_CHANNELS = 16384  # per CNN block: a 3x3 convolution between two such blocks holds 2.4 billion weights
MAX_BATCH_SIZE = 65536  # 8M characters a step at --seq-len 128, or 65536 images: a GPU's memory at the defaults


def check_choice(value: str, options: tuple[str, ...], flag: str) -> None:
    if value not in options:
        raise CharRNNError(f"unknown {flag} {value!r}: choose one of {', '.join(options)}")


def check_at_least(config, names: tuple[str, ...], low: int = 1) -> None:
    """Each of `names` (fields of `config`) at least `low`, else the error that names its flag."""
    for name in names:
        if getattr(config, name) < low:
            raise CharRNNError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(config, name)}")


def check_at_most(config, names: tuple[str, ...], high: int) -> None:
    """Each of `names` (fields of `config`) at most `high` (a MAX_ bound), else the error that names its flag."""
    for name in names:
        if getattr(config, name) > high:
            raise CharRNNError(f"--{name.replace('_', '-')} must be at most {high}, got {getattr(config, name)}")


def check_fraction(value: float, flag: str) -> None:
    if not 0.0 <= value < 1.0:
        raise CharRNNError(f"{flag} must be in [0, 1), got {value}")


def check_seed(seed: int | None) -> None:
    """Refuse a seed torch.Generator cannot take (it would raise, or wrap a negative one silently)."""
    if seed is not None and not 0 <= seed < SEED_LIMIT:
        raise CharRNNError(f"--seed must be between 0 and 2**64 - 1, got {seed}")


def check_length_alpha(length_alpha: float) -> None:
    """The length normalisation of beam search: score / length**alpha (0 = none)."""
    if not 0 <= length_alpha <= MAX_LENGTH_ALPHA:  # `not` also refuses NaN
        raise CharRNNError(f"--length-alpha must be between 0 and {MAX_LENGTH_ALPHA:g}, got {length_alpha}")


def check_split(val_frac: float, test_frac: float) -> None:
    """Validation and test shares of a data set, each in [0, 1), leaving some of it to train on."""
    check_fraction(val_frac, "--val-frac")
    check_fraction(test_frac, "--test-frac")
    if val_frac + test_frac >= 1:
        raise CharRNNError(f"--val-frac {val_frac} and --test-frac {test_frac} leave nothing to train on; make "
                           "their sum less than 1")


def int_tuple(value, flag: str, high: int | None = None) -> tuple[int, ...]:
    """A tuple of positive ints (each at most `high`, when given) from a tuple, a list (run.json) or "32,64,128"
    (the command line)."""
    try:
        items = value.split(",") if isinstance(value, str) else list(value)
        out = tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise CharRNNError(f"{flag} must be comma-separated positive integers, e.g. 32,64,128; got {value!r}") from None
    if not out or min(out) < 1:
        raise CharRNNError(f"{flag} must be comma-separated positive integers, e.g. 32,64,128; got {value!r}")
    if high is not None and max(out) > high:
        raise CharRNNError(f"{flag} must each be at most {high}, got {max(out)}")
    return out


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}


def _expected(value, hint) -> str | None:
    """What `value` should be to fit the type annotation `hint`, or None when it fits (or the hint is one this
    does not know: then the config's own checks decide)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return None if value in args else "one of " + ", ".join(map(repr, args))
    if origin in (typing.Union, types.UnionType):
        wanted = [_expected(value, a) for a in args]
        return None if None in wanted else " or ".join(w for w in wanted if w)
    if origin is tuple:
        if isinstance(value, (list, tuple)) and all(_expected(v, args[0]) is None for v in value):
            return None
        return f"a list of {_KINDS.get(args[0], 'values').split(' ', 1)[-1]}s"
    if hint in _KINDS:
        if hint is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
        return None if ok else _KINDS[hint]
    return None


def type_problems(cls, values: dict) -> list[str]:
    """The fields of `values` whose types do not fit dataclass `cls`'s annotations: "hidden_size is 'x', not an
    integer". For settings read from a file (a checkpoint, run.json), where any value may be anything."""
    try:
        hints = typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation this cannot resolve: the config's own checks decide
        return []
    problems = []
    for name, value in values.items():
        wanted = _expected(value, hints[name]) if name in hints else None
        if wanted:
            problems.append(f"{name} is {value!r}"[:80] + f", not {wanted}")
    return problems


class ModelConfig:
    """What every task's model config (a frozen dataclass with a `vocab_size` field) shares: the dict it is
    saved as in a checkpoint, and how a run config's fields of the same names make one."""

    @classmethod
    def from_dict(cls, d: dict, source: str | os.PathLike | None = None):
        """The config a checkpoint's `model_config` dict describes (keys the class does not know are ignored).
        Whatever is wrong with it (a missing field, a value of the wrong type or out of range) is one
        `CharRNNError` line, naming `source` (the checkpoint file) when given."""
        where = f"{str(source)!r} is damaged: its model config" if source is not None else "the model config"
        if not isinstance(d, dict):
            raise CharRNNError(f"{where} is a {type(d).__name__}, not a dict")
        values = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        missing = [f.name for f in fields(cls)
                   if f.name not in values and f.default is MISSING and f.default_factory is MISSING]
        problems = [f"{name} is missing" for name in missing] + type_problems(cls, values)
        if problems:
            raise CharRNNError(f"{where}: {'; '.join(problems[:2])}")
        try:
            return cls(**values)
        except (CharRNNError, TypeError, ValueError, OverflowError) as e:
            raise CharRNNError(f"{where} is out of range ({e})") from None

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_run(cls, run, vocab_size: int, **learned):
        """The model config of run config `run`, whose model fields have the same names; `learned` are the
        fields the data decides (the vocabulary size, and e.g. a classifier's label names)."""
        learned["vocab_size"] = vocab_size
        model_fields = (f.name for f in fields(cls) if f.name not in learned)
        return cls(**learned, **{name: getattr(run, name) for name in model_fields})

    def check_recurrent(self) -> None:
        """The fields every recurrent core has: cell, num_layers, hidden_size, dropout."""
        check_choice(self.cell, CELLS, "--cell")
        check_at_least(self, ("num_layers", "hidden_size"))
        check_at_most(self, ("num_layers",), MAX_NUM_LAYERS)
        check_at_most(self, ("hidden_size",), MAX_HIDDEN_SIZE)
        check_fraction(self.dropout, "--dropout")


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
    # Paths that may differ between run.json and the checkpoint (a run directory or data set that was moved).
    MOVABLE = ("out",)

    def __post_init__(self):
        check_choice(self.optimizer, OPTIMIZERS, "--optimizer")
        check_choice(self.schedule, SCHEDULES, "--schedule")
        check_choice(self.precision, PRECISIONS, "--precision")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise CharRNNError(f"--lr must be a positive number, got {self.lr}")
        check_at_least(self, ("batch_size",))
        check_at_most(self, ("batch_size",), MAX_BATCH_SIZE)
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
        check_seed(self.seed)

    @property
    def run_dir(self) -> Path:
        return Path(self.out)

    def with_default_stop(self):
        """This config, with a time budget when no stopping rule was given."""
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            return replace(self, time_budget=DEFAULT_TIME_BUDGET)
        return self
