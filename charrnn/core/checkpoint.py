"""The checkpoint file: the only module that knows its layout.

A checkpoint is one `torch.save` file holding plain types only (dicts, lists, numbers, strings, tensors):

    {"format": "charrnn-checkpoint", "version": 2, "task": "lm" | "caption" | "ctc",
     "model_config": asdict(<the task's model config>), "tokenizer": CharTokenizer.to_dict(),
     "model_state": state_dict (CPU tensors), "train_state": dict | None, "meta": dict}

so the file alone is enough to sample or evaluate, and with `train_state` to resume exactly. It is read
with `torch.load(weights_only=True)`, which refuses any pickled object that could run code, and written
to a temporary file that is renamed into place, so a crash mid-write never destroys the previous one.
Version 1 (the language model only, before the training loop was shared between tasks) is upgraded on
load.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from charrnn.core.errors import CharRNNError
from charrnn.core.files import atomic_write
from charrnn.core.tokenizer import CharTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.tasks import TASKS

FORMAT = "charrnn-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
BEST, LAST = "best.pt", "last.pt"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file in the same directory, flushed to disk, then renamed over `path`."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Serialised in memory first: torch.save's zip writer turns a full disk into an opaque RuntimeError,
    # while a plain write raises the OSError (ENOSPC) that says what happened.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU (portable checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def build_checkpoint(*, task: str, model: torch.nn.Module, tokenizer, train_state: dict | None = None,
                     meta: dict | None = None) -> dict:
    """The checkpoint of `model` (whose `.config` has `to_dict()`) for `task`, every tensor on the CPU."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model_state": to_cpu(model.state_dict()),
        "train_state": to_cpu(train_state) if train_state is not None else None,
        "meta": meta or {},
    }


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, tokenizer, train_state: dict | None = None,
                    meta: dict | None = None, *, task: str) -> None:
    """Write a self-sufficient checkpoint atomically."""
    atomic_save(build_checkpoint(task=task, model=model, tokenizer=tokenizer, train_state=train_state,
                                 meta=meta), path)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file from a file path or a run directory (its `best.pt`, else `last.pt`)."""
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).is_file():
                return p / name
        raise CharRNNError(f"{str(p)!r} holds no checkpoint ({BEST} or {LAST}); train into it first or give a .pt file")
    if not p.exists():
        raise CharRNNError(f"no such checkpoint or run directory: {str(p)!r}")
    return p


def run_name(path: str | os.PathLike) -> str:
    """The name of the run a checkpoint path belongs to, whole (`exp: lr 0.01` stays so, dots included): a
    run directory's name, the directory of its best.pt / last.pt, else a .pt file's name without `.pt`."""
    p = Path(path)
    if p.name in (BEST, LAST) and p.parent.name:
        return p.parent.name
    return p.name[:-3] if p.suffix == ".pt" and len(p.name) > 3 else p.name


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint (a file or a run directory) onto the CPU, never running code from it."""
    p = resolve_checkpoint(path)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a loadable checkpoint"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unpickler" in str(e):
            reason = "it holds Python objects that could run code, so it was refused unopened"
        raise CharRNNError(f"{str(p)!r} is not a charrnn checkpoint: {reason[:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CharRNNError(f"{str(p)!r} is not a charrnn checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("version")
    if version not in READABLE_VERSIONS:
        raise CharRNNError(f"{str(p)!r} has checkpoint format version {version!r}, this charrnn reads "
                           f"versions {', '.join(map(str, READABLE_VERSIONS))}; use the charrnn release that wrote it")
    return _upgrade_v1(ckpt) if version == 1 else ckpt


def _upgrade_v1(ckpt: dict) -> dict:
    """Version 1 in version 2's layout: a language model whose loop state was not yet split from its task's."""
    meta = dict(ckpt.get("meta") or {})
    meta.setdefault("selection", "val_loss")
    meta.setdefault("best", meta.pop("best_val_loss", None))
    ts = ckpt.get("train_state")
    if ts:
        ts = dict(ts)
        ts["task"] = {"hidden_state": ts.pop("hidden_state")}
        ts["best"] = ts.pop("best_val_loss")
    return {**ckpt, "version": VERSION, "file_version": 1, "task": "lm", "meta": meta, "train_state": ts}


def require_task(ckpt: dict, task: str, path: str | os.PathLike) -> None:
    """Refuse a checkpoint of another task with a line that says which command reads it."""
    if ckpt.get("task") != task:
        other = ckpt.get("task")
        command = TASKS[other].use_command if other in TASKS else "the charrnn command for that task"
        raise CharRNNError(f"{str(path)!r} holds a {other!r} model, not a {task!r} one; use {command} with it")


def trained_with(ckpt: dict, config_class: type):
    """The run settings a checkpoint was trained with, as `config_class` (fields it does not record keep
    their defaults; keys the class does not know are ignored)."""
    saved = (ckpt.get("meta") or {}).get("train_config") or {}
    return config_class(**{k: v for k, v in saved.items() if k in config_class.__dataclass_fields__})


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def checkpoint_info(path: str | os.PathLike) -> dict:
    """A flat, JSON-ready description of a checkpoint: task, model, vocabulary, progress, where it was trained."""
    p = resolve_checkpoint(path)
    ckpt = load_checkpoint(p)
    meta = ckpt.get("meta") or {}
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    joiner = " " if isinstance(tokenizer, WordTokenizer) else ""
    shown = joiner.join(tokenizer.symbol(i) for i in range(tokenizer.vocab_size - 2))  # without <eod>, <unk>
    shown = shown.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    selection = meta.get("selection", "val_loss")
    return {
        "path": str(p),
        "task": ckpt["task"],
        "format_version": ckpt.get("file_version", ckpt["version"]),
        **ckpt["model_config"],
        "tokens": "word" if isinstance(tokenizer, WordTokenizer) else "char",
        **({"byte_level": tokenizer.byte_level, "document_separator": tokenizer.document_separator}
           if isinstance(tokenizer, CharTokenizer) and "corpus" in meta else {}),
        "num_parameters": sum(t.numel() for t in ckpt["model_state"].values()),
        "step": meta.get("step"),
        "epoch": round(meta["epoch"], 3) if meta.get("epoch") is not None else None,
        "train_minutes": round(meta["elapsed_s"] / 60, 2) if meta.get("elapsed_s") is not None else None,
        "val_loss": _rounded(meta.get("val_loss")),
        f"best_{selection}": _rounded(meta.get("best")),
        "best_step": meta.get("best_step"),
        "trained_on": meta.get("device"),
        "precision": meta.get("precision"),
        "torch_version": meta.get("torch"),
        **({"corpus": meta["corpus"]} if "corpus" in meta else {"data": meta.get("data")}),
        "resumable": bool(ckpt.get("train_state")),
        "vocabulary": shown if len(shown) <= 400 else shown[:400] + "…",
        "train_config": meta.get("train_config"),
    }
