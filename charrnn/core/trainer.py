"""The training loop every task shares. Nothing in this file knows about characters, images or hidden states.

A task (see `Task`) supplies what differs: its model, the loss of batch i of an epoch (carrying any state
it needs from one step to the next), an evaluation that returns named metrics, and what it adds to a
checkpoint. The loop supplies the rest: stopping rules (steps, epochs, time budget, patience), the
optimizer and learning-rate schedule, gradient clipping, bf16 autocast, evaluation cadence, best/last
checkpoints written atomically, exact resume (optimizer, RNG, position, the task's own state), Ctrl-C
and SIGTERM, the divergence guard, `metrics.jsonl`, the loss curve, and data parallelism under torchrun.

The loop never prints: it reports through an `on_event(dict)` callback that the CLI renders.
"""

from __future__ import annotations

import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from charrnn.core import distributed
from charrnn.core.checkpoint import BEST, LAST, CheckpointError, atomic_save, build_checkpoint, verify_checksum
from charrnn.core.config import LoopConfig
from charrnn.core.device import autocast, resolve_device, resolve_precision, seed_everything
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError, StopRequested
from charrnn.core.files import write_text_atomic
from charrnn.core.rundir import LOCK_FILE, RunDir, check_task
from charrnn.core.signals import STOP_SIGNALS, raise_on_signals, stop_on_signals  # noqa: F401 - importable here too
from charrnn.core.svg import loss_curve_svg

Event = Callable[[dict], None]


class StopReason(str, Enum):
    MAX_STEPS = "max_steps"
    EPOCHS = "epochs"
    TIME_BUDGET = "time_budget"
    PATIENCE = "patience"
    INTERRUPTED = "interrupted"
    DIVERGED = "diverged"


class Task(Protocol):
    """What a task gives the loop. Built by the task's `build(config, *, checkpoint, world, device)`."""

    name: str  # written into checkpoints: "lm", "caption", "ctc"
    unit: str  # what the throughput counts: "chars", "images", "lines"
    config: LoopConfig  # the run's settings as they are saved in run.json
    model: nn.Module  # has `.config.to_dict()`; its parameters are what the optimizer trains
    tokenizer: object  # has `to_dict()`; saved in every checkpoint
    steps_per_epoch: int
    items_per_step: int  # over all processes
    loss_at_chance: float  # the loss of guessing (ln V for a softmax over V symbols): the divergence scale
    selection: str  # the metric of `evaluate()` that picks best.pt ...
    lower_is_better: bool  # ... and its direction
    has_validation: bool

    def describe(self) -> tuple[str, list[str]]:
        """A one-line description of the model and data, and notes worth telling the user."""

    def start_epoch(self, epoch: int) -> None:
        """Called when a later epoch begins (a task is built ready for its first, or for where a resume is)."""

    def loss(self, forward: Callable, epoch: int, i: int) -> torch.Tensor:
        """The scalar loss of batch `i` of `epoch`, computed with `forward` (the wrapped model). Batches are
        addressed by (epoch, i) alone, so a resumed run reads exactly the batches it would have read."""

    def evaluate(self, should_stop: Callable[[], bool]) -> dict[str, float]:
        """Validation metrics (rank 0 only), including "val_loss" and the selection metric. Asks `should_stop()`
        between batches (and between the steps of a free-running decoding) and raises `StopRequested` when it
        says so, so that a signal during a long evaluation stops the run as one during a step does."""

    def train_state(self) -> dict:
        """What the task carries between steps, gathered from every process (all of them call this)."""

    def load_train_state(self, state: dict) -> None:
        ...

    def meta(self) -> dict:
        """Facts about the run to keep in the checkpoint's meta (e.g. the corpus it read)."""


@dataclass(kw_only=True)
class TrainSummary:
    """What a finished (or stopped) run reports."""

    run_dir: str
    step: int
    epoch: float
    elapsed_s: float
    stop_reason: StopReason
    train_loss: float | None
    val_loss: float | None
    selection: str
    best: float | None
    best_step: int | None
    rate: float  # items per second, lately (the last second or so)
    average_rate: float | None = None  # items per second over this session's training time (evaluations left out)
    unit: str
    num_parameters: int
    message: str = ""
    history: list[float] = field(default_factory=list, repr=False)  # per-step train losses of this session

    def to_dict(self) -> dict:
        """JSON-ready (no NaN or infinity), without the history."""
        d = {k: v for k, v in asdict(self).items() if k != "history"}
        d["stop_reason"] = self.stop_reason.value
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class Position:
    """Where a run is; saved in every checkpoint so a resumed run carries on exactly."""

    step: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    best: float | None = None
    best_step: int | None = None
    last_val_loss: float | None = None
    evals_since_best: int = 0
    # The model at `step` was evaluated. False after a step, and in a checkpoint written by an interrupted run
    # (its evaluation, if one was due, is done when the run resumes); True in checkpoints from before it existed,
    # which were all written after an evaluation.
    evaluated: bool = False
    eval_s: float | None = None  # how long the last evaluation took: the time budget keeps that for the final one


# ----- optimisation -------------------------------------------------------------------------------

def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices only: biases and embeddings keep theirs (as nanoGPT and minGPT do),
    so the LSTM forget-gate bias of 1 is not pulled back towards 0."""
    decay, keep = [], []
    for name, p in model.named_parameters():
        is_matrix = p.dim() >= 2 and not name.startswith("embedding")
        (decay if is_matrix else keep).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def make_optimizer(config: LoopConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = parameter_groups(model, config.weight_decay)
    name, lr = config.optimizer, config.lr
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, fused=fused_adam(model))
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=fused_adam(model))
    if name == "rmsprop":  # char-rnn's optimizer (alpha 0.95 there)
        return torch.optim.RMSprop(params, lr=lr, alpha=0.95, momentum=config.momentum)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.Adagrad(params, lr=lr)


def fused_adam(model: nn.Module) -> bool | None:
    """True where torch has a fused Adam(W) kernel for the model's device (CPU, CUDA): the same update in one
    kernel instead of a Python loop over the ~30 parameter tensors, 2-3 ms less a step for the 1M-parameter
    captioner and line reader on 2 CPU cores (1-2% of a step), and the same losses to 1e-6
    (tests/test_reference_runs.py). None (torch's choice) elsewhere. A resumed run keeps the kind it was saved
    with (`load_state_dict` restores it)."""
    devices = {p.device.type for p in model.parameters()}
    return True if devices and devices <= {"cpu", "cuda"} else None


def learning_rate(config: LoopConfig, step: int, epoch: int, progress: float) -> float:
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


# ----- random state (the stop signals: charrnn.core.signals) ----------------------------------


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])
    kind, keys, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))


class Throughput:
    """Items per second: `rate` over the last second or so (the first step counts on its own), and `average`
    over all the training time since it was made. The time from a `restart` (after an evaluation) to the next
    step is training time too; the evaluation before it is not."""

    def __init__(self):
        self.rate = 0.0
        self.total_items, self.total_s = 0, 0.0
        self.restart()

    def restart(self) -> None:
        self.since = self.last = time.perf_counter()
        self.items = 0

    def add(self, items: int) -> None:
        now = time.perf_counter()
        self.items += items
        self.total_items += items
        self.total_s += now - self.last
        self.last = now
        if now - self.since >= 1.0 or self.rate == 0.0:
            self.rate = self.items / (now - self.since)
            self.since, self.items = now, 0

    @property
    def average(self) -> float | None:
        return self.total_items / self.total_s if self.total_s > 0 else None


# ----- the loop -----------------------------------------------------------------------------------

class Trainer:
    """Trains a task's model as its config says; `fit()` runs until a stopping rule and returns a summary."""

    def __init__(self, task: Task, run_dir: RunDir, *, world: World, device: torch.device, precision: str,
                 emit: Event, stop: threading.Event):
        self.task, self.config, self.model = task, task.config, task.model
        self.run_dir, self.world, self.device, self.precision = run_dir, world, device, precision
        self.emit, self.stop = emit, stop
        if world.active:
            torch.manual_seed(self.config.seed + world.rank)  # different dropout masks on each rank
        self.optimizer = make_optimizer(self.config, self.model)
        self.pos = Position()
        self.forward: Callable = self.model
        self.throughput = Throughput()
        self.history: list[float] = []
        self.last_loss: float | None = None
        self.message = ""
        self._evaluation_stopped = False
        self.t_start = time.perf_counter()
        c = self.config
        self.time_budget_s = c.time_budget * 60 if c.time_budget is not None else None
        self.max_epoch_steps = math.ceil(c.epochs * task.steps_per_epoch) if c.epochs is not None else None

    # --- set-up ---

    def restore(self, ts: dict) -> None:
        """Continue from a checkpoint's training state (model weights are loaded by the task)."""
        self.optimizer.load_state_dict(ts["optimizer"])
        self.pos = Position(step=ts["step"], epoch=ts["epoch"], elapsed_s=ts["elapsed_s"], best=ts["best"],
                            best_step=ts["best_step"], last_val_loss=ts["last_val_loss"],
                            evals_since_best=ts["evals_since_best"], evaluated=ts.get("evaluated", True),
                            eval_s=ts.get("eval_s"))
        self.task.load_train_state(ts["task"])
        rngs = ts["rng"]
        set_rng_state(rngs[self.world.rank] if len(rngs) == self.world.size else rngs[0])

    def _wrap_model(self) -> None:
        forward = torch.compile(self.model) if self.config.compile else self.model
        if self.world.active:
            ids = [self.device.index] if self.device.type == "cuda" else None
            forward = DistributedDataParallel(forward, device_ids=ids)
        self.forward = forward

    def _check_not_finished(self) -> None:
        # A run stopped during its final evaluation is not finished: resuming it does that evaluation.
        finished = self._stop_rule() in (StopReason.MAX_STEPS, StopReason.EPOCHS, StopReason.TIME_BUDGET)
        if finished and self.pos.evaluated:
            raise CharRNNError(
                f"the run in {self.run_dir} already finished (step {self.pos.step}, "
                f"{self.pos.elapsed_s / 60:.1f} minutes): give a larger --max-steps (counted from the run's "
                "start), --epochs, or a --time-budget MINUTES to train for that much longer")

    # --- progress ---

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def progress(self, elapsed: float) -> float:
        c, step, p = self.config, self.pos.step, 0.0
        if c.max_steps:
            p = max(p, step / c.max_steps)
        if self.max_epoch_steps:
            p = max(p, step / self.max_epoch_steps)
        budget = self._training_budget_s()
        if budget is not None:
            p = max(p, elapsed / budget if budget > 0 else 1.0)
        return p

    def _training_budget_s(self) -> float | None:
        """The time budget less the time the final evaluation is expected to take (as long as the last
        evaluation took), so that the run, its final evaluation and checkpoint included, ends within the
        budget. Before any evaluation nothing is known, and nothing is kept."""
        if self.time_budget_s is None:
            return None
        return self.time_budget_s - (self.pos.eval_s or 0.0)

    def _stop_rule(self, elapsed: float | None = None) -> StopReason | None:
        """The stopping rule that applies now, if any; rank 0's clock and signals decide for every rank."""
        elapsed = self.pos.elapsed_s if elapsed is None else elapsed
        budget = self._training_budget_s()
        timed_out = budget is not None and elapsed >= budget
        timed_out, interrupted = distributed.broadcast_flags(self.world, [timed_out, self.stop.is_set()],
                                                             self.device)
        step, c = self.pos.step, self.config
        if c.max_steps is not None and step >= c.max_steps:
            return StopReason.MAX_STEPS
        if self.max_epoch_steps is not None and step >= self.max_epoch_steps:
            return StopReason.EPOCHS
        if timed_out:
            return StopReason.TIME_BUDGET
        return StopReason.INTERRUPTED if interrupted else None

    def _exploded(self, loss: float) -> bool:
        factor = self.config.explode_factor
        return not math.isfinite(loss) or (factor > 0 and loss > factor * self.task.loss_at_chance)

    def _divergence_message(self, loss: float, what: str) -> str:
        c = self.config
        limit = c.explode_factor * self.task.loss_at_chance
        how = ("became NaN/inf" if not math.isfinite(loss)
               else f"exploded to {loss:.3f} (over {c.explode_factor:g} x the loss of guessing = {limit:.3f})")
        kept = (f"the last good checkpoint is kept in {self.run_dir}" if self.run_dir.last.exists()
                else "no checkpoint had been written yet")
        advice = f"start a new run with a lower --lr (now {c.lr:g}) or a smaller --grad-clip"
        if math.isfinite(loss) and c.explode_factor > 0:
            advice += ", or resume with --explode-factor 0 to ignore spikes"
        return f"training stopped at step {self.pos.step}: the {what} loss {how}; {kept}. Try: {advice}"

    # --- one step ---

    def _start_epoch_if_due(self) -> int:
        """The index of the next batch within its epoch, starting a new epoch at the boundary."""
        i = self.pos.step - self.pos.epoch * self.task.steps_per_epoch
        if i >= self.task.steps_per_epoch:
            self.pos.epoch += 1
            i = 0
            self.task.start_epoch(self.pos.epoch)
        return i

    def _train_step(self, log) -> StopReason | None:
        i = self._start_epoch_if_due()
        lr = learning_rate(self.config, self.pos.step, self.pos.epoch, self.progress(self.elapsed()))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.precision, self.device):
            loss = self.task.loss(self.forward, self.pos.epoch, i)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip) if clip > 0 else None
        loss_value = distributed.mean(self.world, loss).item()
        if self._exploded(loss_value):
            self.message = self._divergence_message(loss_value, "training")
            return StopReason.DIVERGED
        self.optimizer.step()
        self.pos.step += 1
        self.pos.evaluated = False
        self.last_loss = loss_value
        self.history.append(loss_value)
        self._log_step(log, i, loss_value, lr, grad_norm)
        return None

    def _log_step(self, log, i: int, loss: float, lr: float, grad_norm: torch.Tensor | None) -> None:
        self.throughput.add(self.task.items_per_step)
        elapsed = self.elapsed()
        rate = self.throughput.rate
        record = {"kind": "train", "step": self.pos.step,
                  "epoch": round(self.pos.epoch + (i + 1) / self.task.steps_per_epoch, 5), "loss": loss, "lr": lr,
                  f"{self.task.unit}_per_s": round(rate, 1), "elapsed_s": round(elapsed, 3)}
        if grad_norm is not None:
            record["grad_norm"] = round(float(grad_norm), 5)
        log.write(record)
        self.emit({**record, "rate": rate, "progress": self.progress(elapsed)})

    # --- evaluation and checkpoints ---

    def _evaluate(self, log) -> StopReason | None:
        """Evaluate, log, save best/last. Returns DIVERGED (nothing saved), PATIENCE when it is time to stop, or
        INTERRUPTED (nothing saved) when a stop was asked for during the evaluation."""
        names = [LAST]
        if self.task.has_validation:
            # Computed once, on rank 0, and agreed: every rank then takes the same decisions.
            metrics, stopped, started = {}, False, time.perf_counter()
            if self.world.is_main:
                try:
                    with autocast(self.precision, self.device):  # bf16 halved its cost and moved the loss by ~3e-5
                        metrics = self.task.evaluate(should_stop=self.stop.is_set)
                except StopRequested:
                    stopped = self._evaluation_stopped = True
                    self.model.train()
            val_loss, value, stopped, eval_s = distributed.broadcast_floats(
                self.world, [metrics.get("val_loss", 0.0), metrics.get(self.task.selection, 0.0), float(stopped),
                             time.perf_counter() - started], self.device)
            if stopped:
                return StopReason.INTERRUPTED
            self.pos.eval_s = eval_s
            if self._exploded(val_loss) or not math.isfinite(value):
                self.message = self._divergence_message(val_loss, "validation")
                return StopReason.DIVERGED
            if self._record_eval(value, val_loss):
                names.insert(0, BEST)
            if self.world.is_main:
                record = {"kind": "eval", "step": self.pos.step, **metrics,
                          f"best_{self.task.selection}": self.pos.best, "elapsed_s": round(self.elapsed(), 3)}
                log.write(record)
                self.emit(record)
        self.pos.evaluated = True
        self._save(names)
        self._draw_curve()
        if self.config.patience is not None and self.pos.evals_since_best >= self.config.patience:
            return StopReason.PATIENCE
        return None

    def _record_eval(self, value: float, val_loss: float) -> bool:
        """Note an evaluation; True when it is the best so far."""
        pos = self.pos
        pos.last_val_loss = val_loss
        better = pos.best is None or (value < pos.best if self.task.lower_is_better else value > pos.best)
        if better:
            pos.best, pos.best_step, pos.evals_since_best = value, pos.step, 0
        else:
            pos.evals_since_best += 1
        return better

    def _train_state(self) -> dict:
        # Collectives: every rank takes part, rank 0 keeps the result.
        task_state = self.task.train_state()
        rngs = distributed.gather_objects(self.world, rng_state())
        return {**asdict(self.pos), "optimizer": self.optimizer.state_dict(), "rng": rngs, "task": task_state}

    def _meta(self) -> dict:
        pos, steps = self.pos, self.task.steps_per_epoch
        return {"step": pos.step, "epoch": pos.epoch + (pos.step - pos.epoch * steps) / steps,
                "elapsed_s": pos.elapsed_s, "device": str(self.device), "precision": self.precision,
                "torch": str(torch.__version__), "val_loss": pos.last_val_loss, "selection": self.task.selection,
                "best": pos.best, "best_step": pos.best_step, "num_parameters": count_parameters(self.model),
                "train_config": asdict(self.config), **self.task.meta()}

    def _save(self, names: list[str]) -> None:
        """Write one checkpoint under each name (best and last, when the last is the best)."""
        self.pos.elapsed_s = self.elapsed()
        ts = self._train_state()
        checkpoint = None
        if self.world.is_main:
            checkpoint = build_checkpoint(task=self.task.name, model=self.model, tokenizer=self.task.tokenizer,
                                          train_state=ts, meta=self._meta())
        for name in names:
            if checkpoint is not None:
                atomic_save(checkpoint, self.run_dir.path / name)
            self.emit({"kind": "checkpoint", "path": str(self.run_dir.path / name), "step": self.pos.step})

    def _draw_curve(self) -> None:
        if self.world.is_main:
            svg = loss_curve_svg(self.run_dir.read_metrics(), f"{self.run_dir.path.name}: loss")
            write_text_atomic(self.run_dir.curve, svg)

    # --- the run ---

    def fit(self, resumed: bool) -> TrainSummary:
        self._wrap_model()
        if resumed:
            self._check_not_finished()
        if self.world.is_main:
            self.run_dir.truncate_metrics(self.pos.step)
        self._emit_start(resumed)
        self.t_start = time.perf_counter() - self.pos.elapsed_s
        self.throughput.restart()
        self.model.train()
        with stop_on_signals(self.stop), self.run_dir.metrics_log(self.world.is_main) as log:
            reason = self._run_steps(log)
            if reason not in (StopReason.DIVERGED, StopReason.INTERRUPTED) and not self.pos.evaluated:
                # The final model is evaluated and saved; a divergence or a stop there changes the outcome.
                final = self._evaluate(log)
                if final in (StopReason.DIVERGED, StopReason.INTERRUPTED):
                    reason = final
            if reason is StopReason.INTERRUPTED and not self.pos.evaluated:
                # Saved as it is, promptly: an evaluation that was due, or cut short, is done on resume.
                self._save([LAST])
                self._draw_curve()
        if reason is StopReason.DIVERGED:
            self._draw_curve()
        elif reason is StopReason.INTERRUPTED:
            cut = "; the evaluation it stopped is done when the run resumes" if self._evaluation_stopped else ""
            self.message = f"interrupted at step {self.pos.step} (a checkpoint was written{cut})"
        return self._summary(reason)

    @property
    def _evaluation_due(self) -> bool:
        """An evaluation is due at this step (every --eval-every steps) and not yet done: after the step, or
        in a run stopped during it (done first on resume)."""
        return not self.pos.evaluated and self.pos.step > 0 and self.pos.step % self.config.eval_every == 0

    def _run_steps(self, log) -> StopReason:
        while True:
            if self._evaluation_due:
                reason = self._evaluate(log)
                if reason is StopReason.PATIENCE:
                    self.message = f"{self.task.selection} has not improved for {self.config.patience} evaluations"
                if reason:
                    return reason
                self.throughput.restart()
            reason = self._stop_rule(self.elapsed()) or self._train_step(log)
            if reason:
                return reason

    def _emit_start(self, resumed: bool) -> None:
        description, notes = self.task.describe()
        c = self.config
        self.emit({"kind": "start", "run_dir": str(self.run_dir), "resumed": resumed, "step": self.pos.step,
                   "device": str(self.device), "precision": self.precision,
                   "num_parameters": count_parameters(self.model), "steps_per_epoch": self.task.steps_per_epoch,
                   "max_steps": c.max_steps, "time_budget_s": self.time_budget_s, "epochs": c.epochs,
                   "unit": self.task.unit, "description": description, "notes": notes, "config": asdict(c)})

    def _summary(self, reason: StopReason) -> TrainSummary:
        pos = self.pos
        summary = TrainSummary(
            run_dir=str(self.run_dir), step=pos.step, epoch=round(pos.step / self.task.steps_per_epoch, 4),
            elapsed_s=self.elapsed(), stop_reason=reason, train_loss=self.last_loss, val_loss=pos.last_val_loss,
            selection=self.task.selection, best=pos.best, best_step=pos.best_step, rate=self.throughput.rate,
            average_rate=self.throughput.average,
            unit=self.task.unit, num_parameters=count_parameters(self.model), message=self.message,
            history=self.history)
        self.emit({"kind": "end", **summary.to_dict()})
        return summary


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----- entry point --------------------------------------------------------------------------------

BuildTask = Callable[..., Task]


def run_training(config: LoopConfig, build_task: BuildTask, *, task_files: tuple[str, ...] = (),
                 inputs: tuple[str, ...] = (), on_event: Event | None = None, resume: bool = False,
                 overwrite: bool = False, stop: threading.Event | None = None) -> TrainSummary:
    """Train the task that `build_task(config, checkpoint=, world=, device=)` makes, in `config.run_dir`.

    With `resume`, continue the run there from its `last.pt` exactly where it stopped. `stop` (set by
    Ctrl-C, SIGTERM, or a caller) ends the run after the current step with a checkpoint. `task_files` are
    the files the task keeps in the run directory (set aside and restored with the run's own); `inputs` the
    files it reads, which must not be among them.
    """
    world = distributed.world_from_env()
    config = config.with_default_stop()
    run_dir = RunDir(config.run_dir)
    run_dir.check_location()
    for path in inputs:
        if run_dir.writes(path, task_files):
            raise CharRNNError(f"{path!r} is a file the run writes in {str(run_dir)!r}; rename it, or choose "
                               "another --out")
    if resume:
        # Read before the lock is taken, so that a run of another task, or a damaged checkpoint, is refused
        # with nothing in the run directory touched (its lock file included).
        path, checkpoint = _resume_checkpoint(run_dir)
        stamp = _stamp(path)
        with contextlib.suppress(KeyError):  # a run config that is no task's (a test's) has nothing to check
            check_task(checkpoint, type(config), run_dir.path)
    existed = run_dir.path.exists()
    try:
        with raise_on_signals(), contextlib.ExitStack() as stack:
            if world.is_main:
                stack.callback(_remove_if_unused, run_dir, existed)  # runs after the lock is released
                stack.enter_context(run_dir.locked())
                run_dir.remove_leftovers()
            run_dir.check_files(task_files)
            if resume and _stamp(run_dir.resume_checkpoint()) != stamp:  # changed while the lock was awaited
                path, checkpoint = _resume_checkpoint(run_dir)
            if not resume:
                run_dir.check_new(overwrite)
            return _train(config, build_task, run_dir, (path, checkpoint) if resume else None, world, stack,
                          emit=(on_event or _ignore) if world.is_main else _ignore, stop=stop or threading.Event(),
                          new_run=task_files if not resume and world.is_main else None, overwrite=overwrite)
    except OSError as e:  # a full disk, a read-only directory, a file that cannot be read
        kept = f"; the checkpoints already in {run_dir} are intact" if run_dir.last.exists() else ""
        raise CharRNNError(f"{e.filename or run_dir}: {e.strerror or e}{kept}") from None


def _train(config: LoopConfig, build_task: BuildTask, run_dir: RunDir, resume_from: tuple[Path, dict] | None,
           world: World, stack: contextlib.ExitStack, *, emit: Event, stop: threading.Event,
           new_run: tuple[str, ...] | None, overwrite: bool) -> TrainSummary:
    device = _process_device(world, config.device)
    precision = resolve_precision(config.precision, device)
    if config.batch_size % world.size:
        raise CharRNNError(f"--batch-size {config.batch_size} must be divisible by the {world.size} processes "
                           "of this torchrun job (each owns an equal share of the batch)")
    if distributed.init(world, device):
        stack.callback(distributed.shutdown, world)
    distributed.barrier(world)  # every rank has checked the run directory before rank 0 changes it
    if new_run is not None:
        # An earlier run is deleted once the new one has a checkpoint, and put back if it fails before.
        keep = run_dir.start_new_run(new_run, overwrite)
        stack.callback(run_dir.settle_new_run, new_run, keep)
    seed_everything(config.seed)
    checkpoint = resume_from[1] if resume_from else None
    try:
        task = build_task(config, checkpoint=checkpoint, world=world, device=device)
    except CheckpointError as damaged:  # the task's own checks of a resumed checkpoint (its weights' shapes)
        if resume_from is None:
            raise
        raise run_dir.cannot_resume(damaged, check_train_state) from None
    trainer = Trainer(task, run_dir, world=world, device=device, precision=precision, emit=emit, stop=stop)
    if resume_from is not None:
        _restore(trainer, run_dir, *resume_from)
    if world.is_main:  # a resumed run's too (once it is sure to go on): what may change on resume is current
        run_dir.write_config(task.config)
    summary = trainer.fit(resumed=checkpoint is not None)
    # Every rank is done talking before any tears the group down: without this, a gloo rank that was still
    # finishing sometimes aborted at exit ("terminate called without an active exception", exit -6).
    distributed.barrier(world)
    return summary


def _restore(trainer: Trainer, run_dir: RunDir, path: Path, checkpoint: dict) -> None:
    """Continue from `checkpoint`, refusing (before run.json or metrics.jsonl is touched) a training state
    that does not fit the model, and a run that has already finished."""
    try:
        trainer.restore(checkpoint["train_state"])
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        reason = f"is damaged: its training state does not fit the model ({str(e).splitlines()[0][:120]})"
        raise run_dir.cannot_resume(CheckpointError(path, reason), check_train_state) from None
    trainer._check_not_finished()


def _ignore(event: dict) -> None:
    pass


def _remove_if_unused(run_dir: RunDir, existed: bool) -> None:
    """Remove a run directory this call created when nothing was left in it but its lock."""
    if not existed and run_dir.path.is_dir():
        with contextlib.suppress(OSError):
            (run_dir.path / LOCK_FILE).unlink(missing_ok=True)
            run_dir.path.rmdir()


def _resume_checkpoint(run_dir: RunDir) -> tuple[Path, dict]:
    """The checkpoint a resume continues from, its training state checked (`check_train_state`)."""
    return run_dir.read_checkpoint(check_train_state)


def _stamp(path: Path) -> tuple:
    st = path.stat()
    return path, st.st_ino, st.st_size, st.st_mtime_ns


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _is_rng(v) -> bool:
    return (isinstance(v, dict) and isinstance(v.get("torch"), torch.Tensor) and isinstance(v.get("cuda"), list)
            and isinstance(v.get("numpy"), list) and len(v["numpy"]) == 5 and isinstance(v["numpy"][1], torch.Tensor)
            and isinstance(v.get("python"), list) and len(v["python"]) == 3)


# What a resume reads of a checkpoint's train_state (`Trainer._train_state`), and what each must be.
TRAIN_STATE: dict[str, tuple[Callable[[object], bool], str]] = {
    "step": (_is_count, "a whole number, 0 or more"),
    "epoch": (_is_count, "a whole number, 0 or more"),
    "elapsed_s": (lambda v: _is_number(v) and v >= 0, "a number of seconds"),
    "best": (lambda v: v is None or _is_number(v), "a number or null"),
    "best_step": (lambda v: v is None or _is_count(v), "a step or null"),
    "last_val_loss": (lambda v: v is None or _is_number(v), "a number or null"),
    "evals_since_best": (_is_count, "a whole number, 0 or more"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list) and all(isinstance(g, dict) for g in v["param_groups"]),
                  "an optimizer's state (state and param_groups)"),
    "rng": (lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_rng, v)), "a list of random states"),
    "task": (lambda v: isinstance(v, dict), "a dict"),
}
OPTIONAL_TRAIN_STATE = {"evaluated": (lambda v: isinstance(v, bool), "true or false"),
                        "eval_s": (lambda v: v is None or _is_number(v), "a number or null")}


def _shown(value) -> str:
    return f"a {type(value).__name__}" if isinstance(value, (dict, list, tuple)) else repr(value)[:40]


def check_train_state(checkpoint: dict) -> None:
    """Refuse a checkpoint whose training state a resume cannot use, before anything is built or written:
    none (an exported model), a checksum that does not match, a field missing or of the wrong type."""
    path = checkpoint.get("source", "the checkpoint")
    ts = checkpoint.get("train_state")
    if not ts:
        raise CheckpointError(path, "has no training state to resume from (it holds the model only)")
    verify_checksum(checkpoint, "train_state", path)
    for name, (ok, what) in TRAIN_STATE.items():
        if name not in ts:
            raise CheckpointError(path, f"is damaged: its training state has no {name}")
        if not ok(ts[name]):
            raise CheckpointError(path, f"is damaged: its training state's {name} is {_shown(ts[name])}, not {what}")
    for name, (ok, what) in OPTIONAL_TRAIN_STATE.items():
        if name in ts and not ok(ts[name]):
            raise CheckpointError(path, f"is damaged: its training state's {name} is {_shown(ts[name])}, not {what}")
    if ts["epoch"] > ts["step"]:
        raise CheckpointError(path, f"is damaged: its training state is at epoch {ts['epoch']} after only "
                                    f"{ts['step']} steps")


def _process_device(world: World, name: str) -> torch.device:
    """The device of this process: under torchrun with CUDA, the GPU of its local rank."""
    device = resolve_device(name)
    if world.active and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    return device
