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

Checkpoints written since checksums were added also hold
`"checksums": {"model_state": "crc32:...", "train_state": "crc32:..."}` over every tensor's bytes (and every
other value) in file order: a flipped bit (a bad disk, a bad copy) is found on load instead of trained on.
Older files, without it, load as they always did; older readers ignore the key. What is read is checked
before it is used: a file that is not a checkpoint says what it is, a damaged one says what is damaged
(`CheckpointError`), and a run directory whose best.pt is damaged is read from its last.pt, with a
`CharRNNWarning` that says so.
"""

from __future__ import annotations

import io
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from charrnn.core.config import type_problems
from charrnn.core.errors import CharRNNError, CharRNNWarning
from charrnn.core.files import atomic_write
from charrnn.core.tokenizer import CharTokenizer, PairTokenizer, WordTokenizer, tokenizer_from_dict
from charrnn.tasks import TASKS

FORMAT = "charrnn-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)
BEST, LAST = "best.pt", "last.pt"
CHECKSUMS = "checksums"
TOP_LEVEL = {"model_config": dict, "tokenizer": dict, "model_state": dict}  # what every checkpoint must hold


class CheckpointError(CharRNNError):
    """A file that cannot be used as a checkpoint: not one, truncated, or damaged. `path` is the file and
    `reason` what is wrong with it, as a predicate ("is truncated ..."), so a caller can say what else to use."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{str(path)!r} {reason}")


def _damaged(path, what: str) -> CheckpointError:
    return CheckpointError(path, f"is damaged: {what}")


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
    return with_checksums({
        "format": FORMAT,
        "version": VERSION,
        "task": task,
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "model_state": to_cpu(model.state_dict()),
        "train_state": to_cpu(train_state) if train_state is not None else None,
        "meta": meta or {},
    })


# ----- checksums ----------------------------------------------------------------------------------

def checksum(obj: Any) -> str:
    """CRC-32 of nested dicts/lists with tensors, in their order: every key, every tensor's dtype, shape and
    bytes, every other value's repr. CRC-32 because it is what zip files use against the same accidents
    (flipped bits, a torn copy) and it runs at several GB/s (0.04 s for 85 MB of weights here, half of
    SHA-256's time, a third of torch.save's)."""
    crc = 0

    def add(x) -> None:
        nonlocal crc
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu()
            crc = zlib.crc32(f"<{t.dtype} {tuple(t.shape)}>".encode(), crc)
            if t.numel():
                if not t.is_contiguous() or t.stride()[-1:] not in ((), (1,)):  # a view, or stride 0 (expanded)
                    t = t.clone(memory_format=torch.contiguous_format)
                crc = zlib.crc32(t.reshape(-1).view(torch.uint8).numpy(), crc)
        elif isinstance(x, dict):
            for k, v in x.items():
                crc = zlib.crc32(repr(k).encode(), crc)
                add(v)
        elif isinstance(x, (list, tuple)):
            crc = zlib.crc32(b"[", crc)
            for v in x:
                add(v)
            crc = zlib.crc32(b"]", crc)
        else:
            crc = zlib.crc32(repr(x).encode(), crc)

    add(obj)
    return f"crc32:{crc:08x}"


def with_checksums(ckpt: dict) -> dict:
    """`ckpt` with the checksums of its weights and of its training state (replacing any it had)."""
    return {**ckpt, CHECKSUMS: {"model_state": checksum(ckpt["model_state"]),
                                "train_state": checksum(ckpt.get("train_state"))}}


def verify_checksum(ckpt: dict, part: str, path: str | os.PathLike) -> None:
    """Refuse `ckpt[part]` ("model_state" or "train_state") when the checksum stored with it does not match;
    a checkpoint written before checksums (none stored) passes."""
    stored = (ckpt.get(CHECKSUMS) or {}).get(part) if isinstance(ckpt.get(CHECKSUMS), dict) else None
    if isinstance(stored, str) and stored.startswith("crc32:") and checksum(ckpt.get(part)) != stored:
        what = "its checksum" if part == "model_state" else "the checksum of its training state"
        raise CheckpointError(path, f"is damaged ({what} does not match)")


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


Check = Callable[[dict], None]


def load_checkpoint(path: str | os.PathLike, *, check: Check | None = None) -> dict:
    """Read and validate a checkpoint (a file or a run directory) onto the CPU, never running code from it.

    The returned dict also says which file it came from (`source`). `check(ckpt)` is the caller's own test
    of it (its task, its model's shapes), run before anything is built. Given a run directory whose best.pt
    is damaged (`CheckpointError`, from this function or from `check`), its last.pt is read instead, with a
    `CharRNNWarning` that says so.
    """
    p = resolve_checkpoint(path)
    try:
        return _load_checked(p, check)
    except CheckpointError as damaged:
        other = p.with_name(LAST)
        if not (Path(path).is_dir() and p.name == BEST and other.is_file()):
            raise
        try:
            ckpt = _load_checked(other, check)
        except CheckpointError as also:
            raise CheckpointError(p, f"{damaged.reason}, and {LAST} beside it {also.reason}") from None
        warnings.warn(CharRNNWarning(f"{damaged}; reading {str(other)!r} (step {_step(ckpt)}) instead"),
                      stacklevel=2)
        return ckpt


def _load_checked(p: Path, check: Check | None) -> dict:
    ckpt = _read(p)
    if check is not None:
        check(ckpt)
    return ckpt


def _read(p: Path) -> dict:
    """One checkpoint file, read and validated: what it is if not a checkpoint, what is damaged if it is one."""
    what = _not_a_checkpoint(p)
    if what:
        raise CheckpointError(p, what)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not a loadable checkpoint"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unpickler" in str(e):
            raise CheckpointError(p, "is not a charrnn checkpoint: it holds Python objects that could run code, "
                                     "so it was refused unopened") from None
        raise CheckpointError(p, f"is truncated or damaged ({reason[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(p, f"is not a charrnn checkpoint (no '{FORMAT}' header)")
    version = ckpt.get("version")
    if version not in READABLE_VERSIONS:
        raise CharRNNError(f"{str(p)!r} has checkpoint format version {version!r}, this charrnn reads "
                           f"versions {', '.join(map(str, READABLE_VERSIONS))}; use the charrnn release that wrote it")
    _check_layout(ckpt, p, version)
    if version == 1:
        try:
            ckpt = _upgrade_v1(ckpt)
        except (KeyError, TypeError):
            raise _damaged(p, "its training state lacks what a version 1 checkpoint holds") from None
    verify_checksum(ckpt, "model_state", p)
    ckpt["source"] = str(p)
    return ckpt


# The first bytes of files people mistake for checkpoints, and what to call them.
MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
         (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip file"), (b"\x93NUMPY", "a NumPy array (.npy)"),
         (b"\x89HDF", "an HDF5 file"), (b"BZh", "a bzip2 file"), (b"\xfd7zXZ", "an xz file"),
         (b"7z\xbc\xaf", "a 7-Zip archive"), (b"\x7fELF", "a program (ELF)"))


def _not_a_checkpoint(p: Path) -> str | None:
    """Why `p` cannot be a checkpoint, judged from its bytes without unpickling anything (None: it may be one).
    A checkpoint is a zip archive (torch.save's format) holding a `data.pkl`."""
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not head:
        return "is empty, not a checkpoint (a save that never finished?)"
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(p):
            return f"is truncated or damaged (a zip archive whose end is missing, {p.stat().st_size:,} bytes)"
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "is truncated or damaged (its zip directory cannot be read)"
        if not any(n.endswith("data.pkl") for n in names):
            return "is not a charrnn checkpoint: it is a zip archive of other files"
        return None
    for magic, name in MAGIC:
        if head.startswith(magic):
            return f"is not a charrnn checkpoint: it is {name}"
    if head[:1] == b"\x80":
        return "is not a charrnn checkpoint: it is a Python pickle, refused unopened (unpickling could run code)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:  # a character cut by the 4096-byte read is still text
        text = head[:e.start].decode("utf-8") if e.start > len(head) - 4 else None
    if text is not None and "\x00" not in text:
        kind = "a JSON or text file" if text.lstrip()[:1] in ("{", "[") else "a text file"
        return f"is not a charrnn checkpoint: it is {kind}"
    return f"is not a charrnn checkpoint (not a zip archive: it starts with bytes {head[:4].hex(' ')})"


def _check_layout(ckpt: dict, p: Path, version: int) -> None:
    """The types of what every checkpoint holds, so that nothing later fails on a string where a dict belongs."""
    if version > 1 and not isinstance(ckpt.get("task"), str):
        raise _damaged(p, "it does not say its task" if "task" not in ckpt
                       else f"its task is a {type(ckpt['task']).__name__}, not a name")
    for key, kind in TOP_LEVEL.items():
        if key not in ckpt:
            raise _damaged(p, f"it has no {key}")
        if not isinstance(ckpt[key], kind):
            raise _damaged(p, f"its {key} is a {type(ckpt[key]).__name__}, not a {kind.__name__}")
    for key in ("train_state", "meta"):
        if ckpt.get(key) is not None and not isinstance(ckpt[key], dict):
            raise _damaged(p, f"its {key} is a {type(ckpt[key]).__name__}, not a dict")
    for name, value in ckpt["model_state"].items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise _damaged(p, f"its model_state holds {name!r}: {type(value).__name__}, not a tensor")
    problem = _tokenizer_problem(ckpt["tokenizer"])
    if problem:
        raise _damaged(p, f"its tokenizer {problem}")


def _tokenizer_problem(d: dict) -> str | None:
    """What is wrong with a checkpoint's `tokenizer` entry (None: it makes a tokenizer)."""
    if d.get("kind") == "pair":
        for side in ("source", "target"):
            if not isinstance(d.get(side), dict) or d[side].get("kind") == "pair":
                return f"has no {side} vocabulary"
            problem = _tokenizer_problem(d[side])
            if problem:
                return f"({side}) {problem}"
    elif d.get("kind") == "word":
        words = d.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            return "has no list of words"
        if d.get("split", "words") not in WordTokenizer.SPLITS:
            return "splits words in a way this charrnn does not know"
    else:
        codes, byte_level, separator = d.get("codes"), d.get("byte_level"), d.get("document_separator")
        if not isinstance(codes, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            return "has no list of character codes"
        if not isinstance(byte_level, bool) or not (separator is None or isinstance(separator, str)):
            return "has a byte_level that is not true/false or a document_separator that is not text"
        if any(not 0 <= c <= (255 if byte_level else 0x10FFFF) for c in codes):
            return "holds codes that are not " + ("bytes" if byte_level else "Unicode characters")
    try:
        tokenizer_from_dict(d)
    except (KeyError, TypeError, ValueError, OverflowError, CharRNNError) as e:
        return f"cannot be read ({str(e)[:80]})"
    return None


def _step(ckpt: dict):
    step = (ckpt.get("meta") or {}).get("step")
    return step if isinstance(step, int) else "?"


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


def check_weights(model_state: dict, make_model: Callable[[], torch.nn.Module], path) -> None:
    """Refuse weights whose names or shapes are not those of the model `make_model()` builds, before it is
    built for real: here it is built on the meta device (shapes only, no memory), so a model config that asks
    for a model of terabytes is refused as cheaply as one a single unit off."""
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in make_model().state_dict().items()}
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise _damaged(path, f"its model config makes no model ({str(e).splitlines()[0][:100]})") from None
    missing = [k for k in expected if k not in model_state]
    unexpected = [k for k in model_state if k not in expected]
    wrong = [f"{k} is {tuple(model_state[k].shape)}, the config makes it {shape}"
             for k, shape in expected.items() if k in model_state and tuple(model_state[k].shape) != shape]
    problems = ([f"{len(missing)} weights missing (e.g. {missing[0]})"] if missing else []) + (
        [f"{len(unexpected)} weights the model has no place for (e.g. {unexpected[0]})"] if unexpected else []) + wrong
    if problems:
        raise _damaged(path, f"its weights do not match its model config ({'; '.join(problems[:2])})")


def checked_config(ckpt: dict, config_class: type, make_model: Callable[[Any], torch.nn.Module], vocab_size: int):
    """A loaded checkpoint's model config as `config_class` (a `ModelConfig`), checked before any model is
    built: its values (types, ranges), its vocabulary size against `vocab_size` (what the checkpoint's own
    tokenizer gives the model) and its weights against `make_model(config)` (`check_weights`)."""
    path = ckpt.get("source", "the checkpoint")
    try:
        config = config_class.from_dict(ckpt["model_config"], source=path)
    except CharRNNError as e:
        raise CheckpointError(path, str(e).removeprefix(f"{str(path)!r} ")) from None
    if config.vocab_size != vocab_size:
        raise _damaged(path, f"its model config has vocab_size {config.vocab_size}, but its tokenizer makes "
                             f"{vocab_size}")
    check_weights(ckpt["model_state"], lambda: make_model(config), path)
    return config


def trained_with(ckpt: dict, config_class: type):
    """The run settings a checkpoint was trained with, as `config_class` (fields it does not record keep
    their defaults; keys the class does not know are ignored; settings of the wrong type or out of range are
    a `CheckpointError`)."""
    saved = (ckpt.get("meta") or {}).get("train_config") or {}
    saved = {k: v for k, v in saved.items() if k in config_class.__dataclass_fields__} if isinstance(saved, dict) \
        else {}
    problems = type_problems(config_class, saved)
    try:
        if not problems:
            return config_class(**saved)
    except CharRNNError as e:
        problems = [str(e)]
    raise _damaged(ckpt.get("source", "the checkpoint"),
                   f"the run settings it holds are wrong ({'; '.join(problems[:2])})")


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _number(meta: dict, key: str) -> float | None:
    """meta[key] when it is a finite number (a damaged or hand-made meta may hold anything), else None."""
    value = meta.get(key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def _text(meta: dict, key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def checkpoint_info(path: str | os.PathLike) -> dict:
    """A flat, JSON-ready description of a checkpoint: task, model, vocabulary, progress, where it was trained.

    Every value is taken as the file holds it (strings unescaped: `charrnn info` escapes what a terminal would
    act on); a meta field of the wrong type is shown as missing."""
    ckpt = load_checkpoint(path)
    p = Path(ckpt["source"])
    meta = ckpt.get("meta") or {}
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    kind = lambda t: "word" if isinstance(t, WordTokenizer) else "char"  # noqa: E731
    tokens = kind(tokenizer)
    if isinstance(tokenizer, PairTokenizer):  # the vocabulary shown is the one the model writes
        tokens = f"{kind(tokenizer.source)} -> {kind(tokenizer.target)}"
        tokenizer = tokenizer.target
    joiner = " " if isinstance(tokenizer, WordTokenizer) else ""
    shown = joiner.join(tokenizer.symbol(i) for i in range(tokenizer.vocab_size - 2))  # without <eod>, <unk>
    shown = shown.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    selection = _text(meta, "selection") or "val_loss"
    epoch, elapsed = _number(meta, "epoch"), _number(meta, "elapsed_s")
    step, best_step = _number(meta, "step"), _number(meta, "best_step")
    model_config = {k: v for k, v in ckpt["model_config"].items()
                    if isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool, list)))}
    train_config = meta.get("train_config")
    return {
        "path": str(p),
        "task": ckpt["task"],
        "format_version": ckpt.get("file_version", ckpt["version"]),
        **model_config,
        "tokens": tokens,
        **({"byte_level": tokenizer.byte_level, "document_separator": tokenizer.document_separator}
           if isinstance(tokenizer, CharTokenizer) and "corpus" in meta else {}),
        "num_parameters": sum(t.numel() for t in ckpt["model_state"].values()),
        "step": step,
        "epoch": round(epoch, 3) if epoch is not None else None,
        "train_minutes": round(elapsed / 60, 2) if elapsed is not None else None,
        "val_loss": _rounded(_number(meta, "val_loss")),
        f"best_{selection}": _rounded(_number(meta, "best")),
        "best_step": best_step,
        "trained_on": _text(meta, "device"),
        "precision": _text(meta, "precision"),
        "torch_version": _text(meta, "torch"),
        **({"corpus": _text(meta, "corpus")} if "corpus" in meta else {"data": _text(meta, "data")}),
        "resumable": bool(ckpt.get("train_state")),
        "checksum": "verified" if isinstance(ckpt.get(CHECKSUMS), dict) else "none (an older file)",
        "vocabulary": shown if len(shown) <= 400 else shown[:400] + "…",
        "train_config": train_config if isinstance(train_config, dict) else None,
    }
