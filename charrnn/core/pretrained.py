"""The small models shipped inside the package, so a new user sees results before training anything.

`charrnn sample`, `charrnn caption sample IMAGE`, `charrnn ctc decode IMAGE` and `charrnn dump/cells TEXT`
use them when no run directory is given. They live in the installed package (`charrnn/pretrained/`), not
under `checkpoints/`, so no training run can ever overwrite them. Each is a best.pt of a run whose command
is in the README, exported by `export`: the optimizer and resume state dropped, the weights stored in
float16 (a quarter of the size; loading casts them back to float32), everything else kept.
"""

from __future__ import annotations

import os
from pathlib import Path

from charrnn.core.checkpoint import atomic_save, load_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.tasks import TASKS

HERE = Path(__file__).resolve().parents[1] / "pretrained"


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
    small = {k: v for k, v in ckpt.items() if k != "file_version"}
    small["train_state"] = None
    small["model_state"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model_state"].items()}
    out = Path(out)
    atomic_save(small, out)
    return out


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether a command's first argument names a model (a run directory or a .pt file) rather than an input
    (an image or a text): the rule that lets the model be left out."""
    p = Path(path)
    return p.is_dir() or p.suffix == ".pt"

