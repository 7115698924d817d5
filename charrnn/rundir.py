"""The run directory: the one place that knows its file names and owns `run.json` and `metrics.jsonl`.

    run.json        the run's settings (asdict of its config), so `--resume RUN_DIR` needs nothing else
    best.pt         the checkpoint with the best validation metric so far
    last.pt         the latest checkpoint, with the training state to resume from
    metrics.jsonl   one JSON object per line: {"kind": "train", "step", "loss", ...} or {"kind": "eval", ...}
    loss.svg        the loss curve, redrawn after every evaluation

Every file is replaced atomically; a task may keep files of its own here (the language model's encoded
corpus, `corpus.bin` and `corpus.json`).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO

from charrnn.checkpoint import BEST, LAST, load_checkpoint
from charrnn.common import CharRNNError, write_text_atomic
from charrnn.config import LoopConfig

RUN_FILE, METRICS_FILE, CURVE_FILE = "run.json", "metrics.jsonl", "loss.svg"


def _flags(names) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in names)


class RunDir:
    """A run directory and the files the training loop writes into it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def last(self) -> Path:
        return self.path / LAST

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def curve(self) -> Path:
        return self.path / CURVE_FILE

    def holds_run(self) -> bool:
        return self.last.exists() or self.best.exists()

    def check_new(self, overwrite: bool) -> None:
        """Refuse to start a new run over an old one unless `overwrite`."""
        if self.holds_run() and not overwrite:
            raise CharRNNError(f"{str(self.path)!r} already holds a run: continue it with --resume {self.path}, "
                               "or start afresh with another --out or with --overwrite")

    def clear_run(self) -> None:
        """Remove an earlier run's checkpoints, metrics and curve (for --overwrite)."""
        for path in (self.last, self.best, self.metrics, self.curve):
            path.unlink(missing_ok=True)

    def write_config(self, config: LoopConfig) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path / RUN_FILE, json.dumps(asdict(config), indent=2))

    def read_config(self) -> dict:
        if not self.path.is_dir():
            raise CharRNNError(f"--resume {str(self.path)!r}: no such run directory")
        if not (self.path / RUN_FILE).exists() or not self.last.exists():
            raise CharRNNError(f"--resume {str(self.path)!r}: not a run directory ({RUN_FILE} and {LAST} are missing)")
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except json.JSONDecodeError as e:
            raise CharRNNError(f"{str(self.path / RUN_FILE)!r} is damaged ({e.msg}); it cannot be resumed") from None

    # ----- metrics.jsonl --------------------------------------------------------------------------

    def read_metrics(self) -> list[dict]:
        """The records of `metrics.jsonl`, skipping a torn last line."""
        return read_metrics(self.metrics)

    def truncate_metrics(self, step: int) -> None:
        """Drop records past `step`: a run killed after its last checkpoint logged steps it will redo."""
        if self.metrics.exists():
            kept = [r for r in self.read_metrics() if isinstance(r.get("step"), int) and r["step"] <= step]
            write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    @contextlib.contextmanager
    def metrics_log(self, enabled: bool = True):
        """A writer of one JSON record per line, line-buffered so a killed run loses at most one line."""
        with (open(self.metrics, "a", buffering=1) if enabled else open(os.devnull, "w")) as f:
            yield MetricsLog(f)


class MetricsLog:
    def __init__(self, file: IO[str]):
        self.file = file

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a `metrics.jsonl` file, skipping a torn last line."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def resume_config(run_dir: str | os.PathLike, config_type: type[LoopConfig], overrides: dict) -> LoopConfig:
    """The config of an existing run directory, with the options that may change on resume replaced.

    `overrides` holds only options the user gave; any outside `RESUMABLE` is an error, since the run
    directory already fixes the data, the model and the optimisation.
    """
    run = RunDir(run_dir)
    saved = run.read_config()
    fixed = sorted(k for k in overrides if k not in config_type.RESUMABLE)
    if fixed:
        raise CharRNNError(f"{_flags(fixed)} cannot change when resuming (the run directory fixes them); "
                           f"only {_flags(config_type.RESUMABLE)} can; start a new run with --out to change them")
    if any(overrides.get(k) is not None for k in ("max_steps", "epochs", "time_budget")):
        # A stopping rule given on resume replaces the saved ones, so it can extend a finished run.
        overrides = {"max_steps": None, "epochs": None, "time_budget": None, **overrides}
    if overrides.get("time_budget") is not None:
        # A budget given on resume is more time on top of what the run has already spent.
        spent = load_checkpoint(run.last)["meta"].get("elapsed_s", 0.0)
        overrides["time_budget"] = spent / 60 + overrides["time_budget"]
    names = {f.name for f in fields(config_type)}
    return config_type(**{**{k: v for k, v in saved.items() if k in names}, **overrides, "out": str(run.path)})
