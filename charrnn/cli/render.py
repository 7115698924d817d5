"""Rich views of what the library returns (training progress and summary, result tables) and of errors.

Nothing here computes anything: each function takes a library result and draws it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

import rich.table
from rich.console import Console, ConsoleDimensions
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

OFF_TERMINAL_WIDTH = 1000  # columns of a console writing to a pipe or a file: wide enough that no table is cut


class _Console(Console):
    """A Rich console that shows data as it is. Markup and emoji codes are off: a path, a run name or a
    library message holding `[/]`, `[bold]` or `:cat:` is printed as written, not read as styling (or a
    MarkupError); the few styled words are `Text` with a style. With `wide_off_terminal`, writing to a pipe or
    a file it is OFF_TERMINAL_WIDTH wide, so `charrnn bench | cat` is not cut at 80 columns with "…"."""

    def __init__(self, *, wide_off_terminal: bool = False, **kwargs):
        super().__init__(markup=False, emoji=False, **kwargs)
        self.wide_off_terminal = wide_off_terminal

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self.is_terminal or not self.wide_off_terminal:
            return size
        return ConsoleDimensions(max(size.width, OFF_TERMINAL_WIDTH), size.height)


class Table(rich.table.Table):
    """A Rich table whose title, headers and cells are plain text (never markup, see `_Console`), and whose
    cells fold onto a second line where the console is too narrow instead of ending in "…". It is at least as
    wide as its title, so a title that is a path is not broken."""

    def __init__(self, *headers: str, title: str | None = None, **kwargs):
        if title is not None:
            kwargs.setdefault("min_width", len(title))
        super().__init__(*(_plain(h) for h in headers), title=None if title is None else _plain(title), **kwargs)

    def add_column(self, header="", *args, **kwargs) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(_plain(header), *args, **kwargs)

    def add_row(self, *cells, **kwargs) -> None:
        super().add_row(*(_plain(c) for c in cells), **kwargs)


def _plain(value):
    return Text(value, overflow="fold") if isinstance(value, str) else value


err = _Console(stderr=True, highlight=False)  # progress, summaries, diagnostics (its rules span its width)
out = _Console(wide_off_terminal=True)  # a command's result: tables that scripts read


def transient_progress() -> Progress:
    """A progress bar on stderr that leaves nothing behind. Off a terminal there is none: Rich would leave a
    blank line, above an error's one line too. The description is plain text (it may name a file)."""
    return Progress(TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(),
                    TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal)


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """An `on_progress(done, total)` callback for a library function, drawn as a transient bar on stderr
    (none off a terminal) while the block runs."""
    with transient_progress() as progress:
        task = progress.add_task(description, total=None)
        yield lambda done, total: progress.update(task, completed=done, total=total)


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr (red on a terminal), then exit with `code`. The message is printed as it is (it
    may hold a path with brackets)."""
    message = " ".join(str(message).split())
    if err.is_terminal:
        err.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
    else:
        print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def print_json(result: dict) -> None:
    """One JSON object on stdout. NaN and infinities become null: json.dumps would write NaN or Infinity,
    which is not JSON (RFC 8259), and strict parsers refuse the whole line."""
    print(json.dumps(_finite_or_null(result), allow_nan=False))


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def number(value, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


class TrainView:
    """Renders training events: a live progress bar with the smoothed loss, and log lines above it.

    It knows only the fields every task's events have; a task's metrics (in "eval" events) are printed by name.
    """

    def __init__(self, console: Console = err):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}", style="bold", markup=False), BarColumn(bar_width=28),
            TextColumn("step {task.fields[step]}", markup=False), TextColumn("loss {task.fields[loss]}", markup=False),
            TextColumn("val {task.fields[val]}", markup=False), TextColumn("{task.fields[rate]}", markup=False),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console, transient=False, refresh_per_second=4)
        self.task = None
        self.unit = "items"
        self.smoothed: float | None = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def __call__(self, event: dict) -> None:
        kind = event["kind"]
        if kind == "start":
            self._start(event)
        elif kind == "train" and self.task is not None:
            loss = event["loss"]
            self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
            self.progress.update(self.task, completed=min(event["progress"], 1.0), step=event["step"],
                                 loss=f"{self.smoothed:.3f}", rate=f"{event['rate']:,.0f} {self.unit}/s")
        elif kind == "eval":
            self._eval(event)

    def _start(self, event: dict) -> None:
        self.unit = event["unit"]
        limits = [f"{event['max_steps']} steps" if event["max_steps"] else "",
                  f"{event['epochs']:g} epochs" if event["epochs"] else "",
                  f"{event['time_budget_s'] / 60:.1f} min" if event["time_budget_s"] else ""]
        self.console.print(
            f"{'resuming' if event['resumed'] else 'training'} {event['description']} | "
            f"{event['num_parameters']:,} parameters on {event['device']} ({event['precision']}) | "
            f"{event['steps_per_epoch']} steps/epoch | until {' or '.join(x for x in limits if x)} | "
            f"run dir {event['run_dir']}", markup=False)
        for note in event["notes"]:
            self.console.print(note, markup=False)
        self.task = self.progress.add_task("train", total=1.0, step=event["step"], loss="-", val="-", rate="-")

    def _eval(self, event: dict) -> None:
        best = next(k for k in event if k.startswith("best_"))
        selection = best.removeprefix("best_")
        if self.task is not None:
            self.progress.update(self.task, val=number(event[selection]))
        metrics = "  ".join(f"{k} {number(v)}" for k, v in event.items()
                            if k not in ("kind", "step", "elapsed_s", best))
        self.console.print(f"step {event['step']:>6}  {metrics}  (best {number(event[best])})")


def summary_table(s: dict) -> Table:
    """A finished run: `TrainSummary.to_dict()`."""
    table = Table(title="training summary", show_header=False)
    rows = [("run directory", s["run_dir"]), ("stopped by", s["stop_reason"]),
            ("steps", f"{s['step']:,} ({s['epoch']:.2f} epochs)"), ("time", f"{s['elapsed_s'] / 60:.2f} min"),
            ("speed", _speed(s)),
            ("parameters", f"{s['num_parameters']:,}"),
            ("last train loss", number(s["train_loss"])), ("validation loss", number(s["val_loss"])),
            (f"best {s['selection']}",
             f"{number(s['best'])} at step {s['best_step']}" if s["best"] is not None else "-")]
    for k, v in rows:
        table.add_row(k, str(v))
    return table


def _speed(s: dict) -> str:
    """The run's average speed (this session's items over its training time), then the latest."""
    if s.get("average_rate") is None:
        return f"{s['rate']:,.0f} {s['unit']}/s lately"
    return f"{s['average_rate']:,.0f} {s['unit']}/s on average (lately {s['rate']:,.0f})"


def key_value_table(title: str, values: dict) -> Table:
    """One row per entry: the key with spaces for underscores, then the value ("-" for None)."""
    table = Table(title=title, show_header=False)
    for key, value in values.items():
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    return table


def eval_table(title: str, result) -> Table:
    """An `EvalResult`."""
    table = Table(title=title, show_header=False)
    table.add_row("nats/char", f"{result.nats_per_char:.4f}")
    table.add_row("bits/char", f"{result.bits_per_char:.4f}")
    table.add_row("perplexity", f"{result.perplexity:.4f}")
    table.add_row("characters scored", f"{result.chars:,}")
    if result.unknown_chars:
        table.add_row("unknown (unscored)", f"{result.unknown_chars:,}")
    return table


def info_table(info: dict) -> Table:
    """`checkpoint_info()`: every scalar field, then the vocabulary."""
    shown = {k: v for k, v in info.items() if k not in ("path", "vocabulary", "train_config")}
    table = key_value_table(info["path"], shown)
    table.add_row("vocabulary", info["vocabulary"])
    return table


BENCH_COLUMNS = ("cell", "layers", "hidden", "train", "reference", "ratio", "% of matmul peak", "sample b=1",
                 "% of bandwidth", "sample b=64", "peak MB")


def bench_table(rows: list[dict]) -> Table:
    """The rows of `run_bench()`: training and sampling speed against the reference loop."""
    table = Table(title="charrnn bench: training (chars/s, forward+backward+step) and sampling (chars/s)")
    for name in BENCH_COLUMNS:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(r["cell"], str(r["num_layers"]), str(r["hidden_size"]), f"{r['train_chars_per_s']:,.0f}",
                      f"{r['reference_train_chars_per_s']:,.0f}", f"{r['train_ratio']:.2f}",
                      f"{100 * r['train_fraction_of_peak']:.1f}", f"{r['sample_chars_per_s_batch1']:,.0f}",
                      f"{100 * r.get('sample_fraction_of_bandwidth', 0.0):.1f}",
                      f"{r['sample_chars_per_s_batch64']:,.0f}", number(r["peak_memory_mb"], ",.0f"))
    return table


def task_bench_table(result: dict) -> Table:
    """`run_bench()` of a task's trainer (caption, ctc): each model's speed against the plain loop of it."""
    unit = result["unit"]
    table = Table(title=f"charrnn bench --task {result['task']}: training ({unit}/s, forward+backward+step) "
                        "against a plain PyTorch loop of the same model")
    for name in ("model", "batch", "precision", "charrnn", "plain loop", "ratio", "charrnn runs", "plain runs"):
        table.add_column(name, justify="left" if name == "model" else "right")
    for r in result["rows"]:
        table.add_row(r["model"], str(r["batch_size"]), r["precision"], f"{r[f'train_{unit}_per_s']:,.1f}",
                      f"{r[f'reference_train_{unit}_per_s']:,.1f}", f"{r['train_ratio']:.3f}",
                      " ".join(f"{v:,.1f}" for v in r["runs"]), " ".join(f"{v:,.1f}" for v in r["reference_runs"]))
    return table


def cells_tables(result: dict, length: int) -> tuple[Table, Table]:
    """`rank_cells()`: the top cells of every probe, and the gate saturation."""
    table = Table(title=f"interpretable cells ({length:,} characters)")
    for name in ("probe", "rank", "cell", "correlation", "threshold accuracy (base rate)"):
        table.add_column(name)
    for probe, rows in result["probes"].items():
        for rank, r in enumerate(rows, 1):
            acc = f"{r['accuracy']:.3f} ({r['base_rate']:.3f})" if "accuracy" in r else ""
            table.add_row(probe if rank == 1 else "", str(rank), f"layer{r['layer']}/{r['kind']}/{r['unit']}",
                          f"{r['correlation']:+.3f}", acc)
    sat = Table(title="gate saturation (mean fraction of time per unit)")
    for name in ("layer", "gate", "left-saturated (< 0.1)", "right-saturated (> 0.9)"):
        sat.add_column(name)
    for layer, gates in result["gate_saturation"].items():
        for gate, stats in gates.items():
            sat.add_row(layer, gate, f"{stats['mean_left']:.3f}", f"{stats['mean_right']:.3f}")
    return table, sat


INFLUENCE_PAIRS = {"quotes": '"..."', "parentheses": "(...)", "brackets": "[...]", "braces": "{...}"}


def influence_table(influence: dict) -> Table:
    """`probes.influence_summary()`: how often a closing character's prediction used its opening one."""
    top, window = influence["top"], influence["window"]
    table = Table(title=f"influence (saliency window {window})",
                  caption=f"does the prediction of a closing character have its opening one among its top {top} "
                          f"influences? chance: {top} / the characters in its window")
    for name in ("pair", "closing", "opening in window", f"opening in top {top}", "chance"):
        table.add_column(name)
    for name, r in influence["pairs"].items():
        if r["closing"] == 0:
            continue
        hits = f"{r['opening_in_top']} ({r['fraction']:.1%})" if r["in_window"] else "-"
        chance = f"{r['chance']:.1%}" if r["in_window"] else "-"
        table.add_row(INFLUENCE_PAIRS.get(name, name), str(r["closing"]), str(r["in_window"]), hits, chance)
    if not table.row_count:
        table.caption = "no closing quotes or brackets in this text"
    return table


MEMORY_DISTANCES = (1, 10, 50, 100, 200)  # the distances `memory_table` shows, those within the curve, and its end


def memory_table(report: dict) -> Table:
    """`gradients.memory_report()`: each run's memory length, its mean gradient norm at k = 0 and, at a few
    distances k, the norm relative to that."""
    K, runs = report["max_distance"], report["runs"]
    distances = [k for k in MEMORY_DISTANCES if k < K] + [K]
    counts = sorted({r["positions"] for r in runs})
    positions = f"{counts[0]:,}" if len(counts) == 1 else "/".join(f"{n:,}" for n in counts)
    table = Table(title=f"gradients through time: mean |gradient| of log p(next character) with respect to the "
                        f"input k characters back, over {positions} positions")
    for name in ("run", "cell", "layers x hidden", "memory length", "|gradient| at k = 0",
                 *(f"k = {k}" for k in distances)):
        table.add_column(name, justify="left" if name in ("run", "cell") else "right")
    for r in runs:
        relative = r["relative"]
        table.add_row(r["name"], r["cell"], f"{r['num_layers']}x{r['hidden_size']}", _memory_length(r, K),
                      f"{r['curve'][0]:.3g}", *(_ratio(relative[k]) for k in distances))
    table.caption = (f"k = columns: relative to k = 0. Memory length: the first k (characters) at which the mean "
                     f"norm falls below {report['threshold']:g} x its value at k = 0.")
    return table


def _memory_length(run: dict, K: int) -> str:
    if run["memory_length"] is not None:
        return f"{run['memory_length']:,}"
    end = run["relative"][K]
    if not math.isfinite(end):
        return "-"  # no gradient at k = 0: nothing to fall from
    return f"> {K:,}" + (f" (grows: {end:.3g}x at {K:,})" if end > 1 else "")


def _ratio(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.3g}"


def train_and_report(train, config, *, resume: bool, overwrite: bool, json_output: bool, command: str):
    """Run a task's `train` with the live view, then show its summary and end as its outcome says: status 1
    when it diverged, 130 when it was interrupted (with the command that resumes it). Returns the summary of
    a run that ended normally, or None in a torchrun process other than rank 0 (which alone reports)."""
    import shlex

    from charrnn.core.distributed import world_from_env
    from charrnn.core.trainer import StopReason

    if not world_from_env().is_main:
        train(config, resume=resume, overwrite=overwrite)
        return None
    with TrainView() as view:
        summary = train(config, None if json_output else view, resume=resume, overwrite=overwrite)
    if json_output:
        print_json(summary.to_dict())
    else:
        err.print(summary_table(summary.to_dict()))
    if summary.stop_reason is StopReason.DIVERGED:
        fail(summary.message, 1)
    if summary.message:
        err.print(summary.message, markup=False)
    if summary.stop_reason is StopReason.INTERRUPTED:
        err.print(f"continue with: charrnn {command} --resume {shlex.quote(summary.run_dir)}", markup=False,
                  soft_wrap=True)
        sys.exit(130)
    return summary
