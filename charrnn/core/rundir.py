"""The run directory: the one place that knows its file names and owns `run.json` and `metrics.jsonl`.

    run.json        the run's settings (asdict of its config), so `--resume RUN_DIR` needs nothing else
    best.pt         the checkpoint with the best validation metric so far
    last.pt         the latest checkpoint, with the training state to resume from
    metrics.jsonl   one JSON object per line: {"kind": "train", "step", "loss", ...} or {"kind": "eval", ...}
    loss.svg        the loss curve, redrawn after every evaluation

Every file is replaced atomically; a task may keep files of its own here (the language model's encoded
corpus, `corpus.bin` and `corpus.json`).

What survives what: one process trains a run directory at a time (an OS lock, released by the OS when the
process dies, however it dies); a crash, kill or full disk never destroys a checkpoint already written
(atomic renames); and `--overwrite` moves the old run aside and deletes it only once the new run has written
its first checkpoint, putting it back if the new run fails before that.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO

from charrnn.core.checkpoint import BEST, LAST, CheckpointError, load_checkpoint
from charrnn.core.config import LoopConfig, type_problems
from charrnn.core.distributed import world_from_env
from charrnn.core.errors import CharRNNError
from charrnn.core.files import write_text_atomic
from charrnn.tasks import TASKS, task_of_config

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per run directory is then up to the user
    fcntl = None

RUN_FILE, METRICS_FILE, CURVE_FILE = "run.json", "metrics.jsonl", "loss.svg"
LOCK_FILE, ASIDE_DIR = ".lock", ".previous-run"
# The files of a run: what --overwrite sets aside. A task's own files (the encoded corpus) are listed by it.
RUN_FILES = (BEST, LAST, RUN_FILE, METRICS_FILE, CURVE_FILE)


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

    def check_location(self) -> None:
        """Refuse a run directory that is a file, or lies under one, before anything is written."""
        for p in (self.path, *self.path.parents):
            if p.exists() and not p.is_dir():
                what = "is" if p == self.path else f"lies under {str(p)!r}, which is"
                raise CharRNNError(f"--out {str(self.path)!r} {what} a file, not a directory; choose another --out")

    def check_files(self, task_files: tuple[str, ...] = ()) -> None:
        """Refuse a directory (or anything but a file) where the run keeps one of its files."""
        for name in (*RUN_FILES, *task_files):
            p = self.path / name
            if p.exists() and not p.is_file():
                raise CharRNNError(f"{str(p)!r} is not a file, but charrnn keeps its {name} there; move it away")

    def check_new(self, overwrite: bool) -> None:
        """Refuse to start a new run over an old one unless `overwrite`."""
        if self.holds_run() and not overwrite:
            raise CharRNNError(f"{str(self.path)!r} already holds a run: continue it with --resume {self.path}, "
                               "or start afresh with another --out or with --overwrite")

    def writes(self, path: str | os.PathLike, task_files: tuple[str, ...] = ()) -> bool:
        """Whether `path` is a file this run directory's run would write (so it must not be an input)."""
        target = Path(path).resolve()
        return any((self.path / name).resolve() == target for name in (*RUN_FILES, *task_files))

    # ----- one writer, and --overwrite that loses nothing -------------------------------------------

    @contextlib.contextmanager
    def locked(self):
        """Hold an exclusive lock on the directory while the block runs; a second process is refused."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        with open(self.path / LOCK_FILE, "a+") as f:
            self._lock(f)
            f.truncate(0)
            f.write(f"process {os.getpid()} on {socket.gethostname()}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    def check_unlocked(self) -> None:
        """Refuse at once (before reading anything) a directory that another process is training."""
        if fcntl is not None and (self.path / LOCK_FILE).is_file():
            with open(self.path / LOCK_FILE, "a+") as f:
                self._lock(f)

    def _lock(self, f) -> None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise CharRNNError(f"{str(self.path)!r} is being trained by {holder}; wait for it to finish, "
                               "stop it, or use another --out") from None

    def remove_leftovers(self) -> None:
        """Temporary files of a killed run (only the lock holder calls this, so none is being written)."""
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        aside = self.path / ASIDE_DIR
        if aside.is_dir():
            # A run started with --overwrite was killed: keep the new run if it reached a checkpoint,
            # else bring the old one back.
            if self.last.exists():
                shutil.rmtree(aside)
            else:
                self._restore_aside(())

    def set_aside(self, task_files: tuple[str, ...]) -> None:
        """Move an earlier run's files into a subdirectory, to delete once the new run has a checkpoint."""
        aside = self.path / ASIDE_DIR
        aside.mkdir()
        for name in (*RUN_FILES, *task_files):
            if (self.path / name).exists():
                os.replace(self.path / name, aside / name)

    def start_new_run(self, task_files: tuple[str, ...], overwrite: bool) -> frozenset[str]:
        """Set an earlier run aside (with `overwrite`); returns the run files present now, which are not the
        new run's to remove if it fails."""
        if overwrite and self.holds_run():
            self.set_aside(task_files)
        return frozenset(name for name in (*RUN_FILES, *task_files) if (self.path / name).exists())

    def settle_new_run(self, task_files: tuple[str, ...], keep: frozenset[str]) -> None:
        """After a new run: if it wrote a checkpoint, drop what was set aside; if not, remove the files it
        wrote (not those in `keep`) and put the earlier run back."""
        if self.last.exists():
            shutil.rmtree(self.path / ASIDE_DIR, ignore_errors=True)
        else:
            self._restore_aside(tuple(name for name in task_files if name not in keep), keep)

    def _restore_aside(self, task_files: tuple[str, ...], keep: frozenset[str] = frozenset()) -> None:
        for name in (*RUN_FILES, *task_files):
            if name not in keep:
                (self.path / name).unlink(missing_ok=True)
        aside = self.path / ASIDE_DIR
        if aside.is_dir():
            for p in aside.iterdir():
                os.replace(p, self.path / p.name)
            aside.rmdir()

    def write_config(self, config: LoopConfig) -> None:
        write_text_atomic(self.path / RUN_FILE, json.dumps(asdict(config), indent=2))

    def resume_checkpoint(self) -> Path:
        """The checkpoint to resume from: last.pt, or best.pt when a run lost its last.pt."""
        if not self.path.is_dir():
            raise CharRNNError(f"--resume {str(self.path)!r}: no such run directory")
        for p in (self.last, self.best):
            if p.is_file():
                return p
        raise CharRNNError(f"--resume {str(self.path)!r}: not a run directory (it holds neither {LAST} nor {BEST})")

    def read_checkpoint(self, check: Callable[[dict], None] | None = None) -> tuple[Path, dict]:
        """The checkpoint to resume from (`resume_checkpoint`), read and checked (`check(ckpt)` is the caller's
        own test). A damaged one is one line that also says whether the run's best.pt is intact and how to
        resume from it: never silently, since that goes back to an earlier step."""
        path = self.resume_checkpoint()
        try:
            return path, load_checkpoint(path, check=check)
        except CheckpointError as damaged:
            raise self.cannot_resume(damaged, check) from None

    def cannot_resume(self, damaged: CheckpointError, check: Callable[[dict], None] | None = None) -> CharRNNError:
        """The error for a resume from a damaged checkpoint: what is wrong, and what the run has to resume from
        instead (its best.pt when that is intact, read with `check`), with the command."""
        return CharRNNError(f"{damaged}; {self._other_checkpoint(damaged.path, check)}")

    def _other_checkpoint(self, damaged: Path, check: Callable[[dict], None] | None) -> str:
        keep = f"put back a good copy of {damaged.name}, or start a new run with --out"
        if damaged.resolve() != self.last.resolve() or not self.best.is_file():
            return f"the run has no other checkpoint to resume from: {keep}"
        try:
            ckpt = load_checkpoint(self.best, check=check)
        except CheckpointError as e:
            return f"{BEST} {e.reason} too: {keep}"
        row = TASKS.get(ckpt["task"])
        step = (ckpt.get("train_state") or {}).get("step", "?")
        moved = shlex.quote(str(damaged) + ".damaged")
        return (f"{BEST} (step {step}) is intact: resume from it with `mv {shlex.quote(str(damaged))} {moved} && "
                f"{row.train_command if row else 'charrnn train'} --resume {shlex.quote(str(self.path))}`")

    def saved_config(self, checkpoint: dict, config_type: type[LoopConfig]) -> dict:
        """The run's settings as its checkpoint recorded them, refusing a run.json edited since then."""
        settings = (checkpoint.get("meta") or {}).get("train_config")
        if not isinstance(settings, dict):
            raise CharRNNError(f"the checkpoint in {str(self.path)!r} does not record its settings; "
                               "it cannot be resumed")
        edited = self._edited_settings(settings, config_type.RESUMABLE + config_type.MOVABLE)
        if edited:
            raise CharRNNError(f"{str(self.path / RUN_FILE)!r} was changed after the checkpoint was written "
                               f"({edited}); settings that shape the run cannot change on resume: put the file back "
                               f"(or delete it: the checkpoint holds the settings), or start a new run with --out")
        return settings

    def _edited_settings(self, settings: dict, may_differ: tuple[str, ...]) -> str:
        """What run.json says differently from the checkpoint (empty if it agrees, is missing or unreadable)."""
        try:
            saved = json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, a directory, not UTF-8, not JSON: the checkpoint decides
            return ""
        if not isinstance(saved, dict):
            return ""
        settings = json.loads(json.dumps(settings))  # as run.json holds them: tuples are lists there
        diffs = [f"{k}: {settings[k]!r} in the checkpoint, {saved[k]!r} in {RUN_FILE}"
                 for k in settings if k in saved and k not in may_differ and saved[k] != settings[k]]
        return "; ".join(diffs[:3])

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
    """The records of a `metrics.jsonl` file, skipping a torn last line and anything else that is not a record
    (a line edited by hand, a stray byte that is not UTF-8)."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def run_keeping(path: str | os.PathLike) -> Path | None:
    """The run directory that keeps `path` as one of its files (a checkpoint, run.json, metrics.jsonl, the loss
    curve, the lock, a task's cache), else None: an output written there would destroy part of the run."""
    p = Path(path).resolve()
    names = {*RUN_FILES, LOCK_FILE, *(name for row in TASKS.values() for name in row.cache_files)}
    run = RunDir(p.parent)
    if p.name in names and (run.holds_run() or (run.path / RUN_FILE).is_file()):
        return p.parent
    return None


def check_task(checkpoint: dict, config_type: type[LoopConfig], run_dir: Path) -> None:
    """Refuse to resume a run of another task (before anything is read or written for it)."""
    wanted, found = task_of_config(config_type), TASKS.get(checkpoint.get("task"))
    if found is not None and found is not wanted:
        raise CharRNNError(f"{str(run_dir)!r} holds {found.what}, not {wanted.what}; continue it with "
                           f"`{found.train_command} --resume {run_dir}`")


def resume_config(run_dir: str | os.PathLike, config_type: type[LoopConfig], overrides: dict) -> LoopConfig:
    """The config of an existing run directory, with the options that may change on resume replaced.

    The settings come from the run's checkpoint (run.json is their readable copy). `overrides` holds only
    options the user gave; any outside `RESUMABLE` is an error, since the run directory already fixes the
    data, the model and the optimisation.
    """
    run = RunDir(run_dir)
    if world_from_env().is_main:  # under torchrun, rank 0 may hold the lock already: it is this run's own
        run.check_unlocked()
    path, checkpoint = run.read_checkpoint()
    check_task(checkpoint, config_type, run.path)
    saved = run.saved_config(checkpoint, config_type)
    names = {f.name for f in fields(config_type)}
    saved = {k: v for k, v in saved.items() if k in names}
    problems = type_problems(config_type, saved)
    try:
        if not problems:
            config_type(**saved)
    except CharRNNError as e:
        problems = [str(e)]
    if problems:
        raise run.cannot_resume(CheckpointError(path, f"is damaged: the run settings it holds are wrong "
                                                      f"({'; '.join(problems[:2])})"))
    fixed = sorted(k for k in overrides if k not in config_type.RESUMABLE)
    if fixed:
        raise CharRNNError(f"{_flags(fixed)} cannot change when resuming (the run directory fixes them); "
                           f"only {_flags(config_type.RESUMABLE)} can; start a new run with --out to change them")
    if any(overrides.get(k) is not None for k in ("max_steps", "epochs", "time_budget")):
        # A stopping rule given on resume replaces the saved ones, so it can extend a finished run.
        overrides = {"max_steps": None, "epochs": None, "time_budget": None, **overrides}
    if overrides.get("time_budget") is not None:
        # A budget given on resume is more time on top of what the run has already spent.
        spent = (checkpoint.get("meta") or {}).get("elapsed_s", 0.0)
        spent = spent if isinstance(spent, (int, float)) and math.isfinite(spent) and spent > 0 else 0.0
        overrides["time_budget"] = spent / 60 + overrides["time_budget"]
    return config_type(**{**saved, **overrides, "out": str(run.path)})
