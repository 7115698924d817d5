"""TrainConfig and train(): truncated back-propagation through time over contiguous streams.

The training text is cut into B contiguous streams (see `data.StreamBatches`); each step feeds the next
T characters of every stream, carries the hidden state into the next step and detaches it there, so
gradients are cut every T characters while the state itself spans the whole epoch. The state is reset
at each epoch boundary.

The trainer never prints: it reports through an `on_event(dict)` callback that the CLI renders.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from charrnn import distributed
from charrnn.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint
from charrnn.common import CharRNNError
from charrnn.config import DEFAULT_CORPUS, TrainConfig
from charrnn.device import autocast, resolve_device, resolve_precision, seed_everything
from charrnn.data import EncodedCorpus, StreamBatches, encode_corpus
from charrnn.evaluate import evaluate
from charrnn.model import CharRNN, State, count_parameters, detach_state
from charrnn.plot import write_loss_curve
from charrnn.tokenizer import CharTokenizer

RUN_FILE, METRICS_FILE, CURVE_FILE = "run.json", "metrics.jsonl", "loss.svg"
RESUMABLE = TrainConfig.RESUMABLE


@dataclass
class TrainSummary:
    """What a finished (or stopped) run reports."""

    run_dir: str
    step: int
    epoch: float
    elapsed_s: float
    stop_reason: str  # max_steps | epochs | time_budget | patience | interrupted | diverged
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    chars_per_s: float
    num_parameters: int
    message: str = ""
    history: list[float] = field(default_factory=list, repr=False)  # per-step train losses of this session


def default_corpus_path() -> Path:
    """The bundled tiny-shakespeare: in ./corpora, or beside the installed package's source tree."""
    here = Path(DEFAULT_CORPUS)
    if here.exists():
        return here
    beside = Path(__file__).resolve().parent.parent / DEFAULT_CORPUS
    return beside if beside.exists() else here


# ----- optimisation -------------------------------------------------------------------------------

def make_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":  # char-rnn's optimizer (alpha 0.95 there)
        return torch.optim.RMSprop(params, lr=lr, alpha=0.95, weight_decay=wd, momentum=config.momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=wd)
    return torch.optim.Adagrad(params, lr=lr, weight_decay=wd)


def learning_rate(config: TrainConfig, step: int, epoch: int, progress: float) -> float:
    """The learning rate for `step` (0-based) in `epoch` (0-based); `progress` in [0, 1] is how much
    of the run is done (by steps, epochs or time budget, whichever is furthest along)."""
    if config.schedule == "constant":
        return config.lr
    if config.schedule == "exponential":
        return config.lr * config.lr_decay ** max(0, epoch - config.lr_decay_after + 1)
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    return config.lr * (config.min_lr_frac + (1 - config.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


# ----- run directory ------------------------------------------------------------------------------

def write_run_file(config: TrainConfig) -> None:
    config.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = config.run_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(config), indent=2))
    os.replace(tmp, config.run_dir / RUN_FILE)


def resume_config(run_dir: str | os.PathLike, **overrides) -> TrainConfig:
    """The config of an existing run directory, with the options that may change on resume replaced.

    `overrides` holds only options the user gave; any outside `RESUMABLE` is an error, since the run
    directory already fixes the corpus, the model and the optimisation.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CharRNNError(f"--resume {str(run)!r}: no such run directory")
    if not (run / RUN_FILE).exists() or not (run / LAST).exists():
        raise CharRNNError(f"--resume {str(run)!r}: not a run directory ({RUN_FILE} and {LAST} are missing)")
    try:
        saved = json.loads((run / RUN_FILE).read_text())
    except json.JSONDecodeError as e:
        raise CharRNNError(f"{str(run / RUN_FILE)!r} is damaged ({e.msg}); it cannot be resumed") from None
    fixed = sorted(k for k in overrides if k not in RESUMABLE)
    if fixed:
        flags = ", ".join("--" + k.replace("_", "-") for k in fixed)
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUMABLE)
        raise CharRNNError(f"{flags} cannot change when resuming (the run directory fixes them); "
                           f"only {allowed} can; start a new run with --out to change them")
    if any(overrides.get(k) is not None for k in ("max_steps", "epochs", "time_budget")):
        # A stopping rule given on resume replaces the saved ones, so it can extend a finished run.
        overrides = {"max_steps": None, "epochs": None, "time_budget": None, **overrides}
    if overrides.get("time_budget") is not None:
        # A budget given on resume is more time on top of what the run has already spent.
        spent = load_checkpoint(run / LAST)["meta"].get("elapsed_s", 0.0)
        overrides["time_budget"] = spent / 60 + overrides["time_budget"]
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{**{k: v for k, v in saved.items() if k in names}, **overrides, "out": str(run)})


@contextlib.contextmanager
def _sigint_sets(event: threading.Event):
    """While active, the first Ctrl-C asks the loop to stop at the next step; a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))


# ----- the loop -----------------------------------------------------------------------------------

def train(config: TrainConfig, on_event: Callable[[dict], None] | None = None, resume: bool = False,
          overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train a model as `config` says, writing checkpoints, `metrics.jsonl` and `loss.svg` to its run directory.

    With `resume`, continue the run in `config.run_dir` from its `last.pt` exactly where it stopped.
    `stop` (set by Ctrl-C, or by a caller) ends the run after the current step with a checkpoint.
    Events passed to `on_event` are dicts with a "kind": start, log, train, eval, checkpoint, end.
    """
    world = distributed.world_from_env()
    emit = (on_event or (lambda e: None)) if world.is_main else (lambda e: None)
    config = config.with_default_stop()
    run_dir = config.run_dir
    stop = stop or threading.Event()

    ckpt = None
    overwrite_old = False
    if resume:
        ckpt = load_checkpoint(run_dir / LAST)
        if not ckpt.get("train_state"):
            raise CharRNNError(f"{str(run_dir / LAST)!r} has no training state to resume from")
    elif (run_dir / LAST).exists() or (run_dir / BEST).exists():
        if not overwrite:
            raise CharRNNError(f"{str(run_dir)!r} already holds a run: continue it with --resume {run_dir}, "
                               "or start afresh with another --out or with --overwrite")
        overwrite_old = True

    device = resolve_device(config.device)
    if world.active and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    precision = resolve_precision(config.precision, device)
    if config.batch_size % world.size:
        raise CharRNNError(f"--batch-size {config.batch_size} must be divisible by the {world.size} processes "
                           "of this torchrun job (each owns an equal share of the streams)")
    started_group = distributed.init(world, device)
    distributed.barrier(world)  # every rank has checked the run directory before rank 0 changes it
    if overwrite_old and world.is_main:
        for name in (LAST, BEST, METRICS_FILE, CURVE_FILE):
            (run_dir / name).unlink(missing_ok=True)
    seed_everything(config.seed)

    corpus_path = Path(config.corpus)
    if not resume and config.corpus == DEFAULT_CORPUS:
        corpus_path = default_corpus_path()
    tokenizer = CharTokenizer.from_dict(ckpt["tokenizer"]) if ckpt else None

    def encoded() -> EncodedCorpus:
        return encode_corpus(corpus_path, run_dir, config.encoding, config.byte_level, config.document_separator,
                             tokenizer)

    corpus = encoded() if world.is_main else None
    distributed.barrier(world)  # rank 0 has encoded the corpus: the others find it cached
    corpus = corpus or encoded()
    tokenizer = corpus.tokenizer
    if not resume:
        config = replace(config, corpus=str(corpus_path.resolve()), out=str(run_dir))
        if world.is_main:
            write_run_file(config)
    train_ids, val_ids, _ = corpus.split(config.val_frac, config.test_frac)
    if config.val_frac > 0 and len(val_ids) < 2:
        raise CharRNNError(f"the validation split of {corpus_path} is under 2 characters; raise --val-frac or use a longer file")
    local_batch = config.batch_size // world.size
    rows = slice(world.rank * local_batch, (world.rank + 1) * local_batch)  # this rank's streams
    batches = StreamBatches(train_ids, config.batch_size, config.seq_len, rows)

    model = CharRNN(config.model_config(tokenizer.vocab_size)).to(device)
    if world.active:
        torch.manual_seed(config.seed + world.rank)  # different dropout masks on each rank
    optimizer = make_optimizer(config, model.parameters())
    step, epoch, elapsed_before = 0, 0, 0.0
    best_val, best_step, last_val = None, None, None
    evals_since_best = 0
    state: State = model.init_state(local_batch, device)
    if ckpt:
        ts = ckpt["train_state"]
        model.load_state_dict(ckpt["model_state"])
        optimizer.load_state_dict(ts["optimizer"])
        step, epoch, elapsed_before = ts["step"], ts["epoch"], ts["elapsed_s"]
        best_val, best_step, last_val = ts["best_val_loss"], ts["best_step"], ts["last_val_loss"]
        evals_since_best = ts["evals_since_best"]
        state = tuple(s[:, rows].to(device) for s in ts["hidden_state"])
        rngs = ts["rng"]
        _set_rng_state(rngs[world.rank] if len(rngs) == world.size else rngs[0])
    forward = torch.compile(model) if config.compile else model
    if world.active:
        forward = DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    # bf16 autocast runs the matrix products in bfloat16; weights, optimizer state, the carried hidden
    # state and evaluation stay in float32.
    def amp():
        return autocast(precision, device)
    n_params = count_parameters(model)
    steps_per_epoch = len(batches)
    chars_per_step = config.batch_size * config.seq_len  # over all ranks
    log_v = math.log(tokenizer.vocab_size)
    metrics_path = run_dir / METRICS_FILE
    if world.is_main:
        _truncate_metrics(metrics_path, step)
    time_budget_s = config.time_budget * 60 if config.time_budget is not None else None
    max_epoch_steps = math.ceil(config.epochs * steps_per_epoch) if config.epochs is not None else None
    if resume and ((config.max_steps is not None and step >= config.max_steps)
                   or (max_epoch_steps is not None and step >= max_epoch_steps)
                   or (time_budget_s is not None and elapsed_before >= time_budget_s)):
        raise CharRNNError(f"the run in {run_dir} already finished (step {step}, {elapsed_before / 60:.1f} minutes): "
                           "give a larger --max-steps (counted from the run's start), --epochs, or a "
                           "--time-budget MINUTES to train for that much longer")

    def progress(elapsed: float) -> float:
        p = 0.0
        if config.max_steps:
            p = max(p, step / config.max_steps)
        if max_epoch_steps:
            p = max(p, step / max_epoch_steps)
        if time_budget_s:
            p = max(p, elapsed / time_budget_s)
        return p

    def train_state(elapsed: float) -> dict:
        # Collectives: every rank takes part, rank 0 keeps the result.
        full_state = distributed.gather_rows(world, state)
        rngs = distributed.gather_objects(world, _rng_state())
        return {"step": step, "epoch": epoch, "elapsed_s": elapsed, "optimizer": optimizer.state_dict(),
                "hidden_state": list(full_state), "rng": rngs, "best_val_loss": best_val,
                "best_step": best_step, "last_val_loss": last_val, "evals_since_best": evals_since_best}

    def meta(elapsed: float) -> dict:
        return {"step": step, "epoch": epoch + (step - epoch * steps_per_epoch) / steps_per_epoch,
                "elapsed_s": elapsed, "device": str(device), "precision": precision,
                "torch": str(torch.__version__), "val_loss": last_val, "best_val_loss": best_val,
                "best_step": best_step, "corpus": str(corpus.source), "num_parameters": n_params,
                "train_config": asdict(config)}

    def save(*names: str) -> None:
        """Write the same checkpoint under each name (best and last, when the last is the best)."""
        elapsed = time.perf_counter() - t_start
        ts = train_state(elapsed)
        for name in names:
            if world.is_main:
                save_checkpoint(run_dir / name, model, tokenizer, ts, meta(elapsed))
            emit({"kind": "checkpoint", "path": str(run_dir / name), "step": step})

    def exploded(loss: float) -> bool:
        return not math.isfinite(loss) or (config.explode_factor > 0 and loss > config.explode_factor * log_v)

    def divergence_message(loss: float, what: str) -> str:
        how = "became NaN/inf" if not math.isfinite(loss) else (
            f"exploded to {loss:.3f} (over {config.explode_factor:g} x ln V = {config.explode_factor * log_v:.3f})")
        kept = (f"the last good checkpoint is kept in {run_dir}" if (run_dir / LAST).exists()
                else "no checkpoint had been written yet")
        return (f"training stopped at step {step}: the {what} loss {how}; {kept}. Try a lower --lr (now "
                f"{config.lr:g}), a smaller --grad-clip, or --explode-factor 0 to ignore spikes")

    def run_eval() -> str:
        """Evaluate on the whole validation split, log it, save best/last.

        Returns "patience" when it is time to stop early, or a divergence message (nothing saved then).
        """
        nonlocal best_val, best_step, last_val, evals_since_best
        names = [LAST]
        if len(val_ids) >= 2:
            # Computed once, on rank 0, and agreed: every rank then takes the same decisions.
            with amp():  # at the training precision: bf16 halves its cost and moved the loss by ~3e-5 here
                result = evaluate(model, val_ids, config.eval_streams) if world.is_main else None
            val = distributed.broadcast_float(world, result.nats_per_char if result else 0.0, device)
            if exploded(val):
                return divergence_message(val, "validation")
            last_val = val
            if best_val is None or last_val < best_val:
                best_val, best_step, evals_since_best = last_val, step, 0
                names.insert(0, BEST)
            else:
                evals_since_best += 1
            if world.is_main:
                record = {"kind": "eval", "step": step, "val_loss": last_val, "val_bpc": result.bits_per_char,
                          "val_ppl": result.perplexity, "best_val_loss": best_val,
                          "elapsed_s": round(time.perf_counter() - t_start, 3)}
                log.write(json.dumps(record) + "\n")
                emit(record)
        save(*names)
        if world.is_main:
            write_loss_curve(metrics_path, run_dir / CURVE_FILE, f"{run_dir.name}: loss per character")
        if config.patience is not None and evals_since_best >= config.patience:
            return "patience"
        return ""

    emit({"kind": "start", "run_dir": str(run_dir), "resumed": resume, "step": step, "device": str(device),
          "precision": precision,
          "num_parameters": n_params, "vocab_size": tokenizer.vocab_size, "train_chars": len(train_ids) - 1,
          "val_chars": max(len(val_ids) - 1, 0), "steps_per_epoch": steps_per_epoch,
          "corpus_reused": corpus.reused, "max_steps": config.max_steps, "time_budget_s": time_budget_s,
          "epochs": config.epochs, "config": asdict(config)})

    history: list[float] = []
    stop_reason, message = "", ""
    last_loss = None
    t_start = time.perf_counter() - elapsed_before
    t_rate, rate_chars = time.perf_counter(), 0
    chars_per_s = 0.0
    model.train()
    log_file = open(metrics_path, "a", buffering=1) if world.is_main else open(os.devnull, "w")
    with _sigint_sets(stop), log_file as log:
        while True:
            elapsed = time.perf_counter() - t_start
            # Clocks and Ctrl-C differ between ranks: rank 0 decides, the others follow.
            flags = distributed.broadcast_float(
                world, (1.0 if time_budget_s is not None and elapsed >= time_budget_s else 0.0)
                + (2.0 if stop.is_set() else 0.0), device)
            timed_out, interrupted = flags in (1.0, 3.0), flags >= 2.0
            if config.max_steps is not None and step >= config.max_steps:
                stop_reason = "max_steps"
            elif max_epoch_steps is not None and step >= max_epoch_steps:
                stop_reason = "epochs"
            elif timed_out:
                stop_reason = "time_budget"
            elif interrupted:
                stop_reason = "interrupted"
            if stop_reason:
                break
            i = step - epoch * steps_per_epoch
            if i >= steps_per_epoch:  # epoch boundary: the streams restart, so does the state
                epoch += 1
                i = 0
                state = model.init_state(local_batch, device)
            lr = learning_rate(config, step, epoch, progress(elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = batches.batch(i)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp():
                logits, new_state = forward(x, state)
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                         if config.grad_clip > 0 else None)
            loss_value = distributed.mean(world, loss).item()
            if exploded(loss_value):
                stop_reason, message = "diverged", divergence_message(loss_value, "training")
                break
            optimizer.step()
            state = tuple(s.float() for s in detach_state(new_state))
            step += 1
            last_loss = loss_value
            history.append(loss_value)
            rate_chars += chars_per_step
            now = time.perf_counter()
            if now - t_rate >= 1.0 or chars_per_s == 0.0:
                chars_per_s = rate_chars / (now - t_rate)
                t_rate, rate_chars = now, 0
            elapsed = now - t_start
            record = {"kind": "train", "step": step, "epoch": round(epoch + (i + 1) / steps_per_epoch, 5),
                      "loss": loss_value, "lr": lr, "chars_per_s": round(chars_per_s, 1),
                      "elapsed_s": round(elapsed, 3)}
            if grad_norm is not None:
                record["grad_norm"] = round(float(grad_norm), 5)
            log.write(json.dumps(record) + "\n")
            emit({**record, "progress": progress(elapsed)})

            if step % config.eval_every == 0:
                outcome = run_eval()
                if outcome == "patience":
                    stop_reason = "patience"
                    message = f"validation loss has not improved for {config.patience} evaluations"
                elif outcome:
                    stop_reason, message = "diverged", outcome
                if stop_reason:
                    break
                t_rate, rate_chars = time.perf_counter(), 0

        if stop_reason != "diverged" and not (step > 0 and step % config.eval_every == 0):
            outcome = run_eval()  # the final model is always evaluated and saved
            if outcome and outcome != "patience":
                stop_reason, message = "diverged", outcome
        if stop_reason == "interrupted":
            message = f"interrupted at step {step}; continue with: charrnn train --resume {run_dir}"
    elapsed = time.perf_counter() - t_start
    if world.is_main and stop_reason == "diverged":  # otherwise the last evaluation drew it
        write_loss_curve(metrics_path, run_dir / CURVE_FILE, f"{run_dir.name}: loss per character")
    if started_group:
        distributed.shutdown(world)
    summary = TrainSummary(str(run_dir), step, round(step / steps_per_epoch, 4), elapsed, stop_reason, last_loss,
                           last_val, best_val, best_step, chars_per_s, n_params, message, history)
    emit({"kind": "end", **{k: v for k, v in asdict(summary).items() if k != "history"}})
    return summary


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past `step`: a run killed after its last checkpoint logged steps it will redo."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in keep))
