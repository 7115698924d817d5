"""The small models shipped inside the package, so a new user sees results before training anything.

`charrnn sample`, `charrnn caption sample IMAGE`, `charrnn ctc decode IMAGE` and `charrnn dump/cells TEXT`
use them when no run directory is given, and every command that reads a model takes one by name where a run
directory would go: `shipped` (the command's task's: `--lm shipped` is the language model) or `shipped:TASK`
(`charrnn info shipped:ctc`); `charrnn info --shipped` lists them (`shipped_models`). They live in the
installed package (`charrnn/pretrained/`), not under `checkpoints/`, so no training run can ever overwrite them.
Each is a best.pt of a run whose command is in the README, exported by `export`: the optimizer and resume state
dropped, the weights stored in float16 (a quarter of the size; loading casts them back to float32), everything
else kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from charrnn.core.checkpoint import atomic_save, load_checkpoint, with_checksums
from charrnn.core.errors import CharRNNError
from charrnn.tasks import TASKS

HERE = Path(__file__).resolve().parents[1] / "pretrained"
SHIPPED = "shipped"  # the name of a shipped model where a run directory would go


def pretrained(task: str) -> Path:
    """The shipped model of `task` (a name in the task table, `charrnn/tasks.py`)."""
    shipped = TASKS[task].shipped if task in TASKS else None
    if shipped is None:
        raise CharRNNError(f"charrnn ships no {task} model; give a run directory")
    path = HERE / shipped
    if not path.exists():
        raise CharRNNError(f"the shipped {task} model {str(path)!r} is missing from this installation; "
                           "reinstall charrnn, or give a run directory")
    return path


def export(source: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write `source` (a run directory or checkpoint) as a small shipped model: no train state, float16
    weights (integer buffers such as BatchNorm's counters stay as they are)."""
    ckpt = load_checkpoint(source)
    small = {k: v for k, v in ckpt.items() if k not in ("file_version", "source")}
    small["train_state"] = None
    small["model_state"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model_state"].items()}
    out = Path(out)
    atomic_save(with_checksums(small), out)
    return out


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether a command's first argument names a model (a run directory, a .pt file or a shipped model's
    name) rather than an input (an image or a text): the rule that lets the model be left out."""
    p = Path(path)
    return p.is_dir() or p.suffix == ".pt" or _shipped_name(path) is not None


def _shipped_name(path: str | os.PathLike) -> str | None:
    """The task part of `shipped` ("") or `shipped:TASK` when `path` is such a name and no such file exists."""
    name, _, task = str(path).partition(":")
    if name != SHIPPED or Path(path).exists():
        return None
    return task


def resolve_model(path: str | os.PathLike, task: str | None = None) -> Path:
    """`path`, or the shipped model it names: `shipped` (the shipped model of `task`, the task of the command
    that reads it) or `shipped:TASK`. A file or directory of that name wins: `./shipped` is always the path."""
    which = _shipped_name(path)
    if which is None:
        return Path(path)
    names = ", ".join(f"{SHIPPED}:{name}" for name, row in TASKS.items() if row.shipped)
    which = which or task
    if which is None:
        raise CharRNNError(f"say which shipped model: {names} (charrnn info --shipped lists them)")
    if which not in TASKS or TASKS[which].shipped is None:
        raise CharRNNError(f"no shipped model is called {str(path)!r}; the shipped models are {names} "
                           "(charrnn info --shipped lists them)")
    return pretrained(which)


def shipped_models() -> list[dict]:
    """The models shipped with charrnn, one dict each: its name (as commands take it), task, file, size in
    bytes and what it is (model, size, training); a file missing from the installation says so."""
    from charrnn.core.checkpoint import checkpoint_info

    models = []
    for task, row in TASKS.items():
        if row.shipped is None:
            continue
        path = HERE / row.shipped
        if not path.exists():
            models.append({"name": f"{SHIPPED}:{task}", "task": task, "file": str(path), "bytes": None,
                           "what": f"{row.what}: missing from this installation (reinstall charrnn)"})
            continue
        info = checkpoint_info(path)
        best = next((k for k in info if k.startswith("best_") and k != "best_step"), None)
        trained_on = Path(str(info.get("corpus") or info.get("data") or "?")).name
        what = (f"{row.what}: {info.get('cell')} {info.get('num_layers')}x{info.get('hidden_size')}, "
                f"{info['num_parameters']:,} parameters, trained {info.get('train_minutes')} min on {trained_on}")
        if best is not None and info[best] is not None:
            what += f"; best {best.removeprefix('best_')} {info[best]:g}"
        models.append({"name": f"{SHIPPED}:{task}", "task": task, "file": str(path), "bytes": path.stat().st_size,
                       "what": what})
    return models

