"""The checkpoint file: the only module that knows its layout.

A checkpoint is one `torch.save` file holding plain types only (dicts, lists, numbers, strings, tensors):

    {"format": "charrnn-checkpoint", "version": 1,
     "model_config": asdict(CharRNNConfig), "tokenizer": CharTokenizer.to_dict(),
     "model_state": state_dict (CPU tensors), "train_state": dict | None, "meta": dict}

so the file alone is enough to sample or evaluate, and with `train_state` to resume exactly. It is read
with `torch.load(weights_only=True)`, which refuses any pickled object that could run code, and written
to a temporary file that is renamed into place, so a crash mid-write never destroys the previous one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from charrnn.common import CharRNNError
from charrnn.model import CharRNN, CharRNNConfig
from charrnn.tokenizer import CharTokenizer

FORMAT = "charrnn-checkpoint"
VERSION = 1
BEST, LAST = "best.pt", "last.pt"


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file in the same directory, flushed to disk, then renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def to_cpu(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with every tensor moved to the CPU (portable checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: str | os.PathLike, model: CharRNN, tokenizer: CharTokenizer,
                    train_state: dict | None = None, meta: dict | None = None) -> None:
    """Write a self-sufficient checkpoint atomically."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model_state": to_cpu(model.state_dict()),
        "train_state": to_cpu(train_state) if train_state is not None else None,
        "meta": meta or {},
    }
    atomic_save(payload, path)


def resolve_checkpoint(path: str | os.PathLike, prefer: str = BEST) -> Path:
    """A checkpoint file from a file path or a run directory (its `best.pt`, else `last.pt`)."""
    p = Path(path)
    if p.is_dir():
        order = [BEST, LAST] if prefer == BEST else [LAST, BEST]
        for name in order:
            if (p / name).is_file():
                return p / name
        raise CharRNNError(f"{str(p)!r} holds no checkpoint ({BEST} or {LAST}); train into it first or give a .pt file")
    if not p.exists():
        raise CharRNNError(f"no such checkpoint or run directory: {str(p)!r}")
    return p


def load_checkpoint(path: str | os.PathLike, prefer: str = BEST) -> dict:
    """Read and validate a checkpoint (a file or a run directory) onto the CPU, never running code from it."""
    p = resolve_checkpoint(path, prefer)
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
    if version != VERSION:
        raise CharRNNError(f"{str(p)!r} has checkpoint format version {version!r}, this charrnn reads "
                           f"version {VERSION}; use the charrnn release that wrote it")
    return ckpt


def model_from_checkpoint(ckpt: dict, device: torch.device | str = "cpu") -> tuple[CharRNN, CharTokenizer]:
    """Rebuild the model (in eval mode, on `device`) and tokenizer stored in a loaded checkpoint."""
    config = CharRNNConfig.from_dict(ckpt["model_config"])
    model = CharRNN(config)
    model.load_state_dict(ckpt["model_state"])
    model.to(device).eval()
    return model, CharTokenizer.from_dict(ckpt["tokenizer"])


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[CharRNN, CharTokenizer, dict]:
    """Model, tokenizer and checkpoint dict from a checkpoint file or run directory."""
    ckpt = load_checkpoint(path)
    model, tokenizer = model_from_checkpoint(ckpt, device)
    return model, tokenizer, ckpt


def checkpoint_info(path: str | os.PathLike) -> dict:
    """A flat, JSON-ready description of a checkpoint: model, vocabulary, progress, where it was trained."""
    p = resolve_checkpoint(path)
    ckpt = load_checkpoint(p)
    config = ckpt["model_config"]
    meta = ckpt.get("meta") or {}
    tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"])
    n_params = sum(t.numel() for t in ckpt["model_state"].values())
    shown = "".join(tokenizer.symbol(i) for i in range(len(tokenizer.codes)))
    shown = shown.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return {
        "path": str(p),
        "format_version": ckpt["version"],
        **{k: config[k] for k in ("cell", "num_layers", "hidden_size", "embedding_dim", "dropout", "vocab_size")},
        "byte_level": tokenizer.byte_level,
        "document_separator": tokenizer.document_separator,
        "num_parameters": n_params,
        "step": meta.get("step"),
        "epoch": round(meta["epoch"], 3) if meta.get("epoch") is not None else None,
        "train_minutes": round(meta["elapsed_s"] / 60, 2) if meta.get("elapsed_s") is not None else None,
        "val_loss": round(meta["val_loss"], 4) if meta.get("val_loss") is not None else None,
        "best_val_loss": round(meta["best_val_loss"], 4) if meta.get("best_val_loss") is not None else None,
        "best_step": meta.get("best_step"),
        "trained_on": meta.get("device"),
        "precision": meta.get("precision"),
        "torch_version": meta.get("torch"),
        "corpus": meta.get("corpus"),
        "resumable": bool(ckpt.get("train_state")),
        "vocabulary": shown if len(shown) <= 400 else shown[:400] + "…",
        "train_config": meta.get("train_config"),
    }
